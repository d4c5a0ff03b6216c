"""Restoring runs: one path from a training workdir to a trained model, and the resume policy.

Everything that loads a finished (or running) training run goes through :func:`load_trained`:
``load_classifier`` (notebooks, ``launch.eval``), the analysis reports (``launch.analyze``) and the
reproduction suite (:mod:`robust_jax.experiments.reproduce`). It reads the checkpoint without a
target (:meth:`robust_jax.checkpoint.CheckpointManager.restore_raw`: nested dicts of host arrays,
loadable on any topology), rebuilds the model from the config stored in the checkpoint's metadata
and returns a :class:`TrainedModel`; :func:`as_classifier` turns that into the ``logits_fn`` an
attack sees. Nothing is moved or written: a run can be loaded while it trains.

:func:`check_compatible` is the other direction, the policy of ``train_and_evaluate`` for resuming:
a workdir's checkpoint is resumed only by a config that agrees with it on the fields that define
the run (model, dataset, method, ...).

Example (a checkpoint saved by hand; ``train_and_evaluate`` writes the same items):

>>> import tempfile, jax, jax.numpy as jnp
>>> from robust_jax import checkpoint, models
>>> from robust_jax.training import config as config_lib
>>> workdir = tempfile.mkdtemp()
>>> config = config_lib.base_config()
>>> params = models.get_model("mlp").init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
>>> with checkpoint.CheckpointManager(f"{workdir}/checkpoints") as mngr:
...   _ = mngr.save(7, {"step": jnp.asarray(7), "params": params, "batch_stats": {}},
...                 metadata={"config": config.to_dict(), "num_classes": 10, "epoch": 1},
...                 metric=0.5)
>>> logits_fn, info = load_classifier(workdir)
>>> logits_fn(jnp.zeros((2, 8, 8, 1))).shape, info["model"], info["step"], info["epoch"]
((2, 10), 'mlp', 7, 1)
"""

from __future__ import annotations

import functools
import os
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from robust_jax import checkpoint as ckpt_lib
from robust_jax import models

_MISSING = "<missing>"


class TrainedModel(NamedTuple):
  """A restored model with its weights (what the weight-space analyses need, beyond ``logits_fn``).

  Attributes:
    model: the linen module (``model.apply(variables, x, train=False)``).
    params: the parameter pytree.
    batch_stats: BatchNorm running statistics (``{}`` without BatchNorm).
    config: the training config.
    meta: the checkpoint's metadata (epoch, num_classes, image_shape, ...).
    workdir: the training workdir (holds ``metrics.jsonl``).
    step: the optimizer step of the checkpoint (None if the saved state had no ``step``).
  """
  model: Any
  params: Any
  batch_stats: Any
  config: ml_collections.ConfigDict
  meta: Dict[str, Any]
  workdir: str
  step: Optional[int] = None

  @property
  def apply_fn(self):
    """``model.apply``: ``apply_fn(variables, x, train=False) -> logits``."""
    return self.model.apply

  @property
  def variables(self) -> Dict[str, Any]:
    """``{"params", "batch_stats"}`` for ``model.apply`` (``batch_stats`` only when present)."""
    variables = {"params": self.params}
    if self.batch_stats:
      variables["batch_stats"] = self.batch_stats
    return variables

  def logits_fn(self):
    """``x -> logits`` in eval mode (a new function object: keep the one you attack).

    For a function that attacks can take as a traced argument (one compilation per architecture),
    use :func:`as_classifier`.
    """
    variables = self.variables
    apply_fn = self.model.apply
    return lambda x: apply_fn(variables, x, train=False)


def build_model(config: Any, num_classes: int):
  """The model of a training config: ``config.model`` with its compute ``dtype``.

  Args:
    config: a training config (``model``, optionally ``dtype``: ``"float32"`` or ``"bfloat16"``,
      and ``remat``: rematerialised residual blocks).
    num_classes: number of logits.

  Returns:
    An unbound linen module.
  """
  kwargs = {"dtype": jnp.bfloat16} if config.get("dtype", "float32") == "bfloat16" else {}
  if config.get("remat", False):
    kwargs["remat"] = True
  return models.get_model(config.model, num_classes=num_classes, **kwargs)


def _checkpoint_dir(path: str) -> Tuple[str, str]:
  """``(checkpoints directory, workdir)`` of a workdir or of its ``checkpoints`` subdirectory."""
  path = os.fspath(path)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return os.path.join(path, "checkpoints"), path
  return path, os.path.dirname(os.path.abspath(path))


def load_trained(workdir: str, *, which: str = "best") -> TrainedModel:
  """Restores a training run's weights and rebuilds its model from the saved config.

  Args:
    workdir: a training workdir (or its ``checkpoints`` subdirectory).
    which: ``"best"`` (by validation robust accuracy) or ``"latest"``; an unreadable checkpoint
      falls back to the previous one (nothing is moved).

  Returns:
    A :class:`TrainedModel` (parameters as ``jax.Array`` on the default device).

  Raises:
    FileNotFoundError: if nothing restorable is there.
    ValueError: for an unknown ``which``.
  """
  path, root = _checkpoint_dir(workdir)
  manager = ckpt_lib.CheckpointManager(path, read_only=True)
  restored = manager.restore_raw(which)
  if restored is None:
    raise FileNotFoundError(f"no restorable {which} checkpoint in {workdir}")
  state, meta = restored
  config = ml_collections.ConfigDict(meta["config"])
  model = build_model(config, meta["num_classes"])
  params = jax.tree.map(jnp.asarray, state["params"])
  batch_stats = jax.tree.map(jnp.asarray, state.get("batch_stats") or {})
  step = int(state["step"]) if state.get("step") is not None else None
  return TrainedModel(model=model, params=params, batch_stats=batch_stats, config=config,
                      meta=meta, workdir=root, step=step)


@functools.lru_cache(maxsize=None)
def _eval_apply(model):
  """One jitted eval-mode apply per (hashable) model definition."""
  return jax.jit(lambda variables, x: model.apply(variables, x, train=False))


def as_classifier(trained: TrainedModel) -> Tuple[Any, Dict[str, Any]]:
  """``(logits_fn, info)`` of a :class:`TrainedModel`; see :func:`load_classifier`."""
  variables = {"params": trained.params, "batch_stats": trained.batch_stats}
  # A Partial whose leaves are the variables: attacks that take logits_fn as a traced argument
  # (APGD, FAB, Square, AutoAttack, evaluate) reuse their compilation for every checkpoint of a
  # model.
  logits_fn = jax.tree_util.Partial(_eval_apply(trained.model), variables)
  config, meta = trained.config, trained.meta
  info = {"dataset": config.dataset, "model": config.model, "method": config.method,
          "eps": config.eps, "norm": config.norm, "epoch": meta.get("epoch"),
          "step": trained.step, "num_classes": meta["num_classes"], "config": config}
  return logits_fn, info


def load_classifier(checkpoint_dir: str, *, which: str = "best") -> Tuple[Any, Dict[str, Any]]:
  """Loads a trained classifier for attacking it (notebooks, ``launch.eval``).

  Args:
    checkpoint_dir: a training ``workdir`` (or its ``checkpoints`` subdirectory).
    which: ``"best"`` (by validation robust accuracy) or ``"latest"``.

  Returns:
    ``(logits_fn, info)``: ``logits_fn(x)`` is a pure, jitted function of float32 NHWC images in
    [0, 1] returning logits in eval mode (a ``jax.tree_util.Partial`` holding the variables);
    ``info`` holds the dataset, model, method, eps, norm, the epoch and step of the checkpoint, the
    number of classes and the config.

  Raises:
    FileNotFoundError: if no restorable checkpoint is there.
  """
  return as_classifier(load_trained(checkpoint_dir, which=which))


# --------------------------------------------------------------------------------------------------
# Resume policy.


def _lookup(config: Any, field: str) -> Any:
  value = config
  for part in field.split("."):
    if isinstance(value, Mapping) and part in value:
      value = value[part]
    elif not isinstance(value, Mapping) and hasattr(value, part):
      value = getattr(value, part)
    else:
      return _MISSING
  return value


def check_compatible(saved_config: Mapping[str, Any], config: Any, fields: Sequence[str]) -> None:
  """Raises if a run would resume from a checkpoint of an incompatible run.

  Args:
    saved_config: the config stored in the checkpoint's metadata (a JSON dict).
    config: the current config (a dict or an ``ml_collections.ConfigDict``).
    fields: the fields that must agree, dotted for nested ones (``"model"``, ``"dataset"``,
      ``"method"``, ``"attack.eps"``). Values are compared after a JSON round trip, so tuples equal
      lists and floats compare exactly as stored.

  Raises:
    ValueError: naming every mismatching field with the saved and the current value.
  """
  if isinstance(fields, str):
    raise ValueError(f"fields must be a sequence of field names, got the string {fields!r}")
  saved_config = ckpt_lib.to_json(saved_config, "saved_config")
  current = ckpt_lib.to_json(config, "config")
  mismatches = []
  for field in fields:
    a, b = _lookup(saved_config, field), _lookup(current, field)
    if a != b:
      mismatches.append(f"{field}: checkpoint {a!r} != config {b!r}")
  if mismatches:
    raise ValueError(
        "cannot resume: the checkpoint comes from an incompatible run (" + "; ".join(mismatches)
        + "). Use a new workdir, or set these fields to the checkpoint's values.")
