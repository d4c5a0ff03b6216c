"""FOSC's closed form against independent computations (jax.grad + brute force / a generic solver)."""

import itertools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from robust_jax import fosc as fosc_lib


def _loss(x):
  # A smooth, non-linear per-example loss of a 4-dimensional input.
  w = jnp.array([[1.0, -2.0, 0.5, 3.0], [0.3, 0.7, -1.1, 0.2]])
  return jnp.sum(jnp.tanh(x @ w.T) ** 2, axis=-1) + jnp.sum(jnp.sin(3 * x), axis=-1)


def _grad(x):
  return jax.grad(lambda xx: jnp.sum(_loss(xx)))(x)


def _brute_force_linf(xk, x0, g, eps):
  # max over the box of a linear function is attained at one of its 2^d vertices.
  best = -np.inf
  for signs in itertools.product([-1.0, 1.0], repeat=xk.size):
    x = x0 + eps * np.array(signs)
    best = max(best, float(np.dot(x - xk, g)))
  return best


def _solver(xk, x0, g, eps, norm):
  # A generic constrained solver, independent of the closed form.
  cons = ({"type": "ineq", "fun": lambda x: eps**2 - np.sum((x - x0) ** 2)},) if norm == "l2" else ()
  bounds = [(a - eps, a + eps) for a in x0] if norm == "linf" else None
  res = scipy.optimize.minimize(lambda x: -np.dot(x - xk, g), x0, jac=lambda x: -g,
                                bounds=bounds, constraints=cons, method="SLSQP",
                                options={"ftol": 1e-12, "maxiter": 500})
  return -res.fun


@pytest.mark.parametrize("seed", range(5))
def test_linf_matches_brute_force_over_vertices(seed):
  rng = np.random.default_rng(seed)
  eps = 0.3
  x0 = rng.uniform(0, 1, (1, 4)).astype(np.float32)
  xk = (x0 + rng.uniform(-eps, eps, x0.shape)).astype(np.float32)
  g = np.asarray(_grad(jnp.asarray(xk)))
  got = float(fosc_lib.fosc(jnp.asarray(xk), jnp.asarray(x0), jnp.asarray(g), eps=eps)[0])
  want = _brute_force_linf(xk[0].astype(np.float64), x0[0].astype(np.float64),
                           g[0].astype(np.float64), eps)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("seed", range(3))
def test_matches_generic_solver(norm, seed):
  rng = np.random.default_rng(100 + seed)
  eps = 0.25
  x0 = rng.uniform(0, 1, (1, 4))
  d = rng.normal(size=x0.shape)
  d *= eps * rng.uniform() / (np.abs(d).max() if norm == "linf" else np.linalg.norm(d))
  xk = x0 + d
  g = np.asarray(_grad(jnp.asarray(xk, jnp.float32)), np.float64)
  got = float(fosc_lib.fosc(jnp.asarray(xk, jnp.float32), jnp.asarray(x0, jnp.float32),
                            jnp.asarray(g, jnp.float32), eps=eps, norm=norm)[0])
  np.testing.assert_allclose(got, _solver(xk[0], x0[0], g[0], eps, norm), rtol=1e-4, atol=1e-5)


class ClosedFormVariantsTest(chex.TestCase):
  """Properties of the closed form that hold called directly and inside ``jax.jit`` (eps
  traced), as the attacks call it."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_zero_at_the_linear_optimum_vertex(self):
    fosc = self.variant(fosc_lib.fosc, static_argnames="norm")
    rng = np.random.default_rng(0)
    eps = 0.1
    x0 = jnp.asarray(rng.uniform(0.2, 0.8, (8, 3, 3, 2)), jnp.float32)
    g = jnp.asarray(rng.normal(size=x0.shape), jnp.float32)
    vertex = x0 + eps * jnp.sign(g)
    np.testing.assert_allclose(fosc(vertex, x0, g, eps=eps), 0.0, atol=1e-5)
    l2_opt = x0 + eps * g / jnp.linalg.norm(g.reshape(8, -1), axis=1).reshape(8, 1, 1, 1)
    np.testing.assert_allclose(fosc(l2_opt, x0, g, eps=eps, norm="l2"), 0.0, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("linf", "l2")
  def test_nonnegative_inside_the_ball(self, norm):
    fosc = self.variant(fosc_lib.fosc, static_argnames="norm")
    rng = np.random.default_rng(1)
    eps = 0.2
    x0 = rng.uniform(0, 1, (256, 6))
    d = rng.normal(size=x0.shape)
    scale = np.abs(d).max(1, keepdims=True) if norm == "linf" else np.linalg.norm(d, axis=1,
                                                                                     keepdims=True)
    xk = x0 + d / scale * eps * rng.uniform(size=(256, 1))
    g = np.asarray(_grad(jnp.asarray(xk[:, :4], jnp.float32)))
    g = np.concatenate([g, rng.normal(size=(256, 2))], axis=1)
    f = fosc(jnp.asarray(xk, jnp.float32), jnp.asarray(x0, jnp.float32),
             jnp.asarray(g, jnp.float32), eps=eps, norm=norm)
    assert float(f.min()) >= -1e-5


def test_per_example_and_linear_in_gradient_scale():
  rng = np.random.default_rng(2)
  x0 = jnp.asarray(rng.uniform(size=(4, 5)), jnp.float32)
  xk = x0 + 0.05
  g = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  f = fosc_lib.fosc(xk, x0, g, eps=0.1)
  # Each example depends only on its own row; a gradient averaged over a batch of 4 would scale
  # FOSC by 1/4, which is why attacks differentiate the sum of per-example losses.
  for i in range(4):
    np.testing.assert_allclose(fosc_lib.fosc(xk[i:i + 1], x0[i:i + 1], g[i:i + 1], eps=0.1)[0],
                               f[i], rtol=1e-6)
  np.testing.assert_allclose(fosc_lib.fosc(xk, x0, g / 4, eps=0.1), f / 4, rtol=1e-5)


def test_bad_arguments():
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="norm"):
    fosc_lib.fosc(x, x, x, eps=0.1, norm="l1")
  with pytest.raises(ValueError, match="shape"):
    fosc_lib.fosc(x, x, jnp.zeros((2, 4)), eps=0.1)
