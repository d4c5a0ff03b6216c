"""The Lipschitz constraint on the critic, and how to check it.

Three ways to (pseudo-)enforce ``d`` 1-Lipschitz (lecture 003, "The theory-practice gap"):

* ``"clip"``: project the critic's parameters onto the l_inf ball of radius ``c`` after every critic
  update, ``clip(y, [-c, c])`` (the lecture's eq. 13, Arjovsky et al.'s Algorithm 1, c = 0.01).
  Every parameter is clipped, biases included (``for p in netD.parameters(): p.data.clamp_(-c, c)``).
  The official code clamps *before* each critic step, so its generator sees the last unclamped
  update; here (the lecture's and the paper's order) the clamp follows each update, so the state
  always holds clipped weights.
* ``"gp"``: the gradient penalty in the critic's loss (:func:`robust_jax.games.losses.gradient_penalty`).
* ``"sn"``: spectral normalisation of every critic layer (:mod:`robust_jax.models.spectral_norm`).
* ``"none"``: the vanilla GAN's discriminator.

:func:`empirical_lipschitz` measures what they achieve: the largest ``|d(a) - d(b)| / ||a - b||_2``
over sampled pairs, a lower bound of the true constant.

Example:

>>> import jax.numpy as jnp
>>> clip_weights({"w": jnp.array([-1.0, 0.25, 2.0])}, 0.5)["w"].tolist()
[-0.5, 0.25, 0.5]
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

CONSTRAINTS = ("none", "clip", "gp", "sn")


def clip_weights(params: Any, c: float) -> Any:
  """Every leaf of ``params`` clipped to ``[-c, c]`` (WGAN's projection onto the l_inf ball).

  Raises:
    ValueError: if ``c`` is not positive.
  """
  if not c > 0:
    raise ValueError(f"the clipping radius must be > 0, got {c}")
  return jax.tree.map(lambda p: jnp.clip(p, -c, c), params)


def empirical_lipschitz(critic_fn: Callable[[jax.Array], jax.Array], a: jax.Array,
                        b: jax.Array) -> jax.Array:
  """``max_i |d(a_i) - d(b_i)| / ||a_i - b_i||_2`` over the pairs ``(a_i, b_i)``.

  Args:
    critic_fn: ``x [B, ...] -> scores [B]``.
    a, b: the pairs, [B, ...] each, with ``a_i != b_i``.

  Returns:
    A float32 scalar, a lower bound of the critic's l2 Lipschitz constant.
  """
  dist = jnp.sqrt(jnp.sum(((a - b) ** 2).reshape(a.shape[0], -1), axis=1))
  return jnp.max(jnp.abs(critic_fn(a) - critic_fn(b)) / dist)


__all__ = ["CONSTRAINTS", "clip_weights", "empirical_lipschitz"]
