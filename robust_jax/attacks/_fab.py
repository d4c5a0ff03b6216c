"""FAB: the fast adaptive boundary attack, a minimum-norm attack (targeted FAB-T as in AutoAttack).

Norms linf, l2 and l1 (``norm``), each as ``fab_base.py`` codes it.

Croce and Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
ICML 2020 (Algorithm 1, Sections 3.1-3.3), as in ``fra31/auto-attack`` ``autoattack/fab_pt.py``,
``fab_base.py`` and ``fab_projections.py``.

Each iteration, for every example independently (x_orig the clean point, x^k the current iterate):

1. Linearise the decision boundary at x^k. FAB-T (``targeted=True``, AutoAttack's choice): the
   hyperplane {z : f(x^k) + <g, z - x^k> = 0} of f = z_t - z_y, the logit of the target t minus that
   of the label y, g = grad f(x^k) (one backward pass). Untargeted FAB: the closest of the C - 1
   hyperplanes of f_c = z_c - z_y in the dual norm, |f_c| / ||grad f_c||_* (C backward passes;
   the dual of linf is l1, of l2 l2, of l1 linf: ``dist1`` of ``fab_base.py``).
2. Project x^k and x_orig onto that hyperplane intersected with the box [0, 1]^d, the minimal-norm
   displacements d^k and d^orig (:func:`project_linf_hyperplane_box`,
   :func:`project_l2_hyperplane_box`, :func:`project_l1_hyperplane_box`).
3. Biased step: alpha = clip(||d^k|| / (||d^k|| + ||d^orig||), 0, alpha_max), the norms those of
   ``norm``,
   x^{k+1} = clip((1 - alpha)(x^k + eta d^k) + alpha (x_orig + eta d^orig), 0, 1), eta the
   extrapolation (overshoot) factor.
4. If x^{k+1} is misclassified (any class but y), record it when it is the closest so far, then step
   back towards the clean point: x^{k+1} = x_orig + beta (x^{k+1} - x_orig).

AutoAttack's FAB-T runs 9 targets (the classes with the 2nd to 10th largest clean logits), 1
restart, 100 iterations, alpha_max = 0.1, eta = 1.05, beta = 0.9. A run with restart index r > 0
starts from x_orig + 0.5 min(d_best, eps) t / ||t|| (t ~ U(-1, 1)^d for linf, N(0, I) for l2
and l1, the norm of ``norm``),
clipped, with d_best the closest adversarial distance found by earlier runs (the original FAB code;
AutoAttack resets d_best per restart, which is the same thing for the still unbroken examples it
re-attacks).

Only an adversarial point within eps breaks an example (``distance <= eps``); FAB's iterates are
kept in the box but not in the ball. With ``early_stop=True`` (AutoAttack's use) an example stops
once broken; with False every run uses its whole budget and the result is the minimum-norm
adversarial point found (``distance``), as the original attack. (AutoAttack's ``perturb`` runs
every run to its end but attacks, for each later target, only the examples still unbroken, and
keeps the first point within eps: the broken set is the same in all three.)
tests/attacks/test_official_transcriptions.py compares every FAB-T iterate with a transcription of
``fab_base.py``'s ``attack_single_run`` (targeted, linf) on a nonlinear model, and checks that the
returned points are misclassified, within eps, in the box, and close to the boundary along their
own direction (brute-force line search); tests/attacks/test_l1_autoattack.py does the same for l1
(targeted and untargeted, with a transcription of ``projection_l1``) and checks the l1 projection
against a linear program.

FAB-L1 (``norm="l1"``, AutoAttack's L1 standard version runs FAB-T with it): the step rules are
those of linf and l2 with the l1 norm everywhere (alpha from the l1 norms of d^k and d^orig,
alpha_max = 0.1, eta = 1.05, beta = 0.9, the official defaults for every norm), the untargeted
hyperplane is chosen with the linf dual norm, the restarts start at l1 radius
0.5 min(d_best, eps) along a normal draw, and the projection is ``projection_l1``'s greedy
solution (:func:`project_l1_hyperplane_box`). The paper states the same step for p in
{1, 2, inf}; no l1-specific difference between the paper and ``fab_base.py`` is known here (the
paper's text was not checked line by line, the code was).

Everything per example lives in the carry of a ``lax.while_loop`` (one per run; runs are an outer
``lax.fori_loop``); eps, alpha_max, eta, beta and the budgets are traced.

Simplifications, stated plainly: the code projects by sorting the breakpoints of a piecewise-linear
function and searching them; for linf and l2 we bracket the same breakpoint by 32 bisection steps
and solve exactly on its linear piece (a sort of [B, D] is about 10x slower than the bisection on
CPU); for l1 the breakpoint (a value of |w|) is found exactly by bisection on its float32 bits.
The minimiser is the same up to floating-point rounding (for l1, and ties in |w| aside, the same
coordinates move). The untargeted FAB's Jacobian is one ``vmap`` of the VJP
over the C classes (the code loops over classes).
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp

from robust_jax import validation
from robust_jax.attacks._loop import as_pytree_fn
from robust_jax.attacks._projections import bcast, per_example_norm

NORMS = ("linf", "l2", "l1")
_BISECTION_STEPS = 32
_L1_BIT_STEPS = 31  # bisection on the int32 bits of a non-negative float32: exact after 31


@flax.struct.dataclass
class FabResult:
  """What :func:`fab` returns (all fields per example, leading size B).

  Attributes:
    x_adv: the closest adversarial point found when it lies within eps, else ``x`` [B, ...].
    distance: float32 [B], the norm of the closest adversarial perturbation found (``inf`` if none,
      0 for points misclassified at ``x``, which are not attacked); the example is broken iff
      ``distance <= eps``.
    misclassified: bool [B], argmax f(x_adv) != y (so False for unbroken examples).
    num_steps: int32 [B], FAB iterations taken over all runs.
  """
  x_adv: jax.Array
  distance: jax.Array
  misclassified: jax.Array
  num_steps: jax.Array


def _orient(t, w, b):
  """The common start of the three projections: c = <w, t> - b, with the signs of w and c flipped
  where c < 0 so that c >= 0 (the hyperplane is reached by *decreasing* <w, z>), and the room
  room_i = t_i (w_i > 0) or 1 - t_i (w_i <= 0) coordinate i has to move against sign(w_i) inside
  [0, 1]. Returns (w, c, room), as ``fab_projections.py``'s ``sign``/``ind2`` flips."""
  c = jnp.sum(w * t, axis=1) - b
  sign = jnp.where(c >= 0, 1.0, -1.0).astype(t.dtype)
  w = w * sign[:, None]
  return w, c * sign, jnp.where(w > 0, t, 1.0 - t)


def _hyperplane_box(t, w, b, norm):
  """Shared solver of linf and l2: minimal-norm d with <w, t + d> = b and t + d in [0, 1]^D.

  With c = <w, t> - b (signs flipped so that c >= 0, :func:`_orient`), both minimisers move
  coordinate i against sign(w_i) by min(lam s_i, room_i), room_i the distance to the box face in
  that direction and s_i = 1 (linf: every free coordinate moves by the radius lam) or s_i = |w_i|
  (l2: d = -lam w, clipped to the box, by the KKT conditions). The decrease
  g(lam) = sum_i |w_i| min(lam s_i, room_i) is continuous, piecewise linear and non-decreasing, so
  lam is bracketed by bisection and then solved exactly on the linear piece of the final bracket.
  When no point of the box lies on the hyperplane, every coordinate moves to its box face (the box
  point closest to the hyperplane in the direction of w), as ``fab_projections.py``.
  """
  w, c, room = _orient(t, w, b)
  aw = jnp.abs(w)
  scale = jnp.ones_like(aw) if norm == "linf" else aw
  nonzero = aw > 0
  breaks = jnp.where(nonzero, room / jnp.where(nonzero, scale, 1.0), 0.0)

  def g(lam):
    return jnp.sum(aw * jnp.minimum(lam[:, None] * scale, room), axis=1)

  hi0 = jnp.max(breaks, axis=1)
  feasible = g(hi0) >= c

  def bisect(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    ok = g(mid) >= c
    return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

  lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, bisect, (jnp.zeros_like(c), hi0))
  saturated = breaks <= lo[:, None]
  lam = (c - jnp.sum(jnp.where(saturated, aw * room, 0.0), axis=1)) / jnp.maximum(
      jnp.sum(jnp.where(saturated, 0.0, aw * scale), axis=1), 1e-30)
  lam = jnp.where(feasible, jnp.clip(lam, lo, hi), jnp.inf)
  d = -jnp.sign(w) * jnp.minimum(lam[:, None] * scale, room)
  return jnp.where(nonzero, d, 0.0)


def project_linf_hyperplane_box(t: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
  """The minimal-linf displacement d onto {z : <w, z> = b} intersected with [0, 1]^D.

  The same minimiser as ``fab_projections.projection_linf`` (which sorts the breakpoints; on CPU a
  sort is about 10x slower than the bisection used here, see :func:`_hyperplane_box`).

  Args:
    t: points [B, D].
    w: hyperplane normals [B, D].
    b: offsets [B].

  Returns:
    d [B, D] (zero where w is zero).

  Example:
    >>> import jax.numpy as jnp
    >>> d = project_linf_hyperplane_box(jnp.array([[0.5, 0.5]]), jnp.array([[1., 1.]]),
    ...                                 jnp.array([0.8]))
    >>> [round(float(v), 4) for v in d[0]]
    [-0.1, -0.1]
  """
  return _hyperplane_box(t, w, b, "linf")


def project_l2_hyperplane_box(t: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
  """The minimal-l2 displacement d onto {z : <w, z> = b} intersected with [0, 1]^D.

  The same minimiser as ``fab_projections.projection_l2`` (see :func:`_hyperplane_box`); arguments
  and result as :func:`project_linf_hyperplane_box`.
  """
  return _hyperplane_box(t, w, b, "l2")


def project_l1_hyperplane_box(t: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
  """The minimal-l1 displacement d onto {z : <w, z> = b} intersected with [0, 1]^D.

  ``fab_projections.projection_l1``: with c = <w, t> - b >= 0 (signs flipped, :func:`_orient`), the
  decrease of <w, t + d> a unit of l1 mass buys on coordinate i is |w_i|, at most
  m_i = |w_i| room_i in total, so the minimiser is greedy: saturate the coordinates in decreasing
  order of |w_i| (each moved to its box face against sign(w_i)) until the next one needs only part
  of its room, which it gets; the others stay. When the whole box cannot reach the hyperplane
  (sum_i m_i <= c) every coordinate moves to its face, and coordinates with |w_i| <= 1e-8 never
  move, both as the official code.

  The official code sorts 1 / |w| and bisects the cumulative sums. Here the partial coordinate's
  |w| value tau is found without a sort, exactly: G(v) = sum_{|w_i| >= v} m_i is non-increasing
  in v and steps only at the values |w_i|, so the largest float32 v with G(v) >= c is one of them,
  and positive float32 numbers are ordered as their int32 bit patterns, so 31 bisection steps on
  the bit pattern find it exactly. Coordinates with |w_i| > tau saturate; among ties at tau the
  mass is given in index order (the official order among ties is the sort's; any split is a
  minimiser). Computed in float32 (cast back to ``t``'s dtype).

  Args:
    t: points [B, D].
    w: hyperplane normals [B, D].
    b: offsets [B].

  Returns:
    d [B, D]: ||d||_1 minimal with <w, t + d> = b and t + d in [0, 1]^D where such a d exists.

  Example:
    >>> import jax.numpy as jnp
    >>> d = project_l1_hyperplane_box(jnp.array([[0.5, 0.5]]), jnp.array([[1., 2.]]),
    ...                               jnp.array([1.2]))  # <w, t> = 1.5: the |w| = 2 coordinate
    >>> [round(float(v), 4) + 0.0 for v in d[0]]
    [0.0, -0.15]
  """
  dtype = t.dtype
  t, w, b = (jnp.asarray(a, jnp.float32) for a in (t, w, b))
  w, c, room = _orient(t, w, b)
  aw = jnp.abs(w)
  mass = aw * room

  def reach(bits):  # G(v) >= c at v = the float32 with these bits
    v = jax.lax.bitcast_convert_type(bits, jnp.float32)
    return jnp.sum(jnp.where(aw >= v[:, None], mass, 0.0), axis=1) >= c

  def bisect(_, bracket):
    lo, hi = bracket
    mid = lo + (hi - lo) // 2
    ok = reach(mid)
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  hi0 = jnp.max(jax.lax.bitcast_convert_type(aw, jnp.int32), axis=1) + 1
  lo, _ = jax.lax.fori_loop(0, _L1_BIT_STEPS, bisect, (jnp.zeros_like(hi0), hi0))
  tau = jax.lax.bitcast_convert_type(lo, jnp.float32)[:, None]
  above, tied = aw > tau, aw == tau
  rest = c[:, None] - jnp.sum(jnp.where(above, mass, 0.0), axis=1, keepdims=True)
  upto = jnp.cumsum(jnp.where(tied, mass, 0.0), axis=1)  # inclusive, in index order
  before = upto - mass
  full = above | (tied & (upto < rest))
  part = tied & (upto >= rest) & (before < rest)
  move = jnp.where(full, room, jnp.where(part, (rest - before) / jnp.where(part, aw, 1.0), 0.0))
  feasible = (jnp.sum(mass, axis=1) > c)[:, None]
  d = -jnp.sign(w) * jnp.where(feasible, move, room)
  return jnp.where(aw > 1e-8, d, 0.0).astype(dtype)


def _project(t, w, b, norm):
  if norm == "linf":
    return project_linf_hyperplane_box(t, w, b)
  if norm == "l1":
    return project_l1_hyperplane_box(t, w, b)
  return project_l2_hyperplane_box(t, w, b)


def _dual_norm(a, norm):
  """The dual norm of ``norm`` over the last axis (linf -> l1, l2 -> l2, l1 -> linf): the
  denominator of the untargeted FAB's distance to each linearised boundary, |f_c| / ||g_c||_*."""
  if norm == "linf":
    return jnp.sum(jnp.abs(a), -1)
  if norm == "l1":
    return jnp.max(jnp.abs(a), -1)
  return jnp.sqrt(jnp.sum(a * a, -1))


def _single_run(logits_fn, x, y, target, key, active, use_rand_start, best_dist, eps, n_iter,
                alpha_max, eta, beta, *, norm, targeted, early_stop):
  """One FAB run on the examples with ``active``; returns (adv, dist, steps) of this run."""
  batch = x.shape[0]
  x0 = x.reshape(batch, -1)

  if norm == "linf":
    t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
  else:
    t = jax.random.normal(key, x.shape, x.dtype)
  radius = 0.5 * jnp.minimum(best_dist, eps)
  x_rand = jnp.clip(x + bcast(radius / (per_example_norm(t, norm) + 1e-12), x) * t, 0.0, 1.0)
  x_start = jnp.where(use_rand_start & bcast(active, x), x_rand, x)

  def hyperplane(x1):
    """(w, b) of the linearised boundary at x1: <w, z> = b."""
    if targeted:
      def diff(v):
        z = logits_fn(v)
        f = jnp.take_along_axis(z, target[:, None], 1)[:, 0] - jnp.take_along_axis(
            z, y[:, None], 1)[:, 0]
        return jnp.sum(f), f

      g, f = jax.grad(diff, has_aux=True)(x1)
      w = g.reshape(batch, -1)
    else:
      z, vjp = jax.vjp(logits_fn, x1)
      num_classes = z.shape[-1]
      eye = jnp.broadcast_to(jnp.eye(num_classes, dtype=z.dtype)[:, None, :],
                             (num_classes, batch, num_classes))
      jac = jax.vmap(lambda ct: vjp(ct)[0])(eye).reshape(num_classes, batch, -1)
      jac = jnp.swapaxes(jac, 0, 1)  # [B, C, D]
      jac_y = jnp.take_along_axis(jac, y[:, None, None], axis=1)
      dg = jac - jac_y
      df = z - jnp.take_along_axis(z, y[:, None], 1)
      df = jnp.where(jax.nn.one_hot(y, num_classes, dtype=bool), 1e10, df)
      ind = jnp.argmin(jnp.abs(df) / (_dual_norm(dg, norm) + 1e-12), axis=1)
      w = jnp.take_along_axis(dg, ind[:, None, None], axis=1)[:, 0]
      f = jnp.take_along_axis(df, ind[:, None], axis=1)[:, 0]
    b = -f + jnp.sum(w * x1.reshape(batch, -1), axis=1)
    return w, b

  def cond(c):
    i, _, _, _, act, _ = c
    return (i < n_iter) & jnp.any(act)

  def body(c):
    i, x1, adv, dist, act, steps = c
    w, b = hyperplane(x1)
    d1 = _project(x1.reshape(batch, -1), w, b, norm)
    d2 = _project(x0, w, b, norm)
    a1 = jnp.maximum(per_example_norm(d1, norm), 1e-8)
    a2 = jnp.maximum(per_example_norm(d2, norm), 1e-8)
    alpha = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)[:, None]
    x_new = jnp.clip((x1.reshape(batch, -1) + eta * d1) * (1.0 - alpha) + (x0 + eta * d2) * alpha,
                     0.0, 1.0).reshape(x.shape)
    is_adv = jnp.argmax(logits_fn(x_new), axis=-1) != y
    d_new = per_example_norm(x_new - x, norm)
    better = act & is_adv & (d_new < dist)
    adv = jnp.where(bcast(better, x), x_new, adv)
    dist = jnp.where(better, d_new, dist)
    x_new = jnp.where(bcast(is_adv, x), x + beta * (x_new - x), x_new)
    x1 = jnp.where(bcast(act, x), x_new, x1)
    steps = steps + act.astype(jnp.int32)
    act = act & ~(early_stop & (dist <= eps))
    return i + 1, x1, adv, dist, act, steps

  carry0 = (jnp.asarray(0, jnp.int32), x_start, x, jnp.full((batch,), jnp.inf, x.dtype), active,
            jnp.zeros((batch,), jnp.int32))
  _, _, adv, dist, _, steps = jax.lax.while_loop(cond, body, carry0)
  return adv, dist, steps


@functools.partial(jax.jit, static_argnames=("norm", "targeted", "early_stop"))
def _fab(logits_fn, x, y, key, active, eps, n_iter, n_restarts, n_target_classes, alpha_max, eta,
         beta, *, norm, targeted, early_stop) -> FabResult:
  batch = x.shape[0]
  clean_logits = logits_fn(x)
  # Points misclassified without attack are adversarial at distance 0 and are not attacked.
  mis_clean = jnp.argmax(clean_logits, axis=-1) != y
  active = active & ~mis_clean
  if targeted:
    order = jnp.argsort(-clean_logits, axis=-1)
    n_runs = n_target_classes * n_restarts
  else:
    n_runs = n_restarts

  def one_run(r, carry):
    adv, dist, steps = carry
    restart = r % n_restarts
    target = None
    if targeted:
      idx = jnp.full((batch, 1), 1 + r // n_restarts, jnp.int32)
      target = jnp.take_along_axis(order, idx, axis=1)[:, 0].astype(jnp.int32)
    todo = active & ~(early_stop & (dist <= eps))
    adv_r, dist_r, steps_r = _single_run(
        logits_fn, x, y, target, jax.random.fold_in(key, r), todo, restart > 0, dist, eps, n_iter,
        alpha_max, eta, beta, norm=norm, targeted=targeted, early_stop=early_stop)
    better = todo & (dist_r < dist)
    return (jnp.where(bcast(better, x), adv_r, adv), jnp.where(better, dist_r, dist),
            steps + steps_r)

  carry0 = (x, jnp.where(mis_clean, 0.0, jnp.inf).astype(x.dtype), jnp.zeros((batch,), jnp.int32))
  adv, dist, steps = jax.lax.fori_loop(0, n_runs, one_run, carry0)
  broken = dist <= eps
  x_adv = jax.lax.stop_gradient(jnp.where(bcast(broken, x), adv, x))
  mis = jnp.argmax(logits_fn(x_adv), axis=-1) != y
  return FabResult(x_adv=x_adv, distance=dist, misclassified=mis, num_steps=steps)


def check_hyperparameters(*, eps, norm="linf", n_target_classes=None, n_iter=100, n_restarts=1,
                          alpha_max=0.1, eta=1.05, beta=0.9, **_unchecked):
  """Raises ValueError naming the first bad hyperparameter of :func:`fab` and its valid range.

  Needs no data (:func:`robust_jax.attacks.make` runs it before the first call); the upper bound
  C - 1 of ``n_target_classes`` is checked when the logits are seen.
  """
  validation.check_choice("norm", norm, NORMS)
  validation.check_eps(eps, norm)
  validation.check_scalar("n_iter", n_iter, low=1, integer=True)
  validation.check_scalar("n_restarts", n_restarts, low=1, integer=True)
  validation.check_scalar("alpha_max", alpha_max, low=0.0, high=1.0)
  validation.check_scalar("eta", eta, low=1.0)
  validation.check_scalar("beta", beta, low=0.0, high=1.0)
  if n_target_classes is not None:
    validation.check_scalar("n_target_classes", n_target_classes, low=1, integer=True)


def fab(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = "linf",
    targeted: bool = True,
    n_target_classes=None,
    n_iter=100,
    n_restarts=1,
    alpha_max=0.1,
    eta=1.05,
    beta=0.9,
    key: Optional[jax.Array] = None,
    active: Optional[jax.Array] = None,
    early_stop: bool = True,
) -> FabResult:
  """FAB (Croce and Hein 2020); ``targeted=True`` is AutoAttack's FAB-T.

  Args:
    logits_fn: ``x -> logits`` [B, C], pure.
    x: float32 images [B, H, W, C] in [0, 1].
    y: int32 labels [B].
    eps: the threat-model radius, >= 0: an example is broken iff the closest adversarial point found
      lies within eps; also scales the random starts of restarts.
    norm: ``"linf"``, ``"l2"`` or ``"l1"`` (FAB-L1; the distances, steps and restarts in that norm).
    targeted: FAB-T (one hyperplane towards each of the top ``n_target_classes`` classes, one
      backward pass per iteration) or the untargeted FAB (closest of the C - 1 hyperplanes, C
      backward passes per iteration).
    n_target_classes: targets for FAB-T, in [1, C - 1]; default min(9, C - 1) (9 in AutoAttack).
    n_iter: iterations per run, >= 1 (100).
    n_restarts: runs per target, >= 1 (1 in AutoAttack's standard version); run 0 starts at x, the
      others at a random point (module docstring).
    alpha_max: the largest bias towards the clean point, in [0, 1] (0.1).
    eta: the overshoot factor, >= 1 (1.05).
    beta: the backward step towards x after an adversarial iterate, in [0, 1] (0.9).
    key: PRNG key of the random restarts (needed when ``n_restarts > 1``).
    active: optional bool [B]; examples with False are not attacked.
    early_stop: stop an example once broken within eps (AutoAttack); False minimises the norm with
      the whole budget.

  Returns:
    A :class:`FabResult`.

  Raises:
    ValueError: on a bad argument (named, with its valid range), when values are concrete;
      ``n_target_classes`` above C - 1; ``n_restarts > 1`` without a ``key``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> w = jnp.eye(4)
    >>> logits_fn = lambda x: x.reshape(x.shape[0], -1) @ w
    >>> x = jnp.array([[0.6, 0.5, 0.2, 0.1]]).reshape(1, 2, 2, 1); y = jnp.array([0])
    >>> r = fab(logits_fn, x, y, eps=0.1, n_target_classes=1, n_iter=20, early_stop=False)
    >>> round(float(r.distance[0]), 3), bool(r.misclassified[0])  # the boundary is 0.05 away
    (0.05, True)
  """
  check_hyperparameters(eps=eps, norm=norm, n_target_classes=n_target_classes, n_iter=n_iter,
                        n_restarts=n_restarts, alpha_max=alpha_max, eta=eta, beta=beta)
  restarts = validation.is_concrete(n_restarts) and int(n_restarts) > 1
  num_classes = validation.check_attack_inputs(
      logits_fn, x, y, active=active, key=key,
      key_needed_by="n_restarts > 1 (random starts)" if restarts else None, eps=eps, norm=norm)
  if targeted and n_target_classes is None:
    n_target_classes = min(9, validation.num_classes(logits_fn, x) - 1)
  if targeted and num_classes is not None:
    validation.check_scalar("n_target_classes", n_target_classes, low=1, high=num_classes - 1,
                            integer=True)
  if key is None:
    key = jax.random.key(0)  # unused: run 0 starts at x
  active = jnp.ones((x.shape[0],), bool) if active is None else jnp.asarray(active, bool)
  f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
  i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
  return _fab(as_pytree_fn(logits_fn), x, jnp.asarray(y, jnp.int32), key, active, f32(eps),
              i32(n_iter), i32(n_restarts), i32(n_target_classes if targeted else 1),
              f32(alpha_max), f32(eta), f32(beta), norm=norm, targeted=targeted,
              early_stop=early_stop)
