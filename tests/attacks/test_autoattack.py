"""AutoAttack, FAB and Square: protocol, strength, gradient-free Square, FAB's projections."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from robust_jax import attacks
from robust_jax.attacks import _autoattack as aa
from robust_jax.attacks import _fab as fab
from robust_jax.attacks import _square as square

N_TEST = 128
BUDGET = dict(n_iter=20, n_queries=300)  # small budgets; every attack compiles once per shape


@pytest.fixture(scope="module")
def model(digits_mlp):
  """conftest's digits MLP (about 98% clean test accuracy) on the first N_TEST test images."""
  params, logits_fn, x, y = digits_mlp
  return params, logits_fn, x[:N_TEST], y[:N_TEST]


def _dist(a, b, norm="linf"):
  d = (a - b).reshape(a.shape[0], -1)
  return jnp.max(jnp.abs(d), 1) if norm == "linf" else jnp.linalg.norm(d, axis=1)


# --- AutoAttack -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aa_results(model):
  _, logits_fn, x, y = model
  out = {}
  for eps in (0.05, 0.1, 0.2):
    out[eps] = aa.autoattack(logits_fn, x, y, eps=eps, key=jax.random.key(0), **BUDGET)
  return out


def test_autoattack_not_weaker_than_pgd20(model, aa_results):
  _, logits_fn, x, y = model
  for eps, r in aa_results.items():
    p = attacks.pgd(logits_fn, x, y, eps=eps, step_size=eps / 4, num_steps=20, start="uniform",
                    key=jax.random.key(1))
    acc_pgd = int(jnp.sum(r.clean_correct & ~p.misclassified))
    assert int(r.robust.sum()) <= acc_pgd, (eps, int(r.robust.sum()), acc_pgd)


def test_undefended_model_is_fully_broken(model, aa_results):
  _, logits_fn, x, y = model
  p = attacks.pgd(logits_fn, x, y, eps=0.2, step_size=0.05, num_steps=20, start="uniform",
                  key=jax.random.key(1))
  assert float(jnp.mean(p.misclassified)) >= 0.97  # PGD breaks (almost) everything at eps 0.2 ...
  assert int(aa_results[0.2].robust.sum()) == 0  # ... and AutoAttack breaks everything


def test_result_encoding_and_worst_case(model, aa_results):
  _, logits_fn, x, y = model
  for eps, r in aa_results.items():
    assert r.attack_names == ("clean", "apgd-ce", "apgd-t", "fab-t", "square")
    bb = np.asarray(r.broken_by)
    np.testing.assert_array_equal(np.asarray(r.robust), bb == -1)
    np.testing.assert_array_equal(~np.asarray(r.clean_correct), bb == 0)
    assert bb.min() >= -1 and bb.max() < len(r.attack_names)
    np.testing.assert_array_equal(np.asarray(r.x_adv)[bb <= 0], np.asarray(x)[bb <= 0])
    # Every broken point is misclassified at x_adv, inside the ball and the box.
    pred = np.asarray(jnp.argmax(logits_fn(r.x_adv), -1))
    assert np.all(pred[bb != -1] != np.asarray(y)[bb != -1])
    assert np.all(pred[bb == -1] == np.asarray(y)[bb == -1])
    assert float(_dist(r.x_adv, x).max()) <= eps * (1 + 1e-5) + 1e-6
    assert float(r.x_adv.min()) >= 0 and float(r.x_adv.max()) <= 1
    # Cumulative accuracies: clean first, non-increasing, the last one is the worst case.
    acc = np.asarray(r.robust_accuracy)
    assert acc.shape == (5,) and np.all(np.diff(acc) <= 0)
    np.testing.assert_allclose(acc[0], np.mean(np.asarray(r.clean_correct)))
    np.testing.assert_allclose(acc[-1], np.mean(np.asarray(r.robust)))
    for s in range(1, 5):
      np.testing.assert_allclose(acc[s], np.mean((bb == -1) | (bb > s)))


def test_batches_of_survivors(model):
  # Gathered survivors are packed into batches of batch_size (the last padded and masked).
  _, logits_fn, x, y = model
  r = aa.autoattack(logits_fn, x, y, eps=0.1, key=jax.random.key(0), version="custom",
                    attacks=("square",), batch_size=48, n_queries=100)
  p = square.square(logits_fn, x, y, eps=0.1, key=jax.random.key(0), n_queries=0)
  assert int(r.robust.sum()) <= int(jnp.sum(r.clean_correct & ~p.misclassified))
  bb = np.asarray(r.broken_by)
  pred = np.asarray(jnp.argmax(logits_fn(r.x_adv), -1))
  assert np.all(pred[bb == 1] != np.asarray(y)[bb == 1]) and (bb == 1).sum() > 10


def test_autoattack_bad_arguments(model):
  _, logits_fn, x, y = model
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="version"):
    aa.autoattack(logits_fn, x, y, eps=0.1, key=key, version="rand")
  with pytest.raises(ValueError, match="attacks"):
    aa.autoattack(logits_fn, x, y, eps=0.1, key=key, version="custom")
  with pytest.raises(ValueError, match="attacks"):
    aa.autoattack(logits_fn, x, y, eps=0.1, key=key, version="custom", attacks=("pgd",))
  with pytest.raises(ValueError, match="Square"):  # Square-L2 is square.py's only
    aa.autoattack(logits_fn, x, y, eps=0.5, key=key, norm="l2", square_variant="square_attack")
  with pytest.raises(ValueError, match="eps"):
    aa.autoattack(logits_fn, x, y, eps=0.0, key=key)
  with pytest.raises(ValueError, match="y"):
    aa.autoattack(logits_fn, x, y[:5], eps=0.1, key=key)


# --- Square ---------------------------------------------------------------------------------------


@jax.custom_jvp
def _undifferentiable(x):
  return x


@_undifferentiable.defjvp
def _undifferentiable_jvp(primals, tangents):
  raise AssertionError("the model was differentiated")


def test_square_never_uses_gradients(model, mlp_apply):
  params, _, x, y = model
  # Any derivative of this model raises at trace time: Square must still run, and break it.
  no_grad_fn = jax.tree_util.Partial(lambda p, v: mlp_apply(p, _undifferentiable(v)), params)
  r = square.square(no_grad_fn, x, y, eps=0.2, key=jax.random.key(2), n_queries=300)
  assert float(jnp.mean(r.misclassified)) > 0.9
  with pytest.raises(AssertionError, match="differentiated"):
    attacks.pgd(no_grad_fn, x, y, eps=0.2, step_size=0.05, num_steps=1)


@pytest.mark.xla_default
def test_gradient_masking_is_flagged(model, mlp_apply):
  params, _, x, y = model
  # Zero gradients: APGD cannot move, Square (gradient-free) breaks the model, AutoAttack warns.
  masked = jax.tree_util.Partial(lambda p, v: mlp_apply(p, jax.lax.stop_gradient(v)), params)
  with pytest.warns(UserWarning, match="gradient masking"):
    r = aa.autoattack(masked, x, y, eps=0.2, key=jax.random.key(3), version="custom",
                      attacks=("apgd-ce", "square"), **BUDGET)
  bb = np.asarray(r.broken_by)
  assert (bb == 2).sum() > 2 * (bb == 1).sum()
  assert float(np.mean(np.asarray(r.robust))) < 0.1


def test_square_schedule_and_invariants(model):
  _, logits_fn, x, y = model
  p = [float(square.p_selection(0.8, i)) for i in (0, 10, 11, 50, 51, 200, 201, 500, 501, 1000,
                                                    1001, 2000, 2001, 4000, 4001, 6000, 6001,
                                                    8000, 8001, 9999)]
  want = [0.8, 0.8] + [0.8 / 2 ** k for k in (1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9,
                                                 9)]
  np.testing.assert_allclose(p, want, rtol=1e-6)
  active = jnp.arange(N_TEST) % 3 != 0
  for variant in square.VARIANTS:
    r = square.square(logits_fn, x, y, eps=0.1, key=jax.random.key(4), n_queries=50,
                      active=active, variant=variant)
    assert float(_dist(r.x_adv, x).max()) <= 0.1 + 1e-6
    assert float(r.x_adv.min()) >= 0 and float(r.x_adv.max()) <= 1
    np.testing.assert_array_equal(r.x_adv[~active], x[~active])
    assert int(r.num_queries.max()) <= 51 and int(r.num_queries[~active].max()) == 0
    np.testing.assert_array_equal(r.misclassified, jnp.argmax(logits_fn(r.x_adv), -1) != y)


# --- FAB ------------------------------------------------------------------------------------------


def _lp_linf(t, w, b):
  """min ||d||_inf s.t. <w, t + d> = b, 0 <= t + d <= 1, as a linear program over (d, s)."""
  n = t.size
  c = np.r_[np.zeros(n), 1.0]
  a_ub = np.block([[np.eye(n), -np.ones((n, 1))], [-np.eye(n), -np.ones((n, 1))]])
  res = optimize.linprog(c, A_ub=a_ub, b_ub=np.zeros(2 * n), A_eq=np.r_[w, 0.0][None],
                         b_eq=[b - w @ t], bounds=[(-ti, 1 - ti) for ti in t] + [(0, None)])
  return res.x[-1] if res.success else None


def test_hyperplane_box_projections_are_minimal():
  rng = np.random.default_rng(0)
  t = rng.uniform(0, 1, (40, 6)).astype(np.float32)
  w = rng.normal(size=(40, 6)).astype(np.float32)
  w[::5, 0] = 0.0
  b = (np.sum(w * t, 1) + rng.normal(size=40) * 0.5).astype(np.float32)
  args = (jnp.asarray(t), jnp.asarray(w), jnp.asarray(b))
  d_inf = np.asarray(fab.project_linf_hyperplane_box(*args))
  d_two = np.asarray(fab.project_l2_hyperplane_box(*args))
  feasible = 0
  for i in range(40):
    for d in (d_inf[i], d_two[i]):
      assert np.all(t[i] + d >= -1e-6) and np.all(t[i] + d <= 1 + 1e-6)
    lp = _lp_linf(t[i].astype(np.float64), w[i].astype(np.float64), float(b[i]))
    if lp is None:  # the hyperplane misses the box: move to the box face towards it
      continue
    feasible += 1
    np.testing.assert_allclose(w[i] @ (t[i] + d_inf[i]), b[i], atol=1e-4)
    np.testing.assert_allclose(np.abs(d_inf[i]).max(), lp, rtol=1e-4, atol=1e-6)
    qp = optimize.minimize(lambda d: d @ d, np.zeros(6), jac=lambda d: 2 * d,
                           constraints=[{"type": "eq", "fun": lambda d: w[i] @ (t[i] + d) - b[i]}],
                           bounds=[(-ti, 1 - ti) for ti in t[i]], method="SLSQP",
                           options={"ftol": 1e-12})
    np.testing.assert_allclose(w[i] @ (t[i] + d_two[i]), b[i], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(d_two[i]), np.linalg.norm(qp.x), rtol=1e-3,
                               atol=1e-5)
  assert feasible >= 20


def test_fab_on_a_linear_model_finds_the_boundary():
  logits_fn = lambda v: v.reshape(v.shape[0], -1) @ jnp.eye(4)  # noqa: E731
  x = jnp.array([[0.6, 0.5, 0.2, 0.1], [0.9, 0.1, 0.1, 0.1]]).reshape(2, 2, 2, 1)
  y = jnp.array([0, 0])
  # Without early stopping FAB converges to the boundary, (0.6 - 0.5) / 2 away for the first
  # point; the second needs 0.4 > eps, so it is not broken and comes back unchanged.
  r = fab.fab(logits_fn, x, y, eps=0.1, n_target_classes=3, n_iter=30, early_stop=False)
  np.testing.assert_allclose(r.distance, [0.05, 0.4], rtol=1e-2)
  assert r.misclassified.tolist() == [True, False]
  np.testing.assert_array_equal(r.x_adv[1], x[1])
  u = fab.fab(logits_fn, x, y, eps=0.1, targeted=False, n_iter=30, early_stop=False)
  np.testing.assert_allclose(u.distance, [0.05, 0.4], rtol=1e-2)


def test_fab_t_points_are_adversarial_within_eps(model):
  _, logits_fn, x, y = model
  r = fab.fab(logits_fn, x, y, eps=0.1, n_iter=20)
  broken = np.asarray(r.distance <= 0.1)
  assert broken.sum() > N_TEST // 2
  np.testing.assert_array_equal(np.asarray(r.misclassified), broken)
  np.testing.assert_allclose(_dist(r.x_adv, x)[broken], r.distance[broken], rtol=1e-5)
  np.testing.assert_array_equal(r.x_adv[~broken], x[~broken])
  # l2 on a few points: the minimal distances are those of adversarial points.
  s = fab.fab(logits_fn, x[:16], y[:16], eps=2.0, n_iter=20, norm="l2", n_target_classes=2)
  ok = np.asarray(s.distance <= 2.0)
  assert ok.sum() > 8
  np.testing.assert_allclose(_dist(s.x_adv, x[:16], "l2")[ok], s.distance[ok], rtol=1e-4)


def test_fab_bad_arguments(model):
  _, logits_fn, x, y = model
  with pytest.raises(ValueError, match="eta"):
    fab.fab(logits_fn, x, y, eps=0.1, eta=0.5)
  with pytest.raises(ValueError, match="n_target_classes"):
    fab.fab(logits_fn, x, y, eps=0.1, n_target_classes=10)
  with pytest.raises(ValueError, match="key"):
    fab.fab(logits_fn, x, y, eps=0.1, n_restarts=2)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    with pytest.raises(ValueError, match="norm"):
      square.square(logits_fn, x, y, eps=0.1, key=jax.random.key(0), norm="l2")


def test_standard_autoattack_runs_the_official_code(model, monkeypatch):
  """AutoAttack's default is fra31/auto-attack's algorithm: its APGD stages are APGD with
  ``variant="official"`` (tests/attacks/test_official_transcriptions.py: the official loop), its Square
  ``square.py``'s; ``apgd_variant="paper"`` and ``square_variant="square_attack"`` switch."""
  _, logits_fn, x, y = model
  defaults = attacks.hyperparameter_defaults("autoattack")
  assert defaults["apgd_variant"] == "official" and defaults["square_variant"] == "autoattack"
  settings = attacks.autoattack_settings(eps=0.1, num_classes=10)
  assert settings["apgd-ce"]["variant"] == settings["apgd-t"]["variant"] == "official"
  assert settings["square"]["variant"] == "autoattack"
  made = []
  make = aa._factory.make

  def recording_make(name, **hyperparameters):
    made.append((name, hyperparameters))
    return make(name, **hyperparameters)

  monkeypatch.setattr(aa._factory, "make", recording_make)
  key = jax.random.key(5)
  r = aa.autoattack(logits_fn, x, y, eps=0.05, key=key, **BUDGET)  # the fixture's programs
  assert [n for n, _ in made] == ["apgd_ce", "apgd_t", "fab_t", "square"]
  assert [h.get("variant") for _, h in made] == ["official", "official", None, "autoattack"]
  made.clear()
  aa.autoattack(logits_fn, x[:8], y[:8], eps=0.05, key=key, apgd_variant="paper",
                square_variant="square_attack", n_iter=2, n_queries=2)
  assert [h.get("variant") for _, h in made] == ["paper", "paper", None, "square_attack"]
  # The APGD-CE stage is that attack, called with the stage's key on the batch of the clean
  # points, padded to the batch size with the first of them and masked.
  sel = np.flatnonzero(np.asarray(r.clean_correct))
  idx = np.concatenate([sel, np.full(len(y) - len(sel), sel[0])])
  stage_key = jax.random.fold_in(jax.random.fold_in(key, aa.ATTACKS.index("apgd-ce")), 0)
  ref = attacks.apgd(logits_fn, x[idx], y[idx], eps=0.05, n_iter=BUDGET["n_iter"], key=stage_key,
                     variant="official", active=jnp.arange(len(y)) < len(sel))
  stage1 = np.asarray(r.broken_by)[sel] == 1
  np.testing.assert_array_equal(stage1, np.asarray(ref.misclassified)[:len(sel)])
  np.testing.assert_array_equal(np.asarray(r.x_adv)[sel][stage1],
                                np.asarray(ref.x_adv)[:len(sel)][stage1])
