"""The method registry: each adversarial-training method of the seeds as a bundle of shared parts.

A method is five parts (:mod:`robust_jax.parts`): the input adversary (attack loss, start, stop
rule, budget and ascent core; :mod:`robust_jax.training.adversary`), the per-example weighting
(:mod:`robust_jax.weighting`), the outer objective (:mod:`robust_jax.objectives`), the regularizer
(:mod:`robust_jax.regularizers`) and the weight adversary (:mod:`robust_jax.weight_adversaries`,
chosen by ``config.weight_perturbation``, orthogonal to the method). A row of the table below names
the parts; :func:`build` looks each up in its registry and binds it to its own config fields.
Hyperparameters (eps, steps, beta, c_max, tau, lambda, ...) live in the config, schedules in
:mod:`robust_jax.training.schedules`; the training step (:mod:`robust_jax.training.step`) only
calls the parts.

| method      | attack loss | start   | stop  | budget      | core | weighting | objective | regularizer | paper |
|-------------|-------------|---------|-------|-------------|------|-----------|-----------|-------------|-------|
| standard    | (none)      |         |       |             |      | uniform   | ce_clean  | none        | |
| pgd_at      | ce          | uniform | never | fixed       | pgd  | uniform   | ce_adv    | none        | Madry et al. 2018 |
| dart        | ce          | uniform | fosc  | fixed       | pgd  | dart      | ce_adv    | none        | Wang et al. 2019 (Dynamic AT) |
| cat         | ce          | uniform | never | cat         | chunks | uniform | ce_adv    | none        | Cai et al. 2018 (CAT) |
| step_curriculum | ce      | uniform | never | curriculum  | pgd  | uniform   | ce_adv    | none        | (CAT's k schedule without its batch mixing) |
| fat         | ce          | uniform | fat   | fixed       | pgd  | uniform   | ce_adv    | none        | Zhang et al. 2020 |
| gairat      | ce          | uniform | never | fixed       | pgd  | gairat    | ce_adv    | none        | Zhang et al. 2021 |
| gair_fat    | ce          | uniform | fat   | fixed       | pgd  | gairat    | ce_adv    | none        | Zhang et al. 2021 |
| trades      | kl          | normal  | never | fixed       | pgd  | uniform   | trades    | none        | Zhang et al. 2019 |
| mart        | ce          | normal  | never | fixed       | pgd  | uniform   | mart      | none        | Wang et al. 2020 |
| alp         | ce          | uniform | never | fixed       | pgd  | uniform   | alp       | none        | Kannan et al. 2018 |
| clp         | ce          | uniform | never | fixed       | pgd  | uniform   | clp       | none        | Kannan et al. 2018 |
| mma         | ce          | uniform | never | fixed       | pgd  | uniform   | mma       | none        | Ding et al. 2020 |
| fat_trades  | kl          | normal  | fat   | fixed       | pgd  | uniform   | trades    | none        | Zhang et al. 2020 |
| fat_mart    | ce          | normal  | fat   | fixed       | pgd  | uniform   | mart      | none        | Zhang et al. 2020 |
| fgsm_at     | ce          | uniform | never | single_step | pgd  | uniform   | ce_adv    | none        | Wong et al. 2020 |
| gradalign   | ce          | none    | never | single_step | pgd  | uniform   | ce_adv    | gradalign   | Andriushchenko & Flammarion 2020 |
| elle        | ce          | none    | never | single_step | pgd  | uniform   | ce_adv    | elle        | Abad Rocamora et al. 2024 |
| elle_a      | ce          | none    | never | single_step | pgd  | uniform   | ce_adv    | elle_a      | Abad Rocamora et al. 2024 |
| beta_at     | margin (targeted, every class) | uniform | never | fixed | beta | uniform | ce_adv | none | Robey et al. 2023 |
| ddi         | ce (K restarts) | uniform | never | fixed     | pgd  | uniform   | ce_adv    | none        | Latorre et al. 2023 (weight adversary ``ddi``) |
| cfol        | ce          | uniform | never | fixed       | pgd  | cfol (class sampler) | ce_adv | none   | Pethick et al. 2023 |
| bisam       | (none)      |         |       |             |      | uniform   | ce_clean  | none        | Xie et al. 2024 (weight adversary ``bisam``) |

A row may name its own weight adversary (``ddi``, ``bisam``); ``config.weight_perturbation`` must
then be ``"none"`` (or that name). ``ddi`` is ``pgd_at`` whose update direction is Danskin's: the
weight adversary asks for K maximisers (``WeightAdversary.num_maximisers``) and :func:`build`
restarts the input adversary K times (:func:`robust_jax.training.ddi.restarts`), so
``weight_perturbation="ddi"`` also composes with TRADES or MART. ``bisam`` is ``standard`` with
BiSAM's ascent (``weight_perturbation="bisam"`` adds it to any method). ``cfol``'s weighting carries
the class distribution in the train state; the loop draws its batches from it
(:mod:`robust_jax.training.sampling`).

The starts are those of the official code (TRADES, MART and their FAT variants start at
x + 0.001 N(0, I); the others uniformly in the ball). ``config.attack_start`` overrides them.

CAT (``cat``) is the batch mixing of sunblaze-ucb/curriculum-adversarial-training-CAT
(``advtrain_all.py``, ``regularLoss``, lines 284-310): the batch is split into k + 1 chunks, chunk j
attacked with j PGD steps of the randomised size (2 eps / j) U(1, 10 / j) (``PGDAttack.py`` line
47), one CE step on the whole batch; ``tests/training/test_cat.py`` checks the chunks' step counts, the step
distribution and a transcription of the official loop. Its differences: k follows a fixed per-epoch
schedule (``cat_steps_boundaries`` / ``cat_steps_values``) where the official code starts at k = 0
and adds 1 when the validation accuracy (PGD-k on 16-level quantised inputs) has not improved for
10 epochs while the training accuracy is above 0.9, reloading the best checkpoint
(``validnSaveModel``, lines 337-387); the attack runs in eval mode where the official one runs each
chunk in train mode on that chunk's batch statistics, updating the running statistics as it goes
(train mode is refused, see :func:`robust_jax.training.adversary.input_adversary`); the start is
clamped to the box. ``step_curriculum`` is the method ``cat`` was before: the same k schedule
applied to the whole batch, K steps of ``step_size`` for every example.

Liu et al.'s periodic adversarial scheduling is ``pgd_at`` with a periodic eps
(``config.periodic_eps``), the step following eps_t (``attack_step_follows_eps``) and the start
within +-step_t (``attack_start="uniform_step"``), as ``PGD.adjust_threshold`` and ``PGD.attack``
of liuchen11/AdversaryLossLandscape (``launch/configs/cifar10_pas_preact18.py``;
``tests/training/test_periodic_eps.py`` transcribes them).

Fidelity: the official code each method follows, and the test that pins it (a test "fails when
changed back": each was checked by reverting the behaviour it pins).

| method / part | official code (default = paper; official switch) | pinned by |
|---|---|---|
| pgd_at | MadryLab / locuslab PGD: uniform start, sign steps, ball then box | tests/attacks/test_attacks.py (invariants, float32 + bfloat16), tests/launch/test_recipe_table.py |
| dart | YisenWang/dynamic_adv_training ``LinfPGDAttack.perturb`` (FOSC stop from step 1; ``fosc_reference="start"``: the unclipped start); ``dart_official_reweight``: CE(x_adv) weights with Keras' ``mean(l w) / mean(w != 0)`` | tests/training/test_dynamic_at.py (NumPy transcription: iterates, FOSC, stop steps) |
| cat | sunblaze-ucb/curriculum-adversarial-training-CAT ``regularLoss`` + ``perturb_true`` (chunks, randomised step); k by a fixed schedule, not the plateau rule (see above) | tests/training/test_cat.py (transcription, 0/1/2 steps for k = 2) |
| fat, fat_trades, fat_mart, gair_fat | zjfheart/Friendly-Adversarial-Training ``earlystop`` (tau counted down from the first misclassification, not reset when an example flips back) | tests/training/test_fat_transcription.py (bit-exact iterates, step counts) |
| gairat, gair_fat | zjfheart/Geometry-aware-...-Training ``GA_PGD`` kappa, ``GAIR.py`` Tanh weights, ``fixed`` lambda schedule | tests/test_objectives.py, tests/launch/test_recipe_table.py (schedule per epoch) |
| trades, mart (and FAT variants) | yaodongyu/TRADES ``trades_loss``; YisenWang/MART ``mart_loss`` (normal start 0.001) | tests/test_losses.py (NumPy transcriptions, gradients into both logits) |
| alp, clp, mma | the MART paper's table of surrogate losses (no official code) | tests/test_objectives.py (closed forms) |
| fgsm_at | locuslab/fast_adversarial ``train_fgsm.py`` (step 1.25 eps, uniform start) on its PreActResNet-18 (``preact_resnet18_fast``: shortcut on the raw input) | tests/models/test_models.py (the block against a hand computation), tests/launch/test_recipe_table.py |
| gradalign | tml-epfl/understanding-fast-adv-training ``train.py``; lambda from the recipe's eps (official; ``reg_lambda_follows_schedule`` for the scheduled eps); ``gradalign_detach_first`` the official detach; its network ``preact_resnet18_gradalign`` (no final BN-ReLU, He-normal fan-out) | tests/training/test_fast_at.py, tests/models/test_models.py |
| elle, elle_a | LIONS-EPFL/ELLE ``core/utils/train.py`` (two random endpoints; ``elle_endpoints="clean"``: the lecture's clean point and one random point); lambda calibrated by eps^4 off 32x32x3 inputs (regularizers.py says why) | tests/training/test_fast_at.py (formulas against float64 NumPy), tests/training/test_every_method.py |
| beta_at | Robey et al. 2023 (per-class targeted margin, argmax class) | tests/training/test_fast_at.py |
| awp / rwp | csdongxian/AWP ``utils_awp.py`` + ``train_cifar10.py`` (one ascent step, per layer; optimizer at w + v, torch-style coupled weight decay) | tests/training/test_training.py (AWP with weight decay and momentum against a transcription) |
| sam | google-research/sam ``get_sam_gradient`` (BN statistics of the ascent pass; L2 term inside the loss, ``sam_weight_decay="official"``; m-sharpness ``sam_m``) | tests/training/test_training.py (transcriptions of the official train step, per-device m-sharpness) |
| sampa | LIONS-EPFL/SAMPa ``train.py`` (weight decay at x_t; the paper's look-ahead) | tests/training/test_training.py |
| ddi | LIONS-EPFL/ddi_at @87353fb ``acat/jax_danskinattack.py`` (batch tiled K times, one PGD; K batch-mean gradients; Gram matrix; ``acat/jax_descentdir.py`` accelerated projected gradient, 1000 iterations; d written as the gradient, then SGD with momentum and weight decay); K = 10, ``ddi_normalize=False``; gradients in train-mode BatchNorm where the official path uses eval mode (equal without BatchNorm, the paper's setting). Recipe: ``--config=launch/configs/digits.py --config.method=ddi`` | tests/training/test_ddi.py (QP against the K = 2 closed form, scipy SLSQP and a K = 3 grid; two-maximiser descent; min-norm optimality on the MLP; K = 1 is pgd_at) |
| cfol | LIONS-EPFL/class-focused-online-learning-code @98abd59 ``cfol/class_sampler.py`` (p = gamma u + (1 - gamma) softmax(w), gamma 0.5; draws c ~ p, example uniform in c with replacement; ``batch_update`` w_y += eta 1[adv misclassified] / p_y summed over the batch; unweighted loss, ``reweight=False``); eta 5e-6 (``cmd_generator.py``, CIFAR-10). The batch of step t is drawn from p after step t - 1 (the official DataLoader lags by its prefetch). Recipe: ``--config=launch/configs/digits.py --config.method=cfol --config.cfol_eta=5e-4`` (eta scaled by the digits run's 104x fewer draws, see robust_jax/experiments/descent_and_fairness.py) | tests/training/test_cfol.py (update against a transcription of ``batch_update``; chi-square of the sampler's class and within-class frequencies; interrupted mid-epoch and resumed equals uninterrupted, bitwise) |
| bisam | LIONS-EPFL/BiSAM @be996e4 ``loss_fnc.py`` (``perturbation_loss_log`` default, ``_tanh``; mu 1, alpha 0.1), ``train.py`` + ``utility/sam.py`` (ascent pass's BatchNorm statistics kept; v = rho grad Q / ||grad Q||, no weight decay in it; SGD at w); rho = ``sam_rho`` 0.05. The official minimiser loss is label-smoothed CE (0.1); here the method's objective. Recipe: ``--config=launch/configs/digits.py --config.method=bisam`` | tests/training/test_bisam.py (Q against a NumPy transcription of ``loss_fnc.py``, phi <= 1[F > 0], the log-sum-exp bounds; the update gradient recomputed; rho = 0 is plain training, bitwise) |

Left as documented differences: CAT's plateau rule (needs k as carried state, a per-epoch PGD-k
validation and a checkpoint reload; the fixed schedule stands in), Wong et al.'s input
standardisation in the FGSM-AT recipe, SAM's gradient clipping at 5.0, SAMPa's official look-ahead
with momentum and its previous-batch gradient, Dynamic AT's Keras probability clipping (1e-7) and
learning-rate ``decay``.

Where things go (each addition touches only these files):

* a method whose parts exist: one row of ``_METHODS`` here, and a recipe in ``launch/configs/``;
* a new objective: a function in :mod:`robust_jax.objectives` and its ``OBJECTIVES`` entry;
* a new weighting, regularizer or weight adversary: a factory (keyword arguments = its config fields,
  with defaults in :func:`robust_jax.training.config.base_config`) in its family's module, or a
  module of its own, and one ``register`` call in that family's registry;
* a new stop rule or budget schedule: a factory in :mod:`robust_jax.training.adversary` and its
  ``STOP_RULES`` / ``BUDGETS`` entry.

Nothing else changes: :func:`robust_jax.training.config.validate` checks every registered part
through the part itself, and the step never names a method or a kind.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple, Optional

from robust_jax import objectives, regularizers, weighting
from robust_jax import weight_adversaries
from robust_jax.parts import EmptyState, PartStates, bind
from robust_jax.training import adversary as adversary_lib
from robust_jax.training import ddi as ddi_lib


@dataclasses.dataclass(frozen=True)
class Method:
  """One row of the method table: the names of a method's parts.

  Attributes:
    name: the config value (``config.method``).
    attack_loss: the attack loss of :mod:`robust_jax.losses`, or None for no input adversary.
    start: the default random start (``"uniform"``, ``"normal"`` or ``"none"``).
    stop: a stop rule of :data:`robust_jax.training.adversary.STOP_RULES`.
    budget: a budget of :data:`robust_jax.training.adversary.BUDGETS`.
    core: an ascent core of :data:`robust_jax.training.adversary.CORES`.
    weighting: a weighting of :data:`robust_jax.weighting.WEIGHTINGS`.
    objective: an objective of :data:`robust_jax.objectives.OBJECTIVES`.
    regularizer: a regularizer of :data:`robust_jax.regularizers.REGULARIZERS`.
    weight_adversary: the method's own weight adversary of
      :data:`robust_jax.weight_adversaries.WEIGHT_ADVERSARIES` (DDi's descent direction, BiSAM's
      ascent), or None: ``config.weight_perturbation`` chooses it.
  """
  name: str
  attack_loss: Optional[str]
  start: str = "uniform"
  stop: str = "never"
  budget: str = "fixed"
  core: str = "pgd"
  weighting: str = "uniform"
  objective: str = "ce_adv"
  regularizer: str = "none"
  weight_adversary: Optional[str] = None

  @property
  def single_step(self) -> bool:
    """FGSM-based: one step of size ``fgsm_step_factor * eps``."""
    return self.budget == "single_step"

  @property
  def gairat(self) -> bool:
    """Whether GAIRAT's kappa-based weights multiply the loss."""
    return self.weighting == "gairat"


_METHODS = (
    Method("standard", None, objective="ce_clean"),
    Method("pgd_at", "ce"),
    Method("dart", "ce", stop="fosc", weighting="dart"),
    Method("cat", "ce", budget="cat", core="chunks"),
    Method("step_curriculum", "ce", budget="curriculum"),
    Method("fat", "ce", stop="fat"),
    Method("gairat", "ce", weighting="gairat"),
    Method("gair_fat", "ce", stop="fat", weighting="gairat"),
    Method("trades", "kl", start="normal", objective="trades"),
    Method("mart", "ce", start="normal", objective="mart"),
    Method("alp", "ce", objective="alp"),
    Method("clp", "ce", objective="clp"),
    Method("mma", "ce", objective="mma"),
    Method("fat_trades", "kl", start="normal", stop="fat", objective="trades"),
    Method("fat_mart", "ce", start="normal", stop="fat", objective="mart"),
    Method("fgsm_at", "ce", budget="single_step"),
    Method("gradalign", "ce", start="none", budget="single_step", regularizer="gradalign"),
    Method("elle", "ce", start="none", budget="single_step", regularizer="elle"),
    Method("elle_a", "ce", start="none", budget="single_step", regularizer="elle_a"),
    Method("beta_at", "margin", core="beta"),
    Method("ddi", "ce", weight_adversary="ddi"),
    Method("cfol", "ce", weighting="cfol"),
    Method("bisam", None, objective="ce_clean", weight_adversary="bisam"),
)

METHODS = {m.name: m for m in _METHODS}


def get_method(name: str) -> Method:
  """The :class:`Method` called ``name``; an unknown name lists the valid ones."""
  if name not in METHODS:
    raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
  return METHODS[name]


class Bundle(NamedTuple):
  """A method's parts, bound to their config fields (what the training step calls).

  Attributes:
    input_adversary: :class:`robust_jax.training.adversary.InputAdversary`.
    weighting: :class:`robust_jax.weighting.Weighting`.
    objective: :class:`robust_jax.objectives.OuterObjective`.
    regularizer: :class:`robust_jax.regularizers.Regularizer`.
    weight_adversary: :class:`robust_jax.weight_adversaries.WeightAdversary`.
  """
  input_adversary: Any
  weighting: Any
  objective: Any
  regularizer: Any
  weight_adversary: Any

  def init(self, params) -> Any:
    """The initial :class:`robust_jax.parts.PartStates` of the carried part states
    (:class:`PartStatesWithWeighting` when the weighting carries a state, CFOL's)."""
    states = PartStates(weight_adversary=self.weight_adversary.init(params),
                        regularizer=self.regularizer.init())
    if self.weighting.stateful:
      return PartStatesWithWeighting(*states, weighting=self.weighting.init())
    return states


class PartStatesWithWeighting(NamedTuple):
  """:class:`robust_jax.parts.PartStates` plus the weighting's carried state (CFOL's class
  distribution), for the methods whose weighting has one. A separate type, so that every other
  method's train state, and its checkpoints, keep exactly the structure they had.

  Attributes:
    weight_adversary, regularizer: as :class:`robust_jax.parts.PartStates`.
    weighting: e.g. :class:`robust_jax.weighting.CfolState`.
  """
  weight_adversary: Any = EmptyState()
  regularizer: Any = EmptyState()
  weighting: Any = EmptyState()


def _input_adversary(method: Method, config: Mapping[str, Any]):
  if method.attack_loss is None:
    return adversary_lib.none()
  return bind(adversary_lib.input_adversary, config, loss=method.attack_loss,
              default_start=method.start, core=method.core,
              stop=adversary_lib.STOP_RULES.build(method.stop, config),
              budget=adversary_lib.BUDGETS.build(method.budget, config))


def build(config: Mapping[str, Any]) -> Bundle:
  """The parts of ``config.method`` (and ``config.weight_perturbation``), each bound to its fields.

  Args:
    config: the training config; each part reads only the fields its factory names.

  Returns:
    A :class:`Bundle`.

  Raises:
    ValueError: an unknown method or part, a bad field (named ``config.<field>``), or parts that do
      not compose (AWP / RWP without an input adversary).
  """
  method = get_method(config["method"])
  wpk = config["weight_perturbation"]
  if method.weight_adversary is not None and wpk not in ("none", method.weight_adversary):
    raise ValueError(
        f"config.weight_perturbation must be 'none' for config.method={method.name!r}, which has "
        f"its own weight adversary ({method.weight_adversary!r}), got {wpk!r}")
  wa_name = method.weight_adversary or wpk
  bundle = Bundle(
      input_adversary=_input_adversary(method, config),
      weighting=weighting.WEIGHTINGS.build(method.weighting, config),
      objective=bind(objectives.make, config, name=method.objective),
      regularizer=regularizers.REGULARIZERS.build(method.regularizer, config),
      weight_adversary=weight_adversaries.WEIGHT_ADVERSARIES.build(wa_name, config))
  if bundle.weight_adversary.needs_input_adversary and not bundle.input_adversary.active:
    raise ValueError(
        f"config.weight_perturbation={wa_name!r} needs the adversarial loss (AWP and RWP perturb "
        f"the weights against it, DDi takes its gradients at the maximisers); it needs an "
        f"adversarial method, not {method.name!r} (use 'sam', 'sampa' or 'bisam' for standard "
        "training)")
  k = bundle.weight_adversary.num_maximisers
  if k is not None:
    if method.weighting != "uniform":
      raise ValueError(
          f"config.weight_perturbation={wa_name!r} restarts the attack {k} times; it needs a "
          f"method without per-example weights, not {method.name!r} ({method.weighting!r})")
    bundle = bundle._replace(input_adversary=ddi_lib.restarts(bundle.input_adversary, k))
  return bundle


def check_all_parts(config: Mapping[str, Any]) -> None:
  """Builds every registered part from ``config`` (each checks its own fields), whatever the method
  uses, so that a bad value is reported before any run, as one named field."""
  for registry in (adversary_lib.STOP_RULES, adversary_lib.BUDGETS, weighting.WEIGHTINGS,
                   regularizers.REGULARIZERS, weight_adversaries.WEIGHT_ADVERSARIES):
    registry.check_all(config)
  for name in objectives.OBJECTIVES:
    bind(objectives.make, config, name=name)
  bind(adversary_lib.input_adversary, config, loss="ce", default_start="uniform",
       core="pgd", stop=adversary_lib.never(), budget=adversary_lib.fixed())
