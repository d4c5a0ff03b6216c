"""Outer objectives of adversarial training: the loss that the weights *minimise*, on logits.

Every objective has the signature

  ``objective(logits_clean, logits_adv, y, weights=None, **hyper) -> scalar``

with
* ``logits_clean``: float [B, C], the logits of the natural batch f_w(x);
* ``logits_adv``: float [B, C], the logits of the adversarial batch f_w(x');
* ``y``: int32 [B], the labels;
* ``weights``: optional float [B], per-example weights (GAIRAT's, normalised by the caller to sum
  to B).

Each objective is a batch mean of a per-example loss l_i, mean_i(l_i), or mean_i(w_i * l_i) with
weights; the reductions are those of the official code (``mean`` for cross-entropies,
``batchmean`` for KL). An objective that does not use one of the two logits accepts None there.
Nothing is detached unless stated: gradients flow into both the clean and the adversarial logits.

Objectives (the names of :data:`OBJECTIVES`):

* ``ce_clean``: standard training, CE(f(x), y).
* ``ce_adv``: Madry et al. (2018) adversarial training, CE(f(x'), y).
* ``trades``: Zhang et al. (2019), CE(f(x), y) + beta * KL(p(x) || p(x')).
* ``mart``: Wang et al. (2020), BCE(p(x'), y) + beta * KL(p(x) || p(x')) * (1 - p_y(x)).
* ``alp``, ``clp``: adversarial / clean logit pairing (Kannan et al. 2018) as in the MART paper's
  table of surrogate losses: CE(p(x'), y) or CE(p(x), y), plus lambda * ||p(x') - p(x)||_2^2.
* ``mma``: max-margin adversarial training (Ding et al. 2020) as in the MART paper's table:
  CE(p(x'), y) * 1(h(x) = y) + CE(p(x), y) * 1(h(x) != y).

:func:`gairat_weights`: GAIRAT's per-example weights (Zhang et al. 2021) from the attack's kappa.
:func:`get_objective` binds hyperparameters by name; :func:`make` wraps the result as the objective
part of the training step (:class:`OuterObjective`, which also says which logits it needs), built
from the config fields ``beta``, ``alp_weight`` and ``mma_margin``.

Auxiliary logits (:func:`with_auxiliary_logits`, :attr:`OuterObjective.auxiliary`): a model whose
training forward also returns auxiliary logits (the CIFS probes,
:func:`robust_jax.models.functional.training_forward`) is trained on
``[objective + beta / P * sum_p CE(aux_p)] * 3 / (beta + 1)``, beta = 2, the official CIFS
``joint_CE_loss`` around any objective. The probes' CE is on the batch whose logits the objective
reports: x' for every objective that reads ``logits_adv`` (PGD-AT: exactly ``joint_CE_loss``;
TRADES, MART, ALP, CLP, MMA: the probes are trained with CE on x', the adversarial batch the
objective trains on, while the objective keeps its own terms -- the official code defines CIFS with
PGD-AT's CE only, so this is the simplest extension, not a transcription), x for ``ce_clean``
(the official clean training of the CIFS network). Models without auxiliary logits are unchanged.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from robust_jax import validation
from robust_jax.parts import require
from robust_jax import losses

Objective = Callable[..., jax.Array]

# The MART code's stabilising constants (YisenWang/MART, mart.py).
_MART_ONE = 1.0001
_MART_LOG_EPS = 1e-12
_MART_WEIGHT_ONE = 1.0000001


def _check_logits(name: str, logits, y) -> None:
  if logits is None:
    raise ValueError(f"{name} is required by this objective, got None")
  if jnp.ndim(logits) != 2:
    raise ValueError(f"{name} must have shape [B, C], got {jnp.shape(logits)}")
  if jnp.shape(y) != jnp.shape(logits)[:1]:
    raise ValueError(f"y must have shape ({jnp.shape(logits)[0]},) to match {name}, got "
                     f"{jnp.shape(y)}")


def _check_weights(weights, y) -> None:
  if weights is not None and jnp.shape(weights) != jnp.shape(y):
    raise ValueError(f"weights must have shape {jnp.shape(y)} (one per example), got "
                     f"{jnp.shape(weights)}")


def _mean(per_example: jax.Array, weights: Optional[jax.Array]) -> jax.Array:
  """mean_i(l_i), or mean_i(w_i * l_i) with weights (GAIRAT's convention)."""
  if weights is None:
    return jnp.mean(per_example)
  return jnp.mean(weights * per_example)


def _squared_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.sum(jnp.square(a - b), axis=-1)


def ce_clean(logits_clean, logits_adv, y, weights=None):
  """Standard training: mean_i w_i CE(f(x_i), y_i). ``logits_adv`` is ignored (may be None).

  Args:
    logits_clean: float [B, C]; logits_adv: unused; y: int32 [B]; weights: optional float [B].

  Returns:
    The scalar loss.
  """
  del logits_adv
  _check_logits("logits_clean", logits_clean, y)
  _check_weights(weights, y)
  return _mean(losses.cross_entropy(logits_clean, y), weights)


def ce_adv(logits_clean, logits_adv, y, weights=None):
  """Madry et al. (2018) adversarial training: mean_i w_i CE(f(x'_i), y_i).

  Args:
    logits_clean: unused (may be None); logits_adv: float [B, C]; y: int32 [B];
    weights: optional float [B] (GAIRAT: mean_i(w_i CE_i) with sum_i w_i = B, as ``GAIRAT.py``).

  Returns:
    The scalar loss.
  """
  del logits_clean
  _check_logits("logits_adv", logits_adv, y)
  _check_weights(weights, y)
  return _mean(losses.cross_entropy(logits_adv, y), weights)


def trades(logits_clean, logits_adv, y, weights=None, *, beta: float = 6.0):
  """TRADES (Zhang et al., ICML 2019, eq. 5): CE(f(x), y) + beta * KL(p(x) || p(x')).

  The official ``trades_loss`` (yaodongyu/TRADES, ``trades.py``): ``F.cross_entropy(f(x), y)``
  (mean) plus ``beta / B * KLDivLoss(size_average=False)(log_softmax(f(x')), softmax(f(x)))``, i.e.
  the batch mean of the per-example KL summed over classes. The KL's target p(x) is *not* detached:
  the gradient flows through both branches, as in the official code. The KL is computed from
  log-softmax of both logits (finite where a probability underflows; equal to the official value
  elsewhere).

  Args:
    logits_clean: float [B, C], f(x). logits_adv: float [B, C], f(x'). y: int32 [B].
    weights: optional float [B]; multiplies the whole per-example loss CE_i + beta * KL_i.
    beta: the trade-off 1/lambda >= 0 (paper and CIFAR-10 script: 6; README: 1 to 10).

  Returns:
    mean_i w_i (CE(f(x_i), y_i) + beta * KL(p(x_i) || p(x'_i))).

  Raises:
    ValueError: beta < 0, or logits and labels of mismatched shapes.
  """
  validation.check_scalar("beta", beta, low=0.0)
  _check_logits("logits_clean", logits_clean, y)
  _check_logits("logits_adv", logits_adv, y)
  _check_weights(weights, y)
  per_example = (losses.cross_entropy(logits_clean, y)
                 + beta * losses.kl_divergence(logits_clean, logits_adv))
  return _mean(per_example, weights)


def mart(logits_clean, logits_adv, y, weights=None, *, beta: float = 6.0):
  """MART (Wang et al., ICLR 2020, eq. 10 and the official ``mart_loss``).

  loss = mean_i w_i [ CE(f(x'_i), y_i) - log(1.0001 - p_adv,i[yhat_i] + 1e-12)
                      + beta * KL(p_nat,i || p_adv,i) * (1.0000001 - p_nat,i[y_i]) ]

  with p = softmax(f), yhat_i = argmax_{k != y_i} p_adv,i[k] (the strongest wrong class of the
  adversarial prediction; the code's top-2 of ``argsort``), and
  KL(p_nat || p_adv) = sum_c p_nat[c] (log p_nat[c] - log(p_adv[c] + 1e-12)) (the code's
  ``KLDivLoss(reduction='none')(log(p_adv + 1e-12), p_nat)`` summed over classes). The first two
  terms are the paper's BCE(p(x'), y) = -log p_y(x') - log(1 - max_{k != y} p_k(x')); the constants
  1.0001, 1e-12 and 1.0000001 are the official code's. Nothing is detached: the gradient flows
  through p_nat inside the KL and through the weight (1 - p_nat[y]), as in the code.

  Args:
    logits_clean: float [B, C], f(x). logits_adv: float [B, C], f(x'). y: int32 [B].
    weights: optional float [B]; multiplies the whole per-example loss.
    beta: the weight of the robust term, >= 0 (WRN-34-10 script: 6; ResNet-18 script: 5).

  Returns:
    The scalar loss.

  Raises:
    ValueError: beta < 0, or mismatched shapes.
  """
  validation.check_scalar("beta", beta, low=0.0)
  _check_logits("logits_clean", logits_clean, y)
  _check_logits("logits_adv", logits_adv, y)
  _check_weights(weights, y)
  p_adv = jax.nn.softmax(logits_adv)
  log_p_nat = jax.nn.log_softmax(logits_clean)
  p_nat = jnp.exp(log_p_nat)
  true = jax.nn.one_hot(y, logits_adv.shape[-1], dtype=bool)
  p_wrong_max = jnp.max(jnp.where(true, -jnp.inf, p_adv), axis=-1)
  bce = losses.cross_entropy(logits_adv, y) - jnp.log(_MART_ONE - p_wrong_max + _MART_LOG_EPS)
  kl = jnp.sum(p_nat * (log_p_nat - jnp.log(p_adv + _MART_LOG_EPS)), axis=-1)
  p_nat_true = jnp.sum(jnp.where(true, p_nat, 0.0), axis=-1)
  return _mean(bce + beta * kl * (_MART_WEIGHT_ONE - p_nat_true), weights)


def alp(logits_clean, logits_adv, y, weights=None, *, alp_weight: float = 0.5,
        pairing: str = "probs"):
  """Adversarial logit pairing, as in the MART paper's table (seed lecture, "ALP"):

    l_i = CE(p(x'_i), y_i) + lambda * ||p(x'_i) - p(x_i)||_2^2,  p = softmax(f).

  Kannan, Kurakin and Goodfellow (2018) pair the *logits*, L(f(x), f(x')) with an L2 loss, on top of
  the adversarial-training loss; ``pairing="logits"`` uses ||f(x') - f(x)||_2^2 instead of the
  probabilities of the MART table (the default). Nothing is detached; there is no official code.

  Args:
    logits_clean: float [B, C]. logits_adv: float [B, C]. y: int32 [B]. weights: optional float [B].
    alp_weight: the pairing weight lambda >= 0.
    pairing: ``"probs"`` (the seed's table) or ``"logits"`` (Kannan et al.).

  Returns:
    mean_i w_i l_i.

  Raises:
    ValueError: alp_weight < 0, an unknown pairing, or mismatched shapes.
  """
  validation.check_scalar("alp_weight", alp_weight, low=0.0)
  validation.check_choice("pairing", pairing, ("probs", "logits"))
  _check_logits("logits_clean", logits_clean, y)
  _check_logits("logits_adv", logits_adv, y)
  _check_weights(weights, y)
  transform = jax.nn.softmax if pairing == "probs" else (lambda z: z)
  pair = _squared_distance(transform(logits_adv), transform(logits_clean))
  return _mean(losses.cross_entropy(logits_adv, y) + alp_weight * pair, weights)


def clp(logits_clean, logits_adv, y, weights=None, *, alp_weight: float = 0.5,
        pairing: str = "probs", clp_partner: str = "adversarial"):
  """Clean logit pairing, as in the MART paper's table (seed lecture, "CLP"):

    l_i = CE(p(x_i), y_i) + lambda * ||p(x'_i) - p(x_i)||_2^2,  p = softmax(f),

  i.e. ALP with the classification term on the natural input. Kannan et al. (2018) pair *two
  different clean examples* instead (no attack) and pair logits: ``clp_partner="clean"`` pairs x_i
  with x_{(i+1) mod B} of the (shuffled) clean batch, ignoring ``logits_adv`` (which may be None),
  and ``pairing="logits"`` pairs logits. Kannan et al.'s additional Gaussian input noise is the data
  pipeline's business and not modelled here.

  Args:
    logits_clean: float [B, C]. logits_adv: float [B, C], or None with ``clp_partner="clean"``.
    y: int32 [B]. weights: optional float [B].
    alp_weight: the pairing weight lambda >= 0.
    pairing: ``"probs"`` (the seed's table) or ``"logits"`` (Kannan et al.).
    clp_partner: ``"adversarial"`` (the seed's table: x'_i) or ``"clean"`` (Kannan et al.).

  Returns:
    mean_i w_i l_i.

  Raises:
    ValueError: alp_weight < 0, an unknown option, or mismatched shapes.
  """
  validation.check_scalar("alp_weight", alp_weight, low=0.0)
  validation.check_choice("pairing", pairing, ("probs", "logits"))
  validation.check_choice("clp_partner", clp_partner, ("adversarial", "clean"))
  _check_logits("logits_clean", logits_clean, y)
  _check_weights(weights, y)
  if clp_partner == "clean":
    partner = jnp.roll(logits_clean, -1, axis=0)
  else:
    _check_logits("logits_adv", logits_adv, y)
    partner = logits_adv
  transform = jax.nn.softmax if pairing == "probs" else (lambda z: z)
  pair = _squared_distance(transform(partner), transform(logits_clean))
  return _mean(losses.cross_entropy(logits_clean, y) + alp_weight * pair, weights)


def mma(logits_clean, logits_adv, y, weights=None, *, mma_margin: float = math.inf,
        mma_clean_coeff: float = 0.0):
  """Max-margin adversarial training (Ding et al., ICLR 2020), as in the MART paper's table:

    l_i = CE(p(x'_i), y_i) * 1(h(x_i) = y_i) + CE(p(x_i), y_i) * 1(h(x_i) != y_i),

  h(x) = argmax f(x): correctly classified examples are trained on their adversarial example (to
  push the decision boundary away), misclassified ones on the natural input. The indicator carries
  no gradient. Returns (1 - c) mean_i w_i l_i + c mean_i CE(f(x_i), y_i), c = ``mma_clean_coeff``.

  Simplifications against the paper and its official code (BorealisAI/mma_training, ``trainer.py``):

  * The paper finds, per example, the shortest successful perturbation with an adaptive-eps attack
    (AN-PGD, eps remembered across epochs); here x' comes from the caller's fixed-eps attack.
  * The paper's hinge max(0, d_max - d_w(x_i, y_i)) drops correctly classified examples whose margin
    already exceeds d_max (the code: ``marginloss[hinge_maxeps > curr_eps]``). Here a correct
    example contributes only while its adversarial logit margin z_y(x') - max_{k != y} z_k(x') is
    below ``mma_margin``. The default +inf keeps every correct example (the seed's formula); with
    the attack's eps = d_max, ``mma_margin=0`` is the paper's hinge (d >= d_max iff x' is correct).
  * The official code adds the clean CE with coefficient 1/3 (``clean_loss_coeff``, combining the
    two gradients as (1 - c) g_mma + c g_clean); ``mma_clean_coeff=1/3`` reproduces it, 0 (the
    default) is the seed's formula.

  Args:
    logits_clean: float [B, C]. logits_adv: float [B, C]. y: int32 [B]. weights: optional float [B].
    mma_margin: the hinge on the adversarial logit margin (+inf: none).
    mma_clean_coeff: c in [0, 1].

  Returns:
    The scalar loss.

  Raises:
    ValueError: mma_clean_coeff outside [0, 1], a NaN margin, or mismatched shapes.
  """
  validation.check_scalar("mma_margin", mma_margin)
  validation.check_scalar("mma_clean_coeff", mma_clean_coeff, low=0.0, high=1.0)
  _check_logits("logits_clean", logits_clean, y)
  _check_logits("logits_adv", logits_adv, y)
  _check_weights(weights, y)
  ce_nat = losses.cross_entropy(logits_clean, y)
  correct = jax.lax.stop_gradient(jnp.argmax(logits_clean, axis=-1) == y)
  adv_margin = jax.lax.stop_gradient(-losses.margin(logits_adv, y))
  active = correct & (adv_margin < mma_margin)
  per_example = jnp.where(correct, jnp.where(active, losses.cross_entropy(logits_adv, y), 0.0),
                          ce_nat)
  return (1.0 - mma_clean_coeff) * _mean(per_example, weights) + mma_clean_coeff * jnp.mean(ce_nat)


def gairat_weights(kappa: jax.Array, num_steps, lam, *, official_floor: bool = False) -> jax.Array:
  """GAIRAT's per-example weights (Zhang et al., ICLR 2021, eq. 7; ``GAIR.py``, "Tanh").

  omega_i = (1 + tanh(lam + 5 (1 - 2 kappa_i / K))) / 2, normalised to sum to B:
  w_i = B omega_i / sum_j omega_j, so that mean_i(w_i l_i) = sum_i omega_i l_i / sum_j omega_j.

  The official code writes 5 (floor(K/2) - kappa) / floor(K/2), identical for even K;
  ``official_floor=True`` uses it (it differs for odd K). omega is computed as sigmoid(2 z), equal
  to (1 + tanh z) / 2, which keeps tiny weights positive in float32 instead of rounding them to 0;
  if every weight still underflows, uniform weights are returned rather than 0/0. lam = +inf gives
  uniform weights (plain AT; the official ``--Lambda inf``). The weights carry no gradient.

  Args:
    kappa: int32 [B], the attack's geometry value in [0, K] (``AttackResult.kappa``).
    num_steps: K >= 1, the attack's step budget (may be traced).
    lam: lambda, a float in (-inf, +inf] (may be traced; the official default -1).
    official_floor: use the official floor(K/2) form.

  Returns:
    float32 [B], positive, summing to B; non-increasing in kappa.

  Raises:
    ValueError: (concrete values only) K < 1, lam NaN, kappa outside [0, K].
  """
  validation.check_scalar("num_steps", num_steps, low=1)
  validation.check_scalar("lam", lam)
  if validation.is_concrete(kappa) and validation.is_concrete(num_steps) and jnp.size(kappa):
    lo, hi = int(jnp.min(kappa)), int(jnp.max(kappa))
    if lo < 0 or hi > num_steps:
      raise ValueError(f"kappa must be in [0, {num_steps}] (num_steps), got values in [{lo}, {hi}]")
  k = jnp.asarray(num_steps, jnp.float32)
  kap = jnp.asarray(kappa, jnp.float32)
  if official_floor:
    half = jnp.floor(k / 2.0)
    z = lam + 5.0 * (half - kap) / half
  else:
    z = lam + 5.0 * (1.0 - 2.0 * kap / k)
  omega = jax.nn.sigmoid(2.0 * z)
  total = jnp.sum(omega)
  b = kap.shape[0]
  w = jnp.where(total > 0, omega * b / jnp.where(total > 0, total, 1.0), jnp.ones_like(omega))
  return jax.lax.stop_gradient(w)


OBJECTIVES = {
    "ce_clean": ce_clean,
    "ce_adv": ce_adv,
    "trades": trades,
    "mart": mart,
    "alp": alp,
    "clp": clp,
    "mma": mma,
}

NEEDS_CLEAN_LOGITS = frozenset({"ce_clean", "trades", "mart", "alp", "clp", "mma"})
NEEDS_ADV_LOGITS = frozenset({"ce_adv", "trades", "mart", "alp", "clp", "mma"})


_HYPER_CHECKS = {
    "beta": lambda v: validation.check_scalar("beta", v, low=0.0),
    "alp_weight": lambda v: validation.check_scalar("alp_weight", v, low=0.0),
    "pairing": lambda v: validation.check_choice("pairing", v, ("probs", "logits")),
    "clp_partner": lambda v: validation.check_choice("clp_partner", v, ("adversarial", "clean")),
    "mma_margin": lambda v: validation.check_scalar("mma_margin", v),
    "mma_clean_coeff": lambda v: validation.check_scalar("mma_clean_coeff", v, low=0.0, high=1.0),
}


def _hyperparameters(fn) -> tuple:
  return tuple(p.name for p in inspect.signature(fn).parameters.values()
               if p.kind is inspect.Parameter.KEYWORD_ONLY)


HYPERPARAMETERS = {name: _hyperparameters(fn) for name, fn in OBJECTIVES.items()}


def get_objective(name: str, **hyper) -> Objective:
  """The objective called ``name`` with its hyperparameters bound.

  Every hyperparameter must be one that some objective takes (``beta``, ``alp_weight``, ``pairing``,
  ``clp_partner``, ``mma_margin``, ``mma_clean_coeff``); those that ``name`` does not use are
  ignored, so a training step may pass all of its config's values whatever the method.

  Args:
    name: one of :data:`OBJECTIVES`.
    **hyper: hyperparameters by name.

  Returns:
    ``objective(logits_clean, logits_adv, y, weights=None) -> scalar``.

  Raises:
    ValueError: an unknown name (the valid ones are listed), an unknown hyperparameter, or a value
      out of range (e.g. ``beta < 0``).

  Example:
    >>> obj = get_objective("trades", beta=6.0, alp_weight=0.5)
    >>> z = jnp.zeros((2, 3))
    >>> float(obj(z, z, jnp.array([0, 1])))  # doctest: +ELLIPSIS
    1.0986...
  """
  if name not in OBJECTIVES:
    raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, got {name!r}")
  known = sorted({h for hs in HYPERPARAMETERS.values() for h in hs})
  unknown = sorted(set(hyper) - set(known))
  if unknown:
    raise ValueError(f"unknown objective hyperparameter(s) {unknown}; valid ones are {known}")
  bound = {k: v for k, v in hyper.items() if k in HYPERPARAMETERS[name]}
  for k, v in bound.items():
    _HYPER_CHECKS[k](v)
  return functools.partial(OBJECTIVES[name], **bound)


AUX_BETA = 2.0  # joint_CE_loss's beta in every official CIFS run (HanshuYAN/CIFS, run.sh)


def with_auxiliary_logits(loss: jax.Array, aux_logits, y: jax.Array, weights=None, *,
                          beta: float = AUX_BETA) -> jax.Array:
  """The objective plus the CE of a model's auxiliary logits, weighted as CIFS's ``joint_CE_loss``.

    [loss + beta / P * sum_p mean_i w_i CE(aux_p,i, y_i)] * 3 / (beta + 1)

  With ``loss = mean_i CE(f(x'_i), y_i)`` (PGD-AT's ``ce_adv``, no weights) this is the official
  ``joint_CE_loss`` (:func:`robust_jax.models.cifs.joint_ce_loss`) exactly; the aux logits are then
  the CIFS probes' logits on the same batch. With no auxiliary logits (P = 0, every model without a
  training hook) ``loss`` is returned itself: no operation is added, the step is unchanged.

  Args:
    loss: the objective's scalar loss.
    aux_logits: a sequence of P float [B, C] logits (a Python sequence: P is static), or ().
    y: int32 [B]. weights: optional float [B] (GAIRAT's), applied to each probe's CE as to the loss.
    beta: the probes' weight >= 0 (2, the official value; 3 / (beta + 1) is then 1).

  Returns:
    The scalar loss.

  Raises:
    ValueError: beta < 0, or logits and labels of mismatched shapes.

  Example:
    >>> z = jnp.zeros((2, 3))
    >>> float(with_auxiliary_logits(jnp.float32(1.0), [z], jnp.array([0, 1])))  # doctest: +ELLIPSIS
    3.1972...
  """
  if not aux_logits:
    return loss
  validation.check_scalar("beta", beta, low=0.0)
  _check_weights(weights, y)
  for i, a in enumerate(aux_logits):
    _check_logits(f"aux_logits[{i}]", a, y)
  probes = sum(_mean(losses.cross_entropy(a, y), weights) for a in aux_logits)
  return (loss + beta / len(aux_logits) * probes) * (3.0 / (beta + 1.0))


class OuterObjective(NamedTuple):
  """The objective part of the training step.

  Attributes:
    loss: ``(logits_clean, logits_adv, y, weights=None) -> scalar``, hyperparameters bound.
    needs_clean: whether ``loss`` reads ``logits_clean`` (the step then runs the clean batch).
    needs_adv: whether it reads ``logits_adv``.
    auxiliary: ``(loss, aux_logits, y, weights=None) -> scalar``: the loss with the CE of the
      model's auxiliary logits (:func:`with_auxiliary_logits`, beta = 2); the step passes the
      auxiliary logits of the forward pass whose logits the objective reports (of x' when it reads
      ``logits_adv``, else of x), and ``()`` for a model without them (``loss`` is then returned).
  """
  loss: Objective
  needs_clean: bool
  needs_adv: bool
  auxiliary: Callable[..., jax.Array] = with_auxiliary_logits


def make(*, name: str, beta: float = 6.0, alp_weight: float = 0.5,
         mma_margin: float = math.inf) -> OuterObjective:
  """The objective ``name`` as a part of the training step (keywords = config fields).

  Args:
    name: one of :data:`OBJECTIVES`.
    beta: TRADES / MART trade-off >= 0.
    alp_weight: ALP / CLP pairing weight lambda >= 0.
    mma_margin: MMA's margin threshold (inf = the seed's formula).

  Returns:
    An :class:`OuterObjective`.

  Example:
    >>> part = make(name="trades", beta=6.0)
    >>> part.needs_clean, part.needs_adv
    (True, True)
  """
  require(beta >= 0, "beta", "must be >= 0", beta)
  require(alp_weight >= 0, "alp_weight", "must be >= 0", alp_weight)
  fn = get_objective(name, beta=beta, alp_weight=alp_weight, mma_margin=mma_margin)
  return OuterObjective(loss=fn, needs_clean=name in NEEDS_CLEAN_LOGITS,
                        needs_adv=name in NEEDS_ADV_LOGITS)

