"""Robustness evaluation: accuracy under a table of attacks, the per-example worst case, per class.

:func:`evaluate` runs every attack of a mapping ``name -> attack`` on every batch of a dataset and
reports, in the layout of the seeds' tables (Clean | FGSM | PGD-20 | PGD-100 | CW-inf | APGD-CE |
APGD-T | AA | worst class):

* the clean accuracy and each attack's robust accuracy;
* the per-example worst case over all attacks: a point is robust only if it is classified correctly
  clean and at every attack's point (the robust accuracy to report; AutoAttack's convention);
* per-class clean and worst-case robust accuracy, and the worst class;
* the wall-clock seconds of each attack (summed over batches, compilation included).

An attack is any callable ``attack(logits_fn, x, y, key)`` returning the adversarial images or a
result with an ``x_adv`` attribute (what :func:`robust_jax.attacks.make` returns), or a pair
``(name, hyperparameters)`` that :func:`evaluate` hands to :func:`robust_jax.attacks.make`, so that
a table can be plain data; :func:`default_attacks` builds the seeds' table. Accuracy is always
re-evaluated from ``x_adv``; when ``eps`` is given, a point an attack returns outside the eps-ball
or the [0, 1] box does not count as broken and is reported in ``invalid`` (trust nothing).

Batching and devices: the dataset is re-batched to exactly ``batch_size`` examples (the last batch
padded and masked), so each attack compiles once. With several local devices and a
``batch_size`` that divides by their number, each batch is placed with ``jax.device_put`` on a
``NamedSharding`` over a 1-D mesh of the local devices (data parallelism by ``jit`` with sharded
inputs); with one device the default placement is used. Pass ``jax.tree_util.Partial(apply_fn,
params)`` as ``logits_fn`` to reuse the compiled attacks across checkpoints.

Columns of one attack family report a monotone worst case (``monotone_budgets=True``, the
default). Two things can put PGD-100 above PGD-20 in a table, which a reader takes for a bug:
independent random starts (the digits demo's 65.18 against 62.95 was this: from PGD-20's own
start, PGD-100 gives 62.67 on that checkpoint), and PGD returning its last iterate, not its best, so
that PGD-100 can end correctly classified on an example that its 20th iterate broke. Columns made
by :func:`robust_jax.attacks.make` with the same name and the same hyperparameters but their
budgets (``num_steps``, ``n_iter``, ``n_queries``, ``num_restarts``, ``n_restarts``) therefore
share the random key of the family's first column, so PGD-20's 20 iterates are the first 20 of
PGD-100's (one compiled program, traced ``num_steps``, the same start), and each column reports the
per-example worst case over the family's columns of no larger budget: PGD-100 counts an example
broken if its trajectory was misclassified at step 20 or at step 100, which is what a PGD-100 that
kept its best iterate at those two checkpoints would report. A larger budget then never reports a
higher accuracy. ``attack_accuracy_single`` keeps every column on its own;
``monotone_budgets=False`` gives every column its own key (one more independent start in the
worst case over all attacks) and reports it alone.

Restarts: an attack with restarts (``pgd_restarts``, ``cw_inf``, APGD, FAB) keeps the per-example
worst case over its restarts itself (an example counts as broken if any restart breaks it); the
report records each column's restart count (``attack_restarts``) and which key it drew
(``attack_key_index``), with the key itself (``key_data``).

What ran is recorded with the numbers: the report carries the library version, the key's data and,
per attack, every hyperparameter (defaults included) of the attacks :func:`robust_jax.attacks.make`
made: the APGD variant, the budgets (``n_iter``, restarts, ``n_queries``, target classes), eps and
the norm; for AutoAttack, the hyperparameters of each of its stages
(:func:`robust_jax.attacks.autoattack_settings`). :func:`report_to_json` writes them all.

Nothing is counted that cannot be trusted: the model's output is checked before anything compiles
(one floating array [B, C], C >= 2: :func:`robust_jax.validation.check_logits_fn`), and an example
whose logits are not finite, at its clean point or at an attack's point (a NaN ``x_adv`` included),
stops the evaluation with a :class:`NonFiniteLogitsError` that names the attack and the batch,
rather than being counted correct or broken.

Progress: with ``progress=True`` a tqdm bar on stderr counts the (batch, attack) calls and shows the
attack that is running (``launch.eval`` turns it on; ``--noprogress`` turns it off).

Conventions: images float32 NHWC in [0, 1]; labels int32; a model is only ``logits_fn(x)``, which
must be deterministic (eval mode).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
import sys
import time
import types
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import NamedSharding, PartitionSpec as P

import robust_jax
from robust_jax import attacks as attacks_lib
from robust_jax import validation

AttackFn = Callable[[Callable, jax.Array, jax.Array, jax.Array], Any]
# An attack, or the (name, hyperparameters) of robust_jax.attacks.make.
AttackSpec = Union[AttackFn, tuple[str, Mapping[str, Any]]]
TABLE_COLUMNS = ("FGSM", "PGD-20", "PGD-100", "CW-inf", "APGD-CE", "APGD-T", "AA")


class NonFiniteLogitsError(ValueError):
  """``logits_fn`` returned NaN or inf logits where :func:`evaluate` would count a prediction.

  Such an example can be neither correct nor broken, so the evaluation stops instead of reporting
  a number. The message names where (clean or the attack), the batch and how many examples.
  """


@dataclasses.dataclass(frozen=True)
class EvaluationReport:
  """What :func:`evaluate` returns (plain Python values; :func:`report_to_json` serialises it).

  Attributes:
    num_examples: the number of (unmasked) examples evaluated.
    num_classes: C.
    clean_accuracy: accuracy on the natural inputs, in [0, 1].
    attack_accuracy: ``{name: accuracy}`` in the attacks' order; a point counts if it is correct
      both clean and at the attack's point.
    robust_accuracy: the per-example worst case over all attacks (the number to report).
    per_class_count: examples per class.
    per_class_clean_accuracy: clean accuracy per class (None for a class without examples).
    per_class_robust_accuracy: worst-case robust accuracy per class (None likewise).
    worst_class: the class with the lowest worst-case robust accuracy (ties: the smallest index).
    worst_class_name: its name (``class_names`` or the index as a string).
    seconds: ``{"clean": s, name: s, ...}`` wall-clock seconds, summed over batches.
    invalid: ``{name: n}`` points an attack returned outside the ball or the box (counted robust).
    eps: the radius given to :func:`evaluate`, or None.
    norm: the norm of the ball check.
    attack_settings: ``{name: {"attack": factory name, **hyperparameters}}``, every hyperparameter
      of each attack made by :func:`robust_jax.attacks.make` (defaults included; target classes
      resolved to min(9, C - 1); AutoAttack's stages under ``"stages"``), or
      ``{"attack": None}`` for an attack given as a plain callable (not recorded).
    library_version: ``robust_jax.__version__``.
    key_data: the uint32 words of the PRNG key (``jax.random.key_data``), which with the batch size
      fix every random draw of the evaluation.
    attack_accuracy_single: ``{name: accuracy}`` of each column on its own, before the monotone
      worst case over its family (equal to ``attack_accuracy`` for a column alone in its family).
    attack_nested: ``{name: [names]}``, the columns whose per-example worst case ``name`` reports
      (its family's columns of no larger budget, itself included; ``[name]`` when alone).
    attack_key_index: ``{name: j}``: on batch b the column drew ``fold_in(fold_in(key, b), j)``
      (columns of one family share their first column's j).
    attack_restarts: ``{name: R}``, the restarts whose per-example worst case the attack returns (1
      for an attack without restarts; for AutoAttack ``{stage: R}``; None for a plain callable).
    monotone_budgets: whether the family worst case was applied (None: not recorded).
  """
  num_examples: int
  num_classes: int
  clean_accuracy: float
  attack_accuracy: dict
  robust_accuracy: float
  per_class_count: list
  per_class_clean_accuracy: list
  per_class_robust_accuracy: list
  worst_class: int
  worst_class_name: str
  seconds: dict
  invalid: dict
  eps: Optional[float]
  norm: str
  attack_settings: dict = dataclasses.field(default_factory=dict)
  library_version: str = ""
  key_data: Optional[list] = None
  attack_accuracy_single: dict = dataclasses.field(default_factory=dict)
  attack_nested: dict = dataclasses.field(default_factory=dict)
  attack_key_index: dict = dataclasses.field(default_factory=dict)
  attack_restarts: dict = dataclasses.field(default_factory=dict)
  monotone_budgets: Optional[bool] = None


@dataclasses.dataclass(frozen=True)
class TransferReport:
  """What :func:`transfer` returns.

  Attributes:
    num_examples: examples evaluated.
    clean_accuracy: the target model's clean accuracy.
    source_accuracy: the source model's white-box robust accuracy on its own adversarial examples.
    transfer_accuracy: the target model's accuracy on the source's adversarial examples (correct
      both clean and adversarially, as :class:`EvaluationReport`).
    seconds: wall-clock seconds (attack and evaluation).
    attack_settings: the attack's hyperparameters, as :class:`EvaluationReport`.
    library_version: ``robust_jax.__version__``.
    key_data: the uint32 words of the PRNG key.
  """
  num_examples: int
  clean_accuracy: float
  source_accuracy: float
  transfer_accuracy: float
  seconds: float
  attack_settings: dict = dataclasses.field(default_factory=dict)
  library_version: str = ""
  key_data: Optional[list] = None


# ----------------------------------------------------------------------------------------------
# The seeds' attack table.


def default_attacks(
    eps: float,
    *,
    norm: str = "linf",
    step_size: Optional[float] = None,
    pgd_steps: Sequence[int] = (20, 100),
    cw_steps: int = 30,
    kappa: float = 50.0,
    n_iter: int = 100,
    n_queries: int = 5000,
    aa_version: str = "standard",
    fgsm_start: str = "uniform",
    apgd_variant: str = "official",
) -> dict[str, AttackFn]:
  """The seeds' evaluation table (FAT.py's "DAT protocol" plus APGD and AutoAttack).

  Every column is made by :func:`robust_jax.attacks.make`:

  * ``"FGSM"``: ``"fgsm"``, one step of size eps from a uniform random start (``fgsm_start="none"``:
    from x).
  * ``"PGD-20"``, ``"PGD-100"``: ``"pgd"``, CE, steps of ``step_size`` (default eps / 4), uniform
    random start.
  * ``"CW-inf"``: ``"cw_inf"``, ``cw_steps`` (30) steps of ``step_size``, kappa 50, uniform random
    start.
  * ``"APGD-CE"``, ``"APGD-T"``: ``"apgd_ce"`` and ``"apgd_t"`` with ``n_iter`` iterations (APGD-T
    over min(9, C - 1) targets), ``variant=apgd_variant``.
  * ``"AA"``: ``"autoattack"`` (``aa_version``, the official composition for the norm: for l2 too
    APGD-CE, APGD-T, FAB-T and Square-L2) with ``n_iter``, ``n_queries`` and ``apgd_variant``, its
    batches placed like ``x`` when ``x`` carries a ``NamedSharding``.

  Every APGD and AutoAttack column runs ``fra31/auto-attack``'s algorithm by default
  (``apgd_variant="official"``: ``autopgd_base.py``; AutoAttack's Square is ``square.py``'s);
  ``apgd_variant="paper"`` gives the paper's Condition 1 and checkpoints (see
  :func:`robust_jax.attacks.apgd`).

  Args:
    eps: the radius, > 0.
    norm: ``"linf"``, ``"l2"`` or ``"l1"`` (then the columns are APGD-CE, APGD-T and AA, the L1
      versions of Croce and Hein 2021).
    step_size: PGD and CW step size; default eps / 4.
    pgd_steps: the PGD budgets; each gives a column ``f"PGD-{k}"``.
    cw_steps: CW-inf steps.
    kappa: CW-inf confidence.
    n_iter: APGD and AutoAttack iterations (100).
    n_queries: Square's queries inside AutoAttack (5,000).
    aa_version: AutoAttack's version (``"standard"`` or ``"plus"``).
    fgsm_start: ``"uniform"`` or ``"none"``.
    apgd_variant: ``"official"`` (default) or ``"paper"``, for APGD-CE, APGD-T and AutoAttack.

  Returns:
    An ordered ``{name: attack(logits_fn, x, y, key)}``; each attack carries ``name`` and
    ``hyperparameters`` (those of :func:`robust_jax.attacks.make`), which :func:`evaluate` records.
  """
  validation.check_choice("norm", norm, ("linf", "l2", "l1"))
  validation.check_eps(eps, norm, low_open=True)
  validation.check_choice("fgsm_start", fgsm_start, ("uniform", "none"))
  validation.check_choice("apgd_variant", apgd_variant, ("official", "paper"))
  step = eps / 4.0 if step_size is None else step_size
  make = attacks_lib.make
  if norm == "l1":
    # Croce and Hein, "Mind the box" (ICML 2021): APGD-L1 and the L1 AutoAttack (no FGSM, PGD or
    # CW-inf columns: their steps are linf/l2 steps).
    return {"APGD-CE": make("apgd_ce", eps=eps, n_iter=n_iter, norm=norm, variant=apgd_variant),
            "APGD-T": make("apgd_t", eps=eps, n_iter=n_iter, norm=norm, variant=apgd_variant),
            "AA": _autoattack_column(eps, norm=norm, n_iter=n_iter, n_queries=n_queries,
                                     apgd_variant=apgd_variant, version=aa_version)}
  table = {"FGSM": make("fgsm", eps=eps, norm=norm, start=fgsm_start)}
  for k in pgd_steps:
    table[f"PGD-{k}"] = make("pgd", eps=eps, step_size=step, num_steps=k, norm=norm,
                             start="uniform")
  table["CW-inf"] = make("cw_inf", eps=eps, step_size=step, num_steps=cw_steps, kappa=kappa,
                         norm=norm)
  table["APGD-CE"] = make("apgd_ce", eps=eps, n_iter=n_iter, norm=norm, variant=apgd_variant)
  # min(9, C - 1) targets
  table["APGD-T"] = make("apgd_t", eps=eps, n_iter=n_iter, norm=norm, variant=apgd_variant)
  table["AA"] = _autoattack_column(eps, norm=norm, n_iter=n_iter, n_queries=n_queries,
                                   apgd_variant=apgd_variant, version=aa_version)
  return table


def _autoattack_column(eps, *, norm, n_iter, n_queries, apgd_variant, version):
  """AutoAttack (``version``, official composition for the norm) as a column, its batches placed
  like ``x`` when ``x`` carries a ``NamedSharding``."""
  autoattack = attacks_lib.make("autoattack", eps=eps, norm=norm, n_iter=n_iter,
                                n_queries=n_queries, apgd_variant=apgd_variant, version=version)

  def aa(logits_fn, x, y, key):
    sharding = getattr(x, "sharding", None)
    return autoattack(logits_fn, x, y, key,
                      sharding=sharding if isinstance(sharding, NamedSharding) else None)

  aa.name, aa.hyperparameters = autoattack.name, autoattack.hyperparameters
  return aa


# Columns beyond the seeds' table that ``launch.eval --attacks`` accepts (:func:`extra_attacks`).
EXTRA_COLUMNS = ("AA+", "FMN", "FAB", "DeepFool", "DDN", "CW-L2")
_L2_ONLY = ("DDN", "CW-L2")


def at_radius(attack: AttackFn, eps) -> AttackFn:
  """A minimum-norm attack as a column at radius ``eps``: its point where its distance is at most
  eps, ``x`` elsewhere (so the column's robust accuracy is ``robust_accuracy_at(distance, eps)``
  and no returned point lies outside the ball)."""
  def column(logits_fn, x, y, key):
    r = attack(logits_fn, x, y, key)
    inside = r.distance <= eps
    x_adv = jnp.where(inside.reshape((-1,) + (1,) * (x.ndim - 1)), r.x_adv, x)
    fields = dict(x_adv=x_adv, misclassified=r.misclassified & inside)
    return r._replace(**fields) if hasattr(r, "_replace") else dataclasses.replace(r, **fields)
  column.name, column.hyperparameters = attack.name, attack.hyperparameters
  return column


def extra_attacks(eps: float, names: Sequence[str], *, norm: str = "linf", n_iter: int = 100,
                  n_queries: int = 5000, apgd_variant: str = "official",
                  min_norm_steps: int = 100) -> dict[str, AttackFn]:
  """The columns of :data:`EXTRA_COLUMNS` named in ``names``, at radius ``eps``.

  * ``"AA+"``: AutoAttack ``version="plus"`` (APGD-CE, APGD-DLR, FAB, Square with 5 restarts, then
    APGD-T and FAB-T), official composition.
  * ``"FMN"`` (Pintor et al. 2021, in ``norm``), ``"DeepFool"`` (``norm``), ``"DDN"`` and
    ``"CW-L2"`` (l2 only): minimum-norm attacks (``min_norm_steps`` iterations; CW-L2 9 x
    ``min_norm_steps``), counted at ``eps`` with :func:`at_radius`.
  * ``"FAB"``: FAB in its untargeted minimum-norm mode (Croce and Hein 2020; ``early_stop=False``:
    it keeps shrinking the perturbation after crossing the boundary; ``min_norm_steps`` iterations,
    restarts scaled by ``eps``), counted at ``eps`` with :func:`at_radius`.

  Raises:
    ValueError: for an unknown name, or DDN / CW-L2 with ``norm="linf"``.
  """
  unknown = [n for n in names if n not in EXTRA_COLUMNS]
  if unknown:
    raise ValueError(f"unknown extra columns {unknown}; valid: {list(EXTRA_COLUMNS)}")
  wrong = [n for n in names if n in _L2_ONLY and norm != "l2"]
  if wrong:
    raise ValueError(f"{wrong} are l2 attacks; the evaluation's norm is {norm!r}")
  make = attacks_lib.make
  out = {}
  for n in names:
    if n == "AA+":
      out[n] = _autoattack_column(eps, norm=norm, n_iter=n_iter, n_queries=n_queries,
                                  apgd_variant=apgd_variant, version="plus")
    elif n == "FMN":
      out[n] = at_radius(make("fmn", norm=norm, steps=min_norm_steps), eps)
    elif n == "FAB":
      out[n] = at_radius(make("fab", eps=eps, norm=norm, n_iter=min_norm_steps,
                              early_stop=False), eps)
    elif n == "DeepFool":
      out[n] = at_radius(make("deepfool", norm=norm), eps)
    elif n == "DDN":
      out[n] = at_radius(make("ddn", steps=min_norm_steps), eps)
    else:
      out[n] = at_radius(make("cw_l2", max_iterations=min_norm_steps), eps)
  return out


def _jsonable(v):
  """A JSON-serialisable copy of a hyperparameter value (tuples as lists, NamedTuples as dicts,
  arrays as lists, anything else by its repr)."""
  if v is None or isinstance(v, (bool, int, float, str)):
    return v
  if isinstance(v, tuple) and hasattr(v, "_asdict"):
    return {k: _jsonable(u) for k, u in v._asdict().items()}
  if isinstance(v, (tuple, list)):
    return [_jsonable(u) for u in v]
  if isinstance(v, Mapping):
    return {str(k): _jsonable(u) for k, u in v.items()}
  if isinstance(v, (np.ndarray, jax.Array, np.generic)):
    return np.asarray(v).tolist()
  return repr(v)


def attack_settings(attack: AttackFn, num_classes: Optional[int] = None) -> dict:
  """Every hyperparameter of an attack of :func:`robust_jax.attacks.make`, defaults included.

  Args:
    attack: an attack carrying ``name`` and ``hyperparameters`` (what ``make`` returns, and every
      entry of :func:`default_attacks`); any other callable gives ``{"attack": None}``.
    num_classes: C, to resolve the default ``n_target_classes`` min(9, C - 1).

  Returns:
    ``{"attack": name, **hyperparameters}``, JSON-serialisable; for ``"autoattack"`` also
    ``"stages"``, the settings of each stage (:func:`robust_jax.attacks.autoattack_settings`).

  Example:
    >>> s = attack_settings(attacks_lib.make("apgd_t", eps=0.1), num_classes=10)
    >>> s["attack"], s["variant"], s["n_iter"], s["n_target_classes"], s["n_restarts"]
    ('apgd_t', 'paper', 100, 9, 1)
  """
  name = getattr(attack, "name", None)
  bound = getattr(attack, "hyperparameters", None)
  if name not in attacks_lib.NAMES or bound is None:
    return {"attack": None}
  defaults = {k: v for k, v in attacks_lib.hyperparameter_defaults(name).items()
              if v is not inspect.Parameter.empty}
  out = {**defaults, **bound}
  if out.get("n_target_classes", 0) is None and num_classes is not None and name in (
      "apgd_t", "fab_t", "autoattack"):
    out["n_target_classes"] = min(9, num_classes - 1)
  if name == "autoattack":
    out["stages"] = attacks_lib.autoattack_settings(**out, num_classes=num_classes)
  return {"attack": name, **{k: _jsonable(v) for k, v in out.items()}}


def _as_attack(name: str, attack: AttackSpec) -> AttackFn:
  """An attack callable from a callable or from ``(name, hyperparameters)`` of the factory."""
  if callable(attack):
    return attack
  if isinstance(attack, (tuple, list)) and len(attack) == 2 and isinstance(attack[1], Mapping):
    return attacks_lib.make(attack[0], **attack[1])
  raise ValueError(f"attack {name!r} must be a callable attack(logits_fn, x, y, key) or a pair "
                   f"(name, hyperparameters) of robust_jax.attacks.make, got {attack!r}")


# The hyperparameters that are an attack's budget: a family's columns differ only in them.
BUDGET_HYPERPARAMETERS = ("num_steps", "n_iter", "n_queries", "num_restarts", "n_restarts")


def _no_larger(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
  """Whether budget ``a`` is componentwise at most budget ``b`` (None only matches None)."""
  for k in set(a) | set(b):
    u, v = a.get(k), b.get(k)
    if u is None or v is None:
      if u is not v:
        return False
    elif not u <= v:
      return False
  return True


def budget_families(settings: Mapping[str, Mapping[str, Any]]) -> tuple[dict, dict]:
  """The attack families of a table: which key each column draws, whose worst case it reports.

  Two columns are of one family when :func:`attack_settings` gives both the same factory name and
  the same hyperparameters apart from :data:`BUDGET_HYPERPARAMETERS` (and AutoAttack's derived
  ``"stages"``); a plain callable (``{"attack": None}``) is a family of its own.

  Args:
    settings: ``{column: attack_settings(attack)}``, in the table's order.

  Returns:
    ``(key_index, nested)``: ``key_index[name]`` is the index of the family's first column (the
    attack key :func:`evaluate` folds in), ``nested[name]`` the family's columns, in table order,
    whose budgets are all at most ``name``'s (``name`` included).

  Example:
    >>> table = default_attacks(0.1, pgd_steps=(20, 100))
    >>> key_index, nested = budget_families({k: attack_settings(a) for k, a in table.items()})
    >>> key_index["PGD-20"], key_index["PGD-100"], key_index["CW-inf"]
    (1, 1, 3)
    >>> nested["PGD-100"], nested["PGD-20"], nested["FGSM"]
    (['PGD-20', 'PGD-100'], ['PGD-20'], ['FGSM'])
  """
  names = list(settings)
  ident, budget = {}, {}
  for j, name in enumerate(names):
    s = settings[name]
    if s.get("attack") is None:
      ident[name] = ("callable", j)
    else:
      rest = {k: v for k, v in s.items() if k not in BUDGET_HYPERPARAMETERS and k != "stages"}
      ident[name] = json.dumps(rest, sort_keys=True, default=repr)
    budget[name] = {k: s[k] for k in BUDGET_HYPERPARAMETERS if k in s}
  key_index = {name: next(i for i, m in enumerate(names) if ident[m] == ident[name])
               for name in names}
  nested = {name: [m for m in names if ident[m] == ident[name] and _no_larger(budget[m],
                                                                             budget[name])]
            for name in names}
  return key_index, nested


def _restarts(settings: Mapping[str, Any]):
  """The restart count of an attack's settings (AutoAttack: per stage; None: unknown)."""
  if settings.get("attack") is None:
    return None
  if "stages" in settings:
    return {stage: s.get("n_restarts", s.get("num_restarts", 1))
            for stage, s in settings["stages"].items()}
  r = settings.get("num_restarts", settings.get("n_restarts", 1))
  return 1 if r is None else r


# ----------------------------------------------------------------------------------------------
# Data.


def _as_arrays(item) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  if isinstance(item, Mapping):
    x, y = item["image"], item["label"]
    mask = item.get("mask")
  elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
    x, y = item[0], item[1]
    mask = item[2] if len(item) == 3 else None
  else:
    raise ValueError("each dataset element must be a dict {'image', 'label'[, 'mask']} or a tuple "
                     f"(x, y[, mask]), got {type(item).__name__}")
  x = np.asarray(x, np.float32)
  y = np.asarray(y)
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"labels must be integers, got dtype {y.dtype}")
  y = y.astype(np.int32)
  mask = np.ones(y.shape[0], bool) if mask is None else np.asarray(mask).astype(bool)
  if x.ndim < 2 or x.shape[0] != y.shape[0] or mask.shape != y.shape:
    raise ValueError(f"image, label and mask must share the leading batch axis, got shapes "
                     f"{x.shape}, {y.shape}, {mask.shape}")
  return x, y, mask


def _is_full_arrays(dataset) -> bool:
  if isinstance(dataset, Mapping):
    return True
  return (isinstance(dataset, tuple) and len(dataset) in (2, 3)
          and all(hasattr(a, "shape") for a in dataset) and np.ndim(dataset[1]) == 1)


def _batches(dataset, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Re-batches ``dataset`` to exactly ``batch_size`` examples; the last batch is padded, masked."""
  items: Iterable = [dataset] if _is_full_arrays(dataset) else dataset
  buf_x, buf_y, buf_m, held = [], [], [], 0
  for item in items:
    x, y, m = _as_arrays(item)
    buf_x.append(x)
    buf_y.append(y)
    buf_m.append(m)
    held += y.shape[0]
    while held >= batch_size:
      x_all, y_all, m_all = (np.concatenate(b) for b in (buf_x, buf_y, buf_m))
      yield x_all[:batch_size], y_all[:batch_size], m_all[:batch_size]
      buf_x, buf_y, buf_m = [x_all[batch_size:]], [y_all[batch_size:]], [m_all[batch_size:]]
      held -= batch_size
  if held:
    x_all, y_all, m_all = (np.concatenate(b) for b in (buf_x, buf_y, buf_m))
    pad = batch_size - held
    yield (np.concatenate([x_all, np.repeat(x_all[:1], pad, 0)]),
           np.concatenate([y_all, np.repeat(y_all[:1], pad, 0)]),
           np.concatenate([m_all, np.zeros(pad, bool)]))


def _sharding(batch_size: int):
  """A batch sharding over the local devices; None (default placement) for one device or when the
  batch does not divide (a one-device NamedSharding would only change the jit cache key)."""
  devices = jax.local_devices()
  if len(devices) == 1 or batch_size % len(devices):
    return None
  mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
  return NamedSharding(mesh, P("data"))


def _put(a, sharding):
  return jax.device_put(a, sharding) if sharding is not None else jnp.asarray(a)


def _key_data(key) -> list:
  """The uint32 words of a typed or raw PRNG key, as a list (for the record)."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.asarray(key).reshape(-1).tolist()


def _predict(logits_fn, x):
  """``(argmax [B], finite [B])``: the prediction and whether every logit (and input) is finite."""
  logits = logits_fn(x)
  finite = jnp.all(jnp.isfinite(logits), axis=-1) & jnp.all(
      jnp.isfinite(x.reshape(x.shape[0], -1)), axis=-1)
  return jnp.argmax(logits, axis=-1), finite


def _checked_predict(predict_fn, x, mask, *, where: str, batch: int) -> np.ndarray:
  """The predictions at ``x``; raises :class:`NonFiniteLogitsError` for a non-finite example."""
  pred, finite = _predict_jit(predict_fn, x)
  bad = int(np.sum(~np.asarray(finite) & mask))
  if bad:
    raise NonFiniteLogitsError(
        f"logits_fn returned non-finite logits (NaN or inf) {where} for {bad} of "
        f"{int(mask.sum())} examples of batch {batch}; evaluate refuses to count them (an accuracy "
        "over NaN predictions would be wrong). Check the model and its inputs.")
  return np.asarray(pred)


def _num_batches(dataset, batch_size: int) -> Optional[int]:
  """How many batches :func:`_batches` yields, when it can be told without reading the data."""
  try:
    if _is_full_arrays(dataset):
      n = len(dataset["label"] if isinstance(dataset, Mapping) else dataset[1])
    elif isinstance(dataset, (list, tuple)):
      n = sum(len(item["label"] if isinstance(item, Mapping) else item[1]) for item in dataset)
    else:
      return None
  except (KeyError, TypeError, ValueError):
    return None
  return math.ceil(n / batch_size)


_predict_jit = jax.jit(_predict)


def _x_adv(result):
  return result.x_adv if hasattr(result, "x_adv") else result


def _valid(x_adv: np.ndarray, x: np.ndarray, eps, norm) -> np.ndarray:
  """Points in the eps-ball around x and in [0, 1] (float32 slack)."""
  flat_a = x_adv.reshape(x.shape[0], -1)
  d = flat_a.astype(np.float64) - x.reshape(x.shape[0], -1)
  dist = {"linf": lambda: np.abs(d).max(1), "l2": lambda: np.sqrt((d * d).sum(1)),
          "l1": lambda: np.abs(d).sum(1)}[norm]()
  return (dist <= eps * (1 + 1e-5) + 1e-6) & (flat_a.min(1) >= 0) & (flat_a.max(1) <= 1)


# ----------------------------------------------------------------------------------------------
# Evaluation.


def evaluate(
    logits_fn: Callable[[jax.Array], jax.Array],
    dataset,
    attacks: Optional[Mapping[str, AttackSpec]] = None,
    *,
    batch_size: int,
    key: jax.Array,
    eps: Optional[float] = None,
    norm: str = "linf",
    class_names: Optional[Sequence[str]] = None,
    verbose: bool = False,
    progress: bool = False,
    monotone_budgets: bool = True,
) -> EvaluationReport:
  """Evaluates ``logits_fn`` under every attack of ``attacks``, batch by batch.

  Args:
    logits_fn: ``x -> logits`` [B, C], deterministic.
    dataset: an iterable of batches, each a dict ``{"image", "label"[, "mask"]}`` or a tuple
      ``(x, y[, mask])``, or one such dict / tuple of full arrays. Masked-out examples are ignored.
    attacks: ``{name: attack(logits_fn, x, y, key)}``, e.g. :func:`default_attacks`, or
      ``{name: (attack name, hyperparameters)}`` of :func:`robust_jax.attacks.make` (made, and so
      validated, before the first batch); None: clean accuracy only.
    batch_size: examples per attack call, >= 1 (the data are re-batched to it).
    key: PRNG key; batch b and attack j use ``fold_in(fold_in(key, b), j)``, j the index of the
      attack's column, or with ``monotone_budgets`` that of its family's first column
      (:func:`budget_families`).
    eps: optional radius of the validity check (points outside the ball or the box never count as
      broken); pass the attacks' eps.
    norm: ``"linf"`` or ``"l2"``, for the validity check.
    class_names: optional names of the C classes, for ``worst_class_name``.
    verbose: print one line per batch.
    progress: show a tqdm progress bar on stderr, one tick per (batch, attack), with the name of
      the attack that is running.
    monotone_budgets: True (default): the columns of one attack family (the same attack and
      hyperparameters but the budgets, e.g. PGD-20 and PGD-100) share their random key, and each
      reports the per-example worst case over the family's columns of no larger budget, so that
      ``attack_accuracy`` never rises with the budget within a family (see the module docstring).
      False: every column draws its own key and is reported alone.

  Returns:
    An :class:`EvaluationReport`. Invariants (tested): within a family a larger budget reports no
    higher accuracy; a column's accuracy is the mean over examples of the AND of its nested
    columns' single results; an attack with R restarts reports an example robust iff it survives
    every restart.

  Raises:
    ValueError: on a bad argument, malformed data or a ``logits_fn`` whose output is not [B, C]
      floating logits (checked abstractly before the first batch).
    NonFiniteLogitsError: when the logits of an example are NaN or inf, clean or at an attack's
      point (a subclass of ValueError).
  """
  validation.check_scalar("batch_size", batch_size, low=1, integer=True)
  validation.check_choice("norm", norm, ("linf", "l2", "l1"))
  if eps is not None:
    validation.check_eps(eps, norm)
  validation.check_key(key, needed_by="evaluate")
  attacks = {name: _as_attack(name, a) for name, a in (attacks or {}).items()}
  if monotone_budgets:  # the families do not depend on C, which is known after the first batch
    key_index, nested = budget_families({name: attack_settings(a) for name, a in attacks.items()})
  else:
    key_index = {name: j for j, name in enumerate(attacks)}
    nested = {name: [name] for name in attacks}
  predict_fn = attacks_lib.as_pytree_fn(logits_fn)  # traced parameters: no recompilation per model
  sharding = _sharding(batch_size)
  labels, masks, clean = [], [], []
  robust = {name: [] for name in attacks}
  seconds = {"clean": 0.0, **{name: 0.0 for name in attacks}}
  invalid = {name: 0 for name in attacks}
  num_classes = None
  num_batches = _num_batches(dataset, batch_size)
  bar = tqdm.tqdm(total=None if num_batches is None else num_batches * max(len(attacks), 1),
                  desc="evaluate", unit="call", file=sys.stderr, disable=not progress,
                  dynamic_ncols=True, leave=True)
  for b, (x, y, m) in enumerate(_batches(dataset, batch_size)):
    validation.check_images("image", x)
    xb, yb = _put(x, sharding), _put(y, sharding)
    if num_classes is None:
      num_classes = validation.num_classes(logits_fn, x)
    validation.check_labels("label", y, x.shape[0], num_classes)
    batch_txt = f"batch {b + 1}/{num_batches or '?'}"
    bar.set_description(f"evaluate clean, {batch_txt}")
    t0 = time.perf_counter()
    ok = _checked_predict(predict_fn, xb, m, where="at the clean inputs", batch=b) == y
    seconds["clean"] += time.perf_counter() - t0
    if not attacks:
      bar.update(1)
    labels.append(y)
    masks.append(m)
    clean.append(ok)
    key_b = jax.random.fold_in(key, b)
    for name, attack in attacks.items():
      bar.set_description(f"evaluate {name}, {batch_txt}")
      t0 = time.perf_counter()
      x_adv = _x_adv(attack(logits_fn, xb, yb, jax.random.fold_in(key_b, key_index[name])))
      pred = _checked_predict(predict_fn, x_adv, m, where=f"at the points of attack {name!r}",
                              batch=b)
      seconds[name] += time.perf_counter() - t0
      bar.update(1)
      correct = pred == y
      if eps is not None:
        valid = _valid(np.asarray(x_adv), x, eps, norm)
        invalid[name] += int((~valid & m).sum())
        correct |= ~valid
      robust[name].append(ok & correct)
    if verbose:
      accs = " ".join(f"{n}={np.mean(r[-1][m]):.3f}" for n, r in robust.items())
      bar.write(f"evaluate: batch {b} clean={np.mean(ok[m]):.3f} {accs}", file=sys.stdout)
  bar.close()
  if num_classes is None:
    raise ValueError("dataset is empty")
  mask = np.concatenate(masks)
  y_all = np.concatenate(labels)[mask]
  clean_all = np.concatenate(clean)[mask]
  single = {name: np.concatenate(r)[mask] for name, r in robust.items()}
  per_attack = {name: np.logical_and.reduce([single[m] for m in nested[name]])
                for name in attacks}
  worst = clean_all.copy()
  for r in single.values():
    worst &= r
  n = int(mask.sum())
  if n == 0:
    raise ValueError("every example of dataset is masked out")
  counts, clean_c, robust_c = [], [], []
  for c in range(num_classes):
    sel = y_all == c
    counts.append(int(sel.sum()))
    clean_c.append(float(clean_all[sel].mean()) if sel.any() else None)
    robust_c.append(float(worst[sel].mean()) if sel.any() else None)
  present = [c for c in range(num_classes) if counts[c]]
  worst_class = min(present, key=lambda c: (robust_c[c], c))
  names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
  if len(names) != num_classes:
    raise ValueError(f"class_names must have {num_classes} entries, got {len(names)}")
  settings = {name: attack_settings(a, num_classes) for name, a in attacks.items()}
  return EvaluationReport(
      num_examples=n, num_classes=num_classes, clean_accuracy=float(clean_all.mean()),
      attack_accuracy={name: float(r.mean()) for name, r in per_attack.items()},
      robust_accuracy=float(worst.mean()), per_class_count=counts,
      per_class_clean_accuracy=clean_c, per_class_robust_accuracy=robust_c,
      worst_class=int(worst_class), worst_class_name=names[worst_class],
      seconds={k: float(v) for k, v in seconds.items()}, invalid=invalid,
      eps=None if eps is None else float(eps), norm=norm,
      attack_settings=settings,
      library_version=robust_jax.__version__, key_data=_key_data(key),
      attack_accuracy_single={name: float(r.mean()) for name, r in single.items()},
      attack_nested={name: list(v) for name, v in nested.items()},
      attack_key_index=dict(key_index),
      attack_restarts={name: _restarts(s) for name, s in settings.items()},
      monotone_budgets=bool(monotone_budgets))


def transfer(
    source_logits_fn: Callable[[jax.Array], jax.Array],
    target_logits_fn: Callable[[jax.Array], jax.Array],
    dataset,
    attack: AttackSpec,
    *,
    batch_size: int,
    key: jax.Array,
) -> TransferReport:
  """Transfer attack: adversarial examples crafted on the source model, evaluated on the target.

  Args:
    source_logits_fn: the model the attack sees.
    target_logits_fn: the model that is evaluated.
    dataset: as :func:`evaluate`.
    attack: ``attack(logits_fn, x, y, key)`` (e.g. an entry of :func:`default_attacks`) or
      ``(attack name, hyperparameters)`` of :func:`robust_jax.attacks.make`.
    batch_size: examples per call.
    key: PRNG key; the attack on batch b gets ``fold_in(fold_in(key, b), 0)``, the key
      :func:`evaluate` gives its first attack, so the two agree for the same key and batch size.

  Returns:
    A :class:`TransferReport`. With ``source_logits_fn is target_logits_fn`` the transfer accuracy
    equals the source's white-box accuracy.
  """
  validation.check_scalar("batch_size", batch_size, low=1, integer=True)
  validation.check_key(key, needed_by="transfer")
  attack = _as_attack("attack", attack)
  sharding = _sharding(batch_size)
  source_fn = attacks_lib.as_pytree_fn(source_logits_fn)
  target_fn = attacks_lib.as_pytree_fn(target_logits_fn)
  t0 = time.perf_counter()
  tot = clean_t = src = tgt = 0
  for b, (x, y, m) in enumerate(_batches(dataset, batch_size)):
    validation.check_images("image", x)
    xb, yb = _put(x, sharding), _put(y, sharding)
    x_adv = _x_adv(attack(source_logits_fn, xb, yb,
                          jax.random.fold_in(jax.random.fold_in(key, b), 0)))
    ok_s = _checked_predict(source_fn, xb, m, where="of the source model", batch=b) == y
    ok_t = _checked_predict(target_fn, xb, m, where="of the target model", batch=b) == y
    adv_s = _checked_predict(source_fn, x_adv, m, where="of the source model at the attack's "
                             "points", batch=b) == y
    adv_t = _checked_predict(target_fn, x_adv, m, where="of the target model at the attack's "
                             "points", batch=b) == y
    tot += int(m.sum())
    clean_t += int((ok_t & m).sum())
    src += int((ok_s & adv_s & m).sum())
    tgt += int((ok_t & adv_t & m).sum())
  if tot == 0:
    raise ValueError("dataset is empty or fully masked")
  return TransferReport(num_examples=tot, clean_accuracy=clean_t / tot, source_accuracy=src / tot,
                        transfer_accuracy=tgt / tot, seconds=time.perf_counter() - t0,
                        attack_settings=attack_settings(attack),
                        library_version=robust_jax.__version__, key_data=_key_data(key))


# ----------------------------------------------------------------------------------------------
# Report files: one per suite.

# The full default suite of ``launch.eval``, whose report files carry no suffix.
SUITE_DEFAULTS = types.MappingProxyType(dict(
    split="test", num_examples=0, n_iter=100, n_queries=5000, seed=0, apgd_variant="official",
    attacks=TABLE_COLUMNS))


def suite_name(which: str, *, attacks: Sequence[str], split: str, num_examples: int, eps: float,
               training_eps: float, n_iter: int, n_queries: int, seed: int,
               apgd_variant: str) -> str:
  """The report file stem of an evaluation suite: ``eval_<which>`` plus every difference.

  The full default suite (every column of :data:`TABLE_COLUMNS`, the whole test split, the
  training eps, :data:`SUITE_DEFAULTS`' budgets and seed) is ``eval_<which>``; any other suite
  adds one suffix per difference, so that a partial run never replaces a fuller report, and two
  runs of one suite share their files. Budgets that no chosen column uses are not named.

  Args:
    which: the checkpoint, ``"best"`` or ``"latest"``.
    attacks: the column names, in order.
    split: the data split.
    num_examples: the prefix of the split (0: the whole split).
    eps: the radius evaluated; training_eps: the run's own.
    n_iter, n_queries, seed, apgd_variant: as :func:`default_attacks` and :func:`evaluate`.

  Returns:
    A file name stem of letters, digits and ``_.+-``.

  Example:
    >>> suite_name("best", attacks=TABLE_COLUMNS, split="test", num_examples=0, eps=0.3,
    ...            training_eps=0.3, n_iter=100, n_queries=5000, seed=0, apgd_variant="official")
    'eval_best'
    >>> suite_name("best", attacks=["FGSM"], split="test", num_examples=50, eps=0.1,
    ...            training_eps=0.2, n_iter=100, n_queries=5000, seed=0, apgd_variant="official")
    'eval_best_FGSM_eps0.1_n50'
  """
  d = SUITE_DEFAULTS
  parts = [f"eval_{which}"]
  if split != d["split"]:
    parts.append(split)
  if tuple(attacks) != tuple(d["attacks"]):
    parts.append("+".join(attacks))
  if float(eps) != float(training_eps):
    parts.append(f"eps{eps:g}")
  if num_examples:
    parts.append(f"n{num_examples}")
  uses_apgd = any(a in ("APGD-CE", "APGD-T", "AA") for a in attacks)
  if n_iter != d["n_iter"] and uses_apgd:
    parts.append(f"iter{n_iter}")
  if n_queries != d["n_queries"] and "AA" in attacks:
    parts.append(f"q{n_queries}")
  if apgd_variant != d["apgd_variant"] and uses_apgd:
    parts.append(f"apgd-{apgd_variant}")
  if seed != d["seed"]:
    parts.append(f"seed{seed}")
  return re.sub(r"[^A-Za-z0-9_.+\-]", "-", "_".join(parts))


# ----------------------------------------------------------------------------------------------
# Output.


def format_table(report: EvaluationReport, *, digits: int = 2) -> str:
  """A Markdown table in the seeds' layout: Clean | <attacks in order> | worst class.

  Accuracies are percentages; the worst-class cell is ``"<name>: <worst-case robust accuracy>"``.
  Under the table, one line per column that reports its family's worst case (``attack_nested``)
  names the columns and gives its own accuracy; the last line gives the per-example worst case over
  all attacks.

  Example:
    >>> r = EvaluationReport(10, 2, 1.0, {"PGD-20": 0.5}, 0.5, [5, 5], [1.0, 1.0], [0.4, 0.6], 0,
    ...                      "0", {"clean": 0.0, "PGD-20": 1.0}, {"PGD-20": 0}, 0.1, "linf")
    >>> print(format_table(r))
    | Clean | PGD-20 | worst class |
    |---:|---:|---:|
    | 100.00 | 50.00 | 0: 40.00 |
    <BLANKLINE>
    Worst case over all attacks: 50.00% of 10 examples (linf, eps = 0.1).
  """
  pct = lambda v: f"{100 * v:.{digits}f}"  # noqa: E731
  names = list(report.attack_accuracy)
  header = ["Clean"] + names + ["worst class"]
  worst = report.per_class_robust_accuracy[report.worst_class]
  row = ([pct(report.clean_accuracy)] + [pct(report.attack_accuracy[n]) for n in names]
         + [f"{report.worst_class_name}: {pct(worst)}"])
  lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header),
           "| " + " | ".join(row) + " |"]
  eps = "" if report.eps is None else f", eps = {report.eps:g}"
  lines.append("")
  for n in names:
    nested = report.attack_nested.get(n, [n])
    if len(nested) > 1:
      alone = report.attack_accuracy_single.get(n)
      alone = "" if alone is None else f"; alone {pct(alone)}"
      lines.append(f"{n}: per-example worst case over {', '.join(nested)} (random starts "
                   f"shared{alone}).")
  lines.append(f"Worst case over all attacks: {pct(report.robust_accuracy)}% of "
               f"{report.num_examples} examples ({report.norm}{eps}).")
  return "\n".join(lines)


def report_to_json(report: EvaluationReport | TransferReport, *, indent: Optional[int] = 2) -> str:
  """Serialises a report to JSON (strict: no NaN; classes without examples are null)."""
  return json.dumps(dataclasses.asdict(report), indent=indent, allow_nan=False)


from robust_jax.evaluation_curves import robustness_curve  # noqa: E402,F401  (the eps sweep)
