"""Minimum-norm attacks (FMN, DDN, CW-L2, DeepFool) against their definitions.

References computed independently here, in NumPy float64:

* affine classifiers, where the minimal distance to the decision boundary has a closed form: for
  the label y and another class j with v = w_y - w_j and gap = z_y - z_j > 0, the distance to the
  half-space {z_j > z_y} is gap / ||v||_q (q the dual norm: l2 -> l2, linf -> l1, l1 -> linf),
  reached at x - gap v / ||v||_2^2 (l2), x - gap sign(v) / ||v||_1 (linf), or by moving the one
  coordinate of largest |v_i| (l1); the region of y is a polytope, so the distance to its
  complement is the minimum over j. Only examples whose minimiser lies in [0, 1] are compared (the
  box then does not bind). For l0 the box binds: coordinate i can lower the gap by at most
  |v_i| times its room to the face (x_i or 1 - x_i), so the minimal count is the shortest prefix of
  those reductions, sorted, that exceeds the gap;
* a digits MLP, against a bisection over eps with the library's PGD
  (:func:`robust_jax.attacks.pgd`), one eps per example (``vmap``).

Gradient attacks follow the margin to the runner-up class, so on a multiclass affine model they can
stop on the facet of that class rather than on the closest facet (a local minimum of the distance):
their tight tests use a binary affine model, where the boundary is one hyperplane. DeepFool, which
linearises every candidate class, is tested on a 4-class model.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks
from robust_jax.attacks import _cw_l2, _ddn, _deepfool, _fmn
from robust_jax.attacks import _minimum_norm as mn
from tests.attacks.invariants import traced_at_most_once

D = 16  # values per image, 4x4x1
B = 32


def _affine_apply(w, b, x):
  return (x.reshape(x.shape[0], -1) - 0.5) @ w + b


def _affine(num_classes, seed):
  """(logits_fn, x, y, W, b): z = (x - 0.5) W + b, and B points in [0.3, 0.7]^D, labelled by the
  model, whose l2 distance to the boundary lies in [0.05, 0.3] (away from the tie and from the
  box)."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(D, num_classes)).astype(np.float32)
  b = (0.1 * rng.normal(size=num_classes)).astype(np.float32)
  cand = rng.uniform(0.3, 0.7, size=(400, D)).astype(np.float32)
  z = (cand - 0.5) @ w + b
  y = z.argmax(1)
  v = w[:, y].T[:, :, None] - w[None]  # [N, D, C]
  gap = z[np.arange(400), y][:, None] - z
  d2 = gap / np.maximum(np.linalg.norm(v, axis=1), 1e-30)
  d2[np.arange(400), y] = np.inf
  keep = np.flatnonzero((d2.min(1) > 0.05) & (d2.min(1) < 0.3))[:B]
  assert keep.size == B
  x = cand[keep].reshape(B, 4, 4, 1)
  wj, bj = jnp.asarray(w), jnp.asarray(b)
  logits_fn = jax.tree_util.Partial(_affine_apply, wj, bj)
  return logits_fn, jnp.asarray(x), jnp.asarray(y[keep], jnp.int32), w.astype(np.float64), b


def _closed_form(x, y, w, b, norm):
  """(distance, minimiser inside the box) per example, float64, for l2 / linf / l1."""
  xf = np.asarray(x, np.float64).reshape(len(y), -1)
  best = np.full(len(y), np.inf)
  inside = np.zeros(len(y), bool)
  for i, yi in enumerate(np.asarray(y)):
    for j in range(w.shape[1]):
      if j == yi:
        continue
      v = w[:, yi] - w[:, j]
      gap = (xf[i] - 0.5) @ v + b[yi] - b[j]
      if norm == "l2":
        d, p = gap / np.linalg.norm(v), xf[i] - gap * v / (v @ v)
      elif norm == "linf":
        d, p = gap / np.abs(v).sum(), xf[i] - gap / np.abs(v).sum() * np.sign(v)
      else:
        k = np.argmax(np.abs(v))
        d, p = gap / abs(v[k]), xf[i].copy()
        p[k] -= gap / v[k]
      if d < best[i]:
        best[i], inside[i] = d, bool(np.all((p >= 0) & (p <= 1)))
  return best, inside


def _l0_exact(x, y, w, b):
  xf = np.asarray(x, np.float64).reshape(len(y), -1)
  best = np.full(len(y), np.inf)
  for i, yi in enumerate(np.asarray(y)):
    for j in range(w.shape[1]):
      if j == yi:
        continue
      v = w[:, yi] - w[:, j]
      gap = (xf[i] - 0.5) @ v + b[yi] - b[j]
      cum = np.cumsum(np.sort(np.abs(v) * np.where(v > 0, xf[i], 1 - xf[i]))[::-1])
      if cum[-1] > gap:
        best[i] = min(best[i], np.searchsorted(cum, gap, side="right") + 1)
  return best


@functools.lru_cache(maxsize=None)
def _binary():
  return _affine(2, seed=0)


@functools.lru_cache(maxsize=None)
def _multiclass():
  return _affine(4, seed=1)


def _check_result(r, logits_fn, x, y, norm):
  """The contract of every minimum-norm result, against independent computations."""
  x_adv = np.asarray(r.x_adv, np.float64)
  x_np = np.asarray(x, np.float64)
  assert r.x_adv.shape == x.shape and r.x_adv.dtype == x.dtype
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  dist = np.asarray(r.distance, np.float64)
  found = np.isfinite(dist)
  pred = np.asarray(jnp.argmax(logits_fn(r.x_adv), -1))
  np.testing.assert_array_equal(pred[found] != np.asarray(y)[found], True)  # adversarial
  np.testing.assert_array_equal(np.asarray(r.misclassified), pred != np.asarray(y))
  delta = (x_adv - x_np).reshape(len(dist), -1)
  actual = {"l0": (delta != 0).sum(1), "l1": np.abs(delta).sum(1),
            "l2": np.linalg.norm(delta, axis=1), "linf": np.abs(delta).max(1)}[norm]
  np.testing.assert_allclose(dist[found], actual[found], rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(x_adv[~found], x_np[~found])  # x where nothing was found
  return dist


# The tight budgets of the affine tests (binary model: every attack converges to the hyperplane).
_TIGHT = {
    "fmn_l2": (lambda f, x, y: _fmn.fmn(f, x, y, norm="l2", steps=300), "l2"),
    "fmn_linf": (lambda f, x, y: _fmn.fmn(f, x, y, norm="linf", steps=300), "linf"),
    "fmn_l1": (lambda f, x, y: _fmn.fmn(f, x, y, norm="l1", steps=300), "l1"),
    "fmn_l1_box": (lambda f, x, y: _fmn.fmn(f, x, y, norm="l1", steps=300, l1_projection="box"),
                   "l1"),
    # Quantisation to 1/255 would put a floor of about sqrt(D) / 510 = 0.008 under the error.
    "ddn": (lambda f, x, y: _ddn.ddn(f, x, y, steps=100, quantize=False), "l2"),
    "cw_l2": (lambda f, x, y: _cw_l2.cw_l2(f, x, y, binary_search_steps=9, max_iterations=200),
              "l2"),
}


@pytest.mark.parametrize("name", sorted(_TIGHT))
def test_affine_binary_norm_is_the_closed_form(name):
  fn, norm = _TIGHT[name]
  logits_fn, x, y, w, b = _binary()
  exact, inside = _closed_form(x, y, w, b, norm)
  assert inside.sum() >= B // 2
  dist = _check_result(fn(logits_fn, x, y), logits_fn, x, y, norm)
  ratio = dist[inside] / exact[inside]
  assert np.all(ratio >= 1 - 1e-4), ratio.min()  # nothing beats the minimum
  assert np.all(ratio <= 1.05), ratio.max()
  assert np.median(ratio) <= 1.01, np.median(ratio)


def test_fmn_l0_count_is_the_exact_minimum():
  logits_fn, x, y, w, b = _binary()
  exact = _l0_exact(x, y, w, b)
  dist = _check_result(_fmn.fmn(logits_fn, x, y, norm="l0", steps=100), logits_fn, x, y, "l0")
  assert np.all(dist >= exact)
  assert np.mean(dist == exact) >= 0.9, (dist, exact)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_first_step_lands_on_the_closest_boundary(norm):
  logits_fn, x, y, w, b = _multiclass()
  exact, inside = _closed_form(x, y, w, b, norm)
  assert inside.sum() >= B // 2
  overshoot = 0.02
  r = _deepfool.deepfool(logits_fn, x, y, norm=norm, overshoot=overshoot)
  dist = _check_result(r, logits_fn, x, y, norm)
  # On an affine model the first step is exact: (1 + overshoot)(distance + 1e-4) along the normal.
  np.testing.assert_allclose(dist[inside], (1 + overshoot) * (exact[inside] + 1e-4), rtol=1e-4)
  np.testing.assert_array_equal(np.asarray(r.num_steps)[inside], 1)


def test_deepfool_without_overshoot_stops_just_past_the_boundary():
  logits_fn, x, y, w, b = _multiclass()
  exact, inside = _closed_form(x, y, w, b, "l2")
  r = _deepfool.deepfool(logits_fn, x, y, overshoot=0.0, max_iter=1)
  dist = _check_result(r, logits_fn, x, y, "l2")
  np.testing.assert_allclose(dist[inside], exact[inside] + 1e-4, rtol=1e-4)
  z = np.asarray(logits_fn(r.x_adv), np.float64)
  m = z[np.arange(B), np.asarray(y)] - np.max(np.where(np.eye(4, dtype=bool)[np.asarray(y)],
                                                       -np.inf, z), 1)
  assert np.all(m[inside] < 0) and np.all(m[inside] > -0.01)  # just past the closest facet


def test_misclassified_points_have_distance_zero():
  logits_fn, x, y, _, _ = _binary()
  y_wrong = 1 - y  # every example misclassified at x
  for fn in (lambda: _fmn.fmn(logits_fn, x, y_wrong, norm="l2", steps=5),
             lambda: _ddn.ddn(logits_fn, x, y_wrong, steps=5),
             lambda: _cw_l2.cw_l2(logits_fn, x, y_wrong, binary_search_steps=2, max_iterations=5),
             lambda: _deepfool.deepfool(logits_fn, x, y_wrong)):
    r = fn()
    np.testing.assert_array_equal(np.asarray(r.distance), 0.0)
    np.testing.assert_array_equal(np.asarray(r.x_adv), np.asarray(x))
    assert bool(jnp.all(r.misclassified))


def test_nothing_found_is_inf_and_x():
  logits_fn, x, y, _, _ = _binary()
  for r in (_fmn.fmn(logits_fn, x, y, norm="l2", steps=0), _ddn.ddn(logits_fn, x, y, steps=0),
            _cw_l2.cw_l2(logits_fn, x, y, max_iterations=0),
            _deepfool.deepfool(logits_fn, x, y, max_iter=0)):
    assert np.all(np.isinf(np.asarray(r.distance)))
    np.testing.assert_array_equal(np.asarray(r.x_adv), np.asarray(x))
    assert not bool(jnp.any(r.misclassified))


def test_examples_are_independent_of_the_batch():
  # Each example's result is that of the example alone: a permuted batch permutes the results.
  logits_fn, x, y, _, _ = _binary()
  perm = np.random.default_rng(0).permutation(B)
  for fn in (lambda xx, yy: _fmn.fmn(logits_fn, xx, yy, norm="l2", steps=20),
             lambda xx, yy: _fmn.fmn(logits_fn, xx, yy, norm="linf", steps=20,
                                     initial_radius="linearised"),
             lambda xx, yy: _ddn.ddn(logits_fn, xx, yy, steps=20),
             lambda xx, yy: _cw_l2.cw_l2(logits_fn, xx, yy, binary_search_steps=3,
                                         max_iterations=30),
             lambda xx, yy: _deepfool.deepfool(logits_fn, xx, yy)):
    a, p = fn(x, y), fn(x[perm], y[perm])
    np.testing.assert_allclose(np.asarray(p.distance), np.asarray(a.distance)[perm], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(p.num_steps), np.asarray(a.num_steps)[perm])


def test_new_budgets_do_not_recompile(monkeypatch):
  logits_fn, x, y, _, _ = _binary()
  cases = ((_fmn, "_fmn", lambda s: _fmn.fmn(logits_fn, x, y, norm="l2", steps=s,
                                             gamma=0.05 + s / 1e3)),
           (_ddn, "_ddn", lambda s: _ddn.ddn(logits_fn, x, y, steps=s, init_norm=1.0 + s)),
           (_cw_l2, "_cw_l2", lambda s: _cw_l2.cw_l2(logits_fn, x, y, binary_search_steps=s,
                                                      max_iterations=3 * s, initial_const=s)),
           (_deepfool, "_deepfool", lambda s: _deepfool.deepfool(logits_fn, x, y, max_iter=s,
                                                                 overshoot=0.01 * s)))
  for module, core, call in cases:
    monkeypatch.setattr(module, core, traced_at_most_once(getattr(module, core)))
    call(2)
    call(3)  # a second trace would raise


def test_ddn_key_and_determinism():
  logits_fn, x, y, _, _ = _binary()
  a = _ddn.ddn(logits_fn, x, y, steps=10, key=jax.random.key(1))
  b = _ddn.ddn(logits_fn, x, y, steps=10, key=jax.random.key(1))
  chex.assert_trees_all_equal(a, b)


def test_bad_hyperparameters_are_named():
  with pytest.raises(ValueError, match="norm"):
    _fmn.check_hyperparameters(norm="l3")
  with pytest.raises(ValueError, match="initial_radius"):
    _fmn.check_hyperparameters(norm="l2", initial_radius="paper")
  with pytest.raises(ValueError, match="gamma"):
    _ddn.check_hyperparameters(gamma=1.0)
  with pytest.raises(ValueError, match="binary_search_steps"):
    _cw_l2.check_hyperparameters(binary_search_steps=0)
  with pytest.raises(ValueError, match="norm"):
    _deepfool.check_hyperparameters(norm="l1")
  with pytest.raises(ValueError, match="candidates"):
    _deepfool.check_hyperparameters(candidates=1)


def test_robust_accuracy_at_counts_examples_above_eps():
  rng = np.random.default_rng(0)
  norms = rng.exponential(size=50)
  norms[:5], norms[5:10] = 0.0, np.inf
  eps = np.array([0.0, 0.1, 0.5, 1.0, 3.0, 1e9])
  acc = np.asarray(mn.robust_accuracy_at(jnp.asarray(norms), jnp.asarray(eps)))
  expected = [sum(n > e for n in norms) / len(norms) for e in eps]
  np.testing.assert_allclose(acc, expected, rtol=1e-6)
  assert np.all(np.diff(acc) <= 0)
  assert float(mn.robust_accuracy_at(jnp.asarray(norms), 0.5)) == pytest.approx(expected[2])


@pytest.mark.parametrize("box", [False, True])
def test_project_l1_is_the_euclidean_projection(box):
  # Feasible, and the variational inequality <z - P(z), s - P(z)> <= 0 for feasible s (the
  # definition of the projection onto a convex set); without the box, equal to Duchi's sort.
  rng = np.random.default_rng(0)
  n, d = 8, 12
  x0 = rng.uniform(0, 1, size=(n, d)).astype(np.float32)
  z = rng.normal(scale=0.5, size=(n, d)).astype(np.float32)
  eps = rng.uniform(0.2, 2.0, size=n).astype(np.float32)
  p = np.asarray(mn.project_l1(jnp.asarray(z), jnp.asarray(eps), jnp.asarray(x0) if box else None),
                 np.float64)
  assert np.all(np.abs(p).sum(1) <= eps * (1 + 1e-5) + 1e-6)
  if box:
    assert np.all(x0 + p >= -1e-7) and np.all(x0 + p <= 1 + 1e-7)
  for i in range(n):
    s = rng.normal(size=(2000, d)) * rng.uniform(0, 1, size=(2000, 1))
    s *= np.minimum(1.0, eps[i] / np.abs(s).sum(1, keepdims=True))
    if box:
      s = np.clip(x0[i] + s, 0, 1) - x0[i]  # clipping towards x0 keeps the l1 ball
    assert np.max((s - p[i]) @ (z[i] - p[i])) <= 1e-5
  if not box:
    for i in range(n):
      u = np.sort(np.abs(z[i]))[::-1]
      css = np.cumsum(u)
      rho = np.nonzero(u * np.arange(1, d + 1) > css - eps[i])[0][-1]
      theta = max((css[rho] - eps[i]) / (rho + 1.0), 0.0)
      ref = np.sign(z[i]) * np.maximum(np.abs(z[i]) - theta, 0)
      if np.abs(z[i]).sum() <= eps[i]:
        ref = z[i]
      np.testing.assert_allclose(p[i], ref, atol=1e-5)


def test_project_l0_keeps_the_largest():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(5, 10)).astype(np.float32)
  k = np.array([0, 1, 3, 9, 10])
  p = np.asarray(mn.project_l0(jnp.asarray(z), jnp.asarray(k)))
  for i in range(5):
    keep = np.argsort(-np.abs(z[i]))[:k[i]]
    ref = np.zeros(10, np.float32)
    ref[keep] = z[i][keep]
    np.testing.assert_array_equal(p[i], ref)


# ---------------------------------------------------------------------------------------------
# A digits MLP: no larger than a bisection over eps with PGD.

N_MLP = 64
_BISECTION = 12
_PGD_STEPS = 50


@pytest.fixture(scope="module")
def mlp(digits_mlp):
  _, logits_fn, x, y = digits_mlp
  return logits_fn, x[:N_MLP], y[:N_MLP]


def _pgd_bisection(logits_fn, x, y, norm, hi):
  """Per example, the smallest eps (to hi / 2^12) at which PGD-50 with the CW margin breaks it;
  inf if not broken at hi. One eps per example: the public ``pgd`` vmapped over the batch."""
  def broken(eps):
    def one(xi, yi, e):
      r = attacks.pgd(logits_fn, xi[None], yi[None], eps=e, step_size=2.5 * e / _PGD_STEPS,
                      num_steps=_PGD_STEPS, norm=norm, loss="cw", kappa=0.0)
      return jnp.argmax(logits_fn(r.x_adv), -1)[0] != yi
    return jax.vmap(one)(x, y, eps)

  broken = jax.jit(broken)
  lo, up = jnp.zeros(x.shape[0]), jnp.full(x.shape[0], hi)
  at_hi = broken(up)
  for _ in range(_BISECTION):
    mid = (lo + up) / 2
    b = broken(mid)
    up, lo = jnp.where(b, mid, up), jnp.where(b, lo, mid)
  return np.where(np.asarray(at_hi), np.asarray(up, np.float64), np.inf)


@pytest.fixture(scope="module")
def pgd_reference(mlp):
  logits_fn, x, y = mlp
  return {"l2": _pgd_bisection(logits_fn, x, y, "l2", 4.0),
          "linf": _pgd_bisection(logits_fn, x, y, "linf", 0.5)}


_MLP_ATTACKS = {
    "fmn_l2": (lambda f, x, y: _fmn.fmn(f, x, y, norm="l2", steps=100), "l2"),
    "fmn_linf": (lambda f, x, y: _fmn.fmn(f, x, y, norm="linf", steps=300), "linf"),
    "ddn": (lambda f, x, y: _ddn.ddn(f, x, y, steps=100), "l2"),
    "cw_l2": (lambda f, x, y: _cw_l2.cw_l2(f, x, y, binary_search_steps=9, max_iterations=1000),
              "l2"),
    "deepfool_l2": (lambda f, x, y: _deepfool.deepfool(f, x, y, norm="l2"), "l2"),
    "deepfool_linf": (lambda f, x, y: _deepfool.deepfool(f, x, y, norm="linf"), "linf"),
}


@pytest.mark.xla_default
@pytest.mark.parametrize("name", sorted(_MLP_ATTACKS))
def test_mlp_no_larger_than_pgd_bisection(name, mlp, pgd_reference):
  # Tolerances: the bisection brackets eps to hi / 4096 (l2 0.001, linf 0.0001: under 0.3% of the
  # median norms 0.41 and 0.077), so a bound on the median of 1% above PGD's leaves room for that
  # and for PGD's own overshoot only. The attacks are heuristics with a fixed budget and each has a
  # few examples where it ends on a worse part of the boundary than PGD, so the per-example bound
  # (5%) is asked of 90% of the examples, not of all.
  fn, norm = _MLP_ATTACKS[name]
  logits_fn, x, y = mlp
  ref = pgd_reference[norm]
  assert np.all(np.isfinite(ref))
  dist = _check_result(fn(logits_fn, x, y), logits_fn, x, y, norm)
  assert np.all(np.isfinite(dist))
  assert np.median(dist) <= 1.01 * np.median(ref), (np.median(dist), np.median(ref))
  assert np.mean(dist <= 1.05 * ref) >= 0.9, np.sort(dist / ref)
