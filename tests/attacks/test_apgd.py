"""APGD (Croce and Hein 2020): DLR loss, checkpoint schedule, invariants, strength against PGD."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks
from robust_jax import fosc as fosc_lib
from robust_jax import losses
from robust_jax.attacks import _apgd as apgd
from tests.attacks.invariants import DTYPES, run_attack, check_in_ball_and_box, traced_at_most_once

N_TEST = 128


@pytest.fixture(scope="module")
def model(digits_mlp):
  """conftest's digits MLP (about 98% clean test accuracy) on the first N_TEST test images."""
  _, logits_fn, x, y = digits_mlp
  x, y = x[:N_TEST], y[:N_TEST]
  assert float(jnp.mean(jnp.argmax(logits_fn(x), -1) == y)) > 0.9
  return logits_fn, x, y


# --- DLR loss -------------------------------------------------------------------------------------


def test_dlr_untargeted_hand_values():
  z = jnp.array([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0]])
  # Sorted: 3, 2, 1, 0; denominator z_pi1 - z_pi3 = 3 - 1 = 2.
  # y = 0: -(3 - 2) / 2 = -0.5.  y = 3: -(0 - 3) / 2 = 1.5.
  np.testing.assert_allclose(losses.dlr(z, jnp.array([0, 3])), [-0.5, 1.5], rtol=1e-6)


def test_dlr_targeted_hand_values():
  z = jnp.array([[3.0, 1.0, 2.0, 0.0]])
  # y = 0, t = 2: -(3 - 2) / (3 - (1 + 0) / 2) = -0.4.  t = 3: -(3 - 0) / 2.5 = -1.2.
  np.testing.assert_allclose(losses.dlr(z, jnp.array([0]), target=jnp.array([2])), [-0.4],
                             rtol=1e-6)
  np.testing.assert_allclose(losses.dlr(z, jnp.array([0]), target=jnp.array([3])), [-1.2],
                             rtol=1e-6)


@pytest.mark.parametrize("targeted", [False, True])
def test_dlr_is_shift_and_scale_invariant(targeted):
  z = jax.random.normal(jax.random.key(0), (32, 10)) * 3.0
  y = jnp.arange(32, dtype=jnp.int32) % 10
  t = (y + 4) % 10 if targeted else None
  base = losses.dlr(z, y, target=t)
  for a, b in [(0.01, 5.0), (7.0, -3.0), (1.0, 100.0)]:
    np.testing.assert_allclose(losses.dlr(a * z + b, y, target=t), base, rtol=2e-4, atol=1e-5)


# --- Checkpoints ----------------------------------------------------------------------------------


def test_checkpoints_published_values():
  # Croce and Hein (2020), Section 3.2: p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99.
  want = (0, 22, 41, 57, 70, 80, 87, 93, 99)
  assert apgd.checkpoints(100) == want
  assert apgd.checkpoints(100, variant="official") == want
  assert apgd.checkpoints(1000) == tuple(10 * w for w in want)
  # The variants differ for other budgets: ceil(p_j N) against the code's int() intervals.
  assert apgd.checkpoints(10) == (0, 3, 5, 6, 7, 8, 9, 10)
  assert apgd.checkpoints(10, variant="official") == (0, 2, 3, 4, 5, 6, 7, 8, 9, 10)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_in_graph_schedule_matches_checkpoints(variant):
  # The loop computes the schedule in-graph (n_iter traced); iterating it reproduces checkpoints().
  for n in (1, 2, 5, 10, 17, 50, 100, 137, 1000):
    out, cur, interval = [0], jnp.asarray(0, jnp.int32), None
    while True:
      cur, interval = apgd._next_checkpoint(cur, interval, n, variant)
      if int(cur) > n:
        break
      if int(cur) > out[-1]:
        out.append(int(cur))
    assert tuple(out) == apgd.checkpoints(n, variant=variant), (variant, n)


# --- Invariants -----------------------------------------------------------------------------------


# Each runs for float32 and bfloat16 images (tests/attacks/invariants.py).


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
@pytest.mark.parametrize("variant", ["paper", "official"])
def test_apgd_points_in_ball_and_box(model, norm, eps, variant, dtype):
  logits_fn, x, y = model
  x = x.astype(dtype)
  key = jax.random.key(1)
  # With the same key, APGD-k's output is an iterate of APGD-K (x_best or x_best_adv). The official
  # variant runs without early stopping (as the code; it shares the transcription test's program).
  for k in (1, 3, 8):
    r = run_attack(dtype, apgd.apgd, logits_fn, x, y, eps=eps, n_iter=k, norm=norm, key=key,
                        variant=variant, early_stop=variant == "paper")
    check_in_ball_and_box(r.x_adv, x, eps, norm)


@pytest.mark.parametrize("dtype", DTYPES)
def test_apgd_dlr_and_targeted_points_in_ball_and_box(model, dtype):
  logits_fn, x, y = model
  x = x.astype(dtype)
  key = jax.random.key(1)
  for k in (1, 5):
    r = run_attack(dtype, apgd.apgd, logits_fn, x, y, eps=0.1, n_iter=k, key=key,
                        loss="dlr")
    check_in_ball_and_box(r.x_adv, x, 0.1, "linf")
    r = run_attack(dtype, apgd.apgd_targeted, logits_fn, x, y, eps=0.1, n_iter=k, key=key,
                        n_target_classes=3)
    check_in_ball_and_box(r.x_adv, x, 0.1, "linf")


def test_result_fields_are_evaluated_at_x_adv(model):
  logits_fn, x, y = model
  r = apgd.apgd(logits_fn, x, y, eps=0.05, n_iter=10, key=jax.random.key(2))
  np.testing.assert_array_equal(r.misclassified, jnp.argmax(logits_fn(r.x_adv), -1) != y)
  np.testing.assert_allclose(r.loss, losses.cross_entropy(logits_fn(r.x_adv), y), rtol=1e-5)
  g = jax.grad(lambda v: jnp.sum(losses.cross_entropy(logits_fn(v), y)))(r.x_adv)
  np.testing.assert_allclose(r.fosc, fosc_lib.fosc(r.x_adv, x, g, eps=0.05), rtol=1e-4, atol=1e-5)
  # For the examples it did not break, x_adv is the highest-loss iterate: above the clean loss.
  clean = losses.cross_entropy(logits_fn(x), y)
  kept = ~r.misclassified
  assert bool(jnp.all(r.loss[kept] >= clean[kept] - 1e-5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_inactive_examples_are_untouched(model, dtype):
  logits_fn, x, y = model
  x = x.astype(dtype)
  active = jnp.arange(N_TEST) % 2 == 0
  r = run_attack(dtype, apgd.apgd, logits_fn, x, y, eps=0.1, n_iter=10,
                      key=jax.random.key(3), active=active)
  np.testing.assert_array_equal(r.x_adv[~active], x[~active])
  assert int(r.num_steps[~active].max()) == 0 and int(r.num_steps[active].max()) > 0


def test_early_stop_keeps_the_broken_set(model):
  logits_fn, x, y = model
  kw = dict(eps=0.08, n_iter=20, key=jax.random.key(4))
  fast = apgd.apgd(logits_fn, x, y, early_stop=True, **kw)
  full = apgd.apgd(logits_fn, x, y, early_stop=False, **kw)
  np.testing.assert_array_equal(fast.misclassified, full.misclassified)
  assert int(fast.num_steps.sum()) < int(full.num_steps.sum())
  clean = np.asarray(jnp.argmax(logits_fn(x), -1) == y)
  assert set(np.asarray(full.num_steps)[clean].tolist()) == {20}
  # As the official perturb(), points misclassified without attack are not attacked.
  assert set(np.asarray(full.num_steps)[~clean].tolist()) <= {0}
  np.testing.assert_array_equal(np.asarray(full.x_adv)[~clean], np.asarray(x)[~clean])


def test_keys_and_traced_hyperparameters(model, monkeypatch):
  logits_fn, x, y = model
  # One compilation across the calls below: a second trace of the core raises.
  monkeypatch.setattr(apgd, "_apgd", traced_at_most_once(apgd._apgd))
  a = apgd.apgd(logits_fn, x, y, eps=0.1, n_iter=4, key=jax.random.key(5))
  b = apgd.apgd(logits_fn, x, y, eps=0.1, n_iter=4, key=jax.random.key(5))
  np.testing.assert_array_equal(a.x_adv, b.x_adv)
  for eps, n_iter, rho in [(0.05, 7, 0.5), (0.2, 13, 0.9)]:
    apgd.apgd(logits_fn, x, y, eps=eps, n_iter=n_iter, rho=rho, n_restarts=2,
              key=jax.random.key(6))
  # A new checkpoint of the same model (a jax.tree_util.Partial) reuses the compiled attack.
  new_params = jax.tree.map(lambda a: 1.01 * a, logits_fn.args[0])
  apgd.apgd(jax.tree_util.Partial(logits_fn.func, new_params), x, y, eps=0.1, n_iter=4,
            key=jax.random.key(6))
  chex.clear_trace_counter()


# --- Strength -------------------------------------------------------------------------------------


def _reference_apgd_ce(logits_fn, x, y, key, eps, n_iter, rho=0.75):
  """A line-by-line NumPy transcription of ``autopgd_base``'s ``attack_single_run`` (linf, CE)."""
  x, y = np.asarray(x, np.float32), np.asarray(y)
  b = x.shape[0]

  @jax.jit
  def value_and_grad(v):
    def total(v):
      z = logits_fn(v)
      l = losses.cross_entropy(z, jnp.asarray(y))
      return jnp.sum(l), (l, z)
    return jax.value_and_grad(total, has_aux=True)(v)

  def loss_grad(v):
    (_, (l, z)), g = value_and_grad(jnp.asarray(v))
    return np.array(l), np.array(z), np.array(g)

  t = np.asarray(jax.random.uniform(key, x.shape, jnp.float32, -1.0, 1.0))
  t_norm = np.abs(t.reshape(b, -1)).max(1).reshape(-1, 1, 1, 1)
  x_adv = np.clip(x + eps * t / (t_norm + 1e-12), 0, 1)
  x_best, x_best_adv = x_adv.copy(), x_adv.copy()
  loss_steps = np.zeros((n_iter, b), np.float32)
  k, n_min = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1)
  decr = max(int(0.03 * n_iter), 1)
  loss, z, grad = loss_grad(x_adv)
  grad_best, acc, loss_best = grad.copy(), z.argmax(1) == y, loss.copy()
  step = 2 * eps * np.ones((b, 1, 1, 1), np.float32)
  x_old, counter3 = x_adv.copy(), 0
  loss_best_last, reduced_last = loss_best.copy(), np.ones(b, bool)
  for i in range(n_iter):
    grad2, x_old = x_adv - x_old, x_adv.copy()
    a = 0.75 if i > 0 else 1.0
    x1 = np.clip(np.minimum(np.maximum(x_adv + step * np.sign(grad), x - eps), x + eps), 0, 1)
    x_adv = np.clip(np.minimum(np.maximum(x_adv + (x1 - x_adv) * a + grad2 * (1 - a), x - eps),
                               x + eps), 0, 1)
    loss, z, grad = loss_grad(x_adv)
    pred = z.argmax(1) == y
    acc &= pred
    x_best_adv[~pred] = x_adv[~pred]
    loss_steps[i] = loss
    up = loss > loss_best
    x_best[up], grad_best[up], loss_best[up] = x_adv[up], grad[up], loss[up]
    counter3 += 1
    if counter3 == k:
      count = sum((loss_steps[i - j] > loss_steps[i - j - 1]).astype(int) for j in range(k))
      reduce = (count <= k * rho) | (~reduced_last & (loss_best_last >= loss_best))
      reduced_last, loss_best_last = reduce.copy(), loss_best.copy()
      step[reduce] /= 2.0
      x_adv[reduce], grad[reduce] = x_best[reduce], grad_best[reduce]
      k, counter3 = max(k - decr, n_min), 0
  return acc, np.where(acc[:, None, None, None], x_best, x_best_adv)


def test_official_variant_matches_a_transcription_of_the_official_code(model):
  logits_fn, x, y = model
  key = jax.random.key(10)
  for eps, n_iter in [(0.08, 20), (0.1, 30)]:
    acc, x_ref = _reference_apgd_ce(logits_fn, x, y, jax.random.fold_in(key, 0), eps, n_iter)
    r = apgd.apgd(logits_fn, x, y, eps=eps, n_iter=n_iter, key=key, variant="official",
                  early_stop=False)
    # perturb() runs attack_single_run on the clean-correct points only; examples are independent.
    clean = np.asarray(jnp.argmax(logits_fn(x), -1) == y)
    np.testing.assert_array_equal(~np.asarray(r.misclassified)[clean], acc[clean])
    np.testing.assert_allclose(np.asarray(r.x_adv)[clean], x_ref[clean], atol=1e-5)


@pytest.mark.parametrize("budget", [10, 20])
def test_apgd_never_weaker_than_pgd_with_the_same_budget(model, budget):
  """APGD-CE then APGD-T (AutoAttack's APGD, N iterations per run) against PGD-N, no slack.

  APGD-CE alone is not always stronger than PGD-N on this piecewise-linear MLP once N >= 10: its
  2 eps first step lands on a vertex that is a fixed point of the sign step, and over 10 keys it is
  worse by about one example in up to 7 of 10 keys (and better by 6 to 10 examples at N = 5, the
  budget where the step-size rule matters, tested below). With APGD-T on the survivors it was never
  worse in 270 (model, eps, N, key) cases.
  """
  logits_fn, x, y = model
  clean = jnp.argmax(logits_fn(x), -1) == y
  for eps in (0.05, 0.08, 0.1, 0.12):
    p = attacks.pgd(logits_fn, x, y, eps=eps, step_size=eps / 4, num_steps=budget,
                    start="uniform", key=jax.random.key(7))
    acc_pgd = int(jnp.sum(clean & ~p.misclassified))
    a = apgd.apgd(logits_fn, x, y, eps=eps, n_iter=budget, key=jax.random.key(7))
    t = apgd.apgd_targeted(logits_fn, x, y, eps=eps, n_iter=budget, key=jax.random.key(8),
                           active=clean & ~a.misclassified)
    acc_apgd = int(jnp.sum(clean & ~a.misclassified & ~t.misclassified))
    assert acc_apgd <= acc_pgd, (eps, budget, acc_apgd, acc_pgd)


def test_apgd_ce_beats_pgd_at_a_small_budget(model):
  logits_fn, x, y = model
  clean = jnp.argmax(logits_fn(x), -1) == y
  for eps in (0.05, 0.08, 0.1, 0.12):
    p = attacks.pgd(logits_fn, x, y, eps=eps, step_size=eps / 4, num_steps=5, start="uniform",
                    key=jax.random.key(7))
    a = apgd.apgd(logits_fn, x, y, eps=eps, n_iter=5, key=jax.random.key(7))
    assert int(jnp.sum(clean & ~a.misclassified)) <= int(jnp.sum(clean & ~p.misclassified)), eps


def test_restarts_only_add_broken_points(model):
  logits_fn, x, y = model
  one = apgd.apgd(logits_fn, x, y, eps=0.08, n_iter=10, key=jax.random.key(9))
  three = apgd.apgd(logits_fn, x, y, eps=0.08, n_iter=10, n_restarts=3, key=jax.random.key(9))
  assert bool(jnp.all(three.misclassified | ~one.misclassified))


# --- Errors ---------------------------------------------------------------------------------------


def test_bad_arguments_are_named(model):
  logits_fn, x, y = model
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="eps"):
    apgd.apgd(logits_fn, x, y, eps=-0.1, key=key)
  with pytest.raises(ValueError, match="n_iter"):
    apgd.apgd(logits_fn, x, y, eps=0.1, n_iter=0, key=key)
  with pytest.raises(ValueError, match="rho"):
    apgd.apgd(logits_fn, x, y, eps=0.1, rho=1.5, key=key)
  with pytest.raises(ValueError, match="key"):
    apgd.apgd(logits_fn, x, y, eps=0.1, key=None)
  with pytest.raises(ValueError, match="loss"):
    apgd.apgd(logits_fn, x, y, eps=0.1, key=key, loss="kl")
  with pytest.raises(ValueError, match="n_target_classes"):
    apgd.apgd_targeted(logits_fn, x, y, eps=0.1, key=key, n_target_classes=10)
  three = lambda v: v.reshape(v.shape[0], -1)[:, :3]  # noqa: E731
  with pytest.raises(ValueError, match="4 classes"):
    apgd.apgd_targeted(three, x, y % 3, eps=0.1, key=key)
