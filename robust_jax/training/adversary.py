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
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import flax.struct
import jax
import jax.numpy as jnp

from robust_jax import attacks
from robust_jax import fosc as fosc_lib
from robust_jax import losses
from robust_jax.parts import Registry, require
from robust_jax.training import schedules

ATTACK_STARTS = ("default", "none", "uniform", "normal", "uniform_step")
NORMS = ("linf", "l2")
# The official code's reference-eps guard in ``PGD.adjust_threshold`` (Liu et al., see ``fixed``).
_ADJUST_THRESHOLD_EPS = 1e-6
# CAT's step spread: chunk j's step is (base / j) U(1, 10 / j) (``PGDAttack.perturb_true``).
CAT_STEP_SPREAD = 10.0


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


# Per-example step limits (CAT's chunks), in the ascent loop's stop-rule protocol
# (:mod:`robust_jax.attacks`: ``init(batch_size) -> state``, ``update(k, active, info, state)``).


@flax.struct.dataclass
class StepLimitStop:
  """Stops example i once it has taken ``limits[i]`` steps; a limit of 0 never moves it.

  The loop calls ``update(k, ...)`` at the iterate x^k, after k steps and before the next, so an
  example stays active while ``k < limits[i]`` and takes exactly ``min(limits[i], K)`` steps. The
  limits are the rule's per-example state (gathered with the batch if the loop compacts it).

  Attributes:
    limits: int32 [B], the steps each example may take.

  Example:
    >>> import jax.numpy as jnp
    >>> rule = StepLimitStop(limits=jnp.array([0, 1, 2]))
    >>> active, state = rule.update(1, jnp.ones(3, bool), None, rule.init(3))
    >>> active.tolist()
    [False, False, True]
  """
  limits: jax.Array

  def init(self, batch_size: int) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(self.limits, jnp.int32), (batch_size,))

  def update(self, k, active, info, limits):
    del info
    return active & (k < limits), limits


@flax.struct.dataclass
class AllStop:
  """Several stop rules at once: an example moves while every rule keeps it (masks and-ed in order).

  Attributes:
    rules: a tuple of stop rules (each with ``init`` and ``update``).
  """
  rules: Tuple[Any, ...]

  def init(self, batch_size: int) -> Tuple[Any, ...]:
    return tuple(r.init(batch_size) for r in self.rules)

  def update(self, k, active, info, state):
    new_state = []
    for rule, s in zip(self.rules, state):
      active, s = rule.update(k, active, info, s)
      new_state.append(s)
    return active, tuple(new_state)


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


# Starts and CAT's batch layout.


def _per_example(v, like):
  """A scalar, or one value per example [B] reshaped to broadcast against ``like`` [B, ...]."""
  v = jnp.asarray(v, like.dtype)
  return v if v.ndim == 0 else v.reshape((-1,) + (1,) * (like.ndim - 1))


def uniform_step_start(key: jax.Array, x: jax.Array, *, eps, step_size,
                       norm: str = "linf") -> jax.Array:
  """Liu et al.'s start: x + U(-step, step) per coordinate, projected onto the eps-ball and the box.

  Args:
    key: PRNG key.
    x: float32 images [B, H, W, C] in [0, 1].
    eps: the radius (scalar >= 0).
    step_size: the attack's step, a scalar or one per example [B].
    norm: ``"linf"`` or ``"l2"``.

  Returns:
    The start, in the ball and the box. For linf it is the official
    ``clamp(x + clip(U(-1, 1) * step, -eps, eps), 0, 1)`` with ``U(-1, 1)`` drawn as
    ``jax.random.uniform(key, x.shape, minval=-1, maxval=1)``; for l2 the noise cube is projected
    onto the ball and the box exactly (the official code scales the noise onto the ball and then
    clamps to the box).

  References:
    liuchen11/AdversaryLossLandscape ``util/attack.py``, ``PGD.attack`` lines 93-96.
  """
  u = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
  return attacks.project(x + u * _per_example(step_size, x), x, eps, norm)


def _start(key, x, *, eps, step_size, norm, kind):
  if kind == "uniform_step":
    return uniform_step_start(key, x, eps=eps, step_size=step_size, norm=norm)
  return attacks.random_start(key, x, eps, norm, kind)


def cat_chunks(batch_size: int, k) -> jax.Array:
  """CAT's batch mixing: the chunk of each position of the batch, which is its number of PGD steps.

  The batch is split into k + 1 chunks of ``m = batch_size // (k + 1)`` consecutive examples;
  chunk j < k is positions [j m, (j + 1) m) and the last chunk, k, also takes the remainder
  (``advtrain_all.py``, ``regularLoss``, lines 287-299). Chunk 0 stays clean.

  Args:
    batch_size: B (static).
    k: the curriculum's k, an int32 scalar in [0, B - 1] (may be traced).

  Returns:
    int32 [B], the chunk j (= the steps) of each position, in [0, k].

  Example:
    >>> cat_chunks(8, 2).tolist()
    [0, 0, 1, 1, 2, 2, 2, 2]
  """
  k = jnp.asarray(k, jnp.int32)
  m = jnp.maximum(batch_size // (k + 1), 1)  # >= 1 when k < B (input_adversary checks it)
  return jnp.minimum(jnp.arange(batch_size, dtype=jnp.int32) // m, k)


def cat_step_sizes(key: jax.Array, chunks: jax.Array, base) -> jax.Array:
  """CAT's randomised steps: chunk j >= 1 takes steps of (base / j) * U(1, 10 / j), one draw per chunk.

  ``PGDAttack.perturb_true`` (line 47) draws ``(step_size * num_steps / k) *
  np.random.uniform(1, 10.0 / k)`` once per call, i.e. once per chunk, with ``step_size * num_steps
  = 2 eps``. NumPy's ``uniform(low, high)`` is ``low + (high - low) * U[0, 1)`` also when high < low
  (chunks j > 10 draw from (10 / j, 1]); that is the formula used here (``jax.random.uniform``
  with ``maxval < minval`` would clamp to ``minval``).

  Args:
    key: PRNG key.
    chunks: int32 [B], each example's chunk (:func:`cat_chunks`), in [0, B - 1].
    base: the base step (``cat_step_factor * eps``), a float scalar > 0.

  Returns:
    float32 [B], the step of each example (the same within a chunk; ``base`` for chunk 0, which
    takes no step).

  References:
    sunblaze-ucb/curriculum-adversarial-training-CAT ``PGDAttack.py`` line 47.
  """
  u = jax.random.uniform(key, chunks.shape, jnp.float32)[chunks]  # one U[0, 1) per chunk id
  j = jnp.maximum(chunks, 1).astype(jnp.float32)
  return (base / j) * (1.0 + (CAT_STEP_SPREAD / j - 1.0) * u)


class CatPlan(NamedTuple):
  """CAT's batch, laid out and drawn: what the ``chunks`` core attacks with.

  Attributes:
    chunks: int32 [B], each example's chunk j = its number of PGD steps (:func:`cat_chunks`).
    step_sizes: float32 [B], its step (:func:`cat_step_sizes`).
    x_start: float32 [B, H, W, C], its start: x for chunk 0, the random start for the others.
  """
  chunks: jax.Array
  step_sizes: jax.Array
  x_start: jax.Array


def cat_plan(key: jax.Array, x: jax.Array, k, *, eps, base, norm: str = "linf",
             start: str = "uniform") -> CatPlan:
  """The chunks, steps and starts of CAT's batch mixing for one batch (``advtrain_all.py``,
  ``regularLoss``, lines 284-299, and ``PGDAttack.perturb_true``, lines 44-81).

  Args:
    key: PRNG key; split into the start's key and the steps' key.
    x: float32 images [B, H, W, C] in [0, 1].
    k: the curriculum's k in [0, B - 1] (int32 scalar, may be traced).
    eps: the radius.
    base: the base step (``cat_step_factor * eps``; official 2 eps).
    norm: ``"linf"`` or ``"l2"``.
    start: ``"uniform"`` (official: U(-eps, eps) per coordinate), ``"none"``, ``"normal"`` or
      ``"uniform_step"`` (within +-the chunk's step).

  Returns:
    A :class:`CatPlan`. The start of chunks j >= 1 is projected onto the box like every start of
    the library (the official start is not clamped before the first gradient; it differs only for
    pixels within eps of 0 or 1); chunk 0 keeps x (the official code does not attack it).
  """
  k_start, k_step = jax.random.split(key)
  chunks = cat_chunks(x.shape[0], k)
  steps = cat_step_sizes(k_step, chunks, base)
  x_start = _start(k_start, x, eps=eps, step_size=steps, norm=norm, kind=start)
  attacked = (chunks > 0).reshape((-1,) + (1,) * (x.ndim - 1))
  return CatPlan(chunks=chunks, step_sizes=steps, x_start=jnp.where(attacked, x_start, x))


# Ascent cores: (logits_fn, x, y, key, *, eps, step_size, num_steps, start, stop, final_eval,
# compaction) -> AttackResult.


def _ascent_from(logits_fn, x, y, x_start, loss, norm, fosc_reference, *, eps, step_size,
                 num_steps, stop, final_eval, compaction):
  """The ascent loop from a start the core made (what :func:`robust_jax.attacks.pgd` runs)."""
  clean_logits = logits_fn(x) if losses.needs_clean_logits(loss) else None
  return attacks.ascent(logits_fn, losses.get_loss(loss), x, y, x_start, eps=eps,
                        step_size=step_size, num_steps=num_steps, norm=norm, stop=stop,
                        fosc_reference=fosc_reference, clean_logits=clean_logits,
                        final_eval=final_eval, compaction=compaction)


def _pgd_core(loss: str, norm: str, fosc_reference: str):
  def core(logits_fn, x, y, key, *, eps, step_size, num_steps, start, stop, final_eval,
           compaction):
    if start == "uniform_step":
      x_start = uniform_step_start(key, x, eps=eps, step_size=step_size, norm=norm)
      return _ascent_from(logits_fn, x, y, x_start, loss, norm, fosc_reference, eps=eps,
                          step_size=step_size, num_steps=num_steps, stop=stop,
                          final_eval=final_eval, compaction=compaction)
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
           compaction):
    del compaction
    plan = cat_plan(key, x, num_steps, eps=eps, base=step_size, norm=norm, start=start)
    limit = StepLimitStop(limits=plan.chunks)
    return _ascent_from(logits_fn, x, y, plan.x_start, loss, norm, fosc_reference, eps=eps,
                        step_size=_per_example(plan.step_sizes, x), num_steps=num_steps,
                        stop=limit if stop is None else AllStop(rules=(limit, stop)),
                        final_eval=final_eval, compaction=0)
  return core


def _beta_core(loss: str, norm: str, fosc_reference: str):
  del loss, fosc_reference  # BETA ascends the per-class margin and measures no FOSC reference

  def core(logits_fn, x, y, key, *, eps, step_size, num_steps, start, stop, final_eval,
           compaction):
    del stop, final_eval, compaction
    return attacks.beta_attack(logits_fn, x, y, eps=eps, step_size=step_size,
                               num_steps=num_steps, norm=norm, start=start, key=key)
  return core


CORES = {"pgd": _pgd_core, "chunks": _chunks_core, "beta": _beta_core}
# Cores that stop examples before K steps by themselves (CAT's chunk j stops after j steps).
EARLY_STOPPING_CORES = ("chunks",)


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
      (U(-step, step) in the ball, Liu et al.'s official start; :func:`uniform_step_start`).
    attack_bn_mode: ``"eval"`` (running statistics) or ``"train"`` (batch statistics, AT-AWP code).
      ``"train"`` is refused for attacks that stop examples early (see Raises).
    attack_compaction: how many times the loop may halve its batch as examples stop (0 = never);
      used only with a stop rule, eval-mode BatchNorm and one device (trajectories unchanged).
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
  # attacked independently (eval-mode BatchNorm) and, across devices, would gather the global batch.
  compaction = (attack_compaction
                if stop.stops_early and attack_bn_mode == "eval" and jax.device_count() == 1
                else 0)

  def apply(logits_fn, x, y, key, info):
    rule, metrics = stop.rule(info)
    k, step_size = budget.schedule(info)
    res = run(logits_fn, x, y, key, eps=info.eps, step_size=step_size, num_steps=k, start=start,
              stop=rule, final_eval=train_diagnostics, compaction=compaction)
    metrics = dict(attack_steps=jnp.mean(res.num_steps), kappa=jnp.mean(res.kappa),
                   stopped_early=jnp.mean(res.num_steps < k), **metrics)
    if train_diagnostics:
      metrics["fosc"] = jnp.mean(res.fosc)
      # Counts of the per-example FOSC on fixed bins (an array metric; the loop sums it per epoch).
      metrics[fosc_lib.HIST_KEY] = fosc_lib.fosc_histogram(res.fosc)
    return AdversaryOutput(x_adv=res.x_adv, result=res, num_steps=k, metrics=metrics)

  return InputAdversary(apply=apply, train_mode=attack_bn_mode == "train")
