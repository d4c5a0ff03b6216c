"""``train_and_evaluate(config, workdir)`` for the GANs: resumable training, metrics, evaluation.

Layout of ``workdir``::

  checkpoints/      orbax (robust_jax.checkpoint): the whole GANState, latest ``keep_checkpoints``
  metrics.jsonl     "train" records (means since the last one, step time) and "eval" records
  tb/               the same scalars for TensorBoard
  samples/          sample grids, ``step_<step>.png`` (fixed noise, so grids are comparable)
  classifier/       the feature classifier (unless ``config.classifier_workdir`` is set)

Resume: a restarted run restores the latest checkpoint and continues bit-exactly: the data order of
generator step ``s`` is a pure function of ``(seed, s)`` (:func:`robust_jax.data.train_batches`
with the epoch and step in epoch of ``s``), and the step's randomness is ``fold_in(key, s)``.
Evaluation draws from its own fixed key and never touches the state. Records written between the
last checkpoint and a kill are written again by the resumed run (readers keep the last record of a
step: :func:`history`).

Evaluation (every ``eval_every_steps`` and at the end, :class:`robust_jax.games.evaluation.Evaluator`):
the Frechet distance in the feature classifier's space (not Inception FID) between generated samples
and the test split (same n), the critic's held-out Wasserstein estimate ``E d(test) - E d(G(z))``,
and the class histogram of the samples.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Dict, List

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from robust_jax import checkpoint as ckpt_lib
from robust_jax import metrics as metrics_lib
from robust_jax import parallel
from robust_jax.data import pipeline
from robust_jax.games import config as config_lib
from robust_jax.games import evaluation, networks
from robust_jax.games import step as step_lib
from robust_jax.training import restore as restore_lib


def history(workdir: str, kind: str = "eval") -> List[Dict[str, Any]]:
  """The records of one kind in ``workdir/metrics.jsonl``, one per step (the last one written)."""
  by_step = {r["step"]: r for r in metrics_lib.read(workdir) if r["kind"] == kind}
  return [by_step[s] for s in sorted(by_step)]


# The fields that the compiled step depends on (networks.build and step.make_train_step read them).
STEP_FIELDS = ("latent_dim", "dim", "generator_batch_norm", "constraint", "critic_loss",
               "generator_loss", "clip_value", "gp_lambda", "n_critic", "critic_unroll", "optimizer",
               "learning_rate", "beta1", "beta2", "rmsprop_decay")


@functools.lru_cache(maxsize=8)
def _compiled_step(config_json: str, shape: tuple, mesh):
  """The jitted data-parallel step of a config, built once per process (a resumed or repeated run
  in the same process, a notebook cell run twice, reuses the compilation)."""
  config = ml_collections.ConfigDict(json.loads(config_json))
  generator, critic = networks.build(config, shape)
  return parallel.jit_data_parallel(step_lib.make_train_step(config, generator, critic), mesh)


def _means(rows: List[Dict[str, Any]]) -> Dict[str, float]:
  rows = jax.device_get(rows)
  return {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "critic_steps"}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains the GAN of ``config`` into ``workdir`` (resuming if possible) and evaluates it.

  Args:
    config: a GAN config (:func:`robust_jax.games.config.for_kind`).
    workdir: the run directory (see the module docstring).

  Returns:
    ``{"steps", "critic_steps", "train_time_s", "step_time_s", "last_eval", "workdir"}``; the last
    eval record is None when ``config.evaluate`` is False.

  Raises:
    ValueError: on a bad config, a NaN loss, or a checkpoint of a different run.
  """
  config_lib.validate(config)
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  ds = pipeline.load_dataset(config.dataset, validation_fraction=config.validation_fraction)
  shape = tuple(ds.image_shape)
  generator, critic = networks.build(config, shape)
  state = step_lib.create(config, generator, critic, shape)
  manager = ckpt_lib.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                       max_to_keep=config.keep_checkpoints)
  restored = manager.restore_latest(ckpt_lib.abstract_state(state))
  if restored is not None:
    state, meta = restored
    restore_lib.check_compatible(meta["config"], config.to_dict(),
                                 config_lib.FIELDS_THAT_MUST_MATCH_ON_RESUME)
    logging.info("resumed %s at generator step %d", workdir, int(state.step))
  writer = metrics_lib.MetricWriter(workdir)
  train_step = _compiled_step(
      json.dumps({k: config[k] for k in STEP_FIELDS}, sort_keys=True), shape, mesh)

  evaluator = None
  if config.evaluate:
    trained = evaluation.train_feature_classifier(
        config.dataset, config.classifier_workdir or os.path.join(workdir, "classifier"),
        model=config.classifier_model, num_epochs=config.classifier_epochs, seed=config.seed)
    n = config.eval_samples or len(ds.test["label"])
    evaluator = evaluation.Evaluator(trained, pipeline.to_float(ds.train["image"]),
                                     pipeline.to_float(ds.test["image"][:n]),
                                     num_classes=ds.num_classes)
    z_eval = jax.random.normal(jax.random.fold_in(jax.random.key(config.seed), 0x6A4),
                               (evaluator.n, config.latent_dim), jnp.float32)
    sample_fn = jax.jit(lambda st, z: step_lib.sample(generator, st, z))
    critic_eval = jax.jit(lambda st, x: step_lib.critic_fn(critic, st)(x))

  def evaluate(state):
    samples = np.concatenate([np.asarray(sample_fn(state, z_eval[i:i + 500]))
                              for i in range(0, evaluator.n, 500)])
    record = evaluator(samples, lambda x: critic_eval(state, x))
    step = int(state.step)
    grid = evaluation.save_grid(samples[:config.grid_samples],
                                os.path.join(workdir, "samples", f"step_{step:06d}.png"),
                                title=f"{config.kind}, generator step {step}")
    record["grid"] = os.path.relpath(grid, workdir)
    writer.write("eval", step, record)
    return record

  def save(state):
    manager.save(int(state.step), jax.device_get(state),
                 metadata=ckpt_lib.to_json({"config": config.to_dict()}, "metadata"))

  n_critic, b = config.n_critic, config.batch_size
  spe = pipeline.steps_per_epoch(len(ds.train["label"]), b * n_critic)
  state = parallel.replicate(state, mesh)
  last_eval = None
  if evaluator is not None and int(state.step) == 0:  # the untrained generator: the curves' start
    last_eval = evaluate(state)
  rows, t_start, t_log = [], time.time(), time.time()
  step_times = []
  try:  # an interrupted run (an exception, Ctrl-C) still completes its in-flight checkpoint
    while int(state.step) < config.num_steps:
      epoch, start = divmod(int(state.step), spe)
      for batch in pipeline.train_batches(
          ds.train, batch_size=b * n_critic, seed=config.seed, epoch=epoch, start_step=start,
          process_index=jax.process_index(), process_count=jax.process_count()):
        x = batch["image"].reshape((-1, n_critic) + shape)
        t0 = time.time()
        state, m = train_step(state, parallel.shard_batch({"image": x}, mesh))
        rows.append(m)
        step = int(state.step)  # waits for the step: the time below is the step's
        step_times.append(time.time() - t0)
        if step % config.log_every_steps == 0 or step == config.num_steps:
          record = _means(rows)
          if not all(np.isfinite(v) for v in record.values()):
            raise ValueError(f"non-finite GAN metrics before generator step {step}: {record}")
          record.update(critic_steps=int(m["critic_steps"]),
                        step_time_s=(time.time() - t_log) / len(rows),
                        examples_per_s=len(rows) * b * (n_critic + 1) / (time.time() - t_log))
          writer.write("train", step, record)
          if config.progress and jax.process_index() == 0:
            print(f"[{config.kind}] step {step}/{config.num_steps}: critic {record['critic_loss']:.4f}"
                  f" W-est {record['wasserstein_estimate']:.4f} generator "
                  f"{record['generator_loss']:.4f} ({record['step_time_s'] * 1e3:.0f} ms/step)",
                  flush=True)
          rows, t_log = [], time.time()
        if evaluator is not None and (step % config.eval_every_steps == 0
                                      or step == config.num_steps):
          last_eval = evaluate(state)
          t_log = time.time()
        if step % config.checkpoint_every_steps == 0 or step == config.num_steps:
          save(state)
        if step >= config.num_steps:
          break
  finally:
    manager.close()
    writer.flush()
  if evaluator is not None and last_eval is None:  # resumed a finished run
    last_eval = evaluate(state)
  writer.close()
  return {"steps": int(state.step), "critic_steps": int(state.critic_steps),
          "train_time_s": time.time() - t_start,
          "step_time_s": float(np.median(step_times[1:])) if len(step_times) > 1 else None,
          "last_eval": last_eval, "workdir": workdir}


__all__ = ["history", "train_and_evaluate"]
