"""Weight adversaries as parts of the training step: none, AWP, RWP, SAM and SAMPa.

The mechanism (directions, per-layer or global scaling) is :mod:`robust_jax.weight_perturbation`;
this module wraps each adversary in the shape the step composes, close to optax's
``optax.contrib.sam``: a NamedTuple of pure functions with a typed state.

A weight adversary owns the *update gradient*: the step hands it the training loss and the batch,
and it returns a :class:`WeightGradient`, the gradient taken at w + v (at w + v_g per group of
examples for SAM's m-sharpness; SAMPa's mixes in a second gradient at its auxiliary point), the
loss and its auxiliary outputs there, and the parameters the optimizer is applied at (where coupled
weight decay is evaluated). The step applies the optimizer's update to w, so w is restored exactly
by construction:

  gradient(loss_fn, examples, params, state, key, info) -> (WeightGradient, state)

* ``loss_fn(params, examples) -> (scalar, LossAux)`` is the step's training loss (objective plus
  regulariser, BatchNorm in train mode) on any :class:`Examples` of the batch: the whole batch, or
  one group of it (every per-example array then has a leading axis of m instead of B, and BatchNorm
  normalises over those m examples). It is pure: the BatchNorm statistics it computes come back in
  :class:`LossAux` and the adversary says which pass's statistics the step keeps.
* ``examples`` is the batch as the loss sees it (:class:`Examples`: clean and adversarial inputs,
  labels, per-example weights and the loss's PRNG keys).

Which pass's BatchNorm statistics are kept, and where the optimizer's weight decay is evaluated,
follow each official code:

=======  =================================  =======================  ==========================
name     BatchNorm statistics kept          optimizer (decay) at     reference
=======  =================================  =======================  ==========================
none     the (only) pass at w               w                        plain training
awp      the pass at w + v (ascent: none)   w + v                    csdongxian/AWP
rwp      the pass at w + v                  w + v                    AWP's random control
sam      the ascent pass at w               w + v (official)         google-research/sam
sampa    the pass at x~_t = x_t + v_t       x_t                      LIONS-EPFL/SAMPa
=======  =================================  =======================  ==========================

Factories read their config fields by keyword (:func:`robust_jax.parts.bind`):

=======  ====================================================  ================================
name     factory keywords (config fields)                      reference
=======  ====================================================  ================================
none     (none)                                                plain training
awp      awp_gamma, awp_warmup                                 Wu et al. 2020, csdongxian/AWP
rwp      awp_gamma, awp_warmup                                 AWP's random-direction control
sam      sam_rho, sam_weight_decay, sam_m, weight_decay,       Foret et al. 2021,
         batch_size                                            google-research/sam
sampa    sam_rho, sampa_lambda                                 Xie et al. 2024, LIONS-EPFL/SAMPa
=======  ====================================================  ================================
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from robust_jax import weight_perturbation as wp
from robust_jax.parts import EmptyState, Registry, require


class Examples(NamedTuple):
  """The batch as the training loss sees it; a weight adversary may split it into groups.

  Attributes:
    x: float [B, ...], the clean inputs.
    x_adv: float [B, ...], the input adversary's points, or None (no input adversary).
    y: int32 [B], the labels.
    weights: float [B], the per-example weights of the weighting part (mean 1 over the batch, so
      that the mean over groups of the groups' weighted means is the batch's), or None.
    keys: the loss's PRNG keys (a tuple of scalar key arrays: dropout, regulariser).
      :func:`split_into_groups` gives every group keys of its own, as the official SAM code gives
      every device its own (``common_utils.shard_prng_key``).
  """
  x: jax.Array
  x_adv: Optional[jax.Array]
  y: jax.Array
  weights: Optional[jax.Array]
  keys: Tuple[jax.Array, ...]


class LossAux(NamedTuple):
  """What the training loss returns beside its value.

  Attributes:
    batch_stats: the BatchNorm statistics after this loss's train-mode forward passes (a pytree
      like the train state's ``batch_stats``).
    logits: float [B, C], the logits the step's accuracy metrics are computed on.
    metrics: the regulariser's scalar metrics (a dict of float scalars; also its state update's
      input, e.g. ELLE-A's error).
  """
  batch_stats: Any
  logits: Optional[jax.Array]
  metrics: Dict[str, jax.Array]


class WeightGradient(NamedTuple):
  """A weight adversary's answer: the update direction and where the optimizer sees it.

  Attributes:
    loss: float32 scalar, the training loss at the point(s) the gradient was taken at.
    aux: the :class:`LossAux` the step keeps (its ``batch_stats`` become the new statistics).
    grads: the update direction handed to the optimizer (a pytree like the parameters).
    optimizer_params: the parameters handed to ``tx.update`` (where coupled weight decay is
      evaluated): see the module table.
    v_norm: float32 scalar, ||v||_2 (the mean over groups with m-sharpness), a metric.
  """
  loss: jax.Array
  aux: LossAux
  grads: Any
  optimizer_params: Any
  v_norm: jax.Array


class WeightAdversary(NamedTuple):
  """A weight adversary part (see the module docstring).

  Attributes:
    init: ``params -> state`` (a NamedTuple carried in the train state).
    gradient: ``(loss_fn, examples, params, state, key, info) -> (WeightGradient, state)``.
    needs_input_adversary: True when v ascends the *adversarial* loss (AWP, RWP): such an adversary
      needs a method with an input adversary.
  """
  init: Callable[[Any], Any]
  gradient: Callable[..., Tuple[WeightGradient, Any]]
  needs_input_adversary: bool = False


def split_into_groups(examples: Examples, groups: int) -> Examples:
  """The batch as ``groups`` groups of consecutive examples (the official code's per-device shards).

  Args:
    examples: the batch, B examples.
    groups: G >= 1, a divisor of B.

  Returns:
    :class:`Examples` whose per-example arrays have shape [G, B / G, ...] and whose keys have shape
    [G] (``jax.random.split`` of each key), ready for ``jax.vmap``.

  Raises:
    ValueError: B is not a multiple of G.
  """
  b = examples.y.shape[0]
  if b % groups:
    raise ValueError(f"a batch of {b} examples does not split into {groups} equal groups")
  per_example = lambda a: a.reshape((groups, b // groups) + a.shape[1:])
  fields = jax.tree.map(per_example, (examples.x, examples.x_adv, examples.y, examples.weights))
  return Examples(*fields, keys=tuple(jax.random.split(k, groups) for k in examples.keys))


def merge_groups(aux: LossAux) -> LossAux:
  """The batch's :class:`LossAux` from the groups' (leading axis G): the logits concatenated in
  example order, the BatchNorm statistics and the metrics averaged over the groups.

  The mean of the groups' statistics is what the official SAM code keeps: its devices update their
  own running averages and ``pmean`` them before evaluating and saving (google-research/sam,
  ``flax_training.py`` lines 189 and 615); the running-average update is linear, so averaging after
  every step gives the same statistics.
  """
  mean = lambda t: jax.tree.map(lambda a: jnp.mean(a, axis=0), t)
  logits = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), aux.logits)
  return LossAux(batch_stats=mean(aux.batch_stats), logits=logits, metrics=mean(aux.metrics))


def _empty_init(params):
  del params
  return EmptyState()


def _at(params, v):
  return jax.tree.map(jnp.add, params, v), optax.tree.norm(v)


def _gradient_at(loss_fn, point, examples):
  """``(loss, aux), grads`` of ``loss_fn`` at ``point``."""
  return jax.value_and_grad(loss_fn, has_aux=True)(point, examples)


def none() -> WeightAdversary:
  """No weight adversary: the gradient is taken at w, the optimizer applied at w."""
  def gradient(loss_fn, examples, params, state, key, info):
    del key, info
    (loss, aux), grads = _gradient_at(loss_fn, params, examples)
    return WeightGradient(loss, aux, grads, params, jnp.zeros((), jnp.float32)), state
  return WeightAdversary(init=_empty_init, gradient=gradient)


def _layerwise(kind: str, awp_gamma: float, awp_warmup: int) -> WeightAdversary:
  require(awp_gamma >= 0, "awp_gamma", "must be >= 0", awp_gamma)
  require(int(awp_warmup) == awp_warmup and awp_warmup >= 0, "awp_warmup",
          "must be an integer >= 0 (epochs without perturbation)", awp_warmup)

  def gradient(loss_fn, examples, params, state, key, info):
    ascent_loss = lambda p: loss_fn(p, examples)[0]  # its BatchNorm statistics are discarded
    def compute(p):
      g = jax.grad(ascent_loss)(p) if kind == "awp" else None
      return wp.perturbation(kind, p, g, size=awp_gamma, key=key)
    zeros = lambda p: jax.tree.map(jnp.zeros_like, p)
    params_at, v_norm = _at(params, jax.lax.cond(info.epoch >= awp_warmup, compute, zeros, params))
    (loss, aux), grads = _gradient_at(loss_fn, params_at, examples)
    # The official code steps its optimizer while the model holds w + v, then subtracts v
    # (AT_AWP/train_cifar10.py lines 345, 358-360, 362-363): momentum and weight decay see w + v.
    return WeightGradient(loss, aux, grads, params_at, v_norm), state

  return WeightAdversary(init=_empty_init, gradient=gradient, needs_input_adversary=True)


def awp(*, awp_gamma: float = 0.01, awp_warmup: int = 0) -> WeightAdversary:
  """AWP: v_l = gamma ||w_l|| g_l / ||g_l|| with g the gradient of the adversarial loss at w
  (one ascent step, per layer, kernels only), zero before epoch ``awp_warmup``.

  The ascent pass's BatchNorm statistics are discarded (the official code ascends on a proxy copy
  of the model, ``AT_AWP/utils_awp.py`` lines 37-49); the update gradient is taken at w + v and the
  optimizer (PyTorch-style coupled weight decay, momentum) is applied at w + v, as the official
  ``opt.step()`` while the model holds w + v (``AT_AWP/train_cifar10.py`` lines 345-363).

  Args:
    awp_gamma: gamma >= 0 (official 0.01 for AT-AWP, 0.005 for TRADES-AWP).
    awp_warmup: 0-based epoch from which v is applied (official ``--awp-warmup``, 0 or 10).

  Returns:
    A :class:`WeightAdversary` with ``needs_input_adversary=True``.
  """
  return _layerwise("awp", awp_gamma, awp_warmup)


def rwp(*, awp_gamma: float = 0.01, awp_warmup: int = 0) -> WeightAdversary:
  """RWP: AWP's per-layer radius in a Gaussian direction (no gradient; a control for AWP).

  Args:
    awp_gamma: gamma >= 0, as AWP's. awp_warmup: as AWP's.

  Returns:
    A :class:`WeightAdversary` with ``needs_input_adversary=True``.
  """
  return _layerwise("rwp", awp_gamma, awp_warmup)


SAM_WEIGHT_DECAY = ("official", "paper")


def sam(*, sam_rho: float = 0.05, sam_weight_decay: str = "official", sam_m: int = 0,
        weight_decay: float = 5e-4, batch_size: int = 128) -> WeightAdversary:
  """SAM: v = rho g / ||g||_2 with g the gradient of the training loss at w (global norm), the
  update gradient taken at w + v; with m-sharpness, one v per group of m examples.

  What the official code does (google-research/sam, ``sam_jax/training_utils/flax_training.py``
  at dae9904), and the choices here:

  * **BatchNorm.** ``get_sam_gradient`` keeps the model state of the *first* (ascent) pass,
    ``inner_state`` (lines 537-538), discards the second pass's (line 549, ``(_, (_, logits))``)
    and returns ``(inner_state, logits)`` (line 551): the statistics come from the pass at w, the
    loss metric and logits from the pass at w + v. Here the same.
  * **Weight decay.** ``forward_and_loss`` adds ``0.5 * l2_reg * sum ||w||^2`` over every
    parameter (biases and BatchNorm included; lines 513-522) to the loss, and both gradients are of
    that loss: the dual vector is built from grad L(w) + weight_decay * w (lines 537-546), the
    update gradient is grad L(w + v) + weight_decay * (w + v) (lines 549-550), and the optimizer
    (``optim.Momentum``, no decay of its own, lines 218-220) steps with it. ``"official"`` (the
    default) does exactly that: the ascent direction includes ``weight_decay * w`` and the step's
    optimizer, whose coupled decay is ``add_decayed_weights(weight_decay)``, is applied at w + v.
    ``"paper"`` keeps the L2 term outside the maximisation (Foret et al., eq. 1:
    min_w max_e L(w + e) + lambda ||w||^2): the ascent direction is grad L(w) alone and the decay is
    evaluated at w.
  * **m-sharpness.** The official dual vector is computed from each device's gradient on its own
    shard of the batch, not averaged over devices (``--sync_perturbations`` defaults to False, lines
    84 and 539-545); each device takes its gradient at its own w + v_g and the update is their mean
    (``pmean``, line 564). The CIFAR models' BatchNorm has no ``axis_name`` (``sam_jax/models/
    utils.py``, ``activation``, lines 48-51), so each device normalises over its own shard. With
    ``sam_m = m`` the batch is split into B/m groups of m consecutive examples and each group is one
    device of that code: its own forward passes (BatchNorm over the m examples), its own v_g from
    its own gradient, its gradient at w + v_g; the update gradient, loss and metrics are the means
    over groups, the logits are concatenated, and the kept BatchNorm statistics are the mean of the
    groups' ascent-pass statistics (:func:`merge_groups`); the optimizer is applied at
    w + mean_g v_g (``"official"``), where the decay equals the mean of the groups' L2 gradients.
    Each group draws its own dropout and regulariser keys. ``sam_m = 0`` (or B) is one perturbation
    for the whole batch, computed without splitting. The paper's m-sharpness experiments find
    that small m generalises markedly better.
  * Not reproduced here (recipe-level, outside the weight adversary): the official global-norm
    gradient clipping of the update (``--gradient_clipping`` 5.0, lines 45 and 567) and its Nesterov
    momentum (``config.nesterov=True`` gives the same update rule). The official dual vector divides
    by ||g|| with no epsilon (lines 460-462); here ||g|| + 1e-12 (0 instead of NaN for g = 0).

  Args:
    sam_rho: rho >= 0 (0.05 in the SAM README).
    sam_weight_decay: ``"official"`` or ``"paper"``, how ``weight_decay`` enters (see above).
    sam_m: m >= 0, examples per perturbation; 0 = the whole batch. A divisor of the batch.
    weight_decay: the run's coupled weight decay >= 0 (``config.weight_decay``), the official
      ``l2_reg``; used by the ascent direction with ``"official"``.
    batch_size: the run's batch size (``config.batch_size``), checked to be a multiple of ``sam_m``.

  Returns:
    A :class:`WeightAdversary` (no carried state).

  Raises:
    ValueError: rho < 0, an unknown ``sam_weight_decay``, m < 0 or not an integer, or a batch size
      (at build time, or the traced batch) that m does not divide.

  Example:
    >>> part = sam(sam_rho=0.05, sam_m=32, batch_size=128)  # four perturbations per step
    >>> part.needs_input_adversary
    False
  """
  require(sam_rho >= 0, "sam_rho", "must be >= 0", sam_rho)
  require(sam_weight_decay in SAM_WEIGHT_DECAY, "sam_weight_decay",
          f"must be one of {SAM_WEIGHT_DECAY}", sam_weight_decay)
  require(int(sam_m) == sam_m and sam_m >= 0, "sam_m",
          "must be an integer >= 0 (examples per perturbation; 0 = the whole batch)", sam_m)
  require(weight_decay >= 0, "weight_decay", "must be >= 0", weight_decay)
  require(sam_m == 0 or batch_size % sam_m == 0, "sam_m",
          f"must divide config.batch_size={batch_size}", sam_m)
  official = sam_weight_decay == "official"
  m = int(sam_m)

  def one_perturbation(loss_fn, params, examples):
    (_, ascent_aux), g = _gradient_at(loss_fn, params, examples)
    if official:  # the gradient of L + 0.5 * weight_decay * ||w||^2 (flax_training.py 513-522)
      g = jax.tree.map(lambda gl, w: gl + weight_decay * w, g, params)
    v = wp.perturbation("sam", params, g, size=sam_rho)
    (loss, aux), grads = _gradient_at(loss_fn, jax.tree.map(jnp.add, params, v), examples)
    return loss, aux._replace(batch_stats=ascent_aux.batch_stats), grads, v

  def gradient(loss_fn, examples, params, state, key, info):
    del key, info
    groups = 1 if m == 0 else examples.y.shape[0] // m
    if m and groups * m != examples.y.shape[0]:
      raise ValueError(f"config.sam_m={m} must divide the batch, which has "
                       f"{examples.y.shape[0]} examples")
    if groups == 1:
      loss, aux, grads, v = one_perturbation(loss_fn, params, examples)
      v_norm = optax.tree.norm(v)
    else:
      per_group = jax.vmap(lambda ex: one_perturbation(loss_fn, params, ex))
      loss, aux, grads, v = per_group(split_into_groups(examples, groups))
      mean = lambda t: jax.tree.map(lambda a: jnp.mean(a, axis=0), t)
      v_norm = jnp.mean(jax.vmap(optax.tree.norm)(v))
      loss, aux, grads, v = jnp.mean(loss), merge_groups(aux), mean(grads), mean(v)
    at = jax.tree.map(jnp.add, params, v) if official else params
    return WeightGradient(loss, aux, grads, at, v_norm), state

  return WeightAdversary(init=_empty_init, gradient=gradient)


def sampa(*, sam_rho: float = 0.05, sampa_lambda: float = 0.2) -> WeightAdversary:
  """SAMPa (Algorithm 1): the perturbation direction is the gradient at the previous step's
  auxiliary point, and the update mixes in the gradient at the new one (:class:`SampaState`).

  The second gradient, at y_{t+1} = w_t - lr_t grad f(y_t), does not depend on the first, so XLA
  schedules both in the one program of the step (the paper runs them on two GPUs).

  Weight decay is evaluated at x_t, as in the official code (LIONS-EPFL/SAMPa ``train.py`` at
  01093ef): both gradients are taken with the weights moved (lines 57-61 on rank 0 at x~_t, lines
  80-84 on rank 1 at y_{t+1}), the weights are moved back to x_t (lines 93-94) and only then does
  ``optimizer.step()`` (``optim.SGD(..., weight_decay=args.weight_decay, momentum=...)``, line 30)
  add weight_decay * x_t and the momentum (line 99). The BatchNorm statistics kept are those of the
  pass at x~_t (rank 0's, which DDP broadcasts); those of the pass at y_{t+1} are discarded. The
  look-ahead is the paper's (:func:`robust_jax.weight_perturbation.sampa_lookahead` documents the
  official one, which also adds momentum and weight decay).

  Args:
    sam_rho: rho >= 0 (official default 0.1).
    sampa_lambda: lambda in [0, 1] (official ``--og`` 0.2).

  Returns:
    A :class:`WeightAdversary` whose state is a :class:`SampaState`.
  """
  require(sam_rho >= 0, "sam_rho", "must be >= 0", sam_rho)
  require(0 <= sampa_lambda <= 1, "sampa_lambda", "must be in [0, 1]", sampa_lambda)

  def gradient(loss_fn, examples, params, state, key, info):
    del key
    params_at, v_norm = _at(params, wp.sampa_perturbation(params, state, rho=sam_rho))
    (loss, aux), grads = _gradient_at(loss_fn, params_at, examples)
    y_next = wp.sampa_lookahead(params, state, lr=info.lr)
    grad_y = jax.grad(lambda p: loss_fn(p, examples)[0])(y_next)
    grads, state = wp.sampa_combine(grads, grad_y, lam=sampa_lambda)
    return WeightGradient(loss, aux, grads, params, v_norm), state

  return WeightAdversary(init=wp.sampa_init, gradient=gradient)


SampaState = wp.SampaState

WEIGHT_ADVERSARIES = Registry("weight adversary", field="weight_perturbation")
"""The weight adversaries by name (the values of ``config.weight_perturbation``)."""
WEIGHT_ADVERSARIES.register("none", none)
WEIGHT_ADVERSARIES.register("awp", awp)
WEIGHT_ADVERSARIES.register("rwp", rwp)
WEIGHT_ADVERSARIES.register("sam", sam)
WEIGHT_ADVERSARIES.register("sampa", sampa)
