"""Checks at the Python boundary: bad input gets an error that names the argument and its valid range.

Checks run only on concrete values; inside ``jax.jit`` (traced values) they are skipped, and shape
contracts are enforced with chex assertions instead. Nothing is ever silently clipped.

The attacks share one preamble for their data (:func:`check_attack_inputs`: images, labels checked
against the class count of :func:`num_classes`, targets, the ``active`` mask, the PRNG key); their
hyperparameters (eps, norm, step sizes, budgets) are checked by each attack's own checker, which
:func:`robust_jax.attacks.make` also runs before any data is seen.

Before anything is compiled, the model is checked abstractly (:func:`check_logits_fn`, with
``jax.eval_shape``: no FLOPs): ``logits_fn(x)`` must return one floating array of shape [B, C] with
C >= 2, and images that look channels-first (NCHW) are refused with a message about the layout
(:func:`check_layout`). Integer budgets must fit in int32. The radius must be one the [0, 1] box
allows (:func:`check_eps`): for linf eps < 1 (at eps >= 1 the ball holds the whole box, so every
image is reachable and robust accuracy is 0 by construction), for l2 eps < sqrt(D), the diameter
of the box [0, 1]^D.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np


INT32_MAX = 2**31 - 1


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
  if integer and abs(val) > INT32_MAX and (high is None or high > INT32_MAX):
    raise ValueError(f"{name} must be at most 2**31 - 1 = {INT32_MAX} (it is an int32), got "
                     f"{val}")
  lo_txt = "-inf" if low is None else f"{low}"
  hi_txt = "inf" if high is None else f"{high}"
  interval = f"{'(' if low_open or low is None else '['}{lo_txt}, {hi_txt}{')' if high_open or high is None else ']'}"
  bad = (low is not None and (val < low or (low_open and val == low))) or (
      high is not None and (val > high or (high_open and val == high)))
  if bad:
    raise ValueError(f"{name} must be in {interval}, got {val}")


def check_images(name: str, x):
  """Float images [B, ...] (NHWC for 4-D), B >= 1, every value in [0, 1], no NaN or inf.

  Any floating dtype is accepted (bfloat16 included, as JAX or ml_dtypes arrays). A range error
  shows the real extremes, with enough digits that 1 + 1e-6 does not print as 1.
  """
  if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.floating):  # bfloat16 included
    raise ValueError(f"{name} must be a float array of images in [0, 1], got dtype "
                     f"{getattr(x, 'dtype', type(x).__name__)}")
  if np.ndim(x) < 2:
    raise ValueError(f"{name} must have a leading batch axis, got shape {np.shape(x)}")
  if np.shape(x)[0] == 0:
    raise ValueError(f"{name} must hold at least one example (batch size >= 1), got shape "
                     f"{np.shape(x)}")
  check_layout(name, np.shape(x))
  if not is_concrete(x):
    return
  arr = np.asarray(x, np.float32) if x.dtype == jnp.bfloat16 else np.asarray(x)
  if np.isnan(arr).any():
    raise ValueError(f"{name} contains NaN; images must be in [0, 1]")
  if np.isinf(arr).any():
    raise ValueError(f"{name} contains inf; images must be in [0, 1]")
  lo, hi = float(arr.min()), float(arr.max())
  if lo < 0.0 or hi > 1.0:
    raise ValueError(f"{name} must be in [0, 1], got values in [{_show(lo, lo < 0)}, "
                     f"{_show(hi, hi > 1)}]")


def _show(v: float, out_of_range: bool) -> str:
  """``v`` with enough digits that a value just outside [0, 1] does not print as 0 or 1."""
  return f"{v:.9g}" if out_of_range else f"{v:.4g}"


def check_layout(name: str, shape) -> None:
  """Refuses images that look channels-first: the attacks and models take NHWC [B, H, W, C].

  A 4-D shape ``(B, 1 or 3, H, W)`` whose last axis is longer than 4 is taken for NCHW (an NHWC
  image with 1 or 3 rows and more than 4 channels is not an image). Shapes only, so it runs on
  tracers too.

  Raises:
    ValueError: naming ``name``, the shape and the transpose that gives NHWC.

  Example:
    >>> check_layout("x", (2, 28, 28, 1))
    >>> check_layout("x", (2, 1, 28, 28))
    Traceback (most recent call last):
    ...
    ValueError: x has shape (2, 1, 28, 28), which looks channels-first (NCHW); robust_jax takes NHWC images [B, H, W, C]: pass x.transpose(0, 2, 3, 1), shape (2, 28, 28, 1)
  """
  shape = tuple(int(d) for d in shape)
  if len(shape) == 4 and shape[1] in (1, 3) and shape[3] > 4:
    nhwc = (shape[0], shape[2], shape[3], shape[1])
    raise ValueError(f"{name} has shape {shape}, which looks channels-first (NCHW); robust_jax "
                     f"takes NHWC images [B, H, W, C]: pass {name}.transpose(0, 2, 3, 1), shape "
                     f"{nhwc}")


def check_eps(eps, norm: str, *, image_shape=None, low_open: bool = False) -> None:
  """The radius: >= 0 (> 0 with ``low_open``) and below what the [0, 1] box allows.

  For linf the ball of radius 1 around any image in [0, 1] holds the whole box, so eps >= 1 makes
  every image reachable (robust accuracy 0 by construction): eps must be < 1. For l2 the box's
  diameter is sqrt(D), D the number of values per example (``image_shape`` without its batch axis,
  when given): eps must be < sqrt(D). Skipped for traced values.

  Raises:
    ValueError: ``"eps must be in [0, 1) for norm='linf' ..."``.
  """
  check_scalar("eps", eps, low=0.0, low_open=low_open)
  if not is_concrete(eps):
    return
  val = float(np.asarray(eps))
  if norm == "linf" and val >= 1.0:
    raise ValueError(f"eps must be in {'(' if low_open else '['}0, 1) for norm='linf', got {val}: "
                     "images are in [0, 1], so a linf ball of radius >= 1 holds the whole box and "
                     "every example would count as broken")
  if norm == "l2" and image_shape is not None and len(image_shape) >= 2:
    dim = int(np.prod(image_shape[1:]))
    if val >= np.sqrt(dim):
      raise ValueError(f"eps must be in {'(' if low_open else '['}0, sqrt(D) = {np.sqrt(dim):.4g}) "
                       f"for norm='l2' and D = {dim} values per example, got {val}: the l2 ball "
                       "would hold the whole [0, 1] box")


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
  return check_logits_fn(logits_fn, x)


def check_logits_fn(logits_fn: Callable[[jax.Array], jax.Array], x) -> int:
  """Checks abstractly (``jax.eval_shape``: no FLOPs, nothing compiled) what ``logits_fn`` returns.

  ``logits_fn(x)`` must be one floating array of shape [B, C], B the batch of ``x``, C >= 2: a
  model that returns [1, C] for a batch (a broadcast), [B] (one score) or integer class indices
  would otherwise give silent wrong numbers (a wrong "misclassified" rate) or an unrelated error
  deep inside the attack.

  Args:
    logits_fn: ``x -> logits [B, C]``.
    x: an array or a ``jax.ShapeDtypeStruct`` (NHWC images).

  Returns:
    C.

  Raises:
    ValueError: naming ``logits_fn``, what it returned and what it must return; or, when the model
      cannot be applied to ``x`` at all, the shape of ``x`` and the NHWC layout the attacks expect
      (the model's own error is chained).

  Example:
    >>> import jax.numpy as jnp
    >>> check_logits_fn(lambda x: x.reshape(x.shape[0], -1)[:1], jnp.zeros((2, 2, 2, 1)))
    Traceback (most recent call last):
    ...
    ValueError: logits_fn must return logits of shape [B, C] = [2, C] for a batch of 2 images, got shape (1, 4)
  """
  batch = x.shape[0]
  try:
    out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
  except (TypeError, ValueError) as e:
    first = (str(e).strip().splitlines() or [""])[0]
    raise ValueError(f"logits_fn cannot be applied to images of shape {tuple(x.shape)} and dtype "
                     f"{x.dtype} (robust_jax passes NHWC images [B, H, W, C]; check the layout "
                     f"and the model's input shape): {type(e).__name__}: {first}") from e
  if not hasattr(out, "shape") or not hasattr(out, "dtype"):
    raise ValueError(f"logits_fn must return one array of logits [B, C], got "
                     f"{type(out).__name__}")
  if len(out.shape) != 2 or out.shape[0] != batch:
    raise ValueError(f"logits_fn must return logits of shape [B, C] = [{batch}, C] for a batch of "
                     f"{batch} images, got shape {tuple(out.shape)}")
  if out.shape[1] < 2:
    raise ValueError(f"logits_fn must return logits for C >= 2 classes, got shape "
                     f"{tuple(out.shape)}")
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise ValueError(f"logits_fn must return floating logits (float32, bfloat16, ...), got dtype "
                     f"{out.dtype}: return the model's logits, not class indices")
  return int(out.shape[1])


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
  check_key_type(key)


def check_key_type(key) -> None:
  """Raises ValueError unless ``key`` is a PRNG key: a typed key of ``jax.random.key`` (shape ())
  or the raw uint32 data of ``jax.random.PRNGKey`` (shape (2,)); an integer seed is refused.

  Example:
    >>> import jax
    >>> check_key_type(jax.random.key(0))
    >>> check_key_type(0)
    Traceback (most recent call last):
    ...
    ValueError: key must be a PRNG key (jax.random.key(seed)), got int 0; pass key=jax.random.key(0)
  """
  dtype = getattr(key, "dtype", None)
  if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
    if getattr(key, "ndim", 0) != 0:
      raise ValueError(f"key must be a single PRNG key (shape ()), got shape {key.shape}")
    return
  if dtype is not None and np.dtype(dtype) == np.uint32 and np.ndim(key) == 1:
    return  # raw key data of jax.random.PRNGKey
  desc = f"{type(key).__name__} {key!r}" if isinstance(key, numbers.Number) else (
      f"{type(key).__name__} of dtype {dtype} and shape {np.shape(key)}")
  seed = f"{key!r}" if isinstance(key, numbers.Integral) else "seed"
  raise ValueError(f"key must be a PRNG key (jax.random.key(seed)), got {desc}; pass "
                   f"key=jax.random.key({seed})")


def check_attack_inputs(
    logits_fn: Callable[[jax.Array], jax.Array],
    x,
    y,
    *,
    target: Any = None,
    active: Any = None,
    key: Any = None,
    key_needed_by: Optional[str] = None,
    eps: Any = None,
    norm: Optional[str] = None,
) -> Optional[int]:
  """The shared data checks of the attacks: images, labels, targets, the mask and the key.

  Args:
    logits_fn: ``x -> logits [B, C]``; its class count bounds ``y`` and ``target``.
    x: float images [B, ...] in [0, 1] (:func:`check_images`, named ``x``).
    y: int labels [B] in [0, C) (:func:`check_labels`, named ``y``).
    target: optional int target labels [B] in [0, C), named ``target``.
    active: optional bool mask [B] of the examples to attack, named ``active``.
    key: the attack's PRNG key.
    key_needed_by: when not None, ``key`` must not be None (:func:`check_key` with this reason);
      a ``key`` that is given must be a PRNG key in any case (:func:`check_key_type`).
    eps: optional radius, checked against the box for ``norm`` and the size of ``x``
      (:func:`check_eps`).
    norm: the norm of ``eps``.

  Returns:
    C when ``x`` is concrete (the count comes from ``jax.eval_shape``, which also checks the
    model's output, :func:`check_logits_fn`), None inside a trace (the value checks are skipped
    there anyway).

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
  elif key is not None:
    check_key_type(key)
  if eps is not None and norm is not None:
    check_eps(eps, norm, image_shape=x.shape)
  classes = check_logits_fn(logits_fn, x) if is_concrete(x) else None
  batch = x.shape[0]
  check_labels("y", y, batch, classes)
  if target is not None:
    check_labels("target", target, batch, classes)
    if is_concrete(target) and is_concrete(y):
      same = int(np.sum(np.asarray(target) == np.asarray(y)))
      if same:
        raise ValueError(f"target must differ from y for every example (a targeted attack "
                         f"towards the true class does not attack it), got target == y for "
                         f"{same} of {batch} examples")
  if active is not None and getattr(active, "shape", None) != (batch,):
    raise ValueError(f"active must be a bool array of shape ({batch},), got "
                     f"{getattr(active, 'shape', type(active).__name__)}")
  return classes
