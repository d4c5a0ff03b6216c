"""APGD-L1 (``norm="l1"``): fra31/auto-attack ``autoattack/autopgd_base.py``, ``L1_projection``,
``attack_single_run``'s L1 branch and ``decr_eps_pgd`` (``use_largereps``), transcribed in NumPy
below and run against the library on a tiny linear model; the joint l1-box projection against an
independent solver; iterates in the l1 ball and the box."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks
from robust_jax.attacks import _apgd as apgd_lib
from robust_jax.attacks import _projections as projections

F32 = np.float32
B, H, C, K = 6, 4, 1, 5  # 4 x 4 x 1 images, 5 classes
D = H * H * C


# --- the projection -------------------------------------------------------------------------------


def _official_l1_projection(x2, y2, eps1):
  """``autopgd_base.py`` ``L1_projection(x2, y2, eps1)`` (float32, NumPy; ``torch.sort`` on
  ``-cat(u, l)``, ascending: the same order for distinct values)."""
  x = x2.astype(F32).reshape(x2.shape[0], -1)
  y = y2.astype(F32).reshape(y2.shape[0], -1)
  sigma = np.sign(y)
  u = np.minimum(1 - x - y, x + y)
  u = np.minimum(np.zeros_like(y), u)
  l = -np.abs(y)
  d = u.copy()
  cat = -np.concatenate((u, l), 1)
  indbs = np.argsort(cat, axis=1, kind="stable")
  bs = np.take_along_axis(cat, indbs, 1)
  bs2 = np.concatenate((bs[:, 1:], np.zeros((bs.shape[0], 1), F32)), 1)
  inu = 2 * (indbs < u.shape[1]).astype(F32) - 1
  size1 = inu.cumsum(axis=1, dtype=F32)
  s1 = -u.sum(axis=1)
  c = F32(eps1) - np.abs(y).sum(axis=1)
  c5 = s1 + c < 0
  c2 = np.flatnonzero(c5)
  s = s1[:, None] + np.cumsum((bs2 - bs) * size1, axis=1, dtype=F32)
  if c2.size:
    lb = np.zeros(c2.size, F32)
    ub = np.ones_like(lb) * (bs.shape[1] - 1)
    nitermax = np.ceil(np.log2(F32(bs.shape[1])))
    counter = 0
    while counter < nitermax:
      counter4 = np.floor((lb + ub) / 2.0)
      counter2 = counter4.astype(np.int64)
      c8 = s[c2, counter2] + c[c2] < 0
      lb[c8] = counter4[c8]
      ub[~c8] = counter4[~c8]
      counter += 1
    lb2 = lb.astype(np.int64)
    alpha = (-s[c2, lb2] - c[c2]) / size1[c2, lb2 + 1] + bs2[c2, lb2]
    d[c2] = -np.minimum(np.maximum(-u[c2], alpha[:, None]), -l[c2])
  return (sigma * d).reshape(x2.shape)


def _reference_projection(x0, z, eps):
  """An independent solver: the Euclidean projection of z onto {||d||_1 <= eps, 0 <= x0 + d <= 1}
  is d_i = sign(z_i) min(max(|z_i| - lam, 0), cap_i) (KKT), cap_i the room to the box face in
  the direction of z_i; lam >= 0 by float64 bisection (60 halvings) on the l1 norm."""
  x0 = x0.reshape(x0.shape[0], -1).astype(np.float64)
  z = z.reshape(z.shape[0], -1).astype(np.float64)
  cap = np.where(z >= 0, 1.0 - x0, x0)
  out = np.empty_like(z)
  for i in range(z.shape[0]):
    def d(lam):
      return np.sign(z[i]) * np.minimum(np.maximum(np.abs(z[i]) - lam, 0.0), cap[i])
    if np.abs(d(0.0)).sum() <= eps:
      out[i] = d(0.0)
      continue
    lo, hi = 0.0, np.abs(z[i]).max()
    for _ in range(60):
      mid = 0.5 * (lo + hi)
      lo, hi = (lo, mid) if np.abs(d(mid)).sum() <= eps else (mid, hi)
    out[i] = d(hi)
  return out


D_PROJ = 18  # values per example in the projection test


def test_l1_box_projection_against_an_independent_solver():
  rng = np.random.default_rng(0)
  x0 = rng.uniform(size=(64, 3, 3, 2)).astype(F32)
  x0[:8] = np.round(x0[:8])  # centres on the faces of the box
  z = (rng.normal(size=x0.shape) * rng.choice([0.05, 0.5, 3.0], size=(64, 1, 1, 1))).astype(F32)
  for eps in (0.1, 1.0, 4.0):
    corr = np.asarray(jax.jit(projections.l1_box_correction)(x0, z, eps))
    got = (z + corr).reshape(64, -1)
    ref = _reference_projection(x0, z, eps)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
    # The transcription solves the same problem, to the rounding of its float32 cumulative sums
    # over the 2 d breakpoints (at most 2 d float32 ulps of the l1 mass, per example).
    off = z.reshape(64, -1) + _official_l1_projection(x0, z, eps).reshape(64, -1)
    bound = 2 * D_PROJ * np.finfo(F32).eps * (np.abs(z).reshape(64, -1).sum(1) + eps)
    assert np.all(np.abs(off - ref).max(1) <= bound)
    assert np.all(np.abs(got).sum(1) <= eps * (1 + 1e-5))
    pt = x0.reshape(64, -1) + got  # in the box up to the rounding of x0 + (z + c): 2 ulps of 1
    assert pt.min() >= -2 * np.finfo(F32).eps and pt.max() <= 1 + 2 * np.finfo(F32).eps
    # Inside the ball and the box already: unchanged.
    small = (z * 1e-3).astype(F32)
    inside = np.all((x0 + small >= 0) & (x0 + small <= 1), axis=(1, 2, 3))
    inside &= np.abs(small).reshape(64, -1).sum(1) <= eps
    proj = np.asarray(projections.project(jnp.asarray(x0 + small), jnp.asarray(x0), eps, "l1"))
    np.testing.assert_allclose(proj[inside], (x0 + small)[inside], rtol=0, atol=1e-7)


# --- one APGD-L1 run, transcribed ---------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
  k1, k2, k3 = jax.random.split(jax.random.key(5), 3)
  w = np.asarray(jax.random.normal(k1, (D, K))) * 3.0
  x = np.array(jax.random.uniform(k2, (B, H, H, C)), F32)
  x[:, 0] = 0.0  # a row on a face of the box
  y = np.asarray(jnp.argmax(jnp.asarray(x).reshape(B, -1) @ w, -1)).astype(np.int32)

  def f(v):
    return v.reshape(v.shape[0], -1) @ jnp.asarray(w)

  return f, w, x, y


def _ce_and_grad(w, v, y):
  """Per-example CE of the linear model z = v w and its gradient (NumPy, float64 then float32)."""
  z = v.reshape(v.shape[0], -1).astype(np.float64) @ w
  z = z - z.max(1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
  loss = -np.log(p[np.arange(len(y)), y])
  g = (p - np.eye(w.shape[1])[y]) @ w.T
  pred = z.argmax(1)
  return loss.astype(F32), g.reshape(v.shape).astype(F32), pred


def _l0(d):
  return (d != 0.0).reshape(d.shape[0], -1).sum(-1)


def _official_single_run_l1(w, x, y, eps, n_iter, t=None, x_init=None):
  """``attack_single_run`` with ``norm == 'L1'`` (loss CE, eot_iter 1), NumPy float32."""
  eps = F32(eps)
  n_fts = x[0].size
  if x_init is None:
    x_adv = x + t + _official_l1_projection(x, t, eps)
  else:
    x_adv = x_init.copy()
  x_adv = np.clip(x_adv, 0.0, 1.0)
  x_best, x_best_adv = x_adv.copy(), x_adv.copy()
  loss_indiv, grad, pred = _ce_and_grad(w, x_adv, y)
  grad_best = grad.copy()
  acc = pred == y
  loss_best = loss_indiv.copy()
  step_size = eps * np.ones([x.shape[0], 1, 1, 1], F32)
  k = max(int(0.04 * n_iter), 1)
  if x_init is None:
    topk = F32(0.2) * np.ones([x.shape[0]], F32)
    sp_old = n_fts * np.ones_like(topk)
  else:
    topk = (_l0(x_adv - x) / n_fts / 1.5).astype(F32)
    sp_old = _l0(x_adv - x)
  counter3 = 0
  steps = []
  for _ in range(n_iter):
    grad_topk = np.sort(np.abs(grad).reshape(x.shape[0], -1), -1)
    topk_curr = np.clip((F32(1.0) - topk) * F32(n_fts), 0, n_fts - 1).astype(np.int64)
    grad_topk = grad_topk[np.arange(x.shape[0]), topk_curr].reshape(-1, 1, 1, 1)
    sparsegrad = grad * (np.abs(grad) >= grad_topk).astype(F32)
    sg = np.sign(sparsegrad)
    x_adv_1 = x_adv + step_size * sg / (np.abs(sg).reshape(x.shape[0], -1).sum(-1).reshape(
        -1, 1, 1, 1) + F32(1e-10))
    delta_u = x_adv_1 - x
    delta_p = _official_l1_projection(x, delta_u, eps)
    x_adv = x + delta_u + delta_p
    loss_indiv, grad, pred_cls = _ce_and_grad(w, x_adv, y)
    pred = pred_cls == y
    acc = np.minimum(acc, pred)
    x_best_adv[~pred] = x_adv[~pred]
    ind = loss_indiv > loss_best
    x_best[ind], grad_best[ind], loss_best[ind] = x_adv[ind], grad[ind], loss_indiv[ind]
    counter3 += 1
    if counter3 == k:
      sp_curr = _l0(x_best - x)
      with np.errstate(divide="ignore", invalid="ignore"):
        fl_redtopk = (sp_curr.astype(F32) / sp_old.astype(F32)) < 0.95
      topk = (sp_curr / n_fts / 1.5).astype(F32)
      step_size[fl_redtopk] = eps
      step_size[~fl_redtopk] /= F32(1.5)
      step_size = np.clip(step_size, eps / F32(10.0), eps)
      sp_old = sp_curr.copy()
      x_adv[fl_redtopk] = x_best[fl_redtopk]
      grad[fl_redtopk] = grad_best[fl_redtopk]
      counter3 = 0
    steps.append(step_size.ravel().copy())
  return x_best, acc, loss_best, x_best_adv, steps


def _official_decr_eps_pgd(w, x, y, eps, n_iter, t):
  """``perturb``'s largereps schedule and ``decr_eps_pgd(x, y, epss, iters)``."""
  import math  # pylint: disable=g-import-not-at-top
  epss = [F32(3.0) * F32(eps), F32(2.0) * F32(eps), F32(eps)]  # float32, as the library's eps
  iters = [math.ceil(c) for c in (0.3 * n_iter, 0.3 * n_iter, 0.4 * n_iter)]
  iters[-1] = n_iter - sum(iters[:-1])
  x_init = x + t
  x_init = x_init + _official_l1_projection(x, x_init - x, epss[0])
  for e, niter in zip(epss, iters):
    x_init = x_init + _official_l1_projection(x, x_init - x, e)
    x_init, acc, loss, x_adv, _ = _official_single_run_l1(w, x, y, e, niter, x_init=x_init)
  return x_init, acc, loss, x_adv


@pytest.mark.parametrize("use_largereps", [False, True])
def test_apgd_l1_matches_the_official_run(model, use_largereps):
  f, w, x, y = model
  eps, n_iter = 0.3, 10  # k = max(int(0.4), 1) = 1: a checkpoint after every iteration
  key = jax.random.key(2)
  calls = []

  def logits_fn(v):
    jax.debug.callback(lambda a: calls.append(np.asarray(a)), v, ordered=True)
    return f(v)

  r = attacks.apgd(logits_fn, jnp.asarray(x), jnp.asarray(y), eps=eps, key=key, n_iter=n_iter,
                   norm="l1", variant="official", early_stop=False, use_largereps=use_largereps)
  # Every iterate in the box and in its stage's l1 ball (3 eps, 2 eps, then eps with largereps).
  iterates = calls[1:-1]  # after the clean batch, before the final evaluation
  assert len(iterates) == n_iter + (3 if use_largereps else 1)
  radii = [3 * eps] * 4 + [2 * eps] * 4 + [eps] * 5 if use_largereps else [eps] * 11
  for q, radius in zip(iterates, radii):
    assert q.min() >= 0.0 and q.max() <= 1.0
    assert np.all(np.abs(q.astype(np.float64) - x).reshape(B, -1).sum(1) <= radius * (1 + 1e-5))
  t = np.asarray(jax.random.normal(jax.random.fold_in(key, 0), x.shape, jnp.float32))
  if use_largereps:
    x_best, acc, _, x_best_adv = _official_decr_eps_pgd(w, x, y, eps, n_iter, t)
  else:
    x_best, acc, _, x_best_adv, steps = _official_single_run_l1(w, x, y, eps, n_iter, t=t)
    assert len({tuple(s) for s in steps}) > 2  # the step rule did act
  broken = ~acc
  assert 0 < broken.sum() < B  # some broken, some not: both outputs are compared
  np.testing.assert_array_equal(np.asarray(r.misclassified), broken)
  expected = np.where(broken[:, None, None, None], x_best_adv, x_best)
  np.testing.assert_allclose(np.asarray(r.x_adv), expected, rtol=0, atol=2e-6)
  d = np.abs(np.asarray(r.x_adv, np.float64) - x).reshape(B, -1).sum(1)
  assert np.all(d <= eps * (1 + 1e-5))


def test_one_step_and_checkpoint_rule():
  """The sparse step and the checkpoint quantities of one iteration, element by element."""
  rng = np.random.default_rng(1)
  g = rng.normal(size=(4, 3, 3, 2)).astype(F32)
  xk = rng.uniform(size=g.shape).astype(F32)
  step = np.array([0.5, 1.0, 0.1, 2.0], F32)
  topk = np.array([0.2, 0.05, 1.0, 0.5], F32)
  got = np.asarray(apgd_lib.l1_sparse_step(jnp.asarray(xk), jnp.asarray(g), jnp.asarray(step),
                                          jnp.asarray(topk)))
  n = g[0].size
  srt = np.sort(np.abs(g).reshape(4, -1), -1)
  idx = np.clip((F32(1.0) - topk) * F32(n), 0, n - 1).astype(np.int64)
  thr = srt[np.arange(4), idx].reshape(-1, 1, 1, 1)
  sg = np.sign(g * (np.abs(g) >= thr))
  ref = xk + step.reshape(-1, 1, 1, 1) * sg / (np.abs(sg).reshape(4, -1).sum(-1).reshape(
      -1, 1, 1, 1) + F32(1e-10))
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7)
  kept = (np.abs(sg) > 0).reshape(4, -1).sum(1)
  assert kept[2] == n and kept[1] == np.ceil(0.05 * n)  # topk 1 keeps all; 0.05 the top ones
  # decr_eps_pgd's schedule: 30%, 30%, 40% of the iterations (ceil), summing to N.
  for n_iter, split in ((100, [30, 30, 40]), (10, [3, 3, 4]), (7, [3, 3, 1]), (2, [1, 1, 0])):
    mults, iters = apgd_lib.largereps_schedule(n_iter)
    assert np.asarray(iters).tolist() == split and np.asarray(mults).tolist() == [3.0, 2.0, 1.0]


def test_apgd_l1_validation(model):
  f, _, x, y = model
  eps = 0.5
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="variant must be 'official'"):
    attacks.apgd(f, jnp.asarray(x), jnp.asarray(y), eps=eps, key=key, norm="l1")
  with pytest.raises(ValueError, match="use_largereps"):
    attacks.make("apgd_ce", eps=0.1, norm="linf", use_largereps=True)
  with pytest.raises(ValueError, match="n_iter"):
    attacks.make("apgd_ce", eps=1.0, norm="l1", variant="official", use_largereps=True, n_iter=1)
  with pytest.raises(ValueError, match="eps"):
    attacks.make("apgd_t", eps=-1.0, norm="l1", variant="official")
