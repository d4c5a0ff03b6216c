"""Per-example weights of the outer loss, from the attack's diagnostics: parts of the training step.

A weighting is ``apply(adversary_output, logits_fn, y, info) -> weights or None``: float32 [B]
weights without gradient (the objective computes mean_i(w_i l_i)), or None for the plain mean.
``logits_fn`` is the attack's view of the model (eval mode, the weights before the update).

* ``uniform``: None (every method without reweighting).
* ``gairat``: GAIRAT's geometry-aware weights (Zhang et al., ICLR 2021, eq. 7;
  :func:`robust_jax.objectives.gairat_weights`) from the attack's kappa, with lambda = +inf (uniform)
  before ``gairat_begin_epoch`` and ``gairat_lambda`` from then on (the official ``fixed`` schedule;
  its ``piecewise`` schedule is identical because of an if/elif bug).
* ``dart``: Dynamic AT's reweighting of the official Keras code (``YisenWang/dynamic_adv_training``):
  none at epoch 0, then w_i = CE_i(x_adv) of the current model. With
  ``dart_official_reweight=False`` (the paper, the default) no weights.

Factories read their config fields by keyword (:func:`robust_jax.parts.bind`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from robust_jax import losses, objectives
from robust_jax.parts import Registry, require


class Weighting(NamedTuple):
  """A per-example weighting part.

  Attributes:
    apply: ``(adversary_output, logits_fn, y, info) -> float32 [B] or None``.
  """
  apply: Callable[..., Optional[jax.Array]]


def uniform() -> Weighting:
  """No weights: the objective takes the plain batch mean."""
  return Weighting(apply=lambda adv, logits_fn, y, info: None)


def gairat(*, gairat_lambda: float = -1.0, gairat_begin_epoch: int = 0) -> Weighting:
  """GAIRAT's weights from the attack's kappa and the epoch's step budget K.

  Args:
    gairat_lambda: lambda (official default -1; +inf = uniform).
    gairat_begin_epoch: the 0-based epoch from which the weights apply (uniform before).
  """
  require(gairat_lambda == gairat_lambda, "gairat_lambda", "must not be NaN", gairat_lambda)
  require(int(gairat_begin_epoch) == gairat_begin_epoch and gairat_begin_epoch >= 0,
          "gairat_begin_epoch", "must be an integer >= 0", gairat_begin_epoch)

  def apply(adv, logits_fn, y, info):
    del logits_fn, y
    lam = jnp.where(info.epoch >= gairat_begin_epoch, gairat_lambda, jnp.inf)
    return objectives.gairat_weights(adv.result.kappa, adv.num_steps, lam)

  return Weighting(apply=apply)


def dart(*, dart_official_reweight: bool = False) -> Weighting:
  """Dynamic AT's weights: none (the paper) or the official code's CE(x_adv) from epoch 1.

  Args:
    dart_official_reweight: True = the official code's reweighting, normalised here to mean 1.
  """
  require(isinstance(dart_official_reweight, bool), "dart_official_reweight",
          "must be True or False", dart_official_reweight)
  if not dart_official_reweight:
    return uniform()

  def apply(adv, logits_fn, y, info):
    ce_adv = losses.cross_entropy(logits_fn(adv.x_adv), y)
    w = jnp.where(info.epoch >= 1, ce_adv, 1.0)
    return jax.lax.stop_gradient(w * w.shape[0] / jnp.sum(w))

  return Weighting(apply=apply)


WEIGHTINGS = Registry("weighting")
"""The weightings by name (the ``weighting`` column of the method table)."""
WEIGHTINGS.register("uniform", uniform)
WEIGHTINGS.register("gairat", gairat)
WEIGHTINGS.register("dart", dart)
