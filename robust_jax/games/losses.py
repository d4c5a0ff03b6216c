"""The GAN objectives as pure functions of critic scores, and the gradient penalty.

Every loss is *minimised* by the player it belongs to. ``real`` and ``fake`` are the critic's scores
[B] on real and generated images: logits for the vanilla GAN (``D = sigmoid(score)``), the dual
variable ``d`` for the Wasserstein GANs.

============================== ======================================================= ============
name                           loss                                                    player
============================== ======================================================= ============
``vanilla`` (critic)           ``-E log D(x) - E log(1 - D(G(z)))`` (BCE real/1, fake/0) critic
``minimax`` (generator)        ``E log(1 - D(G(z)))`` = ``-E softplus(fake)``          generator
``non_saturating`` (generator) ``-E log D(G(z))`` = ``E softplus(-fake)``              generator
``wasserstein`` (critic)       ``E d(G(z)) - E d(x)`` (maximises the dual of W1)       critic
``wasserstein`` (generator)    ``-E d(G(z))``                                          generator
``hinge`` (critic)             ``E relu(1 - d(x)) + E relu(1 + d(G(z)))``              critic
``hinge`` (generator)          ``-E d(G(z))``                                          generator
============================== ======================================================= ============

The vanilla pair is Goodfellow et al.'s value function ``E log D(x) + E log(1 - D(G(z)))``
(the lecture's eq. 15; at the optimal D it is ``2 JSD - log 4``); the minimax generator loss
saturates when D rejects the samples, the non-saturating one (the paper's Section 3 remark) does not.
The Wasserstein pair is the lecture's eq. 12 (Arjovsky et al.): ``E d(x) - E d(G(z))`` over a
1-Lipschitz ``d`` is a lower bound of W1, and the critic loss is its negative. The hinge pair is what
the SN-GAN code trains with (``sngan_projection``, Miyato et al. 2018).

:func:`gradient_penalty` is Gulrajani et al.'s ``lambda E (||grad_x d(x_hat)||_2 - 1)^2`` on
interpolates ``x_hat = x + u (x_fake - x)``, ``u ~ U(0, 1)`` per example (the lecture's eq. 14).

References:
  Goodfellow et al. Generative Adversarial Nets. NeurIPS 2014, eq. 1 and Section 3.
  Arjovsky, Chintala, Bottou. Wasserstein GAN. ICML 2017, eq. 3 and Algorithm 1.
  Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville. Improved Training of Wasserstein GANs.
  NeurIPS 2017, eq. 3 and Algorithm 1.
  Miyato, Kataoka, Koyama, Yoshida. Spectral Normalization for GANs. ICLR 2018.

Example:

>>> import jax.numpy as jnp
>>> real, fake = jnp.array([2.0, 1.0]), jnp.array([-1.0, 0.0])
>>> float(wasserstein_critic_loss(real, fake))
-2.0
>>> float(CRITIC_LOSSES["hinge"](real, fake))
0.5
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


def vanilla_critic_loss(real: jax.Array, fake: jax.Array) -> jax.Array:
  """``-E log sigmoid(real) - E log(1 - sigmoid(fake))``: BCE of real with 1 and fake with 0."""
  return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))


def minimax_generator_loss(fake: jax.Array) -> jax.Array:
  """``E log(1 - sigmoid(fake))``, the generator's side of the original minimax game."""
  return -jnp.mean(jax.nn.softplus(fake))


def non_saturating_generator_loss(fake: jax.Array) -> jax.Array:
  """``-E log sigmoid(fake)``: BCE of fake with label 1 (Goodfellow et al.'s practical choice)."""
  return jnp.mean(jax.nn.softplus(-fake))


def wasserstein_critic_loss(real: jax.Array, fake: jax.Array) -> jax.Array:
  """``E d(fake) - E d(real)``: minimising it maximises the Kantorovich-Rubinstein dual."""
  return jnp.mean(fake) - jnp.mean(real)


def wasserstein_generator_loss(fake: jax.Array) -> jax.Array:
  """``-E d(fake)``: the generator lowers the critic's estimate of W1."""
  return -jnp.mean(fake)


def hinge_critic_loss(real: jax.Array, fake: jax.Array) -> jax.Array:
  """``E relu(1 - d(real)) + E relu(1 + d(fake))`` (SN-GAN's code)."""
  return jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))


def wasserstein_estimate(real: jax.Array, fake: jax.Array) -> jax.Array:
  """``E d(real) - E d(fake)``: the critic's estimate of W1 (a lower bound if d is 1-Lipschitz)."""
  return jnp.mean(real) - jnp.mean(fake)


CRITIC_LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "vanilla": vanilla_critic_loss,
    "wasserstein": wasserstein_critic_loss,
    "hinge": hinge_critic_loss,
}
GENERATOR_LOSSES: dict[str, Callable[[jax.Array], jax.Array]] = {
    "minimax": minimax_generator_loss,
    "non_saturating": non_saturating_generator_loss,
    "wasserstein": wasserstein_generator_loss,
    "hinge": wasserstein_generator_loss,
}


class Penalty(NamedTuple):
  """What :func:`gradient_penalty` returns.

  Attributes:
    value: ``mean((||g_i|| - target)^2)``, a scalar (not yet multiplied by lambda).
    grad_norms: ``||g_i||_2`` per example, [B].
  """
  value: jax.Array
  grad_norms: jax.Array


def interpolates(key: jax.Array, real: jax.Array, fake: jax.Array) -> jax.Array:
  """``x + u (x_fake - x)`` with ``u ~ U(0, 1)`` drawn once per example, same shape as ``real``."""
  u = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
  return real + u * (fake - real)


def input_gradients(critic_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  """``grad_x d(x_i)`` for every example: the gradient of ``sum_i d(x_i)``, exact when the critic
  treats examples independently (no BatchNorm), [B, ...]."""
  return jax.grad(lambda xx: jnp.sum(critic_fn(xx)))(x)


def gradient_penalty(critic_fn: Callable[[jax.Array], jax.Array], x_hat: jax.Array, *,
                     target: float = 1.0) -> Penalty:
  """Gulrajani et al.'s two-sided penalty ``E (||grad_x d(x_hat)||_2 - target)^2``.

  Differentiable in the critic's parameters (double backpropagation) when ``critic_fn`` closes over
  them inside ``jax.grad``.

  Args:
    critic_fn: ``x [B, ...] -> scores [B]``, per-example (no batch coupling).
    x_hat: the points where the gradient is taken, [B, ...] (:func:`interpolates`).
    target: the gradient norm aimed at (1 for a 1-Lipschitz critic).

  Returns:
    A :class:`Penalty` (``value`` scalar, ``grad_norms`` [B]). The tests check ``value`` against
    the formula with central finite differences of a float64 reference critic.
  """
  g = input_gradients(critic_fn, x_hat).reshape(x_hat.shape[0], -1)
  # sqrt with a floor inside: the norm's gradient stays finite at g = 0 (the official TF code has
  # no floor; the difference is below 1e-6 for ||g|| above 1e-3).
  norms = jnp.sqrt(jnp.sum(g * g, axis=1) + 1e-12)
  return Penalty(value=jnp.mean((norms - target) ** 2), grad_norms=norms)


__all__ = [
    "CRITIC_LOSSES", "GENERATOR_LOSSES", "Penalty", "gradient_penalty", "hinge_critic_loss",
    "input_gradients", "interpolates", "minimax_generator_loss", "non_saturating_generator_loss",
    "vanilla_critic_loss", "wasserstein_critic_loss", "wasserstein_estimate",
    "wasserstein_generator_loss",
]
