"""Stop rules: small pure functions that update the per-example active mask of the ascent loop.

A stop rule is a pytree (its thresholds are traced leaves, so changing them never recompiles) with

* ``init(batch_size) -> state``: its per-example state (an int32 [B] budget, or an empty tuple);
* ``update(k, active, info, state) -> (active, state)``: called at every iterate x^k, k = 0 .. K,
  *before* the step from x^k is taken, with ``info`` an :class:`IterateInfo` of that iterate. Rules
  only ever switch examples off (``active`` is and-ed), so a stopped example never moves again.

Rules:

* :class:`NeverStop` (``stop=None``): plain PGD.
* :func:`fosc_stop` (Dynamic AT, Wang et al. 2019, Alg. 1): the first step is always taken; from then
  on an example stops once FOSC(x^k) <= c.
* :func:`misclassified_stop` (FAT's early-stopped PGD-K-tau, Zhang et al. 2020, Alg. 2): each example
  has a budget of tau extra steps; an iterate that is misclassified spends one, and an example that is
  misclassified with none left stops there. Correct iterates spend nothing and the budget is not reset
  when an example flips back to correct (as ``earlystop.py``). tau = K recovers PGD-K.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp


class IterateInfo(NamedTuple):
  """What a stop rule sees about the iterate x^k (all per example, [B])."""
  fosc: jax.Array
  misclassified: jax.Array
  loss: jax.Array


@flax.struct.dataclass
class NeverStop:
  """Never stops an example: plain PGD."""

  def init(self, batch_size: int) -> Any:
    del batch_size
    return ()

  def update(self, k, active, info: IterateInfo, state):
    del k, info
    return active, state


@flax.struct.dataclass
class FoscStop:
  """Dynamic AT's rule: stop once FOSC <= c; step 0 is always taken. ``c`` is traced."""
  c: jax.Array

  def init(self, batch_size: int) -> Any:
    del batch_size
    return ()

  def update(self, k, active, info: IterateInfo, state):
    keep = (k == 0) | (info.fosc > self.c)
    return active & keep, state


@flax.struct.dataclass
class MisclassifiedStop:
  """FAT's early stop with ``tau`` extra steps after misclassification. ``tau`` is traced."""
  tau: jax.Array

  def init(self, batch_size: int) -> Any:
    return jnp.full((batch_size,), self.tau, dtype=jnp.int32)

  def update(self, k, active, info: IterateInfo, budget):
    del k
    mis = info.misclassified & active
    stop_now = mis & (budget <= 0)
    budget = jnp.where(mis & (budget > 0), budget - 1, budget)
    return active & ~stop_now, budget


def fosc_stop(c) -> FoscStop:
  """Dynamic AT's stop rule with threshold ``c`` >= 0 (a float or a traced scalar)."""
  if isinstance(c, (int, float)) and (c < 0 or c != c):
    raise ValueError(f"fosc_stop: c must be >= 0, got {c}")
  return FoscStop(c=jnp.asarray(c, jnp.float32))


def misclassified_stop(tau) -> MisclassifiedStop:
  """FAT's stop rule with ``tau`` >= 0 extra steps (an int or a traced int32 scalar)."""
  if isinstance(tau, (int, float)) and (tau < 0 or int(tau) != tau):
    raise ValueError(f"misclassified_stop: tau must be an integer >= 0, got {tau}")
  return MisclassifiedStop(tau=jnp.asarray(tau, jnp.int32))
