"""CIFAR ResNet-18 and PreAct ResNet-18, as in the PyTorch code of the adversarial-training papers.

* :class:`ResNet18`: kuangliu's ``pytorch-cifar`` ``ResNet(BasicBlock, [2, 2, 2, 2])``, the one copied
  into MART (``YisenWang/MART`` ``resnet.py``), FAT and GAIRAT: a 3x3 stem (no max pool), four stages
  of two post-activation basic blocks (64, 128, 256, 512 channels, strides 1, 2, 2, 2), projection
  shortcuts (1x1 conv + BN) where the shape changes, global average pooling, a linear layer.
  He et al. 2016, "Deep Residual Learning for Image Recognition". 11,173,962 parameters (10 classes).
* :class:`PreActResNet18`: the pre-activation variant of ``locuslab/robust_overfitting`` (also
  ``fast_adversarial`` and AT-AWP's ``preactresnet.py``): blocks ``BN -> ReLU -> conv -> BN -> ReLU
  -> conv``, a 1x1 projection shortcut applied to the *activated* input, and, unlike kuangliu's
  original, a final ``BN -> ReLU`` before the pooling. He et al. 2016, "Identity Mappings in Deep
  Residual Networks". 11,172,170 parameters (10 classes).

Both take float NHWC images in [0, 1] and return float32 logits [B, num_classes] (see
:mod:`robust_jax.models.cnn` for ``train``, ``dtype``, ``mean``/``std``). Convolutions have no biases
and use PyTorch's ``padding=1`` (not SAME, which pads a stride-2 layer only at the bottom/right), so
the feature maps are the reference's. The reference's ``F.avg_pool2d(out, 4)`` on the 4x4 map of a
32x32 input is the global average pool used here, which also accepts other input sizes. PyTorch's
default initialisation is kept (Kaiming-uniform with a = sqrt(5) for convolutions and the linear
layer, BatchNorm 1 and 0). No dropout (the references have none).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from robust_jax.models import layers
from robust_jax.models.layers import Conv, Dense

_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, stride of the first block)
_BLOCKS_PER_STAGE = 2


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str) -> Conv:
  """A bias-free convolution with PyTorch's padding (k // 2) and default initialisation."""
  return Conv(features, kernel, strides=stride, padding=kernel // 2, use_bias=False,
              kernel_init=layers.torch_default_kernel_init(), dtype=dtype, name=name)


def _linear(num_classes: int, x: jax.Array, dtype: Any) -> nn.Dense:
  return Dense(num_classes, kernel_init=layers.torch_default_kernel_init(),
               bias_init=layers.torch_default_bias_init(x.shape[-1]), dtype=dtype, name="linear")


class BasicBlock(nn.Module):
  """Post-activation basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

  Attributes:
    planes: output channels.
    stride: stride of conv1 and of the projection shortcut.
    dtype: compute dtype.
  """
  planes: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, H, W, C_in] -> [B, H / stride, W / stride, planes]."""
    out = _conv(self.planes, 3, self.stride, self.dtype, "conv1")(x)
    out = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(out))
    out = _conv(self.planes, 3, 1, self.dtype, "conv2")(out)
    out = layers.batch_norm(train, self.dtype, "bn2")(out)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.planes:
      shortcut = _conv(self.planes, 1, self.stride, self.dtype, "shortcut_conv")(x)
      shortcut = layers.batch_norm(train, self.dtype, "shortcut_bn")(shortcut)
    return nn.relu(out + shortcut)


class PreActBlock(nn.Module):
  """Pre-activation basic block: a = relu(bn1(x)); conv2(relu(bn2(conv1(a)))) + shortcut.

  The shortcut is x itself, or a 1x1 projection of ``a`` (not of x) when the shape changes.

  Attributes:
    planes: output channels.
    stride: stride of conv1 and of the projection shortcut.
    dtype: compute dtype.
  """
  planes: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, H, W, C_in] -> [B, H / stride, W / stride, planes]."""
    a = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(x))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.planes:
      shortcut = _conv(self.planes, 1, self.stride, self.dtype, "shortcut_conv")(a)
    out = _conv(self.planes, 3, self.stride, self.dtype, "conv1")(a)
    out = nn.relu(layers.batch_norm(train, self.dtype, "bn2")(out))
    out = _conv(self.planes, 3, 1, self.dtype, "conv2")(out)
    return out + shortcut


def _stages(block_cls, x: jax.Array, train: bool, dtype: Any) -> jax.Array:
  """The four stages of two blocks each; submodules named ``layer{stage}_{block}`` (1-based stage)."""
  for s, (planes, stride) in enumerate(_STAGES):
    for b in range(_BLOCKS_PER_STAGE):
      x = block_cls(planes, stride if b == 0 else 1, dtype, name=f"layer{s + 1}_{b}")(x, train)
  return x


class ResNet18(nn.Module):
  """kuangliu's CIFAR ResNet-18 (as in MART, FAT, GAIRAT); see the module docstring.

  Attributes:
    num_classes: number of logits.
    dtype: compute dtype.
    mean, std: optional per-channel input standardisation.
  """
  num_classes: int = 10
  dtype: Any = jnp.float32
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, H, W, 3] in [0, 1] (32x32 for CIFAR). Returns float32 logits [B, num_classes]."""
    x = layers.normalize_input(x, self.mean, self.std)
    x = _conv(64, 3, 1, self.dtype, "conv1")(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(x))
    x = layers.global_avg_pool(_stages(BasicBlock, x, train, self.dtype))
    return _linear(self.num_classes, x, self.dtype)(x).astype(jnp.float32)


class PreActResNet18(nn.Module):
  """robust_overfitting's PreAct ResNet-18 (as in AT-AWP); see the module docstring.

  Attributes:
    num_classes: number of logits.
    dtype: compute dtype.
    mean, std: optional per-channel input standardisation (robust_overfitting and AT-AWP train on
      CIFAR-10 standardised with mean (0.4914, 0.4822, 0.4465) and std (0.2471, 0.2435, 0.2616)).
  """
  num_classes: int = 10
  dtype: Any = jnp.float32
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, H, W, 3] in [0, 1] (32x32 for CIFAR). Returns float32 logits [B, num_classes]."""
    x = layers.normalize_input(x, self.mean, self.std)
    x = _conv(64, 3, 1, self.dtype, "conv1")(x)
    x = _stages(PreActBlock, x, train, self.dtype)
    x = nn.relu(layers.batch_norm(train, self.dtype, "bn")(x))
    x = layers.global_avg_pool(x)
    return _linear(self.num_classes, x, self.dtype)(x).astype(jnp.float32)
