r"""The CPU fast path for models the library did not build: plain ``nn.Conv`` and ``nn.max_pool``.

A notebook user's CNN is written with ``flax.linen.Conv`` and ``nn.max_pool``. Inside an attack's
``lax.while_loop``, XLA's CPU backend compiles the input-gradient convolutions of such a model as
naive loop nests (jax-ml/jax#12868; shared/reference/environment.md, section 12): on a small MNIST
CNN, APGD ran 5.6 times slower than with the library's own convolution. With this module, on a
plain-flax SmallCNN (batch 128, 28x28x1, the project's 2-core CPU while loaded): PGD-10 about 12.6x
faster (16.7 s -> 1.33 s), APGD with 10 iterations about 9.3x (3.98 s -> 0.43 s).
:func:`fast_convolutions` (a context manager) and :func:`fast` (a function wrapper) give any linen
model the library's kernels (:mod:`robust_jax.models.kernels`) without touching its definition or
its parameters:

* **Convolutions.** Through ``flax.linen.intercept_methods``, each ``nn.Conv.__call__`` runs flax's
  own code (parameter creation and shapes, ``mask``, ``promote_dtype``, batch-dimension flattening,
  CIRCULAR/REFLECT padding, the bias) with one substitution: the convolution primitive it calls,
  ``lax.conv_general_dilated``, becomes :func:`conv_general_dilated`, a drop-in replacement that
  computes the supported cases with :func:`robust_jax.models.kernels.conv2d` (the custom-VJP
  convolution, or patches @ kernel for shallow first layers) and passes every other case to
  ``lax.conv_general_dilated`` unchanged. Supported: 2-D NHWC/HWIO, any strides, any non-negative
  padding (SAME, VALID, ints, pairs, and flax's CIRCULAR/REFLECT, which flax turns into a pad and
  VALID), ``feature_group_count`` 1, no input or kernel dilation, ``precision=None``, equal float
  dtypes. The substitution goes through ``nn.Conv``'s (deprecated) ``conv_general_dilated`` field,
  set on the bound module for the duration of the call and restored after it; a Conv whose user set
  that field or ``conv_general_dilated_cls`` is left alone. ``nn.ConvLocal``, ``nn.ConvTranspose``
  and nnx modules are not touched.
* **Max pooling.** ``nn.max_pool`` is a function, not a module method, so no interceptor sees it.
  While the context is active, ``flax.linen.max_pool`` and ``flax.linen.pooling.max_pool`` are
  replaced by :func:`max_pool`, which computes 2x2 stride-2 pooling of an even NHWC map (VALID, or
  SAME, which pads nothing there) with :func:`robust_jax.models.kernels.max_pool_2x2` (equal value
  and gradient, ties included) and calls flax's own function otherwise. The originals are restored
  on exit, exceptions included. Code that bound the function at import time
  (``from flax.linen import max_pool``) keeps flax's.

Both replacements equal what they replace in value and in reverse-mode derivatives of every order
(to float rounding: 1e-6 on the logits, 1e-5 on gradients in the tests); parameters, their tree and
the variables do not depend on the context. Nothing is replaced silently with something different:
an unsupported configuration simply runs flax's code.

When it acts: at trace time. The context must be active while the function is traced, i.e. on its
first call under ``jit``; the functions it returns run the kernels without it. Entering the context
also sets a ``jax.make_user_context`` value that is part of jit's cache key, so a jitted function
traced before without the context (a ``load_classifier``-style ``jit``-ed apply) is traced again
inside it rather than reusing the slow trace; :func:`fast` enters it only around the call, so the
attack that calls ``fast(logits_fn)`` compiles once per ``logits_fn`` as usual.

Limits. The kernels' rules are ``jax.custom_vjp``: forward mode (``jax.jvp``, ``jax.jacfwd``,
forward-over-reverse Hessian-vector products) through the fast path raises; use the model outside
the context for those. The pooling patch is process-wide while the context is open (harmless: it
equals flax's function). Equal to float rounding, not bitwise (the shallow first layer sums in
another order): a linf attack's sign step can turn such a difference in a near-zero gradient entry
into a whole step, so linf PGD's iterates may differ in a few pixels (on a SmallCNN-shaped model,
batch 128, PGD-10: 321 of 100,352 pixels; the gradients agreed to 1e-8 with no sign flip at x).
Only CPU speed is the point; on GPU measure before using it.

Example:

>>> import flax.linen as nn, jax, jax.numpy as jnp
>>> class Net(nn.Module):
...   @nn.compact
...   def __call__(self, x):
...     x = nn.max_pool(nn.relu(nn.Conv(8, (3, 3))(x)), (2, 2), strides=(2, 2))
...     return nn.Dense(3)(x.reshape(x.shape[0], -1))
>>> x = jnp.ones((2, 8, 8, 1))
>>> variables = Net().init(jax.random.key(0), x)
>>> logits_fn = lambda xx: Net().apply(variables, xx)
>>> bool(jnp.allclose(jax.jit(fast(logits_fn))(x), logits_fn(x), atol=1e-6))
True
>>> with fast_convolutions():
...   same = jax.tree.map(jnp.shape, Net().init(jax.random.key(0), x))
>>> same == jax.tree.map(jnp.shape, variables)
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Any, Callable, Iterator, Optional

import flax.linen as nn
import flax.linen.pooling as flax_pooling
import jax
import jax.numpy as jnp
from jax import lax

from robust_jax.models import kernels

# Part of jax.jit's cache key: True while the fast path is active, so that jitted functions traced
# outside the context are traced again inside it (and the other way round).
_JIT_KEY = jax.make_user_context(False)

_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                 out_spec=(0, 3, 1, 2))

# The pooling patch: the originals, and how many contexts (any thread) hold it.
_POOL_LOCK = threading.Lock()
_POOL_DEPTH = 0
_ORIGINAL_MAX_POOL = flax_pooling.max_pool
# Where user code finds flax's max_pool by attribute: nn.max_pool and nn.pooling.max_pool.
_POOL_HOMES = (nn, flax_pooling)

_HAS_CONV_FIELD = "conv_general_dilated" in {f.name for f in dataclasses.fields(nn.Conv)}


# --------------------------------------------------------------------------------------------------
# The drop-in replacements.


def _all_ones(v: Any) -> bool:
  if v is None:
    return True
  if isinstance(v, int):
    return v == 1
  return all(int(a) == 1 for a in v)


def _supported_pads(padding: Any, lhs: jax.Array, rhs: jax.Array,
                    strides: tuple) -> Optional[kernels.Pads]:
  """The explicit pads of a supported padding, or None (then the caller falls back)."""
  if isinstance(padding, str) and padding.upper() not in ("SAME", "VALID"):
    return None  # e.g. lax's SAME_LOWER
  try:
    pads = kernels.resolve_padding(padding, lhs.shape[1:3], rhs.shape[:2], strides)
  except (TypeError, ValueError):
    return None
  if any(p < 0 for pair in pads for p in pair):
    return None
  return pads


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """``lax.conv_general_dilated``, with the cases the kernels support run by them.

  A supported call (2-D, NHWC/HWIO dimension numbers, no dilation, one feature and batch group,
  ``precision`` and ``preferred_element_type`` None, equal floating dtypes, non-negative padding
  that :func:`robust_jax.models.kernels.resolve_padding` reads) returns
  ``kernels.conv2d(lhs, rhs, window_strides, pads)``: the same value, with a VJP that stays fast
  inside ``lax.while_loop`` on CPU. Any other call is passed to ``lax.conv_general_dilated`` as is.

  Args: those of ``lax.conv_general_dilated``.

  Returns:
    The convolution, equal to ``lax.conv_general_dilated``'s to float rounding.
  """
  args = (lhs, rhs, window_strides, padding)
  kwargs = dict(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
                batch_group_count=batch_group_count, precision=precision,
                preferred_element_type=preferred_element_type)
  lhs_a, rhs_a = jnp.asarray(lhs), jnp.asarray(rhs)
  if not (lhs_a.ndim == 4 and rhs_a.ndim == 4 and lhs_a.dtype == rhs_a.dtype
          and jnp.issubdtype(lhs_a.dtype, jnp.floating)
          and _all_ones(lhs_dilation) and _all_ones(rhs_dilation)
          and feature_group_count == 1 and batch_group_count == 1
          and precision is None and preferred_element_type is None):
    return lax.conv_general_dilated(*args, **kwargs)
  try:
    dn = lax.conv_dimension_numbers(lhs_a.shape, rhs_a.shape, dimension_numbers)
  except (TypeError, ValueError):
    return lax.conv_general_dilated(*args, **kwargs)
  if dn != _NHWC or lhs_a.shape[-1] != rhs_a.shape[2]:
    return lax.conv_general_dilated(*args, **kwargs)
  try:
    strides = kernels.to_pair(window_strides, "window_strides")
  except (TypeError, ValueError):
    return lax.conv_general_dilated(*args, **kwargs)
  pads = _supported_pads(padding, lhs_a, rhs_a, strides)
  if pads is None:
    return lax.conv_general_dilated(*args, **kwargs)
  return kernels.conv2d(lhs_a, rhs_a, strides, pads)


def _pool_pair(v: Any) -> Optional[tuple]:
  try:
    return tuple(int(a) for a in v)
  except TypeError:
    return None


def max_pool(inputs, window_shape, strides=None, padding="VALID"):
  """``flax.linen.max_pool``, with 2x2 stride-2 pooling of an even NHWC map run by the kernel.

  ``window_shape == strides == (2, 2)``, padding ``"VALID"``, ``"SAME"`` or zero pads, a 4-D
  floating input with even H and W: :func:`robust_jax.models.kernels.max_pool_2x2` (equal value and
  gradient, ties going to the first maximum as with ``reduce_window``). Anything else: flax's own
  function.
  """
  x = jnp.asarray(inputs)
  window, stride = _pool_pair(window_shape), _pool_pair(strides) if strides is not None else None
  ok = (window == (2, 2) and stride == (2, 2) and x.ndim == 4
        and jnp.issubdtype(x.dtype, jnp.floating) and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0)
  if ok:
    if isinstance(padding, str):
      ok = padding.upper() in ("VALID", "SAME")  # SAME pads nothing for a 2x2/2 window, even size
    else:
      try:
        ok = all(tuple(int(a) for a in p) == (0, 0) for p in padding) and len(padding) == 2
      except TypeError:
        ok = False
  if not ok:
    return _ORIGINAL_MAX_POOL(inputs, window_shape, strides=strides, padding=padding)
  return kernels.max_pool_2x2(x)


# --------------------------------------------------------------------------------------------------
# The interceptor and the context.


def _conv_interceptor(next_fun, args, kwargs, context):
  """Runs a plain ``nn.Conv.__call__`` with :func:`conv_general_dilated` as its primitive."""
  module = context.module
  if (context.method_name != "__call__" or not isinstance(module, nn.Conv) or not _HAS_CONV_FIELD
      or module.conv_general_dilated is not None or module.conv_general_dilated_cls is not None):
    return next_fun(*args, **kwargs)
  object.__setattr__(module, "conv_general_dilated", conv_general_dilated)
  try:
    return next_fun(*args, **kwargs)
  finally:
    object.__setattr__(module, "conv_general_dilated", None)


def _patch_pooling() -> None:
  global _POOL_DEPTH
  with _POOL_LOCK:
    if _POOL_DEPTH == 0:
      for home in _POOL_HOMES:
        home.max_pool = max_pool
    _POOL_DEPTH += 1


def _unpatch_pooling() -> None:
  global _POOL_DEPTH
  with _POOL_LOCK:
    _POOL_DEPTH -= 1
    if _POOL_DEPTH == 0:
      for home in _POOL_HOMES:
        home.max_pool = _ORIGINAL_MAX_POOL


@contextlib.contextmanager
def fast_convolutions() -> Iterator[None]:
  """Within it, linen models trace their ``nn.Conv`` and ``nn.max_pool`` through the CPU kernels.

  Every ``flax.linen.Conv.__call__`` of a supported configuration computes its convolution with
  :func:`robust_jax.models.kernels.conv2d` and every 2x2 stride-2 ``nn.max_pool`` with
  :func:`robust_jax.models.kernels.max_pool_2x2` (module docstring: what is supported; the rest runs
  flax's code unchanged). Values, reverse-mode derivatives, parameters and variables equal those
  without the context (to float rounding); what changes is the speed of their gradients inside
  ``lax.while_loop`` on XLA's CPU backend.

  The context acts at trace time: enter it around the first (tracing) call of a jitted function, or
  use :func:`fast`, which enters it around each call of the function it wraps. Re-entrant and
  exception-safe: flax's ``max_pool`` is restored when the outermost context exits.

  Yields:
    None.
  """
  _patch_pooling()
  try:
    with _JIT_KEY(True), nn.intercept_methods(_conv_interceptor):
      yield
  finally:
    _unpatch_pooling()


class _Fast:
  """``fn`` run inside :func:`fast_convolutions`; equal (and hashing equal) for equal ``fn``s, so
  that ``fast(f)`` built twice keeps jit caches keyed on the function (attacks, ``Partial``s)."""

  def __init__(self, fn: Callable):
    self.fn = fn
    self.__wrapped__ = fn
    self.__name__ = getattr(fn, "__name__", type(fn).__name__)
    self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
    self.__doc__ = getattr(fn, "__doc__", None)

  def __call__(self, *args, **kwargs):
    with fast_convolutions():
      return self.fn(*args, **kwargs)

  def __eq__(self, other):
    if not isinstance(other, _Fast):
      return NotImplemented
    if self.fn is other.fn:
      return True
    try:
      return bool(self.fn == other.fn)
    except Exception:  # pylint: disable=broad-except
      return False

  def __hash__(self):
    try:
      return hash((_Fast, self.fn))
    except TypeError:  # e.g. the bound apply of an (unhashable) linen module
      return hash((_Fast, id(self.fn)))

  def __repr__(self):
    return f"fast({self.fn!r})"


def fast(fn: Callable) -> Callable:
  """``fn`` traced with the fast path: each call runs inside :func:`fast_convolutions`.

  ``jax.jit(fast(logits_fn))`` or ``attacks.pgd(fast(logits_fn), ...)`` traces ``logits_fn``'s linen
  model with the library's kernels. A ``jax.tree_util.Partial`` stays a ``Partial`` with the same
  leaves (only its function is wrapped), so attacks that take ``logits_fn`` as a traced argument
  (:func:`robust_jax.attacks.as_pytree_fn`, the ``logits_fn`` of ``load_classifier``) still reuse
  one compilation across parameter values; ``fast(f) == fast(f)``, so wrapping again does not
  recompile either. Idempotent.

  Args:
    fn: any callable, typically ``x -> logits`` closing over (or a ``Partial`` holding) a linen
      model's variables; its arguments and results pass through unchanged.

  Returns:
    A callable with the same value and reverse-mode derivatives as ``fn`` (to float rounding).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = jax.tree_util.Partial(lambda w, x: x @ w, jnp.eye(2))
    >>> g = fast(f)
    >>> same_treedef = jax.tree.structure(g) == jax.tree.structure(fast(f))  # no recompilation
    >>> isinstance(g, jax.tree_util.Partial), same_treedef, g(jnp.ones((1, 2))).tolist()
    (True, True, [[1.0, 1.0]])
  """
  if isinstance(fn, _Fast):
    return fn
  if isinstance(fn, jax.tree_util.Partial):
    if isinstance(fn.func, _Fast):
      return fn
    return jax.tree_util.Partial(_Fast(fn.func), *fn.args, **fn.keywords)
  return _Fast(fn)


__all__ = ["conv_general_dilated", "fast", "fast_convolutions", "max_pool"]
