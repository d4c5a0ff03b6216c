"""DDN: decoupled direction and norm, a minimum-l2-norm attack (Rony et al. 2019).

Rony, Hafemann, Oliveira, Ben Ayed, Sabourin and Granger, "Decoupling Direction and Norm for
Efficient Gradient-Based L2 Adversarial Attacks and Defenses", CVPR 2019; the official
``jeromerony/fast_adversarial`` ``fast_adv/attacks/ddn.py`` (``DDN.attack``), untargeted,
transcribed per example.

From delta = 0 and the radius eps = ``init_norm`` (1), each of the ``steps`` iterations i:

1. at x + delta: the summed cross-entropy and its gradient g (one forward and backward pass); if
   x + delta is misclassified and ||delta||_2 is below the best norm so far (which starts at the
   norm of the farthest box point), it becomes the record;
2. the direction: g / ||g||_2 (a standard normal draw where g = 0, as the code), an SGD step of
   lr_i = 0.01 + 0.99 (1 + cos(pi i / steps)) / 2 (``CosineAnnealingLR(T_max=steps,
   eta_min=0.01)``, stepped after the update as in the stored version of the code, so lr_0 = 1);
3. the norm: eps <- eps (1 - gamma) if x + delta was adversarial, else eps (1 + gamma), capped at
   the farthest box point; delta is rescaled onto the sphere of radius eps (exactly eps, not the
   ball);
4. x + delta is quantised to ``levels`` levels (``quantize=True``, 256) and clipped to [0, 1].

The result is the record. Not offered: the targeted mode and ``max_norm`` (a renorm of the result
for adversarial training, which breaks the minimum-norm semantics). The loop is one
``lax.fori_loop`` over a traced ``steps``, every per-example quantity in its carry; the PRNG key
is folded with the step index for the rare random directions.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from robust_jax import losses
from robust_jax import validation
from robust_jax.attacks import _minimum_norm as mn
from robust_jax.attacks._loop import as_pytree_fn
from robust_jax.attacks._projections import bcast


@functools.partial(jax.jit, static_argnames=("quantize",))
def _ddn(logits_fn, x, y, key, steps, gamma, init_norm, levels, *, quantize):
  batch = x.shape[0]
  clean_mis = jnp.argmax(logits_fn(x), axis=-1) != y
  worst = mn.worst_norm(x, "l2")
  stepsf = jnp.maximum(steps, 1).astype(x.dtype)

  def ce_sum(v):
    logits = logits_fn(v)
    return jnp.sum(losses.cross_entropy(logits, y)), logits

  def body(i, c):
    x_k, eps, best_x, best_norm, found = c
    delta = x_k - x
    l2 = mn.lp_norm(delta, "l2")
    (_, logits), g = jax.value_and_grad(ce_sum, has_aux=True)(x_k)
    is_adv = jnp.argmax(logits, axis=-1) != y
    better = is_adv & (l2 < best_norm)
    found = found | better
    best_norm = jnp.where(better, l2, best_norm)
    best_x = jnp.where(bcast(better, x), x_k, best_x)
    gn = mn.lp_norm(g, "l2")
    noise = jax.lax.cond(  # drawn only when some gradient is exactly zero
        jnp.any(gn == 0), lambda: jax.random.normal(jax.random.fold_in(key, i), g.shape, g.dtype),
        lambda: jnp.zeros_like(g))
    direction = jnp.where(bcast(gn == 0, g), noise, g / bcast(jnp.where(gn == 0, 1.0, gn), g))
    lr = 0.01 + (1.0 - 0.01) * (1.0 + jnp.cos(math.pi * i / stepsf)) / 2.0
    delta = delta + lr * direction
    eps = jnp.minimum(jnp.where(is_adv, eps * (1.0 - gamma), eps * (1.0 + gamma)), worst)
    delta = delta * bcast(eps / jnp.maximum(mn.lp_norm(delta, "l2"), 1e-12), delta)
    x_new = x + delta
    if quantize:
      x_new = jnp.round(x_new * (levels - 1)) / (levels - 1)
    return jnp.clip(x_new, 0.0, 1.0), eps, best_x, best_norm, found

  eps0 = jnp.broadcast_to(init_norm, (batch,)).astype(x.dtype)
  carry0 = (x, eps0, x, worst, jnp.zeros((batch,), bool))
  _, _, best_x, _, found = jax.lax.fori_loop(0, steps, body, carry0)
  num_steps = jnp.where(clean_mis, 0, jnp.full((batch,), steps, jnp.int32))
  return mn.finish(logits_fn, x, y, best_x, found, num_steps, "l2", clean_mis)


def check_hyperparameters(*, steps=100, gamma=0.05, init_norm=1.0, quantize=True, levels=256,
                          **_unchecked):
  """Raises ValueError naming the first bad hyperparameter of :func:`ddn` and its valid range
  (data-free: :func:`robust_jax.attacks.make` runs it before the first call)."""
  validation.check_scalar("steps", steps, low=0, integer=True)
  validation.check_scalar("gamma", gamma, low=0.0, high=1.0, high_open=True)
  validation.check_scalar("init_norm", init_norm, low=0.0, low_open=True)
  if not isinstance(quantize, bool):
    raise ValueError(f"quantize must be a bool, got {quantize!r}")
  validation.check_scalar("levels", levels, low=2, integer=True)


def ddn(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    steps=100,
    gamma=0.05,
    init_norm=1.0,
    quantize: bool = True,
    levels=256,
    key: Optional[jax.Array] = None,
) -> mn.MinNormResult:
  """The DDN attack (Rony et al. 2019), untargeted, minimum l2 norm.

  Args:
    logits_fn: ``x -> logits`` [B, C], pure (raw logits, model in eval mode).
    x: float images [B, ...] in [0, 1].
    y: int32 labels [B].
    steps: iterations, >= 0 (traced; 100 in the code's README).
    gamma: the norm update factor, in [0, 1) (0.05).
    init_norm: the first radius, > 0 (1).
    quantize: round every iterate to ``levels`` levels (the code's default True: the result is a
      valid 8-bit image); False keeps continuous values (a finer minimum).
    levels: quantisation levels, >= 2 (256).
    key: PRNG key for the random direction where a gradient is exactly zero; default
      ``jax.random.key(0)``.

  Returns:
    A :class:`~robust_jax.attacks._minimum_norm.MinNormResult` (l2 distances).

  Raises:
    ValueError: on a bad argument (named, with its valid range), when values are concrete.

  Example:
    >>> import jax.numpy as jnp
    >>> logits_fn = lambda x: x.reshape(x.shape[0], -1) @ jnp.array([[1., 0.], [0., 1.]])
    >>> x = jnp.array([[0.6, 0.4]]); y = jnp.array([0])  # the boundary is 0.2 / sqrt(2) away
    >>> r = ddn(logits_fn, x, y, steps=100, quantize=False)
    >>> round(float(r.distance[0]), 2), bool(r.misclassified[0])
    (0.14, True)
  """
  check_hyperparameters(steps=steps, gamma=gamma, init_norm=init_norm, quantize=quantize,
                        levels=levels)
  validation.check_attack_inputs(logits_fn, x, y, key=key)
  if key is None:
    key = jax.random.key(0)
  f = lambda v: jnp.asarray(v, x.dtype)  # noqa: E731
  return _ddn(as_pytree_fn(logits_fn), x, jnp.asarray(y, jnp.int32), key,
              jnp.asarray(steps, jnp.int32), f(gamma), f(init_norm), f(levels), quantize=quantize)
