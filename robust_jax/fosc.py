"""First-order stationary condition (FOSC), in closed form.

Wang et al., "On the Convergence and Robustness of Adversarial Training", ICML 2019, eq. (3):

    c(x^k) = max_{x in X} <x - x^k, g>   with X = {x : ||x - x^0|| <= eps},  g = grad_x f(x^k)
           = eps * ||g||_*  -  <x^k - x^0, g>

where ||.||_* is the dual norm: the l1 norm for the linf ball, the l2 norm for the l2 ball. FOSC is
>= 0 whenever x^k lies in the ball around x^0, and 0 exactly when x^k is a first-order stationary
point of the linearised inner maximisation (for linf: every coordinate sits at x^0 + eps * sign(g)).

Conventions (all of robust_jax): images are float32 NHWC in [0, 1]; FOSC is per example.

Paper versus official code: the paper measures from the natural example x^0. The official Keras code
(``YisenWang/dynamic_adv_training``, ``pgd_attack.py``) measures from the point after the random start
while still projecting around x^0, so its FOSC can be negative (||x^k - x_start|| can reach 2 eps).
The attacks offer both through ``fosc_reference="natural"`` (default, the paper) or ``"start"``
(the official code). Like the paper and the code, the closed form ignores the [0, 1] box.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NORMS = ("linf", "l2")


def _flat(a: jax.Array) -> jax.Array:
  return a.reshape(a.shape[0], -1)


def fosc(x_k: jax.Array, x_0: jax.Array, grad: jax.Array, *, eps, norm: str = "linf") -> jax.Array:
  """Closed-form FOSC of Wang et al. (2019), per example.

  Args:
    x_k: the current iterate, shape [B, ...].
    x_0: the centre of the ball (the natural example in the paper), shape [B, ...].
    grad: the gradient of each example's own loss at ``x_k`` (not averaged over the batch),
      shape [B, ...].
    eps: the radius of the ball, a scalar >= 0 (may be traced).
    norm: ``"linf"`` (dual norm l1) or ``"l2"`` (dual norm l2).

  Returns:
    float32 [B]: ``eps * ||g||_* - <x_k - x_0, g>``.

  Raises:
    ValueError: for an unknown ``norm`` or mismatching shapes.

  Example:
    >>> import jax.numpy as jnp
    >>> x0 = jnp.zeros((1, 2)); g = jnp.array([[1., -2.]])
    >>> float(fosc(x0 + jnp.array([[0.1, -0.1]]), x0, g, eps=0.1)[0])  # a vertex: converged
    0.0
  """
  if norm not in NORMS:
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
  if not (x_k.shape == x_0.shape == grad.shape):
    raise ValueError(
        f"x_k, x_0 and grad must have one shape, got {x_k.shape}, {x_0.shape}, {grad.shape}")
  g = _flat(grad)
  if norm == "linf":
    dual = jnp.sum(jnp.abs(g), axis=1)
  else:
    dual = jnp.sqrt(jnp.sum(g * g, axis=1))
  return eps * dual - jnp.sum(_flat(x_k - x_0) * g, axis=1)
