"""Projections onto the eps-ball around x0 intersected with the [0, 1] box, and ascent directions.

Both projections are exact Euclidean projections onto the intersection, so every iterate of every
attack lies in the ball and in the box (the invariant the tests check):

* linf: the set is a product of intervals, so clipping coordinate-wise is exact.
* l2: the projection of z = x - x0 onto {||d||_2 <= eps, 0 <= x0 + d <= 1} is, by the KKT conditions,
  d = clip(t * z, -x0, 1 - x0) for the largest t in [0, 1] with ||d||_2 <= eps (t = 1/(1 + mu)).
  ||clip(t z)|| is non-decreasing in t, so t is found by bisection; the lower end of the bracket is
  returned, which is always feasible. Project-then-clip (the usual shortcut) is not the projection.

The per-example geometry every attack shares lives here too, defined once: :func:`bcast` (a [B]
vector against [B, ...] images) and :func:`per_example_norm` (linf or l2 of each example).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_L2_BISECTION_STEPS = 40


def bcast(v: jax.Array, like: jax.Array) -> jax.Array:
  """Reshapes a per-example ``v`` [B] to [B, 1, ..., 1], broadcastable against ``like`` [B, ...].

  Example:
    >>> import jax.numpy as jnp
    >>> bcast(jnp.arange(2), jnp.zeros((2, 3, 3, 1))).shape
    (2, 1, 1, 1)
  """
  return v.reshape((-1,) + (1,) * (like.ndim - 1))


def per_example_norm(a: jax.Array, norm: str = "l2") -> jax.Array:
  """The norm of each example ``a[i]`` flattened, [B]: ``"l2"`` (default), ``"linf"`` or ``"l1"``.

  Example:
    >>> import jax.numpy as jnp
    >>> a = jnp.array([[3.0, -4.0], [0.5, 0.0]])
    >>> per_example_norm(a).tolist(), per_example_norm(a, "linf").tolist()
    ([5.0, 0.5], [4.0, 0.5])
  """
  a = a.reshape(a.shape[0], -1)
  if norm == "linf":
    return jnp.max(jnp.abs(a), axis=1)
  if norm == "l1":
    return jnp.sum(jnp.abs(a), axis=1)
  return jnp.sqrt(jnp.sum(a * a, axis=1))


def project_linf(x: jax.Array, x0: jax.Array, eps) -> jax.Array:
  """Projects x onto {||x - x0||_inf <= eps} intersected with [0, 1]^d."""
  return jnp.clip(jnp.clip(x, x0 - eps, x0 + eps), 0.0, 1.0)


def project_l2(x: jax.Array, x0: jax.Array, eps) -> jax.Array:
  """Projects x onto {||x - x0||_2 <= eps} intersected with [0, 1]^d (exact, per example)."""
  z = x - x0
  lo_box, hi_box = -x0, 1.0 - x0

  def norm_at(t):
    return per_example_norm(jnp.clip(bcast(t, z) * z, lo_box, hi_box))

  eps_b = jnp.broadcast_to(jnp.asarray(eps, z.dtype), (z.shape[0],))
  feasible_at_one = norm_at(jnp.ones(z.shape[0], z.dtype)) <= eps_b

  def bisect(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    ok = norm_at(mid) <= eps_b
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  lo, _ = jax.lax.fori_loop(
      0, _L2_BISECTION_STEPS, bisect,
      (jnp.zeros(z.shape[0], z.dtype), jnp.ones(z.shape[0], z.dtype)))
  t = jnp.where(feasible_at_one, 1.0, lo)
  return x0 + jnp.clip(bcast(t, z) * z, lo_box, hi_box)


def l1_box_correction(x0: jax.Array, delta: jax.Array, eps) -> jax.Array:
  """The correction ``c`` that puts ``x0 + delta`` onto {||d||_1 <= eps} intersected with [0, 1]^d.

  ``fra31/auto-attack`` ``autoattack/autopgd_base.py`` ``L1_projection(x2, y2, eps1)``: it returns
  ``c`` with ``||delta + c||_1 <= eps`` and ``0 <= x0 + delta + c <= 1``, ``delta + c`` the
  Euclidean projection of ``delta`` onto the intersection (one joint projection, not l1 then clip).
  The official code finds the soft threshold by sorting; this one is
  :func:`robust_jax.attacks.project_l1` (the same KKT solution, the threshold found by bisection),
  so the two agree to float32 rounding (tests/attacks/test_apgd_l1.py checks both against an
  independent NumPy solver).

  Args:
    x0: the centres [B, ...] in [0, 1].
    delta: the perturbations [B, ...] (``x0 + delta`` is the point to project; any values).
    eps: the l1 radius, a scalar or [B], >= 0.

  Returns:
    ``c`` [B, ...], ``delta``'s shape and dtype.
  """
  from robust_jax.attacks._minimum_norm import project_l1  # pylint: disable=g-import-not-at-top
  eps_b = jnp.broadcast_to(jnp.asarray(eps, delta.dtype), (delta.shape[0],))
  return project_l1(delta, eps_b, x0) - delta


def project(x: jax.Array, x0: jax.Array, eps, norm: str) -> jax.Array:
  """Dispatches to :func:`project_linf`, :func:`project_l2` or, for ``"l1"``, the box-aware l1
  projection (:func:`l1_box_correction`); the result has ``x0``'s dtype (a float32 eps must not
  promote bfloat16 images)."""
  if norm == "linf":
    return project_linf(x, x0, eps).astype(x0.dtype)
  if norm == "l2":
    return project_l2(x, x0, eps).astype(x0.dtype)
  if norm == "l1":
    from robust_jax.attacks._minimum_norm import project_l1  # pylint: disable=g-import-not-at-top
    eps_b = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (x.shape[0],))
    # The clip absorbs the rounding of x0 + d (the projection is in the box in exact arithmetic).
    return jnp.clip(x0 + project_l1(x - x0, eps_b, x0), 0.0, 1.0).astype(x0.dtype)
  raise ValueError(f"norm must be 'linf', 'l2' or 'l1', got {norm!r}")


def ascent_direction(grad: jax.Array, norm: str) -> jax.Array:
  """The steepest-ascent direction of unit norm: sign(g) for linf, g / ||g||_2 for l2."""
  if norm == "linf":
    return jnp.sign(grad)
  if norm == "l2":
    return grad / (bcast(per_example_norm(grad), grad) + 1e-12)
  raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def random_start(key: jax.Array, x: jax.Array, eps, norm: str, kind: str, std: float = 1e-3,
                 *, project_start: bool = True):
  """A random starting point, projected onto the ball and the box (unless ``project_start=False``).

  Args:
    key: PRNG key.
    x: natural images [B, ...] in [0, 1].
    eps: ball radius.
    norm: ``"linf"`` or ``"l2"``.
    kind: ``"none"`` (x itself), ``"uniform"`` (uniform in the ball: U(-eps, eps) per coordinate for
      linf as Madry et al.; uniform in volume for l2: direction uniform on the sphere, radius
      eps U^(1/d)), ``"radial"`` (l2 only: direction uniform on the sphere, radius eps U(0, 1), so
      *not* uniform in volume: the start of ``locuslab/robust_overfitting`` ``train_cifar.py``
      ``attack_pgd`` and of torchattacks' ``PGDL2``, delta = g U(0, 1) eps / ||g|| with
      g ~ N(0, I), then clamped to the box) or ``"normal"`` (x + std * N(0, I), TRADES and MART
      use std = 0.001).
    std: the standard deviation of the ``"normal"`` start.
    project_start: False returns the start as drawn, ``x + delta``, without the projection (in the
      ball up to rounding, possibly outside [0, 1]): the official Dynamic AT code's start, from which
      it measures FOSC and takes its first gradient (``LinfPGDAttack.perturb``; see
      :func:`robust_jax.attacks.ascent`, ``fosc_reference="start"``).

  Returns:
    The start, in the ball and the box. The official TRADES/MART code does not clamp its normal start
    to [0, 1] before the first gradient; we do (so the box invariant holds), a difference of at most
    0.001 on pixels at the border of the box.
  """
  if kind == "none":
    return x
  if kind == "radial":
    if norm != "l2":
      raise ValueError("start='radial' is the l2 start of robust_overfitting and torchattacks; for "
                       f"norm={norm!r} use 'uniform'")
    k1, k2 = jax.random.split(key)
    direction = jax.random.normal(k1, x.shape, x.dtype)
    radius = eps * jax.random.uniform(k2, (x.shape[0],), x.dtype)
    delta = direction * bcast(radius / (per_example_norm(direction) + 1e-12), x)
  elif kind == "uniform":
    if norm == "linf":
      delta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
    else:
      k1, k2 = jax.random.split(key)
      direction = jax.random.normal(k1, x.shape, x.dtype)
      direction = direction / bcast(per_example_norm(direction) + 1e-12, x)
      d = direction[0].size
      radius = eps * jax.random.uniform(k2, (x.shape[0],), x.dtype) ** (1.0 / d)
      delta = direction * bcast(radius, x)
  elif kind == "normal":
    delta = std * jax.random.normal(key, x.shape, x.dtype)
  else:
    raise ValueError(f"start must be one of ('none', 'uniform', 'radial', 'normal'), got {kind!r}")
  if not project_start:
    return x + delta.astype(x.dtype)
  return project(x + delta, x, eps, norm)
