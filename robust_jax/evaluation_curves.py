"""Robust accuracy as a function of eps: every radius in one compiled program, or from one run.

:func:`robustness_curve` measures robust accuracy at many radii and returns a
:class:`RobustnessCurve` (the numbers and what ran, with :meth:`RobustnessCurve.to_json`);
:func:`plot_robustness_curve` draws one or several curves against eps, the training eps marked, and
:func:`save_robustness_curve` writes the JSON and the PNG (what ``launch.eval --curve`` calls).

Two kinds of curve:

* **eps swept** (a fixed-radius attack: a column of :func:`robust_jax.evaluation.default_attacks`
  such as ``"PGD-20"``, or ``(name, hyperparameters)`` of :func:`robust_jax.attacks.make`). The
  attack is built inside one ``jax.jit`` from a *traced* eps and mapped over the radii with
  ``lax.map`` (``eps_batch > 1``: that many radii at a time under ``vmap``), so one compilation
  serves every eps and every batch (the attacks' eps, step sizes and budgets are traced). Each
  radius uses the key :func:`robust_jax.evaluation.evaluate` gives its first column, batch b
  drawing ``fold_in(fold_in(key, b), 0)`` (``key_index`` picks another column's): the curve at
  eps equals ``evaluate(logits_fn, data,
  {name: attack at eps}, key=key, batch_size=batch_size, eps=eps)`` (the tests check it to one
  example: the two programs are compiled separately), and every radius starts from the same random
  draws (common random numbers: the curve's differences between radii are not start noise). As in
  :func:`~robust_jax.evaluation.evaluate`, a point outside the ball or the box never counts as
  broken (``invalid``).
* **minimum norm** (``"fmn"``, ``"ddn"``, ``"deepfool"``, ``"cw_l2"`` or their ``(name,
  hyperparameters)``): the attack runs once; an example is broken at eps iff the perturbation it
  returns is adversarial, in the box and of norm at most eps, its norm re-measured from ``x_adv``
  (trust nothing: a claimed distance that does not check out counts in ``invalid``). The curve is
  :func:`robust_jax.attacks.robust_accuracy_at` of those norms: an upper bound on the true robust
  accuracy at every eps, non-increasing in eps by construction.

An example counts as robust at eps only if it is classified correctly clean and at the attack's
point, as in :func:`~robust_jax.evaluation.evaluate`. Nothing non-finite is counted: NaN or inf
logits raise :class:`robust_jax.evaluation.NonFiniteLogitsError`.

Example (a linear model on 4 values; the distance of each point to the boundary is known):
  >>> import jax, jax.numpy as jnp, numpy as np
  >>> logits_fn = lambda x: x.reshape(x.shape[0], -1) @ jnp.eye(4)[:, :2]
  >>> x = np.array([[0.6, 0.5, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0]], np.float32).reshape(2, 2, 2, 1)
  >>> c = robustness_curve(logits_fn, (x, np.array([0, 0])), [0.02, 0.1, 0.5],
  ...                      attack=("pgd", dict(num_steps=5, start="none")),
  ...                      key=jax.random.key(0), batch_size=2)
  >>> c.kind, c.accuracy, c.n_examples
  ('eps_swept', [1.0, 0.5, 0.0], 2)
"""

from __future__ import annotations

# The module shares evaluate's batching, placement and prediction helpers (its private functions).
# pylint: disable=protected-access

import dataclasses
import functools
import inspect
import json
import re
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

import robust_jax
from robust_jax import attacks as attacks_lib
from robust_jax import validation

# The columns of default_attacks a curve can sweep ("PGD-<k>" for any k; AutoAttack runs stages on
# the host, so it is not traceable in eps).
CURVE_COLUMNS = ("FGSM", "PGD-<k>", "CW-inf", "APGD-CE", "APGD-T")
MINIMUM_NORM_ATTACKS = ("fmn", "ddn", "deepfool", "cw_l2")
_L2_ONLY = ("ddn", "cw_l2")
_PGD = re.compile(r"PGD-([1-9][0-9]*)$")

CurveAttack = Union[str, tuple[str, Mapping[str, Any]], Callable[[jax.Array], Any]]


@dataclasses.dataclass(frozen=True)
class RobustnessCurve:
  """What :func:`robustness_curve` returns: plain Python values (:meth:`to_json` writes them).

  Attributes:
    eps: the radii [E], in the order given.
    accuracy: the robust accuracy at each radius [E], in [0, 1] (correct clean and at the attack's
      point).
    clean_accuracy: accuracy at the natural inputs.
    attack: the attack as named (``"PGD-20"``, ``"fmn"``, the factory name of a pair, or
      ``"custom"`` for a builder).
    kind: ``"eps_swept"`` (one attack run per radius) or ``"minimum_norm"`` (one run for all).
    attack_settings: the hyperparameters, as :func:`robust_jax.evaluation.attack_settings`; for an
      eps-swept curve a hyperparameter that changes with eps (eps itself, a step size of eps / 4)
      is the list of its values per radius.
    n_examples: the (unmasked) examples evaluated.
    norm: the norm of the ball.
    n_restarts: the restarts whose per-example worst case the attack returns (1 without restarts;
      None for a builder whose settings are unknown).
    seed: the seed the key was made from, when the caller says (None otherwise).
    key_data: the uint32 words of the key.
    key_index: batch b drew ``fold_in(fold_in(key, b), key_index)``.
    invalid: per radius, the examples whose point did not check out (outside the ball or the box,
      or a minimum-norm distance that is not the re-measured one); counted robust.
    batch_size: examples per attack call (with the key, it fixes every random draw).
    training_eps: the radius the model was trained at, when given (marked on the plot).
    library_version: ``robust_jax.__version__``.
    context: free-form JSON values saying where the curve comes from (``launch.eval`` puts the
      checkpoint, split and suite there); :func:`robustness_curve` leaves it empty.
  """
  eps: list
  accuracy: list
  clean_accuracy: float
  attack: str
  kind: str
  attack_settings: dict
  n_examples: int
  norm: str
  n_restarts: Any
  seed: Optional[int]
  key_data: list
  invalid: list
  batch_size: int
  key_index: int = 0
  training_eps: Optional[float] = None
  library_version: str = ""
  context: dict = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict:
    """The fields as a dict of JSON values."""
    return dataclasses.asdict(self)

  def to_json(self, *, indent: Optional[int] = 2) -> str:
    """Strict JSON (no NaN) of :meth:`to_dict`; :meth:`from_json` reads it back."""
    return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

  @classmethod
  def from_json(cls, text: str) -> "RobustnessCurve":
    """The curve :meth:`to_json` wrote (unknown keys are an error)."""
    return cls(**json.loads(text))


# ----------------------------------------------------------------------------------------------
# Attacks of eps.


@dataclasses.dataclass(frozen=True)
class _Build:
  """``eps -> attack`` for a named attack; hashable, so the compiled curve program is reused by
  every call with the same attack, shapes and model structure."""
  column: Optional[str]
  name: Optional[str]
  hyperparameters: tuple
  norm: str
  table_options: tuple

  def __call__(self, eps):
    if self.column is not None:
      m = _PGD.match(self.column)
      table = evaluation.default_attacks(
          eps, norm=self.norm, pgd_steps=(int(m.group(1)),) if m else (),
          **dict(self.table_options))
      return table[self.column]
    hp = dict(self.hyperparameters)
    accepted = attacks_lib.hyperparameter_defaults(self.name)
    if ("step_size" in accepted and accepted["step_size"] is inspect.Parameter.empty
        and "step_size" not in hp):
      hp["step_size"] = eps / 4.0  # default_attacks' rule
    if "norm" in accepted and "norm" not in hp:
      hp["norm"] = self.norm
    return attacks_lib.make(self.name, eps=eps, **hp)


def _hashable(v):
  if isinstance(v, list):
    return tuple(_hashable(u) for u in v)
  if isinstance(v, Mapping):
    return tuple(sorted((k, _hashable(u)) for k, u in v.items()))
  return v


def _minimum_norm(name: str, hyperparameters: Mapping[str, Any], norm: Optional[str],
                  n_iter: int):
  """The minimum-norm attack ``name`` at ``norm`` (defaults: ``n_iter`` steps for FMN and DDN;
  ``norm=None``: any norm, the checks that need it skipped)."""
  if name in _L2_ONLY and norm not in (None, "l2"):
    raise ValueError(f"attack {name!r} is an l2 attack; the curve's norm is {norm!r}")
  hp = dict(hyperparameters)
  accepted = attacks_lib.hyperparameter_defaults(name)
  if "norm" in accepted:
    hp.setdefault("norm", norm or "l2")
    if norm is not None and hp["norm"] != norm:
      raise ValueError(f"attack {name!r} has norm={hp['norm']!r}, the curve's norm is {norm!r}")
  if "steps" in accepted:
    hp.setdefault("steps", n_iter)
  return attacks_lib.make(name, **hp)


def _parse_attack(attack: CurveAttack, norm: str, table_options: Mapping[str, Any], n_iter: int):
  """``(kind, label, builder or attack)`` for the ``attack`` of :func:`robustness_curve`."""
  if isinstance(attack, str):
    if attack in MINIMUM_NORM_ATTACKS:
      return "minimum_norm", attack, _minimum_norm(attack, {}, norm, n_iter)
    if attack in ("FGSM", "CW-inf", "APGD-CE", "APGD-T") or _PGD.match(attack):
      return "eps_swept", attack, _Build(attack, None, (), norm, _hashable(table_options))
    raise ValueError(f"unknown curve attack {attack!r}; valid: the columns {CURVE_COLUMNS} of "
                     f"default_attacks (AA runs on the host and cannot be swept in one program), "
                     f"the minimum-norm attacks {MINIMUM_NORM_ATTACKS}, a pair (name, "
                     "hyperparameters) of robust_jax.attacks.make, or a callable eps -> attack")
  if isinstance(attack, (tuple, list)) and len(attack) == 2 and isinstance(attack[1], Mapping):
    name, hp = attack
    if name not in attacks_lib.NAMES:
      raise ValueError(f"unknown attack {name!r}; valid names: {attacks_lib.NAMES}")
    if name in MINIMUM_NORM_ATTACKS:
      return "minimum_norm", name, _minimum_norm(name, hp, norm, n_iter)
    if name == "autoattack":
      raise ValueError("autoattack runs its stages on the host and cannot be swept over eps in "
                       "one program; sweep its stages (apgd_ce, apgd_t, ...) instead")
    if "eps" in hp:
      raise ValueError(f"the curve sweeps eps: leave it out of the hyperparameters of {name!r}")
    if norm is not None and hp.get("norm", norm) != norm:
      raise ValueError(f"attack {name!r} has norm={hp['norm']!r}, the curve's norm is {norm!r}")
    return "eps_swept", name, _Build(None, name, _hashable(hp), norm, ())
  if callable(attack):
    return "eps_swept", "custom", attack
  raise ValueError(f"attack must be a name, a pair (name, hyperparameters) or a callable "
                   f"eps -> attack, got {attack!r}")


def check_curve_attack(attack: CurveAttack, norm: Optional[str] = None) -> str:
  """Raises ValueError unless ``attack`` is one :func:`robustness_curve` can run.

  Args:
    attack: as :func:`robustness_curve`'s ``attack``.
    norm: the curve's norm; None skips the checks that depend on it (an l2-only attack at linf).

  Returns:
    ``"eps_swept"`` or ``"minimum_norm"``.

  Example:
    >>> check_curve_attack("PGD-50"), check_curve_attack("fmn", "linf")
    ('eps_swept', 'minimum_norm')
  """
  kind, _, _ = _parse_attack(attack, norm, {"n_iter": 100, "apgd_variant": "official"}, 100)
  return kind


# ----------------------------------------------------------------------------------------------
# The compiled sweep.


def _norm_of(d: jax.Array, norm: str) -> jax.Array:
  """The linf or l2 norm of each row of ``d`` [B, D]."""
  return jnp.max(jnp.abs(d), axis=1) if norm == "linf" else jnp.sqrt(jnp.sum(d * d, axis=1))


def _host_norm(d: np.ndarray, norm: str) -> np.ndarray:
  """The norm of each row of ``d`` in float64 (as evaluate's ball check)."""
  if norm == "linf":
    return np.abs(d).max(1)
  if norm == "l2":
    return np.sqrt((d * d).sum(1))
  if norm == "l1":
    return np.abs(d).sum(1)
  return (d != 0).sum(1).astype(np.float64)


@functools.partial(jax.jit, static_argnames=("build", "norm", "eps_batch"))
def _sweep(predict_fn, x, y, key, eps_values, *, build, norm, eps_batch):
  """``(pred, finite, valid)``, each [E, B]: the attack built at every eps, in one program."""

  def at(eps):
    x_adv = evaluation._x_adv(build(eps)(predict_fn, x, y, key))
    pred, finite = evaluation._predict(predict_fn, x_adv)
    flat = x_adv.reshape(x.shape[0], -1)
    dist = _norm_of(flat - x.reshape(x.shape[0], -1), norm)
    valid = ((dist <= eps * (1 + 1e-5) + 1e-6) & (jnp.min(flat, axis=1) >= 0)
             & (jnp.max(flat, axis=1) <= 1))
    return pred, finite, valid

  return jax.lax.map(at, eps_values, batch_size=eps_batch if eps_batch > 1 else None)


def _check_eps_values(eps_values, norm: str, image_shape) -> np.ndarray:
  eps = np.asarray(eps_values, np.float64)
  if eps.ndim != 1 or eps.size == 0:
    raise ValueError(f"eps_values must be a non-empty 1-D sequence of radii, got shape {eps.shape}")
  if not np.all(np.isfinite(eps)):
    raise ValueError(f"eps_values must be finite, got {eps.tolist()}")
  for e in eps:
    if norm in ("linf", "l2"):
      validation.check_eps(float(e), norm, image_shape=image_shape)
    else:  # l1, l0 (minimum-norm curves): any radius >= 0
      validation.check_scalar("eps", float(e), low=0.0)
  return eps


def _swept_settings(attacks_at: Sequence[Any], num_classes: int) -> dict:
  """The attack's settings over the radii: a value that changes with eps becomes its list."""
  per_eps = [evaluation.attack_settings(a, num_classes) for a in attacks_at]
  out = dict(per_eps[0])
  for k in out:
    values = [s.get(k) for s in per_eps]
    if any(v != values[0] for v in values):
      out[k] = values
  return out


def robustness_curve(
    logits_fn: Callable[[jax.Array], jax.Array],
    dataset,
    eps_values: Sequence[float],
    *,
    attack: CurveAttack = "PGD-20",
    key: jax.Array,
    batch_size: int,
    norm: str = "linf",
    seed: Optional[int] = None,
    key_index: int = 0,
    training_eps: Optional[float] = None,
    n_iter: int = 100,
    apgd_variant: str = "official",
    eps_batch: int = 1,
) -> RobustnessCurve:
  """Robust accuracy of ``logits_fn`` at every radius of ``eps_values``.

  Args:
    logits_fn: ``x -> logits`` [B, C], deterministic; pass ``jax.tree_util.Partial(apply_fn,
      params)`` to reuse the compiled sweep across checkpoints.
    dataset: as :func:`robust_jax.evaluation.evaluate` (batches or full arrays, optional mask).
    eps_values: the radii [E], each >= 0 (linf: < 1; l2: below the box diameter).
    attack: an eps-swept attack, a column of :func:`~robust_jax.evaluation.default_attacks`
      (``"FGSM"``, ``"PGD-<k>"``, ``"CW-inf"``, ``"APGD-CE"``, ``"APGD-T"``; default ``"PGD-20"``)
      or ``(name, hyperparameters)`` of :func:`robust_jax.attacks.make` without ``eps`` (a
      required ``step_size`` defaults to eps / 4, ``norm`` to the curve's), or a callable ``eps ->
      attack`` (jittable in eps); or a minimum-norm attack, ``"fmn"``, ``"ddn"``, ``"deepfool"``,
      ``"cw_l2"`` or their pair (FMN and DDN default to ``n_iter`` steps).
    key: PRNG key; batch b draws ``fold_in(fold_in(key, b), key_index)`` at every radius.
    batch_size: examples per attack call (the data are re-batched to it).
    norm: ``"linf"`` or ``"l2"`` (a minimum-norm curve also ``"l1"`` / ``"l0"`` with FMN).
    seed: the seed ``key`` was made from, for the record.
    key_index: the attack key's index, >= 0: with the ``attack_key_index`` of a column of an
      :func:`~robust_jax.evaluation.evaluate` report (same key and batch size), the curve at that
      report's eps is that column's own accuracy (``attack_accuracy_single``), same random starts.
    training_eps: the model's training radius, for the record and the plot.
    n_iter: APGD iterations of the table columns, steps of FMN and DDN.
    apgd_variant: ``"official"`` or ``"paper"``, for the APGD columns.
    eps_batch: radii per step of the sweep (``lax.map``'s batch size: that many radii run at once
      under ``vmap``, trading memory for speed); 1 runs them one after the other.

  Returns:
    A :class:`RobustnessCurve`. Invariants (tested): an eps-swept curve at eps equals
    :func:`~robust_jax.evaluation.evaluate` of the attack at eps with the same key and batch size
    (to one example); the sweep compiles once for every radius and batch; a minimum-norm curve is
    non-increasing in eps.

  Raises:
    ValueError: on a bad argument, before anything compiles (every radius is checked, and the
      attack is built at each, as :func:`robust_jax.attacks.make` validates it).
    NonFiniteLogitsError: for NaN or inf logits, clean or at an attack's point.
  """
  validation.check_scalar("batch_size", batch_size, low=1, integer=True)
  validation.check_scalar("eps_batch", eps_batch, low=1, integer=True)
  validation.check_scalar("key_index", key_index, low=0, integer=True)
  validation.check_key(key, needed_by="robustness_curve")
  kind, label, built = _parse_attack(
      attack, norm, {"n_iter": n_iter, "apgd_variant": apgd_variant}, n_iter)
  if kind == "eps_swept":
    validation.check_choice("norm", norm, ("linf", "l2"))
  else:
    validation.check_choice("norm", norm, ("linf", "l2", "l1", "l0"))
  predict_fn = attacks_lib.as_pytree_fn(logits_fn)
  sharding = evaluation._sharding(batch_size)
  eps = attacks_at = None
  num_classes = None
  n = clean_n = 0
  robust_n = invalid_n = dists = None
  for b, (x, y, m) in enumerate(evaluation._batches(dataset, batch_size)):
    validation.check_images("image", x)
    if num_classes is None:
      num_classes = validation.num_classes(logits_fn, x)
      eps = _check_eps_values(eps_values, norm, image_shape=x.shape)
      if kind == "eps_swept":
        attacks_at = [built(float(e)) for e in eps]  # validated at every radius, nothing compiled
      robust_n = np.zeros(len(eps), np.int64)
      invalid_n = np.zeros(len(eps), np.int64)
      dists = []
    validation.check_labels("label", y, x.shape[0], num_classes)
    xb, yb = evaluation._put(x, sharding), evaluation._put(y, sharding)
    ok = evaluation._checked_predict(predict_fn, xb, m, where="at the clean inputs", batch=b) == y
    n += int(m.sum())
    clean_n += int((ok & m).sum())
    key_b = jax.random.fold_in(jax.random.fold_in(key, b), key_index)
    if kind == "eps_swept":
      pred, finite, valid = (np.asarray(a) for a in _sweep(
          predict_fn, xb, yb, key_b, jnp.asarray(eps, jnp.float32), build=built,
          norm=norm, eps_batch=int(eps_batch)))
      bad = (~finite & m).sum(axis=1)
      if bad.any():
        i = int(np.argmax(bad > 0))
        raise evaluation.NonFiniteLogitsError(
            f"logits_fn returned non-finite logits (NaN or inf) at the points of attack {label!r} "
            f"at eps {eps[i]:g} for {int(bad[i])} of {int(m.sum())} examples of batch {b}; the "
            "curve refuses to count them")
      robust = ok & ((pred == y) | ~valid)  # [E, B]
      robust_n += (robust & m).sum(axis=1)
      invalid_n += (~valid & m).sum(axis=1)
    else:
      result = built(logits_fn, xb, yb, key_b)
      x_adv = np.asarray(result.x_adv)
      pred = evaluation._checked_predict(
          predict_fn, jnp.asarray(x_adv), m, where=f"at the points of attack {label!r}", batch=b)
      flat = x_adv.reshape(x.shape[0], -1).astype(np.float64)
      measured = _host_norm(flat - x.reshape(x.shape[0], -1), norm)
      in_box = (flat.min(1) >= 0) & (flat.max(1) <= 1)
      checked = np.where(~ok, 0.0, np.where((pred != y) & in_box, measured, np.inf))
      claimed = np.asarray(result.distance, np.float64)
      # A claim of distance <= eps that the returned point does not support.
      invalid_n += ((claimed[None] <= eps[:, None]) & (checked[None] > eps[:, None])
                    & m[None]).sum(axis=1)
      dists.append(checked[m])
  if num_classes is None:
    raise ValueError("dataset is empty")
  if n == 0:
    raise ValueError("every example of dataset is masked out")
  if kind == "eps_swept":
    accuracy = (robust_n / n).tolist()
    settings = (_swept_settings(attacks_at, num_classes) if isinstance(built, _Build)
                else {"attack": None})
  else:
    # robust_accuracy_at's float32 mean, back to an exact fraction of the n examples.
    frac = np.asarray(attacks_lib.robust_accuracy_at(np.concatenate(dists), eps), np.float64)
    accuracy = (np.rint(frac * n) / n).tolist()
    settings = evaluation.attack_settings(built, num_classes)
  restarts = evaluation._restarts(settings)
  return RobustnessCurve(
      eps=[float(e) for e in eps], accuracy=[float(a) for a in accuracy],
      clean_accuracy=clean_n / n, attack=label, kind=kind, attack_settings=settings,
      n_examples=n, norm=norm, n_restarts=restarts, seed=seed,
      key_data=evaluation._key_data(key),
      invalid=[int(v) for v in invalid_n], batch_size=int(batch_size), key_index=int(key_index),
      training_eps=None if training_eps is None else float(training_eps),
      library_version=robust_jax.__version__)


# ----------------------------------------------------------------------------------------------
# Figure and files.


def plot_robustness_curve(
    curves: Union[RobustnessCurve, Sequence[RobustnessCurve], Mapping[str, RobustnessCurve]],
    out_png: str,
    *,
    training_eps: Optional[float] = None,
    title: Optional[str] = None,
) -> str:
  """Robust accuracy against eps, one line per curve, the training eps a dashed vertical line.

  Args:
    curves: a curve, a sequence of curves (labelled by their attack) or ``{label: curve}``.
    out_png: the PNG to write (directories created).
    training_eps: the radius to mark; default the first curve's ``training_eps`` (none if None).
    title: the figure title; default the norm and the number of examples.

  Returns:
    ``out_png``; the numbers go next to it (``.json``): the curve's :meth:`RobustnessCurve.to_dict`
    for one curve, ``{label: to_dict()}`` for several.
  """
  from robust_jax.analysis import plots  # pylint: disable=g-import-not-at-top (matplotlib)
  if isinstance(curves, RobustnessCurve):
    curves = {curves.attack: curves}
  elif not isinstance(curves, Mapping):
    curves = {c.attack: c for c in curves}
  if not curves:
    raise ValueError("no curve to plot")
  first = next(iter(curves.values()))
  if training_eps is None:
    training_eps = first.training_eps
  fig = plots.new_figure()
  ax = fig.axes[0]
  for label, c in curves.items():
    order = np.argsort(c.eps, kind="stable")
    ax.plot(np.asarray(c.eps)[order], 100 * np.asarray(c.accuracy)[order], marker=".",
            label=f"{label} ({c.kind.replace('_', ' ')})")
  if training_eps is not None:
    ax.axvline(training_eps, color="0.4", linestyle="--", linewidth=1,
               label=f"training eps = {training_eps:g}")
  ax.set_xlabel(f"eps ({first.norm})")
  ax.set_ylabel("robust accuracy (%)")
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title(title or f"Robust accuracy against eps ({first.n_examples} examples)")
  data = (first.to_dict() if len(curves) == 1
          else {label: c.to_dict() for label, c in curves.items()})
  plots.save_figure(fig, out_png, data)  # the numbers next to the PNG, as every analysis figure
  return out_png


def save_robustness_curve(curve: RobustnessCurve, stem: str) -> tuple[str, str]:
  """Writes ``stem.json`` (:meth:`RobustnessCurve.to_json`) and ``stem.png`` (the plot).

  Returns:
    ``(json_path, png_path)``.
  """
  png = plot_robustness_curve(curve, stem + ".png")
  with open(stem + ".json", "w") as f:  # strict JSON, replacing the plot's copy of the numbers
    f.write(curve.to_json() + "\n")
  return stem + ".json", png


# Last: robust_jax.evaluation re-exports robustness_curve from this module, so whichever of the two
# is imported first, the other finds the names it needs already defined.
from robust_jax import evaluation  # noqa: E402  pylint: disable=wrong-import-position
