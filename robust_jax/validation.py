"""Checks at the Python boundary: bad input gets an error that names the argument and its valid range.

Checks run only on concrete values; inside ``jax.jit`` (traced values) they are skipped, and shape
contracts are enforced with chex assertions instead. Nothing is ever silently clipped.
"""

from __future__ import annotations

import numbers

import jax
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
  if not hasattr(x, "dtype") or not np.issubdtype(np.dtype(x.dtype), np.floating):
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
