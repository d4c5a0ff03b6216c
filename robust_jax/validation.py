"""Checks at the Python boundary: bad input gets an error that names the argument and its valid range.

Checks run only on concrete values; inside ``jax.jit`` (traced values) they are skipped, and shape
contracts are enforced with chex assertions instead. Nothing is ever silently clipped.

The attacks share one preamble for their data (:func:`check_attack_inputs`: images, labels checked
against the class count of :func:`num_classes`, targets, the ``active`` mask, the PRNG key); their
hyperparameters (eps, norm, step sizes, budgets) are checked by each attack's own checker, which
:func:`robust_jax.attacks.make` also runs before any data is seen.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(v) -> bool:
  """True for Python numbers and NumPy/JAX arrays that are not tracers."""
  return not isinstance(v, jax.core.Tracer)


def check_scalar(name: str, v, *, low=None, high=None, low_open=False, high_open=False,
                 integer=False):
  """Raises ValueError unless the concrete scalar ``v`` lies in the given range."""
  if not is_concrete(v):
    return
  arr = np.asarray(v)
  if arr.ndim != 0:
    raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
  val = arr.item()
  if isinstance(val, bool) or not isinstance(val, numbers.Real):
    raise ValueError(f"{name} must be a real number, got {v!r}")
  if val != val:
    raise ValueError(f"{name} must not be NaN")
  if integer and int(val) != val:
    raise ValueError(f"{name} must be an integer, got {val}")
  lo_txt = "-inf" if low is None else f"{low}"
  hi_txt = "inf" if high is None else f"{high}"
  interval = f"{'(' if low_open or low is None else '['}{lo_txt}, {hi_txt}{')' if high_open or high is None else ']'}"
  bad = (low is not None and (val < low or (low_open and val == low))) or (
      high is not None and (val > high or (high_open and val == high)))
  if bad:
    raise ValueError(f"{name} must be in {interval}, got {val}")


def check_images(name: str, x):
  """Float NHWC images with every value in [0, 1] and no NaN."""
  if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.floating):  # bfloat16 included
    raise ValueError(f"{name} must be a float array of images in [0, 1], got dtype "
                     f"{getattr(x, 'dtype', type(x).__name__)}")
  if np.ndim(x) < 2:
    raise ValueError(f"{name} must have a leading batch axis, got shape {np.shape(x)}")
  if not is_concrete(x):
    return
  arr = np.asarray(x)
  if np.isnan(arr).any():
    raise ValueError(f"{name} contains NaN; images must be in [0, 1]")
  lo, hi = float(arr.min()), float(arr.max())
  if lo < 0.0 or hi > 1.0:
    raise ValueError(f"{name} must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")


def check_labels(name: str, y, batch_size: int, num_classes: int | None):
  """Integer labels of shape [batch_size] in [0, num_classes)."""
  if not hasattr(y, "dtype") or not np.issubdtype(np.dtype(y.dtype), np.integer):
    raise ValueError(f"{name} must be an integer array of class indices, got dtype "
                     f"{getattr(y, 'dtype', type(y).__name__)}")
  if np.shape(y) != (batch_size,):
    raise ValueError(f"{name} must have shape ({batch_size},) to match the images, got "
                     f"{np.shape(y)}")
  if num_classes is None or not is_concrete(y):
    return
  arr = np.asarray(y)
  if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
    raise ValueError(f"{name} must be in [0, {num_classes - 1}] (the logits have {num_classes} "
                     f"classes), got values in [{arr.min()}, {arr.max()}]")


def check_choice(name: str, v, choices):
  if v not in choices:
    raise ValueError(f"{name} must be one of {tuple(choices)}, got {v!r}")


def num_classes(logits_fn: Callable[[jax.Array], jax.Array], x) -> int:
  """The number of classes C of ``logits_fn`` for inputs shaped like ``x`` (no FLOPs are spent).

  Args:
    logits_fn: ``x -> logits [B, C]``.
    x: an array or a ``jax.ShapeDtypeStruct``; only its shape and dtype are used (the function is
      traced abstractly with ``jax.eval_shape``).

  Returns:
    C, the size of the last axis of the logits.

  Example:
    >>> import jax.numpy as jnp
    >>> num_classes(lambda x: x.reshape(x.shape[0], -1)[:, :3], jnp.zeros((2, 2, 2, 1)))
    3
  """
  return jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape[-1]


def check_key(key, *, needed_by: str):
  """Raises ValueError naming ``key`` when it is None.

  Args:
    key: the PRNG key given to an attack, or None.
    needed_by: what needs it, for the message (e.g. ``"start='uniform'"``).

  Raises:
    ValueError: ``"key: <needed_by> needs a PRNG key; pass key=jax.random.key(...)"``.
  """
  if key is None:
    raise ValueError(f"key: {needed_by} needs a PRNG key; pass key=jax.random.key(...)")


def check_attack_inputs(
    logits_fn: Callable[[jax.Array], jax.Array],
    x,
    y,
    *,
    target: Any = None,
    active: Any = None,
    key: Any = None,
    key_needed_by: Optional[str] = None,
) -> Optional[int]:
  """The shared data checks of the attacks: images, labels, targets, the mask and the key.

  Args:
    logits_fn: ``x -> logits [B, C]``; its class count bounds ``y`` and ``target``.
    x: float images [B, ...] in [0, 1] (:func:`check_images`, named ``x``).
    y: int labels [B] in [0, C) (:func:`check_labels`, named ``y``).
    target: optional int target labels [B] in [0, C), named ``target``.
    active: optional bool mask [B] of the examples to attack, named ``active``.
    key: the attack's PRNG key.
    key_needed_by: when not None, ``key`` must not be None (:func:`check_key` with this reason).

  Returns:
    C when ``x`` is concrete (the count comes from ``jax.eval_shape``), None inside a trace (the
    value checks are skipped there anyway).

  Raises:
    ValueError: naming the first bad argument and its valid range.

  Example:
    >>> import jax.numpy as jnp
    >>> f = lambda x: x.reshape(x.shape[0], -1)[:, :3]
    >>> check_attack_inputs(f, jnp.zeros((2, 2, 2, 1)), jnp.array([0, 2]))
    3
    >>> check_attack_inputs(f, jnp.zeros((2, 2, 2, 1)), jnp.array([0, 3]))
    Traceback (most recent call last):
    ...
    ValueError: y must be in [0, 2] (the logits have 3 classes), got values in [0, 3]
  """
  check_images("x", x)
  if key_needed_by is not None:
    check_key(key, needed_by=key_needed_by)
  classes = num_classes(logits_fn, x) if is_concrete(x) else None
  batch = x.shape[0]
  check_labels("y", y, batch, classes)
  if target is not None:
    check_labels("target", target, batch, classes)
  if active is not None and getattr(active, "shape", None) != (batch,):
    raise ValueError(f"active must be a bool array of shape ({batch},), got "
                     f"{getattr(active, 'shape', type(active).__name__)}")
  return classes
