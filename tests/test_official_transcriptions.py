"""The library against line-by-line transcriptions of the official code, on small nonlinear models.

Each transcription follows the official loop statement by statement, in NumPy float32 (the model's
loss, logits and gradient come from one jitted JAX function of the test, written from the official
formulas), and draws its random numbers with the same ``jax.random`` calls as the library, so the
two runs can be compared iterate by iterate:

* APGD-CE and APGD-T, ``variant="official"``: ``fra31/auto-attack`` ``autoattack/autopgd_base.py``
  (``APGDAttack.attack_single_run``, ``check_oscillation``, ``APGDAttack_targeted.perturb``): the
  2 eps first step, momentum 0.75, Condition 1 (``<=``, first window against the zero history row)
  and Condition 2, the halving of the step size at the checkpoints with the restart from the best
  point and its cached gradient. Every evaluated iterate is recorded from inside the library's
  compiled loop (``jax.debug.callback`` in the model) and compared with the transcription's.
* Square: ``max-andr/square-attack`` ``attack.py`` (``square_attack_linf``: vertical stripes, per
  example windows, the sign re-drawn until the window changes) and ``autoattack/square.py``
  (``attack_single_run``, linf: one window and sign per iteration for the whole batch); the
  queried points are recorded and checked structurally, and the whole run against the
  transcription.
* FAB-T: ``autoattack/fab_base.py`` (``attack_single_run``, targeted, linf), with the library's
  hyperplane-box projection (tested against a linear program in tests/test_autoattack.py), plus
  the properties of the returned points (misclassified, within eps, in the box, minimal along their
  own direction by a brute-force line search).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.attacks import _apgd as apgd
from robust_jax.attacks import _fab as fab
from robust_jax.attacks import _square as square

B = 24  # examples per test: small, so each test takes a few seconds on two cores


def _tanh_mlp(seed=0, width=32, classes=10):
  """A small smooth nonlinear model on 8x8x1 images (no ReLU kinks: no ties in the signs)."""
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  w1 = jax.random.normal(k1, (64, width)) / 2.0
  b1 = jax.random.normal(k2, (width,)) * 0.5
  w2 = jax.random.normal(k3, (width, classes))

  def f(v):
    return jnp.tanh(v.reshape(v.shape[0], -1) @ w1 + b1) @ w2

  return f


@pytest.fixture(scope="module")
def data(digits_splits):
  """The model, the first B digits test images and the model's own labels (all correct at x, so
  every example is attacked), with the two labels of two examples flipped (never attacked)."""
  f = _tanh_mlp()
  x = jnp.asarray(digits_splits["test"]["image"][:B])
  y = np.asarray(jnp.argmax(f(x), -1)).astype(np.int32)
  y[[3, 11]] = (y[[3, 11]] + 1) % 10  # misclassified at x: the official perturb() skips them
  return f, x, jnp.asarray(y)


def _recording(f):
  """``(logits_fn, calls)``: ``f`` that appends every batch it is evaluated on to ``calls``."""
  calls = []

  def logits_fn(v):
    jax.debug.callback(lambda a: calls.append(np.asarray(a)), v, ordered=True)
    return f(v)

  return logits_fn, calls


# --- APGD ----------------------------------------------------------------------------------------


def _official_ce(z, y, target):
  del target
  return -jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], 1)[:, 0]


def _official_dlr_targeted(z, y, target):
  """``APGDAttack_targeted.dlr_loss_targeted``."""
  zs = jnp.sort(z, axis=1)
  z_y = jnp.take_along_axis(z, y[:, None], 1)[:, 0]
  z_t = jnp.take_along_axis(z, target[:, None], 1)[:, 0]
  return -(z_y - z_t) / (zs[:, -1] - 0.5 * (zs[:, -3] + zs[:, -4]) + 1e-12)


def _loss_grad_fn(f, loss):
  @jax.jit
  def value_and_grad(v, y, target):
    def total(v):
      z = f(v)
      l = loss(z, y, target)
      return jnp.sum(l), (l, z)
    (_, (l, z)), g = jax.value_and_grad(total, has_aux=True)(v)
    return l, z, g

  def loss_grad(v, y, target):
    l, z, g = value_and_grad(jnp.asarray(v), jnp.asarray(y), jnp.asarray(target))
    return np.array(l), np.array(z), np.array(g)

  return loss_grad


def _official_apgd_single_run(loss_grad, x, y, target, t, eps, n_iter, norm, rho=0.75):
  """``APGDAttack.attack_single_run`` (linf and l2), statement by statement, in float32 NumPy.

  ``t`` is the start's random draw (U(-1, 1) for linf, N(0, I) for l2). Returns the evaluated
  iterates [n_iter, B, ...], the step sizes after each iteration [n_iter, B], the examples whose
  step was halved at each checkpoint ``{iteration: bool [B]}``, and ``(x_best, acc, loss_best,
  x_best_adv)`` as the official function.
  """
  f32 = np.float32
  b, nd = x.shape[0], x.ndim - 1
  eps = f32(eps)
  col = lambda v: v.reshape(-1, *[1] * nd)  # noqa: E731

  def normalize(v):
    flat = v.reshape(b, -1)
    n = np.abs(flat).max(1) if norm == "linf" else np.sqrt((flat ** 2).sum(-1))
    return v / (col(n) + f32(1e-12))

  def l2_norm(v):
    return col(np.sqrt((v.reshape(b, -1) ** 2).sum(-1)))

  def project_l2(v):
    return np.clip(x + normalize(v - x) * np.minimum(eps * np.ones_like(x), l2_norm(v - x)), 0, 1)

  x_adv = np.clip(x + eps * np.ones_like(x) * normalize(t), 0.0, 1.0)
  x_best, x_best_adv = x_adv.copy(), x_adv.copy()
  loss_steps = np.zeros([n_iter, b], f32)
  loss_indiv, logits, grad = loss_grad(x_adv, y, target)
  grad_best = grad.copy()
  acc = logits.argmax(1) == y
  loss_best = loss_indiv.copy()
  step_size = f32(2.0) * eps * np.ones([b, *[1] * nd], f32)
  x_adv_old = x_adv.copy()
  k = max(int(0.22 * n_iter), 1)
  n_iter_min, size_decr = max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
  counter3 = 0
  loss_best_last_check = loss_best.copy()
  reduced_last_check = np.ones_like(loss_best)
  iterates, steps, reduced = [], [], {}
  for i in range(n_iter):
    grad2 = x_adv - x_adv_old
    x_adv_old = x_adv.copy()
    a = f32(0.75) if i > 0 else f32(1.0)
    if norm == "linf":
      x_adv_1 = x_adv + step_size * np.sign(grad)
      x_adv_1 = np.clip(np.minimum(np.maximum(x_adv_1, x - eps), x + eps), 0.0, 1.0)
      x_adv_1 = np.clip(np.minimum(np.maximum(
          x_adv + (x_adv_1 - x_adv) * a + grad2 * (f32(1) - a), x - eps), x + eps), 0.0, 1.0)
    else:
      x_adv_1 = project_l2(x_adv + step_size * normalize(grad))
      x_adv_1 = project_l2(x_adv + (x_adv_1 - x_adv) * a + grad2 * (f32(1) - a))
    x_adv = x_adv_1 + f32(0)
    loss_indiv, logits, grad = loss_grad(x_adv, y, target)
    iterates.append(x_adv.copy())
    pred = logits.argmax(1) == y
    acc = np.minimum(acc, pred)
    x_best_adv[~pred] = x_adv[~pred] + f32(0)
    y1 = loss_indiv.copy()
    loss_steps[i] = y1
    ind = y1 > loss_best
    x_best[ind], grad_best[ind], loss_best[ind] = x_adv[ind], grad[ind], y1[ind]
    counter3 += 1
    if counter3 == k:
      # check_oscillation(loss_steps, i, k, k3=rho): Python's negative index as torch's.
      osc = sum((loss_steps[i - c] > loss_steps[i - c - 1]).astype(f32) for c in range(k))
      fl_oscillation = (osc <= k * rho * np.ones_like(osc)).astype(f32)
      fl_reduce_no_impr = (1.0 - reduced_last_check) * (loss_best_last_check >= loss_best)
      fl_oscillation = np.maximum(fl_oscillation, fl_reduce_no_impr)
      reduced_last_check = fl_oscillation.copy()
      loss_best_last_check = loss_best.copy()
      ind_fl_osc = fl_oscillation > 0
      step_size[ind_fl_osc] /= f32(2.0)
      x_adv[ind_fl_osc] = x_best[ind_fl_osc]
      grad[ind_fl_osc] = grad_best[ind_fl_osc]
      reduced[i + 1] = ind_fl_osc
      k = max(k - size_decr, n_iter_min)
      counter3 = 0
    steps.append(step_size.reshape(b).copy())
  return np.stack(iterates), np.stack(steps), reduced, (x_best, acc, loss_best, x_best_adv)


def _start_draw(key, x, norm):
  """The library's draw for the start of a run (``_apgd._single_run``)."""
  if norm == "linf":
    return np.asarray(jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0))
  return np.asarray(jax.random.normal(key, x.shape, x.dtype))


# Tolerances: values in [0, 1], float32; the library's compiled loop and the transcription's
# op-by-op NumPy may round a fused expression differently, by an ulp or two (1.2e-7 at 1.0).
ATOL = 4e-7


@pytest.mark.parametrize("norm,eps,n_iter", [("linf", 0.05, 30), ("linf", 0.1, 12),
                                             ("l2", 0.6, 25)])
def test_apgd_ce_official_matches_the_transcription(data, norm, eps, n_iter):
  f, x, y = data
  clean = np.asarray(jnp.argmax(f(x), -1) == y)
  logits_fn, calls = _recording(f)
  key = jax.random.key(7)
  r = apgd.apgd(logits_fn, x, y, eps=eps, n_iter=n_iter, norm=norm, key=key, variant="official",
                early_stop=False)
  # The library evaluates the clean batch, the start, the n_iter iterates, the returned point.
  assert len(calls) == n_iter + 3
  lib_iterates = np.stack(calls[2:2 + n_iter])

  # perturb() attacks the clean-correct points only; examples are independent, so the
  # transcription runs on those and the others must stay at x.
  xs, ys = np.asarray(x)[clean], np.asarray(y)[clean]
  t = _start_draw(jax.random.fold_in(key, 0), x, norm)[clean]
  ref_iterates, ref_steps, reduced, (x_best, acc, loss_best, x_best_adv) = (
      _official_apgd_single_run(_loss_grad_fn(f, _official_ce), xs, ys, ys, t, eps, n_iter, norm))
  np.testing.assert_allclose(lib_iterates[:, clean], ref_iterates, rtol=0, atol=ATOL)
  np.testing.assert_array_equal(lib_iterates[:, ~clean],
                                np.broadcast_to(np.asarray(x)[~clean], lib_iterates[:, ~clean].shape))
  # The step-size rule did act (else the test would not test it), on some examples only.
  assert any(v.any() for v in reduced.values()) and not all(v.all() for v in reduced.values())
  assert set(reduced) == set(apgd.checkpoints(n_iter, variant="official")[1:])

  # The run's state at the end, from the library's own run function (same key, same mask).
  run = apgd._single_run(f, _official_ce_lib, x, y, None, jax.random.fold_in(key, 0),
                         jnp.asarray(clean), jnp.float32(eps), n_iter, jnp.float32(0.75),
                         jnp.float32(0.75), norm=norm, variant="official", early_stop=False)
  np.testing.assert_array_equal(np.asarray(run.step_size)[clean], ref_steps[-1])
  np.testing.assert_array_equal(~np.asarray(run.broken)[clean], acc)
  np.testing.assert_allclose(np.asarray(run.x_best)[clean], x_best, rtol=0, atol=ATOL)
  np.testing.assert_allclose(np.asarray(run.loss_best)[clean], loss_best, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(run.x_best_adv)[clean][~acc], x_best_adv[~acc], rtol=0,
                             atol=ATOL)
  # perturb(): the broken points' most recent misclassified iterate, x for the others.
  np.testing.assert_array_equal(np.asarray(r.misclassified)[clean], ~acc)
  np.testing.assert_allclose(np.asarray(r.x_adv)[clean][~acc], x_best_adv[~acc], rtol=0, atol=ATOL)
  assert 0 < (~acc).sum() < acc.size  # some examples broken, some not: both paths are compared


def _official_ce_lib(logits, y, *, target=None):
  """The library's loss signature around the official CE (for ``_apgd._single_run``)."""
  return _official_ce(logits, y, target)


def test_apgd_t_official_matches_the_transcription(data):
  """``APGDAttack_targeted.perturb``: targets 2 .. n_target_classes + 1 by the clean logits'
  order, each run on the examples no earlier target broke, the targeted DLR loss."""
  f, x, y = data
  eps, n_iter, n_targets = 0.05, 15, 3
  clean = np.asarray(jnp.argmax(f(x), -1) == y)
  logits_fn, calls = _recording(f)
  key = jax.random.key(8)
  r = apgd.apgd_targeted(logits_fn, x, y, eps=eps, n_iter=n_iter, n_target_classes=n_targets,
                         key=key, variant="official", early_stop=False)
  assert len(calls) == 1 + n_targets * (n_iter + 1) + 1
  loss_grad = _loss_grad_fn(f, _official_dlr_targeted)

  xn, yn = np.asarray(x), np.asarray(y)
  acc = clean.copy()
  adv = xn.copy()
  for run, target_class in enumerate(range(2, n_targets + 2)):
    ind_to_fool = np.flatnonzero(acc)
    output = np.asarray(f(jnp.asarray(xn[ind_to_fool])))
    y_target = np.argsort(output, axis=1, kind="stable")[:, -target_class].astype(np.int32)
    t = _start_draw(jax.random.fold_in(key, run), x, "linf")[ind_to_fool]
    ref_iterates, _, _, (_, acc_curr, _, adv_curr) = _official_apgd_single_run(
        loss_grad, xn[ind_to_fool], yn[ind_to_fool], y_target, t, eps, n_iter, "linf")
    lib_iterates = np.stack(calls[2 + run * (n_iter + 1):1 + (run + 1) * (n_iter + 1)])
    np.testing.assert_allclose(lib_iterates[:, ind_to_fool], ref_iterates, rtol=0, atol=ATOL)
    done = np.setdiff1d(np.arange(B), ind_to_fool)  # broken earlier or never attacked: frozen
    np.testing.assert_array_equal(lib_iterates[:, done],
                                  np.broadcast_to(xn[done], lib_iterates[:, done].shape))
    hit = ind_to_fool[~acc_curr]
    acc[hit] = False
    adv[hit] = adv_curr[~acc_curr]
  np.testing.assert_array_equal(np.asarray(r.misclassified), ~acc)
  np.testing.assert_allclose(np.asarray(r.x_adv)[~acc], adv[~acc], rtol=0, atol=ATOL)
  assert 0 < (clean & ~acc).sum() < clean.sum()


def test_first_window_and_condition_1_differ_between_variants():
  """The two differences of the official code (for N = 100 the checkpoints agree), each on a
  hand-made loss sequence, through the library's loop on a one-pixel model whose CE loss is a
  chosen function of the step: Condition 1 is ``count <= rho k`` in the code and ``count < rho k``
  in the paper; the first window compares f(x^1) with 0 in the code and with f(x^0) in the paper.
  """
  # One pixel, two classes; loss(x) = softplus(w x): increasing in x, so the sign step always
  # raises it: every one of the k steps of a window increases the loss, except where the box stops
  # the iterate. With x at the upper box face after the first step, the loss stays flat.
  logits_fn = lambda v: jnp.stack([jnp.zeros(v.shape[0]), 4.0 * v.reshape(v.shape[0])], 1)  # noqa
  x = jnp.full((1, 1, 1, 1), 0.5)
  y = jnp.zeros((1,), jnp.int32)
  # N = 5: official checkpoints at 1, 2, 3, 4, 5 (k = 1); at the first, f(x^1) > 0 is one increase
  # of 1 step: 1 <= 0.75 is False, so the code does not halve; the paper's first checkpoint is at
  # ceil(0.22 * 5) = 2 with windows compared from f(x^0).
  out = {}
  for variant in ("paper", "official"):
    run = apgd._single_run(logits_fn, _official_ce_lib, x, y, None, jax.random.key(0),
                           jnp.ones((1,), bool), jnp.float32(0.3), 5, jnp.float32(0.75),
                           jnp.float32(0.75), norm="linf", variant=variant, early_stop=False)
    out[variant] = float(run.step_size[0])
  # Official: the first step reaches the box face 1.0 (x0 + 0.6 clipped), so from step 2 on the
  # loss is flat: windows of 1 step with 0 increases, 0 <= 0.75: halved at 2, 3, 4, 5, not at 1.
  assert out["official"] == pytest.approx(0.6 / 2 ** 4)
  # Paper: checkpoints 2, 3, 4, 5 (ceil(p_j 5)); the first window (2 steps) counts f(x^1) > f(x^0)
  # (the start is below the face) and f(x^2) > f(x^1) (flat: no): 1 < 0.75 * 2 halves, and every
  # later 1-step window has 0 < 0.75: halved at 2, 3, 4, 5.
  assert out["paper"] == pytest.approx(0.6 / 2 ** 4)
