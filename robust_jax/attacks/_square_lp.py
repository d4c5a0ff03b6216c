"""The Square Attack's l2 and l1 branches (``fra31/auto-attack``, AutoAttack's l2 and L1 stages).

Part of :func:`robust_jax.attacks.square` (``norm="l2"`` or ``"l1"``, ``variant="autoattack"``):
the first query and the candidates of ``autoattack/square.py``'s ``attack_single_run``, run by the
shared loop of :mod:`robust_jax.attacks._square_search`. The linf attack is
:mod:`robust_jax.attacks._square`.

The l2 attack (``norm="l2"``): ``fra31/auto-attack``
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

The l1 attack (``norm="l1"``): the ``norm == 'L1'`` branch of the
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
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from robust_jax.attacks._projections import bcast, l1_box_correction, per_example_norm
from robust_jax.attacks._square_search import SquareResult, p_selection, random_search

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
  when even), at most min(H, W) (float32, as :func:`robust_jax.attacks._square.side_length`)."""
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
def square_lp(logits_fn, x, y, key, active, eps, n_queries, p_init, *, loss,
              norm) -> SquareResult:
  """The l2 (``norm="l2"``) or l1 (``"l1"``) Square Attack on checked inputs (the arguments of
  :func:`robust_jax.attacks.square`, as arrays; images at least 5 pixels high)."""
  batch, height, width, channels = x.shape
  k_init, k_loop = jax.random.split(key)
  _, corners = l2_init_grid(height, width)
  transpose0, signs0 = l2_init_draws(k_init, batch, channels, len(corners))

  def propose(i, x_best, todo):
    del todo
    side = side_length_l2(p_selection(p_init, i), height, width)
    vh, vw, vh2, vw2, transpose, signs = l2_iteration_draws(k_loop, i, batch, channels, height,
                                                            width, side)
    return _CANDIDATES[norm](x, x_best, eps, side, vh, vw, vh2, vw2, transpose, signs)

  return random_search(logits_fn, x, y, active, _STARTS[norm](x, eps, transpose0, signs0),
                       propose, n_queries, loss=loss, keep_misclassified=True)
