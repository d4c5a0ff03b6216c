"""Wide ResNets of the TRADES / MART / AWP code (WRN-34-10, WRN-28-10) and Madry's WRN-32-10.

Zagoruyko and Komodakis 2016, "Wide Residual Networks", in the form of ``models/wideresnet.py`` of
``yaodongyu/TRADES`` (byte-identical in ``YisenWang/MART``, copied by AWP and FAT): a 3x3 stem with 16
channels, three groups of n pre-activation blocks with 16k, 32k and 64k channels (strides 1, 2, 2),
a final ``BN -> ReLU``, global average pooling and a linear layer.

Depth conventions. The same network goes by two depths:

* TRADES/MART (``depth_convention="trades"``): n = (depth - 4) / 6, so WRN-34-10 has n = 5 and
  WRN-28-10 has n = 4.
* Madry et al. (``Wide_ResNet_Madry`` in FAT/GAIRAT's ``models/wrn_madry.py``, Madry's CIFAR-10
  challenge model, the WRN-32-10 that Dynamic AT reports; ``depth_convention="madry"``):
  n = (depth - 2) / 6, so WRN-32-10 also has n = 5.

WRN-32-10 (Madry) and WRN-34-10 (TRADES) are therefore the same architecture, 46,160,474 parameters
for 10 classes; WRN-28-10 has 36,479,194. PyTorch's ``parameters()`` reports more for the TRADES
class (48,262,586 and 38,119,866) because it also builds a ``sub_block1`` that ``forward`` never uses;
those dead parameters are not created here. Dynamic AT's own Keras ``WideResNet(depth=5)`` differs
in detail (convolution biases, no BatchNorm inside its blocks through a bug, a ReLU after the stem);
it is not reproduced.

Block (``equalInOut`` in the reference): ``a = relu(bn1(x))``; out = ``conv2(relu(bn2(conv1(a))))``;
return ``x + out`` when the channels agree, else ``conv1x1(a) + out``. Convolutions are bias-free with
PyTorch's ``padding=1`` and the reference's initialisation N(0, 2 / (k * k * out_channels)); the
linear layer has PyTorch's default kernel and a zero bias. The reference's dropout (``dropRate``) is
0 in every recipe and is omitted.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from robust_jax.models import layers, sgm
from robust_jax.models.layers import Conv, Dense

_CONVENTIONS = ("trades", "madry")


def blocks_per_group(depth: int, depth_convention: str = "trades") -> int:
  """Number of blocks n in each of the three groups.

  Args:
    depth: the nominal depth (34, 28 with ``"trades"``; 32 with ``"madry"``).
    depth_convention: ``"trades"`` (n = (depth - 4) / 6) or ``"madry"`` (n = (depth - 2) / 6).

  Returns:
    n >= 1.

  Raises:
    ValueError: for an unknown convention or a depth that gives no positive integer n.
  """
  if depth_convention not in _CONVENTIONS:
    raise ValueError(f"depth_convention must be one of {_CONVENTIONS}, got {depth_convention!r}")
  offset = 4 if depth_convention == "trades" else 2
  if depth <= offset or (depth - offset) % 6:
    raise ValueError(
        f"depth {depth} is not {offset} + 6n for an integer n >= 1 (depth_convention "
        f"{depth_convention!r})")
  return (depth - offset) // 6


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str,
          vjp: str = "custom") -> Conv:
  """A bias-free convolution with PyTorch's padding (k // 2) and the reference's initialisation."""
  return Conv(features, kernel, strides=stride, padding=kernel // 2, use_bias=False,
              kernel_init=layers.kaiming_normal_fan_out(), dtype=dtype, vjp=vjp, name=name)


class WideBasicBlock(nn.Module):
  """The pre-activation block of the TRADES WideResNet (see the module docstring).

  Attributes:
    out_planes: output channels.
    stride: stride of conv1 and of the 1x1 shortcut.
    dtype: compute dtype.
    conv_vjp: how the convolutions are differentiated (:class:`~robust_jax.models.layers.Conv`).
    sgm_gamma: the Skip Gradient Method's backward scale of the residual branch
      (:mod:`robust_jax.models.sgm`; 1.0 = plain autodiff, the forward never changes).
  """
  out_planes: int
  stride: int = 1
  dtype: Any = jnp.float32
  conv_vjp: str = "custom"
  sgm_gamma: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, H, W, C_in] -> [B, H / stride, W / stride, out_planes]."""
    a = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(x))
    out = _conv(self.out_planes, 3, self.stride, self.dtype, "conv1", self.conv_vjp)(a)
    out = nn.relu(layers.batch_norm(train, self.dtype, "bn2")(out))
    out = _conv(self.out_planes, 3, 1, self.dtype, "conv2", self.conv_vjp)(out)
    out = sgm.skip_gradient(out, self.sgm_gamma)
    if x.shape[-1] == self.out_planes:
      return x + out
    return _conv(self.out_planes, 1, self.stride, self.dtype, "shortcut_conv",
                 self.conv_vjp)(a) + out


class WideResNet(nn.Module):
  """WRN-depth-widen_factor for 32x32 images (CIFAR); see the module docstring.

  Attributes:
    depth: nominal depth, read with ``depth_convention`` (34 or 28 for TRADES, 32 for Madry).
    widen_factor: k, the width multiplier (10 in every recipe here).
    num_classes: number of logits.
    depth_convention: ``"trades"`` or ``"madry"`` (see :func:`blocks_per_group`).
    dtype: compute dtype.
    mean, std: optional per-channel input standardisation.
    conv_vjp: how the convolutions are differentiated, ``"custom"`` or ``"jax"`` (see
      :class:`~robust_jax.models.layers.Conv`); the parameters do not depend on it.
    sgm_gamma: the Skip Gradient Method's backward scale of every residual branch
      (:mod:`robust_jax.models.sgm`); the forward and the parameters do not depend on it.
    remat: rematerialise every residual block in the backward pass (``nn.remat``), trading
      compute for memory (what WRN-70-16 needs); logits, gradients and parameters unchanged.
  """
  depth: int = 34
  widen_factor: int = 10
  num_classes: int = 10
  depth_convention: str = "trades"
  dtype: Any = jnp.float32
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None
  conv_vjp: str = "custom"
  sgm_gamma: float = 1.0
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, H, W, 3] in [0, 1] (32x32 for CIFAR). Returns float32 logits [B, num_classes].

    Raises:
      ValueError: if depth does not fit ``depth_convention``.
    """
    n = blocks_per_group(self.depth, self.depth_convention)
    k = self.widen_factor
    block = layers.remat_block(WideBasicBlock, self.remat)
    x = layers.normalize_input(x, self.mean, self.std)
    x = _conv(16, 3, 1, self.dtype, "conv1", self.conv_vjp)(x)
    for g, (planes, stride) in enumerate(((16 * k, 1), (32 * k, 2), (64 * k, 2))):
      for b in range(n):
        x = block(planes, stride if b == 0 else 1, self.dtype, conv_vjp=self.conv_vjp,
                  sgm_gamma=self.sgm_gamma, name=f"block{g + 1}_{b}")(x, train)
    x = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(x))
    x = layers.global_avg_pool(x)
    x = Dense(self.num_classes, kernel_init=layers.torch_default_kernel_init(), dtype=self.dtype,
              name="fc")(x)
    return x.astype(jnp.float32)
