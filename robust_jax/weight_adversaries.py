"""Weight adversaries as parts of the training step: none, AWP, RWP, SAM, SAMPa, BiSAM and DDi.

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
bisam    the ascent pass at w               w                        LIONS-EPFL/BiSAM
ddi      the mean of the K passes at w      w                        LIONS-EPFL/ddi_at
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
bisam    sam_rho, bisam_lower_bound_kind, bisam_mu,            Xie et al. 2024, LIONS-EPFL/BiSAM
         bisam_alpha
ddi      ddi_maximisers, ddi_qp_iterations, ddi_normalize      Latorre et al. 2023,
                                                               LIONS-EPFL/ddi_at
=======  ====================================================  ================================

BiSAM changes only SAM's ascent loss (a lower bound of the 0-1 loss). DDi is not a perturbation:
it owns how the update direction is formed from the gradients at K maximisers of the inner problem
(``num_maximisers``; the bundle runs the input adversary K times).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from robust_jax import danskin
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
    needs_input_adversary: True when v ascends the *adversarial* loss (AWP, RWP) or the update
      needs the adversarial points (DDi): such an adversary needs a method with an input adversary.
    num_maximisers: None for the adversaries that take the input adversary's points as they are
      (``examples.x_adv`` [B, ...]); K >= 1 for one that takes K inner maximisers per example (DDi:
      :func:`robust_jax.training.methods.build` then restarts the input adversary K times, and
      ``examples.x_adv`` is [K, B, ...]).
  """
  init: Callable[[Any], Any]
  gradient: Callable[..., Tuple[WeightGradient, Any]]
  needs_input_adversary: bool = False
  num_maximisers: Optional[int] = None


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


def ddi(*, ddi_maximisers: int = 10, ddi_qp_iterations: int = danskin.QP_ITERATIONS,
        ddi_normalize: bool = False) -> WeightAdversary:
  """DDi: the update direction is Danskin's descent direction, the minimum-norm element of the
  convex hull of the parameter gradients at K maximisers of the inner problem.

  The K maximisers are K restarts of the method's input adversary (different random starts; the
  bundle tiles the batch K times, as the official ``get_attacks``), so ``examples.x_adv`` is
  [K, B, ...]. For each copy k the training loss (the method's objective, batch mean) gives g_k at
  w; the Gram matrix G_kl = <g_k, g_l> (global over the parameter pytree) and the simplex QP
  min_y y^T G y (:func:`robust_jax.danskin.min_norm_weights`: the official accelerated projected
  gradient, ``ddi_qp_iterations`` iterations inside the step) give d = sum_k y_k g_k, which the
  optimizer receives in place of the gradient (optionally d / ||d||, ``ddi_normalize``). The
  official code then calls ``SGD.step()``, so momentum and weight decay act on d; here the same
  (the optimizer is applied at w). DDi is per *batch*: K gradients of whole-batch losses, not per
  example (``acat/jax_danskinattack.py``, ``get_grad_per_attack``: ``vmap(grad(loss))`` over the
  copy axis with ``reduction="mean"``). With K = 1 it is the plain gradient.

  Differences from the official JAX path (LIONS-EPFL/ddi_at @87353fb): the K gradients are taken
  with the step's training loss, i.e. BatchNorm in train mode (the official path takes them in eval
  mode, so its running statistics never move); the kept BatchNorm statistics are the mean over the
  K copies' (equal to one pass for models without BatchNorm, the paper's setting, which uses
  smooth activations and no BatchNorm). The reported loss and logits are those of the copy with
  the largest loss (the estimate of the max-loss).

  Args:
    ddi_maximisers: K >= 1 (official ``num_of_attacks`` 10).
    ddi_qp_iterations: QP iterations >= 1 (official 1000).
    ddi_normalize: divide d by ||d||_2 (official ``normalize_danskin``, default False).

  Returns:
    A :class:`WeightAdversary` with ``needs_input_adversary=True`` and ``num_maximisers=K``.

  References:
    Latorre, Krawczuk, Dadi, Pethick, Cevher. Finding actual descent directions for adversarial
    training. ICLR 2023. https://github.com/LIONS-EPFL/ddi_at (``acat/jax_danskinattack.py``,
    ``acat/jax_descentdir.py``, ``acat/model.py`` ``overwrite_gradients``).

  Example:
    >>> part = ddi(ddi_maximisers=4)
    >>> part.num_maximisers, part.needs_input_adversary
    (4, True)
  """
  require(isinstance(ddi_maximisers, int) and ddi_maximisers >= 1, "ddi_maximisers",
          "must be an integer >= 1 (maximisers per batch)", ddi_maximisers)
  require(isinstance(ddi_qp_iterations, int) and ddi_qp_iterations >= 1, "ddi_qp_iterations",
          "must be an integer >= 1", ddi_qp_iterations)
  require(isinstance(ddi_normalize, bool), "ddi_normalize", "must be True or False", ddi_normalize)

  def gradient(loss_fn, examples, params, state, key, info):
    del key, info
    if examples.x_adv is None or examples.x_adv.ndim != examples.x.ndim + 1:
      raise ValueError("the ddi weight adversary needs the K maximisers as x_adv [K, B, ...]; "
                       "build the bundle with robust_jax.training.methods.build")
    at_copy = lambda xa: _gradient_at(loss_fn, params, examples._replace(x_adv=xa))
    (losses, auxs), grads = jax.vmap(at_copy)(examples.x_adv)
    weights = danskin.min_norm_weights(danskin.gram(grads), iterations=ddi_qp_iterations)
    d = danskin.combine(weights, grads)
    if ddi_normalize:
      norm = optax.tree.norm(d)
      d = jax.tree.map(lambda a: a / jnp.where(norm > 0, norm, 1.0).astype(a.dtype), d)
    best = jnp.argmax(losses)
    mean = lambda t: jax.tree.map(lambda a: jnp.mean(a, axis=0), t)
    aux = LossAux(batch_stats=mean(auxs.batch_stats),
                  logits=jax.tree.map(lambda a: a[best], auxs.logits), metrics=mean(auxs.metrics))
    return WeightGradient(losses[best], aux, d, params, jnp.zeros((), jnp.float32)), state

  return WeightAdversary(init=_empty_init, gradient=gradient, needs_input_adversary=True,
                         num_maximisers=ddi_maximisers)


BISAM_LOWER_BOUNDS = ("log", "tanh")
# phi_log(x) = 1 - log(1 + exp(gamma - x)) with gamma = log(e - 1), so that phi_log(0) = 0
# (BiSAM ``loss_fnc.py``: ``1 + softplus(pred - log(e - 1), beta=-1)``).
_BISAM_LOG_SHIFT = math.log(math.e - 1.0)


def bisam_phi(margins: jax.Array, *, kind: str = "log", alpha: float = 0.1) -> jax.Array:
  """BiSAM's smooth lower bound of the step 1[F > 0]: phi(F) <= 1[F > 0], phi(0) = 0, increasing.

  ``"tanh"``: phi(F) = tanh(alpha F); ``"log"``: phi(F) = 1 - log(1 + exp(gamma - F)),
  gamma = log(e - 1). Both are < 1 everywhere and <= 0 for F <= 0.
  """
  if kind == "tanh":
    return jnp.tanh(alpha * margins)
  return 1.0 - jax.nn.softplus(_BISAM_LOG_SHIFT - margins)


def bisam_lower_bound(logits: jax.Array, y: jax.Array, *, kind: str = "log", mu: float = 1.0,
                      alpha: float = 0.1) -> jax.Array:
  """BiSAM's ascent loss per example: Q_i = logsumexp_j(mu phi(F_ij)), F_ij = f_ij - f_iy.

  The 0-1 loss is 1[max_{j != y} F_ij > 0] >= max_j phi(F_ij) (phi(F_iy) = phi(0) = 0), and
  (1/mu) Q_i is the log-sum-exp smoothing of that max: max_j phi(F_ij) <= Q_i / mu <=
  max_j phi(F_ij) + log(C) / mu. As the official code, Q is not divided by mu (the ascent step is
  normalised, so the scale does not matter).

  Args:
    logits: float [B, C]. y: int [B]. kind: ``"log"`` or ``"tanh"``. mu > 0. alpha > 0 (tanh).

  Returns:
    float [B].

  References:
    Xie, Latorre, Antonakopoulos, Pethick, Cevher. Improving SAM requires rethinking its
    optimization formulation. ICML 2024 (arXiv 2407.12993); https://github.com/LIONS-EPFL/BiSAM
    ``loss_fnc.py`` (``perturbation_loss_tanh``, ``perturbation_loss_log``).
  """
  margins = logits - jnp.take_along_axis(logits, y[:, None], axis=1)
  return jax.nn.logsumexp(mu * bisam_phi(margins, kind=kind, alpha=alpha), axis=1)


def bisam(*, sam_rho: float = 0.05, bisam_lower_bound_kind: str = "log", bisam_mu: float = 1.0,
          bisam_alpha: float = 0.1) -> WeightAdversary:
  """BiSAM: SAM whose ascent maximises a smooth lower bound of the 0-1 loss instead of the loss.

  The bilevel formulation: the minimiser descends the training loss (an upper bound of the 0-1
  loss) at w + v, the maximiser picks v on the rho-sphere to increase a *lower* bound
  Q = mean_i logsumexp_j(mu phi(F_ij)) (:func:`bisam_lower_bound`). As the official train step
  (LIONS-EPFL/BiSAM ``train.py``, ``utility/sam.py`` from davda54/sam):

  * the ascent forward is the training forward at w (BatchNorm in train mode, running statistics
    updated: the statistics kept are this pass's; the second pass's are discarded, as the official
    ``disable_running_stats``), on the logits the method's objective computes (the adversarial
    logits for adversarial methods, the clean ones for ``standard``);
  * v = rho grad Q / (||grad Q||_2 + 1e-12), the global norm over every parameter (``first_step``;
    weight decay is not in the ascent gradient: it lives in the base SGD);
  * the update gradient is that of the training loss at w + v, and the optimizer (coupled weight
    decay, momentum) is applied at w (``second_step`` restores w before ``base_optimizer.step()``).

  With rho = 0, v = 0 and the step is plain training's exactly.

  Differences: the official minimiser loss is label-smoothed CE (0.1); here it is the method's
  objective (plain CE for ``standard``).

  Args:
    sam_rho: rho >= 0 (official 0.05), shared with SAM.
    bisam_lower_bound_kind: ``"log"`` (official ``--optim bisam_log``, the default) or ``"tanh"``.
    bisam_mu: mu > 0 (official 1.0).
    bisam_alpha: alpha > 0, the tanh slope (official 0.1).

  Returns:
    A :class:`WeightAdversary` (no carried state).

  Example:
    >>> bisam(sam_rho=0.05).needs_input_adversary
    False
  """
  require(sam_rho >= 0, "sam_rho", "must be >= 0", sam_rho)
  require(bisam_lower_bound_kind in BISAM_LOWER_BOUNDS, "bisam_lower_bound_kind",
          f"must be one of {BISAM_LOWER_BOUNDS}", bisam_lower_bound_kind)
  require(bisam_mu > 0, "bisam_mu", "must be > 0", bisam_mu)
  require(bisam_alpha > 0, "bisam_alpha", "must be > 0", bisam_alpha)

  def gradient(loss_fn, examples, params, state, key, info):
    del key, info
    def ascent_loss(p):
      aux = loss_fn(p, examples)[1]
      q = bisam_lower_bound(aux.logits, examples.y, kind=bisam_lower_bound_kind, mu=bisam_mu,
                            alpha=bisam_alpha)
      return jnp.mean(q), aux
    (_, ascent_aux), g = jax.value_and_grad(ascent_loss, has_aux=True)(params)
    params_at, v_norm = _at(params, wp.perturbation("sam", params, g, size=sam_rho))
    (loss, aux), grads = _gradient_at(loss_fn, params_at, examples)
    aux = aux._replace(batch_stats=ascent_aux.batch_stats)
    return WeightGradient(loss, aux, grads, params, v_norm), state

  return WeightAdversary(init=_empty_init, gradient=gradient)


SampaState = wp.SampaState

WEIGHT_ADVERSARIES = Registry("weight adversary", field="weight_perturbation")
"""The weight adversaries by name (the values of ``config.weight_perturbation``)."""
WEIGHT_ADVERSARIES.register("none", none)
WEIGHT_ADVERSARIES.register("awp", awp)
WEIGHT_ADVERSARIES.register("rwp", rwp)
WEIGHT_ADVERSARIES.register("sam", sam)
WEIGHT_ADVERSARIES.register("sampa", sampa)
WEIGHT_ADVERSARIES.register("ddi", ddi)
WEIGHT_ADVERSARIES.register("bisam", bisam)
