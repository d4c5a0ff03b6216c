"""The resume policy: which config changes a resumed run accepts, and what a workdir already holds.

A resumed run must continue *the same* trajectory, or its checkpoint would report one config for
a run trained under two. :func:`config_changes` compares every field of the checkpoint's config
with the current one and sorts the differences:

* free: the fields of :data:`robust_jax.training.config.FIELDS_FREE_ON_RESUME` (logging,
  checkpointing, evaluation budgets, the multi-host addresses, the resume switches themselves),
  which do not touch the parameters' trajectory;
* ``num_epochs``: free when the run gets longer (or shorter, but not below the epochs already
  trained) *and* the trajectory so far does not depend on the run's length: the learning-rate
  schedule is ``constant`` or ``piecewise`` and no part of the method reads ``num_epochs``
  (Dynamic AT's T' = fraction * num_epochs does); otherwise it changes the trajectory;
* every other field changes the trajectory (a field that a newer version added and the checkpoint
  lacks counts as unchanged when the current value is its default).

Trajectory changes are refused, naming each field with both values, unless listed in
``config.allow_config_change`` (then they are accepted, logged and recorded: the loop writes a
``config_change`` record to ``metrics.jsonl`` and keeps the history in the checkpoints).

:func:`restore_run` applies the policy to a workdir for ``train_and_evaluate``: the latest
checkpoint, else the newest good best one, else :class:`ResumeError` (or, with ``config.restart``,
the old work moved to ``<workdir>/abandoned-<time>/`` and a fresh start); then the config check.
:func:`finished_summary` says whether a restored run has anything left to do.

Example:

>>> from robust_jax.training import config as config_lib
>>> saved = config_lib.base_config().to_dict()
>>> current = config_lib.base_config()
>>> current.weight_decay, current.eval_batch_size = 1e-3, 100
>>> changes = config_changes(saved, current, epochs_done=3)
>>> [(c.field, c.free) for c in changes]
[('eval_batch_size', True), ('weight_decay', False)]
>>> check_changes(changes)
Traceback (most recent call last):
...
robust_jax.training.resume.ConfigChangeError: cannot resume: the config changes fields that alter \
the training trajectory: weight_decay (checkpoint 0.0005, now 0.001). ...
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

from absl import logging

from robust_jax import checkpoint as ckpt_lib
from robust_jax import metrics as metrics_lib
from robust_jax import parts as parts_lib
from robust_jax.training import adversary as adversary_lib
from robust_jax.training import config as config_lib
from robust_jax.training import methods
from robust_jax.training import restore as restore_lib

_MISSING = "<missing>"
_LENGTH_FREE_LR_SCHEDULES = ("constant", "piecewise")


class ConfigChangeError(ValueError):
  """A resume with a config that changes the trajectory of the checkpoint's run."""


class ResumeError(RuntimeError):
  """A workdir holds work that cannot be resumed (and ``config.restart`` is False)."""


class Change(NamedTuple):
  """One field that differs between the checkpoint's config and the current one.

  Attributes:
    field: the field's name.
    saved: its value in the checkpoint (JSON form; ``"<missing>"`` if the checkpoint lacks it).
    current: its current value (JSON form).
    free: whether the change leaves the trajectory alone.
    reason: why a change of ``num_epochs`` alters the trajectory ("" otherwise).
  """
  field: str
  saved: Any
  current: Any
  free: bool
  reason: str = ""

  def describe(self) -> str:
    why = f", {self.reason}" if self.reason else ""
    return f"{self.field} (checkpoint {self.saved!r}, now {self.current!r}{why})"


def num_epochs_shapes_trajectory(config: Mapping[str, Any]) -> str:
  """Why the run's length enters its trajectory so far ("" if it does not).

  Args:
    config: the training config.

  Returns:
    A reason (the learning-rate schedule, or the method part reading ``num_epochs``), or "".
  """
  if config["lr_schedule"] not in _LENGTH_FREE_LR_SCHEDULES:
    return f"lr_schedule={config['lr_schedule']!r} is a function of num_epochs"
  method = methods.get_method(config["method"])
  factories = [adversary_lib.STOP_RULES.factory(method.stop),
               adversary_lib.BUDGETS.factory(method.budget)]
  if "num_epochs" in (f for factory in factories for f in parts_lib.fields_of(factory)):
    return f"method {method.name!r} reads num_epochs (its schedule is relative to the run's length)"
  return ""


def config_changes(saved_config: Mapping[str, Any], config: Any, *,
                   epochs_done: int) -> List[Change]:
  """Every field that differs between the checkpoint's config and ``config``, sorted by name.

  Args:
    saved_config: the config stored in the checkpoint (a JSON dict).
    config: the current config (a ConfigDict or a dict).
    epochs_done: the epochs the checkpoint has completed (``num_epochs`` may not go below them).

  Returns:
    A list of :class:`Change` (empty if nothing changed).
  """
  saved = ckpt_lib.to_json(saved_config, "saved_config")
  current = ckpt_lib.to_json(config, "config")
  defaults = ckpt_lib.to_json(config_lib.base_config(), "base_config")
  changes = []
  for field in sorted(set(saved) | set(current)):
    a, b = saved.get(field, _MISSING), current.get(field, _MISSING)
    if a == _MISSING and b == defaults.get(field, _MISSING):
      continue  # a field newer than the checkpoint, at its default
    if a == b:
      continue
    free, reason = field in config_lib.FIELDS_FREE_ON_RESUME, ""
    if field == "num_epochs" and isinstance(b, int):
      reason = num_epochs_shapes_trajectory(current)
      if b < epochs_done:
        reason = f"the checkpoint has trained {epochs_done} epochs already"
      free = not reason
    changes.append(Change(field, a, b, free, reason))
  return changes


def check_changes(changes: Sequence[Change], allowed: Sequence[str] = ()) -> List[Change]:
  """Raises unless every trajectory change is listed in ``allowed``.

  Args:
    changes: from :func:`config_changes`.
    allowed: ``config.allow_config_change``, the fields whose change is accepted anyway.

  Returns:
    The trajectory changes that ``allowed`` accepted (to be recorded).

  Raises:
    ConfigChangeError: naming every refused field, with both values.
  """
  refused = [c for c in changes if not c.free and c.field not in allowed]
  if refused:
    names = ", ".join(repr(c.field) for c in refused)
    raise ConfigChangeError(
        "cannot resume: the config changes fields that alter the training trajectory: "
        + "; ".join(c.describe() for c in refused)
        + ". Set them back to the checkpoint's values, use a new --workdir, or accept the change "
        f"with --config.allow_config_change=\"({names},)\" (recorded in metrics.jsonl).")
  return [c for c in changes if not c.free]


# --------------------------------------------------------------------------------------------------
# What a workdir holds: restoring a run under the policy.


def check_fields(config) -> None:
  """Checks ``config.restart`` (a bool) and ``config.allow_config_change`` (a tuple of known field
  names); raises ValueError naming the field."""
  if not isinstance(config.restart, bool):
    raise ValueError(f"config.restart must be True or False, got {config.restart!r}")
  allowed = config.allow_config_change
  if isinstance(allowed, str) or not all(isinstance(f, str) for f in allowed):
    raise ValueError("config.allow_config_change must be a tuple of field names, e.g. "
                     f"('weight_decay',), got {allowed!r}")
  unknown = sorted(set(allowed) - set(config.keys()))
  if unknown:
    raise ValueError(f"config.allow_config_change names fields the config lacks: {unknown}")


def abandon(workdir: str, is_main: bool, *, stopped_file: str) -> str:
  """Moves the run's outputs to ``<workdir>/abandoned-<time>/`` (never deletes); returns it."""
  dest = os.path.join(workdir, time.strftime("abandoned-%Y%m%d-%H%M%S"))
  if is_main:
    os.makedirs(dest, exist_ok=True)
    for name in ("checkpoints", "metrics.jsonl", "tb", stopped_file):
      src = os.path.join(workdir, name)
      if os.path.exists(src):
        shutil.move(src, os.path.join(dest, name))
  ckpt_lib._sync("robust_jax_abandon")  # pylint: disable=protected-access
  return dest


def records_up_to(workdir: str, step: Optional[int]) -> List[Dict[str, Any]]:
  """The records of ``workdir/metrics.jsonl`` with a step <= ``step`` (all for None; [] if none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  return [r for r in metrics_lib.read(path) if step is None or int(r.get("step", 0)) <= step]


def restore_run(config, workdir, state, manager, *, steps_per_epoch, keep, is_main,
                stopped_file="STOPPED"):
  """Restores the newest usable checkpoint under the resume policy (module docstring).

  Returns:
    ``(state, manager, info)``: the restored (or initial) state, the manager (a new one after
    ``config.restart`` moved the old work aside) and a dict of what the checkpoint brings: the
    running metrics of a half-finished epoch, ``best``, ``co_prev``, ``epochs_done``, ``step``
    (None for a fresh run), the config-change ``history``, this resume's ``changes`` and the
    ``accepted`` trajectory changes.
  """
  had_work = manager.has_checkpoints()
  restored = manager.restore_latest(state)
  if restored is None and had_work:
    restored = manager.restore_best(state)
    if restored is not None:
      logging.warning(
          "No latest checkpoint in %s restores; resuming from the best checkpoint (step %d, epoch "
          "%d): the epochs after it are trained again.", manager.directory,
          int(restored[0].step), int(restored[1].get("epoch", 0)))
    elif config.restart:
      manager.close(quiet=True)
      dest = abandon(workdir, is_main, stopped_file=stopped_file)
      logging.warning("No checkpoint in %s restores; config.restart=True: moved the old work to %s "
                      "and starting from scratch.", workdir, dest)
      manager = ckpt_lib.CheckpointManager(os.path.join(workdir, "checkpoints"), max_to_keep=keep)
    else:
      raise ResumeError(
          f"no checkpoint in {manager.directory} restores (every latest and best one failed; "
          f"they were moved to {os.path.join(manager.directory, ckpt_lib.CORRUPT_DIR)}): "
          "refusing to start from scratch over existing work. Rerun with --config.restart=True to "
          f"move the old work to {workdir}/abandoned-<time>/ and start over, or use another "
          "--workdir.")
  info = dict(running={}, best={"robust_acc": -1.0, "epoch": -1}, co_prev=None,
                  epochs_done=0, step=None, history=[], changes=[], accepted=[])
  if restored is None:
    return state, manager, info
  state, meta = restored
  step = int(state.step)
  epochs_done = int(meta.get("epoch", step // steps_per_epoch))
  restore_lib.check_compatible(meta["config"], config.to_dict(),
                               config_lib.FIELDS_THAT_MUST_MATCH_ON_RESUME)
  changes = config_changes(meta["config"], config, epochs_done=epochs_done)
  accepted = check_changes(changes, tuple(config.allow_config_change))
  for c in accepted:
    logging.warning("Resuming with a changed config (config.allow_config_change): %s",
                    c.describe())
  info.update(running=meta.get("running", {}), best=meta.get("best", info["best"]),
              co_prev=meta.get("co_prev"), epochs_done=epochs_done, step=step,
              history=list(meta.get("config_changes", [])), changes=changes, accepted=accepted)
  logging.info("Resumed from step %d (epoch %d done) in %s", step, epochs_done, workdir)
  return state, manager, info


def finished_summary(config, workdir, resumed, stopped) -> Optional[Dict[str, Any]]:
  """The recorded summary of a run that has nothing left to do, or None.

  A run is finished when its checkpoint has trained ``config.num_epochs`` epochs (or the
  catastrophic-overfitting guard stopped it) and its test record is written: at the checkpoint's
  step (any step for a stopped run, whose records end after its last checkpoint). A run killed
  between its last checkpoint and its test record is not finished: it is evaluated then.

  Returns:
    ``{"train_time_s": 0.0, "best", "test", "finished": True}`` or None.
  """
  if resumed["step"] is None:
    return None
  if not (stopped or resumed["epochs_done"] >= config.num_epochs):
    return None
  records = records_up_to(workdir, None if stopped else resumed["step"])
  tests = [r for r in records if r.get("kind") == "eval" and r.get("split") == "test"
           and (stopped or r["step"] == resumed["step"])]
  if not tests:
    return None
  test = {k: tests[-1][k] for k in ("clean_acc", "robust_acc", "n", "attack_steps")
          if k in tests[-1]}
  return {"train_time_s": 0.0, "best": resumed["best"], "test": test, "finished": True}
