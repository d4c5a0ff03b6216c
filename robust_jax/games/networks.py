"""DCGAN-style generator and critic for small greyscale images (28x28 MNIST-5k, 8x8 digits).

The pair of Gulrajani et al.'s ``gan_mnist.py`` (``DIM = 64``), generalised to the image size:

* :class:`Generator`: ``z ~ N(0, I)`` [B, latent_dim] -> ``Dense(s0 * s0 * 4 dim)`` -> ReLU ->
  reshape [B, s0, s0, 4 dim] -> (``ConvTranspose 5x5 stride 2`` -> crop to the next size -> ReLU)
  per stage, widths ``2 dim, dim, ...`` -> the last transposed convolution to ``C`` channels ->
  sigmoid, images in [0, 1]. 28x28 has three stages, 4 -> 8 (cropped to 7) -> 14 -> 28, exactly
  ``gan_mnist.py``'s; 8x8 has two, 2 -> 4 -> 8. Optional BatchNorm after every hidden layer
  (DCGAN, WGAN's ``DCGAN_G``; ``gan_mnist.py`` has none in its WGAN-GP generator).
* :class:`Critic`: ``Conv 5x5 stride 2`` with ``dim, 2 dim, 4 dim`` channels (28x28: 14 -> 7 -> 4;
  8x8: two stages, 4 -> 2), LeakyReLU 0.2 after each, flatten, ``Dense(1)``: one real score per
  image (a logit for the vanilla GAN, the dual variable ``d`` for the Wasserstein GANs). With
  ``spectral_norm=True`` every layer is spectrally normalised
  (:mod:`robust_jax.models.spectral_norm`, power-iteration vector in ``batch_stats``, updated in
  train mode only). The critic has no BatchNorm: it would couple the examples of a batch, and the
  gradient penalty is a per-example quantity (Gulrajani et al., Section 4); WGAN's ``DCGAN_D`` has
  BatchNorm, which this critic omits for every kind.

Both take ``train`` like the library's classifiers (``apply(..., train=True,
mutable=["batch_stats"])``) and use the library's convolution
(:class:`robust_jax.models.layers.Conv`: its VJP stays fast inside the critic's ``fori_loop`` on CPU
and is twice differentiable, which the gradient penalty needs).

References:
  Radford, Metz, Chintala. Unsupervised Representation Learning with Deep Convolutional GANs.
  ICLR 2016. Gulrajani et al. Improved Training of Wasserstein GANs, NeurIPS 2017
  (``igul222/improved_wgan_training`` ``gan_mnist.py``).

Example:

>>> import jax, jax.numpy as jnp
>>> g, d = Generator(image_shape=(8, 8, 1), dim=8), Critic(dim=8)
>>> z = jnp.zeros((2, g.latent_dim))
>>> gv = g.init(jax.random.key(0), z)
>>> x = g.apply(gv, z)
>>> x.shape, d.apply(d.init(jax.random.key(1), x), x).shape
((2, 8, 8, 1), (2,))
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from robust_jax.models import layers
from robust_jax.models.spectral_norm import SNConv, SNDense

KERNEL = 5
LEAK = 0.2


def num_stages(size: int) -> int:
  """Stride-2 stages for an image side: 3 for sides above 16 (28x28), else 2 (8x8)."""
  if size < 4:
    raise ValueError(f"images must be at least 4x4, got side {size}")
  return 3 if size > 16 else 2


def stage_sizes(size: int) -> Tuple[int, ...]:
  """Spatial sides from the generator's first map to the image: ``(4, 7, 14, 28)``, ``(2, 4, 8)``."""
  sizes = [size]
  for _ in range(num_stages(size)):
    sizes.append(-(-sizes[-1] // 2))
  return tuple(reversed(sizes))


class Generator(nn.Module):
  """Noise [B, latent_dim] -> images [B, H, W, C] in [0, 1] (see the module docstring).

  Attributes:
    image_shape: (H, W, C) with H == W.
    latent_dim: the noise dimension (``gan_mnist.py``: 128).
    dim: the base width (``gan_mnist.py``: 64); the first map has 4 dim channels.
    batch_norm: BatchNorm after the dense layer and every hidden transposed convolution.
  """
  image_shape: Sequence[int] = (28, 28, 1)
  latent_dim: int = 128
  dim: int = 64
  batch_norm: bool = False

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    """z: float32 [B, latent_dim]. Returns float32 images [B, H, W, C] in [0, 1]."""
    h, w, c = self.image_shape
    if h != w:
      raise ValueError(f"Generator needs square images, got {tuple(self.image_shape)}")
    sizes = stage_sizes(h)
    n = len(sizes) - 1

    def act(x, name):
      if self.batch_norm:
        x = layers.batch_norm(train, name=name)(x)
      return nn.relu(x)

    x = nn.Dense(sizes[0] * sizes[0] * 4 * self.dim, name="fc")(z)
    x = act(x.reshape(z.shape[0], sizes[0], sizes[0], 4 * self.dim), "bn0")
    for i, side in enumerate(sizes[1:]):
      last = i == n - 1
      width = c if last else self.dim * 2 ** (n - 2 - i)
      x = nn.ConvTranspose(width, (KERNEL, KERNEL), strides=(2, 2), padding="SAME",
                           name=f"deconv{i + 1}")(x)[:, :side, :side]
      x = nn.sigmoid(x) if last else act(x, f"bn{i + 1}")
    return x


class Critic(nn.Module):
  """Images [B, H, W, C] -> one real score per image [B] (see the module docstring).

  Attributes:
    dim: the base width (``gan_mnist.py``: 64).
    spectral_norm: spectrally normalise every layer (SN-GAN).
    vjp: the convolutions' VJP, ``"custom"`` or ``"jax"``.
  """
  dim: int = 64
  spectral_norm: bool = False
  vjp: str = "custom"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: float32 [B, H, W, C]. ``train`` takes the spectral-norm power step. Returns [B]."""
    for i in range(num_stages(x.shape[1])):
      width = self.dim * 2 ** i
      if self.spectral_norm:
        x = SNConv(width, KERNEL, strides=2, padding="SAME", vjp=self.vjp,
                   name=f"conv{i + 1}")(x, update_stats=train)
      else:
        x = layers.Conv(width, KERNEL, strides=2, padding="SAME", vjp=self.vjp,
                        name=f"conv{i + 1}")(x)
      x = nn.leaky_relu(x, LEAK)
    x = x.reshape(x.shape[0], -1)
    if self.spectral_norm:
      x = SNDense(1, name="fc")(x, update_stats=train)
    else:
      x = nn.Dense(1, name="fc")(x)
    return x[:, 0].astype(jnp.float32)


def build(config: Any, image_shape: Sequence[int]) -> Tuple[Generator, Critic]:
  """The generator and critic of a GAN config (``latent_dim``, ``dim``, ``generator_batch_norm``,
  ``constraint``: ``"sn"`` gives the spectrally normalised critic)."""
  generator = Generator(image_shape=tuple(image_shape), latent_dim=config.latent_dim,
                        dim=config.dim, batch_norm=config.generator_batch_norm)
  critic = Critic(dim=config.dim, spectral_norm=config.constraint == "sn")
  return generator, critic
