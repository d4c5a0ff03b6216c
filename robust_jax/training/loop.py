"""``train_and_evaluate(config, workdir)``: epochs, evaluation, checkpoints and metrics around the step.

* Resumes by itself from the latest good checkpoint in ``workdir`` (parameters, optimizer, step, the
  running metrics of a half-finished epoch); the data order is a pure function of (seed, epoch) and the
  step's randomness of (seed, step), so a run killed at any moment and restarted ends with bitwise
  the same parameters as an uninterrupted one (CPU).
* Model selection on a validation split carved out of the training data (clean and PGD accuracy in
  eval mode after every epoch), never on the test set; the best checkpoint is kept apart.
* A NaN loss stops training with an error naming the first bad step, before anything is saved.
* Only process 0 writes logs; checkpoints are written collectively (orbax).
* Fast-AT's catastrophic-overfitting guard (Wong et al. 2020): after every epoch, PGD on a fixed
  training batch; when its robust accuracy drops by more than ``config.co_guard_drop`` from the
  previous epoch, training stops (``"stop"``) or the previous epoch's weights are restored and
  training stops (``"rollback"``), and the event is logged and written to the metrics.

Runs that never lose work or lie about it:

* Pre-emption: SIGTERM or SIGINT finishes the current step, writes a checkpoint at it (mid-epoch if
  need be), logs one line naming it, writes a ``preempted`` record and exits with code
  :data:`robust_jax.training.preemption.EXIT_PREEMPTED` (75); a second signal exits at once
  (:mod:`robust_jax.training.preemption`). Rerunning the command resumes bit-exactly.
* One trainer per workdir: ``<workdir>/train.lock`` (host, pid; a dead holder's lock is stale and
  replaced); a second trainer is refused at once (:mod:`robust_jax.training.workdir_lock`).
* Never from scratch over existing work: when checkpoints exist and no latest one restores, the
  newest restorable best checkpoint is resumed (the epochs after it are trained again); if none
  restores either, :class:`robust_jax.training.resume.ResumeError` names the directory, unless
  ``config.restart=True``, which moves the old work to ``<workdir>/abandoned-<time>/`` and starts
  over.
* A full disk: :class:`robust_jax.checkpoint.CheckpointWriteError`, one line naming the cause, the
  checkpoint and the last good one (kept).
* Resume with a changed config: every field that alters the trajectory must match the checkpoint,
  or be listed in ``config.allow_config_change`` (recorded as a ``config_change`` record and in the
  checkpoints' metadata); ``config.FIELDS_FREE_ON_RESUME`` (logging, evaluation budgets) and a
  longer ``num_epochs`` (when the schedule does not depend on it) are free
  (:mod:`robust_jax.training.resume`).
* A finished run (its test record written) is not trained or evaluated again: it says "finished at
  epoch N" and returns the recorded summary. On resume, ``metrics.jsonl`` records newer than the
  restored step are dropped and TensorBoard purges its events after it, so neither goes back in
  time; the test record is written at the last training step (with ``checkpoint_step``, the best
  checkpoint's step), after the validation records.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from robust_jax import checkpoint as ckpt_lib
from robust_jax import metrics as metrics_lib
from robust_jax import fosc as fosc_lib
from robust_jax import parallel
from robust_jax.parts import PartStates
from robust_jax.data import pipeline
from robust_jax.training import config as config_lib
from robust_jax.training import methods
from robust_jax.training import preemption
from robust_jax.training import restore as restore_lib
from robust_jax.training import resume as resume_lib
from robust_jax.training import sampling
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib
from robust_jax.training import workdir_lock

STOPPED_FILE = "STOPPED"


def initial_parts(config, params) -> PartStates:
  """The initial states of the method's carried parts (SAMPa's gradient, ELLE-A's lambda)."""
  return methods.build(config).init(params)


def _select_step_size(config):
  return config.select_step_size or config.eps / 4


def evaluate_split(eval_fn, state, arrays, mesh, batch_size) -> Dict[str, float]:
  """Clean and PGD accuracy over a split (sums reduced on the host)."""
  totals = {"n": 0.0, "clean_correct": 0.0, "robust_correct": 0.0}
  bs = batch_size - batch_size % mesh.devices.size or mesh.devices.size
  for batch in pipeline.eval_batches(arrays, batch_size=bs, process_index=jax.process_index(),
                                     process_count=jax.process_count()):
    out = eval_fn(state.params, state.batch_stats, parallel.shard_batch(batch, mesh))
    for k in totals:
      totals[k] += float(out[k])
  n = max(totals["n"], 1.0)
  return {"clean_acc": totals["clean_correct"] / n, "robust_acc": totals["robust_correct"] / n,
          "n": int(totals["n"])}


def _first_nan_step(losses, first_step) -> Optional[int]:
  vals = np.asarray(jax.device_get(jnp.stack(losses)))
  bad = np.where(~np.isfinite(vals))[0]
  return None if bad.size == 0 else int(first_step + bad[0])


class InvalidRun(ValueError):
  """A config field or workdir refused before anything is created, loaded or compiled (the
  message names the field and its valid range; ``launch.train`` prints it as one line)."""


def check_run(config: ml_collections.ConfigDict, workdir: str, *, num_devices: int = 1) -> None:
  """The checks :func:`train_and_evaluate` makes before it creates ``workdir``: the config's fields
  and parts (:func:`robust_jax.training.config.validate`), the fields a resume may not change, the
  model's name and that ``workdir`` is not a file. Raises :class:`InvalidRun`."""
  from robust_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  try:
    config_lib.validate(config, num_devices=num_devices)
    resume_lib.check_fields(config)
  except InvalidRun:
    raise
  except ValueError as e:
    raise InvalidRun(str(e)) from e
  if config.model not in models_lib.MODELS:
    raise InvalidRun(f"config.model: unknown model {config.model!r}; valid names: "
                     f"{', '.join(sorted(models_lib.MODELS))}")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise InvalidRun(f"workdir {workdir} exists and is not a directory")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains ``config`` into ``workdir`` (resuming if possible) and evaluates on the test split.

  Args:
    config: a training config (:func:`robust_jax.training.config.base_config` and a recipe).
    workdir: where checkpoints, ``metrics.jsonl`` and TensorBoard events go; created if missing.

  Returns:
    A summary: the final validation and test numbers and the best epoch (for a run that had
    finished already, the recorded ones, with ``"finished": True``).

  Raises:
    robust_jax.training.preemption.Preempted: after saving a checkpoint on SIGTERM / SIGINT (a
      ``SystemExit`` with code 75).
    robust_jax.training.workdir_lock.WorkdirLocked: another trainer holds ``workdir``.
    robust_jax.training.resume.ResumeError: checkpoints exist and none restores (``config.restart``
      is False).
    robust_jax.training.resume.ConfigChangeError: the config changes the checkpoint's trajectory.
    robust_jax.checkpoint.CheckpointWriteError: a checkpoint could not be written (full disk).
    FloatingPointError: the loss became NaN (the last good checkpoint is kept).
    InvalidRun: a bad config field (named), an unknown model, or a workdir that is a file (a
      ``ValueError``; nothing is created).
  """
  parallel.initialize_distributed(config.coordinator_address, config.num_processes,
                                  config.process_id)
  mesh = parallel.make_mesh()
  check_run(config, workdir, num_devices=mesh.devices.size)
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.WorkdirLock(workdir), preemption.PreemptionGuard() as guard:
    return _train(config, workdir, mesh, guard)


def load_dataset(config: ml_collections.ConfigDict) -> pipeline.Dataset:
  """The dataset a training run of ``config`` trains on: its splits and, when
  ``config.label_noise`` is not ``"none"``, its corrupted training labels (with ``clean_label``
  and ``noisy`` recorded in the training split)."""
  return pipeline.load_dataset(config.dataset, data_dir=config.data_dir or None,
                               validation_fraction=config.validation_fraction,
                               label_noise=config.label_noise,
                               label_noise_rate=config.label_noise_rate,
                               label_noise_seed=config.label_noise_seed)


def _train(config, workdir, mesh, guard) -> Dict[str, Any]:
  is_main = jax.process_index() == 0
  ds = load_dataset(config)
  model = restore_lib.build_model(config, ds.num_classes)
  spe = pipeline.steps_per_epoch(len(ds.train["label"]), config.batch_size)
  tx, lr_fn = step_lib.make_optimizer(config, spe)
  sample = jnp.zeros((1,) + tuple(ds.image_shape), jnp.float32)
  state = state_lib.create(model=model, tx=tx, sample_input=sample, seed=config.seed)
  bundle = methods.build(config)
  state = state.replace(parts=bundle.init(state.params))

  ckpt_dir = os.path.join(workdir, "checkpoints")
  keep = max(config.keep_checkpoints, 2)
  manager = ckpt_lib.CheckpointManager(ckpt_dir, max_to_keep=keep)
  ok = False
  try:
    state, manager, resumed = resume_lib.restore_run(
        config, workdir, state, manager, steps_per_epoch=spe, keep=keep, is_main=is_main,
        stopped_file=STOPPED_FILE)
    summary = _run(config, workdir, mesh, guard, ds, model, spe, tx, lr_fn, bundle, state,
                   manager, resumed, is_main)
    ok = True
    return summary
  finally:
    manager.close(quiet=not ok)


def _run(config, workdir, mesh, guard, ds, model, spe, tx, lr_fn, bundle, state, manager,
         resumed, is_main) -> Dict[str, Any]:
  running, best, co_prev = resumed["running"], resumed["best"], resumed["co_prev"]
  history = resumed["history"]
  stopped = os.path.exists(os.path.join(workdir, STOPPED_FILE))
  done = resume_lib.finished_summary(config, workdir, resumed, stopped)
  if done is not None:
    what = ("stopped by the catastrophic-overfitting guard" if stopped else
            f"finished at epoch {resumed['epochs_done']}")
    msg = (f"{workdir}: {what} (step {resumed['step']}); nothing to do. Recorded: test clean "
           f"accuracy {done['test'].get('clean_acc', math.nan):.3f}, test "
           f"PGD-{done['test'].get('attack_steps', config.test_attack_steps)} robust accuracy "
           f"{done['test'].get('robust_acc', math.nan):.3f} (best checkpoint).")
    logging.info("%s", msg)
    if is_main:
      print(msg, flush=True)
    return done

  # A stopped run keeps its records (they end at the guard's event, after its last checkpoint).
  writer = metrics_lib.MetricWriter(
      workdir, enabled=is_main, resume_step=None if stopped else (resumed["step"] or 0))
  if writer.dropped:
    logging.warning("Dropped %d records of %s newer than the restored step %d (written after that "
                    "checkpoint; the work is redone).", len(writer.dropped), writer.path,
                    resumed["step"] or 0)
  if resumed["changes"]:
    entry = {"step": resumed["step"],
             "fields": {c.field: {"checkpoint": c.saved, "config": c.current, "free": c.free}
                        for c in resumed["changes"]},
             "allowed_by_allow_config_change": [c.field for c in resumed["accepted"]]}
    writer.write("config_change", resumed["step"], entry)
    history = history + [entry]

  state = parallel.replicate(state, mesh)
  train_step = parallel.jit_data_parallel(
      step_lib.make_train_step(config, model, tx, lr_fn, spe, bundle=bundle), mesh)
  eval_fn = jax.jit(step_lib.make_eval_step(
      model, eps=config.eps, step_size=_select_step_size(config),
      num_steps=config.select_attack_steps, norm=config.norm))
  co_batch = {k: v[:min(256, len(ds.train["label"]))] for k, v in ds.train.items()}
  co_eval_fn = jax.jit(step_lib.make_eval_step(
      model, eps=config.eps, step_size=config.eps / 4, num_steps=config.co_guard_steps,
      norm=config.norm))

  def save(state, epoch_done, running, *, metric=None):
    meta = {"config": config.to_dict(), "epoch": epoch_done, "running": running, "best": best,
            "co_prev": co_prev, "num_classes": ds.num_classes,
            "image_shape": list(ds.image_shape), "steps_per_epoch": spe,
            "config_changes": history}
    manager.save(int(state.step), jax.device_get(state), metadata=_jsonable(meta), metric=metric)

  def preempted(state, where):
    manager.wait_until_finished()
    step = int(state.step)
    path = os.path.join(manager.directory, ckpt_lib.LATEST_DIR, str(step))
    msg = (f"{guard.signal_name}: saved the checkpoint {path} (step {step}, {where}); exiting "
           f"with code {preemption.EXIT_PREEMPTED}: rerun the same command to resume.")
    writer.write("preempted", step, {"signal": guard.signal_name, "checkpoint": path})
    writer.close()
    logging.warning("%s", msg)
    return preemption.Preempted(msg, step=step, checkpoint=path, signal_name=guard.signal_name)

  epoch_done = resumed["epochs_done"]
  prev_epoch_state = jax.device_get(state) if config.co_guard == "rollback" else None
  t_start = time.time()
  while epoch_done < config.num_epochs and not stopped:
    epoch = epoch_done
    step0 = int(state.step)
    start_in_epoch = step0 - epoch * spe
    if not 0 <= start_in_epoch <= spe:
      raise RuntimeError(f"inconsistent checkpoint in {manager.directory}: step {step0} is not in "
                         f"epoch {epoch} ({spe} steps per epoch)")
    bar = _progress(config, spe, start_in_epoch, epoch, is_main)
    losses, step_metrics = [], []
    first = step0
    t0 = time.time()
    # The pipeline's epochs, or CFOL's class-sampled batches (the distribution read from `state`).
    batches = () if start_in_epoch == spe else sampling.train_batches_for(bundle, lambda: state)(
        ds.train, batch_size=config.batch_size, seed=config.seed, epoch=epoch,
        start_step=start_in_epoch, augment=config.augment,
        process_index=jax.process_index(), process_count=jax.process_count())
    for i, batch in enumerate(batches):
      state, m = train_step(state, parallel.shard_batch(batch, mesh))
      losses.append(m["loss"])
      step_metrics.append(m)
      cur = step0 + i + 1
      if bar is not None:
        bar.update(1)
      log_now = config.log_every_steps and cur % config.log_every_steps == 0
      ckpt_now = config.checkpoint_every_steps and cur % config.checkpoint_every_steps == 0
      stop_now = guard.should_stop()
      if (log_now or ckpt_now or stop_now) and (cur % spe or stop_now):
        _raise_on_nan(losses, first)
        running = _accumulate(running, step_metrics)
        losses, step_metrics, first = [], [], cur
        if bar is not None:
          bar.set_postfix(_postfix(running))
        if ckpt_now or stop_now:
          # epoch_done stays `epoch`: at the epoch's last step, its evaluation is still to come.
          save(state, epoch, running)
        if stop_now:
          if bar is not None:
            bar.close()
          raise preempted(state, f"step {cur - epoch * spe} of {spe} of epoch {epoch + 1}")
    _raise_on_nan(losses, first)
    running = _accumulate(running, step_metrics)
    if bar is not None:
      bar.close()
    epoch_time = max(time.time() - t0, 1e-9)
    train_record = {k: v / running["count"] for k, v in running.items()
                    if k not in ("count", fosc_lib.HIST_KEY)}
    if fosc_lib.HIST_KEY in running:
      train_record.update(fosc_lib.epoch_summary(running[fosc_lib.HIST_KEY]))
    train_record.update(epoch=epoch, epoch_time_s=epoch_time,
                        examples_per_s=(spe - start_in_epoch) * config.batch_size / epoch_time)
    writer.write("train", int(state.step), train_record)
    val = evaluate_split(eval_fn, state, ds.validation, mesh, config.eval_batch_size)
    writer.write("eval", int(state.step), {"split": "validation", "epoch": epoch, **val})
    if is_main:
      logging.info("epoch %d: loss %.4f clean %.3f adv %.3f | val clean %.3f robust %.3f (%.1fs)",
                   epoch, train_record.get("loss", math.nan), train_record.get("clean_acc", math.nan),
                   train_record.get("adv_acc", math.nan), val["clean_acc"], val["robust_acc"],
                   epoch_time)
      print(f"epoch {epoch + 1}/{config.num_epochs}: train loss {train_record['loss']:.4f}, "
            f"val clean {val['clean_acc']:.3f}, val PGD-{config.select_attack_steps} "
            f"{val['robust_acc']:.3f} ({epoch_time:.1f}s)", flush=True)
    running = {}
    if config.co_guard != "off":
      co_acc = _co_check(co_eval_fn, state, co_batch, mesh, config)
      fired = co_prev is not None and co_prev - co_acc > config.co_guard_drop
      writer.write("co_guard", int(state.step), {"epoch": epoch, "train_pgd_acc": co_acc,
                                                  "previous": co_prev, "fired": fired})
      if fired:
        msg = (f"catastrophic overfitting at epoch {epoch}: training-batch PGD accuracy fell from "
               f"{co_prev:.3f} to {co_acc:.3f}; {config.co_guard}")
        logging.warning(msg)
        if is_main:
          print(msg, flush=True)
          with open(os.path.join(workdir, STOPPED_FILE), "w") as f:
            f.write(msg + "\n")
        if config.co_guard == "rollback" and prev_epoch_state is not None:
          # The weights of the end of the previous epoch (kept in memory: with mid-epoch
          # checkpoints, the latest one on disk may already belong to the collapsing epoch).
          state = parallel.replicate(prev_epoch_state, mesh)
        stopped = True
        break
      co_prev = co_acc
    is_best = val["robust_acc"] > best["robust_acc"]
    if is_best:
      best = {"robust_acc": val["robust_acc"], "clean_acc": val["clean_acc"], "epoch": epoch}
    save(state, epoch + 1, {}, metric=val["robust_acc"])
    epoch_done = epoch + 1
    if config.co_guard == "rollback":
      prev_epoch_state = jax.device_get(state)
    if guard.should_stop() and epoch_done < config.num_epochs:
      raise preempted(state, f"end of epoch {epoch_done}")
  manager.wait_until_finished()
  if guard.should_stop():
    raise preempted(state, "end of training, before the test evaluation")

  summary = {"train_time_s": time.time() - t_start, "best": best}
  restored_best = manager.restore_best(jax.device_get(state))
  final_state = parallel.replicate(restored_best[0], mesh) if restored_best else state
  test_eval = jax.jit(step_lib.make_eval_step(
      model, eps=config.eps, step_size=config.eps / 4, num_steps=config.test_attack_steps,
      norm=config.norm))
  test = evaluate_split(test_eval, final_state, ds.test, mesh, config.eval_batch_size)
  summary["test"] = test
  # At the last training step (after every validation record), naming the checkpoint's own step.
  writer.write("eval", int(state.step), {"split": "test", "checkpoint": "best",
                                         "checkpoint_step": int(final_state.step),
                                         "attack_steps": config.test_attack_steps, **test})
  writer.close()
  if is_main:
    print(f"test (best checkpoint, epoch {best['epoch'] + 1}, step {int(final_state.step)}): "
          f"test clean accuracy {test['clean_acc']:.3f}, test PGD-{config.test_attack_steps} "
          f"robust accuracy {test['robust_acc']:.3f} (training loop's attack: {config.norm} eps "
          f"{config.eps:g}, key 0; launch.eval runs its own suite)", flush=True)
  return summary


def _co_check(eval_fn, state, batch_arrays, mesh, config) -> float:
  batch = {"image": pipeline.to_float(batch_arrays["image"]),
           "label": np.asarray(batch_arrays["label"], np.int32)}
  n = len(batch["label"]) - len(batch["label"]) % mesh.devices.size
  batch = {k: v[:n] for k, v in batch.items()}
  out = eval_fn(state.params, state.batch_stats, parallel.shard_batch(batch, mesh))
  return float(out["robust_correct"]) / max(float(out["n"]), 1.0)


def _raise_on_nan(losses, first_step):
  if not losses:
    return
  bad = _first_nan_step(losses, first_step)
  if bad is not None:
    raise FloatingPointError(
        f"the training loss became NaN/inf at step {bad} (epoch-local index {bad - first_step} of "
        "this logging window); the last good checkpoint was kept. Lower the learning rate or check "
        "the inputs.")


def _accumulate(running, step_metrics):
  if not step_metrics:
    return running
  stacked = jax.device_get({k: jnp.stack([m[k] for m in step_metrics]) for k in step_metrics[0]})
  out = dict(running)
  for k, v in stacked.items():
    total = np.sum(np.asarray(v, np.float64), axis=0)  # scalars per step; histograms [bins] per step
    prev = out.get(k, 0.0)
    out[k] = (np.asarray(prev) + total).tolist() if total.ndim else prev + float(total)
  out["count"] = out.get("count", 0) + len(step_metrics)
  return out


def _postfix(running):
  c = max(running.get("count", 1), 1)
  keys = ("loss", "clean_acc", "adv_acc")
  return {k: f"{running[k] / c:.3f}" for k in keys if k in running}


def _progress(config, total, initial, epoch, is_main):
  if not (config.progress and is_main):
    return None
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{config.num_epochs}",
              unit="step", leave=False, dynamic_ncols=True)


def _jsonable(obj):
  return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# The restore path is robust_jax.training.restore; ``loop.load_classifier`` stays importable.
load_classifier = restore_lib.load_classifier
