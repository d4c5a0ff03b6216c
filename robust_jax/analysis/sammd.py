"""SAMMD: a two-sample MMD test with a semantic-aware deep kernel that detects adversarial batches.

Gao, Liu, Zhang, Han, Liu, Niu and Sugiyama, "Maximum mean discrepancy test is aware of adversarial
attacks", ICML 2021; official code ``Sjtubrian/SAMMD`` (``utils_HD.py``: ``Pdist2``, ``MMDu``,
``h1_mean_var_gram``, ``SAMMD_WB``, ``bootsrap_null``, ``Wild_bootsrap_process``, ``TST_MMD_u``;
``SAMMD_Test.py``).

Given a batch X of natural images and a batch Y that may hold adversarial ones, the test rejects
"X and Y come from the same distribution". The kernel is *semantic-aware*: with phi the features of
the trained classifier (the official code: the 512-d pooled features of its target ResNet-18, in
eval mode, never trained by the test),

    k(x, x') = (1 - eps) exp(-|phi(x) - phi(x')|^2 / sigma_phi - |x - x'|^2 / sigma_q)
               + eps exp(-|x - x'|^2 / sigma_q),

squared distances throughout (``Pdist2`` has no square root). Its parameters (sigma_phi, sigma_q,
eps) are chosen on training batches by maximising the test-power proxy
``(MMD^2_u + 1e-8) / sqrt(var + 1e-8)`` (:func:`train_kernel`; Adam, lr 2e-4, 1000 full-batch steps
in the official script; init sigma_phi = median feature distance, sigma_q = s^2 with s =
sqrt(2 d), eps = sigmoid(e) with e = log(1e-10 u)). The statistic is the unbiased MMD^2_u of the
official ``h1_mean_var_gram`` (equal sizes, the diagonals of K_xx, K_yy *and* K_xy removed,
:func:`mmd2_unbiased`), and the test is

* ``"permutation"`` (default here, as the issue asks, and the official baselines' ``TST_MMD_u``):
  the pooled sample is re-split at random ``num_permutations`` times; p = (1 + #{perm >= stat}) /
  (1 + num_permutations), reject when p <= alpha (a valid level-alpha test under exchangeability);
* ``"wild_bootstrap"`` (the official ``SAMMD_WB``, for non-IID adversarial data): the statistic
  mean(H), H = K_xx + K_yy - 2 K_xy (X_i paired with Y_i), against draws mean(H * w w^T) of a
  centred AR(1) Gaussian process w (ln = 0.2); reject when at most ceil(alpha * draws) draws exceed
  it (the official rule).

Test power = the rejection rate over ``num_tests`` independent pairs of batches (:func:`test_power`),
computed with the same function on two clean batches for the type-I error. On the digits, the recipe
is :func:`robust_jax.experiments.new_systems.sammd_experiment` (standard-trained MLP, its last hidden
layer as phi, PGD-20 at eps 0.2)::

  python -m robust_jax.experiments.new_systems --what=sammd --out=runs/new_systems

Differences: the features default to the classifier's last hidden layer (any ``x -> phi(x)``
may be passed); X and Y are drawn from disjoint halves of the held-out set (the clean half for X,
the adversarial versions of the other half for Y), so that under H0 the pooled sample is IID.

Tests (``tests/analysis/test_sammd.py``): MMD^2_u against a direct double loop in NumPy, the kernel
against its formula, the permutation test's level on two clean samples over many repetitions.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

TESTS = ("permutation", "wild_bootstrap")


class KernelParams(NamedTuple):
  """The trainable kernel parameters (unconstrained), as the official ``sigma0OPT``, ``sigmaOPT``,
  ``epsilonOPT``: sigma_phi = a^2, sigma_q = s^2, eps = sigmoid(e).

  Attributes:
    a: scalar, sqrt(sigma_phi).
    s: scalar, sqrt(sigma_q).
    e: scalar, logit of eps.
  """
  a: jax.Array
  s: jax.Array
  e: jax.Array

  def constrained(self):
    """``(sigma_phi, sigma_q, eps)``."""
    return self.a ** 2, self.s ** 2, jax.nn.sigmoid(self.e)


def pdist2(x: jax.Array, y: jax.Array) -> jax.Array:
  """Squared Euclidean distances [n, m] of rows (``Pdist2``: clipped at 0, no square root)."""
  x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
  d = jnp.sum(x ** 2, 1)[:, None] + jnp.sum(y ** 2, 1)[None, :] - 2.0 * x @ y.T
  return jnp.maximum(d, 0.0)


def kernel_matrix(feat_a: jax.Array, feat_b: jax.Array, x_a: jax.Array, x_b: jax.Array,
                  params: KernelParams) -> jax.Array:
  """The semantic-aware kernel between two sets: [n, m].

  Args:
    feat_a, feat_b: features phi [n, D], [m, D].
    x_a, x_b: the inputs [n, ...], [m, ...] (flattened).
    params: the kernel's :class:`KernelParams`.
  """
  sigma_phi, sigma_q, eps = params.constrained()
  d_phi, d_q = pdist2(feat_a, feat_b), pdist2(x_a, x_b)
  return (1 - eps) * jnp.exp(-d_phi / sigma_phi - d_q / sigma_q) + eps * jnp.exp(-d_q / sigma_q)


def mmd2_unbiased(kxx: jax.Array, kyy: jax.Array, kxy: jax.Array) -> jax.Array:
  """The official unbiased MMD^2_u (``h1_mean_var_gram``, ``use_1sample_U=True``), n = m.

  ``sum_{i != j} [k(x_i, x_j) + k(y_i, y_j) - 2 k(x_i, y_j)] / (n (n - 1))``.
  """
  n = kxx.shape[0]
  off = lambda k: (jnp.sum(k) - jnp.trace(k)) / (n * (n - 1))
  return off(kxx) + off(kyy) - 2.0 * off(kxy)


def mmd2_and_variance(kxx: jax.Array, kyy: jax.Array, kxy: jax.Array):
  """``(MMD^2_u, its variance estimate)`` as ``h1_mean_var_gram``: H = Kxx + Kyy - Kxy - Kxy^T,
  var = 4 (mean_i (mean_j H_ij)^2 - (mean H)^2)."""
  n = kxx.shape[0]
  h = kxx + kyy - kxy - kxy.T
  v1 = jnp.dot(jnp.sum(h, 1) / n, jnp.sum(h, 1) / n) / n
  v2 = jnp.sum(h) / n / n
  return mmd2_unbiased(kxx, kyy, kxy), 4.0 * (v1 - v2 ** 2)


def init_params(feat: jax.Array, input_dim: int) -> KernelParams:
  """The official initialisation: sigma_phi = the median squared feature distance of the pooled
  sample, sigma_q = 2 * input_dim (s = sqrt(2 d)), eps = 1e-10 * 0.5 (the official draws U)."""
  d = np.asarray(pdist2(feat, feat))
  med = float(np.median(d[np.triu_indices(d.shape[0], 1)]))
  return KernelParams(a=jnp.asarray(math.sqrt(max(med, 1e-12)), jnp.float32),
                      s=jnp.asarray(math.sqrt(2.0 * input_dim), jnp.float32),
                      e=jnp.asarray(math.log(0.5e-10), jnp.float32))


def _split(k: jax.Array, n: int):
  return k[:n, :n], k[n:, n:], k[:n, n:]


def train_kernel(feat_x: jax.Array, feat_y: jax.Array, x: jax.Array, y: jax.Array, *,
                 steps: int = 1000, learning_rate: float = 2e-4,
                 params: Optional[KernelParams] = None) -> KernelParams:
  """Maximises ``(MMD^2_u + 1e-8) / sqrt(var + 1e-8)`` over the kernel parameters (Adam, full batch).

  Args:
    feat_x, feat_y: features of the natural and the adversarial training batch, [n, D] each.
    x, y: the corresponding inputs, [n, ...] each.
    steps, learning_rate: Adam iterations and rate (official: 1000, 2e-4).
    params: the start (default :func:`init_params` on the pooled features).

  Returns:
    The trained :class:`KernelParams`.
  """
  n = feat_x.shape[0]
  feat = jnp.concatenate([feat_x, feat_y])
  inputs = jnp.concatenate([x, y]).reshape(2 * n, -1)
  params = init_params(feat, inputs.shape[1]) if params is None else params
  opt = optax.adam(learning_rate)

  def objective(p):
    mmd2, var = mmd2_and_variance(*_split(kernel_matrix(feat, feat, inputs, inputs, p), n))
    return -(mmd2 + 1e-8) / jnp.sqrt(var + 1e-8)

  @jax.jit
  def run(p):
    def body(_, carry):
      p, s = carry
      g = jax.grad(objective)(p)
      u, s = opt.update(g, s, p)
      return optax.apply_updates(p, u), s
    return jax.lax.fori_loop(0, steps, body, (p, opt.init(p)))[0]

  return run(params)


def permutation_test(k_full: jax.Array, n: int, key: jax.Array, *, num_permutations: int = 100,
                     alpha: float = 0.05):
  """MMD^2_u permutation test on a pooled kernel matrix.

  Args:
    k_full: [2n, 2n], the kernel on the pooled sample (X first, then Y).
    n: the size of each sample.
    key: PRNG key of the permutations.
    num_permutations: re-splits of the pooled sample.
    alpha: the level.

  Returns:
    ``(statistic, p_value, reject)``; p = (1 + #{perm statistic >= statistic}) / (1 + P).
  """
  stat = mmd2_unbiased(*_split(k_full, n))

  def one(k):
    perm = jax.random.permutation(k, 2 * n)
    return mmd2_unbiased(*_split(k_full[perm][:, perm], n))

  null = jax.vmap(one)(jax.random.split(key, num_permutations))
  p = (1.0 + jnp.sum(null >= stat)) / (1.0 + num_permutations)
  return stat, p, p <= alpha


def wild_bootstrap_test(k_full: jax.Array, n: int, key: jax.Array, *, num_draws: int = 100,
                        alpha: float = 0.05, ln: float = 0.2):
  """The official ``SAMMD_WB`` / ``bootsrap_null``: wild bootstrap of mean(Kxx + Kyy - 2 Kxy).

  w is the AR(1) process ``w_t = a w_{t-1} + sqrt(1 - exp(-2 / ln)) z_t``, a = exp(-1 / ln)
  (``scipy.signal.lfilter([1], [1, -a], ...)``), centred per draw; reject when at most
  ``ceil(num_draws * alpha)`` draws of mean(H * w w^T) exceed the statistic.

  Returns:
    ``(statistic, fraction of draws above it, reject)``.
  """
  kxx, kyy, kxy = _split(k_full, n)
  h = kxx + kyy - 2.0 * kxy
  stat = jnp.mean(h)
  a = math.exp(-1.0 / ln)
  z = math.sqrt(1.0 - math.exp(-2.0 / ln)) * jax.random.normal(key, (n, num_draws))
  w = jax.lax.scan(lambda prev, zt: (a * prev + zt, a * prev + zt), jnp.zeros(num_draws), z)[1]
  w = w - jnp.mean(w, 0, keepdims=True)
  null = jnp.einsum("id,ij,jd->d", w, h, w) / (n * n)
  count = jnp.sum(null > stat)
  return stat, count / num_draws, count <= math.ceil(num_draws * alpha)


def two_sample_test(feat_x, feat_y, x, y, params: KernelParams, key: jax.Array, *,
                    test: str = "permutation", num_permutations: int = 100, alpha: float = 0.05):
  """One SAMMD test of X against Y (equal sizes); ``(statistic, p or exceed fraction, reject)``."""
  if test not in TESTS:
    raise ValueError(f"test must be one of {TESTS}, got {test!r}")
  n = feat_x.shape[0]
  feat = jnp.concatenate([feat_x, feat_y])
  inputs = jnp.concatenate([x, y]).reshape(2 * n, -1)
  k_full = kernel_matrix(feat, feat, inputs, inputs, params)
  if test == "permutation":
    return permutation_test(k_full, n, key, num_permutations=num_permutations, alpha=alpha)
  return wild_bootstrap_test(k_full, n, key, num_draws=num_permutations, alpha=alpha)


def test_power(feat_x_pool, x_pool, feat_y_pool, y_pool, params: KernelParams, *, n: int,
               num_tests: int, key: jax.Array, test: str = "permutation",
               num_permutations: int = 100, alpha: float = 0.05) -> float:
  """The rejection rate of ``num_tests`` tests, each on n points drawn (without replacement) from
  the X pool and n from the Y pool. With two pools of the same distribution it is the type-I error.

  Args:
    feat_x_pool, x_pool: features and inputs of the first pool ([N1, D], [N1, ...]).
    feat_y_pool, y_pool: the same for the second pool ([N2, D], [N2, ...]); n <= N1, N2.
    params: the kernel.
    n: each sample's size.
    num_tests: independent tests.
    key: PRNG key (draws and permutations).
    test, num_permutations, alpha: see :func:`two_sample_test`.

  Returns:
    The fraction of rejections.
  """
  if n > feat_x_pool.shape[0] or n > feat_y_pool.shape[0]:
    raise ValueError(f"n={n} is larger than a pool ({feat_x_pool.shape[0]}, {feat_y_pool.shape[0]})")
  fn = _power_fn(n, num_tests, test, num_permutations, float(alpha))
  return float(fn(jnp.asarray(feat_x_pool), jnp.asarray(x_pool), jnp.asarray(feat_y_pool),
                  jnp.asarray(y_pool), params, key))


@functools.lru_cache(maxsize=None)
def _power_fn(n, num_tests, test, num_permutations, alpha):
  """The jitted rejection rate (one compilation per static setting and pool shape)."""

  @jax.jit
  def power(fx, x, fy, y, params, key):
    def one(k):
      kx, ky, kt = jax.random.split(k, 3)
      ix = jax.random.permutation(kx, fx.shape[0])[:n]
      iy = jax.random.permutation(ky, fy.shape[0])[:n]
      return two_sample_test(fx[ix], fy[iy], x[ix], y[iy], params, kt, test=test,
                             num_permutations=num_permutations, alpha=alpha)[2]
    return jnp.mean(jax.lax.map(one, jax.random.split(key, num_tests)).astype(jnp.float32))

  return power


def classifier_features(model, variables: Dict[str, Any], layer: str,
                        activation: Callable[[jax.Array], jax.Array] = jax.nn.relu
                        ) -> Callable[[jax.Array], jax.Array]:
  """``x -> activation(output of submodule layer)`` of a linen classifier in eval mode, flattened:
  the semantic features phi (e.g. ``layer="fc2"`` of the digits MLP, its last hidden layer)."""
  def features(x):
    _, state = model.apply(variables, x, train=False, capture_intermediates=True,
                           mutable=["intermediates"])
    out = state["intermediates"][layer]["__call__"][0]
    return activation(out).reshape(out.shape[0], -1)
  return features


__all__ = ["KernelParams", "TESTS", "classifier_features", "init_params", "kernel_matrix",
           "mmd2_and_variance", "mmd2_unbiased", "pdist2", "permutation_test", "test_power",
           "train_kernel", "two_sample_test", "wild_bootstrap_test"]
