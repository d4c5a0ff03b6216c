"""Top Hessian eigenvalues of a loss with respect to the weights: power iteration with deflation.

Liu et al. (2020) measure the sharpness of the adversarial loss by the top eigenvalues of its
Hessian with respect to all parameters (their Figure 4: they grow with eps). Their
``util/hessian.py``:

* adversarial examples are generated **once** for the trained model (eval mode) and held fixed
  (:func:`robust_jax.analysis.adversarial.fixed_examples_loss_fn` builds that loss);
* power iteration on Hv, with the eigenvectors already found projected out
  (``Hv -= lambda_i <u_i, v> u_i``); the estimate is ``v^T H v`` and ``v <- Hv / ||Hv||``;
* it stops when the relative change of the estimate is below ``tol`` (1e-3) or after ``max_iters``
  (50) iterations.

Here Hessian-vector products are reverse-over-reverse, ``grad(w -> <grad f(w), v>)``, about two
gradients' cost each. (Forward-over-reverse would be cheaper, but the models' convolutions are
``custom_vjp`` functions, which forward mode cannot differentiate; see
:mod:`robust_jax.models.layers`.) The parameters are raveled into one vector
(``jax.flatten_util.ravel_pytree``) and each eigenpair is one compiled ``lax.while_loop``; the k
eigenpairs share one compilation.

Power iteration converges to the eigenvalue of largest *magnitude* of the deflated operator, so
"top-k" means the k largest in absolute value (at a trained model the large ones are positive).
Convergence is geometric in |lambda_{i+1} / lambda_i|; the Rayleigh quotient converges twice as
fast.

Reference:
  Liu et al., "On the Loss Landscape of Adversarial Training: Identifying Challenges and How to
  Overcome Them", NeurIPS 2020, Section 4 and Figure 4; code ``liuchen11/AdversaryLossLandscape``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

PyTree = Any


class HessianEigen(NamedTuple):
  """Top-k eigenpairs of a Hessian.

  Attributes:
    eigenvalues: float32 [k], in the order found (decreasing magnitude).
    eigenvectors: a pytree shaped like the parameters with a leading axis k; each is unit-norm over
      all leaves together.
    num_iters: int32 [k], power iterations each eigenpair took.
  """
  eigenvalues: jax.Array
  eigenvectors: PyTree
  num_iters: jax.Array


def hvp(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree) -> PyTree:
  """Hessian-vector product ``H(params) v`` of a scalar ``loss_fn``, reverse-over-reverse.

  Args:
    loss_fn: scalar function of a parameter pytree, twice differentiable.
    params: where the Hessian is taken.
    v: a pytree shaped like ``params``.

  Returns:
    ``H v``, shaped like ``params``.

  Example:
    >>> import jax.numpy as jnp
    >>> a = jnp.array([[2., 1.], [1., 3.]])
    >>> hvp(lambda x: 0.5 * x @ a @ x, jnp.zeros(2), jnp.array([1., 0.])).tolist()
    [2.0, 1.0]
  """
  return jax.grad(lambda p: optax.tree.vdot(jax.grad(loss_fn)(p), v))(params)


def top_hessian_eigenpairs(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    k: int = 1,
    key: jax.Array,
    max_iters: int = 50,
    tol: float = 1e-3,
) -> HessianEigen:
  """The k eigenpairs of ``Hessian(loss_fn)(params)`` of largest magnitude (power iteration).

  Args:
    loss_fn: scalar, twice-differentiable function of a parameter pytree, e.g. the adversarial loss
      on fixed adversarial examples
      (:func:`robust_jax.analysis.adversarial.fixed_examples_loss_fn`).
    params: the weights at which the Hessian is taken.
    k: number of eigenpairs, >= 1 (Liu et al.'s README uses 20).
    key: PRNG key of the random starting vectors (eigenpair i starts from ``fold_in(key, i)``).
    max_iters: iteration cap per eigenpair (Liu et al.: 50).
    tol: stop when ``|lambda_t - lambda_{t-1}| <= tol * |lambda_{t-1}|`` (Liu et al.: 1e-3).

  Returns:
    A :class:`HessianEigen`.

  Raises:
    ValueError: if ``k`` exceeds the number of parameters or is < 1.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda p: 0.5 * (3.0 * p["a"][0] ** 2 + p["a"][1] ** 2 + 2.0 * p["b"] ** 2)
    >>> r = top_hessian_eigenpairs(f, {"a": jnp.zeros(2), "b": jnp.zeros(())}, k=2,
    ...                            key=jax.random.key(0), max_iters=200, tol=1e-7)
    >>> [round(float(e), 3) for e in r.eigenvalues]
    [3.0, 2.0]
  """
  flat, unravel = ravel_pytree(params)
  n = flat.shape[0]
  if not 1 <= k <= n:
    raise ValueError(f"k must be in [1, {n}] (the number of parameters), got {k}")
  f = lambda x: loss_fn(unravel(x))

  @jax.jit
  def eigenpair(flat, basis, values, v0):
    def deflated_hv(v):
      hv = jax.grad(lambda w: jnp.vdot(jax.grad(f)(w), v))(flat)
      return hv - basis.T @ (values * (basis @ v))

    def cond(c):
      _, lam, prev, it = c
      return (it < max_iters) & ((it < 2) | (jnp.abs(lam - prev) > tol * jnp.abs(prev)))

    def body(c):
      v, lam, _, it = c
      hv = deflated_hv(v)
      new_lam = jnp.vdot(v, hv)
      v_new = hv / jnp.maximum(jnp.linalg.norm(hv), 1e-30)
      return v_new, new_lam, lam, it + 1

    v0 = v0 / jnp.linalg.norm(v0)
    nan = jnp.asarray(jnp.nan, flat.dtype)
    v, lam, _, it = jax.lax.while_loop(cond, body, (v0, nan, nan, jnp.asarray(0, jnp.int32)))
    return v, lam, it

  basis = jnp.zeros((k, n), flat.dtype)
  values = jnp.zeros((k,), flat.dtype)
  iters = []
  for i in range(k):
    v0 = jax.random.normal(jax.random.fold_in(key, i), (n,), flat.dtype)
    v, lam, it = eigenpair(flat, basis, values, v0)
    basis = basis.at[i].set(v)
    values = values.at[i].set(lam)
    iters.append(it)
  return HessianEigen(eigenvalues=values, eigenvectors=jax.vmap(unravel)(basis),
                      num_iters=jnp.stack(iters))


def eigenvector(result: HessianEigen, i: int = 0) -> PyTree:
  """The i-th eigenvector of a :class:`HessianEigen` as a parameter pytree."""
  return jax.tree.map(lambda leaf: leaf[i], result.eigenvectors)
