"""Small models: the digits MLP and the CNNs of Dynamic AT, TRADES and Wong et al. (MNIST, CIFAR-10).

Every model maps float32 NHWC images in [0, 1] ([B, H, W, C]) to float32 logits [B, num_classes] with
``__call__(x, train=False)``. ``train`` switches BatchNorm to batch statistics (apply with
``mutable=["batch_stats"]``) and turns dropout on (apply with ``rngs={"dropout": key}``). ``dtype`` is
the compute dtype (e.g. ``jnp.bfloat16``); parameters stay float32 and the logits are returned in
float32. ``mean``/``std`` optionally standardise the input inside the model (see
:func:`robust_jax.models.layers.normalize_input`).

Flattening is NHWC (H, W, C order), PyTorch's is (C, H, W): the parameter counts agree, but porting a
PyTorch checkpoint permutes the rows of the first dense kernel.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from robust_jax.models import layers
from robust_jax.models.layers import Conv, Dense


def _flatten(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1)


def _check_images(x: jax.Array, name: str) -> None:
  if x.ndim != 4:
    raise ValueError(f"{name} expects NHWC images [B, H, W, C], got shape {x.shape}")


class MLP(nn.Module):
  """A fully connected ReLU network for small inputs (the 8x8x1 embedded digits by default).

  Flatten, then ``Dense(h) -> ReLU`` for each h in ``hidden_sizes``, then ``Dense(num_classes)``.
  flax's default initialisers (LeCun normal kernels, zero biases). No BatchNorm, no dropout;
  ``train`` is accepted for a uniform interface and ignored.

  Attributes:
    num_classes: number of logits.
    hidden_sizes: widths of the hidden layers (default (256, 256)).
    dtype: compute dtype.
    mean, std: optional per-channel input standardisation.
    conv_vjp: accepted for a uniform interface (``get_model(..., conv_vjp=...)``); the MLP has no
      convolution.
  """
  num_classes: int = 10
  hidden_sizes: Sequence[int] = (256, 256)
  dtype: Any = jnp.float32
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None
  conv_vjp: str = "custom"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, ...] in [0, 1] (any per-example shape). Returns float32 logits [B, num_classes]."""
    del train
    x = _flatten(layers.normalize_input(x, self.mean, self.std))
    for i, width in enumerate(self.hidden_sizes):
      x = nn.relu(Dense(width, dtype=self.dtype, name=f"fc{i + 1}")(x))
    x = Dense(self.num_classes, dtype=self.dtype, name="logits")(x)
    return x.astype(jnp.float32)


class CNN4(nn.Module):
  """Dynamic AT's MNIST "4-layer CNN" (Wang et al. 2019, ``YisenWang/dynamic_adv_training``).

  ``conv32(3x3, SAME) -> BN -> ReLU -> maxpool2 -> conv64(3x3, SAME) -> BN -> ReLU -> maxpool2 ->
  dense128 -> ReLU -> dense(num_classes)``; convolutions and dense layers have biases. 28x28x1 input
  gives 7x7x64 = 3136 features and 421,834 parameters. The reference is Keras (``models.py``,
  ``dataset == 'mnist'``); its initialisers are kept (Glorot-uniform convolutions and logits,
  He-normal 128-unit layer). Its BatchNorm used Keras' momentum 0.99 and epsilon 1e-3; here it uses
  the project's PyTorch defaults (:func:`~robust_jax.models.layers.batch_norm`).

  Attributes:
    num_classes: number of logits.
    dtype: compute dtype.
    mean, std: optional per-channel input standardisation.
    conv_vjp: how the convolutions are differentiated, ``"custom"`` or ``"jax"`` (see
      :class:`~robust_jax.models.layers.Conv`); the parameters do not depend on it.
  """
  num_classes: int = 10
  dtype: Any = jnp.float32
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None
  conv_vjp: str = "custom"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, H, W, C] in [0, 1], H and W divisible by 4. Returns float32 logits [B, num_classes]."""
    _check_images(x, "CNN4")
    x = layers.normalize_input(x, self.mean, self.std)
    glorot = nn.initializers.glorot_uniform()
    for i, width in enumerate((32, 64)):
      x = Conv(width, 3, padding="SAME", kernel_init=glorot, dtype=self.dtype, vjp=self.conv_vjp,
               name=f"conv{i + 1}")(x)
      x = layers.relu_max_pool_2x2(layers.batch_norm(train, self.dtype, name=f"bn{i + 1}")(x))
    x = Dense(128, kernel_init=nn.initializers.he_normal(), dtype=self.dtype,
              name="features")(_flatten(x))
    x = Dense(self.num_classes, kernel_init=glorot, dtype=self.dtype, name="logits")(nn.relu(x))
    return x.astype(jnp.float32)


class CNN8(nn.Module):
  """Dynamic AT's CIFAR-10 "8-layer CNN": six 3x3 convolutions 64-64-128-128-196-196, dense 256.

  ``[conv -> BN -> ReLU] x 2 -> maxpool2`` for widths 64, 128 and 196 (SAME padding, with biases),
  then ``dense256 -> ReLU -> dense(num_classes)``. 32x32x3 input gives 4x4x196 = 3136 features and
  1,639,282 parameters, the PyTorch port used by FAT and GAIRAT (``models/small_cnn.py`` of
  ``zjfheart/Friendly-Adversarial-Training``), whose PyTorch default initialisation is kept. The
  Keras original (commented out in Dynamic AT's ``models.py``) also put a BatchNorm after the dense
  layer: ``dense_batch_norm=True`` adds it (512 more parameters).

  Attributes:
    num_classes: number of logits.
    dense_batch_norm: BatchNorm between the 256-unit layer and its ReLU (the Keras original).
    dtype: compute dtype.
    mean, std: optional per-channel input standardisation.
    conv_vjp: how the convolutions are differentiated, ``"custom"`` or ``"jax"`` (see
      :class:`~robust_jax.models.layers.Conv`); the parameters do not depend on it.
  """
  num_classes: int = 10
  dense_batch_norm: bool = False
  dtype: Any = jnp.float32
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None
  conv_vjp: str = "custom"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, H, W, C] in [0, 1], H and W divisible by 8. Returns float32 logits [B, num_classes]."""
    _check_images(x, "CNN8")
    x = layers.normalize_input(x, self.mean, self.std)
    for i, width in enumerate((64, 64, 128, 128, 196, 196)):
      fan_in = 9 * x.shape[-1]
      x = Conv(width, 3, padding=1, kernel_init=layers.torch_default_kernel_init(),
               bias_init=layers.torch_default_bias_init(fan_in), dtype=self.dtype,
               vjp=self.conv_vjp, name=f"conv{i + 1}")(x)
      x = layers.batch_norm(train, self.dtype, name=f"bn{i + 1}")(x)
      x = layers.relu_max_pool_2x2(x) if i % 2 else nn.relu(x)
    x = _flatten(x)
    x = _torch_dense(256, x, self.dtype, "fc1")(x)
    if self.dense_batch_norm:
      x = layers.batch_norm(train, self.dtype, name="bn_fc1")(x)
    x = _torch_dense(self.num_classes, x, self.dtype, "fc2")(nn.relu(x))
    return x.astype(jnp.float32)


class SmallCNN(nn.Module):
  """TRADES' MNIST SmallCNN (Zhang et al. 2019, ``yaodongyu/TRADES`` ``models/small_cnn.py``).

  ``conv32 -> conv32 -> maxpool2 -> conv64 -> conv64 -> maxpool2`` (3x3 VALID convolutions with
  biases, each followed by ReLU), then ``fc200 -> ReLU -> dropout -> fc200 -> ReLU -> fc(num_classes)``.
  28x28x1 input: maps 26, 24 -> 12, 10, 8 -> 4, so 4x4x64 = 1024 features and 312,202 parameters.
  Initialisation as the reference: Kaiming-normal (fan-in) convolutions with zero biases, PyTorch
  default fc1/fc2, and the last layer all zeros (so every initial logit is 0).

  Dropout (rate ``dropout_rate``, 0.5 in the reference) sits between fc1 and fc2 and is active only
  with ``train=True``, which then needs ``rngs={"dropout": key}``; ``dropout_rate=0`` removes it.

  Attributes:
    num_classes: number of logits.
    dropout_rate: dropout probability between the first two dense layers, in [0, 1).
    dtype: compute dtype.
    mean, std: optional per-channel input standardisation.
    conv_vjp: how the convolutions are differentiated, ``"custom"`` or ``"jax"`` (see
      :class:`~robust_jax.models.layers.Conv`); the parameters do not depend on it.
  """
  num_classes: int = 10
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None
  conv_vjp: str = "custom"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, H, W, C] in [0, 1]; H - 4 and (H - 4) / 2 - 4 even and positive, same for W.

    28x28 (MNIST) and 32x32 work; 8x8 (the embedded digits) is too small.

    Returns:
      float32 logits [B, num_classes].

    Raises:
      ValueError: if the input is too small for the four VALID convolutions or gives an odd map
        before a pooling.
    """
    _check_images(x, "SmallCNN")
    x = layers.normalize_input(x, self.mean, self.std)
    for i, width in enumerate((32, 32, 64, 64)):
      if min(x.shape[1:3]) < 3:
        raise ValueError(
            f"SmallCNN: a {x.shape[1]}x{x.shape[2]} map is too small for conv{i + 1} (3x3 VALID); "
            "the input needs at least 16x16 pixels")
      x = Conv(width, 3, padding="VALID", kernel_init=layers.kaiming_normal_fan_in(),
               dtype=self.dtype, vjp=self.conv_vjp, name=f"conv{i + 1}")(x)
      # ReLU then pooling, computed as pooling then ReLU (same value and gradient, less work).
      x = layers.relu_max_pool_2x2(x) if i % 2 else nn.relu(x)
    x = _flatten(x)
    x = nn.relu(_torch_dense(200, x, self.dtype, "fc1")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(_torch_dense(200, x, self.dtype, "fc2")(x))
    x = Dense(self.num_classes, kernel_init=nn.initializers.zeros_init(), dtype=self.dtype,
              name="fc3")(x)
    return x.astype(jnp.float32)


class MNISTNet(nn.Module):
  """Wong et al.'s MNIST network (``locuslab/fast_adversarial``, ``MNIST/mnist_net.py``).

  ``conv16(4x4, stride 2, pad 1) -> ReLU -> conv32(4x4, stride 2, pad 1) -> ReLU -> flatten ->
  dense100 -> ReLU -> dense(num_classes)``, with biases, no BatchNorm, no dropout. 28x28x1 input:
  maps 14x14x16, then 7x7x32 = 1568 features, and 166,406 parameters (272 + 8,224 + 156,900 +
  1,010). PyTorch's default initialisation, as the reference (``nn.Conv2d`` / ``nn.Linear``
  defaults: kernels and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))). It is the network of the
  paper's MNIST FGSM and PGD runs ("Fast is better than free", Wong, Rice and Kolter, ICLR 2020;
  ``MNIST/train_mnist.py``), and of the MNIST catastrophic-overfitting recipes
  (``launch/configs/mnist5k.py``). ``train`` is accepted for a uniform interface and ignored.

  Attributes:
    num_classes: number of logits.
    dtype: compute dtype.
    mean, std: optional per-channel input standardisation (the reference has none).
    conv_vjp: how the convolutions are differentiated, ``"custom"`` or ``"jax"`` (see
      :class:`~robust_jax.models.layers.Conv`); the parameters do not depend on it.
  """
  num_classes: int = 10
  dtype: Any = jnp.float32
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None
  conv_vjp: str = "custom"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, H, W, C] in [0, 1] (28x28x1 for MNIST). Returns float32 logits [B, num_classes]."""
    del train
    _check_images(x, "MNISTNet")
    x = layers.normalize_input(x, self.mean, self.std)
    for i, width in enumerate((16, 32)):
      fan_in = 16 * x.shape[-1]  # 4x4 kernel
      x = Conv(width, 4, strides=2, padding=1, kernel_init=layers.torch_default_kernel_init(),
               bias_init=layers.torch_default_bias_init(fan_in), dtype=self.dtype,
               vjp=self.conv_vjp, name=f"conv{i + 1}")(x)
      x = nn.relu(x)
    x = _flatten(x)
    x = nn.relu(_torch_dense(100, x, self.dtype, "fc1")(x))
    x = _torch_dense(self.num_classes, x, self.dtype, "fc2")(x)
    return x.astype(jnp.float32)


def _torch_dense(features: int, x: jax.Array, dtype: Any, name: str) -> nn.Dense:
  """A dense layer with PyTorch's default ``nn.Linear`` initialisation for input x [B, fan_in]."""
  return Dense(features, kernel_init=layers.torch_default_kernel_init(),
               bias_init=layers.torch_default_bias_init(x.shape[-1]), dtype=dtype, name=name)
