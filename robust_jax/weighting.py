"""Per-example weights of the outer loss, from the attack's diagnostics: parts of the training step.

A weighting is ``apply(adversary_output, logits_fn, y, info) -> weights or None``: float32 [B]
weights without gradient (the objective computes mean_i(w_i l_i)), or None for the plain mean.
``logits_fn`` is the attack's view of the model (eval mode, the weights before the update).

* ``uniform``: None (every method without reweighting).
* ``gairat``: GAIRAT's geometry-aware weights (Zhang et al., ICLR 2021, eq. 7;
  :func:`robust_jax.objectives.gairat_weights`) from the attack's kappa, with lambda = +inf (uniform)
  before ``gairat_begin_epoch`` and ``gairat_lambda`` from then on (the official ``fixed`` schedule;
  its ``piecewise`` schedule is identical because of an if/elif bug).
* ``dart``: Dynamic AT's reweighting of the official Keras code
  (``YisenWang/dynamic_adv_training``), reduced as Keras reduces a ``sample_weight``: none at
  epoch 0, then w_i = CE_i(x_adv) of the current model divided by the fraction of non-zero weights
  (:func:`dart`). With ``dart_official_reweight=False`` (the paper, the default) no weights.

Factories read their config fields by keyword (:func:`robust_jax.parts.bind`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from robust_jax import objectives
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


# The official code's log guard: ``np.log(probs + 1e-12)`` (train_models.py).
_DART_LOG_EPS = 1e-12


def keras_sample_weights(w: jax.Array) -> jax.Array:
  """Per-example weights w_i / mean_j 1(w_j != 0): Keras' reduction of a ``sample_weight``, as
  weights for ``mean_i(w_i l_i)``.

  Keras 2.2 (``keras/engine/training_utils.py``, ``weighted_masked_objective``, which wraps the
  loss that ``train_on_batch`` minimises) reduces per-example losses l_i with sample weights w_i
  as ``K.mean(l * w / K.mean(K.cast(K.not_equal(w, 0), floatx)))``: the weights are *not* normalised
  to mean 1; only the examples of weight 0 are taken out of the count. So
  ``mean_i(keras_sample_weights(w)_i l_i)`` is Keras' loss. If every weight is 0, Keras divides 0 by
  0 (a NaN loss); here the weights, and the loss, are then 0.

  Args:
    w: float [B], weights >= 0.

  Returns:
    float32 [B].

  Example:
    >>> import jax.numpy as jnp
    >>> keras_sample_weights(jnp.array([3.0, 0.0, 1.5, 1.5])).tolist()  # 3 of 4 non-zero
    [4.0, 0.0, 2.0, 2.0]
  """
  w = jnp.asarray(w, jnp.float32)
  nonzero = jnp.mean((w != 0).astype(jnp.float32))
  return jnp.where(nonzero > 0, w / jnp.where(nonzero > 0, nonzero, 1.0), 0.0)


def dart(*, dart_official_reweight: bool = False) -> Weighting:
  """Dynamic AT's weights: none (the paper, the default) or the official code's from epoch 1.

  The official ``train_models.py`` (YisenWang/dynamic_adv_training @470210e, ``advs_train``)
  computes, for every batch after the attack, ``probs = model.predict(batch_advs)`` (inference mode,
  the weights before the update) and ``loss_weight = np.max(-batch_y * np.log(probs + 1e-12),
  axis=1)``, i.e. w_i = -log(p_y(x_adv_i) + 1e-12), and trains with ``model.train_on_batch(
  batch_advs, batch_y, sample_weight=loss_weight)`` from the 0-based epoch 1 on (epoch 0:
  ``train_on_batch`` without weights, i.e. Keras' weights of 1). Keras reduces the weighted loss as
  mean_i(w_i l_i) / mean_i 1(w_i != 0) (:func:`keras_sample_weights`): the weights are not
  renormalised to mean 1, so the loss (and the effective learning rate) grows with the adversarial
  CE. The paper describes no reweighting: it is the official behaviour, offered as the option.

  Args:
    dart_official_reweight: True = the official code's reweighting, reduced exactly as Keras does;
      False = no weights (the paper).

  Returns:
    A :class:`Weighting`; with the reweighting its weights are float32 [B] >= 0 without gradient,
    all 1 at epoch 0.
  """
  require(isinstance(dart_official_reweight, bool), "dart_official_reweight",
          "must be True or False", dart_official_reweight)
  if not dart_official_reweight:
    return uniform()

  def apply(adv, logits_fn, y, info):
    p_true = jnp.take_along_axis(jax.nn.softmax(logits_fn(adv.x_adv)), y[:, None], axis=1)[:, 0]
    ce_adv = jnp.maximum(-jnp.log(p_true + _DART_LOG_EPS), 0.0)
    w = jnp.where(info.epoch >= 1, keras_sample_weights(ce_adv), 1.0)
    return jax.lax.stop_gradient(w)

  return Weighting(apply=apply)


WEIGHTINGS = Registry("weighting")
"""The weightings by name (the ``weighting`` column of the method table)."""
WEIGHTINGS.register("uniform", uniform)
WEIGHTINGS.register("gairat", gairat)
WEIGHTINGS.register("dart", dart)
