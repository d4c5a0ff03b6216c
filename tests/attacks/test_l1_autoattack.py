"""AutoAttack's L1 version: FAB-L1, Square-L1 and the L1 standard composition.

Against ``fra31/auto-attack`` at commit a392200, transcribed in NumPy float32 below:

* ``fab_projections.projection_l1`` (sort, cumulative sums, bisection), and a linear program
  (scipy's HiGHS) as an independent solver of min ||d||_1 s.t. <w, t + d> = b, t + d in [0, 1].
* ``fab_base.py`` ``attack_single_run`` with ``norm == 'L1'`` (targeted: ``fab_pt.py``'s
  ``get_diff_logits_grads_batch_targeted``; untargeted: ``get_diff_logits_grads_batch`` and the
  l-inf dual norm in ``dist1``), run in lockstep with the library (each reference step starts from
  the library's previous iterate, so every step is compared to float32 rounding).
* ``square.py`` ``attack_single_run``'s ``norm == 'L1'`` branch, ``eta`` and ``eta_rectangles``
  (with the library's random draws, and ``autopgd_base.py``'s ``L1_projection`` transcribed in
  tests/attacks/test_apgd_l1.py).
* ``autoattack.py`` ``set_version('standard')`` for ``norm='L1'``: the attacks, restarts, targets,
  ``use_largereps`` and queries.

Tiny tanh MLPs on 8 x 8 x 1 images; each test takes a few seconds on two cores.
"""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from robust_jax import attacks
from robust_jax.attacks import _autoattack as aa
from robust_jax.attacks import _fab as fab
from robust_jax.attacks import _square as square
from robust_jax.attacks import _square_lp as square_lp
from tests.attacks import invariants
from tests.attacks.test_apgd_l1 import _official_l1_projection
from tests.attacks.test_square_l2 import _margin, _official_eta

F32 = np.float32
B, H, C = 8, 8, 1  # 8 x 8 x 1 images, 10 classes (invariants.tanh_mlp_case)


@pytest.fixture(scope="module")
def data():
  """A tanh MLP, its own labels (every point attacked) but example 2's (misclassified)."""
  return invariants.tanh_mlp_case(jax.random.key(11), B, H, C, scale=0.8, flip=2)


@pytest.fixture(scope="module")
def fab_data():
  """A tanh MLP whose hidden units see few to all pixels (densities 0.05 to 1), so that the
  class gradients differ in sparsity and the untargeted FAB's choice of hyperplane depends on the
  dual norm; 8 x 8 x 1 images, first and last rows on the faces of the box, its own labels but
  example 2's."""
  k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
  dens = jnp.linspace(0.05, 1.0, 16)
  w1 = jax.random.normal(k1, (64, 16)) * (jax.random.uniform(k4, (64, 16)) < dens) * 3.0 / jnp.sqrt(
      64 * dens)
  w2 = jax.random.normal(k2, (16, 10))

  def f(v):
    return jnp.tanh(v.reshape(v.shape[0], -1) @ w1) @ w2

  x = jax.random.uniform(k3, (B, H, H, C)).at[:, 0].set(0.0).at[:, -1].set(1.0)
  y = np.asarray(jnp.argmax(f(x), -1)).astype(np.int32)
  y[2] = (y[2] + 1) % 10
  return f, x, jnp.asarray(y)


@pytest.fixture(scope="module")
def square_data():
  """The same on 10 x 10 x 2 images: an initial grid of 2 x 2 windows, two channels (the L1
  branch's per-channel budget has a factor C)."""
  return invariants.tanh_mlp_case(jax.random.key(12), B, 10, 2, scale=0.6, flip=2)


def _l1(a, b):
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  return np.abs(d).reshape(d.shape[0], -1).sum(1)


def _in_l1_ball_and_box(q, x, eps):
  assert q.min() >= 0.0 and q.max() <= 1.0
  d = _l1(q, x)
  assert np.all(d <= eps * (1 + 1e-5) + 1e-6), d.max()


# --- the projection -------------------------------------------------------------------------------


def _official_projection_l1(points_to_project, w_hyperplane, b_hyperplane):
  """``fab_projections.projection_l1`` (float32 NumPy; ``torch.argsort`` as a stable argsort)."""
  t, w, b = points_to_project, w_hyperplane.copy(), b_hyperplane
  c = (w * t).sum(1) - b
  ind2 = 2 * (c >= 0) - 1
  w *= ind2[:, None]
  c = c * ind2
  with np.errstate(divide="ignore"):
    r = np.minimum(np.abs(1 / w), F32(1e12))
  indr = np.argsort(r, axis=1, kind="stable")
  indr_rev = np.argsort(indr, axis=1, kind="stable")
  c6 = (w < 0).astype(F32)
  d = (-t + c6) * (w != 0).astype(F32)
  ds = np.take_along_axis(np.minimum(-w * t, w * (1 - t)), indr, 1)
  ds2 = np.concatenate((c[:, None], ds), 1)
  s = np.cumsum(ds2, axis=1, dtype=F32)
  c2 = s[:, -1] < 0
  lb = np.zeros(c2.sum(), F32)
  ub = np.full_like(lb, s.shape[1])
  nitermax = math.ceil(math.log2(w.shape[1]))
  s_ = s[c2]
  for _ in range(nitermax):
    counter4 = np.floor((lb + ub) / 2)
    counter2 = counter4.astype(np.int64)
    c3 = s_[np.arange(s_.shape[0]), counter2] > 0
    lb = np.where(c3, counter4, lb)
    ub = np.where(c3, ub, counter4)
  lb2 = lb.astype(np.int64)
  if c2.any():
    rows = np.flatnonzero(c2)
    indr_c = indr[rows, lb2]
    alpha = -s[rows, lb2] / w[rows, indr_c]
    c5 = np.arange(w.shape[1])[None, :] < lb[:, None]
    u3 = np.take_along_axis(c5, indr_rev[rows], 1)
    d[rows] = d[rows] * u3.astype(F32)
    d[rows, indr_c] = alpha
  return d * (np.abs(w) > 1e-8).astype(F32)


def _lp_l1(t, w, b):
  """min ||d||_1 s.t. <w, t + d> = b, 0 <= t + d <= 1: a linear program over d = p - m, p, m >= 0
  (float64; None when the hyperplane misses the box)."""
  n = t.size
  res = optimize.linprog(np.ones(2 * n), A_eq=np.r_[w, -w][None], b_eq=[b - w @ t],
                         bounds=[(0, 1 - ti) for ti in t] + [(0, ti) for ti in t], method="highs")
  return res.x[:n] - res.x[n:] if res.success else None


def test_l1_projection_against_a_linear_program_and_the_official_code():
  rng = np.random.default_rng(0)
  n, d = 160, 12
  t = rng.uniform(size=(n, d)).astype(F32)
  t[:16] = np.round(t[:16])  # points on the corners of the box
  w = rng.normal(size=(n, d)).astype(F32)
  w[16:32, :4] = 0.0  # directions the hyperplane does not constrain
  b = ((w * t).sum(1) + rng.normal(size=n) * rng.choice([0.05, 0.5, 3.0], size=n)).astype(F32)
  b[32:36] = (w[32:36] * t[32:36]).sum(1)  # on the hyperplane already: d = 0
  got = np.asarray(jax.jit(fab.project_l1_hyperplane_box)(t, w, b))
  # The official code (sort and cumulative sums): the same coordinates move, by the same amounts
  # but for the partial coordinate i, whose |w_i| d_i is the remainder of c after up to d float32
  # additions (summed in another order here): d ulps of (|c| + the mass), divided by |w_i|.
  off = _official_projection_l1(t, w, b)
  mass = np.abs(w) * np.where(w * np.sign((w * t).sum(1) - b)[:, None] > 0, t, 1 - t)
  ulps = d * np.finfo(F32).eps * (np.abs((w * t).sum(1) - b) + mass.sum(1))[:, None]
  assert np.all(np.abs(got - off) <= ulps / np.maximum(np.abs(w), 1e-8))
  assert np.mean(got != off) < 0.05  # the saturated and unmoved coordinates are exactly equal
  np.testing.assert_allclose(got[32:36], 0.0, atol=1e-6)  # c is 0 up to the rounding of <w, t>
  assert np.all(t + got >= 0.0) and np.all(t + got <= 1.0)
  feasible = 0
  for i in range(n):
    ref = _lp_l1(t[i].astype(np.float64), w[i].astype(np.float64), float(b[i]))
    if ref is None:  # the box misses the hyperplane: every coordinate to the face towards it
      sign = 1.0 if (w[i] * t[i]).sum() - b[i] >= 0 else -1.0
      face = np.where(w[i] * sign > 0, -t[i], 1.0 - t[i])
      np.testing.assert_allclose(got[i], np.where(w[i] != 0, face, 0.0), atol=1e-7)
      continue
    feasible += 1
    np.testing.assert_allclose(w[i] @ (t[i] + got[i]), b[i], atol=1e-4)
    np.testing.assert_allclose(np.abs(got[i]).sum(), np.abs(ref).sum(), rtol=1e-5, atol=1e-6)
    assert np.count_nonzero(got[i]) <= np.count_nonzero(w[i])
  assert 60 <= feasible < n
  # Ties in |w|: the mass goes to the tied coordinates in index order (any split is minimal).
  tie = np.asarray(fab.project_l1_hyperplane_box(
      jnp.full((1, 4), 0.5), jnp.array([[1.0, 1.0, 1.0, 3.0]]), jnp.array([3.0 - 2.3])))
  np.testing.assert_allclose(tie, [[-0.5, -0.3, 0.0, -0.5]], atol=1e-6)  # 1.5 by |w| 3, then 1s


# --- FAB-L1 ---------------------------------------------------------------------------------------


def _official_fab_l1_single_run(f, x, y, target, n_iter, lockstep, alpha_max=0.1, eta=1.05,
                                beta=0.9):
  """``fab_base.py`` ``attack_single_run``, ``norm == 'L1'``, no random start (restart 0), NumPy
  float32; ``target`` None is the untargeted FAB (``get_diff_logits_grads_batch``: the Jacobian of
  all logits), else FAB-T. In lockstep with the library's iterates. Returns the reference
  iterates [n_iter, B, ...], (adv, res2), res2 the l1 distance of adv (1e10 if none), and how
  often the hyperplane chosen with the l1 rule's linf dual norm is not the l2 rule's."""
  bs = x.shape[0]
  u1 = np.arange(bs)

  @jax.jit
  def diff_logits_grads(v):
    z = f(v)
    if target is None:
      g = jnp.moveaxis(jax.jacrev(lambda q: f(q).sum(0))(v), 1, 0)  # [B, K, ...], dz_k / dv
      df = z - z[u1, y][:, None]
      dg = g - g[u1, y][:, None]
      return df.at[u1, y].set(1e10), dg
    g = jax.grad(lambda q: jnp.sum(-(f(q)[u1, y] - f(q)[u1, target])))(v)
    return (-(z[u1, y] - z[u1, target]))[:, None], g[:, None]

  predict = jax.jit(lambda v: jnp.argmax(f(v), 1))
  im2 = x.copy()
  adv = im2.copy()
  res2 = 1e10 * np.ones([bs], F32)
  x1 = im2.copy()
  x0 = im2.reshape([bs, -1])
  iterates = []
  other_choice = 0
  for it in range(n_iter):
    df, dg = (np.asarray(a) for a in diff_logits_grads(jnp.asarray(x1)))
    dg_flat = dg.reshape([df.shape[0], df.shape[1], -1])
    dist1 = np.abs(df) / (F32(1e-12) + np.abs(dg_flat).max(2))
    ind = dist1.argmin(1)
    other_choice += np.sum(ind != (np.abs(df) / np.sqrt((dg_flat ** 2).sum(2) + 1e-24)).argmin(1))
    dg2 = dg[u1, ind]
    b = -df[u1, ind] + (dg2 * x1).reshape(bs, -1).sum(-1)
    w = dg2.reshape([bs, -1])
    d3 = _official_projection_l1(np.concatenate((x1.reshape([bs, -1]), x0), 0),
                                 np.concatenate((w, w), 0), np.concatenate((b, b), 0))
    d1, d2 = d3[:bs].reshape(x1.shape), d3[-bs:].reshape(x1.shape)
    a0 = np.maximum(np.abs(d3).sum(1, keepdims=True).reshape(-1, 1, 1, 1), F32(1e-8))
    a1, a2 = a0[:bs], a0[-bs:]
    alpha = np.minimum(np.maximum(a1 / (a1 + a2), 0), F32(alpha_max))
    x1 = np.clip((x1 + F32(eta) * d1) * (1 - alpha) + (im2 + d2 * F32(eta)) * alpha, 0.0, 1.0)
    iterates.append(x1.copy())
    x1 = np.array(lockstep[it])
    is_adv = np.asarray(predict(jnp.asarray(x1))) != y
    if is_adv.any():
      ind_adv = np.flatnonzero(is_adv)
      t = np.abs(x1[ind_adv] - im2[ind_adv]).reshape(ind_adv.shape[0], -1).sum(-1)
      closer = t < res2[ind_adv]
      adv[ind_adv[closer]] = x1[ind_adv[closer]]
      res2[ind_adv] = np.where(closer, t, res2[ind_adv])
      x1[ind_adv] = im2[ind_adv] + (x1[ind_adv] - im2[ind_adv]) * F32(beta)
  return np.stack(iterates), (adv, res2), other_choice


@pytest.mark.parametrize("targeted", [True, False])
def test_fab_l1_matches_the_official_loop(fab_data, targeted):
  f, x, y = fab_data
  eps, n_iter = 0.6, 12
  xn, yn = np.asarray(x), np.asarray(y)
  clean = np.asarray(jnp.argmax(f(x), -1) == y)
  logits_fn, calls = invariants.recording(f)
  r = fab.fab(logits_fn, x, y, eps=eps, norm="l1", targeted=targeted, n_target_classes=1,
              n_iter=n_iter, early_stop=False)
  # Calls: the clean batch; per iteration the linearisation and the prediction at the new iterate
  # (its input, every second call, is the iterate); the re-evaluation at the end.
  assert len(calls) == 1 + 2 * n_iter + 1
  lib_iterates = np.stack(calls[2:1 + 2 * n_iter:2])
  for q in lib_iterates:  # FAB's iterates stay in the box (a minimum-norm attack: not the ball)
    assert q.min() >= 0.0 and q.max() <= 1.0
  # output.sort(dim=-1)[1][:, -2]: the class of the second largest clean logit.
  target = np.argsort(np.asarray(f(x)), axis=1, kind="stable")[:, -2].astype(np.int32)
  ref, (adv, res2), other_choice = _official_fab_l1_single_run(
      f, xn[clean], yn[clean], target[clean] if targeted else None, n_iter, lib_iterates[:, clean])
  assert targeted or other_choice > 0  # the dual norm matters on this model
  np.testing.assert_allclose(lib_iterates[:, clean], ref, rtol=0, atol=2e-5)
  dist = np.asarray(r.distance)
  np.testing.assert_allclose(dist[clean], np.where(res2 < 1e10, res2, np.inf), rtol=1e-5)
  assert np.all(dist[~clean] == 0.0)  # misclassified without attack: distance 0, not attacked
  broken = dist <= eps
  assert 0 < (broken & clean).sum() < clean.sum()
  # The returned points: adversarial where counted broken, at the reported l1 distance, in the
  # ball and the box; the others come back as x.
  x_adv = np.asarray(r.x_adv)
  pred = np.asarray(jnp.argmax(f(r.x_adv), -1))
  np.testing.assert_array_equal(np.asarray(r.misclassified), broken)
  assert np.all(pred[broken] != yn[broken])
  np.testing.assert_allclose(_l1(x_adv, xn)[broken & clean], dist[broken & clean], rtol=1e-5)
  _in_l1_ball_and_box(x_adv, xn, eps)
  np.testing.assert_array_equal(x_adv[~broken], xn[~broken])


def test_fab_l1_restarts_and_early_stop(data, monkeypatch):
  """Random restarts at l1 radius 0.5 min(d_best, eps) (in the box), early stopping: every point
  counted broken is adversarial within eps; one compilation for two eps values; the factory's
  FAB-T-L1 is the function's."""
  f, x, y = data
  key = jax.random.key(4)
  made = attacks.make("fab_t", eps=1.5, norm="l1", n_target_classes=2, n_restarts=2, n_iter=8)
  np.testing.assert_array_equal(np.asarray(made(f, x, y, key).x_adv), np.asarray(
      fab.fab(f, x, y, eps=1.5, norm="l1", n_target_classes=2, n_restarts=2, n_iter=8,
              key=key).x_adv))
  monkeypatch.setattr(fab, "_fab", invariants.traced_at_most_once(fab._fab))
  logits_fn, calls = invariants.recording(f)
  res = [fab.fab(logits_fn, x, y, eps=e, norm="l1", n_target_classes=2, n_restarts=2,
                 n_iter=8, key=key) for e in (0.5, 1.5)]
  for e, r in zip((0.5, 1.5), res):
    broken = np.asarray(r.distance) <= e
    np.testing.assert_array_equal(np.asarray(r.misclassified), broken)
    assert np.all(np.asarray(jnp.argmax(f(r.x_adv), -1))[broken] != np.asarray(y)[broken])
    _in_l1_ball_and_box(np.asarray(r.x_adv), np.asarray(x), e)
  assert np.sum(np.asarray(res[1].distance) <= 1.5) > np.sum(np.asarray(res[0].distance) <= 0.5)
  for q in calls:
    assert q.min() >= 0.0 and q.max() <= 1.0


# --- Square-L1 ------------------------------------------------------------------------------------


def test_eta_l1_matches_the_official_eta():
  eta = jax.jit(square_lp.eta, static_argnums=(1, 3))
  for transpose in (False, True):
    for s in range(1, 14):
      got = np.asarray(eta(jnp.asarray(s), 16, jnp.asarray(transpose), "l1"))
      np.testing.assert_allclose(got[:s, :s], _official_eta(s, transpose, "L1"), rtol=1e-6,
                                 atol=1e-7, err_msg=f"s={s}")
      assert not got[s:].any() and not got[:, s:].any()


def _official_square_l1(f, x, y, eps, n_queries, p_init, key, b_full, keep):
  """``attack_single_run`` with ``norm == 'L1'`` and ``loss == 'margin'`` (NHWC), on the examples
  ``keep`` of the library's batch, with the library's random draws (taken for ``b_full``)."""
  eps = F32(eps)
  _, h, w, c = x.shape
  k_init, k_loop = jax.random.split(key)
  s, corners = square_lp.l2_init_grid(h, w)
  t_init, signs_init = (np.asarray(a) for a in square_lp.l2_init_draws(k_init, b_full, c,
                                                                    len(corners)))
  delta_init = np.zeros_like(x)
  for j, (vh, vw) in enumerate(corners):  # the official double loop over the grid
    window = delta_init[:, vh:vh + s, vw:vw + s, :]
    window += (_official_eta(s, t_init[j], "L1")[None, :window.shape[1], :window.shape[2], None]
               * signs_init[j][keep][:, None, None, :])
  r_best = _official_l1_projection(x, delta_init, eps * (1.0 - 1e-6))
  x_best = x + delta_init + r_best
  margin_min = _margin(f, x_best, y)
  loss_min = margin_min.copy()
  n_q = np.ones(x.shape[0])
  queries = [x_best.copy()]
  for i_iter in range(n_queries):
    idx_to_fool = np.flatnonzero(margin_min > 0.0)
    if idx_to_fool.size == 0:
      break
    x_curr, x_best_curr, y_curr = x[idx_to_fool], x_best[idx_to_fool], y[idx_to_fool]
    delta_curr = x_best_curr - x_curr
    p = float(square.p_selection(p_init, i_iter))
    s = max(int(round(np.sqrt(F32(p) * F32(h * w)))), 3)
    s = min(s + 1 if s % 2 == 0 else s, min(h, w))
    draws = square_lp.l2_iteration_draws(k_loop, i_iter, b_full, c, h, w, jnp.asarray(s))
    vh, vw, vh2, vw2, transpose = (int(v) for v in draws[:5])
    signs = np.asarray(draws[5])[keep][idx_to_fool]
    norms_window_1 = np.abs(delta_curr[:, vh:vh + s, vw:vw + s, :]).sum(axis=(1, 2), keepdims=True)
    mask_image = np.zeros_like(x_curr)
    mask_image[:, vh:vh + s, vw:vw + s, :] = 1.0
    mask_image[:, vh2:vh2 + s, vw2:vw2 + s, :] = 1.0
    norms_image = np.abs(delta_curr).reshape(len(idx_to_fool), -1).sum(-1).reshape(-1, 1, 1, 1)
    norms_windows = np.abs(delta_curr * mask_image).sum(axis=(1, 2), keepdims=True)
    new_deltas = np.ones([len(idx_to_fool), s, s, c], F32)
    new_deltas *= _official_eta(s, transpose, "L1")[None, :, :, None] * signs[:, None, None, :]
    new_deltas += delta_curr[:, vh:vh + s, vw:vw + s, :] / (F32(1e-12) + norms_window_1)
    new_deltas = new_deltas / (F32(1e-12) + np.abs(new_deltas).sum(axis=(1, 2), keepdims=True)) * (
        np.maximum(eps - norms_image, F32(0.0)) / F32(c) + norms_windows) * F32(c)
    delta_curr[:, vh2:vh2 + s, vw2:vw2 + s, :] = 0.0
    delta_curr[:, vh:vh + s, vw:vw + s, :] = new_deltas + 0
    x_new = x_curr + delta_curr + _official_l1_projection(x_curr, delta_curr, eps * (1.0 - 1e-6))
    queries.append((idx_to_fool, x_new.copy()))
    marg = _margin(f, x_new, y_curr)
    improved = (marg < loss_min[idx_to_fool]) | (marg <= 0.0)  # the margin loss: the same test
    loss_min[idx_to_fool] = np.minimum(marg, loss_min[idx_to_fool])
    margin_min[idx_to_fool] = np.where(improved, marg, margin_min[idx_to_fool])
    x_best[idx_to_fool] = np.where(improved[:, None, None, None], x_new, x_best_curr)
    n_q[idx_to_fool] += 1.0
  return n_q, x_best, margin_min, queries


def test_square_l1_matches_the_official_loop(square_data):
  f, x, y = square_data
  eps, n_queries = 2.0, 30
  xn, yn = np.asarray(x), np.asarray(y)
  clean = np.asarray(jnp.argmax(f(x), -1) == y)
  logits_fn, calls = invariants.recording(f)
  key = jax.random.key(3)
  r = attacks.square(logits_fn, x, y, eps=eps, key=key, n_queries=n_queries, norm="l1",
                     variant="autoattack")
  n_q, x_best, m_min, ref_queries = _official_square_l1(f, xn[clean].copy(), yn[clean], eps,
                                                        n_queries, 0.8, key, B, clean)
  # The official projection sorts and sums in float32, the library's bisects: ~1e-6.
  np.testing.assert_allclose(np.asarray(r.x_adv)[clean], x_best, rtol=0, atol=5e-6)
  np.testing.assert_array_equal(np.asarray(r.num_queries)[clean], n_q)
  np.testing.assert_allclose(np.asarray(r.margin)[clean], m_min, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(r.x_adv)[~clean], xn[~clean])  # never attacked
  assert 0 < np.sum(m_min <= 0) < clean.sum()  # some broken, some not
  # Every query of the library: in the l1 ball and the box, and equal to the official candidate.
  lib_queries = calls[1:-1]  # after the clean batch, before the final re-evaluation
  assert len(lib_queries) == len(ref_queries)
  np.testing.assert_allclose(lib_queries[0][clean], ref_queries[0], rtol=0, atol=5e-6)
  for q, (idx, ref) in zip(lib_queries[1:], ref_queries[1:]):
    _in_l1_ball_and_box(q, xn, eps)
    np.testing.assert_allclose(q[clean][idx], ref, rtol=0, atol=5e-6)
  # The start uses the whole budget (the grid's mass is larger than eps, then projected).
  np.testing.assert_allclose(_l1(lib_queries[0], xn)[clean], eps * (1 - 1e-6), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(r.misclassified),
                                np.asarray(jnp.argmax(f(r.x_adv), -1) != y))


def test_square_l1_validation(data):
  f, x, y = data
  key = jax.random.key(0)
  made = attacks.make("square", eps=2.0, norm="l1", variant="autoattack", n_queries=5)
  assert made.hyperparameters["norm"] == "l1"
  with pytest.raises(ValueError, match="variant='autoattack'"):
    attacks.make("square", eps=2.0, norm="l1")  # the default variant is max-andr's linf code
  with pytest.raises(ValueError, match=r"eps must be in \[0.0, inf\)"):
    attacks.make("square", eps=-1.0, norm="l1", variant="autoattack")
  with pytest.raises(ValueError, match="5 pixels"):
    attacks.square(f, jnp.zeros((2, 4, 4, 4)), jnp.array([0, 1]), eps=1.0, key=key, norm="l1",
                   variant="autoattack")
  with pytest.raises(ValueError, match="norm must be one of"):
    attacks.make("fab_t", eps=1.0, norm="l0")
  with pytest.raises(ValueError, match="square_variant must be 'autoattack'"):
    attacks.make("autoattack", eps=2.0, norm="l1", square_variant="square_attack")


# --- the L1 standard version ----------------------------------------------------------------------


def test_l1_standard_is_the_official_composition(data, monkeypatch):
  """``set_version('standard')`` with ``norm='L1'``: APGD-CE (5 restarts, use_largereps), APGD-T
  (5 targets, 1 restart, use_largereps), FAB-T (9 targets, 1 restart), Square (5,000 queries,
  p_init 0.8), all L1; ``'plus'`` keeps the constructor's settings."""
  s = attacks.autoattack_settings(eps=12.0, norm="l1", num_classes=10)
  assert tuple(s) == ("apgd-ce", "apgd-t", "fab-t", "square")
  assert all(stage["norm"] == "l1" and stage["eps"] == 12.0 for stage in s.values())
  ce, t, ft, sq = s["apgd-ce"], s["apgd-t"], s["fab-t"], s["square"]
  assert (ce["n_restarts"], ce["use_largereps"], ce["n_iter"], ce["loss"]) == (5, True, 100, "ce")
  assert (t["n_target_classes"], t["n_restarts"], t["use_largereps"]) == (5, 1, True)
  assert ce["variant"] == t["variant"] == "official"
  assert (ft["n_target_classes"], ft["n_restarts"], ft["n_iter"]) == (9, 1, 100)
  assert (ft["alpha_max"], ft["eta"], ft["beta"]) == (0.1, 1.05, 0.9)
  assert (sq["n_queries"], sq["p_init"], sq["loss"], sq["variant"]) == (5000, 0.8, "margin",
                                                                          "autoattack")
  plus = attacks.autoattack_settings(eps=12.0, norm="l1", version="plus", num_classes=10)
  assert plus["apgd-ce"]["n_restarts"] == 5 and not plus["apgd-ce"]["use_largereps"]
  assert plus["apgd-t"]["n_target_classes"] == 9 and plus["fab"]["n_restarts"] == 5
  assert attacks.make("autoattack", eps=12.0, norm="l1").hyperparameters["norm"] == "l1"

  # What autoattack() itself makes: every stage recorded, none breaking anything.
  made = []
  unbroken = lambda v: types.SimpleNamespace(  # noqa: E731
      x_adv=v, misclassified=jnp.zeros(v.shape[0], bool), distance=jnp.full(v.shape[0], jnp.inf))
  monkeypatch.setattr(aa._factory, "make", lambda name, **h: made.append((name, h)) or (
      lambda logits_fn, v, y, key, active=None: unbroken(v)))
  f, x, y = data
  r = aa.autoattack(f, x, y, eps=2.0, key=jax.random.key(0), norm="l1")
  assert r.attack_names == ("clean", "apgd-ce", "apgd-t", "fab-t", "square")
  assert [n for n, _ in made] == ["apgd_ce", "apgd_t", "fab_t", "square"]
  (_, h_ce), (_, h_t), (_, h_ft), (_, h_sq) = made
  assert h_ce["n_restarts"] == 5 and h_ce["use_largereps"] and h_ce["norm"] == "l1"
  assert h_t["n_target_classes"] == 5 and h_t["n_restarts"] == 1 and h_t["use_largereps"]
  assert h_ft["n_target_classes"] == 9 and h_ft["n_restarts"] == 1 and h_ft["norm"] == "l1"
  assert h_sq["norm"] == "l1" and h_sq["n_queries"] == 5000 and h_sq["variant"] == "autoattack"


def test_l1_standard_is_at_least_as_strong_as_each_stage():
  """The composition on a tiny model (the official 100 iterations, 300 queries): its robust
  accuracy is at most that of each stage run alone with the same key, and every point it counts
  broken is adversarial in the l1 ball and the box.

  Pointwise, the points it leaves robust are robust for APGD-CE alone (the same run: the first
  stage sees the same batch) and for FAB-T alone (deterministic per point: one run from x). APGD-T
  and Square draw their random starts and windows per batch, and a later stage's batch holds only
  the survivors, so alone they run with other draws (as in the official code, whose torch draws
  also depend on the batch): there only the accuracies are compared."""
  f, x, y = invariants.tanh_mlp_case(jax.random.key(7), 16, H, C, scale=0.7, flip=2)
  eps, key = 1.0, jax.random.key(0)
  budgets = dict(n_iter=100, n_queries=300)
  r = attacks.autoattack(f, x, y, eps=eps, key=key, norm="l1", **budgets)
  robust = np.asarray(r.robust)
  broken = np.asarray(r.clean_correct) & ~robust
  assert 0 < broken.sum() and robust.sum() > 0
  assert np.all(np.asarray(jnp.argmax(f(r.x_adv), -1))[broken] != np.asarray(y)[broken])
  _in_l1_ball_and_box(np.asarray(r.x_adv), np.asarray(x), eps)
  assert np.all(np.diff(np.asarray(r.robust_accuracy)) <= 0)
  for name in ("apgd-ce", "apgd-t", "fab-t", "square"):
    alone = attacks.autoattack(f, x, y, eps=eps, key=key, norm="l1", version="custom",
                               attacks=(name,), **budgets)
    assert float(r.robust_accuracy[-1]) <= float(alone.robust_accuracy[-1]), name
    if name in ("apgd-ce", "fab-t"):
      assert np.all(np.asarray(alone.robust)[robust]), name
