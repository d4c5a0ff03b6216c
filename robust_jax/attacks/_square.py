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
``attack.py``'s ``metrics`` logging is not reproduced.
tests/attacks/test_official_transcriptions.py runs both codes, transcribed with the library's
random draws, against the library.

Measured on the digits MLP of tests/conftest.py (353 correctly classified test points, 1,000
queries, mean over 5 keys of the points left robust): at eps 0.1, ``"autoattack"`` 181.4,
``"square_attack"`` 158.2; per-example windows without the re-draw and with AutoAttack's schedule
181.2, with the re-draw 181.0 (the re-draw saves queries: 254 instead of 262 to success on
average); the side cap changes nothing on 8 x 8 images; the rest of the gap is the schedule
rescaled to 1,001 queries (smaller squares sooner: 70 queries to success). At eps 0.05: 304.2,
297.4, 303.8, 303.8.

The l2 and l1 attacks (``norm="l2"``, ``"l1"``, ``variant="autoattack"`` only) are ``fra31/
auto-attack``'s ``square.py`` L2 and L1 branches, AutoAttack's l2 and L1 stages: their first query
and candidates, and how they follow the official code, are in :mod:`robust_jax.attacks._square_lp`.
Every norm runs the loop of :mod:`robust_jax.attacks._square_search`: per-example state (best
point, margin, loss, queries) in the carry of one ``lax.while_loop`` that exits when every example
is broken; eps, ``n_queries`` and ``p_init`` are traced.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from robust_jax import validation
from robust_jax.attacks._loop import as_pytree_fn
from robust_jax.attacks._projections import bcast
from robust_jax.attacks._square_lp import square_lp
from robust_jax.attacks._square_search import SquareResult, p_selection, random_search

SQUARE_LOSSES = ("margin", "ce")
VARIANTS = ("square_attack", "autoattack")
NORMS = ("linf", "l2", "l1")
_MAX_SIGN_DRAWS = 64


def side_length(p, height, width, variant):
  """The side of the square for the fraction ``p``: round(sqrt(p H W)) clipped to [1, min(H, W)]
  (``"autoattack"``) or to [1, min(H, W) - 1] (``"square_attack"``: ``attack.py`` clips to h - 1,
  for square images; at least 1)."""
  side = jnp.round(jnp.sqrt(p * height * width)).astype(jnp.int32)
  high = min(height, width) if variant == "autoattack" else max(min(height, width) - 1, 1)
  return jnp.clip(side, 1, high)



@functools.partial(jax.jit, static_argnames=("loss", "variant"))
def _square(logits_fn, x, y, key, active, eps, n_queries, p_init, *, loss, variant):
  """The linf Square Attack on checked inputs (the arguments of :func:`square`, as arrays)."""
  batch, height, width, channels = x.shape
  k_init, k_loop = jax.random.split(key)
  stripes = jnp.sign(jax.random.uniform(k_init, (batch, 1, width, channels), x.dtype, -1.0, 1.0))
  hh = jnp.arange(height)[None, :, None]
  ww = jnp.arange(width)[None, None, :]
  per_example = variant == "square_attack"
  n_draw = batch if per_example else 1

  def propose(i, x_best, todo):
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
    return candidate(signs)

  # square.py also keeps a misclassifying candidate; attack.py only a better one (the same thing
  # for the margin loss, where a misclassifying candidate lowers the loss).
  return random_search(logits_fn, x, y, active, jnp.clip(x + eps * stripes, 0.0, 1.0), propose,
                       n_queries, loss=loss, keep_misclassified=variant == "autoattack")


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
    return square_lp(as_pytree_fn(logits_fn), x, jnp.asarray(y, jnp.int32), key, active,
                     jnp.asarray(eps, jnp.float32), jnp.asarray(n_queries, jnp.int32),
                     jnp.asarray(p_init, jnp.float32), loss=loss, norm=norm)
  return _square(as_pytree_fn(logits_fn), x, jnp.asarray(y, jnp.int32), key, active,
                 jnp.asarray(eps, jnp.float32), jnp.asarray(n_queries, jnp.int32),
                 jnp.asarray(p_init, jnp.float32), loss=loss, variant=variant)
