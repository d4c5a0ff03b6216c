"""The Skip Gradient Method (SGM): residual gradients scaled by gamma in the backward pass only.

Wu, Wang, Xia, Bailey and Ma, "Skip connections matter: on the transferability of adversarial
examples generated with ResNets", ICLR 2020; official code ``csdongxian/skip-connections-matter``
(``utils_sgm.py``: ``backward_hook``, ``register_hook_for_resnet``; ``attack_sgm.py``).

A residual block computes ``z_{i+1} = z_i + f_{i+1}(z_i)`` (identity skip) or ``P(z_i) + f(z_i)``
(projection skip). SGM leaves that forward pass unchanged and multiplies the gradient that flows
back *through the residual branch* f by ``gamma`` (0 < gamma <= 1), so that the input gradient of a
network of identity-skip blocks becomes the slide's product formula

    grad_x loss = d loss / d z_L * prod_i (gamma * d f_{i+1} / d z_i + 1) * d z_0 / d x,

which favours the skip connections; attacks crafted with that gradient on a ResNet surrogate
transfer better to other architectures (the paper's claim, measured on the digits by
:func:`robust_jax.experiments.new_systems.sgm_transfer`).

JAX has no backward hooks: :func:`scale_gradient` is an identity with a custom VJP that scales the
cotangent, and :func:`skip_gradient` applies it to a residual branch. The ResNet-family blocks of
:mod:`robust_jax.models.resnet` and :mod:`robust_jax.models.wide_resnet` take ``sgm_gamma`` (default
1.0: nothing is inserted, the program is the plain one), so ``get_model("resnet18", sgm_gamma=0.2)``
is the SGM surrogate; the parameter tree does not depend on it, so trained weights load into either.

Differences from the official code (which hooks ReLUs, not branches):

* The official code scales the gradient through every ReLU whose module name contains ``relu`` but
  not ``0.relu``: in torchvision's ResNet-18/34 that is the one ReLU inside each residual branch of
  every block *except the first block of each stage* (and, by the string filter, also
  ``layer3.10``/``20``/``30`` of the deep ResNets); ResNet-50+ get sqrt(gamma) on each of two ReLUs.
  Here the branch of *every* block is scaled by gamma, projection blocks included (the paper's
  formula, "the gradient from the residual modules").
* The official post-addition ReLU hooks scale both paths equally and change no attack direction
  under a sign step; they are not reproduced. Its ``backward_hook_norm`` (division by the std at
  each block output) is numerical only and also omitted.

Attack-time only: the surrogate is trained normally (``sgm_gamma=1``), then rebuilt with
``sgm_gamma < 1`` and attacked in eval mode (defaults of the official ``attack_sgm.py``: gamma 0.2
for ResNets, PGD with a sign step, no random start).

The tests (``tests/models/test_sgm.py``) check that logits are identical with and without SGM, that
gamma = 1 gives plain autodiff, that a hand-written residual network's gradient equals the product
formula built from its Jacobians (NumPy, float64), and that a library block's input gradient is
``gamma * (J_block^T v - v) + v`` for an identity-skip block.
"""

from __future__ import annotations

import functools

import jax


def check_gamma(gamma: float) -> float:
  """``gamma`` as a float in [0, 1]; raises ValueError otherwise.

  Example:
    >>> check_gamma(0.2)
    0.2
  """
  g = float(gamma)
  if not 0.0 <= g <= 1.0:
    raise ValueError(f"sgm_gamma must be in [0, 1], got {gamma!r}")
  return g


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def scale_gradient(x: jax.Array, gamma: float) -> jax.Array:
  """The identity in the forward pass; the cotangent is multiplied by ``gamma`` in the backward.

  Args:
    x: any array.
    gamma: a static Python float.

  Returns:
    ``x`` itself (bitwise).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> float(jax.grad(lambda v: scale_gradient(v, 0.25) * 3.0)(jnp.float32(2.0)))
    0.75
  """
  del gamma
  return x


def _scale_fwd(x, gamma):
  del gamma
  return x, None


def _scale_bwd(gamma, _, g):
  return (jax.tree.map(lambda t: t * jax.numpy.asarray(gamma, t.dtype), g),)


scale_gradient.defvjp(_scale_fwd, _scale_bwd)


def skip_gradient(residual: jax.Array, gamma: float) -> jax.Array:
  """SGM on a residual branch: ``residual`` unchanged, its gradient scaled by ``gamma``.

  ``gamma == 1`` returns ``residual`` untouched (no custom VJP in the program), so the default model
  is exactly the plain one.

  Args:
    residual: the output of a residual branch, before it is added to the skip path.
    gamma: in [0, 1] (a Python float: it is static).

  Returns:
    The same values.
  """
  gamma = check_gamma(gamma)
  if gamma == 1.0:
    return residual
  return scale_gradient(residual, gamma)


__all__ = ["check_gamma", "scale_gradient", "skip_gradient"]
