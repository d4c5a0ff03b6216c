"""What the minimum-norm attacks share: their result, l0/l1/l2/linf norms, the l1 and l0
projections, and robust accuracy at every eps from one attack.

A minimum-norm attack (:func:`~robust_jax.attacks.fmn`, :func:`~robust_jax.attacks.ddn`,
:func:`~robust_jax.attacks.cw_l2`, :func:`~robust_jax.attacks.deepfool`) has no eps. It returns,
for each example, the smallest adversarial perturbation it found (a best-so-far record over its
iterates, never simply the last iterate) and that perturbation's norm, ``inf`` where it found none.
An example is broken at radius eps iff ``distance <= eps``, so one run gives the robust accuracy at
every eps (:func:`robust_accuracy_at`), an upper bound on the true robust accuracy at each.

Conventions shared by the four attacks (the tests check them):

* untargeted; an example is adversarial iff ``argmax logits_fn(x_adv) != y``;
* an example already misclassified at ``x`` is not attacked: ``x_adv = x``, ``distance = 0``;
* ``x_adv`` lies in the box [0, 1] and ``distance`` is the norm of ``x_adv - x`` computed from the
  returned arrays, so the reported norm is the actual norm;
* ``misclassified`` is evaluated at the returned ``x_adv`` by one more forward pass;
* everything per example lives in the carry of one compiled loop, nothing is coupled across the
  batch (an example's iterates do not depend on the other examples of the batch).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from robust_jax.attacks._projections import bcast

NORMS = ("l0", "l1", "l2", "linf")
_DUAL = {"l1": "linf", "l2": "l2", "linf": "l1"}
_BISECTION_STEPS = 40


class MinNormResult(NamedTuple):
  """What every minimum-norm attack returns (per example, leading size B).

  Attributes:
    x_adv: [B, ...] in [0, 1]: the adversarial point of smallest norm found, ``x`` where none was
      found (and for examples misclassified at ``x``).
    distance: float32 [B], the norm of ``x_adv - x`` (the attack's norm); ``inf`` where no
      adversarial point was found, 0 for examples misclassified at ``x``. Broken at eps iff
      ``distance <= eps``.
    misclassified: bool [B], ``argmax logits_fn(x_adv) != y`` at the returned point.
    num_steps: int32 [B], the gradient iterations spent on the example.
  """
  x_adv: jax.Array
  distance: jax.Array
  misclassified: jax.Array
  num_steps: jax.Array


def lp_norm(a: jax.Array, norm: str) -> jax.Array:
  """The ``norm`` (``"l0"``, ``"l1"``, ``"l2"``, ``"linf"``) of each example of ``a``, float [B].

  ``"l0"`` counts the nonzero values.

  Example:
    >>> import jax.numpy as jnp
    >>> a = jnp.array([[3.0, -4.0, 0.0]])
    >>> [float(lp_norm(a, n)[0]) for n in ("l0", "l1", "l2", "linf")]
    [2.0, 7.0, 5.0, 4.0]
  """
  a = a.reshape(a.shape[0], -1)
  if norm == "l0":
    return jnp.sum(a != 0, axis=1).astype(a.dtype)
  if norm == "l1":
    return jnp.sum(jnp.abs(a), axis=1)
  if norm == "l2":
    return jnp.sqrt(jnp.sum(a * a, axis=1))
  if norm == "linf":
    return jnp.max(jnp.abs(a), axis=1)
  raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def dual_norm(a: jax.Array, norm: str) -> jax.Array:
  """The dual norm of ``norm`` of each example [B]: l1 -> linf, l2 -> l2, linf -> l1."""
  return lp_norm(a, _DUAL[norm])


def worst_norm(x: jax.Array, norm: str) -> jax.Array:
  """The largest ``norm`` of a perturbation that keeps ``x`` in [0, 1], per example [B]: the norm
  of ``max(x, 1 - x)`` (for l0 the number of values, D). FMN and DDN cap their radius at it."""
  return lp_norm(jnp.maximum(x, 1.0 - x) if norm != "l0" else jnp.ones_like(x), norm)


def margin(logits: jax.Array, y: jax.Array) -> jax.Array:
  """The classification margin z_y - max_{j != y} z_j [B]; negative iff misclassified (ties
  aside)."""
  mask = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
  z_y = jnp.sum(jnp.where(mask, logits, 0.0), axis=1)
  return z_y - jnp.max(jnp.where(mask, -jnp.inf, logits), axis=1)


def project_l1(delta: jax.Array, eps: jax.Array, x: jax.Array | None = None) -> jax.Array:
  """Euclidean projection of each ``delta[i]`` onto the l1 ball of radius ``eps[i]``, intersected
  with the box ``0 <= x + delta <= 1`` when ``x`` is given.

  By the KKT conditions the projection is, coordinate-wise, the soft threshold
  ``sign(d) min(max(|d| - lam, 0), cap)``, where ``cap`` is the room to the box face in the
  direction of ``d`` (``1 - x`` or ``x``; infinite without a box) and ``lam >= 0`` the smallest
  threshold whose l1 norm is at most eps (``lam = 0`` when the clipped ``delta`` is already inside).
  The norm is non-increasing in lam, so lam is found by bisection (40 steps, the feasible end of the
  bracket is kept); without a box this is the projection of Duchi et al. (2008), which the official
  FMN code computes by sorting. Projecting onto the ball and then clipping to the box (FMN's code)
  is feasible but not the projection onto the intersection.

  Args:
    delta: perturbations [B, ...].
    eps: radii [B] (or a scalar), >= 0.
    x: optional points [B, ...] in [0, 1], for the box.

  Returns:
    The projected perturbations, ``delta``'s shape; their l1 norm is <= eps (up to rounding) and,
    with ``x``, ``x + result`` lies in [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> d = jnp.array([[0.6, -0.2, 0.1]])
    >>> [round(float(v), 4) for v in project_l1(d, jnp.array([0.5]))[0]]
    [0.45, -0.05, 0.0]
    >>> x = jnp.array([[0.8, 0.5, 0.5]])  # room 0.2 upwards in the first coordinate
    >>> [round(float(v), 4) for v in project_l1(d, jnp.array([0.5]), x)[0]]
    [0.2, -0.2, 0.1]
  """
  shape = delta.shape
  d = delta.reshape(shape[0], -1)
  a = jnp.abs(d)
  if x is None:
    cap = jnp.full_like(a, jnp.inf)
  else:
    xf = x.reshape(shape[0], -1)
    cap = jnp.where(d >= 0, 1.0 - xf, xf)
  eps = jnp.broadcast_to(jnp.asarray(eps, d.dtype), (shape[0],))

  def l1_at(lam):
    return jnp.sum(jnp.minimum(jnp.maximum(a - lam[:, None], 0.0), cap), axis=1)

  def bisect(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    ok = l1_at(mid) <= eps
    return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

  zero = jnp.zeros((shape[0],), d.dtype)
  _, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, bisect, (zero, jnp.max(a, axis=1)))
  lam = jnp.where(l1_at(zero) <= eps, zero, hi)
  out = jnp.sign(d) * jnp.minimum(jnp.maximum(a - lam[:, None], 0.0), cap)
  return out.reshape(shape)


def project_l0(delta: jax.Array, k: jax.Array) -> jax.Array:
  """Keeps, in each example, the ``k[i]`` values of ``delta[i]`` largest in magnitude (ties at the
  threshold are all kept, as FMN's code), zeroing the others; ``k = 0`` keeps none."""
  shape = delta.shape
  d = delta.reshape(shape[0], -1)
  a = jnp.abs(d)
  k = jnp.clip(jnp.broadcast_to(jnp.asarray(k), (shape[0],)).astype(jnp.int32), 0, d.shape[1])
  desc = -jnp.sort(-a, axis=1)
  thr = jnp.take_along_axis(desc, jnp.maximum(k - 1, 0)[:, None], axis=1)
  thr = jnp.where(k[:, None] > 0, thr, jnp.inf)
  return jnp.where(a >= thr, d, 0.0).reshape(shape)


def finish(logits_fn, x: jax.Array, y: jax.Array, best_x: jax.Array, found: jax.Array,
           num_steps: jax.Array, norm: str, clean_mis: jax.Array) -> MinNormResult:
  """Builds the :class:`MinNormResult` from an attack's record: ``x_adv`` is ``best_x`` where an
  adversarial point was found, else ``x`` (and ``x`` for examples misclassified at ``x``); the
  distance is measured on the returned arrays; ``misclassified`` comes from one forward pass."""
  found = found & ~clean_mis
  x_adv = jax.lax.stop_gradient(jnp.where(bcast(found, x), best_x, x))
  dist = lp_norm(x_adv.astype(jnp.float32) - x.astype(jnp.float32), norm)
  dist = jnp.where(found, dist, jnp.inf)
  dist = jnp.where(clean_mis, 0.0, dist)
  mis = jnp.argmax(logits_fn(x_adv), axis=-1) != y
  return MinNormResult(x_adv=x_adv, distance=dist, misclassified=mis,
                       num_steps=num_steps.astype(jnp.int32))


def robust_accuracy_at(norms: jax.typing.ArrayLike, eps_values: jax.typing.ArrayLike) -> jax.Array:
  """Robust accuracy at every eps from the per-example minimal adversarial norms.

  An example counts as robust at eps iff its smallest adversarial perturbation found is larger
  than eps (``norm > eps``); examples misclassified at ``x`` have norm 0 and count at no eps,
  examples where nothing was found (``inf``) count at every eps. From a minimum-norm attack this is
  an upper bound on the true robust accuracy at each eps, and non-increasing in eps.

  Args:
    norms: float [B], e.g. ``MinNormResult.distance`` (or ``FabResult.distance``).
    eps_values: a scalar or an array of radii [E] (any shape).

  Returns:
    float32 array of ``eps_values``' shape: the fraction of the B examples robust at each eps.

  Example:
    >>> import jax.numpy as jnp
    >>> norms = jnp.array([0.0, 0.5, 1.0, jnp.inf])
    >>> robust_accuracy_at(norms, jnp.array([0.0, 0.5, 0.9, 2.0])).tolist()
    [0.75, 0.5, 0.5, 0.25]
  """
  norms = jnp.asarray(norms, jnp.float32).reshape(-1)
  eps = jnp.asarray(eps_values, jnp.float32)
  return jnp.mean((norms > eps[..., None]).astype(jnp.float32), axis=-1)
