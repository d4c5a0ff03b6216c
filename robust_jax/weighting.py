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
* ``cfol``: CFOL-AT's class-focused online learning (Pethick et al., TMLR 2023; :func:`cfol`): no
  per-example weights, but a carried class distribution p (an Exp3-style adversary over the
  classes, updated from the step's misclassified adversarial examples) from which the training
  batches are drawn.

Factories read their config fields by keyword (:func:`robust_jax.parts.bind`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from robust_jax import objectives
from robust_jax.parts import Registry, require


class Weighting(NamedTuple):
  """A per-example weighting part, optionally with a carried state that sets the data's sampling
  law (CFOL's class distribution).

  Attributes:
    apply: ``(adversary_output, logits_fn, y, info) -> float32 [B] or None``.
    init: None for a weighting without state; else ``() -> state`` (a NamedTuple carried in the
      train state's ``parts.weighting``, checkpointed with it).
    update: ``(state, logits, y) -> state`` after the step's loss (``logits`` float [B, C], the
      logits of the step's objective at the parameters before the update); None without state.
    class_distribution: None (batches are the pipeline's shuffled epochs), or ``state -> p``
      (float [C] on the simplex): the law of the class of each training draw, read by the data
      sampler (:mod:`robust_jax.data.class_sampler`) before every batch.
  """
  apply: Callable[..., Optional[jax.Array]]
  init: Optional[Callable[[], Any]] = None
  update: Optional[Callable[..., Any]] = None
  class_distribution: Optional[Callable[[Any], jax.Array]] = None

  @property
  def stateful(self) -> bool:
    """Whether the weighting carries a state between steps."""
    return self.init is not None


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


class CfolState(NamedTuple):
  """CFOL's online-learning adversary over the C classes.

  Attributes:
    w: float32 [C], the adversary's cumulative importance-weighted losses (0 at the start: the
      official ``prior="uniform"``); q = softmax(w).
  """
  w: jax.Array


def cfol_distribution(w: jax.Array, *, gamma: float) -> jax.Array:
  """p = gamma u + (1 - gamma) softmax(w), u uniform: CFOL's sampling law (official
  ``ClassSampler.distribution`` with ``base_dist="uniform"``, ``reweight=False``)."""
  w = jnp.asarray(w, jnp.float32)
  return gamma / w.shape[0] + (1.0 - gamma) * jax.nn.softmax(w)


def cfol_update(w: jax.Array, losses: jax.Array, y: jax.Array, *, eta: float,
                gamma: float) -> jax.Array:
  """One batch of the Exp3-style update: w_c += eta sum_{i: y_i = c} loss_i / p_c.

  p is the distribution before the update (the official ``batch_update``: a parallel update of the
  whole batch, contributions summed, not averaged). The adversary ascends: the classes with more
  misclassified adversarial examples gain probability.

  Args:
    w: float [C]. losses: float [B] (CFOL: the 0-1 loss of the adversarial examples).
    y: int [B] labels in [0, C). eta >= 0. gamma in (0, 1].

  Returns:
    float32 [C].

  Example:
    >>> import jax.numpy as jnp
    >>> cfol_update(jnp.zeros(2), jnp.array([1.0, 1.0, 0.0]), jnp.array([0, 0, 1]), eta=0.1,
    ...             gamma=0.5).tolist()  # p = (1/2, 1/2): class 0 gains 0.1 * 2 / (1/2)
    [0.4000000059604645, 0.0]
  """
  p = cfol_distribution(w, gamma=gamma)
  per_class = jax.ops.segment_sum(jnp.asarray(losses, jnp.float32), y, num_segments=w.shape[0])
  return jnp.asarray(w, jnp.float32) + eta * per_class / p


def cfol(*, cfol_eta: float = 5e-6, cfol_gamma: float = 0.5,
         cfol_num_classes: int = 10) -> Weighting:
  """CFOL-AT: the training batches are drawn from a class distribution p that an online-learning
  adversary moves toward the classes the model gets wrong under attack.

  The objective is min_theta max_{p in simplex_C} sum_c p_c R_c(theta), R_c the adversarial risk of
  class c (the worst class, relaxed). The adversary is Exp3 with uniform exploration, as the
  official code (LIONS-EPFL/class-focused-online-learning-code @98abd59, ``cfol/class_sampler.py``
  ``ClassSampler``; ``cfol/model.py`` ``training_step``):

  * state w in R^C, 0 at the start; p = gamma / C + (1 - gamma) softmax(w) (:func:`cfol_distribution`);
  * every training draw takes a class c ~ p and an example uniformly, with replacement, within c
    (:mod:`robust_jax.data.class_sampler`; an epoch is N draws cut into batches);
  * the loss is the *unweighted* mean adversarial CE (official ``class_sampler_reweight=False``), so
    :attr:`Weighting.apply` gives no weights;
  * after the step's loss, l_i = 1[argmax f(x_adv_i) != y_i] on the training forward's adversarial
    logits at the parameters before the update, and w_{y_i} += eta l_i / p_{y_i}, summed over the
    batch (:func:`cfol_update`).

  The state is carried in the train state and checkpointed, and each batch is a pure function of
  (seed, epoch, step, p), so a resumed run draws the batches of an uninterrupted one. Where the
  official DataLoader reads p lazily with some staleness from prefetching, here the batch of step t
  is drawn from p after the update of step t - 1. Not implemented: the official ``reweight=True``
  variant (uniform sampling, loss weighted by C p(y)).

  Args:
    cfol_eta: eta >= 0 (official ``class_sampler_lr``: 5e-6 in the CIFAR-10 command of
      ``cmd_generator.py``; 1e-5 in ``config.py``). Its effect grows with the batch size and the
      number of steps (the update sums over the batch).
    cfol_gamma: gamma in (0, 1], the uniform mixing (official 0.5); 1 = uniform sampling.
    cfol_num_classes: C >= 2, the dataset's number of classes (the sampler checks it).

  Returns:
    A stateful :class:`Weighting` (state :class:`CfolState`) with a ``class_distribution``.

  References:
    Pethick, Chrysos, Cevher. Revisiting adversarial training for the worst-performing class.
    TMLR 2023 (arXiv 2302.08872). https://github.com/LIONS-EPFL/class-focused-online-learning-code
  """
  require(cfol_eta >= 0, "cfol_eta", "must be >= 0", cfol_eta)
  require(0 < cfol_gamma <= 1, "cfol_gamma", "must be in (0, 1]", cfol_gamma)
  require(isinstance(cfol_num_classes, int) and cfol_num_classes >= 2, "cfol_num_classes",
          "must be an integer >= 2 (the dataset's number of classes)", cfol_num_classes)

  def init():
    return CfolState(w=jnp.zeros((cfol_num_classes,), jnp.float32))

  def update(state, logits, y):
    misclassified = (jnp.argmax(logits, axis=-1) != y).astype(jnp.float32)
    w = cfol_update(state.w, jax.lax.stop_gradient(misclassified), y, eta=cfol_eta,
                    gamma=cfol_gamma)
    return CfolState(w=w)

  return Weighting(apply=lambda adv, logits_fn, y, info: None, init=init, update=update,
                   class_distribution=lambda state: cfol_distribution(state.w, gamma=cfol_gamma))


WEIGHTINGS.register("cfol", cfol)
