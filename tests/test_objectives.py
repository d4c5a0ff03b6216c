"""Outer objectives against independent NumPy references, gradient flow, GAIRAT weights."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import objectives

B, C = 7, 5


def _data(seed=0, scale=2.0):
  rng = np.random.default_rng(seed)
  zc = (scale * rng.standard_normal((B, C))).astype(np.float32)
  za = (zc + rng.standard_normal((B, C))).astype(np.float32)
  y = rng.integers(0, C, B).astype(np.int32)
  w = rng.uniform(0.1, 2.0, B)
  w = (w * B / w.sum()).astype(np.float32)
  return zc, za, y, w


# ---- NumPy references, written from the papers / official code, not from the library. ----

def np_softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def np_ce(z, y):
  p = np_softmax(z)
  return -np.log(p[np.arange(len(y)), y])


def np_kl(zp, zq):
  p, q = np_softmax(zp), np_softmax(zq)
  return np.sum(p * (np.log(p) - np.log(q)), axis=1)


def np_wmean(l, w):
  return np.mean(l) if w is None else np.mean(w * l)


def np_trades(zc, za, y, beta, w=None):
  if w is None:  # the official code: F.cross_entropy (mean) + beta / B * KLDivLoss(sum)
    return np.mean(np_ce(zc, y)) + beta * np.sum(np_kl(zc, za)) / len(y)
  return np_wmean(np_ce(zc, y) + beta * np_kl(zc, za), w)


def np_mart(zc, za, y, beta, w=None):
  adv_probs = np_softmax(za)
  nat_probs = np_softmax(zc)
  tmp1 = np.argsort(adv_probs, axis=1)[:, -2:]
  new_y = np.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
  bce = np_ce(za, y) - np.log(1.0001 - adv_probs[np.arange(B), new_y] + 1e-12)
  kl = np.sum(nat_probs * (np.log(nat_probs) - np.log(adv_probs + 1e-12)), axis=1)
  true_probs = nat_probs[np.arange(B), y]
  return np_wmean(bce + beta * kl * (1.0000001 - true_probs), w)


def np_alp(zc, za, y, lam, w=None, logits=False):
  a, c = (za, zc) if logits else (np_softmax(za), np_softmax(zc))
  return np_wmean(np_ce(za, y) + lam * np.sum((a - c) ** 2, axis=1), w)


def np_clp(zc, za, y, lam, w=None):
  return np_wmean(np_ce(zc, y) + lam * np.sum((np_softmax(za) - np_softmax(zc)) ** 2, axis=1), w)


def np_mma(zc, za, y, w=None):
  correct = np.argmax(zc, axis=1) == y
  return np_wmean(np.where(correct, np_ce(za, y), np_ce(zc, y)), w)


def np_gairat(kappa, K, lam, floor=False):
  kappa = np.asarray(kappa, np.float64)
  if floor:
    h = K // 2
    omega = (1 + np.tanh(lam + 5 * (h - kappa) / h)) / 2
  else:
    omega = (1 + np.tanh(lam + 5 * (1 - 2 * kappa / K))) / 2
  return omega * len(kappa) / omega.sum()


# ---- Values. ----

@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_values_match_numpy(weighted, seed):
  zc, za, y, w = _data(seed)
  wt = w if weighted else None
  jw = jnp.asarray(w) if weighted else None
  cases = [
      (objectives.ce_clean(zc, None, y, jw), np_wmean(np_ce(zc, y), wt)),
      (objectives.ce_adv(None, za, y, jw), np_wmean(np_ce(za, y), wt)),
      (objectives.trades(zc, za, y, jw, beta=6.0), np_trades(zc, za, y, 6.0, wt)),
      (objectives.mart(zc, za, y, jw, beta=5.0), np_mart(zc, za, y, 5.0, wt)),
      (objectives.alp(zc, za, y, jw, alp_weight=0.7), np_alp(zc, za, y, 0.7, wt)),
      (objectives.alp(zc, za, y, jw, alp_weight=0.7, pairing="logits"),
       np_alp(zc, za, y, 0.7, wt, logits=True)),
      (objectives.clp(zc, za, y, jw, alp_weight=0.3), np_clp(zc, za, y, 0.3, wt)),
      (objectives.mma(zc, za, y, jw), np_mma(zc, za, y, wt)),
  ]
  for got, want in cases:
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-6)


def test_unweighted_equals_unit_weights():
  zc, za, y, _ = _data()
  ones = jnp.ones((B,))
  for name in objectives.OBJECTIVES:
    fn = objectives.get_objective(name)
    np.testing.assert_allclose(float(fn(zc, za, y)), float(fn(zc, za, y, weights=ones)), rtol=1e-6)


def test_mart_strongest_wrong_class_when_true_class_is_top():
  # Make y the top adversarial class for every example: yhat must be the second one.
  zc, za, y, _ = _data(3)
  za = za.copy()
  za[np.arange(B), y] = za.max(axis=1) + 3.0
  np.testing.assert_allclose(float(objectives.mart(zc, za, y, beta=6.0)),
                             np_mart(zc, za, y, 6.0), rtol=1e-5)


def test_mma_margin_hinge_and_clean_coefficient():
  zc, za, y, _ = _data(2)
  correct = np.argmax(zc, 1) == y
  z_y = za[np.arange(B), y]
  other = np.where(np.eye(C, dtype=bool)[y], -np.inf, za).max(1)
  robust = (z_y - other) >= 0.0
  want = np.mean(np.where(correct, np.where(robust, 0.0, np_ce(za, y)), np_ce(zc, y)))
  np.testing.assert_allclose(float(objectives.mma(zc, za, y, mma_margin=0.0)), want, rtol=1e-5)
  want_c = (2 / 3) * np_mma(zc, za, y) + (1 / 3) * np.mean(np_ce(zc, y))
  np.testing.assert_allclose(float(objectives.mma(zc, za, y, mma_clean_coeff=1 / 3)), want_c,
                             rtol=1e-5)


def test_clp_clean_partner_pairs_neighbouring_clean_examples():
  zc, _, y, _ = _data()
  partner = np.roll(zc, -1, axis=0)
  want = np.mean(np_ce(zc, y) + 0.5 * np.sum((partner - zc) ** 2, axis=1))
  got = objectives.clp(zc, None, y, alp_weight=0.5, pairing="logits", clp_partner="clean")
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


# ---- Gradients flow through the clean branch (nothing detached, as the official code). ----

def _trades_detached(zc, za, y, beta):
  from robust_jax import losses
  return jnp.mean(losses.cross_entropy(zc, y)
                  + beta * losses.kl_divergence(jax.lax.stop_gradient(zc), za))


def _mart_detached(zc, za, y, beta):
  return objectives.mart(zc, za, y, beta=0.0) + beta * (
      objectives.mart(jax.lax.stop_gradient(zc), za, y, beta=1.0)
      - objectives.mart(jax.lax.stop_gradient(zc), za, y, beta=0.0))


@pytest.mark.parametrize("name,detached", [("trades", _trades_detached), ("mart", _mart_detached)])
def test_gradient_flows_into_clean_logits(name, detached):
  zc, za, y, _ = _data()
  fn = objectives.get_objective(name, beta=6.0)
  g = jax.grad(fn, argnums=0)(zc, za, y)
  g_det = jax.grad(detached, argnums=0)(zc, za, y, 6.0)
  # The robust part alone has a nonzero gradient w.r.t. the clean logits.
  g_kl = g - jax.grad(objectives.get_objective(name, beta=0.0), argnums=0)(zc, za, y)
  assert float(jnp.max(jnp.abs(g_kl))) > 1e-3
  assert float(jnp.max(jnp.abs(g - g_det))) > 1e-3
  # The detached reference has the same value (only the gradient differs).
  np.testing.assert_allclose(float(fn(zc, za, y)), float(detached(zc, za, y, 6.0)), rtol=1e-5)


@pytest.mark.parametrize("name", ["trades", "mart", "alp", "clp", "mma"])
def test_gradient_matches_finite_differences(name):
  zc, za, y, w = _data(4, scale=1.0)
  fn = objectives.get_objective(name, beta=3.0)
  g_c, g_a = jax.grad(fn, argnums=(0, 1))(zc, za, y, jnp.asarray(w))
  h = 1e-2
  for arr, grad, argnum in ((zc, g_c, 0), (za, g_a, 1)):
    for idx in [(0, 0), (3, 2), (6, 4)]:
      plus, minus = arr.copy(), arr.copy()
      plus[idx] += h
      minus[idx] -= h
      args_p = [zc, za]
      args_m = [zc, za]
      args_p[argnum], args_m[argnum] = plus, minus
      fd = (float(fn(*args_p, y, jnp.asarray(w))) - float(fn(*args_m, y, jnp.asarray(w)))) / (2 * h)
      np.testing.assert_allclose(float(grad[idx]), fd, atol=2e-3, rtol=2e-2)


def test_jit_with_traced_weights():
  zc, za, y, w = _data()
  fn = jax.jit(objectives.get_objective("mart", beta=6.0))
  np.testing.assert_allclose(float(fn(zc, za, y, jnp.asarray(w))), np_mart(zc, za, y, 6.0, w),
                             rtol=1e-5)


# ---- GAIRAT weights. ----

@pytest.mark.parametrize("K,lam", [(10, -1.0), (10, 0.0), (7, -1.0), (20, 2.0)])
def test_gairat_weights_match_numpy_and_sum_to_batch(K, lam):
  kappa = np.array([0, 1, 2, 3, K // 2, K - 1, K, K, 0], np.int32)
  w = objectives.gairat_weights(jnp.asarray(kappa), K, lam)
  np.testing.assert_allclose(np.asarray(w), np_gairat(kappa, K, lam), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(float(jnp.sum(w)), len(kappa), rtol=1e-6)
  w_off = objectives.gairat_weights(jnp.asarray(kappa), K, lam, official_floor=True)
  np.testing.assert_allclose(np.asarray(w_off), np_gairat(kappa, K, lam, floor=True), rtol=1e-5,
                             atol=1e-7)
  if K % 2 == 0:
    np.testing.assert_allclose(np.asarray(w_off), np.asarray(w), rtol=1e-5)
  else:
    assert not np.allclose(np.asarray(w_off), np.asarray(w))


def test_gairat_weights_decrease_with_kappa():
  K = 10
  w = np.asarray(objectives.gairat_weights(jnp.arange(K + 1, dtype=jnp.int32), K, -1.0))
  assert np.all(np.diff(w) < 0)
  assert np.all(w > 0)


def test_gairat_lambda_inf_is_uniform():
  kappa = jnp.array([0, 3, 10, 7], jnp.int32)
  np.testing.assert_array_equal(np.asarray(objectives.gairat_weights(kappa, 10, math.inf)),
                                np.ones(4, np.float32))
  # Traced lambda (the training step's jnp.where schedule) as well.
  w = jax.jit(objectives.gairat_weights, static_argnums=1)(kappa, 10, jnp.float32(jnp.inf))
  np.testing.assert_array_equal(np.asarray(w), np.ones(4, np.float32))


def test_gairat_weights_never_nan_when_all_tiny():
  w = objectives.gairat_weights(jnp.full((4,), 10, jnp.int32), 10, -60.0)
  assert np.all(np.isfinite(np.asarray(w)))
  np.testing.assert_allclose(float(jnp.sum(w)), 4.0, rtol=1e-6)


def test_gairat_weighted_ce_adv_is_weighted_average():
  zc, za, y, _ = _data()
  kappa = jnp.array([0, 1, 2, 5, 8, 9, 10], jnp.int32)
  w = objectives.gairat_weights(kappa, 10, -1.0)
  omega = (1 + np.tanh(-1.0 + 5 * (1 - 2 * np.asarray(kappa) / 10))) / 2
  want = np.sum(omega * np_ce(za, y)) / np.sum(omega)
  np.testing.assert_allclose(float(objectives.ce_adv(zc, za, y, w)), want, rtol=1e-5)


# ---- Registry and validation. ----

def test_registry_names_and_unknown_name():
  assert set(objectives.OBJECTIVES) == {"ce_clean", "ce_adv", "trades", "mart", "alp", "clp", "mma"}
  with pytest.raises(ValueError, match=r"objective must be one of .*'trades'.*got 'tradez'"):
    objectives.get_objective("tradez")


@pytest.mark.parametrize("name", ["trades", "mart"])
def test_negative_beta_raises(name):
  with pytest.raises(ValueError, match=r"beta must be in \[0"):
    objectives.get_objective(name, beta=-1.0)
  zc, za, y, _ = _data()
  with pytest.raises(ValueError, match=r"beta must be in \[0"):
    objectives.OBJECTIVES[name](zc, za, y, beta=-0.5)


def test_hyperparameters_unknown_rejected_irrelevant_ignored():
  with pytest.raises(ValueError, match="unknown objective hyperparameter.*gamma"):
    objectives.get_objective("trades", gamma=1.0)
  fn = objectives.get_objective("ce_adv", beta=6.0, alp_weight=0.5, mma_margin=0.0)
  zc, za, y, _ = _data()
  np.testing.assert_allclose(float(fn(zc, za, y)), np.mean(np_ce(za, y)), rtol=1e-6)
  with pytest.raises(ValueError, match="alp_weight"):
    objectives.get_objective("alp", alp_weight=-1.0)
  with pytest.raises(ValueError, match="pairing"):
    objectives.get_objective("alp", pairing="l1")
  with pytest.raises(ValueError, match="mma_clean_coeff"):
    objectives.get_objective("mma", mma_clean_coeff=2.0)


def test_shape_errors():
  zc, za, y, _ = _data()
  with pytest.raises(ValueError, match="logits_adv is required"):
    objectives.trades(zc, None, y)
  with pytest.raises(ValueError, match="weights must have shape"):
    objectives.ce_adv(zc, za, y, jnp.ones((B + 1,)))
  with pytest.raises(ValueError, match="y must have shape"):
    objectives.ce_adv(zc, za, y[:-1])
  with pytest.raises(ValueError, match=r"kappa must be in \[0, 10\]"):
    objectives.gairat_weights(jnp.array([0, 11]), 10, -1.0)


def test_clean_and_adv_requirements_are_consistent():
  zc, za, y, _ = _data()
  for name in objectives.OBJECTIVES:
    fn = objectives.get_objective(name)
    if name not in objectives.NEEDS_CLEAN_LOGITS:
      fn(None, za, y)
    if name not in objectives.NEEDS_ADV_LOGITS:
      fn(zc, None, y)
