"""Models of the adversarial-training papers, in Flax linen, and a registry of them by name.

Every model maps float NHWC images in [0, 1] ([B, H, W, C]) to float32 logits [B, num_classes] with
``model.apply(variables, x, train=False)``:

* eval mode (``train=False``): BatchNorm uses its running averages; needs no rng and mutates nothing,
  so ``logits_fn = lambda x: model.apply({"params": p, "batch_stats": s}, x)`` is what attacks see.
* train mode (``train=True``): BatchNorm uses batch statistics and updates ``batch_stats`` (apply with
  ``mutable=["batch_stats"]``); models with dropout (``small_cnn``) need ``rngs={"dropout": key}``.

Their convolutions are :class:`robust_jax.models.layers.Conv`, whose custom VJP keeps the attack's
``lax.while_loop`` as fast as an unrolled loop on CPU, and their 2x2 pooling is a reshape and a max.

============================= =============================================== ======= ==========
name                          architecture (reference code)                   input   params*
============================= =============================================== ======= ==========
``mlp``                       MLP 256-256 for the 8x8 embedded digits         8x8x1   85,002
``mlp_sn``                    the same, spectrally normalised (Miyato 2018)   8x8x1   85,002
``cnn4``                      Dynamic AT's MNIST 4-layer CNN (Keras)          28x28x1 421,834
``cnn8``                      Dynamic AT's CIFAR 8-layer CNN (FAT's port)     32x32x3 1,639,282
``small_cnn``                 TRADES' MNIST SmallCNN, dropout 0.5             28x28x1 312,202
``mnist_net``                 Wong et al.'s MNIST network (fast_adversarial)  28x28x1 166,406
``preact_resnet18``           robust_overfitting/AT-AWP/ELLE PreAct ResNet-18 32x32x3 11,172,170
``preact_resnet18_fast``      fast_adversarial's: shortcut sees the raw x     32x32x3 11,172,170
``preact_resnet18_gradalign`` GradAlign's: raw x, no final BN-ReLU, He init   32x32x3 11,171,146
``resnet18``                  kuangliu ResNet-18 (MART, FAT, GAIRAT)          32x32x3 11,173,962
``wrn28_10``                  TRADES/MART WideResNet, depth 28, width 10      32x32x3 36,479,194
``wrn32_10``                  Madry's WRN-32-10 (Dynamic AT, FAT, GAIRAT)     32x32x3 46,160,474
``wrn34_10``                  TRADES/MART/AWP WRN-34-10 (= wrn32_10)          32x32x3 46,160,474
``wrn70_16``                  the same blocks at depth 70, width 16 (memory)  32x32x3 266,796,506
``cifs_cnn4``                 cnn4 with CIFS after both stages (HanshuYAN)    28x28x1 427,998
``cifs_resnet18``             CIFS's ResNet18_L4: CIFS after layer4's blocks  32x32x3 11,246,046
============================= =============================================== ======= ==========

\\* trainable parameters with 10 classes (BatchNorm scale and bias included, running statistics not).
The three PreAct ResNet-18s differ in what the 1x1 projection shortcut sees, the final BN-ReLU
and the initialisation; :mod:`robust_jax.models.resnet` gives the official files and lines.

Model options: the ResNet family (``resnet18``, ``preact_resnet18*``, ``wrn*``) takes
``sgm_gamma`` (the Skip Gradient Method, :mod:`robust_jax.models.sgm`: the backward pass through the
residual branches scaled by gamma, the forward unchanged) and ``remat`` (every residual block
rematerialised in the backward pass with ``nn.remat``: the same logits, gradients and parameters,
less memory, more compute; ``config.remat`` in training, :data:`REMAT_MODELS`); ``cifs_*`` are the
CIFS models (:mod:`robust_jax.models.cifs`). ``wrn70_16`` is the TRADES-style WideResNet at the
size of RobustBench's strongest entries (their WRN-70-16s, Gowal et al. and Rebuffi et al., use
DeepMind's variant with Swish activations, which is not this one); it is here for the memory
benchmark of ``remat``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict

import flax.linen as nn
import jax
import numpy as np

from robust_jax.models import kernels, layers
from robust_jax.models.cifs import CIFSCNN4, CIFSResNet18
from robust_jax.models.cnn import CNN4, CNN8, MLP, MNISTNet, SmallCNN
from robust_jax.models.layers import Conv, conv2d, global_avg_pool, max_pool_2x2
from robust_jax.models.linen_fast import fast, fast_convolutions  # plain nn.Conv models on CPU
from robust_jax.models.resnet import PreActResNet18, ResNet18
from robust_jax.models.spectral_norm import SNMLP
from robust_jax.models.wide_resnet import WideResNet, blocks_per_group

MODELS: Dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "mlp_sn": SNMLP,  # spectrally normalised dense layers (robust_jax.models.spectral_norm)
    "cnn4": CNN4,
    "cnn8": CNN8,
    "small_cnn": SmallCNN,
    "mnist_net": MNISTNet,
    "preact_resnet18": PreActResNet18,
    "preact_resnet18_fast": functools.partial(PreActResNet18, shortcut_input="raw"),
    "preact_resnet18_gradalign": functools.partial(
        PreActResNet18, shortcut_input="raw", final_bn_relu=False, initialization="he_normal"),
    "resnet18": ResNet18,
    "wrn28_10": functools.partial(WideResNet, depth=28, widen_factor=10),
    "wrn32_10": functools.partial(WideResNet, depth=32, widen_factor=10, depth_convention="madry"),
    "wrn34_10": functools.partial(WideResNet, depth=34, widen_factor=10),
    "wrn70_16": functools.partial(WideResNet, depth=70, widen_factor=16),
    "cifs_cnn4": CIFSCNN4,
    "cifs_resnet18": CIFSResNet18,
}


def get_model(name: str, *, num_classes: int = 10, conv_vjp: str = "custom",
              **kwargs: Any) -> nn.Module:
  """Builds the model registered under ``name``.

  Args:
    name: a key of :data:`MODELS`.
    num_classes: number of logits.
    conv_vjp: how the model's convolutions are differentiated: ``"custom"`` (the default, the
      forward-convolution VJPs of :mod:`robust_jax.models.kernels`, fast inside the attack's while
      loop on CPU) or ``"jax"`` (JAX's own rules, what ``launch.benchmark`` compares against).
      The parameter tree, the logits and the gradients do not depend on it (to float rounding).
      Models without convolutions (``mlp``) accept and ignore it.
    **kwargs: further attributes of the model class, e.g. ``dtype=jnp.bfloat16``,
      ``dropout_rate=0.0`` (``small_cnn``), ``mean``/``std``, ``hidden_sizes`` (``mlp``).

  Returns:
    An unbound linen module.

  Raises:
    ValueError: for an unknown name (the message lists the valid ones) or ``conv_vjp``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> model = get_model("small_cnn")
    >>> shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    >>> count_params(shapes)  # nothing materialised
    312202
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
  if conv_vjp != "custom":  # the default is every model's own: nothing to pass
    kwargs["conv_vjp"] = kernels.check_vjp(conv_vjp)
  return MODELS[name](num_classes=num_classes, **kwargs)


# The models whose residual blocks ``remat=True`` rematerialises.
REMAT_MODELS = ("preact_resnet18", "preact_resnet18_fast", "preact_resnet18_gradalign", "resnet18",
                "wrn28_10", "wrn32_10", "wrn34_10", "wrn70_16")


def supports_remat(name: str) -> bool:
  """Whether ``get_model(name, remat=True)`` rematerialises residual blocks."""
  return name in REMAT_MODELS


def count_params(params: Any) -> int:
  """Number of scalars in a parameter pytree (arrays or ``jax.ShapeDtypeStruct``s).

  Given a whole variables dict (with ``"params"`` and ``"batch_stats"``), only ``"params"`` is
  counted: BatchNorm running statistics are not trainable.
  """
  if isinstance(params, dict) or hasattr(params, "keys"):
    if "params" in params:
      params = params["params"]
  return int(sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params)))


__all__ = [
    "MODELS", "REMAT_MODELS", "get_model", "count_params", "supports_remat", "MLP", "CNN4", "CNN8", "SmallCNN", "MNISTNet",
    "PreActResNet18", "ResNet18", "WideResNet", "blocks_per_group", "Conv", "conv2d", "max_pool_2x2",
    "global_avg_pool", "layers",
]
