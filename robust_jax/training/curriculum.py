"""CAT's batch mixing and the starts of the input adversary (parts of :mod:`robust_jax.training.adversary`).

* Starts: :func:`start_point` dispatches the library's random starts (:func:`robust_jax.attacks.random_start`)
  and Liu et al.'s :func:`uniform_step_start` (x + U(-step, step), periodic adversarial scheduling).
* Per-example step limits in the ascent loop's stop-rule protocol (``init(batch_size) -> state``,
  ``update(k, active, info, state)``): :class:`StepLimitStop`, and :class:`AllStop` to combine rules.
* CAT (Cai et al. 2018; sunblaze-ucb/curriculum-adversarial-training-CAT): the batch split into
  k + 1 chunks attacked with PGD-0 ... PGD-k (:func:`cat_chunks`), each chunk with its randomised step
  (:func:`cat_step_sizes`), laid out for one batch by :func:`cat_plan`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Tuple

import flax.struct
import jax
import jax.numpy as jnp

from robust_jax import attacks

# CAT's step spread: chunk j's step is (base / j) U(1, 10 / j) (``PGDAttack.perturb_true``).
CAT_STEP_SPREAD = 10.0


def per_example(v, like):
  """A scalar, or one value per example [B] reshaped to broadcast against ``like`` [B, ...]."""
  v = jnp.asarray(v, like.dtype)
  return v if v.ndim == 0 else v.reshape((-1,) + (1,) * (like.ndim - 1))


def uniform_step_start(key: jax.Array, x: jax.Array, *, eps, step_size,
                       norm: str = "linf") -> jax.Array:
  """Liu et al.'s start: x + U(-step, step) per coordinate, projected onto the eps-ball and the box.

  Args:
    key: PRNG key.
    x: float32 images [B, H, W, C] in [0, 1].
    eps: the radius (scalar >= 0).
    step_size: the attack's step, a scalar or one per example [B].
    norm: ``"linf"`` or ``"l2"``.

  Returns:
    The start, in the ball and the box. For linf it is the official
    ``clamp(x + clip(U(-1, 1) * step, -eps, eps), 0, 1)`` with ``U(-1, 1)`` drawn as
    ``jax.random.uniform(key, x.shape, minval=-1, maxval=1)``; for l2 the noise cube is projected
    onto the ball and the box exactly (the official code scales the noise onto the ball and then
    clamps to the box).

  References:
    liuchen11/AdversaryLossLandscape ``util/attack.py``, ``PGD.attack`` lines 93-96.
  """
  u = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
  return attacks.project(x + u * per_example(step_size, x), x, eps, norm)


def uniform_unclamped_start(key: jax.Array, x: jax.Array, *, eps) -> jax.Array:
  """Wong et al.'s MNIST start: x + U(-eps, eps) per coordinate, *not* clamped to the box [0, 1].

  The first gradient is taken at this point, which may lie outside the image box; the step after it
  projects onto the eps-ball and the box (linf only).

  Args:
    key: PRNG key.
    x: float images [B, H, W, C] in [0, 1].
    eps: the linf radius (scalar >= 0).

  Returns:
    ``x + delta``, ``delta = jax.random.uniform(key, x.shape, minval=-eps, maxval=eps)``, in the
    ball but possibly outside [0, 1].

  References:
    locuslab/fast_adversarial ``MNIST/train_mnist.py`` lines 74-78 (@54f7287): ``delta.uniform_(
    -epsilon, epsilon)`` with no clamp before ``model(X + delta)``; the CIFAR-10 script
    ``train_fgsm.py`` clamps it (``clamp(delta, lower_limit - X, upper_limit - X)``).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x0 = uniform_unclamped_start(jax.random.key(0), jnp.zeros((1, 4, 4, 1)), eps=0.3)
    >>> bool((x0 < 0).any()), bool((jnp.abs(x0) <= 0.3).all())
    (True, True)
  """
  u = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
  return x + u * jnp.asarray(eps, x.dtype)


def start_point(key, x, *, eps, step_size, norm, kind):
  """The start ``kind`` (``none``, ``uniform``, ``normal``, ``uniform_step`` or
  ``uniform_unclamped``) of the attack."""
  if kind == "uniform_step":
    return uniform_step_start(key, x, eps=eps, step_size=step_size, norm=norm)
  if kind == "uniform_unclamped":
    return uniform_unclamped_start(key, x, eps=eps)
  return attacks.random_start(key, x, eps, norm, kind)




@flax.struct.dataclass
class StepLimitStop:
  """Stops example i once it has taken ``limits[i]`` steps; a limit of 0 never moves it.

  The loop calls ``update(k, ...)`` at the iterate x^k, after k steps and before the next, so an
  example stays active while ``k < limits[i]`` and takes exactly ``min(limits[i], K)`` steps. The
  limits are the rule's per-example state (gathered with the batch if the loop compacts it).

  Attributes:
    limits: int32 [B], the steps each example may take.

  Example:
    >>> import jax.numpy as jnp
    >>> rule = StepLimitStop(limits=jnp.array([0, 1, 2]))
    >>> active, state = rule.update(1, jnp.ones(3, bool), None, rule.init(3))
    >>> active.tolist()
    [False, False, True]
  """
  limits: jax.Array

  def init(self, batch_size: int) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(self.limits, jnp.int32), (batch_size,))

  def update(self, k, active, info, limits):
    del info
    return active & (k < limits), limits


@flax.struct.dataclass
class AllStop:
  """Several stop rules at once: an example moves while every rule keeps it (masks and-ed in order).

  Attributes:
    rules: a tuple of stop rules (each with ``init`` and ``update``).
  """
  rules: Tuple[Any, ...]

  def init(self, batch_size: int) -> Tuple[Any, ...]:
    return tuple(r.init(batch_size) for r in self.rules)

  def update(self, k, active, info, state):
    new_state = []
    for rule, s in zip(self.rules, state):
      active, s = rule.update(k, active, info, s)
      new_state.append(s)
    return active, tuple(new_state)


def cat_chunks(batch_size: int, k) -> jax.Array:
  """CAT's batch mixing: the chunk of each position of the batch, which is its number of PGD steps.

  The batch is split into k + 1 chunks of ``m = batch_size // (k + 1)`` consecutive examples;
  chunk j < k is positions [j m, (j + 1) m) and the last chunk, k, also takes the remainder
  (``advtrain_all.py``, ``regularLoss``, lines 287-299). Chunk 0 stays clean.

  Args:
    batch_size: B (static).
    k: the curriculum's k, an int32 scalar in [0, B - 1] (may be traced).

  Returns:
    int32 [B], the chunk j (= the steps) of each position, in [0, k].

  Example:
    >>> cat_chunks(8, 2).tolist()
    [0, 0, 1, 1, 2, 2, 2, 2]
  """
  k = jnp.asarray(k, jnp.int32)
  m = jnp.maximum(batch_size // (k + 1), 1)  # >= 1 when k < B (input_adversary checks it)
  return jnp.minimum(jnp.arange(batch_size, dtype=jnp.int32) // m, k)


def cat_step_sizes(key: jax.Array, chunks: jax.Array, base) -> jax.Array:
  """CAT's randomised steps: chunk j >= 1 takes steps of (base / j) * U(1, 10 / j), one draw per chunk.

  ``PGDAttack.perturb_true`` (line 47) draws ``(step_size * num_steps / k) *
  np.random.uniform(1, 10.0 / k)`` once per call, i.e. once per chunk, with ``step_size * num_steps
  = 2 eps``. NumPy's ``uniform(low, high)`` is ``low + (high - low) * U[0, 1)`` also when high < low
  (chunks j > 10 draw from (10 / j, 1]); that is the formula used here (``jax.random.uniform``
  with ``maxval < minval`` would clamp to ``minval``).

  Args:
    key: PRNG key.
    chunks: int32 [B], each example's chunk (:func:`cat_chunks`), in [0, B - 1].
    base: the base step (``cat_step_factor * eps``), a float scalar > 0.

  Returns:
    float32 [B], the step of each example (the same within a chunk; ``base`` for chunk 0, which
    takes no step).

  References:
    sunblaze-ucb/curriculum-adversarial-training-CAT ``PGDAttack.py`` line 47.
  """
  u = jax.random.uniform(key, chunks.shape, jnp.float32)[chunks]  # one U[0, 1) per chunk id
  j = jnp.maximum(chunks, 1).astype(jnp.float32)
  return (base / j) * (1.0 + (CAT_STEP_SPREAD / j - 1.0) * u)


class CatPlan(NamedTuple):
  """CAT's batch, laid out and drawn: what the ``chunks`` core attacks with.

  Attributes:
    chunks: int32 [B], each example's chunk j = its number of PGD steps (:func:`cat_chunks`).
    step_sizes: float32 [B], its step (:func:`cat_step_sizes`).
    x_start: float32 [B, H, W, C], its start: x for chunk 0, the random start for the others.
  """
  chunks: jax.Array
  step_sizes: jax.Array
  x_start: jax.Array


def cat_plan(key: jax.Array, x: jax.Array, k, *, eps, base, norm: str = "linf",
             start: str = "uniform") -> CatPlan:
  """The chunks, steps and starts of CAT's batch mixing for one batch (``advtrain_all.py``,
  ``regularLoss``, lines 284-299, and ``PGDAttack.perturb_true``, lines 44-81).

  Args:
    key: PRNG key; split into the start's key and the steps' key.
    x: float32 images [B, H, W, C] in [0, 1].
    k: the curriculum's k in [0, B - 1] (int32 scalar, may be traced).
    eps: the radius.
    base: the base step (``cat_step_factor * eps``; official 2 eps).
    norm: ``"linf"`` or ``"l2"``.
    start: ``"uniform"`` (official: U(-eps, eps) per coordinate), ``"none"``, ``"normal"`` or
      ``"uniform_step"`` (within +-the chunk's step).

  Returns:
    A :class:`CatPlan`. The start of chunks j >= 1 is projected onto the box like every start of
    the library (the official start is not clamped before the first gradient; it differs only for
    pixels within eps of 0 or 1); chunk 0 keeps x (the official code does not attack it).
  """
  k_start, k_step = jax.random.split(key)
  chunks = cat_chunks(x.shape[0], k)
  steps = cat_step_sizes(k_step, chunks, base)
  x_start = start_point(k_start, x, eps=eps, step_size=steps, norm=norm, kind=start)
  attacked = (chunks > 0).reshape((-1,) + (1,) * (x.ndim - 1))
  return CatPlan(chunks=chunks, step_sizes=steps, x_start=jnp.where(attacked, x_start, x))
