"""Square-L2 (``norm="l2"``): fra31/auto-attack ``autoattack/square.py`` ``attack_single_run``'s L2
branch, ``eta`` and ``eta_rectangles``, transcribed in NumPy below (statement by statement, NCHW
indices moved to NHWC, ``torch.rand`` replaced by the library's draws) and run against the library;
the ball, the box and the factory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks
from robust_jax.attacks import _square as square
from robust_jax.attacks import _square_lp as square_lp
from tests.attacks import invariants

B, H, C = 8, 10, 2  # 10 x 10 x 2 images: an initial grid of 2 x 2 windows, two channels
EPS, N_QUERIES = 1.0, 40
F32 = np.float32


@pytest.fixture(scope="module")
def data():
  """A tanh MLP on random images, its own labels (so all are attacked) but one flipped."""
  return invariants.tanh_mlp_case(jax.random.key(7), B, H, C, scale=0.7, flip=2)


_recording = invariants.recording


@pytest.fixture(scope="module")
def run(data):
  f, x, y = data
  logits_fn, calls = _recording(f)
  key = jax.random.key(3)
  r = square.square(logits_fn, x, y, eps=EPS, key=key, n_queries=N_QUERIES, norm="l2",
                    variant="autoattack")
  return r, calls, key


# --- the official eta, transcribed -------------------------------------------------------------


def _official_eta_rectangles(x, y, norm="L2"):
  """``SquareAttack.eta_rectangles(x, y)``, its ``norm == 'L2'`` and ``'L1'`` branches (weights
  1 / (k + 1)^2 and unit L2 norm, or 1 / (k + 1)^4 and unit L1 norm; torch's ``sum(dim=())``
  reduces over all dimensions)."""
  power = {"L2": 2, "L1": 4}[norm]
  delta = np.zeros([x, y], F32)
  x_c, y_c = x // 2 + 1, y // 2 + 1
  counter2 = [x_c - 1, y_c - 1]
  for counter in range(0, max(x_c, y_c)):
    delta[max(counter2[0], 0):min(counter2[0] + (2 * counter + 1), x),
          max(0, counter2[1]):min(counter2[1] + (2 * counter + 1), y)] += F32(1.0) / F32(
              counter + 1) ** power
    counter2[0] -= 1
    counter2[1] -= 1
  with np.errstate(invalid="ignore"):  # the empty rectangle of s = 1: 0 / 0 on no element
    if norm == "L2":
      delta /= np.sqrt((delta ** 2).sum(axis=(0, 1), keepdims=True))
    else:
      delta /= np.abs(delta).sum()
  return delta


def _official_eta(s, transpose, norm="L2"):
  """``SquareAttack.eta(s)``, its ``norm == 'L2'`` and ``'L1'`` branches; ``torch.rand([1]) > 0.5``
  is ``transpose``."""
  delta = np.zeros([s, s], F32)
  delta[:s // 2] = _official_eta_rectangles(s // 2, s, norm)
  delta[s // 2:] = -1.0 * _official_eta_rectangles(s - s // 2, s, norm)
  if norm == "L2":
    delta /= np.sqrt((delta ** 2).sum(axis=(0, 1), keepdims=True))
  else:
    delta /= np.abs(delta).sum()
  if transpose:
    delta = delta.transpose([1, 0])
  return delta


_eta_on_canvas = jax.jit(square_lp.eta_l2, static_argnums=1)  # traced side: compiled once


def test_eta_matches_the_official_eta():
  for transpose in (False, True):
    for s in range(1, 14):
      ref = _official_eta(s, transpose)
      # On a larger canvas (the traced side of the loop): the block, zeros elsewhere.
      got = np.asarray(_eta_on_canvas(jnp.asarray(s), 16, jnp.asarray(transpose)))
      np.testing.assert_allclose(got[:s, :s], ref, rtol=1e-6, atol=1e-7, err_msg=f"s={s}")
      assert not got[s:].any() and not got[:, s:].any()


def _official_side(p, h, w):
  s = max(int(round(np.sqrt(p * h * w))), 3)
  s = s + 1 if s % 2 == 0 else s
  return min(s, min(h, w))


def test_side_schedule_is_the_official_one():
  its = np.arange(0, 9000, 7)
  for h in (5, 10, 32):
    sides = jax.jit(jax.vmap(lambda i: square_lp.side_length_l2(square.p_selection(0.8, i), h, h)))(
        jnp.asarray(its))
    p = [0.8 / next((d for b, d in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16),
                                    (2000, 32), (4000, 64), (6000, 128), (8000, 256)) if i <= b),
                    512) for i in its]
    np.testing.assert_array_equal(np.asarray(sides), [_official_side(q, h, h) for q in p])


# --- the official L2 loop, transcribed ---------------------------------------------------------


def _normalize(d):
  t = np.sqrt((d ** 2).reshape(d.shape[0], -1).sum(-1))
  return d / (t.reshape(-1, 1, 1, 1) + F32(1e-12))


def _lp_norm(d):
  return np.sqrt((d ** 2).reshape(d.shape[0], -1).sum(-1)).reshape(-1, 1, 1, 1)


def _margin(f, v, y):
  z = np.array(f(jnp.asarray(v)))
  z_y = z[np.arange(len(y)), y].copy()
  z[np.arange(len(y)), y] = -np.inf
  return z_y - z.max(-1)


def _official_square_l2(f, x, y, eps, n_queries, p_init, key, b_full, keep):
  """``attack_single_run`` with ``norm == 'L2'`` and ``loss == 'margin'`` (NHWC), on the examples
  ``keep`` of the library's batch (the official loop runs on the correctly classified points);
  the random draws are the library's, taken for the full batch of ``b_full``."""
  eps = F32(eps)
  _, h, w, c = x.shape
  n_features = c * h * w
  k_init, k_loop = jax.random.split(key)
  s = h // 5
  sp_init = (h - s * 5) // 2
  n_win = (h // s) * (w // s)
  t_init, signs_init = (np.asarray(a) for a in square_lp.l2_init_draws(k_init, b_full, c, n_win))
  delta_init = np.zeros_like(x)
  j = 0
  vh = sp_init + 0
  for _ in range(h // s):
    vw = sp_init + 0
    for _ in range(w // s):
      patch = _official_eta(s, t_init[j])
      window = delta_init[:, vh:vh + s, vw:vw + s, :]
      window += (patch[None, :window.shape[1], :window.shape[2], None]
                 * signs_init[j][keep][:, None, None, :])
      j += 1
      vw += s
    vh += s
  x_best = np.clip(x + _normalize(delta_init) * eps, 0.0, 1.0)
  margin_min = _margin(f, x_best, y)
  loss_min = margin_min.copy()
  n_q = np.ones(x.shape[0])
  if (margin_min < 0.0).all():
    return n_q, x_best, margin_min
  for i_iter in range(n_queries):
    idx_to_fool = np.flatnonzero(margin_min > 0.0)
    x_curr, x_best_curr, y_curr = x[idx_to_fool], x_best[idx_to_fool], y[idx_to_fool]
    margin_min_curr, loss_min_curr = margin_min[idx_to_fool], loss_min[idx_to_fool]
    delta_curr = x_best_curr - x_curr
    p = float(square.p_selection(p_init, i_iter))
    s = max(int(round(np.sqrt(F32(p) * F32(n_features / c)))), 3)
    if s % 2 == 0:
      s += 1
    s = min(s, min(h, w))
    draws = square_lp.l2_iteration_draws(k_loop, i_iter, b_full, c, h, w, jnp.asarray(s))
    vh, vw, vh2, vw2, transpose = (int(v) for v in draws[:5])
    signs = np.asarray(draws[5])[keep][idx_to_fool]
    new_deltas_mask = np.zeros_like(x_curr)
    new_deltas_mask[:, vh:vh + s, vw:vw + s, :] = 1.0
    norms_window_1 = np.sqrt((delta_curr[:, vh:vh + s, vw:vw + s, :] ** 2).sum(
        axis=(1, 2), keepdims=True))
    new_deltas_mask_2 = np.zeros_like(x_curr)
    new_deltas_mask_2[:, vh2:vh2 + s, vw2:vw2 + s, :] = 1.0
    norms_image = _lp_norm(x_best_curr - x_curr)
    mask_image = np.maximum(new_deltas_mask, new_deltas_mask_2)
    norms_windows = np.sqrt(((delta_curr * mask_image) ** 2).sum(axis=(1, 2), keepdims=True))
    new_deltas = np.ones([x_curr.shape[0], s, s, c], F32)
    new_deltas *= _official_eta(s, transpose)[None, :, :, None] * signs[:, None, None, :]
    old_deltas = delta_curr[:, vh:vh + s, vw:vw + s, :] / (F32(1e-12) + norms_window_1)
    new_deltas += old_deltas
    new_deltas = new_deltas / (F32(1e-12) + np.sqrt((new_deltas ** 2).sum(
        axis=(1, 2), keepdims=True))) * np.sqrt(
            np.maximum(eps ** 2 - norms_image ** 2, F32(0.0)) / F32(c) + norms_windows ** 2)
    delta_curr[:, vh2:vh2 + s, vw2:vw2 + s, :] = 0.0
    delta_curr[:, vh:vh + s, vw:vw + s, :] = new_deltas + 0
    x_new = np.clip(x_curr + _normalize(delta_curr) * eps, 0.0, 1.0)
    marg = _margin(f, x_new, y_curr)
    idx_improved = (marg < loss_min_curr).astype(F32)
    loss_min[idx_to_fool] = idx_improved * marg + (1.0 - idx_improved) * loss_min_curr
    idx_miscl = (marg <= 0.0).astype(F32)
    idx_improved = np.maximum(idx_improved, idx_miscl)
    margin_min[idx_to_fool] = idx_improved * marg + (1.0 - idx_improved) * margin_min_curr
    idx_improved = idx_improved.reshape([-1, 1, 1, 1])
    x_best[idx_to_fool] = idx_improved * x_new + (1.0 - idx_improved) * x_best_curr
    n_q[idx_to_fool] += 1.0
    if (margin_min <= 0.0).sum() == x.shape[0]:
      break
  return n_q, x_best, margin_min


def test_square_l2_matches_the_official_loop(data, run):
  f, x, y = data
  r, _, key = run
  xn, yn = np.asarray(x), np.asarray(y)
  clean = np.asarray(jnp.argmax(f(x), -1) == y)
  assert not clean.all() and clean.sum() >= B - 1
  n_q, x_best, m_min = _official_square_l2(f, xn[clean].copy(), yn[clean], EPS, N_QUERIES, 0.8,
                                           key, B, clean)
  np.testing.assert_allclose(np.asarray(r.x_adv)[clean], x_best, rtol=0, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(r.num_queries)[clean], n_q)
  np.testing.assert_allclose(np.asarray(r.margin)[clean], m_min, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(r.x_adv)[~clean], xn[~clean])  # never attacked
  assert 0 < np.sum(m_min <= 0) < clean.sum()  # some broken, some not
  assert np.all(n_q[m_min > 0] == N_QUERIES + 1)


def test_every_query_is_in_the_l2_ball_and_the_box(data, run):
  f, x, y = data
  r, calls, _ = run
  xn = np.asarray(x, np.float64)
  queries = calls[1:-1]  # after the clean batch, before the final re-evaluation
  assert len(queries) >= 10
  for q in queries:
    assert q.min() >= 0.0 and q.max() <= 1.0
    norms = np.sqrt(((q - xn) ** 2).reshape(B, -1).sum(1))
    assert np.all(norms <= EPS * (1 + 1e-5)), norms.max()
  # The perturbations use the budget: the start is rescaled to the sphere before the clip.
  start = queries[0]
  norms0 = np.sqrt(((start - xn) ** 2).reshape(B, -1).sum(1))
  clean = np.asarray(jnp.argmax(f(x), -1) == y)
  assert np.all(norms0[clean] > 0.5 * EPS)
  np.testing.assert_array_equal(start[~clean], xn[~clean])
  mis = np.asarray(r.misclassified)
  np.testing.assert_array_equal(mis, np.asarray(jnp.argmax(f(r.x_adv), -1) != y))


def test_factory_and_validation(data, run):
  f, x, y = data
  key = jax.random.key(1)
  made = attacks.make("square", eps=EPS, norm="l2", variant="autoattack", n_queries=N_QUERIES)
  assert made.hyperparameters["norm"] == "l2" and made.name == "square"
  with pytest.raises(ValueError, match="variant='autoattack'"):
    attacks.make("square", eps=0.5, norm="l2")  # the default variant is max-andr's linf code
  with pytest.raises(ValueError, match="norm"):
    attacks.make("square", eps=0.5, norm="l0", variant="autoattack")
  with pytest.raises(ValueError, match="eps"):
    attacks.make("square", eps=-1.0, norm="l2", variant="autoattack")
  with pytest.raises(ValueError, match="5 pixels"):
    attacks.square(lambda v: v.reshape(v.shape[0], -1)[:, :3], jnp.zeros((2, 4, 4, 1)),
                   jnp.array([0, 1]), eps=0.5, key=key, norm="l2", variant="autoattack")
