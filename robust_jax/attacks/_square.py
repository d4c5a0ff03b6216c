"""Square Attack: a score-based black-box attack by random square updates (linf, l2 and l1).

Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020 (Algorithm 1 and Section 3.1). Two official codes, selected by
``variant``:

* ``"square_attack"`` (default): the authors' ``max-andr/square-attack`` ``attack.py``
  (``square_attack_linf``), the paper's algorithm.
* ``"autoattack"``: ``fra31/auto-attack`` ``autoattack/square.py`` (``SquareAttack``,
  ``attack_single_run``, linf, ``resc_schedule=False``), AutoAttack's stage.

The attack only *evaluates* ``logits_fn`` (no gradient is ever taken), for every example
independently:

* Start (both codes): vertical stripes, x^0 = clip(x + eps s), s in {-1, +1} drawn per example,
  column and channel (constant along the height); one query.
* Iteration i (one query): the side of the square is s_i = round(sqrt(p_i H W)), at least 1 and at
  most min(H, W) (``"autoattack"``) or min(H, W) - 1 (``"square_attack"``), with
  p_i = p_init / 2^m, m the number of thresholds 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000
  that i' exceeds: i' = i (``"autoattack"``, ``p_selection`` with ``resc_schedule=False``) or
  i' = floor(10000 i / (N + 1)) (``"square_attack"``: ``p_selection(p_init, it, n_iters)`` with
  n_iters = N + 1 queries). A
  window (its corner uniform in [0, H - s) x [0, W - s), as both codes) and one sign per channel are
  drawn, the window of the best point so far is set to clip(x +- eps) (``"autoattack"``, as
  ``square.py``, by adding 2 eps sign and projecting onto the ball and the box, which can round one
  ulp below x + eps), and the candidate is kept if it lowers the loss (and, in ``"autoattack"``,
  also if it misclassifies).
* ``"square_attack"`` draws the window and the signs independently for every example and re-draws
  the signs while the candidate equals the best point in the window (``attack.py``: ``while
  np.sum(np.abs(np.clip(x_curr_window + deltas[...]) - x_best_curr_window) < 10**-7) == c*s*s``), so
  that no query is spent on an unchanged point. ``"autoattack"`` draws one window position and one
  sign per channel for the whole batch per iteration and never re-draws (a candidate equal to the
  best point is queried, and cannot be kept).
* Loss: the margin z_y - max_{j != y} z_j (``loss="margin"``, AutoAttack) or -CE (``loss="ce"``),
  minimised; an example stops once its margin is <= 0.

``n_queries`` N counts iterations after the initial query, as AutoAttack's ``n_queries`` (5,000 in
the standard version; ``attack.py``'s ``n_iters`` is N + 1), so an example uses at most N + 1
forward passes. Differences left, stated plainly: the re-draw loop is capped at 64 draws per
iteration (the official loop is unbounded; a window can always be changed when eps > 1e-7, and a
draw fails with probability at most 1/2 per channel); the side is computed in float32 (the codes
use float64: a difference only when sqrt(p H W) is within float32 rounding of a half-integer);
``attack.py``'s ``metrics`` logging is not reproduced. tests/attacks/test_official_transcriptions.py runs
both codes, transcribed with the library's random draws, against the library.

Measured on the digits MLP of tests/conftest.py (353 correctly classified test points, 1,000
queries, mean over 5 keys of the points left robust): at eps 0.1, ``"autoattack"`` 181.4,
``"square_attack"`` 158.2; per-example windows without the re-draw and with AutoAttack's schedule
181.2, with the re-draw 181.0 (the re-draw saves queries: 254 instead of 262 to success on
average); the side cap changes nothing on 8 x 8 images; the rest of the gap is the schedule
rescaled to 1,001 queries (smaller squares sooner: 70 queries to success). At eps 0.05: 304.2,
297.4, 303.8, 303.8.

The l2 attack (``norm="l2"``, ``variant="autoattack"`` only): ``fra31/auto-attack``
``autoattack/square.py``, ``SquareAttack.attack_single_run``, the ``norm == 'L2'`` branch, with
``eta``, ``eta_rectangles`` and ``p_selection`` (``resc_schedule=False``), AutoAttack's l2 stage:

* Start: a grid of s x s windows, s = H // 5, the first corner at (H - 5 s) // 2 and H // s x
  W // s windows s apart (cut at the border, as the official slicing); window j holds
  ``eta(s)`` times a random sign per example and channel; x^0 = clip(x + eps delta /
  (||delta||_2 + 1e-12), 0, 1). ``eta(s)``: the top s // 2 rows a stack of nested rectangles with
  weights 1 / (r + 1)^2, the other rows minus such a stack, each normalised, the whole normalised
  and transposed with probability 1/2 (:func:`eta_l2`).
* Iteration i (one query, examples with margin > 0): s = max(round(sqrt(p_i H W)), 3), made odd,
  at most min(H, W); two windows (corners floor(U (H - s)), one draw for the batch); window 1 <-
  eta(s) sign + delta_w1 / ||delta_w1||, rescaled per channel to sqrt(max(eps^2 - ||delta||^2, 0)
  / C + ||delta_{w1 u w2}||^2); window 2 <- 0 (the mass moves into window 1); renormalise delta to
  eps and clip (:func:`l2_candidate`); keep the candidate if the loss fell or it misclassifies.

Differences left: the random draws are ``jax.random`` (:func:`l2_init_draws`,
:func:`l2_iteration_draws`), not torch's; the side is computed in float32; the official code
divides by zero for H < 5 (s = 0), which is refused here. tests/attacks/test_square_l2.py runs a
NumPy transcription of the branch with the library's draws against the library.

The l1 attack (``norm="l1"``, ``variant="autoattack"`` only): the ``norm == 'L1'`` branch of the
same ``attack_single_run`` (AutoAttack's L1 stage; Croce and Hein, "Mind the box: l1-APGD for
sparse adversarial attacks on image classifiers", ICML 2021, adapt the Square Attack to l1 there).
It is the l2 attack with these changes, all as coded:

* ``eta(s)`` (:func:`eta` with ``norm="l1"``): weights 1 / (r + 1)^4 instead of 1 / (r + 1)^2,
  each stack and the whole normalised to unit l1 norm (``delta.abs().sum(dim=())``: torch sums
  over all dimensions for ``dim=()``).
* Start: the same grid of ``eta(s)`` windows with random signs, *not* normalised, put onto the l1
  ball and the box by ``x + delta + L1_projection(x, delta, eps (1 - 1e-6))`` (``autopgd_base.py``;
  :func:`robust_jax.attacks.l1_box_correction`, the same Euclidean projection onto the
  intersection); the official normalisation to the sphere is commented out.
* Iteration: the same side schedule and two windows; window 1 <- eta(s) sign +
  delta_w1 / ||delta_w1||_1, rescaled per channel to l1 mass (max(eps - ||delta||_1, 0) / C +
  ||delta_{w1 u w2}||_1) C (the factor C is the official code's, see :func:`l1_candidate`);
  window 2 <- 0; then the same projection with eps (1 - 1e-6) instead of the l2 renormalisation.

Differences left: those of the l2 attack (the draws, float32 sides), and the candidate is clipped
to [0, 1] after the projection (the official code is not; the sum x + delta + correction is in
the box in exact arithmetic, so only its rounding is clipped). The paper's text was not checked
against the code here; the code is followed. tests/attacks/test_l1_autoattack.py runs a NumPy
transcription of the branch (with ``L1_projection`` transcribed) against the library.

Per-example state (best point, margin, loss, queries) lives in the carry of one ``lax.while_loop``
that exits when every example is broken; eps, ``n_queries`` and ``p_init`` are traced.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp

from robust_jax import losses
from robust_jax import validation
from robust_jax.attacks._loop import as_pytree_fn
from robust_jax.attacks._projections import bcast, l1_box_correction, per_example_norm

SQUARE_LOSSES = ("margin", "ce")
VARIANTS = ("square_attack", "autoattack")
NORMS = ("linf", "l2", "l1")
_P_THRESHOLDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_MAX_SIGN_DRAWS = 64


@flax.struct.dataclass
class SquareResult:
  """What :func:`square` returns (all per example, leading size B).

  Attributes:
    x_adv: the best point found [B, ...] (``x`` for examples that were not attacked), in the
      eps-ball and in [0, 1].
    margin: float32 [B], z_y - max_{j != y} z_j at ``x_adv`` as tracked by the attack.
    misclassified: bool [B], argmax f(x_adv) != y (re-evaluated).
    num_queries: int32 [B], forward passes spent on the example (the initial one included).
  """
  x_adv: jax.Array
  margin: jax.Array
  misclassified: jax.Array
  num_queries: jax.Array


def p_selection(p_init, i, n_iters=None):
  """The fraction of pixels p_i changed at iteration ``i``.

  Args:
    p_init: p_0.
    i: the iteration (int or traced int32).
    n_iters: None: AutoAttack's schedule (``square.py``, ``resc_schedule=False``); else the schedule
      rescaled to ``n_iters`` queries, as ``attack.py``'s ``p_selection(p_init, it, n_iters)`` (i
      becomes floor(10000 i / n_iters), in integer arithmetic).

  Example:
    >>> [round(float(p_selection(0.8, i)), 7) for i in (0, 10, 11, 51, 8001)]
    [0.8, 0.8, 0.4, 0.2, 0.0015625]
    >>> [round(float(p_selection(0.8, i, n_iters=1000)), 7) for i in (1, 2, 6)]
    [0.8, 0.4, 0.2]
  """
  it = jnp.asarray(i, jnp.int32)
  if n_iters is not None:
    it = (it * 10000) // jnp.asarray(n_iters, jnp.int32)
  m = sum((it > t).astype(jnp.int32) for t in _P_THRESHOLDS)
  return jnp.asarray(p_init, jnp.float32) / (2.0 ** m).astype(jnp.float32)


def side_length(p, height, width, variant):
  """The side of the square for the fraction ``p``: round(sqrt(p H W)) clipped to [1, min(H, W)]
  (``"autoattack"``) or to [1, min(H, W) - 1] (``"square_attack"``: ``attack.py`` clips to h - 1,
  for square images; at least 1)."""
  side = jnp.round(jnp.sqrt(p * height * width)).astype(jnp.int32)
  high = min(height, width) if variant == "autoattack" else max(min(height, width) - 1, 1)
  return jnp.clip(side, 1, high)


def _margin_and_loss(logits_fn, x, y, loss):
  logits = logits_fn(x)
  z_y = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
  others = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  margin = z_y - jnp.max(others, axis=1)
  if loss == "margin":
    return margin, margin
  return margin, -losses.cross_entropy(logits, y)


@functools.partial(jax.jit, static_argnames=("loss", "variant"))
def _square(logits_fn, x, y, key, active, eps, n_queries, p_init, *, loss, variant):
  batch, height, width, channels = x.shape
  # As the official ``perturb``: points misclassified without attack are not attacked.
  active = active & (jnp.argmax(logits_fn(x), axis=-1) == y)
  k_init, k_loop = jax.random.split(key)
  stripes = jnp.sign(jax.random.uniform(k_init, (batch, 1, width, channels), x.dtype, -1.0, 1.0))
  x_best = jnp.clip(x + eps * stripes, 0.0, 1.0)
  x_best = jnp.where(bcast(active, x), x_best, x)
  margin_min, loss_min = _margin_and_loss(logits_fn, x_best, y, loss)
  queries = active.astype(jnp.int32)
  hh = jnp.arange(height)[None, :, None]
  ww = jnp.arange(width)[None, None, :]
  per_example = variant == "square_attack"
  n_draw = batch if per_example else 1

  def cond(c):
    i, _, margin_min, _, _ = c
    return (i < n_queries) & jnp.any(active & (margin_min > 0))

  def body(c):
    i, x_best, margin_min, loss_min, queries = c
    todo = active & (margin_min > 0)
    p = p_selection(p_init, i, n_queries + 1 if per_example else None)
    side = side_length(p, height, width, variant)
    k_h, k_w, k_s = jax.random.split(jax.random.fold_in(k_loop, i), 3)
    vh = jnp.floor(jax.random.uniform(k_h, (n_draw,)) * (height - side)).astype(jnp.int32)
    vw = jnp.floor(jax.random.uniform(k_w, (n_draw,)) * (width - side)).astype(jnp.int32)
    window = ((hh >= vh[:, None, None]) & (hh < vh[:, None, None] + side)
              & (ww >= vw[:, None, None]) & (ww < vw[:, None, None] + side))[..., None]

    def draw_signs(attempt):
      k = jax.random.fold_in(k_s, attempt)
      return jnp.sign(jax.random.uniform(k, (n_draw, 1, 1, channels), x.dtype, -1.0, 1.0))

    def candidate(signs):
      if per_example:  # attack.py: the window's perturbation set to +- eps, x_new = clip(x + delta)
        return jnp.where(window, jnp.clip(x + eps * signs, 0.0, 1.0), x_best)
      # square.py: x_best + 2 eps sign in the window, projected onto the ball and the box.
      delta = window.astype(x.dtype) * (2.0 * eps) * signs
      return jnp.clip(jnp.clip(x_best + delta, x - eps, x + eps), 0.0, 1.0)

    signs = draw_signs(0)
    if per_example:
      # attack.py: re-draw the signs while the window would not change (the candidate equals the
      # best point to 1e-7 at every pixel of the window; outside it they are equal anyway).
      def unchanged(signs):
        diff = jnp.abs(candidate(signs) - x_best) < 1e-7
        return jnp.all(diff.reshape(batch, -1), axis=1) & todo

      def redraw_cond(state):
        attempt, _, same = state
        return (attempt < _MAX_SIGN_DRAWS) & jnp.any(same)

      def redraw(state):
        attempt, signs, same = state
        signs = jnp.where(bcast(same, signs), draw_signs(attempt), signs)
        return attempt + 1, signs, same & unchanged(signs)

      _, signs, _ = jax.lax.while_loop(redraw_cond, redraw,
                                       (jnp.asarray(1, jnp.int32), signs, unchanged(signs)))
    x_new = candidate(signs)
    margin, loss_new = _margin_and_loss(logits_fn, x_new, y, loss)
    improved = todo & (loss_new < loss_min)
    loss_min = jnp.where(improved, loss_new, loss_min)
    # square.py also keeps a misclassifying candidate; attack.py only a better one (the same
    # thing for the margin loss, where a misclassifying candidate lowers the loss).
    take = improved | (todo & (margin <= 0)) if variant == "autoattack" else improved
    margin_min = jnp.where(take, margin, margin_min)
    x_best = jnp.where(bcast(take, x), x_new, x_best)
    return i + 1, x_best, margin_min, loss_min, queries + todo.astype(jnp.int32)

  carry0 = (jnp.asarray(0, jnp.int32), x_best, margin_min, loss_min, queries)
  _, x_best, margin_min, _, queries = jax.lax.while_loop(cond, body, carry0)
  x_best = jax.lax.stop_gradient(x_best)
  mis = jnp.argmax(logits_fn(x_best), axis=-1) != y
  return SquareResult(x_adv=x_best, margin=margin_min, misclassified=mis, num_queries=queries)


# --- l2 and l1: fra31/auto-attack autoattack/square.py, attack_single_run's 'L2' and 'L1' branches

# ``eta_rectangles``' weights 1 / (k + 1)^power and the norm each rectangle and ``eta`` are scaled
# to: 1 / (k + 1)^2 and unit l2 norm (``norm == 'L2'``), 1 / (k + 1)^4 and unit l1 norm (``'L1'``).
_RECT_POWER = {"l2": 2, "l1": 4}


def _norm_over(a, norm, axis=None, keepdims=False):
  """The ``"l2"`` or ``"l1"`` norm of ``a`` over ``axis`` (all axes by default)."""
  if norm == "l1":
    return jnp.sum(jnp.abs(a), axis=axis, keepdims=keepdims)
  return jnp.sqrt(jnp.sum(a * a, axis=axis, keepdims=keepdims))


def _rect_tail(size, k_end, power=2):
  """T[j] = sum_{k=j}^{k_end - 1} 1 / (k + 1)^power for j = 0 .. size: what ``eta_rectangles``
  adds up for an element at Chebyshev distance j from the centre (it adds 1 / (counter + 1)^power
  at every counter whose rectangle holds the element). ``k_end`` may be traced. The official sum
  runs in increasing k; this one is a float32 reduction (the same to float32 rounding, tested)."""
  j = jnp.arange(size + 1)[:, None]
  k = jnp.arange(size + 1)[None, :]
  terms = jnp.float32(1.0) / jnp.float32(k + 1) ** power
  return jnp.sum(jnp.where((k >= j) & (k < k_end), terms, jnp.float32(0.0)), axis=1)


def _eta_rectangles(r, q, rows, cols, size, norm="l2"):
  """``square.py``'s ``eta_rectangles(rows, cols)`` (``norm='L2'`` or ``'L1'``) at the local
  coordinates ``r``, ``q`` (int arrays of one shape; 0 outside the rows x cols rectangle),
  normalised to unit ``norm`` over the rectangle. ``rows``, ``cols`` may be traced (<= ``size``).

  The official loop adds 1 / (k + 1)^2 (L2) or 1 / (k + 1)^4 (L1) to the rows
  [x_c - 1 - k, x_c + k) and columns [y_c - 1 - k, y_c + k) (clipped to the rectangle) for
  k = 0 .. max(x_c, y_c) - 1, x_c = rows // 2 + 1, y_c = cols // 2 + 1: an element at Chebyshev
  distance k0 from (x_c - 1, y_c - 1) receives the terms k0 .. max(x_c, y_c) - 1, in that order.
  The L1 branch divides by ``delta.abs().sum(dim=(), keepdim=True)``; torch reduces over all
  dimensions for ``dim=()`` (pytorch#29137), so that is the rectangle's l1 norm."""
  xc, yc = rows // 2 + 1, cols // 2 + 1
  tail = _rect_tail(size, jnp.maximum(xc, yc), _RECT_POWER[norm])
  k0 = jnp.maximum(jnp.abs(r - (xc - 1)), jnp.abs(q - (yc - 1)))
  inside = (r >= 0) & (r < rows) & (q >= 0) & (q < cols)
  val = jnp.where(inside, tail[jnp.clip(k0, 0, size)], jnp.float32(0.0))
  # The normalisation runs over the whole rectangle, laid out on a size x size canvas.
  cr, cq = jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing="ij")
  ck0 = jnp.maximum(jnp.abs(cr - (xc - 1)), jnp.abs(cq - (yc - 1)))
  cval = jnp.where((cr < rows) & (cq < cols), tail[jnp.clip(ck0, 0, size)], jnp.float32(0.0))
  scale = _norm_over(cval, norm)
  return val / jnp.where(scale > 0, scale, jnp.float32(1.0))


def eta(side, size: int, transpose=False, norm: str = "l2") -> jax.Array:
  """``square.py``'s ``eta(s)`` for ``norm='L2'`` (``norm="l2"``) or ``'L1'`` (``"l1"``), on a
  ``size`` x ``size`` canvas.

  The top s // 2 rows are ``eta_rectangles(s // 2, s)``, the other s - s // 2 rows minus
  ``eta_rectangles(s - s // 2, s)`` (two stacks of nested rectangles of opposite signs, weights
  1 / (r + 1)^2 for l2 and 1 / (r + 1)^4 for l1), the whole normalised to unit l2 (l1) norm,
  transposed when the official ``torch.rand([1]) > 0.5``.

  Args:
    side: s, 1 <= s <= ``size`` (int or traced int32).
    size: the canvas side (static); entries outside the top-left s x s block are 0.
    transpose: bool (or traced bool), the official random transposition.
    norm: ``"l2"`` or ``"l1"`` (static).

  Returns:
    float32 [size, size].

  Example:
    >>> e = eta(3, 3, norm="l1")
    >>> round(float(jnp.sum(jnp.abs(e))), 6), [round(float(v), 4) for v in e[:, 1]]
    (1.0, [0.4474, -0.0227, -0.3864])
  """
  side = jnp.asarray(side, jnp.int32)
  r, q = jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing="ij")
  half = side // 2
  top = _eta_rectangles(r, q, half, side, size, norm)
  bottom = _eta_rectangles(r - half, q, side - half, side, size, norm)
  e = jnp.where(r < half, top, -bottom)
  e = jnp.where((r < side) & (q < side), e, jnp.float32(0.0))
  e = e / _norm_over(e, norm)
  return jnp.where(transpose, e.T, e)


def eta_l2(side, size: int, transpose=False) -> jax.Array:
  """:func:`eta` with ``norm="l2"``, ``square.py``'s ``eta(s)`` of the L2 branch.

  Example:
    >>> e = eta_l2(3, 3)
    >>> round(float(jnp.sum(e * e)), 6), [round(float(v), 4) for v in e[:, 1]]
    (1.0, [0.6804, -0.1291, -0.6455])
  """
  return eta(side, size, transpose, "l2")


def side_length_l2(p, height, width):
  """``square.py``'s side of the L2 and L1 branches: max(round(sqrt(p H W)), 3), made odd (s + 1
  when even), at most min(H, W) (float32, as :func:`side_length`)."""
  side = jnp.maximum(jnp.round(jnp.sqrt(p * height * width)).astype(jnp.int32), 3)
  side = jnp.where(side % 2 == 0, side + 1, side)
  return jnp.minimum(side, min(height, width))


def l2_init_grid(height: int, width: int):
  """The initial grid of ``square.py``'s L2 and L1 branches: side s = H // 5, first corner
  (H - 5 s) // 2, then ``H // s`` x ``W // s`` windows s apart (windows past the border are cut,
  as the official slicing). Returns ``(s, corners)``, corners a list of (vh, vw)."""
  s = height // 5
  sp = (height - 5 * s) // 2
  return s, [(sp + a * s, sp + b * s) for a in range(height // s) for b in range(width // s)]


def l2_init_draws(key, batch: int, channels: int, n_windows: int):
  """The library's draws of the L2 (and L1) start: per window, the transposition of ``eta`` (one
  for the batch, as ``eta`` is called once per window) and the signs [n_windows, B, C]."""
  k_t, k_s = jax.random.split(key)
  transpose = jax.random.uniform(k_t, (n_windows,)) > 0.5
  signs = jnp.sign(jax.random.uniform(k_s, (n_windows, batch, channels), jnp.float32, -1.0, 1.0))
  return transpose, signs


def l2_iteration_draws(key, i, batch: int, channels: int, height: int, width: int, side):
  """The library's draws of L2 (and L1) iteration ``i`` (one set for the batch, as ``square.py``):
  the corners (vh, vw) of window 1 and (vh2, vw2) of window 2, each floor(U (H - s)), the
  transposition of ``eta`` and the signs [B, C] (``random_choice([B, c, 1, 1])``)."""
  k_h, k_w, k_h2, k_w2, k_t, k_s = jax.random.split(jax.random.fold_in(key, i), 6)

  def corner(k, extent):
    return jnp.floor(jax.random.uniform(k, ()) * (extent - side).astype(jnp.float32)).astype(
        jnp.int32)

  vh, vw, vh2, vw2 = (corner(k_h, height), corner(k_w, width), corner(k_h2, height),
                      corner(k_w2, width))
  transpose = jax.random.uniform(k_t, ()) > 0.5
  signs = jnp.sign(jax.random.uniform(k_s, (batch, channels), jnp.float32, -1.0, 1.0))
  return vh, vw, vh2, vw2, transpose, signs


def _l2_normalize(d):
  """``square.py``'s ``normalize`` (L2): d / (||d||_2 + 1e-12), per example."""
  return d / (bcast(per_example_norm(d, "l2"), d) + 1e-12)


def _l1_into_ball(x, delta, eps):
  """``x + delta + L1_projection(x, delta, eps * (1 - 1e-6))``, the L1 branch's way onto the l1
  ball and the box (``autopgd_base.py``'s ``L1_projection``, here
  :func:`robust_jax.attacks.l1_box_correction`), clipped to [0, 1] (the sum is in the box in exact
  arithmetic; the clip only absorbs its rounding, the official code has none)."""
  return jnp.clip(x + delta + l1_box_correction(x, delta, eps * (1.0 - 1e-6)), 0.0, 1.0)


def _init_delta(x, transpose, signs, norm):
  """``delta_init`` of the L2 and L1 branches: the grid of :func:`l2_init_grid` windows, window j
  holding ``eta(s)`` of ``norm`` (transposed where ``transpose[j]``) times ``signs[j]`` [B, C]."""
  _, height, width, _ = x.shape
  s, corners = l2_init_grid(height, width)
  delta = jnp.zeros_like(x)
  e0 = eta(s, s, norm=norm)
  for j, (vh, vw) in enumerate(corners):
    rows, cols = min(vh + s, height) - vh, min(vw + s, width) - vw
    if rows <= 0 or cols <= 0:
      continue
    e = jnp.where(transpose[j], e0.T, e0)[:rows, :cols]
    patch = e[None, :, :, None] * signs[j][:, None, None, :]
    delta = delta.at[:, vh:vh + rows, vw:vw + cols, :].add(patch)
  return delta


def l2_start(x, eps, transpose, signs):
  """x^0 of the L2 branch: ``clamp(x + normalize(delta_init) * eps, 0, 1)``, ``delta_init`` the
  grid of :func:`l2_init_grid` windows, window j holding ``eta(s)`` (transposed where
  ``transpose[j]``) times ``signs[j]`` [B, C]."""
  return jnp.clip(x + _l2_normalize(_init_delta(x, transpose, signs, "l2")) * eps, 0.0, 1.0)


def l1_start(x, eps, transpose, signs):
  """x^0 of the L1 branch: ``x + delta_init + L1_projection(x, delta_init, eps (1 - 1e-6))``,
  ``delta_init`` as in :func:`l2_start` with the l1 ``eta`` and *not* normalised (each window and
  channel holds l1 mass 1 before the projection; the official normalisation is commented out)."""
  return _l1_into_ball(x, _init_delta(x, transpose, signs, "l1"), eps)


def _window_update(x, x_best, eps, side, vh, vw, vh2, vw2, transpose, signs, norm):
  """The perturbation after one query's window edit, ``norm`` ``"l2"`` or ``"l1"`` (the part the
  L2 and L1 branches of ``attack_single_run`` share; :func:`l2_candidate`, :func:`l1_candidate`).

  With delta = x_best - x, window 1 at (vh, vw) and window 2 at (vh2, vw2), both s x s:
  window 1 <- eta(s) sign + delta_w1 / (1e-12 + ||delta_w1||), rescaled per channel to the mass
  of both windows plus what the budget leaves (l2: sqrt(max(eps^2 - ||delta||^2, 0) / C +
  ||delta_{w1 u w2}||^2); l1: (max(eps - ||delta||_1, 0) / C + ||delta_{w1 u w2}||_1) C, the
  official factor C included); window 2 <- 0 (set first, so window 1 wins where they overlap).
  Norms over a window are per example and channel (the official sums over the two spatial axes),
  ||delta|| over the whole example.
  """
  _, height, width, channels = x.shape
  size = min(height, width)
  hh = jnp.arange(height)[None, :, None, None]
  ww = jnp.arange(width)[None, None, :, None]

  def window(a, b):
    return (hh >= a) & (hh < a + side) & (ww >= b) & (ww < b + side)

  m1, m2 = window(vh, vw), window(vh2, vw2)
  e = eta(side, size, transpose, norm)
  rows = jnp.clip(jnp.arange(height) - vh, 0, size - 1)
  cols = jnp.clip(jnp.arange(width) - vw, 0, size - 1)
  e_img = e[rows[:, None], cols[None, :]][None, :, :, None]
  delta = x_best - x
  spatial = (1, 2)
  nw1 = _norm_over(jnp.where(m1, delta, 0.0), norm, spatial, True)
  norms_image = bcast(per_example_norm(delta, norm), x)
  nws = _norm_over(jnp.where(m1 | m2, delta, 0.0), norm, spatial, True)
  new = e_img * signs[:, None, None, :] + delta / (1e-12 + nw1)
  new = jnp.where(m1, new, 0.0)
  if norm == "l1":
    budget = (jnp.maximum(eps - norms_image, 0.0) / channels + nws) * channels
  else:
    budget = jnp.sqrt(jnp.maximum(eps * eps - norms_image ** 2, 0.0) / channels + nws ** 2)
  new = new / (1e-12 + _norm_over(new, norm, spatial, True)) * budget
  delta = jnp.where(m2, 0.0, delta)
  return jnp.where(m1, new, delta)


def l2_candidate(x, x_best, eps, side, vh, vw, vh2, vw2, transpose, signs):
  """One L2 query's candidate (``square.py``, ``attack_single_run``, ``norm == 'L2'``).

  The window edit of :func:`_window_update` (window 1 <- eta(s) sign + delta_w1 / ||delta_w1||,
  rescaled per channel to sqrt(max(eps^2 - ||delta||^2, 0) / C + ||delta_{w1 u w2}||^2);
  window 2 <- 0), then x_new = clamp(x + eps delta / (||delta|| + 1e-12), 0, 1).

  Args:
    x, x_best: [B, H, W, C]; eps: the radius; side: s (traced int); vh .. vw2: corners (traced
      ints); transpose: traced bool; signs: [B, C] in {-1, +1}.

  Returns:
    The candidates [B, H, W, C], in the l2 ball of radius eps (up to rounding) and in [0, 1].
  """
  delta = _window_update(x, x_best, eps, side, vh, vw, vh2, vw2, transpose, signs, "l2")
  return jnp.clip(x + _l2_normalize(delta) * eps, 0.0, 1.0)


def l1_candidate(x, x_best, eps, side, vh, vw, vh2, vw2, transpose, signs):
  """One L1 query's candidate (``square.py``, ``attack_single_run``, ``norm == 'L1'``).

  The window edit of :func:`_window_update` with l1 norms (window 1 <- eta_l1(s) sign +
  delta_w1 / ||delta_w1||_1, rescaled per channel to l1 mass (max(eps - ||delta||_1, 0) / C +
  ||delta_{w1 u w2}||_1) C; window 2 <- 0), then x_new = x + delta + L1_projection(x, delta,
  eps (1 - 1e-6)) (:func:`_l1_into_ball`). The factor C is the official code's: with C channels
  window 1 receives C times the mass the l2 rule's analogue gives it, and the projection (a soft
  threshold) takes the excess back out of the whole perturbation.

  Arguments as :func:`l2_candidate`; returns the candidates in the l1 ball of radius eps and in
  [0, 1].
  """
  return _l1_into_ball(
      x, _window_update(x, x_best, eps, side, vh, vw, vh2, vw2, transpose, signs, "l1"), eps)


_STARTS = {"l2": l2_start, "l1": l1_start}
_CANDIDATES = {"l2": l2_candidate, "l1": l1_candidate}


@functools.partial(jax.jit, static_argnames=("loss", "norm"))
def _square_lp(logits_fn, x, y, key, active, eps, n_queries, p_init, *, loss, norm):
  batch, height, width, channels = x.shape
  active = active & (jnp.argmax(logits_fn(x), axis=-1) == y)
  k_init, k_loop = jax.random.split(key)
  _, corners = l2_init_grid(height, width)
  transpose0, signs0 = l2_init_draws(k_init, batch, channels, len(corners))
  x_best = jnp.where(bcast(active, x), _STARTS[norm](x, eps, transpose0, signs0), x)
  margin_min, loss_min = _margin_and_loss(logits_fn, x_best, y, loss)
  queries = active.astype(jnp.int32)

  def cond(c):
    i, _, margin_min, _, _ = c
    return (i < n_queries) & jnp.any(active & (margin_min > 0))

  def body(c):
    i, x_best, margin_min, loss_min, queries = c
    todo = active & (margin_min > 0)
    side = side_length_l2(p_selection(p_init, i), height, width)
    vh, vw, vh2, vw2, transpose, signs = l2_iteration_draws(k_loop, i, batch, channels, height,
                                                            width, side)
    x_new = _CANDIDATES[norm](x, x_best, eps, side, vh, vw, vh2, vw2, transpose, signs)
    margin, loss_new = _margin_and_loss(logits_fn, x_new, y, loss)
    improved = todo & (loss_new < loss_min)
    loss_min = jnp.where(improved, loss_new, loss_min)
    take = improved | (todo & (margin <= 0))
    margin_min = jnp.where(take, margin, margin_min)
    x_best = jnp.where(bcast(take, x), x_new, x_best)
    return i + 1, x_best, margin_min, loss_min, queries + todo.astype(jnp.int32)

  carry0 = (jnp.asarray(0, jnp.int32), x_best, margin_min, loss_min, queries)
  _, x_best, margin_min, _, queries = jax.lax.while_loop(cond, body, carry0)
  x_best = jax.lax.stop_gradient(x_best)
  mis = jnp.argmax(logits_fn(x_best), axis=-1) != y
  return SquareResult(x_adv=x_best, margin=margin_min, misclassified=mis, num_queries=queries)


def check_hyperparameters(*, eps, n_queries=5000, p_init=0.8, loss="margin", norm="linf",
                          variant="square_attack", **_unchecked):
  """Raises ValueError naming the first bad hyperparameter of :func:`square` (no data needed)."""
  validation.check_choice("variant", variant, VARIANTS)
  if variant == "square_attack":
    if norm != "linf":
      raise ValueError(f"norm must be one of ('linf',) for variant='square_attack' (max-andr/"
                       f"square-attack's linf code), got {norm!r}; norm='l2' and 'l1' are "
                       "fra31/auto-attack's square.py: pass variant='autoattack'")
  elif norm not in NORMS:
    raise ValueError(f"norm must be one of {NORMS} for variant='autoattack', got {norm!r}")
  validation.check_choice("loss", loss, SQUARE_LOSSES)
  validation.check_eps(eps, norm)
  validation.check_scalar("n_queries", n_queries, low=0, integer=True)
  validation.check_scalar("p_init", p_init, low=0.0, high=1.0, low_open=True)


def square(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    key: jax.Array,
    n_queries=5000,
    p_init=0.8,
    loss: str = "margin",
    norm: str = "linf",
    active: Optional[jax.Array] = None,
    variant: str = "square_attack",
) -> SquareResult:
  """The Square Attack (Andriushchenko et al. 2020), linf, l2 or l1, untargeted, gradient-free.

  Args:
    logits_fn: ``x -> logits`` [B, C]; only evaluated, never differentiated.
    x: float32 images [B, H, W, C] in [0, 1].
    y: int32 labels [B].
    eps: the radius (in ``norm``), >= 0 (traced).
    key: PRNG key (stripes, windows and signs).
    n_queries: iterations after the initial query, >= 0 (5,000 in AutoAttack; traced).
    p_init: the initial fraction of pixels per square, in (0, 1] (0.8; traced).
    loss: ``"margin"`` (AutoAttack) or ``"ce"``.
    norm: ``"linf"``, ``"l2"`` or ``"l1"``; ``"l2"`` and ``"l1"`` are ``square.py``'s L2 and L1
      branches and need ``variant="autoattack"`` and images at least 5 pixels high (their initial
      grid has windows of side H // 5); see "The l2 attack" and "The l1 attack" in the module
      docstring.
    active: optional bool [B]; examples with False are not attacked (returned as ``x``); nor are
      examples misclassified at ``x``.
    variant: ``"square_attack"`` (default; ``max-andr/square-attack``: windows and signs per
      example, signs re-drawn until the window changes, the schedule rescaled to N + 1 queries) or
      ``"autoattack"`` (``fra31/auto-attack`` ``square.py``: one window and sign per batch and
      iteration, AutoAttack's schedule); see the module docstring.

  Returns:
    A :class:`SquareResult`.

  Raises:
    ValueError: on a bad argument (named, with its valid range), when values are concrete; ``x``
      not [B, H, W, C]; ``norm="l2"`` or ``"l1"`` with ``variant="square_attack"`` or with
      H < 5.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> logits_fn = lambda x: jnp.stack([0.1 - x.mean((1, 2, 3)), jnp.zeros(x.shape[0])], 1)
    >>> x = jnp.zeros((1, 4, 4, 1)); y = jnp.array([0])
    >>> r = square(logits_fn, x, y, eps=0.3, key=jax.random.key(0), n_queries=50)
    >>> bool(r.misclassified[0]), float(jnp.abs(r.x_adv - x).max()) <= 0.3 + 1e-6
    (True, True)
  """
  check_hyperparameters(eps=eps, n_queries=n_queries, p_init=p_init, loss=loss, norm=norm,
                        variant=variant)
  validation.check_attack_inputs(logits_fn, x, y, active=active, key=key,
                                 key_needed_by="Square's random search")
  if x.ndim != 4:
    raise ValueError(f"x must be NHWC images [B, H, W, C], got shape {x.shape}")
  active = jnp.ones((x.shape[0],), bool) if active is None else jnp.asarray(active, bool)
  if norm in ("l2", "l1"):
    validation.check_eps(eps, norm, image_shape=x.shape)
    if x.shape[1] < 5:
      raise ValueError(f"norm={norm!r} needs images at least 5 pixels high (square.py's initial "
                       f"grid has windows of side H // 5), got H = {x.shape[1]}")
    return _square_lp(as_pytree_fn(logits_fn), x, jnp.asarray(y, jnp.int32), key, active,
                      jnp.asarray(eps, jnp.float32), jnp.asarray(n_queries, jnp.int32),
                      jnp.asarray(p_init, jnp.float32), loss=loss, norm=norm)
  return _square(as_pytree_fn(logits_fn), x, jnp.asarray(y, jnp.int32), key, active,
                 jnp.asarray(eps, jnp.float32), jnp.asarray(n_queries, jnp.int32),
                 jnp.asarray(p_init, jnp.float32), loss=loss, variant=variant)
