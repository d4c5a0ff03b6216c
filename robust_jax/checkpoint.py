"""Checkpoints that survive kills: rotating periodic saves, a separate best, corruption fallback.

A thin layer over ``orbax.checkpoint.CheckpointManager``. Layout under ``directory``::

  latest/<step>/     the periodic checkpoints; only the last ``max_to_keep`` are kept
  best/<version>/    the best checkpoints by a scalar metric (higher is better), the newest two kept;
                     rotation of latest/ never touches them
  corrupt/           checkpoints that failed to restore, moved aside (never deleted)

Every checkpoint holds three items: ``state`` (any pytree of arrays, written with
``ocp.args.StandardSave``: optax NamedTuple states and typed ``jax.random.key`` arrays round-trip
when restored against an abstract target), ``metadata`` (the caller's JSON dict: config, epoch,
step in epoch, metrics) and ``info`` (ours: the step, the metric, and the path and shape of every
state leaf).

Kill safety:

* orbax writes each checkpoint into ``<step>.orbax-checkpoint-tmp-<time>`` and renames it when
  complete, so a checkpoint directory either is whole or does not exist. A temporary directory left by
  a SIGKILL is never listed as a step and is deleted when the next writer starts
  (``cleanup_tmp_directories``).
* Saves are asynchronous by default: :meth:`CheckpointManager.save` returns once the arrays are copied
  to host memory and the files are written in the background. Every save first waits for the previous
  one; call :meth:`CheckpointManager.wait_until_finished` (or :meth:`close`, or use the manager as a
  context manager) before the process exits.
* :meth:`CheckpointManager.restore_latest` tries the newest step first; a step that fails to restore
  (missing files, garbage bytes) is logged with a warning and the previous one is tried. Once a good
  step is found, the newer failed ones are moved to ``corrupt/``, so that the resumed run can save those
  step numbers again and the next start does not trip over them (no crash loop). Nothing restorable
  gives None. A good checkpoint is never moved or deleted by a restore.
* A state whose leaf paths or shapes differ from the checkpoint's is not corruption: it raises
  ValueError (a different model or dataset), before anything is moved.
* A failed write (a full disk, a quota, a read-only or vanished filesystem) raises
  :class:`CheckpointWriteError` from the next :meth:`CheckpointManager.save` or
  :meth:`CheckpointManager.wait_until_finished` (asynchronous saves report there). Its message is
  one line: what happened (``No space left on device (RESOURCE_EXHAUSTED)`` for a full disk),
  which checkpoint could not be written, and which one is the last good one (kept). The tracebacks
  that orbax's background threads log for the same failure are held back while a writing manager is
  open (their first line is in the error).

Multi-process: every process must call :meth:`save` and the restores with the same arguments (orbax
writes the JSON items on the primary process only); moving corrupt steps is done by process 0.

Storage only: which config may resume a checkpoint (``check_compatible``) and how a trained model is
rebuilt from one (``load_trained``, ``load_classifier``) are :mod:`robust_jax.training.restore`.

Example:

>>> import tempfile, jax.numpy as jnp
>>> mngr = CheckpointManager(tempfile.mkdtemp(), max_to_keep=2)
>>> state = {"w": jnp.ones(3), "step": jnp.asarray(10)}
>>> mngr.save(10, state, metadata={"epoch": 1}, metric=0.5)
SaveResult(saved=True, best=True)
>>> restored, metadata = mngr.restore_latest(abstract_state(state))
>>> metadata, int(restored["step"])
({'epoch': 1}, 10)
>>> mngr.close()
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import logging as py_logging
import math
import os
import shutil
import time
from typing import Any, Mapping, NamedTuple, Optional, Sequence

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any

LATEST_DIR = "latest"
BEST_DIR = "best"
CORRUPT_DIR = "corrupt"
BEST_TO_KEEP = 2
_FORMAT = 1
_MISSING = "<missing>"


class CheckpointWriteError(OSError):
  """A checkpoint could not be written; the message names the cause, the checkpoint and the last
  good one. ``errno`` is ``ENOSPC`` for a full disk (or quota), else that of the cause, if any."""


_FULL_DISK_MARKERS = ("No space left on device", "RESOURCE_EXHAUSTED", "Disk quota exceeded",
                      "os_error_code='28'")


def _chain_text(e: BaseException) -> str:
  """The messages of ``e`` and its causes and contexts, joined (for classifying a failure)."""
  seen, parts = set(), []
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    parts.append(f"{type(e).__name__}: {e}")
    e = e.__cause__ or e.__context__
  return " | ".join(parts)


def _chain_errno(e: BaseException) -> Optional[int]:
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno:
      return e.errno
    e = e.__cause__ or e.__context__
  return None


class _HoldBackOrbaxErrors(py_logging.Filter):
  """Drops the ERROR records (with tracebacks) that orbax's background threads log for a failed
  write; the failure is raised in the main thread as one :class:`CheckpointWriteError`."""

  def __init__(self):
    super().__init__()
    self.users = 0
    self.first: Optional[str] = None

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.ERROR and "orbax" in (record.pathname or ""):
      if self.first is None:
        self.first = record.getMessage().split("\n")[0][:400]
      return False
    return True


_HOLD_BACK = _HoldBackOrbaxErrors()


class SaveResult(NamedTuple):
  """What :meth:`CheckpointManager.save` did.

  Attributes:
    saved: whether a periodic checkpoint was written (False if ``step`` is not newer than the latest
      checkpoint).
    best: whether the state was also saved as the new best.
  """
  saved: bool
  best: bool


def abstract_state(state: PyTree) -> PyTree:
  """The restore target of ``state``: ``ocp.utils.to_shape_dtype_struct`` on every leaf."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)


def _storage_shape(leaf) -> list[int]:
  """The stored shape of a leaf: typed PRNG keys (and their abstract forms) as their key data."""
  dtype = getattr(leaf, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    return list(jax.eval_shape(jax.random.key_data, leaf).shape)
  return [int(d) for d in np.shape(leaf)]


def state_spec(state: PyTree) -> list[list[Any]]:
  """``[[path, shape], ...]`` of every leaf, the fingerprint stored in each checkpoint's ``info``."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  return [[jax.tree_util.keystr(path), _storage_shape(leaf)] for path, leaf in leaves]


def _check_spec(saved: Sequence[Sequence[Any]], target: PyTree, where: str) -> None:
  saved_map = {path: list(shape) for path, shape in saved}
  target_map = {path: shape for path, shape in state_spec(target)}
  problems = []
  for path in sorted(set(saved_map) | set(target_map)):
    a, b = saved_map.get(path, _MISSING), target_map.get(path, _MISSING)
    if a != b:
      problems.append(f"{path}: checkpoint {a} vs target {b}")
  if problems:
    shown = "; ".join(problems[:10]) + (f"; ... ({len(problems)} in all)" if len(problems) > 10 else "")
    raise ValueError(
        f"abstract_state does not match the checkpoint at {where} (a different model, dataset or "
        f"optimizer?): {shown}")


def to_json(value: Any, argname: str) -> Any:
  """A JSON-safe deep copy: numpy scalars and arrays, tuples, sets and ConfigDicts become plain JSON.

  Args:
    value: what to convert (a metadata dict, a config).
    argname: the argument's name, for the error message.

  Returns:
    ``json.loads(json.dumps(value))`` with those conversions.

  Raises:
    TypeError: if something in ``value`` has no JSON form.
  """
  def default(o):
    if isinstance(o, np.generic):
      return o.item()
    if isinstance(o, (np.ndarray, jax.Array)):
      return np.asarray(o).tolist()
    if hasattr(o, "to_dict"):
      return o.to_dict()
    if isinstance(o, Mapping):
      return dict(o)
    if isinstance(o, (set, frozenset)):
      return sorted(o)
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serialisable")
  try:
    return json.loads(json.dumps(value, default=default))
  except (TypeError, ValueError) as e:
    raise TypeError(f"{argname} must be JSON-serialisable: {e}") from None


@contextlib.contextmanager
def _quiet_failed_reads():
  """Silences asyncio's "exception was never retrieved" for a restore that fails.

  When one tensorstore read of a corrupt checkpoint fails, orbax's gather raises at once and the
  sibling reads' exceptions are reported by asyncio when their futures are collected; the failure is
  already logged by us, so that report is noise.
  """
  logger = py_logging.getLogger("asyncio")
  level = logger.level
  logger.setLevel(py_logging.CRITICAL)
  try:
    yield
  except BaseException:
    gc.collect()
    raise
  finally:
    logger.setLevel(level)


def _describe(e: Exception) -> str:
  """``Type: message``, without tensorstore's long spec and at most 300 characters."""
  msg = str(e).split(" [tensorstore_spec=")[0]
  return f"{type(e).__name__}: {msg[:300]}"


def _is_primary() -> bool:
  return jax.process_index() == 0


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


class CheckpointManager:
  """Periodic checkpoints (last ``max_to_keep``) plus a best checkpoint, with corruption fallback.

  Args:
    directory: the root directory (usually ``<workdir>/checkpoints``); created unless read-only.
    max_to_keep: how many periodic checkpoints to keep, >= 1.
    async_save: write in a background thread (see the module docstring).
    read_only: only restore: create nothing, clean no temporary directory (a concurrent writer may
      own it), move nothing. Use it to load a run while it trains.
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 1:
      raise ValueError(f"max_to_keep must be an int >= 1, got {max_to_keep!r}")
    self._directory = os.path.abspath(os.fspath(directory))
    self._read_only = bool(read_only)
    self._in_flight: dict[str, str] = {}   # the last save of latest/ and of best/, maybe pending
    self._filtering = False
    if not self._read_only:
      if _HOLD_BACK.users == 0:
        logging.get_absl_logger().addFilter(_HOLD_BACK)
      _HOLD_BACK.users += 1
      self._filtering = True
    self._latest = self._make(LATEST_DIR, max_to_keep, async_save)
    self._best = self._make(BEST_DIR, BEST_TO_KEEP, async_save)
    self._best_metric = self._read_best_metric()

  def _make(self, subdir: str, keep: int, async_save: bool) -> Optional[ocp.CheckpointManager]:
    path = os.path.join(self._directory, subdir)
    if self._read_only:
      if not os.path.isdir(path):
        return None
      options = ocp.CheckpointManagerOptions(
          read_only=True, create=False, save_interval_steps=0, enable_async_checkpointing=False)
    else:
      options = ocp.CheckpointManagerOptions(
          preservation_policy=ocp.checkpoint_managers.LatestN(keep), create=True,
          cleanup_tmp_directories=True, enable_async_checkpointing=async_save)
    handlers = {"state": ocp.StandardCheckpointHandler(), "metadata": ocp.JsonCheckpointHandler(),
                "info": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(path, options=options, item_handlers=handlers)

  # ------------------------------------------------------------------------------------ queries

  @property
  def directory(self) -> str:
    """The root directory."""
    return self._directory

  @property
  def best_metric(self) -> Optional[float]:
    """The metric of the current best checkpoint, or None if there is none."""
    return self._best_metric

  def all_steps(self) -> list[int]:
    """The steps of the periodic checkpoints on disk, ascending."""
    return sorted(self._latest.all_steps()) if self._latest is not None else []

  def latest_step(self) -> Optional[int]:
    """The newest periodic step, or None (it may still turn out corrupt on restore)."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def has_checkpoints(self) -> bool:
    """Whether anything was ever saved here: a periodic, best or quarantined (``corrupt/``) one.

    Temporary directories of interrupted saves do not count.
    """
    for sub in (LATEST_DIR, BEST_DIR):
      path = os.path.join(self._directory, sub)
      if os.path.isdir(path) and any(d.isdigit() for d in os.listdir(path)):
        return True
    corrupt = os.path.join(self._directory, CORRUPT_DIR)
    return os.path.isdir(corrupt) and bool(os.listdir(corrupt))

  def last_good_checkpoint(self) -> Optional[str]:
    """The directory of the newest complete periodic checkpoint on disk (or best, if none), or None.

    Read from the directory listing (a complete save is renamed from its temporary name), so it is
    right even after a failed write.
    """
    for sub in (LATEST_DIR, BEST_DIR):
      path = os.path.join(self._directory, sub)
      steps = sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []
      if steps:
        return os.path.join(path, str(steps[-1]))
    return None

  def _write_error(self, e: BaseException, writing: Sequence[str]) -> CheckpointWriteError:
    """One-line :class:`CheckpointWriteError` for a failed write (the cause, where, the last good)."""
    for manager in (self._latest, self._best):   # let the other pending save end, to see what is
      try:                                      # on disk
        if manager is not None:
          manager.wait_until_finished()
      except Exception:  # pylint: disable=broad-except  # the same failure, or another one
        pass
    writing = [p for p in writing if not os.path.isdir(p)] or list(writing)  # not the completed
    text = _chain_text(e) + (" | " + _HOLD_BACK.first if _HOLD_BACK.first else "")
    code = _chain_errno(e)
    full = code in (errno.ENOSPC, errno.EDQUOT) or any(m in text for m in _FULL_DISK_MARKERS)
    what = "No space left on device (RESOURCE_EXHAUSTED)" if full else "Could not write"
    good = self.last_good_checkpoint()
    kept = (f"the last good checkpoint is {good} (kept)" if good else
            "no checkpoint was completed before it")
    where = ", ".join(writing) if writing else self._directory
    todo = ("free space on that filesystem (or give --workdir on another one and copy the "
            "checkpoints there)" if full else "fix the cause")
    cause = text.split(" [tensorstore_spec=")[0]
    _HOLD_BACK.first = None
    error = CheckpointWriteError(
        f"{what} while writing checkpoint {where}: {kept}; {todo}, then rerun the same command to "
        f"resume from it. Cause: {cause[:500]}")
    error.errno = errno.ENOSPC if full else (code or errno.EIO)
    return error

  @contextlib.contextmanager
  def _writing(self, paths: Sequence[str]):
    """Turns a failed write in orbax into a :class:`CheckpointWriteError`."""
    try:
      yield
    except CheckpointWriteError:
      raise
    except (OSError, ValueError, RuntimeError) as e:
      writing = [p for p in self._in_flight.values() if p not in paths] + list(paths)
      err = self._write_error(e, writing)
      self._in_flight = {}
      raise err from None

  def _read_info(self, manager, step) -> dict[str, Any]:
    return manager.restore(step, args=ocp.args.Composite(info=ocp.args.JsonRestore())).info

  def _read_best_metric(self) -> Optional[float]:
    if self._best is None:
      return None
    best = None
    for version in self._best.all_steps():
      try:
        metric = self._read_info(self._best, version)["metric"]
      except Exception:  # pylint: disable=broad-except  # unreadable: restore_best will sort it out
        continue
      if metric is not None and (best is None or metric > best):
        best = float(metric)
    return best

  # --------------------------------------------------------------------------------------- save

  def save(self, step: int, state: PyTree, *, metadata: Optional[Mapping[str, Any]] = None,
           metric: Optional[float] = None) -> SaveResult:
    """Saves a periodic checkpoint, and a best one if ``metric`` beats the best so far.

    Args:
      step: the global training step, an int >= 0; a step not newer than the latest checkpoint is
        skipped (``saved=False``), e.g. right after resuming from it.
      state: the pytree to save (arrays, numpy arrays, scalars, typed PRNG keys).
      metadata: a JSON-serialisable dict (numpy scalars, tuples and ConfigDicts are converted), given
        back unchanged by the restores.
      metric: the selection metric, higher is better (e.g. validation robust accuracy); None or NaN
        never makes a best checkpoint.

    Returns:
      :class:`SaveResult`.

    Raises:
      ValueError: for a read-only manager or a bad step.
      TypeError: if ``metadata`` is not JSON-serialisable.
    """
    if self._read_only:
      raise ValueError(f"this CheckpointManager of {self._directory} is read_only; it cannot save")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
      raise ValueError(f"step must be an int >= 0, got {step!r}")
    step = int(step)
    metadata = to_json({} if metadata is None else metadata, "metadata")
    if not isinstance(metadata, dict):
      raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    if metric is not None:
      metric = float(metric)
    info = {"format": _FORMAT, "step": step, "metric": metric, "state_spec": state_spec(state)}

    def args():
      return ocp.args.Composite(state=ocp.args.StandardSave(state),
                                metadata=ocp.args.JsonSave(metadata), info=ocp.args.JsonSave(info))

    saved = False
    if step in self._latest.all_steps():
      logging.info("Checkpoint step %d already exists in %s; not saving it again.", step,
                   self._latest.directory)
    else:
      path = os.path.join(os.fspath(self._latest.directory), str(step))
      with self._writing([path]):
        saved = bool(self._latest.save(step, args=args()))
      if saved:   # orbax waited for the previous save of latest/ first: it is on disk
        self._in_flight[LATEST_DIR] = path
      else:
        logging.info("Skipped checkpoint step %d: not newer than step %s.", step,
                     self._latest.latest_step())
    best = (metric is not None and math.isfinite(metric)
            and (self._best_metric is None or metric > self._best_metric))
    if best:
      version = (self._best.latest_step() or 0) + 1
      path = os.path.join(os.fspath(self._best.directory), str(version))
      with self._writing([path]):
        self._best.save(version, args=args(), force=True)
      self._in_flight[BEST_DIR] = path
      self._best_metric = metric
      logging.info("New best checkpoint (metric %.6g) at step %d.", metric, step)
    return SaveResult(saved=saved, best=best)

  def wait_until_finished(self) -> None:
    """Blocks until every pending asynchronous save is on disk.

    Raises:
      CheckpointWriteError: if a pending save failed (see the module docstring).
    """
    with self._writing([]):
      for manager in (self._latest, self._best):
        if manager is not None:
          manager.wait_until_finished()
    self._in_flight = {}

  def close(self, *, quiet: bool = False) -> None:
    """Waits for pending saves and releases orbax's resources.

    Args:
      quiet: log a failed pending save instead of raising (for cleaning up after another error).

    Raises:
      CheckpointWriteError: if a pending save failed and ``quiet`` is False.
    """
    error = None
    for manager in (self._latest, self._best):
      if manager is None:
        continue
      try:
        with self._writing([]):
          manager.wait_until_finished()
      except CheckpointWriteError as e:
        error = error or e
      try:
        manager.close()
      except Exception as e:  # pylint: disable=broad-except  # a failed save reported again
        logging.info("Closing the checkpoint manager of %s: %s", manager.directory, _describe(e))
    self._in_flight = {}
    if self._filtering:
      self._filtering = False
      _HOLD_BACK.users -= 1
      if _HOLD_BACK.users == 0:
        logging.get_absl_logger().removeFilter(_HOLD_BACK)
    if error is not None:
      if quiet:
        logging.info("%s", error)
      else:
        raise error

  def __enter__(self) -> "CheckpointManager":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # ------------------------------------------------------------------------------------ restore

  def restore_latest(self, abstract_state: PyTree) -> Optional[tuple[PyTree, dict[str, Any]]]:
    """Restores the newest restorable periodic checkpoint.

    Args:
      abstract_state: the target structure, e.g. the module's :func:`abstract_state` of a freshly
        initialised state (or ``jax.eval_shape`` of its initialiser);
        NamedTuples, dataclasses and typed PRNG keys come back as in the target.

    Returns:
      ``(state, metadata)``, or None if no checkpoint can be restored.

    Raises:
      ValueError: if the newest readable checkpoint's leaf paths or shapes differ from
        ``abstract_state``.
    """
    return self._restore(self._latest, LATEST_DIR, abstract_state)

  def restore_best(self, abstract_state: PyTree) -> Optional[tuple[PyTree, dict[str, Any]]]:
    """Restores the best checkpoint (falling back to the previous best); see :meth:`restore_latest`."""
    result = self._restore(self._best, BEST_DIR, abstract_state)
    self._best_metric = self._read_best_metric()
    return result

  def restore_metadata(self, which: str = "latest") -> Optional[dict[str, Any]]:
    """The metadata of the newest readable ``"latest"`` or ``"best"`` checkpoint, or None.

    Reads only the JSON items, so a loader can rebuild the model from ``metadata["config"]`` before
    restoring the arrays. Moves nothing.
    """
    manager = self._manager(which)
    for step in sorted(manager.all_steps() if manager is not None else [], reverse=True):
      try:
        return manager.restore(
            step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())).metadata
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("Cannot read the metadata of %s checkpoint %d: %s", which, step, _describe(e))
    return None

  def restore_raw(self, which: str = "best") -> Optional[tuple[PyTree, dict[str, Any]]]:
    """Restores without a target: the state as nested dicts and lists of numpy arrays.

    NamedTuples and dataclasses become dicts or lists, ``None`` leaves (e.g. optax's ``EmptyState``)
    stay None, typed PRNG keys become their uint32 key data (``jax.random.wrap_key_data`` turns them
    back). Arrays are read onto the local default device and copied to host, so a checkpoint written
    on another topology (GPU, several devices) loads on a CPU. Falls back like :meth:`restore_latest`
    but moves nothing.

    Args:
      which: ``"best"`` or ``"latest"``.

    Returns:
      ``(state, metadata)`` or None.
    """
    manager = self._manager(which)
    for step in sorted(manager.all_steps() if manager is not None else [], reverse=True):
      try:
        meta = manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
        tree = manager.item_metadata(step)["state"]
        tree = getattr(tree, "tree", tree)
        device = jax.local_devices()[0]

        def target(m):
          if hasattr(m, "shape") and hasattr(m, "dtype"):
            return jax.ShapeDtypeStruct(
                tuple(m.shape), m.dtype, sharding=jax.sharding.SingleDeviceSharding(device))
          return m
        with _quiet_failed_reads():
          restored = manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(jax.tree.map(target, tree)))).state
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("Cannot restore %s checkpoint %d from %s (%s); trying the previous one.",
                        which, step, manager.directory, _describe(e))
        continue

      def to_numpy(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
          x = jax.random.key_data(x)
        return np.asarray(x)
      return jax.tree.map(to_numpy, restored), meta.metadata
    return None

  def _manager(self, which: str):
    if which not in (LATEST_DIR, BEST_DIR):
      raise ValueError(f"which must be one of ['latest', 'best'], got {which!r}")
    manager = self._latest if which == LATEST_DIR else self._best
    if manager is not None:
      manager.wait_until_finished()
    return manager

  def _restore(self, manager, label: str, abstract: PyTree):
    if manager is None:
      return None
    manager.wait_until_finished()
    failed = []
    result = None
    for step in sorted(manager.all_steps(), reverse=True):
      where = f"{manager.directory}/{step}"
      try:
        items = manager.restore(step, args=ocp.args.Composite(
            metadata=ocp.args.JsonRestore(), info=ocp.args.JsonRestore()))
        spec = items.info["state_spec"]
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("Checkpoint %s is unreadable (%s); falling back to the previous one.",
                        where, _describe(e))
        failed.append(step)
        continue
      _check_spec(spec, abstract, where)   # a mismatch is the caller's error, not corruption
      try:
        with _quiet_failed_reads():
          state = manager.restore(
              step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("Checkpoint %s is corrupt (%s); falling back to the previous one.",
                        where, _describe(e))
        failed.append(step)
        continue
      logging.info("Restored checkpoint %s.", where)
      result = (state, items.metadata)
      break
    if failed:
      self._quarantine(manager, label, failed)
    if result is None and failed:
      logging.error("No restorable checkpoint in %s (%d failed).", manager.directory, len(failed))
    return result

  def _quarantine(self, manager, label: str, steps: Sequence[int]) -> None:
    """Moves failed steps to ``corrupt/`` so that their step numbers can be saved again."""
    if self._read_only:
      return
    if _is_primary():
      dest_root = os.path.join(self._directory, CORRUPT_DIR)
      os.makedirs(dest_root, exist_ok=True)
      stamp = time.strftime("%Y%m%d-%H%M%S")
      for step in steps:
        src = os.path.join(os.fspath(manager.directory), str(step))
        if not os.path.exists(src):
          continue
        dest = os.path.join(dest_root, f"{label}-{step}-{stamp}")
        suffix = 0
        while os.path.exists(dest):
          suffix += 1
          dest = os.path.join(dest_root, f"{label}-{step}-{stamp}-{suffix}")
        try:
          shutil.move(src, dest)
          logging.warning("Moved the unrestorable checkpoint %s to %s.", src, dest)
        except OSError as e:
          logging.warning("Could not move the unrestorable checkpoint %s aside: %s", src, e)
    _sync(f"robust_jax_checkpoint_quarantine_{label}")
    manager.reload()
