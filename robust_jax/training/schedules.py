"""Schedules: pure functions of the (traced) step or epoch, evaluated inside the compiled step.

Nothing here branches in Python on the step, so moving from one epoch to the next never recompiles.
Epochs are 0-based: epoch = step // steps_per_epoch.

* :func:`learning_rate`: optax schedules in steps (piecewise decays at epochs, as the official code,
  which changes the learning rate at epoch boundaries; cosine; the cyclic/one-cycle schedule of fast AT).
* :func:`dynamic_c`: Dynamic AT's c_t = max(c_max - t * c_max / T', 0) (Wang et al. 2019, eq. 6).
* :func:`piecewise_by_epoch`: FAT's tau, CAT's number of steps, GAIRAT's lambda.
* :func:`eps_warmup` and :func:`periodic_eps` (Liu et al. 2020's periodic adversarial scheduling).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import optax


def epoch_of(step, steps_per_epoch: int):
  """0-based epoch of a step (traced int)."""
  return step // steps_per_epoch


def learning_rate(*, kind: str, base_lr: float, num_epochs: int, steps_per_epoch: int,
                  decay_epochs: Sequence[int] = (), decay_factors: Sequence[float] = (),
                  peak_epoch_fraction: float = 0.4, restart_epochs: Sequence[int] = ()):
  """An optax schedule (a function of the step).

  Args:
    kind: ``"constant"``; ``"piecewise"`` (multiply by ``decay_factors[i]``, cumulative as in the
      official code's absolute factors, from the start of ``decay_epochs[i]``); ``"cosine"`` (to 0 over
      training); ``"cyclic"`` (0 -> base_lr at ``peak_epoch_fraction`` of training -> 0, the
      piecewise-linear schedule of Wong et al. / GradAlign); ``"periodic_cosine"`` (cosine decay
      restarted at each of ``restart_epochs``, Liu et al. 2020's periodic learning rate).
    base_lr: the peak learning rate.
    num_epochs, steps_per_epoch: the run's length.
    decay_epochs, decay_factors: for ``"piecewise"``; factors are *absolute* (e.g. 0.1, 0.01).
    peak_epoch_fraction: for ``"cyclic"``.
    restart_epochs: period boundaries for ``"periodic_cosine"`` (e.g. (100, 150) of 200 epochs).

  Returns:
    ``step -> learning rate``.
  """
  total = num_epochs * steps_per_epoch
  if kind == "constant":
    return optax.constant_schedule(base_lr)
  if kind == "piecewise":
    if len(decay_epochs) != len(decay_factors):
      raise ValueError("lr_decay_epochs and lr_decay_factors must have the same length, got "
                       f"{len(decay_epochs)} and {len(decay_factors)}")
    bounds = jnp.asarray([e * steps_per_epoch for e in decay_epochs], jnp.int32)
    factors = jnp.asarray((1.0,) + tuple(decay_factors), jnp.float32)

    def piecewise(step):
      return base_lr * factors[jnp.sum(step >= bounds)]

    return piecewise
  if kind == "cosine":
    return optax.cosine_decay_schedule(base_lr, max(total, 1))
  if kind == "cyclic":
    peak = max(int(round(peak_epoch_fraction * total)), 1)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, base_lr, peak),
         optax.linear_schedule(base_lr, 0.0, max(total - peak, 1))], [peak])
  if kind == "periodic_cosine":
    starts = [0] + [e * steps_per_epoch for e in restart_epochs]
    ends = starts[1:] + [total]
    return optax.join_schedules(
        [optax.cosine_decay_schedule(base_lr, max(e - s, 1)) for s, e in zip(starts, ends)],
        starts[1:])
  raise ValueError("lr_schedule must be one of ('constant', 'piecewise', 'cosine', 'cyclic', "
                   f"'periodic_cosine'), got {kind!r}")


def dynamic_c(epoch, *, c_max: float, t_prime: float):
  """Dynamic AT's FOSC threshold c_t = max(c_max - t * c_max / T', 0) at 0-based epoch t."""
  return jnp.maximum(c_max - epoch * (c_max / t_prime), 0.0)


def piecewise_by_epoch(epoch, *, boundaries: Sequence[int], values: Sequence, dtype=jnp.float32):
  """``values[i]`` for the i-th interval: values[0] before boundaries[0], values[1] until
  boundaries[1], ... (boundaries are 0-based epochs at which the next value starts)."""
  if len(values) != len(boundaries) + 1:
    raise ValueError(f"need len(values) == len(boundaries) + 1, got {len(values)} values and "
                     f"{len(boundaries)} boundaries")
  b = jnp.asarray(boundaries, jnp.int32)
  return jnp.asarray(values, dtype)[jnp.sum(epoch >= b)]


def eps_warmup(step, *, eps: float, warmup_steps: int):
  """Linear eps ramp from 0 to ``eps`` over ``warmup_steps`` (SVHN recipes of GradAlign)."""
  if warmup_steps <= 0:
    return jnp.asarray(eps, jnp.float32)
  return eps * jnp.minimum((step + 1) / warmup_steps, 1.0)


def periodic_eps(epoch_float, *, kind: str, eps_min: float, eps_max: float, eps_cap: float,
                 period_bounds: Sequence[float]):
  """Liu et al. (2020)'s periodic eps schedule, restarted every period and capped at the target.

  Within period [c_k, c_{k+1}), r = (t - c_k) / (c_{k+1} - c_k) and

  * ``cycle_cos``: eps = eps_min + (eps_max - eps_min) * (1 - cos(pi r)) / 2;
  * ``cycle_linear``: eps = eps_min + (eps_max - eps_min) * r;

  then ``min(eps, eps_cap)``: eps_max above the target makes the budget saturate at the target before
  the period ends (``seq_parser.continuous_seq`` of liuchen11/AdversaryLossLandscape). Beyond the
  last bound the end value (eps_max, capped) is kept.

  Args:
    epoch_float: the (fractional) epoch, step / steps_per_epoch.
    period_bounds: increasing epochs c_0 = 0 < c_1 < ... < c_n.
  """
  if kind not in ("cycle_cos", "cycle_linear"):
    raise ValueError(f"eps_schedule must be 'cycle_cos' or 'cycle_linear', got {kind!r}")
  b = jnp.asarray(period_bounds, jnp.float32)
  idx = jnp.clip(jnp.sum(epoch_float >= b) - 1, 0, len(period_bounds) - 2)
  r = jnp.clip((epoch_float - b[idx]) / (b[idx + 1] - b[idx]), 0.0, 1.0)
  shape = (1 - jnp.cos(jnp.pi * r)) / 2 if kind == "cycle_cos" else r
  return jnp.minimum(eps_min + (eps_max - eps_min) * shape, eps_cap)
