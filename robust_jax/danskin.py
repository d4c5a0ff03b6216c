"""Danskin's descent direction: the minimum-norm element of the convex hull of K gradients.

For the robust loss phi(w) = max_delta L(w, delta), Danskin's theorem gives the directional
derivative phi'(w; d) = max over the maximisers delta* of <grad_w L(w, delta*), d>. The gradient at
one maximiser is therefore not always a descent direction (the lecture's counter-example to Madry
et al.'s Corollary C.2); minus the minimum-norm element of the convex hull of the gradients at the
maximisers is, whenever it is non-zero. With K gradients g_1 .. g_K (a pytree whose leaves have a
leading axis of K) and their Gram matrix G_kl = <g_k, g_l>, that element is

    d = sum_k y_k g_k,    y = argmin_{y in simplex_K} y^T G y,

and it satisfies <d, g_k> >= ||d||^2 for every k (the optimality condition of the QP), so
<-d, g_k> <= -||d||^2 < 0: -d decreases every maximiser's loss to first order.

The QP is solved inside the compiled step by accelerated projected gradient on the simplex, as the
official JAX solver (LIONS-EPFL/ddi_at @87353fb, ``acat/jax_descentdir.py``, ``SimplexMinJax``):
y_0 = 1/K, step 1 / ||G||_2, extrapolation k / (k + 3), a sort-based Euclidean projection onto the
simplex and a fixed number of iterations (1000 in ``acat/jax_danskinattack.py``, ``solve_QP``), no
stopping test, in a ``lax.fori_loop``. The gradient of y^T G y is 2 G y; the official code steps
along G y with step 1 / ||G||_2 (half the gradient with twice the safe step 1 / (2 ||G||_2)), the
same iteration, kept here.

References:
  Latorre, Krawczuk, Dadi, Pethick, Cevher. Finding actual descent directions for adversarial
  training. ICLR 2023 (OpenReview I3HCE7Ro78H). Official code: https://github.com/LIONS-EPFL/ddi_at
  (``acat/jax_danskinattack.py``: ``gram``, ``solve_QP``, ``get_descent_direction``).
  Danskin. The theory of max-min, with applications. SIAM J. Appl. Math. 14(4), 1966.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

QP_ITERATIONS = 1000  # acat/jax_danskinattack.py, SimplexMinJax(..., maxiter=1000)


def project_to_simplex(v: jax.Array) -> jax.Array:
  """The Euclidean projection of ``v`` (float [K]) onto the probability simplex.

  The sort-based algorithm (Held, Wolfe and Crowder 1974; Duchi et al. 2008): with u = v sorted in
  decreasing order and c_j = (sum_{i<=j} u_i - 1) / j, theta = c_rho for the largest rho with
  u_rho > c_rho, and the projection is max(v - theta, 0).

  Example:
    >>> import jax.numpy as jnp
    >>> project_to_simplex(jnp.array([0.5, 0.5, 3.0])).tolist()
    [0.0, 0.0, 1.0]
  """
  u = jnp.sort(v)[::-1]
  k = jnp.arange(1, v.shape[0] + 1, dtype=v.dtype)
  c = (jnp.cumsum(u) - 1.0) / k
  rho = jnp.sum(u > c) - 1  # u_j > c_j holds exactly for j <= rho
  return jnp.maximum(v - c[rho], 0.0)


def gram(grads: Any) -> jax.Array:
  """G_kl = <g_k, g_l> summed over the leaves of ``grads`` (each leaf [K, ...]); float32 [K, K]."""
  leaves = jax.tree.leaves(grads)
  k = leaves[0].shape[0]
  flat = [leaf.reshape(k, -1).astype(jnp.float32) for leaf in leaves]
  return sum(f @ f.T for f in flat)


@functools.partial(jax.jit, static_argnames=("iterations",))
def min_norm_weights(g: jax.Array, *, iterations: int = QP_ITERATIONS) -> jax.Array:
  """argmin over the simplex of y^T G y, by the official accelerated projected gradient.

  Args:
    g: float [K, K], a Gram matrix (symmetric positive semi-definite).
    iterations: the fixed number of iterations (official 1000), an integer >= 1.

  Returns:
    float32 [K] on the simplex. For G = 0 (every gradient zero) the uniform weights.

  Example:
    >>> import jax.numpy as jnp
    >>> g = jnp.array([[1.0, -1.0], [-1.0, 2.0]])  # gradients (1, 0) and (-1, 1)
    >>> [round(float(t), 4) for t in min_norm_weights(g)]  # closed form 3/5, 2/5
    [0.6, 0.4]
  """
  g = jnp.asarray(g, jnp.float32)
  k = g.shape[0]
  norm = jnp.linalg.norm(g, ord=2)
  step = jnp.where(norm > 0, 1.0 / jnp.where(norm > 0, norm, 1.0), 0.0)
  y0 = jnp.full((k,), 1.0 / k, jnp.float32)

  def body(i, carry):
    y, y_prev = carry
    extra = y + (i / (i + 3.0)) * (y - y_prev)
    return project_to_simplex(extra - step * (g @ extra)), y

  return jax.lax.fori_loop(0, iterations, body, (y0, y0))[0]


def combine(weights: jax.Array, grads: Any) -> Any:
  """sum_k weights_k g_k for a pytree whose leaves are [K, ...] (the leaves' dtypes kept)."""
  return jax.tree.map(lambda a: jnp.tensordot(weights.astype(a.dtype), a, axes=1), grads)


def two_point_weights(g: jax.Array) -> jax.Array:
  """The closed form for K = 2: y_1 = clip(<g_2 - g_1, g_2> / ||g_1 - g_2||^2, 0, 1) (a test
  oracle for :func:`min_norm_weights`); G given as [2, 2]."""
  den = g[0, 0] - 2 * g[0, 1] + g[1, 1]
  t = jnp.where(den > 0, (g[1, 1] - g[0, 1]) / jnp.where(den > 0, den, 1.0), 0.5)
  t = jnp.clip(t, 0.0, 1.0)
  return jnp.stack([t, 1.0 - t])
