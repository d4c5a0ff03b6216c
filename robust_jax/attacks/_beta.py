"""BETA, the best targeted attack of the non-zero-sum formulation (Robey et al. 2023, arXiv 2306.11035).

For every wrong class j a targeted PGD ascends the margin M(x', y)_j = z_j(x') - z_y(x') (the
``margin`` loss with ``target=j``); per example, the class whose final margin is largest wins and its
point is returned. The attacker thereby maximises a surrogate of the 0-1 error while the defender
trains with cross-entropy on the returned point (BETA-AT). The C - 1 targeted attacks run as one
``vmap`` over targets of the one ascent loop. No official code is public; this follows the paper's
Algorithm 1 (random start, T signed steps, argmax over classes of the final margin).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from robust_jax import validation
from robust_jax.attacks import _fgsm_pgd
from robust_jax.attacks._fgsm_pgd import pgd
from robust_jax.attacks._loop import AttackResult


def check_hyperparameters(*, eps, step_size, num_steps, norm="linf", start="uniform",
                          **_unchecked):
  """Raises ValueError naming the first bad hyperparameter of :func:`beta_attack` (no data)."""
  _fgsm_pgd.check_hyperparameters(eps=eps, step_size=step_size, num_steps=num_steps, norm=norm,
                                  loss="margin", start=start)


def beta_attack(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    step_size,
    num_steps,
    norm: str = "linf",
    start: str = "uniform",
    key: Optional[jax.Array] = None,
    return_class: bool = False,
):
  """BEst Targeted Attack: targeted margin PGD towards every wrong class, keep the best per example.

  Args:
    logits_fn: ``x -> logits`` [B, C] (C >= 2).
    x: float32 images [B, ...] in [0, 1]; y: int32 labels [B].
    eps, step_size, num_steps, norm: as :func:`robust_jax.attacks.pgd`.
    start: the random start of every targeted run (``"uniform"`` in the paper).
    key: PRNG key (each target gets its own start).
    return_class: also return the chosen class per example.

  Returns:
    An :class:`AttackResult` whose ``loss`` is the largest final margin max_j M(x', y)_j, and, with
    ``return_class``, the int32 [B] class j* that achieved it.
  """
  num_classes = validation.num_classes(logits_fn, x)
  if num_classes < 2:
    raise ValueError(f"BETA needs at least 2 classes, got {num_classes}")
  y = jnp.asarray(y, jnp.int32)
  offsets = jnp.arange(1, num_classes, dtype=jnp.int32)
  keys = jax.random.split(jax.random.key(0) if key is None else key, num_classes - 1)

  def one(offset, k):
    target = (y + offset) % num_classes
    return pgd(logits_fn, x, y, eps=eps, step_size=step_size, num_steps=num_steps, norm=norm,
               loss="margin", start=start, key=k, target=target)

  runs = jax.vmap(one)(offsets, keys)  # every field has a leading axis of C - 1
  best = jnp.argmax(runs.loss, axis=0)  # [B]
  pick = lambda a: jnp.take_along_axis(
      a, best.reshape((1, -1) + (1,) * (a.ndim - 2)), axis=0)[0]
  result = jax.tree.map(pick, runs)
  result = AttackResult(x_adv=result.x_adv, num_steps=result.num_steps, fosc=result.fosc,
                        loss=result.loss, misclassified=result.misclassified, kappa=result.kappa)
  if return_class:
    return result, (y + offsets[best]) % num_classes
  return result
