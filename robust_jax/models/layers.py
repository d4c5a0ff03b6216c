"""The layer API of the models: a convolution with a CPU-friendly VJP, initialisers, normalisation.

* :class:`Conv`: ``flax.linen.Conv``'s parameters and value, computed by
  :func:`robust_jax.models.kernels.conv2d`, whose custom VJP keeps the attack's ``lax.while_loop``
  as fast as an unrolled loop on CPU (``vjp="jax"`` uses JAX's own rules instead; see
  :mod:`robust_jax.models.kernels` for why and how).
* The PyTorch default initialisers of the reference architectures
  (:func:`torch_default_kernel_init`, :func:`torch_default_bias_init`, Kaiming normal).
* :func:`batch_norm` with PyTorch's defaults, :func:`normalize_input`, :func:`global_avg_pool`.

The pooling kernels the models use (:func:`max_pool_2x2`, :func:`relu_max_pool_2x2`) and the
functional :func:`conv2d` live in :mod:`robust_jax.models.kernels` and are re-exported here.

Example:

>>> import jax, jax.numpy as jnp
>>> x = jnp.ones((2, 8, 8, 4))
>>> conv = Conv(6, 3, padding="VALID")
>>> variables = conv.init(jax.random.key(0), x)
>>> jax.tree.map(jnp.shape, variables["params"])
{'bias': (6,), 'kernel': (3, 3, 4, 6)}
>>> y = conv.apply(variables, x)
>>> y_jax = Conv(6, 3, padding="VALID", vjp="jax").apply(variables, x)
>>> y.shape, bool(jnp.allclose(y, y_jax))
((2, 6, 6, 6), True)
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robust_jax.models import kernels
from robust_jax.models.kernels import (VJPS, PaddingLike, conv2d, max_pool_2x2,
                                       relu_max_pool_2x2)

Initializer = Callable[..., jax.Array]

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
# Convolution.


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
    vjp: how the convolution is differentiated (:func:`robust_jax.models.kernels.conv2d`):
      ``"custom"`` (the default: forward-convolution VJPs, fast inside the attack's while loop on
      CPU) or ``"jax"`` (JAX's own rules: forward mode works, slow inside while loops on CPU). The
      parameters, the value and the gradients do not depend on it (to float rounding).
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
  vjp: str = "custom"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the convolution to x [B, H, W, C_in]; returns [B, H_out, W_out, features]."""
    kh, kw = kernels.to_pair(self.kernel_size, "kernel_size")
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = kernels.conv2d(x, kernel, self.strides, self.padding, vjp=self.vjp)
    if bias is not None:
      y = y + bias
    return y


# --------------------------------------------------------------------------------------------------
# Pooling, normalisation.


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


def remat_block(block_cls, remat: bool):
  """``block_cls`` or, with ``remat``, its ``nn.remat`` (the ``train`` flag, argument 2 of
  ``__call__(self, x, train)``, static): the same parameter names, outputs and gradients; in the
  backward pass the block's activations are recomputed from its input instead of stored."""
  return nn.remat(block_cls, static_argnums=(2,)) if remat else block_cls


__all__ = [
    "Conv", "Dense", "Initializer", "PaddingLike", "VJPS", "batch_norm", "conv2d",
    "global_avg_pool", "kaiming_normal_fan_in", "kaiming_normal_fan_out", "max_pool_2x2",
    "normalize_input", "relu_max_pool_2x2", "remat_block", "torch_default_bias_init",
    "torch_default_kernel_init",
]
