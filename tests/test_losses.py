"""The outer losses of TRADES and MART against transcriptions of the official code, and the CW-inf
and DLR attack losses against values worked out by hand.

* TRADES: yaodongyu/TRADES ``trades.py``, ``trades_loss`` after the attack: ``loss_natural =
  F.cross_entropy(model(x_natural), y)``; ``loss_robust = nn.KLDivLoss(size_average=False)(
  F.log_softmax(model(x_adv)), F.softmax(model(x_natural))) / batch_size``; ``loss = loss_natural +
  beta * loss_robust``.
* MART: YisenWang/MART ``mart.py``, ``mart_loss`` after the attack: ``adv_probs =
  F.softmax(logits_adv)``; ``tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]``; ``new_y =
  torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])``; ``loss_adv = F.cross_entropy(
  logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)``; ``true_probs =
  gather(F.softmax(logits), y)``; ``loss_robust = (1 / B) * sum(sum(nn.KLDivLoss(reduction='none')(
  torch.log(adv_probs + 1e-12), nat_probs), dim=1) * (1.0000001 - true_probs))``; ``loss =
  loss_adv + beta * loss_robust``.

The transcriptions follow those lines in NumPy (float64; PyTorch's conventions: ``KLDivLoss(input,
target)`` is ``target * (log(target) - input)`` with 0 where the target is 0, ``nll_loss`` is the
mean of ``-input[i, target_i]``). The gradients are compared with a JAX version of the same lines,
so a detached term (the official code detaches nothing) would be caught.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import losses, objectives

B, C = 16, 10


def _logits(seed, scale):
  rng = np.random.default_rng(seed)
  nat = (scale * rng.standard_normal((B, C))).astype(np.float32)
  adv = (nat + scale * rng.standard_normal((B, C))).astype(np.float32)
  y = rng.integers(0, C, size=B).astype(np.int64)
  y[:4] = np.argmax(adv[:4], axis=1)  # adversarial top-1 = y: MART's new_y is the top-2
  return nat, adv, y


# ---- NumPy (and a JAX twin for gradients) of PyTorch's functions. ----

def _np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(axis=1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def _np_softmax(z):
  return np.exp(_np_log_softmax(z))


def _np_kl_div(inp, target):
  """``nn.KLDivLoss(reduction='none')(input, target)``: target * (log(target) - input), 0 at 0."""
  safe = np.where(target > 0, target, 1.0)
  return np.where(target > 0, target * (np.log(safe) - inp), 0.0)


def _np_cross_entropy(z, y):
  """``F.cross_entropy(z, y)``: the batch mean."""
  return -np.mean(_np_log_softmax(z)[np.arange(len(y)), y])


def _np_nll_loss(inp, target):
  return -np.mean(inp[np.arange(len(target)), target])


def official_trades_loss(logits, logits_adv, y, beta):
  batch_size = len(y)
  loss_natural = _np_cross_entropy(logits, y)
  loss_robust = np.sum(_np_kl_div(_np_log_softmax(logits_adv), _np_softmax(logits))) / batch_size
  return loss_natural + beta * loss_robust


def official_mart_loss(logits, logits_adv, y, beta):
  batch_size = len(y)
  adv_probs = _np_softmax(logits_adv)
  tmp1 = np.argsort(adv_probs, axis=1)[:, -2:]
  new_y = np.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
  loss_adv = (_np_cross_entropy(logits_adv, y)
              + _np_nll_loss(np.log(1.0001 - adv_probs + 1e-12), new_y))
  nat_probs = _np_softmax(logits)
  true_probs = nat_probs[np.arange(batch_size), y]
  loss_robust = (1.0 / batch_size) * np.sum(
      np.sum(_np_kl_div(np.log(adv_probs + 1e-12), nat_probs), axis=1) * (1.0000001 - true_probs))
  return loss_adv + float(beta) * loss_robust


def _jax_trades(logits, logits_adv, y, beta):
  """The same lines in JAX (float32), for gradients."""
  target = jax.nn.softmax(logits)
  loss_natural = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))
  kl = jnp.sum(target * (jnp.log(target) - jax.nn.log_softmax(logits_adv)))
  return loss_natural + beta * kl / y.shape[0]


def _jax_mart(logits, logits_adv, y, beta):
  adv_probs = jax.nn.softmax(logits_adv)
  top2 = jnp.argsort(adv_probs, axis=1)[:, -2:]
  new_y = jnp.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
  take = lambda a, i: jnp.take_along_axis(a, i[:, None], 1)[:, 0]
  loss_adv = (-jnp.mean(take(jax.nn.log_softmax(logits_adv), y))
              - jnp.mean(take(jnp.log(1.0001 - adv_probs + 1e-12), new_y)))
  nat_probs = jax.nn.softmax(logits)
  true_probs = take(nat_probs, y)
  kl = jnp.sum(nat_probs * (jnp.log(nat_probs) - jnp.log(adv_probs + 1e-12)), axis=1)
  return loss_adv + beta * jnp.sum(kl * (1.0000001 - true_probs)) / y.shape[0]


CASES = [(0, 1.0), (1, 3.0), (2, 8.0)]  # seeds and logit scales (8: probabilities near 0 and 1)


@pytest.mark.parametrize("seed,scale", CASES)
@pytest.mark.parametrize("beta", [1.0, 6.0])
def test_trades_loss_is_the_official_trades_loss(seed, scale, beta):
  nat, adv, y = _logits(seed, scale)
  got = objectives.trades(jnp.asarray(nat), jnp.asarray(adv), jnp.asarray(y, jnp.int32), beta=beta)
  np.testing.assert_allclose(float(got), official_trades_loss(nat, adv, y, beta), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("seed,scale", CASES)
@pytest.mark.parametrize("beta", [5.0, 6.0])
def test_mart_loss_is_the_official_mart_loss(seed, scale, beta):
  nat, adv, y = _logits(seed, scale)
  got = objectives.mart(jnp.asarray(nat), jnp.asarray(adv), jnp.asarray(y, jnp.int32), beta=beta)
  np.testing.assert_allclose(float(got), official_mart_loss(nat, adv, y, beta), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("name", ["trades", "mart"])
def test_gradients_into_both_logits_are_the_official_ones(name):
  nat, adv, y = _logits(1, 3.0)
  nat, adv, y = jnp.asarray(nat), jnp.asarray(adv), jnp.asarray(y, jnp.int32)
  lib = lambda a, b: getattr(objectives, name)(a, b, y, beta=6.0)
  ref = lambda a, b: {"trades": _jax_trades, "mart": _jax_mart}[name](a, b, y, 6.0)
  np.testing.assert_allclose(float(lib(nat, adv)), float(ref(nat, adv)), rtol=1e-5)
  g_lib = jax.grad(lib, argnums=(0, 1))(nat, adv)
  g_ref = jax.grad(ref, argnums=(0, 1))(nat, adv)
  for a, b in zip(g_lib, g_ref):
    assert float(jnp.max(jnp.abs(b))) > 1e-3  # both logits receive a gradient
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


# ---- CW-inf and DLR: explicit logits, values by hand. ----

def test_cw_inf_hand_values():
  cw50, cw0 = losses.make_cw(50.0), losses.make_cw(0.0)
  z = jnp.array([[5.0, 1.0, 3.0],
                 [5.0, 1.0, 3.0],
                 [-60.0, 0.0, 0.0],
                 [2.0, 2.0, -1.0]])
  y = jnp.array([0, 2, 0, 1])
  # FAT's cwloss (attack_generator.py; CAT's): -max(z_y - max_{j != y} z_j + kappa, 0).
  # kappa = 50: row 0: -(5 - 3 + 50) = -52; row 1: -(3 - 5 + 50) = -48;
  # row 2: -max(-60 - 0 + 50, 0) = 0; row 3 (a tie): -(2 - 2 + 50) = -50.
  np.testing.assert_allclose(cw50(z, y), [-52.0, -48.0, 0.0, -50.0], rtol=1e-6)
  # kappa = 0: row 0: -(5 - 3) = -2; row 1: -max(3 - 5, 0) = 0; row 2: 0; row 3: -max(0, 0) = 0.
  np.testing.assert_allclose(cw0(z, y), [-2.0, 0.0, 0.0, 0.0], rtol=1e-6)
  # Targeted, towards t: -max(max_{j != t} z_j - z_t + kappa, 0).
  # Row 0, t = 1: max_{j != 1} = 5: -(5 - 1 + 0) = -4; with kappa = 50: -54.
  # Row 1, t = 0: max_{j != 0} = 3: -max(3 - 5, 0) = 0 (already there); with kappa = 50: -48.
  t = jnp.array([1, 0, 1, 2])
  np.testing.assert_allclose(cw0(z[:2], y[:2], target=t[:2]), [-4.0, 0.0], rtol=1e-6)
  np.testing.assert_allclose(cw50(z[:2], y[:2], target=t[:2]), [-54.0, -48.0], rtol=1e-6)


def test_dlr_hand_values():
  # fra31/auto-attack autopgd_base.py ``dlr_loss``: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 +
  # 1e-12), pi the descending order.
  z = jnp.array([[2.0, 4.0, 1.0, 3.0, 0.0],
                 [2.0, 4.0, 1.0, 3.0, 0.0],
                 [10.0, -10.0, 0.0, 5.0, -20.0],
                 [3.0, 3.0, 1.0, 0.0, -1.0]])
  y = jnp.array([1, 4, 2, 0])
  # Row 0: sorted 4, 3, 2, 1, 0; y is the top: -(4 - 3) / (4 - 2) = -0.5.
  # Row 1: y = 4 (z_y = 0): -(0 - 4) / (4 - 2) = 2.0.
  # Row 2: sorted 10, 5, 0, -10, -20; y = 2: -(0 - 10) / (10 - 0) = 1.0.
  # Row 3: a tie at the top: -(3 - 3) / (3 - 1) = 0.
  np.testing.assert_allclose(losses.dlr(z, y), [-0.5, 2.0, 1.0, 0.0], rtol=1e-6, atol=1e-7)
  # ``dlr_loss_targeted``: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12).
  # Row 0, t = 3: -(4 - 3) / (4 - (2 + 1) / 2) = -1 / 2.5 = -0.4.
  # Row 2, t = 3: -(0 - 5) / (10 - (0 - 10) / 2) = 5 / 15 = 1/3.
  t = jnp.array([3, 0, 3, 1])
  got = losses.dlr(z, y, target=t)
  np.testing.assert_allclose(np.asarray(got)[[0, 2]], [-0.4, 1.0 / 3.0], rtol=1e-6)
  # Row 1, t = 0: -(0 - 2) / 2.5 = 0.8. Row 3, t = 1: -(3 - 3) / (3 - (1 + 0) / 2) = 0.
  np.testing.assert_allclose(np.asarray(got)[[1, 3]], [0.8, 0.0], rtol=1e-6, atol=1e-7)
