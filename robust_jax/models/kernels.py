r"""The CPU speed work: convolution and pooling kernels whose gradients XLA's CPU backend runs fast.

Why a custom convolution. XLA's CPU backend often compiles the input-gradient convolutions (the
transposed convolutions of the backward pass, kernel layout ``01oi``) inside a ``lax.while_loop`` body
as naive loop nests instead of calling its fast convolution; outside a loop it inserts a transposed
copy of the kernel (``01io``) and calls the fast path. The attack loop of
:func:`robust_jax.attacks.ascent` is a while loop (for its early exit), so with ``flax.linen.Conv`` the
attack is several times slower on CPU than the same loop unrolled (shared/reference/environment.md,
section 12; jax-ml/jax#12868). Measured on the project's 2-core CPU, 10 input-gradient steps through
SmallCNN at batch 128 with the parameters as jit arguments: about 3.3 s in a while loop with JAX's
default rule, 0.47 s with this one, 0.44 s unrolled.

:func:`conv2d` therefore carries a ``jax.custom_vjp`` whose input gradient is written as an ordinary
forward convolution, the identity behind every transposed convolution::

    dL/dx = conv(dilate(dL/dy, stride), flip_hw(w) with in/out swapped,
                 padding = (k - 1 - pad_lo, H - 1 + pad_lo - (H_out - 1) * stride))

with ``flip_hw(w)`` = ``jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))`` in HWIO and the dilation
expressed as ``lhs_dilation = stride`` (a no-op for stride 1). The high-side padding absorbs the
leftover rows and columns that a strided window never reaches (SAME padding with stride 2 on an even
size, PyTorch's ``padding=1`` with stride 2). The weight gradient, the standard one, is also written
as a plain forward convolution (:func:`weight_grad`): JAX's own form is compiled as a naive loop nest
under ``lax.cond`` (AWP's warm-up switch), about 60x slower. Both gradients equal JAX's default ones
(the tests check 1e-5; on CPU they are usually bitwise equal); only the way XLA is asked to compute
the input gradient changes.

The convolution, its input gradient and its weight gradient are three ``custom_vjp`` functions whose
backward passes are made of each other, so every order of reverse-mode differentiation stays in
forward-convolution form: GradAlign's double backprop through SmallCNN went from about 3.6 s to
0.41-0.44 s per step on the project's CPU (2.5-2.6x an FGSM-AT step; the paper reports about 3x).

Limitation: a ``custom_vjp`` function cannot be differentiated in forward mode, so ``jax.jvp``,
``jax.jacfwd`` and forward-over-reverse Hessian-vector products of a model built from the custom
convolution raise; reverse mode at any order works (:mod:`robust_jax.analysis.hessian` computes
Hessian-vector products reverse-over-reverse). ``conv2d(..., vjp="jax")`` (a model's
``conv_vjp="jax"``) leaves every derivative to JAX's own rules, forward mode included.

Shallow convolutions (the first layer: 1 or 3 input channels) are instead computed as patches @
kernel (:func:`patches_conv2d`), whose input gradient is several times faster on CPU than a
convolution with 1 or 3 output channels; that form has no custom rule at all.

Also here: :func:`max_pool_2x2` (2x2 stride-2 max pooling as a reshape and a max with a
first-maximum VJP, much faster to differentiate on CPU than ``nn.max_pool``'s ``reduce_window`` and
equal to it) and :func:`relu_max_pool_2x2`. The layer API built on these kernels (``Conv``,
initialisers, BatchNorm) is :mod:`robust_jax.models.layers`.

Example:

>>> import jax, jax.numpy as jnp
>>> x, w = jnp.ones((1, 5, 5, 4)), jnp.ones((3, 3, 4, 2))
>>> g_custom = jax.grad(lambda xx: conv2d(xx, w, 1, "VALID").sum())(x)
>>> g_jax = jax.grad(lambda xx: conv2d(xx, w, 1, "VALID", vjp="jax").sum())(x)
>>> bool(jnp.allclose(g_custom, g_jax)), g_custom.shape
(True, (1, 5, 5, 4))
"""

from __future__ import annotations

import functools
import math
from typing import Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from jax import lax

PaddingLike = Union[str, int, Sequence[Union[int, Tuple[int, int]]]]
Pads = Tuple[Tuple[int, int], Tuple[int, int]]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

# How a convolution is differentiated: this module's closed set of forward-convolution VJPs, or
# JAX's own rules (the baseline the benchmark compares against).
VJPS = ("custom", "jax")


def check_vjp(vjp: str) -> str:
  """Returns ``vjp`` if it is one of :data:`VJPS`.

  Raises:
    ValueError: otherwise, naming the valid values.
  """
  if vjp not in VJPS:
    raise ValueError(f"vjp must be one of {VJPS}, got {vjp!r}")
  return vjp


# --------------------------------------------------------------------------------------------------
# Pads.


def to_pair(v: Union[int, Sequence[int]], what: str) -> Tuple[int, int]:
  """An int or a pair of ints as a pair of ints (``what`` names the argument in the error).

  Raises:
    ValueError: for a sequence that is not of length 2.
  """
  if isinstance(v, int):
    return (v, v)
  v = tuple(int(a) for a in v)
  if len(v) != 2:
    raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}")
  return v


def resolve_padding(padding: PaddingLike, in_hw: Sequence[int], kernel_hw: Sequence[int],
                    strides: Sequence[int]) -> Pads:
  """Turns any flax-style padding into explicit ((lo, hi), (lo, hi)) pads for H and W.

  Args:
    padding: ``"SAME"`` / ``"VALID"`` (lax's conventions: SAME puts the odd pixel at the high side),
      an int p (p on every side, PyTorch's ``padding=p``), or a pair whose items are ints or
      (lo, hi) pairs.
    in_hw: the input's spatial size (H, W).
    kernel_hw: the kernel's spatial size (kh, kw).
    strides: (sh, sw).

  Returns:
    A hashable ((lo_h, hi_h), (lo_w, hi_w)) of Python ints.

  Raises:
    ValueError: for an unknown string or a malformed sequence.
  """
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"padding must be 'SAME', 'VALID', an int or explicit pads, got {padding!r}")
    pads = lax.padtype_to_pads(tuple(in_hw), tuple(kernel_hw), tuple(strides), padding.upper())
  elif isinstance(padding, int):
    pads = [(padding, padding)] * 2
  else:
    padding = list(padding)
    if len(padding) != 2:
      raise ValueError(f"explicit padding needs one entry per spatial dim (2), got {padding!r}")
    pads = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
    if any(len(p) != 2 for p in pads):
      raise ValueError(f"each explicit pad must be an int or a (lo, hi) pair, got {padding!r}")
  return tuple((int(lo), int(hi)) for lo, hi in pads)


# --------------------------------------------------------------------------------------------------
# The convolution with the custom VJP.


def _forward(x: jax.Array, w: jax.Array, strides: Tuple[int, int], pads: Pads) -> jax.Array:
  return lax.conv_general_dilated(
      x, w, window_strides=strides, padding=pads, dimension_numbers=_DIMENSION_NUMBERS)


def input_grad_pads(in_hw: Sequence[int], kernel_hw: Sequence[int], strides: Sequence[int],
                    pads: Pads) -> Pads:
  """Pads of the forward convolution that computes the input gradient (see the module docstring).

  For each spatial dim with input size n, kernel k, stride s and pads (lo, hi), the output has
  m = (n + lo + hi - k) // s + 1 positions; the gradient convolution pads the s-dilated cotangent
  ((m - 1) s + 1 long) by k - 1 - lo before and n - 1 + lo - (m - 1) s after, so that its output has
  exactly n positions. Either pad may be negative (XLA crops then).
  """
  out = []
  for n, k, s, (lo, hi) in zip(in_hw, kernel_hw, strides, pads):
    m = (n + lo + hi - k) // s + 1
    out.append((k - 1 - lo, n - 1 + lo - (m - 1) * s))
  return tuple(out)


def flip_kernel(w: jax.Array) -> jax.Array:
  """HWIO kernel -> its spatially flipped, in/out-swapped version (HWOI read as HWIO)."""
  return jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))


# The convolution and its two adjoints, each a custom_vjp function whose backward pass is made of the
# other two: the set is closed under reverse-mode differentiation, so gradients of gradients
# (GradAlign's double backprop, Hessian-vector products) also reach XLA as plain forward
# convolutions. With linearity in each argument:
#   <conv(x, w), g> = <x, conv_t(g, w)> = <w, wgrad(x, g)>.


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv2d(x, w, strides, pads):
  return _forward(x, w, strides, pads)


def _conv2d_fwd(x, w, strides, pads):
  return _forward(x, w, strides, pads), (x, w)


def _conv2d_bwd(strides, pads, residuals, g):
  x, w = residuals
  dx = _conv_transpose(g, w, strides, pads, tuple(x.shape[1:3]))
  dw = _weight_grad(x, g, strides, pads, tuple(w.shape[:2]))
  return dx.astype(x.dtype), dw.astype(w.dtype)


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_transpose(g, w, strides, pads, in_hw):
  """The input gradient of ``_conv2d`` for cotangent g: a forward convolution (module docstring)."""
  g_pads = input_grad_pads(in_hw, w.shape[:2], strides, pads)
  return lax.conv_general_dilated(
      g, flip_kernel(w), window_strides=(1, 1), padding=g_pads, lhs_dilation=strides,
      dimension_numbers=_DIMENSION_NUMBERS)


def _conv_transpose_fwd(g, w, strides, pads, in_hw):
  return _conv_transpose(g, w, strides, pads, in_hw), (g, w)


def _conv_transpose_bwd(strides, pads, in_hw, residuals, c):
  g, w = residuals
  dg = _conv2d(c, w, strides, pads)
  dw = _weight_grad(c, g, strides, pads, tuple(w.shape[:2]))
  return dg.astype(g.dtype), dw.astype(w.dtype)


_conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


def weight_grad(x: jax.Array, g: jax.Array, kernel_hw: Sequence[int], strides: Tuple[int, int],
                pads: Pads) -> jax.Array:
  """The kernel gradient of :func:`conv2d` as a plain NHWC/HWIO forward convolution.

  ``dw[i, j, c, o] = sum_{b, h, w} x_pad[b, h s + i, w s + j, c] g[b, h, w, o]``: a convolution of
  ``x`` read as [C_in, H, W, B] (NHWC with the batch as features) with ``g`` read as
  [H_out, W_out, B, C_out] (HWIO, dilated by the stride), whose [C_in, kh, kw, C_out] output is
  transposed back to HWIO. Equal to ``jax.vjp`` of the forward convolution with respect to the
  kernel (bitwise on CPU); written this way because XLA's CPU backend compiles JAX's own form
  (batch-contracting dimension numbers) as a naive loop nest inside ``lax.cond`` and
  ``lax.while_loop`` bodies (a weight gradient under AWP's warm-up ``lax.cond`` was about 60x slower
  than outside it) and in second derivatives. Differentiable (reverse mode) in both arguments.
  """
  return _weight_grad(x, g, tuple(strides), tuple(pads), tuple(kernel_hw))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _weight_grad(x, g, strides, pads, kernel_hw):
  tpads = []
  for n, k, s, (lo, _), m in zip(x.shape[1:3], kernel_hw, strides, pads, g.shape[1:3]):
    tpads.append((lo, k + (m - 1) * s - n - lo))  # output size k; the high pad may be negative
  dw = lax.conv_general_dilated(
      jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)), window_strides=(1, 1),
      padding=tuple(tpads), rhs_dilation=strides, dimension_numbers=_DIMENSION_NUMBERS)
  return jnp.transpose(dw, (1, 2, 0, 3))


def _weight_grad_fwd(x, g, strides, pads, kernel_hw):
  return _weight_grad(x, g, strides, pads, kernel_hw), (x, g)


def _weight_grad_bwd(strides, pads, kernel_hw, residuals, c):
  x, g = residuals
  dx = _conv_transpose(g, c, strides, pads, tuple(x.shape[1:3]))
  dg = _conv2d(x, c, strides, pads)
  return dx.astype(x.dtype), dg.astype(g.dtype)


_weight_grad.defvjp(_weight_grad_fwd, _weight_grad_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, strides: Union[int, Sequence[int]] = 1,
           padding: PaddingLike = "SAME", *, vjp: str = "custom",
           custom_vjp: bool = True) -> jax.Array:
  """2-D convolution, NHWC input and HWIO kernel, whose input gradient is a forward convolution.

  Shallow kernels (``kh * kw * C_in <= PATCHES_MAX_DEPTH``) run as patches @ kernel
  (:func:`patches_conv2d`, plain autodiff); deeper ones as the convolution that ``vjp`` names.

  Args:
    x: input [B, H, W, C_in], any float dtype.
    kernel: [kh, kw, C_in, C_out], the same dtype as x.
    strides: int or (sh, sw), >= 1.
    padding: see :func:`resolve_padding`.
    vjp: how a deep convolution is differentiated: ``"custom"`` (this module's forward-convolution
      VJPs, fast inside while loops on CPU) or ``"jax"`` (``lax.conv_general_dilated`` with JAX's
      own rules: slow inside while loops on CPU, the baseline that ``launch.benchmark`` measures;
      forward mode works). Either way the value and the gradients agree to float rounding.
    custom_vjp: False computes every convolution, shallow ones included, as
      ``lax.conv_general_dilated`` with JAX's rules (the reference the tests compare against); it
      overrides ``vjp``.

  Returns:
    [B, H_out, W_out, C_out], equal to ``lax.conv_general_dilated`` with the same arguments.

  Raises:
    ValueError: if x is not 4-D, the channel counts disagree or ``vjp`` is unknown.
  """
  check_vjp(vjp)
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"conv2d expects NHWC x and HWIO kernel, got {x.shape} and {kernel.shape}")
  if x.shape[-1] != kernel.shape[2]:
    raise ValueError(f"input has {x.shape[-1]} channels, kernel expects {kernel.shape[2]}")
  strides = to_pair(strides, "strides")
  pads = resolve_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
  if not custom_vjp:
    return _forward(x, kernel, strides, pads)
  if math.prod(kernel.shape[:3]) <= PATCHES_MAX_DEPTH:
    return patches_conv2d(x, kernel, strides, pads)
  if vjp == "jax":
    return _forward(x, kernel, strides, pads)
  return _conv2d(x, kernel, strides, pads)


# A convolution whose patches are at most this deep (kh * kw * C_in: a 3x3 kernel on 1 or 3 input
# channels, the first layer of every model here) runs as patches @ kernel (see patches_conv2d).
PATCHES_MAX_DEPTH = 32


def extract_patches(x: jax.Array, kernel_hw: Sequence[int], strides: Tuple[int, int],
                    pads: Pads) -> jax.Array:
  """The convolution's input patches: [B, H, W, C] -> [B, H_out, W_out, kh * kw * C].

  The last axis is ordered (i, j, c), the row-major order of an HWIO kernel's first three axes, so
  ``extract_patches(x, ...) @ w.reshape(-1, C_out)`` is the convolution. Pads may be negative (crop).
  """
  kh, kw = kernel_hw
  (lo_h, hi_h), (lo_w, hi_w) = pads
  zero = jnp.zeros((), x.dtype)
  xp = lax.pad(x, zero, ((0, 0, 0), (lo_h, hi_h, 0), (lo_w, hi_w, 0), (0, 0, 0)))
  b, hp, wp, c = xp.shape
  sh, sw = strides
  ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
  taps = [lax.slice(xp, (0, i, j, 0), (b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                    (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  return jnp.concatenate(taps, axis=-1)


def patches_conv2d(x: jax.Array, kernel: jax.Array, strides: Tuple[int, int], pads: Pads) -> jax.Array:
  """A shallow convolution as patches @ kernel (a slice-and-concatenate and one matrix product).

  Used by :func:`conv2d` when ``kh * kw * C_in <= PATCHES_MAX_DEPTH``. Such a convolution (1 or 3
  input channels) keeps XLA's CPU convolution far from its peak, and its input gradient, a
  convolution with 1 or 3 *output* channels, even more so: on the project's CPU, the input gradient
  of MNIST's first layer (1 -> 32, batch 128) took 5.4 ms as a convolution and 1.4 ms as the
  transpose of this product; CIFAR's first layer (3 -> 64, batch 32) 8.4 ms and 1.7 ms. Its
  gradients are plain JAX autodiff (a matrix product and the transpose of the slicing, a sum of
  padded slices): no convolution, so no while-loop trap, and forward mode works too. Equal to
  ``lax.conv_general_dilated`` up to float summation order.
  """
  kh, kw, c_in, c_out = kernel.shape
  patches = extract_patches(x, (kh, kw), strides, pads)
  return jnp.einsum("bhwk,ko->bhwo", patches, kernel.reshape(kh * kw * c_in, c_out))


# --------------------------------------------------------------------------------------------------
# Pooling.


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2 (PyTorch's ``nn.MaxPool2d(2, 2)``), fast to differentiate on CPU.

  The value is a reshape and a max. The gradient (a custom VJP) goes, in each window, to the first
  maximal element in row-major order, as PyTorch's ``max_pool2d`` and ``nn.max_pool``'s
  ``reduce_window`` do; both value and gradient equal ``nn.max_pool(x, (2, 2), strides=(2, 2))``,
  ties included (the tests check it bitwise). Why: JAX's own gradient of ``reduce_window`` is slow on
  CPU, and that of a reshape-and-max splits the gradient among tied elements, which costs a count and a
  division per element (10% of SmallCNN's input-gradient pass).

  Args:
    x: [B, H, W, C] with H and W even.

  Returns:
    [B, H // 2, W // 2, C].

  Raises:
    ValueError: if x is not 4-D or H or W is odd (PyTorch would silently drop the last row or column;
      here the model's input size is wrong for the architecture).
  """
  if x.ndim != 4:
    raise ValueError(f"max_pool_2x2 expects NHWC input, got shape {x.shape}")
  _, h, w, _ = x.shape
  if h % 2 or w % 2:
    raise ValueError(
        f"max_pool_2x2 needs an even feature map, got {h}x{w}: the input size does not suit this "
        "architecture")
  return _max_pool_2x2(x)


def _windows(x):
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def _max_pool_2x2(x):
  return _windows(x).max(axis=(2, 4))


def _max_pool_2x2_fwd(x):
  out = _max_pool_2x2(x)
  return out, (x, out)


def _max_pool_2x2_bwd(residuals, g):
  x, out = residuals
  xw = _windows(x)
  # The four elements of each window in row-major order; the first one equal to the max wins.
  taken = jnp.zeros(out.shape, bool)
  grads = []
  for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
    first = (xw[:, :, i, :, j] == out) & ~taken
    taken = taken | first
    grads.append(jnp.where(first, g, jnp.zeros((), g.dtype)))
  row0 = jnp.stack(grads[:2], axis=3)  # [B, H/2, W/2, 2, C]
  row1 = jnp.stack(grads[2:], axis=3)
  return (jnp.stack([row0, row1], axis=2).reshape(x.shape),)


_max_pool_2x2.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


def relu_max_pool_2x2(x: jax.Array) -> jax.Array:
  """``max_pool_2x2(relu(x))``, computed as ``relu(max_pool_2x2(x))``: the same value and gradient.

  Max pooling commutes with any nondecreasing function, and the gradient agrees too: where a window's
  max is positive the same element is the first maximum either way, and where it is not, the ReLU
  zeroes the gradient either way. Pooling first runs the ReLU and its gradient on a map four times
  smaller.
  """
  return jax.nn.relu(max_pool_2x2(x))
