"""Auto-PGD (APGD): step-size-free PGD with momentum and per-example step-size halving (linf, l2; and
APGD-L1 with its sparse step, below).

Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (Algorithm 1, Section 3), as in ``fra31/auto-attack``
``autoattack/autopgd_base.py`` (``APGDAttack``, ``APGDAttack_targeted``).

One run with budget N (``n_iter``), for every example independently:

* Start: x^0 = clip(x + eps t / ||t||, 0, 1), t ~ U(-1, 1)^d for linf (t ~ N(0, I) for l2).
* Step: eta^0 = 2 eps. With a = 1 on the first iteration and ``momentum`` (0.75) after,
  z = P(x^k + eta sign(g^k)),  x^{k+1} = P(x^k + a (z - x^k) + (1 - a)(x^k - x^{k-1})),
  P the projection onto the eps-ball intersected with [0, 1] (l2: normalised gradient instead of the
  sign).
* Checkpoints w_j = ceil(p_j N) with p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
  0.06) (0, 22, 41, 57, 70, 80, 87, 93, 99 for N = 100; :func:`checkpoints`). At w_j an example
  halves its step size if
  Condition 1: the loss increased in fewer than rho (w_j - w_{j-1}) of the steps since w_{j-1}, or
  Condition 2: its step was not halved at w_{j-1} and its best loss did not improve since w_{j-1};
  it then restarts from x_max, its highest-loss point, with the gradient cached there.
* Outputs: ``x_best`` (the highest-loss point) and ``x_best_adv`` (the most recent misclassified
  iterate, what AutoAttack uses); an example is broken if any iterate was misclassified.

Everything per example (step size, counters, best points, momentum buffer) lives in the carry of one
``lax.while_loop``; the batch never shrinks. Restarts and (for APGD-T) target classes are an outer
``lax.fori_loop`` over runs; each run attacks only the examples still unbroken. The loop exits as
soon as no example is active (with ``early_stop=True`` an example stops at its first misclassified
iterate, which changes ``x_adv`` but never which examples are broken: examples are independent).
eps, ``n_iter`` (the checkpoints are computed in-graph from it), rho, momentum, the number of
restarts and of target classes are traced: changing them does not recompile. ``logits_fn`` is an
ordinary argument of the compiled function (:func:`as_pytree_fn`): pass
``jax.tree_util.Partial(apply_fn, params)`` and a new checkpoint reuses the compiled attack.

Paper versus official code (``variant``); line numbers of ``fra31/auto-attack``
``autoattack/autopgd_base.py`` at commit a392200:

* ``"official"``, what AutoAttack runs (:func:`robust_jax.attacks.autoattack` and the evaluation
  suite use it by default), ``attack_single_run``:

  - the integer schedule (lines 153-155, 298, 405, 424): first interval max(int(0.22 N), 1),
    then shrinking by max(int(0.03 N), 1) down to max(int(0.06 N), 1); the same checkpoints as the
    paper for N = 100 (0, 22, 41, 57, 70, 80, 87, 93, 99), not for other N (N = 10: 2, 3, ..., 10
    against 3, 5, 6, ..., 10);
  - Condition 1 with ``<=`` (``check_oscillation``, line 171: ``t <= k * k3``), so a window of
    length k with exactly rho k increases halves the step (for N = 100: the window of 16 steps
    with 12 increases);
  - the first window compares f(x^1) with 0, not with f(x^0): ``check_oscillation`` reads
    ``loss_steps[j - k]`` = ``loss_steps[-1]`` at j = k - 1 (line 169), the not yet written last
    row of the zero-initialised history of the iterates' losses (line 233; f(x^0) is never
    stored). So for CE (> 0) the first step always counts as an increase, for DLR (< 0 while
    unbroken) never; for N = 1 that row is f(x^1) itself and the comparison is False;
  - l2 iterates rescaled into the ball, then clipped to the box (lines 338-344), which is not the
    projection onto their intersection.

* ``"paper"``, Croce and Hein (2020), Algorithm 1 and Section 3.2 (the default of :func:`apgd`
  and :func:`apgd_targeted`): checkpoints ceil(p_j N) exactly (integer arithmetic); Condition 1
  with a strict ``<`` (eq. of Condition 1: "< rho (w_j - w_{j-1})"); the first window compares
  f(x^1) with f(x^0); l2 iterates use the exact projection onto the ball intersected with the box
  (:func:`robust_jax.attacks.project_l2`).

Both variants share the rest, as the code: the start x + eps t / (||t|| + 1e-12) in that order
of operations (lines 206-213), the step 2 eps, the momentum 0.75 from the second iteration
(line 326), Condition 2 (lines 409-410), the restart from x_max with its cached gradient (lines
416-422), and, after such a restart, the comparison of the next loss with the loss of the iterate
before it (the code's loss history). tests/attacks/test_official_transcriptions.py compares every iterate,
the step sizes and the outputs of the official variant (APGD-CE and APGD-T, linf and l2) with a
statement-by-statement transcription of ``attack_single_run`` and ``perturb``. On the digits MLP of
tests/conftest.py (N = 100) the two variants give the same robust accuracy for eps 0.03 to 0.15
(their trajectories differ for 1 of 353 points at eps 0.1 and 0.15); for N != 100 the schedules
differ and so do most trajectories.

APGD-L1 (``norm="l1"``, ``variant="official"`` only): Croce and Hein, "Mind the box: l1-APGD for
sparse adversarial attacks on image classifiers", ICML 2021, as coded in ``autopgd_base.py``
(``attack_single_run``'s L1 branch, ``L1_projection``, ``decr_eps_pgd``):

* Start: t ~ N(0, I), x^0 = clip(x + t + L1_projection(x, t, eps), 0, 1): one joint projection
  onto the l1 ball intersected with the box (:func:`robust_jax.attacks.l1_box_correction`), not
  l1 then clip.
* Step (no momentum; eta^0 = eps): keep the coordinates with |g| >= the (1 - topk) quantile
  (topk^0 = 0.2; :func:`l1_sparse_step`), x <- x + eta sign(g_sparse) / ||sign(g_sparse)||_1,
  then the joint projection (and a clip to [0, 1] that changes only rounding).
* Checkpoint every k = max(int(0.04 N), 1) iterations: s = ||x_best - x||_0; if s / s_old < 0.95
  the step is reset to eps and the example restarts from x_best with its cached gradient, else
  eta /= 1.5; eta is clamped to [eps / 10, eps]; topk = s / (1.5 d); s_old = s.
* ``use_largereps`` (``perturb`` with ``decr_eps_pgd``, AutoAttack's L1 standard version): eps x
  3, 2, 1 for ceil(0.3 N), ceil(0.3 N) and the remaining iterations (:func:`largereps_schedule`),
  each stage warm-started from the previous stage's x_best re-projected (topk = s / (1.5 d) from
  the start); the random start is at 3 eps; only the last stage decides which examples are
  broken.

tests/attacks/test_apgd_l1.py runs a NumPy transcription of these (with ``L1_projection`` itself)
against the library. The official L1 projection sorts the 2 d breakpoints and finds the threshold
with float32 cumulative sums (rounding up to ~2 d ulps of the l1 mass); the library's is exact to
float32 (bisection, tested against an independent solver); the two agree to that rounding.

EOT (``randomized=True``, ``eot_iter``; AutoAttack's ``version='rand'``): ``logits_fn(x, key)`` is
called with a fresh key per pass, and each iterate's gradient is the mean of ``eot_iter``
gradients (:func:`eot_value_and_grad`). As the code, the loss and the prediction at an iterate are
those of its last pass, not averaged (the paper and some summaries speak of averaging the loss
too; ``autopgd_base.py`` averages ``grad`` only).

Left as in the library, not the code: with ``early_stop=True`` (the default, and AutoAttack's
stages) an example stops at its first misclassified iterate (the code runs all N iterations and
returns the most recent one: the broken set is the same); ``x_adv`` of an unbroken example is its
highest-loss point (``perturb`` returns x; AutoAttack only uses broken points); ties in the
target order of APGD-T follow ``jnp.argsort`` (``torch.sort`` leaves them unspecified); the random
draws are ``jax.random`` (restart r: ``fold_in(key, r)``), not torch's.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from robust_jax import fosc as fosc_lib
from robust_jax import losses
from robust_jax import validation
from robust_jax.attacks import _projections as projections
from robust_jax.attacks._loop import AttackResult, as_pytree_fn
from robust_jax.attacks._projections import bcast, per_example_norm

NORMS = ("linf", "l2", "l1")
APGD_LOSSES = ("ce", "dlr")
VARIANTS = ("paper", "official")


def _paper_fractions() -> tuple[int, ...]:
  """p_j of the paper in hundredths, up to the first p_j >= 1 (exact integer arithmetic)."""
  p = [0, 22]
  while p[-1] < 100:
    p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
  return tuple(p)


_P_HUNDREDTHS = _paper_fractions()  # (0, 22, 41, 57, 70, 80, 87, 93, 99, 105)


def checkpoints(n_iter: int, *, variant: str = "paper") -> tuple[int, ...]:
  """The checkpoints w_0 = 0 < w_1 < ... <= ``n_iter`` at which APGD may halve its step size.

  Args:
    n_iter: the number of iterations N >= 1.
    variant: ``"paper"`` (w_j = ceil(p_j N)) or ``"official"`` (``autopgd_base.py``'s integer
      intervals).

  Returns:
    The checkpoints, w_0 = 0 included, duplicates removed.

  Example:
    >>> checkpoints(100)
    (0, 22, 41, 57, 70, 80, 87, 93, 99)
  """
  validation.check_scalar("n_iter", n_iter, low=1, integer=True)
  validation.check_choice("variant", variant, VARIANTS)
  n = int(n_iter)
  out = [0]
  if variant == "paper":
    for p in _P_HUNDREDTHS[1:]:
      w = -(-p * n // 100)
      if w > n:
        break
      if w > out[-1]:
        out.append(w)
  else:
    k, size_decr, k_min = max(22 * n // 100, 1), max(3 * n // 100, 1), max(6 * n // 100, 1)
    while out[-1] + k <= n:
      out.append(out[-1] + k)
      k = max(k - size_decr, k_min)
  return tuple(out)


def _next_checkpoint(current, interval, n_iter, variant):
  """In-graph (traced ``n_iter``) schedule: the checkpoint after ``current`` and the state after it.

  ``interval`` is the official code's current interval k (None before the first checkpoint). Returns
  ``(next, next_interval)``; iterating from ``(0, None)`` gives :func:`checkpoints` (tested).
  """
  n_iter = jnp.asarray(n_iter, jnp.int32)
  if variant == "paper":
    w = (jnp.asarray(_P_HUNDREDTHS, jnp.int32) * n_iter + 99) // 100
    nxt = jnp.min(jnp.where(w > current, w, jnp.iinfo(jnp.int32).max))
    return nxt, jnp.asarray(0, jnp.int32)
  if interval is None:
    k = jnp.maximum(22 * n_iter // 100, 1)
  else:
    k = jnp.maximum(interval - jnp.maximum(3 * n_iter // 100, 1), jnp.maximum(6 * n_iter // 100, 1))
  return current + k, k


def _project(z, x, eps, norm, variant):
  if norm == "l2" and variant == "official":
    # autopgd_base.py: clamp(x + normalize(z - x) * min(eps, ||z - x||), 0, 1), in that order.
    d = z - x
    n = per_example_norm(d, "l2")
    return jnp.clip(x + d / bcast(n + 1e-12, d) * bcast(jnp.minimum(eps, n), d), 0.0,
                    1.0).astype(x.dtype)
  return projections.project(z, x, eps, norm)


def _official_first_reference(loss0, n_iter):
  """What the official code compares f(x^1) with in the first window of Condition 1.

  ``check_oscillation(loss_steps, j, k)`` at the first checkpoint (j = k - 1) compares
  ``loss_steps[0]`` = f(x^1) with ``loss_steps[-1]``, the last row of the zero-initialised history
  of the N iterates' losses (``autopgd_base.py``, ``attack_single_run`` and ``check_oscillation``):
  0 for N >= 2 (that row is written at the last iteration only), f(x^1) itself for N = 1 (the only
  row), and f(x^1) > f(x^1) is False, as f(x^1) > +inf.
  """
  return jnp.where(n_iter == 1, jnp.inf, 0.0).astype(loss0.dtype) * jnp.ones_like(loss0)


class _RunOut(NamedTuple):
  x_best: jax.Array
  loss_best: jax.Array
  broken: jax.Array
  x_best_adv: jax.Array
  steps: jax.Array
  kappa: jax.Array
  step_size: jax.Array  # [B], the step size at the end of the run (the transcription tests)


def eot_value_and_grad(logits_fn, loss_fn, y, target, eot_iter, randomized):
  """``evaluate(x, key) -> (loss [B], misclassified [B], grad [B, ...])`` of one APGD iterate.

  Deterministic model (``randomized=False``): one forward and backward pass of ``logits_fn(x)``.
  Randomised model (``randomized=True``, AutoAttack's ``version='rand'``): ``eot_iter`` passes of
  ``logits_fn(x, fold_in(key, j))``, j = 0 .. eot_iter - 1, run one after the other
  (``lax.fori_loop``: the memory of one pass), and, as ``autopgd_base.py`` ``attack_single_run``
  (``for _ in range(self.eot_iter): grad += ...; grad /= float(self.eot_iter)``), the gradient is
  the mean of the per-pass gradients (summed in pass order, then divided: the mean of the
  gradients, never of their signs) while the loss and the prediction are those of the last pass
  (the official ``loss_indiv`` and ``logits`` are overwritten by every pass, not averaged).
  """
  def one(xx, k):
    def total(v):
      logits = logits_fn(v, k) if randomized else logits_fn(v)
      per_example = loss_fn(logits, y, target=target)
      return jnp.sum(per_example), (per_example, logits)

    (_, (loss, logits)), grad = jax.value_and_grad(total, has_aux=True)(xx)
    return loss, logits, grad

  def evaluate(xx, key=None):
    if not randomized:
      loss, logits, grad = one(xx, None)
      return loss, jnp.argmax(logits, axis=-1) != y, grad

    def body(j, acc):
      g_sum, _, _ = acc
      loss, logits, grad = one(xx, jax.random.fold_in(key, j))
      return g_sum + grad, loss, logits

    # Pass 0 outside the loop: 0 + g_0 = g_0 exactly, so the sum is the official one.
    loss, logits, grad = one(xx, jax.random.fold_in(key, 0))
    g_sum, loss, logits = jax.lax.fori_loop(1, eot_iter, body, (grad, loss, logits))
    grad = g_sum / jnp.asarray(eot_iter, xx.dtype)
    return loss, jnp.argmax(logits, axis=-1) != y, grad

  return evaluate


def _iterate_key(model_key, i):
  return None if model_key is None else jax.random.fold_in(model_key, i)


def _single_run(logits_fn, loss_fn, x, y, target, key, active, eps, n_iter, rho, momentum, *,
                norm, variant, early_stop, eot_iter=1, randomized=False,
                model_key=None) -> _RunOut:
  """One APGD run (Algorithm 1) on the examples with ``active``; the others do not move.

  Iterates are evaluated by :func:`eot_value_and_grad`; iterate i (0 the start) with the model key
  ``fold_in(model_key, i)`` (``randomized``; unused for a deterministic model)."""
  evaluate = eot_value_and_grad(logits_fn, loss_fn, y, target, eot_iter, randomized)
  batch = x.shape[0]
  n_iter = jnp.asarray(n_iter, jnp.int32)

  if norm == "linf":
    t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
  else:
    t = jax.random.normal(key, x.shape, x.dtype)
  # As autopgd_base.py: x + eps * normalize(t), normalize(t) = t / (||t|| + 1e-12).
  x0 = jnp.clip(x + eps * (t / bcast(per_example_norm(t, norm) + 1e-12, t)), 0.0,
                1.0).astype(x.dtype)
  x0 = jnp.where(bcast(active, x), x0, x)
  loss0, mis0, grad0 = evaluate(x0, _iterate_key(model_key, 0))

  zero_i = jnp.zeros((batch,), jnp.int32)
  broken0 = active & mis0
  next0, interval0 = _next_checkpoint(jnp.asarray(0, jnp.int32), None, n_iter, variant)
  carry0 = dict(
      i=jnp.asarray(0, jnp.int32), x_k=x0, x_prev=x0, grad=grad0,
      loss_cmp=loss0 if variant == "paper" else _official_first_reference(loss0, n_iter),
      correct_k=~mis0,
      x_best=x0, grad_best=grad0, loss_best=loss0, best_correct=~mis0,
      x_best_adv=x0, broken=broken0,
      step=jnp.full((batch,), 2.0, x.dtype) * eps,
      count=zero_i, loss_best_last=loss0, reduced_last=jnp.ones((batch,), bool),
      prev_check=jnp.asarray(0, jnp.int32),
      next_check=next0, interval=interval0,
      active=active & ~(early_stop & broken0),
      steps=zero_i, kappa=zero_i,
  )

  def cond(c):
    return (c["i"] < n_iter) & jnp.any(c["active"])

  def body(c):
    upd = c["active"]
    b = lambda v: bcast(v, x)  # noqa: E731
    a = jnp.where(c["i"] == 0, 1.0, momentum).astype(x.dtype)
    x_k = c["x_k"]
    z = _project(x_k + b(c["step"]) * projections.ascent_direction(c["grad"], norm), x, eps, norm,
                 variant)
    x_new = _project(x_k + a * (z - x_k) + (1.0 - a) * (x_k - c["x_prev"]), x, eps, norm, variant)
    loss_new, mis_new, grad_new = evaluate(x_new, _iterate_key(model_key, c["i"] + 1))

    kappa = c["kappa"] + (upd & c["correct_k"]).astype(jnp.int32)
    steps = c["steps"] + upd.astype(jnp.int32)
    x_prev = jnp.where(b(upd), x_k, c["x_prev"])
    x_k = jnp.where(b(upd), x_new, x_k)
    grad = jnp.where(b(upd), grad_new, c["grad"])
    correct_k = jnp.where(upd, ~mis_new, c["correct_k"])
    newly_mis = upd & mis_new
    broken = c["broken"] | newly_mis
    x_best_adv = jnp.where(b(newly_mis), x_new, c["x_best_adv"])
    count = c["count"] + (upd & (loss_new > c["loss_cmp"])).astype(jnp.int32)
    loss_cmp = jnp.where(upd, loss_new, c["loss_cmp"])
    improved = upd & (loss_new > c["loss_best"])
    x_best = jnp.where(b(improved), x_new, c["x_best"])
    grad_best = jnp.where(b(improved), grad_new, c["grad_best"])
    loss_best = jnp.where(improved, loss_new, c["loss_best"])
    best_correct = jnp.where(improved, ~mis_new, c["best_correct"])

    # Checkpoint (global: the schedule is the same for every example).
    i = c["i"] + 1
    at_check = i == c["next_check"]
    length = (c["next_check"] - c["prev_check"]).astype(x.dtype)
    if variant == "paper":
      cond1 = count.astype(x.dtype) < rho * length
    else:
      cond1 = count.astype(x.dtype) <= rho * length
    cond2 = ~c["reduced_last"] & (c["loss_best_last"] >= loss_best)
    reduce = at_check & upd & (cond1 | cond2)
    reduced_last = jnp.where(at_check, cond1 | cond2, c["reduced_last"])
    loss_best_last = jnp.where(at_check, loss_best, c["loss_best_last"])
    step = jnp.where(reduce, 0.5 * c["step"], c["step"])
    x_k = jnp.where(b(reduce), x_best, x_k)
    grad = jnp.where(b(reduce), grad_best, grad)
    correct_k = jnp.where(reduce, best_correct, correct_k)
    count = jnp.where(at_check, 0, count)
    following, interval_after = _next_checkpoint(c["next_check"], c["interval"], n_iter, variant)
    interval = jnp.where(at_check, interval_after, c["interval"])
    prev_check = jnp.where(at_check, c["next_check"], c["prev_check"])
    next_check = jnp.where(at_check, following, c["next_check"])
    active = upd & ~(early_stop & broken)
    return dict(
        i=i, x_k=x_k, x_prev=x_prev, grad=grad, loss_cmp=loss_cmp, correct_k=correct_k,
        x_best=x_best, grad_best=grad_best, loss_best=loss_best, best_correct=best_correct,
        x_best_adv=x_best_adv, broken=broken, step=step, count=count,
        loss_best_last=loss_best_last, reduced_last=reduced_last, prev_check=prev_check,
        next_check=next_check, interval=interval, active=active, steps=steps, kappa=kappa)

  c = jax.lax.while_loop(cond, body, carry0)
  return _RunOut(x_best=c["x_best"], loss_best=c["loss_best"], broken=c["broken"],
                 x_best_adv=c["x_best_adv"], steps=c["steps"], kappa=c["kappa"],
                 step_size=c["step"])


def l0_norm(d):
  """``other_utils.py``'s ``L0_norm``: the number of non-zero entries of each example, int32 [B]."""
  return jnp.sum((d != 0).reshape(d.shape[0], -1), axis=1).astype(jnp.int32)


def l1_sparse_step(x_k, grad, step, topk):
  """One APGD-L1 step before the projection (``autopgd_base.py``, ``attack_single_run``, the
  ``norm == 'L1'`` step): keep the coordinates with |g| >= the value at index
  ``clamp((1 - topk) d, 0, d - 1)`` (truncated) of |g| sorted ascending, and move by
  ``step * sign(g_sparse) / (||sign(g_sparse)||_1 + 1e-10)``.

  Args:
    x_k: the iterate [B, ...]; grad: its gradient [B, ...]; step: [B]; topk: float32 [B], the
      fraction of coordinates to keep.

  Returns:
    ``x_k + step * sign(g_sparse) / (||sign(g_sparse)||_1 + 1e-10)`` (not projected).
  """
  batch = x_k.shape[0]
  n_fts = x_k[0].size
  flat = jnp.abs(grad).reshape(batch, -1)
  srt = jnp.sort(flat, axis=1)
  idx = jnp.clip((jnp.float32(1.0) - topk) * jnp.float32(n_fts), 0, n_fts - 1).astype(jnp.int32)
  thr = jnp.take_along_axis(srt, idx[:, None], axis=1)
  sparse = jnp.where(jnp.abs(grad) >= thr.reshape((batch,) + (1,) * (grad.ndim - 1)), grad, 0.0)
  sg = jnp.sign(sparse)
  return x_k + bcast(step, x_k) * sg / (bcast(per_example_norm(sg, "l1"), sg) + 1e-10)


class _L1Stage(NamedTuple):
  """The state an APGD-L1 run hands to the next stage of ``decr_eps_pgd``."""
  x_best: jax.Array
  loss_best: jax.Array
  broken: jax.Array
  x_best_adv: jax.Array
  steps: jax.Array
  kappa: jax.Array
  step_size: jax.Array


def _single_run_l1(evaluate, x, model_key, x_start, topk0, sp_old0, active, eps, n_iter,
                   early_stop) -> _L1Stage:
  """One APGD-L1 run, ``autopgd_base.py`` ``attack_single_run`` with ``norm='L1'``, from
  ``x_start`` (already in the ball and the box), on the examples with ``active``.

  No momentum; step eta^0 = eps (alpha = 1); a checkpoint every k = max(int(0.04 N), 1)
  iterations (constant), where, with s = ||x_best - x||_0: if s / s_old < 0.95 the step is reset to
  eps and the example restarts from x_best with its cached gradient, else the step is divided by
  1.5; the step is clamped to [eps / 10, eps]; topk = s / d / 1.5; s_old = s.
  """
  batch = x.shape[0]
  n_fts = x[0].size
  n_iter = jnp.asarray(n_iter, jnp.int32)
  k = jnp.maximum(4 * n_iter // 100, 1)  # int(.04 * n_iter): equal for every n_iter (checked)
  b = lambda v: bcast(v, x)  # noqa: E731
  loss0, mis0, grad0 = evaluate(x_start, _iterate_key(model_key, 0))
  zero_i = jnp.zeros((batch,), jnp.int32)
  broken0 = active & mis0
  carry0 = dict(
      i=jnp.asarray(0, jnp.int32), counter=jnp.asarray(0, jnp.int32), x_k=x_start, grad=grad0,
      correct_k=~mis0, x_best=x_start, grad_best=grad0, loss_best=loss0, best_correct=~mis0,
      x_best_adv=x_start,
      broken=broken0, step=jnp.full((batch,), eps, x.dtype), topk=topk0, sp_old=sp_old0,
      active=active & ~(early_stop & broken0), steps=zero_i, kappa=zero_i)

  def cond(c):
    return (c["i"] < n_iter) & jnp.any(c["active"])

  def body(c):
    upd = c["active"]
    x_step = l1_sparse_step(c["x_k"], c["grad"], c["step"], c["topk"])
    delta_u = x_step - x
    # x + delta_u + L1_projection(x, delta_u, eps), as the code; the clip to the box changes
    # nothing but rounding (the correction puts the point in [0, 1] in exact arithmetic).
    x_new = jnp.clip(x + delta_u + projections.l1_box_correction(x, delta_u, eps), 0.0,
                     1.0).astype(x.dtype)
    loss_new, mis_new, grad_new = evaluate(x_new, _iterate_key(model_key, c["i"] + 1))
    kappa = c["kappa"] + (upd & c["correct_k"]).astype(jnp.int32)
    steps = c["steps"] + upd.astype(jnp.int32)
    x_k = jnp.where(b(upd), x_new, c["x_k"])
    grad = jnp.where(b(upd), grad_new, c["grad"])
    correct_k = jnp.where(upd, ~mis_new, c["correct_k"])
    newly_mis = upd & mis_new
    broken = c["broken"] | newly_mis
    x_best_adv = jnp.where(b(newly_mis), x_new, c["x_best_adv"])
    improved = upd & (loss_new > c["loss_best"])
    x_best = jnp.where(b(improved), x_new, c["x_best"])
    grad_best = jnp.where(b(improved), grad_new, c["grad_best"])
    loss_best = jnp.where(improved, loss_new, c["loss_best"])
    best_correct = jnp.where(improved, ~mis_new, c["best_correct"])

    counter = c["counter"] + 1
    at_check = counter == k
    check = at_check & upd
    sp_curr = l0_norm(x_best - x)
    ratio = sp_curr.astype(jnp.float32) / c["sp_old"].astype(jnp.float32)
    fl_redtopk = ratio < 0.95
    topk = jnp.where(check, sp_curr.astype(jnp.float32) / jnp.float32(n_fts) / jnp.float32(1.5),
                     c["topk"])
    step = jnp.where(fl_redtopk, eps, c["step"] / 1.5)
    step = jnp.clip(step, eps / 10.0, eps)
    step = jnp.where(check, step, c["step"])
    sp_old = jnp.where(check, sp_curr, c["sp_old"])
    reset = check & fl_redtopk
    x_k = jnp.where(b(reset), x_best, x_k)
    grad = jnp.where(b(reset), grad_best, grad)
    correct_k = jnp.where(reset, best_correct, correct_k)
    counter = jnp.where(at_check, 0, counter)
    active = upd & ~(early_stop & broken)
    return dict(
        i=c["i"] + 1, counter=counter, x_k=x_k, grad=grad, correct_k=correct_k, x_best=x_best,
        grad_best=grad_best, loss_best=loss_best, best_correct=best_correct,
        x_best_adv=x_best_adv, broken=broken,
        step=step, topk=topk, sp_old=sp_old, active=active, steps=steps, kappa=kappa)

  c = jax.lax.while_loop(cond, body, carry0)
  return _L1Stage(x_best=c["x_best"], loss_best=c["loss_best"], broken=c["broken"],
                  x_best_adv=c["x_best_adv"], steps=c["steps"], kappa=c["kappa"],
                  step_size=c["step"])


def largereps_schedule(n_iter):
  """``decr_eps_pgd``'s schedule as ``perturb`` builds it with ``use_largereps``: eps x (3, 2, 1)
  for ceil(0.3 N), ceil(0.3 N) and N - 2 ceil(0.3 N) iterations (``math.ceil(.3 * N)`` equals the
  integer ceil(3 N / 10) for every N up to 20,000, checked). Returns ``(multipliers, iters)``,
  float32 [3] and int32 [3] (traced ``n_iter`` allowed).

  Example:
    >>> m, it = largereps_schedule(100)
    >>> m.tolist(), it.tolist()
    ([3.0, 2.0, 1.0], [30, 30, 40])
  """
  n = jnp.asarray(n_iter, jnp.int32)
  first = (3 * n + 9) // 10
  return (jnp.asarray([3.0, 2.0, 1.0], jnp.float32),
          jnp.stack([first, first, n - 2 * first]).astype(jnp.int32))


def _run_l1(evaluate, x, key, model_key, active, eps, n_iter, *, use_largereps,
            early_stop) -> _RunOut:
  """One APGD-L1 run: ``attack_single_run`` (``use_largereps=False``) or ``decr_eps_pgd``.

  Without ``use_largereps``: x^0 = clip(x + t + L1_projection(x, t, eps), 0, 1), t ~ N(0, I),
  topk 0.2, s_old = d. With it (``decr_eps_pgd(x, y, [3 eps, 2 eps, eps], iters)``): x_init =
  x + t + L1_projection(x, t, 3 eps); stage j re-projects x_init onto its eps_j-ball (box included)
  and runs ``attack_single_run(x_init=...)`` (topk = ||x_init - x||_0 / d / 1.5, s_old =
  ||x_init - x||_0) for iters_j iterations; x_init of the next stage is this stage's x_best.
  Only the last stage (eps itself) says which examples are broken and returns x_best_adv: the
  points of the larger balls are not adversarial examples within eps. Examples stop early only in
  that last stage.
  """
  batch = x.shape[0]
  n_fts = x[0].size
  t = jax.random.normal(key, x.shape, x.dtype)
  b = lambda v: bcast(v, x)  # noqa: E731

  def stage_key(j):
    return None if model_key is None else jax.random.fold_in(model_key, j)

  if not use_largereps:
    x0 = jnp.clip(x + t + projections.l1_box_correction(x, t, eps), 0.0, 1.0).astype(x.dtype)
    x0 = jnp.where(b(active), x0, x)
    out = _single_run_l1(evaluate, x, stage_key(0), x0, jnp.full((batch,), 0.2, jnp.float32),
                         jnp.full((batch,), n_fts, jnp.int32), active, eps, n_iter, early_stop)
    return _RunOut(x_best=out.x_best, loss_best=out.loss_best, broken=out.broken,
                   x_best_adv=out.x_best_adv, steps=out.steps, kappa=out.kappa,
                   step_size=out.step_size)

  mults, iters = largereps_schedule(n_iter)
  x_init = x + t
  x_init = x_init + projections.l1_box_correction(x, x_init - x, mults[0] * eps)

  def stage(j, carry):
    x_init, _, steps = carry
    eps_j = mults[j] * eps
    x_init = x_init + projections.l1_box_correction(x, x_init - x, eps_j)
    x_init = jnp.clip(x_init, 0.0, 1.0).astype(x.dtype)  # attack_single_run's clamp
    x_init = jnp.where(b(active), x_init, x)
    sp = l0_norm(x_init - x)
    topk0 = sp.astype(jnp.float32) / jnp.float32(n_fts) / jnp.float32(1.5)
    out = _single_run_l1(evaluate, x, stage_key(j), x_init, topk0, sp, active, eps_j, iters[j],
                         early_stop & (j == 2))
    return out.x_best, out, steps + out.steps

  zero_out = _L1Stage(x_best=x, loss_best=jnp.zeros((batch,), jnp.float32),
                      broken=jnp.zeros((batch,), bool), x_best_adv=x,
                      steps=jnp.zeros((batch,), jnp.int32), kappa=jnp.zeros((batch,), jnp.int32),
                      step_size=jnp.zeros((batch,), x.dtype))
  carry0 = (x_init.astype(x.dtype), zero_out, jnp.zeros((batch,), jnp.int32))
  # The three stages are one while loop, run three times (a fori_loop: compiled once).
  _, out, steps = jax.lax.fori_loop(0, 3, stage, carry0)
  return _RunOut(x_best=out.x_best, loss_best=out.loss_best, broken=out.broken,
                 x_best_adv=out.x_best_adv, steps=steps, kappa=out.kappa,
                 step_size=out.step_size)


@functools.partial(
    jax.jit, static_argnames=("norm", "loss", "variant", "early_stop", "targeted", "use_largereps",
                              "randomized"))
def _apgd(logits_fn, x, y, key, active, target, eps, n_iter, rho, momentum, n_restarts,
          n_target_classes, eot_iter, *, norm, loss, variant, early_stop, targeted, use_largereps,
          randomized) -> AttackResult:
  batch = x.shape[0]
  loss_fn = losses.get_loss(loss)
  if randomized:
    # A randomised model: a fresh model key for every forward pass; the random starts keep ``key``.
    key, model_key = jax.random.split(key)
    k_clean, k_final, model_key = jax.random.split(model_key, 3)
    forward = lambda v, k: logits_fn(v, k)  # noqa: E731
  else:
    model_key = k_clean = k_final = None
    forward = lambda v, k: logits_fn(v)  # noqa: E731
  clean_logits = jax.lax.stop_gradient(forward(x, k_clean))
  # As the official ``perturb``: points misclassified without attack are returned as they are.
  active = active & (jnp.argmax(clean_logits, axis=-1) == y)
  if targeted:
    # The k-th target (k = 2 .. n_target_classes + 1): the class with the k-th largest clean logit.
    order = jnp.argsort(-clean_logits, axis=-1)
    n_runs = n_target_classes * n_restarts
  else:
    n_runs = n_restarts

  def run_target(r):
    if targeted:
      idx = jnp.full((batch, 1), 1 + r // n_restarts, jnp.int32)
      return jnp.take_along_axis(order, idx, axis=1)[:, 0].astype(jnp.int32)
    return target

  def one_run(r, carry):
    x_out, best_loss, broken, steps, kappa, used = carry
    t = run_target(r)
    todo = active & ~broken
    run_key = jax.random.fold_in(key, r)
    run_model_key = None if model_key is None else jax.random.fold_in(model_key, r)
    if norm == "l1":
      evaluate = eot_value_and_grad(logits_fn, loss_fn, y, t, eot_iter, randomized)
      out = _run_l1(evaluate, x, run_key, run_model_key, todo, eps, n_iter,
                    use_largereps=use_largereps, early_stop=early_stop)
    else:
      out = _single_run(logits_fn, loss_fn, x, y, t, run_key, todo, eps, n_iter, rho, momentum,
                        norm=norm, variant=variant, early_stop=early_stop, eot_iter=eot_iter,
                        randomized=randomized, model_key=run_model_key)
    newly = todo & out.broken
    better = todo & ~out.broken & ~broken & (out.loss_best > best_loss)
    pick = newly | better
    x_out = jnp.where(bcast(newly, x), out.x_best_adv,
                      jnp.where(bcast(better, x), out.x_best, x_out))
    best_loss = jnp.where(better, out.loss_best, best_loss)
    if has_target:
      used = jnp.where(pick, t, used)
    return (x_out, best_loss, broken | newly, steps + out.steps, jnp.where(pick, out.kappa, kappa),
            used)

  zero_i = jnp.zeros((batch,), jnp.int32)
  has_target = targeted or target is not None
  used0 = target if target is not None else zero_i
  carry0 = (x, jnp.full((batch,), -jnp.inf, jnp.float32), jnp.zeros((batch,), bool), zero_i, zero_i,
            used0)
  x_out, _, _, steps, kappa, used = jax.lax.fori_loop(0, n_runs, one_run, carry0)
  x_out = jax.lax.stop_gradient(x_out)

  # One more evaluation at the returned point gives its loss, correctness and FOSC (a randomised
  # model: one stochastic pass, as the official check after each attack).
  def total(v):
    logits = forward(v, k_final)
    per_example = loss_fn(logits, y, target=used if has_target else None)
    return jnp.sum(per_example), (per_example, logits)

  (_, (loss_out, logits)), grad = jax.value_and_grad(total, has_aux=True)(x_out)
  if norm == "l1":  # FOSC for the l1 ball: eps ||g||_inf - <x_k - x_0, g>
    fosc = (eps * per_example_norm(grad, "linf")
            - jnp.sum((x_out - x).reshape(batch, -1) * grad.reshape(batch, -1), axis=1))
  else:
    fosc = fosc_lib.fosc(x_out, x, grad, eps=eps, norm=norm)
  return AttackResult(
      x_adv=x_out, num_steps=steps, fosc=fosc,
      loss=loss_out, misclassified=jnp.argmax(logits, axis=-1) != y, kappa=kappa)


def check_hyperparameters(*, eps, n_iter=100, norm="linf", loss="ce", n_restarts=1, rho=0.75,
                          momentum=0.75, variant="paper", n_target_classes=None,
                          use_largereps=False, eot_iter=1, randomized=False, **_unchecked):
  """Raises ValueError naming the first bad hyperparameter of :func:`apgd` / :func:`apgd_targeted`.

  Needs no data (:func:`robust_jax.attacks.make` runs it before the first call); the class-count
  bounds of ``loss="dlr"`` and ``n_target_classes`` are checked when the logits are seen.
  """
  validation.check_choice("norm", norm, NORMS)
  validation.check_choice("variant", variant, VARIANTS)
  validation.check_choice("loss", loss, APGD_LOSSES)
  validation.check_eps(eps, norm)
  validation.check_scalar("n_iter", n_iter, low=1, integer=True)
  validation.check_scalar("rho", rho, low=0.0, high=1.0)
  validation.check_scalar("momentum", momentum, low=0.0, high=1.0)
  validation.check_scalar("n_restarts", n_restarts, low=1, integer=True)
  if n_target_classes is not None:
    validation.check_scalar("n_target_classes", n_target_classes, low=1, integer=True)
  if norm == "l1" and variant != "official":
    raise ValueError("norm='l1' is APGD-L1 as coded in fra31/auto-attack autopgd_base.py "
                     f"(Croce and Hein 2021) only: variant must be 'official', got {variant!r}")
  if not isinstance(use_largereps, bool):
    raise ValueError(f"use_largereps must be a bool, got {use_largereps!r}")
  if use_largereps:
    if norm != "l1":
      raise ValueError("use_largereps=True (decr_eps_pgd: eps x 3, 2, 1) is defined for "
                       f"norm='l1' only, got norm={norm!r}")
    validation.check_scalar("n_iter", n_iter, low=2, integer=True)
  if not isinstance(randomized, bool):
    raise ValueError(f"randomized must be a bool, got {randomized!r}")
  validation.check_scalar("eot_iter", eot_iter, low=1, integer=True)
  if validation.is_concrete(eot_iter) and int(eot_iter) > 1 and not randomized:
    raise ValueError(f"eot_iter={int(eot_iter)} averages gradients over the randomness of the "
                     "model: set randomized=True and pass logits_fn(x, key) (with a deterministic "
                     "model every pass is the same, use eot_iter=1)")


def _check_randomized_logits_fn(logits_fn, x, randomized):
  """The ``logits_fn(x)`` the shared input checks see: ``logits_fn(x, key)`` with a fixed key for a
  randomised model, after checking (abstractly, no FLOPs) that it accepts a key."""
  if not randomized:
    return logits_fn
  validation.check_images("x", x)
  probe = jax.random.key(0)
  try:
    jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype), probe)
  except TypeError as e:
    raise ValueError("randomized=True calls logits_fn(x, key) (a fresh PRNG key per forward "
                     f"pass); this logits_fn does not accept (x, key): {e}") from e
  return lambda v: logits_fn(v, probe)


_KEY_NEEDED_BY = "APGD's random start"


def apgd(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    key: jax.Array,
    n_iter=100,
    norm: str = "linf",
    loss: str = "ce",
    n_restarts=1,
    rho=0.75,
    momentum=0.75,
    target: Optional[jax.Array] = None,
    active: Optional[jax.Array] = None,
    variant: str = "paper",
    early_stop: bool = True,
    use_largereps: bool = False,
    eot_iter=1,
    randomized: bool = False,
) -> AttackResult:
  """APGD on the cross-entropy (APGD-CE) or DLR loss (APGD-DLR) (Croce and Hein 2020, Alg. 1).

  Args:
    logits_fn: ``x -> logits`` [B, C], pure, closing over the model's parameters; with
      ``randomized=True`` a randomised model ``(x, key) -> logits`` [B, C].
    x: float32 images [B, H, W, C] in [0, 1].
    y: int32 labels [B].
    eps: radius of the ball, >= 0 (traced).
    key: PRNG key of the random starts (restart r uses ``fold_in(key, r)``).
    n_iter: iterations per run N >= 1 (100 in AutoAttack; traced, the checkpoints follow it);
      >= 2 with ``use_largereps``.
    norm: ``"linf"``, ``"l2"`` or ``"l1"`` (APGD-L1 of Croce and Hein 2021, ``variant="official"``
      only: see "APGD-L1" in the module docstring).
    loss: ``"ce"`` or ``"dlr"`` (DLR needs >= 3 classes, its targeted form >= 4).
    n_restarts: runs from fresh random starts, each on the examples still unbroken (>= 1; traced).
    rho: Condition 1's threshold in [0, 1] (0.75).
    momentum: the momentum weight alpha in [0, 1] (0.75; the first iteration always uses 1).
    target: optional int32 [B] target classes: the loss becomes the targeted CE / DLR.
    active: optional bool [B]; examples with False are not attacked (returned as ``x``, 0 steps).
      Examples misclassified at ``x`` are never attacked (as the official ``perturb``).
    variant: ``"paper"`` (Algorithm 1) or ``"official"`` (``autopgd_base.py``, what AutoAttack
      and the evaluation suite run); see the module docstring.
    early_stop: stop an example at its first misclassified iterate (saves work; the set of broken
      examples is unchanged). False runs every example for the whole budget, as the official code,
      and returns its most recent misclassified iterate.
    use_largereps: ``norm="l1"`` only: ``decr_eps_pgd``, eps x 3, 2, 1 for 30%, 30% and 40% of
      the iterations (AutoAttack's L1 standard version; :func:`largereps_schedule`).
    eot_iter: gradient passes averaged per iterate, >= 1 (20 in AutoAttack's ``version='rand'``;
      traced); > 1 needs ``randomized=True``.
    randomized: ``logits_fn`` is a randomised model called as ``logits_fn(x, key)``, a fresh key
      (derived from ``key``) for every forward pass; each iterate's gradient is the mean over
      ``eot_iter`` passes, its loss and prediction those of the last pass
      (:func:`eot_value_and_grad`); the clean prediction and the returned ``misclassified`` come
      from one stochastic pass each, as the official code.

  Returns:
    An :class:`~robust_jax.attacks.AttackResult` with ``x_adv`` = the misclassified iterate
    (``x_best_adv``) for broken examples and the highest-loss point (``x_best``, over restarts) for
    the others; ``num_steps`` the iterations taken (over all runs); ``loss``, ``misclassified`` and
    ``fosc`` evaluated at ``x_adv`` (one extra gradient evaluation, FOSC measured from ``x``);
    ``kappa`` the iterates, start included, still classified correctly in the run that produced
    ``x_adv``. Every iterate lies in the eps-ball and in [0, 1].

  Raises:
    ValueError: on a bad argument (named, with its valid range), when values are concrete; no
      ``key``; ``loss="dlr"`` with fewer than 3 classes (4 with a ``target``).

  Example (the first point is 0.05 from the boundary in linf, the second 0.8):
    >>> import jax, jax.numpy as jnp
    >>> logits_fn = lambda x: 10.0 * x.reshape(x.shape[0], -1) @ jnp.eye(4)
    >>> x = jnp.array([[0.55, 0.5, 0.1, 0.1], [0.9, 0.1, 0.1, 0.1]]).reshape(2, 2, 2, 1)
    >>> r = apgd(logits_fn, x, jnp.array([0, 0]), eps=0.1, n_iter=10, key=jax.random.key(0))
    >>> r.misclassified.tolist(), bool(jnp.all(jnp.abs(r.x_adv - x) <= 0.1 + 1e-6))
    ([True, False], True)
  """
  check_hyperparameters(eps=eps, n_iter=n_iter, norm=norm, loss=loss, n_restarts=n_restarts,
                        rho=rho, momentum=momentum, variant=variant, use_largereps=use_largereps,
                        eot_iter=eot_iter, randomized=randomized)
  num_classes = validation.check_attack_inputs(
      _check_randomized_logits_fn(logits_fn, x, randomized), x, y, target=target, active=active,
      key=key, key_needed_by=_KEY_NEEDED_BY, eps=eps, norm=norm)
  if loss == "dlr" and num_classes is not None:
    need = 4 if target is not None else 3
    if num_classes < need:
      raise ValueError(f"loss='dlr' needs at least {need} classes, the logits have {num_classes}")
  if target is not None:
    target = jnp.asarray(target, jnp.int32)
  active = jnp.ones((x.shape[0],), bool) if active is None else jnp.asarray(active, bool)
  return _apgd(as_pytree_fn(logits_fn), x, jnp.asarray(y, jnp.int32), key, active, target,
               jnp.asarray(eps, jnp.float32), jnp.asarray(n_iter, jnp.int32),
               jnp.asarray(rho, jnp.float32), jnp.asarray(momentum, jnp.float32),
               jnp.asarray(n_restarts, jnp.int32), jnp.asarray(0, jnp.int32),
               jnp.asarray(eot_iter, jnp.int32), norm=norm, loss=loss, variant=variant,
               early_stop=early_stop, targeted=False, use_largereps=use_largereps,
               randomized=randomized)


def apgd_targeted(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    key: jax.Array,
    n_iter=100,
    norm: str = "linf",
    n_target_classes=None,
    n_restarts=1,
    rho=0.75,
    momentum=0.75,
    active: Optional[jax.Array] = None,
    variant: str = "paper",
    early_stop: bool = True,
    use_largereps: bool = False,
    eot_iter=1,
    randomized: bool = False,
) -> AttackResult:
  """APGD-T: APGD on the targeted DLR loss over the top ``n_target_classes`` classes.

  For k = 2 .. n_target_classes + 1 the target is the class with the k-th largest logit at the clean
  input; each target gets ``n_restarts`` runs of ``n_iter`` iterations, each on the examples still
  unbroken (``APGDAttack_targeted.perturb``). Misclassification is untargeted: any class but ``y``.

  Args:
    n_target_classes: targets per example, in [1, C - 1]; default min(9, C - 1) (9 in AutoAttack).
    Others: as :func:`apgd` (the loss is always the targeted DLR, which needs >= 4 classes;
      ``norm="l1"`` with ``use_largereps`` is APGD-T of AutoAttack's L1 standard version).

  Returns:
    As :func:`apgd`; for unbroken examples ``x_adv`` is the highest-loss point over all runs and
    ``loss`` is the targeted DLR towards the target of that run.
  """
  check_hyperparameters(eps=eps, n_iter=n_iter, norm=norm, n_restarts=n_restarts, rho=rho,
                        momentum=momentum, variant=variant, n_target_classes=n_target_classes,
                        use_largereps=use_largereps, eot_iter=eot_iter, randomized=randomized)
  checked_fn = _check_randomized_logits_fn(logits_fn, x, randomized)
  num_classes = validation.check_attack_inputs(checked_fn, x, y, active=active, key=key,
                                               key_needed_by=_KEY_NEEDED_BY, eps=eps, norm=norm)
  if n_target_classes is None:
    n_target_classes = min(9, validation.num_classes(checked_fn, x) - 1)
  if num_classes is not None:
    if num_classes < 4:
      raise ValueError(f"APGD-T's targeted DLR loss needs at least 4 classes, the logits have "
                       f"{num_classes}")
    validation.check_scalar("n_target_classes", n_target_classes, low=1, high=num_classes - 1,
                            integer=True)
  active = jnp.ones((x.shape[0],), bool) if active is None else jnp.asarray(active, bool)
  return _apgd(as_pytree_fn(logits_fn), x, jnp.asarray(y, jnp.int32), key, active, None,
               jnp.asarray(eps, jnp.float32), jnp.asarray(n_iter, jnp.int32),
               jnp.asarray(rho, jnp.float32), jnp.asarray(momentum, jnp.float32),
               jnp.asarray(n_restarts, jnp.int32), jnp.asarray(n_target_classes, jnp.int32),
               jnp.asarray(eot_iter, jnp.int32), norm=norm, loss="dlr", variant=variant,
               early_stop=early_stop, targeted=True, use_largereps=use_largereps,
               randomized=randomized)
