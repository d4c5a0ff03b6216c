"""The random search every Square Attack runs (linf, l2 and l1; :mod:`robust_jax.attacks._square`).

Andriushchenko, Croce, Flammarion and Hein, ECCV 2020, Algorithm 1: from a first query x^0, every
iteration proposes one candidate per example still to break, queries the model once, and keeps the
candidate when it lowers the loss (and, in ``fra31/auto-attack``'s ``square.py``, also when it
misclassifies). The norms differ only in x^0 and in how a candidate is drawn (their modules);
this module holds what they share: the loop, the loss, the schedule of the square's size and the
result.

Per-example state (best point, margin, loss, queries) lives in the carry of one ``lax.while_loop``
that exits when every example is broken or ``n_queries`` iterations have run.
"""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

from robust_jax import losses
from robust_jax.attacks._projections import bcast

_P_THRESHOLDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


@flax.struct.dataclass
class SquareResult:
  """What :func:`robust_jax.attacks.square` returns (all per example, leading size B).

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


def margin_and_loss(logits_fn, x, y, loss):
  """``(margin, loss)`` [B] at ``x``: the margin z_y - max_{j != y} z_j, and the loss minimised,
  the margin itself (``loss="margin"``) or -CE (``"ce"``)."""
  logits = logits_fn(x)
  z_y = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
  others = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  margin = z_y - jnp.max(others, axis=1)
  if loss == "margin":
    return margin, margin
  return margin, -losses.cross_entropy(logits, y)


def random_search(logits_fn, x, y, active, x_start, propose: Callable, n_queries, *, loss: str,
                  keep_misclassified: bool) -> SquareResult:
  """The search loop (to be traced inside the caller's ``jit``).

  Args:
    logits_fn: ``x -> logits`` [B, C], only evaluated.
    x: the images [B, H, W, C]; y: int32 labels [B].
    active: bool [B]; examples with False, and (as the official ``perturb``) examples
      misclassified at ``x``, are not attacked and come back as ``x``.
    x_start: x^0 [B, H, W, C] (used where attacked): the first query.
    propose: ``(i, x_best, todo) -> candidates`` [B, H, W, C] of iteration ``i`` (``todo``: the
      examples still to break, bool [B]).
    n_queries: iterations after the first query (traced).
    loss: ``"margin"`` or ``"ce"`` (:func:`margin_and_loss`).
    keep_misclassified: also keep a candidate that misclassifies without lowering the loss
      (``square.py``; ``attack.py`` keeps only a better one, the same for the margin loss).
  """
  active = active & (jnp.argmax(logits_fn(x), axis=-1) == y)
  x_best = jnp.where(bcast(active, x), x_start, x)
  margin_min, loss_min = margin_and_loss(logits_fn, x_best, y, loss)
  queries = active.astype(jnp.int32)

  def cond(c):
    i, _, margin_min, _, _ = c
    return (i < n_queries) & jnp.any(active & (margin_min > 0))

  def body(c):
    i, x_best, margin_min, loss_min, queries = c
    todo = active & (margin_min > 0)
    x_new = propose(i, x_best, todo)
    margin, loss_new = margin_and_loss(logits_fn, x_new, y, loss)
    improved = todo & (loss_new < loss_min)
    loss_min = jnp.where(improved, loss_new, loss_min)
    take = improved | (todo & (margin <= 0)) if keep_misclassified else improved
    margin_min = jnp.where(take, margin, margin_min)
    x_best = jnp.where(bcast(take, x), x_new, x_best)
    return i + 1, x_best, margin_min, loss_min, queries + todo.astype(jnp.int32)

  carry0 = (jnp.asarray(0, jnp.int32), x_best, margin_min, loss_min, queries)
  _, x_best, margin_min, _, queries = jax.lax.while_loop(cond, body, carry0)
  x_best = jax.lax.stop_gradient(x_best)
  mis = jnp.argmax(logits_fn(x_best), axis=-1) != y
  return SquareResult(x_adv=x_best, margin=margin_min, misclassified=mis, num_queries=queries)
