"""Building blocks of the models: a convolution with a CPU-friendly VJP, pooling, initialisers.

Why a custom convolution. XLA's CPU backend often compiles the input-gradient convolutions (the
transposed convolutions of the backward pass, kernel layout ``01oi``) inside a ``lax.while_loop`` body
as naive loop nests instead of calling its fast convolution; outside a loop it inserts a transposed
copy of the kernel (``01io``) and calls the fast path. The attack loop of
:mod:`robust_jax.attacks.loop` is a while loop (for its early exit), so with ``flax.linen.Conv`` the
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
size, PyTorch's ``padding=1`` with stride 2). The weight gradient, the standard one, is also written as a plain forward
convolution (:func:`weight_grad`): JAX's own form is compiled as a naive loop nest under ``lax.cond``
(AWP's warm-up switch), about 60x slower. Both gradients equal JAX's default ones (the
tests check 1e-5; on CPU they are usually bitwise equal); only the way XLA is asked to compute the
input gradient changes.

The convolution, its input gradient and its weight gradient are three ``custom_vjp`` functions whose
backward passes are made of each other, so every order of reverse-mode differentiation stays in
forward-convolution form: GradAlign's double backprop through SmallCNN went from about 3.6 s to
0.41-0.44 s per step on the project's CPU (2.5-2.6x an FGSM-AT step; the paper reports about 3x).

Limitation: a ``custom_vjp`` function cannot be differentiated in forward mode, so ``jax.jvp``,
``jax.jacfwd`` and forward-over-reverse Hessian-vector products of a model built from :class:`Conv`
raise; reverse mode at any order works (:mod:`robust_jax.analysis.hessian` computes Hessian-vector
products reverse-over-reverse). ``Conv(custom_vjp=False)`` falls back to
JAX's own rule.

Shallow convolutions (the first layer: 1 or 3 input channels) are instead computed as patches @
kernel (:func:`patches_conv2d`), whose input gradient is several times faster on CPU than a
convolution with 1 or 3 output channels.

Also here: :func:`max_pool_2x2` (2x2 stride-2 max pooling as a reshape and a max with a
first-maximum VJP, much faster to differentiate on CPU than ``nn.max_pool``'s ``reduce_window`` and
equal to it), :func:`relu_max_pool_2x2`, :func:`global_avg_pool`,
:func:`normalize_input`, :func:`batch_norm` with PyTorch's defaults, and the PyTorch default
initialisers used by the reference architectures.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Initializer = Callable[..., jax.Array]
PaddingLike = Union[str, int, Sequence[Union[int, Tuple[int, int]]]]
Pads = Tuple[Tuple[int, int], Tuple[int, int]]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

Dense = nn.Dense  # the models' dense layer is flax's own.


# --------------------------------------------------------------------------------------------------
# Initialisers.


def torch_default_kernel_init() -> Initializer:
  """PyTorch's default ``nn.Conv2d`` / ``nn.Linear`` weight init, ``kaiming_uniform_(a=sqrt(5))``.

  That is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), a variance of 1 / (3 fan_in); fan_in is the receptive
  field times the input channels (HWIO kernel) or the input size (dense kernel).
  """
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int) -> Initializer:
  """PyTorch's default bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  Args:
    fan_in: the fan-in of the layer the bias belongs to (kernel height * width * input channels for a
      convolution, the input size for a dense layer), >= 1.

  Returns:
    An initializer ``(key, shape, dtype) -> array``.
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def kaiming_normal_fan_in() -> Initializer:
  """PyTorch's ``nn.init.kaiming_normal_`` defaults: N(0, 2 / fan_in), not truncated."""
  return nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def kaiming_normal_fan_out() -> Initializer:
  """N(0, 2 / (k * k * out_channels)): the conv init of the TRADES/MART/Madry WideResNets."""
  return nn.initializers.variance_scaling(2.0, "fan_out", "normal")


# --------------------------------------------------------------------------------------------------
# Convolution with the custom VJP.


def _pair(v: Union[int, Sequence[int]], what: str) -> Tuple[int, int]:
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
           padding: PaddingLike = "SAME", *, custom_vjp: bool = True) -> jax.Array:
  """2-D convolution, NHWC input and HWIO kernel, whose input gradient is a forward convolution.

  Args:
    x: input [B, H, W, C_in], any float dtype.
    kernel: [kh, kw, C_in, C_out], the same dtype as x.
    strides: int or (sh, sw), >= 1.
    padding: see :func:`resolve_padding`.
    custom_vjp: False uses JAX's default gradient rule (for forward-mode autodiff).

  Returns:
    [B, H_out, W_out, C_out], equal to ``lax.conv_general_dilated`` with the same arguments.

  Raises:
    ValueError: if x is not 4-D or the channel counts disagree.
  """
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"conv2d expects NHWC x and HWIO kernel, got {x.shape} and {kernel.shape}")
  if x.shape[-1] != kernel.shape[2]:
    raise ValueError(f"input has {x.shape[-1]} channels, kernel expects {kernel.shape[2]}")
  strides = _pair(strides, "strides")
  pads = resolve_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
  if not custom_vjp:
    return _forward(x, kernel, strides, pads)
  if math.prod(kernel.shape[:3]) <= PATCHES_MAX_DEPTH:
    return patches_conv2d(x, kernel, strides, pads)
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


class Conv(nn.Module):
  """2-D convolution with the parameters of ``flax.linen.Conv`` and a CPU-friendly VJP.

  Parameters: ``kernel`` [kh, kw, C_in, features] (HWIO) and, if ``use_bias``, ``bias`` [features],
  both ``param_dtype``; with the same parameters and input the output equals ``flax.linen.Conv``'s.
  The computation runs in ``dtype`` (inputs and parameters are promoted with flax's rules).

  Attributes:
    features: output channels.
    kernel_size: int or (kh, kw).
    strides: int or (sh, sw).
    padding: ``"SAME"``, ``"VALID"``, an int (PyTorch's ``padding=p``) or explicit pads.
    use_bias: whether to add a bias.
    dtype: the compute dtype; None infers it from the input and parameters.
    param_dtype: the parameters' dtype.
    kernel_init: initializer of the kernel (flax's default: LeCun normal).
    bias_init: initializer of the bias (default zeros).
    custom_vjp: False uses JAX's default gradient rule (needed only for forward-mode autodiff).
  """
  features: int
  kernel_size: Union[int, Sequence[int]]
  strides: Union[int, Sequence[int]] = 1
  padding: PaddingLike = "SAME"
  use_bias: bool = True
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()
  custom_vjp: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the convolution to x [B, H, W, C_in]; returns [B, H_out, W_out, features]."""
    kh, kw = _pair(self.kernel_size, "kernel_size")
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv2d(x, kernel, self.strides, self.padding, custom_vjp=self.custom_vjp)
    if bias is not None:
      y = y + bias
    return y


# --------------------------------------------------------------------------------------------------
# Pooling, normalisation.


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
  return nn.relu(max_pool_2x2(x))


def global_avg_pool(x: jax.Array) -> jax.Array:
  """Mean over H and W: [B, H, W, C] -> [B, C] (PyTorch's ``F.avg_pool2d(out, H)`` on an HxH map)."""
  return jnp.mean(x, axis=(1, 2))


def normalize_input(x: jax.Array, mean: Optional[Sequence[float]],
                    std: Optional[Sequence[float]]) -> jax.Array:
  """(x - mean) / std per channel, or x unchanged when both are None.

  Models take images in [0, 1]; a recipe that trains on standardised inputs (robust_overfitting and
  AT-AWP use the CIFAR-10 mean and std) sets ``mean``/``std`` on the model so that attacks still see
  [0, 1] inputs and eps keeps its pixel meaning.

  Raises:
    ValueError: if only one of mean and std is given.
  """
  if mean is None and std is None:
    return x
  if mean is None or std is None:
    raise ValueError("give both mean and std, or neither")
  mean = jnp.asarray(np.asarray(mean, np.float32), x.dtype)
  std = jnp.asarray(np.asarray(std, np.float32), x.dtype)
  return (x - mean) / std


def batch_norm(train: bool, dtype: Optional[Any] = None, name: Optional[str] = None) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults: momentum 0.1 in PyTorch's convention (0.9 in flax's), eps 1e-5.

  In train mode (``train=True``) it normalises with the batch statistics and updates the running
  averages in the ``batch_stats`` collection (apply with ``mutable=["batch_stats"]``); in eval mode it
  uses the running averages and changes nothing. One difference from PyTorch: flax keeps the biased
  batch variance in the running average, PyTorch the unbiased one (a factor n / (n - 1)).
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name)
