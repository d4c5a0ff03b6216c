"""The input adversary of the training step: attack loss, start, stop rule and budget schedule.

An input adversary is built from four choices of the method table
(:mod:`robust_jax.training.methods`) and its config fields:

* the attack loss (:mod:`robust_jax.losses`: ``ce``, ``kl``, ``margin``, ...) and the random start
  (``uniform``, ``normal``, ``none``, ``uniform_step``; ``config.attack_start`` overrides the
  method's);
* a **stop rule** of :data:`STOP_RULES` (``never``; ``fosc``: Dynamic AT's FOSC <= c_t with
  c_t = max(c_max - t c_max / T', 0); ``fat``: FAT's PGD-K-tau with tau piecewise in the epoch);
* a **budget** of :data:`BUDGETS`, the steps K and step size of the epoch (``fixed``, optionally
  with the step following the scheduled eps as Liu et al.'s ``PGD.adjust_threshold``;
  ``curriculum``: K grows at given epochs, for the whole batch; ``cat``: CAT's k and base step
  2 eps; ``single_step``: K = 1, step ``fgsm_step_factor * eps``);
* the ascent **core** of :data:`CORES`: the one ascent loop (:func:`robust_jax.attacks.pgd`), CAT's
  batch mixing (``chunks``: the batch split into k + 1 chunks attacked with PGD-0 ... PGD-k, each
  with its own randomised step, :func:`cat_chunks`, :func:`cat_step_sizes`) or BETA's per-class
  targeted margin attack (:func:`robust_jax.attacks.beta_attack`).

Each stop rule and budget is a function of the step's :class:`~robust_jax.parts.StepInfo`, so
every schedule is traced and the step compiles once. The adversary attacks the model through the
``logits_fn`` the step hands it: eval-mode BatchNorm by default, batch statistics with
``attack_bn_mode="train"`` (:attr:`InputAdversary.train_mode`). Train mode is refused for attacks
that stop examples early (the ``fosc`` and ``fat`` stop rules, CAT's chunks): the stopped examples
would stay in the batch statistics of the still-moving ones while their own gradients are frozen,
which no reference code does (see :func:`input_adversary`).

The attacks that stop examples early (``fosc``, ``fat``) compact their batch as examples stop
(``attack_compaction``; :func:`robust_jax.attacks.ascent`), per device on several devices: under
``parallel.jit_data_parallel`` each device runs the loop on its own shard of the batch, from the
start drawn for the global batch (:func:`compaction_placement`, :func:`global_start`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from robust_jax import attacks
from robust_jax import fosc as fosc_lib
from robust_jax import losses
from robust_jax import parallel
from robust_jax.parts import Registry, require
from robust_jax.training import curriculum as curriculum_lib
from robust_jax.training import schedules
from robust_jax.training.curriculum import (  # noqa: F401  (re-exported)
    CAT_STEP_SPREAD, AllStop, CatPlan, StepLimitStop, cat_chunks, cat_plan, cat_step_sizes,
    uniform_step_start)

ATTACK_STARTS = ("default", "none", "uniform", "normal", "uniform_step", "radial",
                 "uniform_unclamped")
# Starts the training module makes itself (the attacks package has the others).
_OWN_STARTS = ("uniform_step", "uniform_unclamped")
NORMS = ("linf", "l2")
# The official code's reference-eps guard in ``PGD.adjust_threshold`` (Liu et al., see ``fixed``).
_ADJUST_THRESHOLD_EPS = 1e-6


class AdversaryOutput(NamedTuple):
  """What the input adversary returns to the step.

  Attributes:
    x_adv: float [B, H, W, C] adversarial inputs in the eps-ball and [0, 1] (None: no adversary).
    result: the attack's :class:`~robust_jax.attacks.AttackResult` (kappa, num_steps, fosc, ...).
    num_steps: the epoch's step budget K (int32 scalar, traced): GAIRAT's K.
    metrics: float32 scalars (and the FOSC histogram) for the step's metrics.
  """
  x_adv: Optional[jax.Array]
  result: Any
  num_steps: Any
  metrics: Dict[str, jax.Array]


class InputAdversary(NamedTuple):
  """An input adversary part.

  Attributes:
    apply: ``(logits_fn, x, y, key, info) -> AdversaryOutput``.
    train_mode: whether ``logits_fn`` should use BatchNorm's batch statistics (else eval mode).
    active: False for ``none`` (standard training): no adversarial inputs.
  """
  apply: Callable[..., AdversaryOutput]
  train_mode: bool = False
  active: bool = True


class StopRule(NamedTuple):
  """``rule(info) -> (stop rule of robust_jax.attacks or None, metrics)``; ``stops_early``: whether
  examples may stop before K steps (then the attack loop may compact the batch)."""
  rule: Callable[[Any], Tuple[Any, Dict[str, jax.Array]]]
  stops_early: bool


class Budget(NamedTuple):
  """``schedule(info) -> (K, step_size)`` for the step's attack; ``max_steps``: the largest K of the
  schedule where the budget knows it (CAT's chunks need a batch of at least k + 1 examples)."""
  schedule: Callable[[Any], Tuple[Any, Any]]
  max_steps: Optional[int] = None


# Stop rules.


def never() -> StopRule:
  """Every example takes every step (PGD)."""
  return StopRule(rule=lambda info: (None, {}), stops_early=False)


def fosc(*, fosc_c_max: float = 0.5, fosc_t_prime_fraction: float = 0.8,
         num_epochs: int = 10) -> StopRule:
  """Dynamic AT (Wang et al. 2019, eq. 6): stop once FOSC <= c_t, c_t decreasing to 0 at T'.

  Args:
    fosc_c_max: c_max >= 0 (paper 0.5).
    fosc_t_prime_fraction: T' = fraction * num_epochs, > 0 (paper 0.8).
    num_epochs: the run's length T.
  """
  require(fosc_c_max >= 0, "fosc_c_max", "must be >= 0", fosc_c_max)
  require(fosc_t_prime_fraction > 0, "fosc_t_prime_fraction", "must be > 0", fosc_t_prime_fraction)
  t_prime = fosc_t_prime_fraction * num_epochs

  def rule(info):
    c_t = schedules.dynamic_c(info.epoch, c_max=fosc_c_max, t_prime=t_prime)
    return attacks.fosc_stop(c_t), {"fosc_c": c_t}

  return StopRule(rule=rule, stops_early=True)


def fat(*, fat_tau_boundaries=(0,), fat_tau_values=(0, 0)) -> StopRule:
  """FAT (Zhang et al. 2020): stop tau steps after the first misclassification, tau piecewise
  constant in the epoch (``fat_tau_values[i]`` from epoch ``fat_tau_boundaries[i - 1]`` on).

  Args:
    fat_tau_boundaries: 0-based epochs at which the next tau starts.
    fat_tau_values: integers >= 0, one more than the boundaries.
  """
  require(len(fat_tau_values) == len(fat_tau_boundaries) + 1, "fat_tau_values",
          "needs len(fat_tau_boundaries) + 1 entries", fat_tau_values)
  require(all(int(t) == t and 0 <= t for t in fat_tau_values), "fat_tau_values",
          "must be integers >= 0", fat_tau_values)

  def rule(info):
    tau = schedules.piecewise_by_epoch(info.epoch, boundaries=tuple(fat_tau_boundaries),
                                       values=tuple(fat_tau_values), dtype=jnp.int32)
    return attacks.misclassified_stop(tau), {"fat_tau": tau}

  return StopRule(rule=rule, stops_early=True)


STOP_RULES = Registry("stop rule")
STOP_RULES.register("never", never)
STOP_RULES.register("fosc", fosc)
STOP_RULES.register("fat", fat)


# Budgets.


def _check_steps(num_steps, step_size):
  require(isinstance(num_steps, int) and num_steps >= 1, "num_steps", "must be an integer >= 1",
          num_steps)
  require(step_size > 0, "step_size", "must be > 0", step_size)


def fixed(*, num_steps: int = 10, step_size: float = 0.075,
          attack_step_follows_eps: bool = False, eps: float = 0.3) -> Budget:
  """K = ``num_steps`` steps of ``step_size`` at every epoch, or of a step that follows eps_t.

  With ``attack_step_follows_eps`` the step is rescaled with the scheduled radius eps_t
  (``info.eps``, e.g. Liu et al.'s periodic schedule) exactly as the official
  ``PGD.adjust_threshold``:

      step_t = step_size * eps_t / (eps + 1e-6),

  with ``eps`` (the config's radius, the cap of the schedule) the attack's constructor threshold
  and 1e-6 the official guard, so step_t / eps_t stays step_size / eps (2/255 at 8/255: a quarter)
  and the step is 0 when eps_t is. Pair it with ``attack_start="uniform_step"`` (the official start
  within +-step_t).

  Args:
    num_steps: K, an integer >= 1.
    step_size: > 0, the step at eps_t = eps.
    attack_step_follows_eps: rescale the step with eps_t as above.
    eps: the config's radius (read only with ``attack_step_follows_eps``), > 0.

  Returns:
    A :class:`Budget`.

  References:
    Liu et al., "On the Loss Landscape of Adversarial Training: Identifying Challenges and How to
    Overcome Them", NeurIPS 2020; liuchen11/AdversaryLossLandscape ``util/attack.py``,
    ``PGD.adjust_threshold`` (lines 73-80), called once per epoch by ``util/train.py`` line 46.
  """
  _check_steps(num_steps, step_size)
  require(isinstance(attack_step_follows_eps, bool), "attack_step_follows_eps",
          "must be True or False", attack_step_follows_eps)
  if not attack_step_follows_eps:
    return Budget(schedule=lambda info: (num_steps, step_size))
  require(eps > 0, "eps", "must be > 0", eps)
  return Budget(schedule=lambda info: (
      num_steps, step_size * info.eps / (eps + _ADJUST_THRESHOLD_EPS)))


def _check_k_schedule(boundaries, values):
  require(len(values) == len(boundaries) + 1, "cat_steps_values",
          "needs len(cat_steps_boundaries) + 1 entries", values)
  require(all(int(k) == k and k >= 0 for k in values), "cat_steps_values",
          "must be integers >= 0", values)


def _k_of_epoch(info, boundaries, values):
  return schedules.piecewise_by_epoch(info.epoch, boundaries=tuple(boundaries),
                                      values=tuple(values), dtype=jnp.int32)


def curriculum(*, cat_steps_boundaries=(), cat_steps_values=(10,),
               step_size: float = 0.075) -> Budget:
  """A per-epoch step count for the whole batch: K = ``cat_steps_values[i]`` from epoch
  ``cat_steps_boundaries[i - 1]`` on, every example K steps of ``step_size`` (the
  ``step_curriculum`` method; CAT itself is the ``cat`` budget with the ``chunks`` core).

  Args:
    cat_steps_boundaries: 0-based epochs at which K changes.
    cat_steps_values: integers >= 0, one more than the boundaries.
    step_size: > 0.

  Returns:
    A :class:`Budget`.
  """
  _check_k_schedule(cat_steps_boundaries, cat_steps_values)
  require(step_size > 0, "step_size", "must be > 0", step_size)
  return Budget(schedule=lambda info: (
      _k_of_epoch(info, cat_steps_boundaries, cat_steps_values), step_size))


def cat(*, cat_steps_boundaries=(), cat_steps_values=(10,),
        cat_step_factor: float = 2.0) -> Budget:
  """CAT's budget (Cai et al. 2018): the curriculum's k and the base step ``cat_step_factor * eps``.

  k is piecewise constant in the epoch (``cat_steps_values[i]`` from epoch
  ``cat_steps_boundaries[i - 1]`` on: the official code starts at k = 0 and adds 1 at each
  validation plateau; a fixed schedule stands for it here). The ``chunks`` core
  (:func:`cat_chunks`, :func:`cat_step_sizes`) spends it: chunk j of the k + 1 chunks of the batch
  takes j steps of (base / j) U(1, 10 / j), base = 2 eps_t in the official code (``LinfPGDAttack``
  built with ``step_size = 2 epsilon``, ``num_steps = 1``).

  Args:
    cat_steps_boundaries: 0-based epochs at which k changes.
    cat_steps_values: integers >= 0 (k per interval), one more than the boundaries. With the
      ``chunks`` core each must be below ``config.batch_size`` (k + 1 chunks of at least one
      example; :func:`input_adversary` checks it; the official code skips a batch with fewer than
      k + 1 examples).
    cat_step_factor: > 0, the base step over eps (official: 2).

  Returns:
    A :class:`Budget` whose schedule is ``(k, cat_step_factor * eps_t)``, with ``max_steps`` the
    largest k.

  References:
    Cai et al., "Curriculum Adversarial Training", IJCAI 2018;
    sunblaze-ucb/curriculum-adversarial-training-CAT ``advtrain_all.py`` lines 201-205 (eps and
    the base step 2 eps: 0.3/0.6 MNIST, 0.032/0.064 CIFAR-10, 0.047/0.094 SVHN) and 166 (k = 0 at
    the start); the plateau rule is ``validnSaveModel``, lines 337-387.
  """
  _check_k_schedule(cat_steps_boundaries, cat_steps_values)
  require(cat_step_factor > 0, "cat_step_factor", "must be > 0", cat_step_factor)
  return Budget(schedule=lambda info: (
      _k_of_epoch(info, cat_steps_boundaries, cat_steps_values), cat_step_factor * info.eps),
      max_steps=int(max(cat_steps_values)))


def single_step(*, fgsm_step_factor: float = 1.25) -> Budget:
  """FGSM-based training: one step of size ``fgsm_step_factor * eps`` (Wong et al.: 1.25)."""
  require(fgsm_step_factor > 0, "fgsm_step_factor", "must be > 0", fgsm_step_factor)
  return Budget(schedule=lambda info: (1, fgsm_step_factor * info.eps))


BUDGETS = Registry("budget")
BUDGETS.register("fixed", fixed)
BUDGETS.register("curriculum", curriculum)
BUDGETS.register("cat", cat)
BUDGETS.register("single_step", single_step)


# Ascent cores: (logits_fn, x, y, key, *, eps, step_size, num_steps, start, stop, final_eval,
# compaction, mesh) -> AttackResult. ``mesh`` (None: one device) is the data-parallel mesh over
# which a compacting core runs its loop per device (:func:`compaction_placement`).


def _ascent_from(logits_fn, x, y, x_start, loss, norm, fosc_reference, *, eps, step_size,
                 num_steps, stop, final_eval, compaction):
  """The ascent loop from a start the core made (what :func:`robust_jax.attacks.pgd` runs)."""
  clean_logits = logits_fn(x) if losses.needs_clean_logits(loss) else None
  return attacks.ascent(logits_fn, losses.get_loss(loss), x, y, x_start, eps=eps,
                        step_size=step_size, num_steps=num_steps, norm=norm, stop=stop,
                        fosc_reference=fosc_reference, clean_logits=clean_logits,
                        final_eval=final_eval, compaction=compaction)


def global_start(key, x, *, eps, step_size, norm: str, kind: str, fosc_reference: str):
  """The PGD core's start for the whole batch: the training module's own starts
  (:func:`~robust_jax.training.curriculum.start_point`) or the one :func:`robust_jax.attacks.pgd`
  draws, unclipped for ``fosc_reference="start"`` (the official Dynamic AT start).

  Drawn before the batch is split over devices, it is the one-device program's start whatever the
  mesh: a draw per device would depend on the shard's shape.
  """
  if kind in _OWN_STARTS:
    return curriculum_lib.start_point(key, x, eps=eps, step_size=step_size, norm=norm, kind=kind)
  return attacks.random_start(key, x, eps, norm, kind, project_start=fosc_reference != "start")


def _pgd_core(loss: str, norm: str, fosc_reference: str):
  def core(logits_fn, x, y, key, *, eps, step_size, num_steps, start, stop, final_eval,
           compaction, mesh=None):
    if start in _OWN_STARTS or mesh is not None:
      x_start = global_start(key, x, eps=eps, step_size=step_size, norm=norm, kind=start,
                             fosc_reference=fosc_reference)

      def ascend(x, y, x_start):
        return _ascent_from(logits_fn, x, y, x_start, loss, norm, fosc_reference, eps=eps,
                            step_size=step_size, num_steps=num_steps, stop=stop,
                            final_eval=final_eval, compaction=compaction)

      # Several devices: each runs the loop (and compacts) on its own shard of the batch.
      ascend = ascend if mesh is None else parallel.per_device(ascend, mesh)
      return ascend(x, y, x_start)
    return attacks.pgd(logits_fn, x, y, eps=eps, step_size=step_size, num_steps=num_steps,
                       norm=norm, loss=loss, start=start, key=key, stop=stop,
                       fosc_reference=fosc_reference, final_eval=final_eval,
                       compaction=compaction)
  return core


def _chunks_core(loss: str, norm: str, fosc_reference: str):
  """CAT's batch mixing in one masked ascent from :func:`cat_plan`: example i takes
  ``plan.chunks[i]`` steps of ``plan.step_sizes[i]``. With eval-mode BatchNorm every example is
  attacked independently, so this is the official per-chunk loop. Compaction is off: the loop does
  not gather per-example step sizes."""

  def core(logits_fn, x, y, key, *, eps, step_size, num_steps, start, stop, final_eval,
           compaction, mesh=None):
    del compaction, mesh
    plan = cat_plan(key, x, num_steps, eps=eps, base=step_size, norm=norm, start=start)
    limit = StepLimitStop(limits=plan.chunks)
    return _ascent_from(logits_fn, x, y, plan.x_start, loss, norm, fosc_reference, eps=eps,
                        step_size=curriculum_lib.per_example(plan.step_sizes, x), num_steps=num_steps,
                        stop=limit if stop is None else AllStop(rules=(limit, stop)),
                        final_eval=final_eval, compaction=0)
  return core


def _beta_core(loss: str, norm: str, fosc_reference: str):
  del loss, fosc_reference  # BETA ascends the per-class margin and measures no FOSC reference

  def core(logits_fn, x, y, key, *, eps, step_size, num_steps, start, stop, final_eval,
           compaction, mesh=None):
    del stop, final_eval, compaction, mesh
    return attacks.beta_attack(logits_fn, x, y, eps=eps, step_size=step_size,
                               num_steps=num_steps, norm=norm, start=start, key=key)
  return core


CORES = {"pgd": _pgd_core, "chunks": _chunks_core, "beta": _beta_core}
# Cores that stop examples before K steps by themselves (CAT's chunk j stops after j steps).
EARLY_STOPPING_CORES = ("chunks",)


def compaction_placement(levels: int) -> Tuple[int, Any]:
  """Where the attack loop of the program being traced may compact its batch.

  Args:
    levels: the compaction levels asked for (``attack_compaction``), >= 0.

  Returns:
    ``(levels, mesh)``: under a data-parallel mesh of several devices
    (:func:`robust_jax.parallel.data_mesh`, set by ``parallel.jit_data_parallel``) ``(levels,
    mesh)``, each device compacting its own shard; under a one-device mesh, or with no mesh and one
    device in the process, ``(levels, None)``, the loop compacting the batch; with no mesh and
    several devices, ``(0, None)``: the batch's placement is unknown and compacting it would gather
    it across devices.
  """
  mesh = parallel.data_mesh()
  if mesh is None:
    return (levels if jax.device_count() == 1 else 0), None
  return levels, (mesh if levels and mesh.shape[parallel.DATA_AXIS] > 1 else None)


# The adversary.


def none() -> InputAdversary:
  """No adversary (standard training): the step trains on the clean batch."""
  def apply(logits_fn, x, y, key, info):
    del logits_fn, x, y, key, info
    return AdversaryOutput(x_adv=None, result=None, num_steps=0, metrics={})
  return InputAdversary(apply=apply, active=False)


def input_adversary(*, loss: str, default_start: str, stop: StopRule, budget: Budget,
                    core: str = "pgd", norm: str = "linf", attack_start: str = "default",
                    attack_bn_mode: str = "eval", attack_compaction: int = 3,
                    fosc_reference: str = "natural", train_diagnostics: bool = True,
                    batch_size: int = 128, method: str = "") -> InputAdversary:
  """The method's attack, as a part of the step.

  Args:
    loss: the attack loss (:data:`robust_jax.losses.LOSSES`).
    default_start: the method's random start (the official code's).
    stop: a :class:`StopRule` (:data:`STOP_RULES`).
    budget: a :class:`Budget` (:data:`BUDGETS`).
    core: ``"pgd"``, ``"chunks"`` (CAT) or ``"beta"`` (:data:`CORES`).
    norm: ``"linf"`` or ``"l2"``.
    attack_start: ``"default"`` (the method's) or a start that overrides it: ``"none"``,
      ``"uniform"`` (in the ball), ``"normal"`` (x + 0.001 N(0, I)) or ``"uniform_step"``
      (U(-step, step) in the ball, Liu et al.'s official start; :func:`uniform_step_start`),
      ``"radial"`` (l2) or ``"uniform_unclamped"`` (x + U(-eps, eps) not clamped to [0, 1] before
      the first gradient: Wong et al.'s MNIST FGSM start,
      :func:`~robust_jax.training.curriculum.uniform_unclamped_start`; linf, PGD core).
    attack_bn_mode: ``"eval"`` (running statistics) or ``"train"`` (batch statistics, AT-AWP code).
      ``"train"`` is refused for attacks that stop examples early (see Raises).
    attack_compaction: how many times the loop may halve its batch as examples stop (0 = never);
      used only with a stop rule that stops examples early and eval-mode BatchNorm (trajectories
      unchanged). It is per device: under ``parallel.jit_data_parallel`` on several devices each
      device runs the loop on its own shard and halves it as its own examples stop (the random
      start is drawn for the global batch first, so it is the one-device start); in a plain
      ``jax.jit`` with several devices in the process it is off (:func:`compaction_placement`).
    fosc_reference: ``"natural"`` (paper) or ``"start"`` (Dynamic AT's official code).
    train_diagnostics: also evaluate x_adv (FOSC at x_adv, its histogram): K + 1 gradients.
    batch_size: the training batch; with CAT's ``chunks`` core it must exceed the budget's largest
      k (k + 1 chunks of at least one example).
    method: the config's method name, used only to name it in errors.

  Returns:
    An :class:`InputAdversary`; its metrics are ``attack_steps``, ``kappa``, ``stopped_early``, the
    stop rule's (``fosc_c``, ``fat_tau``) and with diagnostics ``fosc`` and the FOSC histogram.

  Raises:
    ValueError: a bad field (named); ``attack_bn_mode="train"`` with a stop rule that stops
      examples early (Dynamic AT's ``fosc``, FAT's ``fat``) or with CAT's ``chunks`` core. In train
      mode the loop forwards the whole batch at every step, so the stopped examples would stay in
      the batch statistics of the moving ones while their own gradients are frozen: no reference
      code does that (the Dynamic AT, FAT and GAIRAT attacks run in eval mode). CAT's official
      code does attack in train mode, but it runs each chunk as a batch of its own (PGD-j sees
      only chunk j's statistics; ``advtrain_all.py`` lines 290-294), which one whole-batch loop
      with a traced k cannot reproduce; CAT here attacks in eval mode, where every example is
      attacked independently and the chunked loop is the official one exactly. ``uniform_step``
      with the ``beta`` core. A batch of at most k examples with the ``chunks`` core.
  """
  require(norm in NORMS, "norm", f"must be one of {NORMS}", norm)
  require(attack_start in ATTACK_STARTS, "attack_start", f"must be one of {ATTACK_STARTS}",
          attack_start)
  require(attack_start != "radial" or norm == "l2", "attack_start",
          "'radial' (robust_overfitting's l2 start) needs config.norm='l2'", attack_start)
  require(attack_start != "uniform_unclamped" or (norm == "linf" and core == "pgd"),
          "attack_start", "'uniform_unclamped' (Wong et al.'s MNIST start) needs config.norm="
          "'linf' and the PGD core", attack_start)
  require(attack_bn_mode in ("eval", "train"), "attack_bn_mode", "must be 'eval' or 'train'",
          attack_bn_mode)
  require(isinstance(attack_compaction, int) and 0 <= attack_compaction <= 8, "attack_compaction",
          "must be an integer in [0, 8]", attack_compaction)
  require(fosc_reference in ("natural", "start"), "fosc_reference", "must be 'natural' or 'start'",
          fosc_reference)
  require(isinstance(train_diagnostics, bool), "train_diagnostics", "must be True or False",
          train_diagnostics)
  require(core in CORES, "core", f"must be one of {tuple(CORES)}", core)
  stops_early = stop.stops_early or core in EARLY_STOPPING_CORES
  why = ("chunk j of CAT's batch mixing stops after j steps" if core in EARLY_STOPPING_CORES
         else "its stop rule stops examples early")
  require(attack_bn_mode == "eval" or not stops_early, "attack_bn_mode",
          f"must be 'eval' for config.method={method!r} ({why}): in train mode the stopped "
          "examples would stay in the BatchNorm batch statistics while their gradients are "
          "frozen, which no reference code does", attack_bn_mode)
  if core in EARLY_STOPPING_CORES and budget.max_steps is not None:
    require(budget.max_steps < batch_size, "batch_size",
            f"must exceed CAT's largest k ({budget.max_steps}, config.cat_steps_values) for "
            f"config.method={method!r}: k + 1 chunks of at least one example", batch_size)
  start = default_start if attack_start == "default" else attack_start
  require(not (core == "beta" and start == "uniform_step"), "attack_start",
          "cannot be 'uniform_step' with BETA's attack", start)
  run = CORES[core](loss, norm, fosc_reference)
  # Compaction gathers the still-active examples into smaller batches: it needs examples that are
  # attacked independently (eval-mode BatchNorm); across devices each device gathers its own.
  compaction = attack_compaction if stop.stops_early and attack_bn_mode == "eval" else 0

  def apply(logits_fn, x, y, key, info):
    rule, metrics = stop.rule(info)
    k, step_size = budget.schedule(info)
    levels, mesh = compaction_placement(compaction)
    res = run(logits_fn, x, y, key, eps=info.eps, step_size=step_size, num_steps=k, start=start,
              stop=rule, final_eval=train_diagnostics, compaction=levels, mesh=mesh)
    metrics = dict(attack_steps=jnp.mean(res.num_steps), kappa=jnp.mean(res.kappa),
                   stopped_early=jnp.mean(res.num_steps < k), **metrics)
    if train_diagnostics:
      metrics["fosc"] = jnp.mean(res.fosc)
      # Counts of the per-example FOSC on fixed bins (an array metric; the loop sums it per epoch).
      metrics[fosc_lib.HIST_KEY] = fosc_lib.fosc_histogram(res.fosc)
    return AdversaryOutput(x_adv=res.x_adv, result=res, num_steps=k, metrics=metrics)

  return InputAdversary(apply=apply, train_mode=attack_bn_mode == "train")
