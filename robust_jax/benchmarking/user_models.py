"""A user's model: TRADES' SmallCNN written with plain ``flax.linen`` layers, for the benchmark rows
of the CPU fast path (:mod:`robust_jax.models.linen_fast`).

The architecture of :class:`robust_jax.models.SmallCNN` (``conv32 -> conv32 -> maxpool2 -> conv64 ->
conv64 -> maxpool2 -> fc200 -> fc200 -> fc10``, 3x3 VALID convolutions, ReLU; no dropout, eval mode)
with ``nn.Conv``, ``nn.max_pool`` and ``nn.Dense`` and flax's default initialisers: what a notebook
user writes, not what the library builds. The ``*_linen`` attack rows attack it as it is, the
``*_linen_fast`` rows through :func:`robust_jax.models.fast`; both beside the library's own
``small_cnn`` rows.
"""

import flax.linen as nn
import jax


class PlainSmallCNN(nn.Module):
  """SmallCNN from plain linen layers: [B, 28, 28, 1] in [0, 1] -> logits [B, num_classes]."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, features in enumerate((32, 32, 64, 64)):
      x = nn.relu(nn.Conv(features, (3, 3), padding="VALID")(x))
      if i % 2:
        x = nn.max_pool(x, (2, 2), (2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(200)(x))
    x = nn.relu(nn.Dense(200)(x))
    return nn.Dense(self.num_classes)(x)
