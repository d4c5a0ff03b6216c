"""SAMMD (Gao et al. 2021): the MMD^2_u estimator against a direct double loop, the kernel against its
formula, the permutation test's level on two clean samples, its power on shifted samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.analysis import sammd


def _np_kernel(fa, fb, xa, xb, sigma_phi, sigma_q, eps):
  k = np.zeros((len(fa), len(fb)))
  for i in range(len(fa)):
    for j in range(len(fb)):
      dphi = np.sum((fa[i] - fb[j]) ** 2)
      dq = np.sum((xa[i] - xb[j]) ** 2)
      k[i, j] = (1 - eps) * np.exp(-dphi / sigma_phi - dq / sigma_q) + eps * np.exp(-dq / sigma_q)
  return k


def _np_mmd2_u(kxx, kyy, kxy):
  n = kxx.shape[0]
  total = 0.0
  for i in range(n):
    for j in range(n):
      if i != j:
        total += kxx[i, j] + kyy[i, j] - 2.0 * kxy[i, j]
  return total / (n * (n - 1))


def _data(rng, n=9, d=3, q=5, shift=0.0):
  return (rng.normal(size=(n, d)), rng.normal(size=(n, d)) + shift, rng.random((n, q)),
          rng.random((n, q)))


def test_kernel_and_mmd2_u_against_direct_loops():
  rng = np.random.default_rng(0)
  fx, fy, x, y = _data(rng, shift=0.7)
  params = sammd.KernelParams(a=jnp.float32(1.3), s=jnp.float32(2.0), e=jnp.float32(-1.0))
  sp, sq, eps = (float(v) for v in params.constrained())
  kxx = np.asarray(sammd.kernel_matrix(jnp.asarray(fx, jnp.float32), jnp.asarray(fx, jnp.float32),
                                       jnp.asarray(x, jnp.float32), jnp.asarray(x, jnp.float32), params))
  np.testing.assert_allclose(kxx, _np_kernel(fx, fx, x, x, sp, sq, eps), rtol=1e-5, atol=1e-6)
  kyy, kxy = _np_kernel(fy, fy, y, y, sp, sq, eps), _np_kernel(fx, fy, x, y, sp, sq, eps)
  kxx = _np_kernel(fx, fx, x, x, sp, sq, eps)
  got = float(sammd.mmd2_unbiased(jnp.asarray(kxx), jnp.asarray(kyy), jnp.asarray(kxy)))
  assert got == pytest.approx(_np_mmd2_u(kxx, kyy, kxy), rel=1e-5, abs=1e-7)
  # The variance of h1_mean_var_gram, by its own loops.
  n = kxx.shape[0]
  h = kxx + kyy - kxy - kxy.T
  row = np.array([sum(h[i, j] for j in range(n)) / n for i in range(n)])
  var = 4 * (np.sum(row ** 2) / n - (np.sum(h) / n / n) ** 2)
  _, got_var = sammd.mmd2_and_variance(jnp.asarray(kxx), jnp.asarray(kyy), jnp.asarray(kxy))
  assert float(got_var) == pytest.approx(var, rel=1e-5, abs=1e-8)


def test_pdist2_is_squared_distance():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(4, 2, 3)), rng.normal(size=(5, 2, 3))
  want = ((a.reshape(4, 1, -1) - b.reshape(1, 5, -1)) ** 2).sum(-1)
  np.testing.assert_allclose(np.asarray(sammd.pdist2(jnp.asarray(a), jnp.asarray(b))), want,
                             rtol=1e-5, atol=1e-5)


def _pools(key, shift, n_pool=200, d=4, q=6):
  k1, k2, k3, k4 = jax.random.split(key, 4)
  fx = jax.random.normal(k1, (n_pool, d))
  fy = jax.random.normal(k2, (n_pool, d)) + shift
  return fx, jax.random.uniform(k3, (n_pool, q)), fy, jax.random.uniform(k4, (n_pool, q))


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_permutation_test_level_on_two_clean_samples(alpha):
  fx, x, fy, y = _pools(jax.random.key(0), shift=0.0)
  params = sammd.init_params(jnp.concatenate([fx, fy]), x.shape[1])
  num_tests = 300
  rate = sammd.test_power(fx, x, fy, y, params, n=15, num_tests=num_tests, key=jax.random.key(1),
                          num_permutations=99, alpha=alpha)
  # The rejection count is Binomial(num_tests, <= alpha); 3 standard deviations of slack.
  slack = 3.0 * np.sqrt(alpha * (1 - alpha) / num_tests)
  assert rate <= alpha + slack, rate


def test_permutation_test_rejects_shifted_samples_and_training_keeps_power():
  fx, x, fy, y = _pools(jax.random.key(2), shift=1.0)
  params = sammd.init_params(jnp.concatenate([fx, fy]), x.shape[1])
  trained = sammd.train_kernel(fx[:50], fy[:50], x[:50], y[:50], steps=50, learning_rate=1e-2)
  for p in (params, trained):
    rate = sammd.test_power(fx[50:], x[50:], fy[50:], y[50:], p, n=15, num_tests=40,
                            key=jax.random.key(3), num_permutations=99, alpha=0.05)
    assert rate >= 0.8, rate
  wild = sammd.test_power(fx, x, fy, y, params, n=15, num_tests=40, key=jax.random.key(4),
                          test="wild_bootstrap", num_permutations=99, alpha=0.05)
  assert wild >= 0.8, wild
