"""One factory for every attack: ``make(name, **hyperparameters) -> attack(logits_fn, x, y, key)``.

Evaluation tables, AutoAttack's stages and the analyses configure attacks by name and keyword
hyperparameters, validated once when the attack is made, and then call every attack the same way:

    attack = make("pgd", eps=8 / 255, step_size=2 / 255, num_steps=20, start="uniform")
    result = attack(logits_fn, x, y, key)

:func:`make` checks, before any data is seen, that the name is known (the valid names are listed
otherwise), that every hyperparameter is one the attack has (unknown ones are listed with the valid
ones), that none it needs is missing, and that each lies in its range (the attack's own checker
names the hyperparameter and the range). The returned function is pure: it calls the attack's public
function (:func:`robust_jax.attacks.pgd`, :func:`~robust_jax.attacks.apgd`, ...) with the bound
hyperparameters, so ``make(name, **h)(logits_fn, x, y, key)`` is bitwise
``fn(logits_fn, x, y, key=key, **h)`` (the tests check this for every name), it compiles as that
function does (pass ``jax.tree_util.Partial(apply_fn, params)`` as ``logits_fn`` and a new
checkpoint reuses the compiled attack) and it is jittable where the function is.

Some attacks take per-call arrays besides ``(x, y, key)``: ``target`` (targeted losses) and
``active`` (a mask of the examples to attack, used by AutoAttack on padded batches), and AutoAttack
a ``sharding`` for its batches. They are keyword arguments of the returned function, listed per name
in :func:`call_inputs`.

Names (:data:`NAMES`) and the functions they configure:

* ``"fgsm"``: :func:`~robust_jax.attacks.fgsm`; ``"pgd"``: :func:`~robust_jax.attacks.pgd`;
  ``"pgd_restarts"``: :func:`~robust_jax.attacks.pgd_restarts`; ``"cw_inf"``:
  :func:`~robust_jax.attacks.cw_inf`; ``"beta"``: :func:`~robust_jax.attacks.beta_attack`.
* ``"apgd_ce"``, ``"apgd_dlr"``: :func:`~robust_jax.attacks.apgd` with ``loss`` fixed to ``"ce"`` /
  ``"dlr"``; ``"apgd_t"``: :func:`~robust_jax.attacks.apgd_targeted` (``norm`` linf, l2 or l1;
  ``use_largereps`` for l1, ``eot_iter`` and ``randomized`` for EOT on a randomised
  ``logits_fn(x, key)``).
* ``"fab"``, ``"fab_t"``: :func:`~robust_jax.attacks.fab` with ``targeted`` fixed to False / True
  (``norm`` linf, l2 or l1).
* ``"square"``: :func:`~robust_jax.attacks.square` (``norm="l2"`` or ``"l1"`` with
  ``variant="autoattack"``); ``"autoattack"``: :func:`~robust_jax.attacks.autoattack`
  (``version`` standard, plus, rand or custom, ``norm`` linf, l2 or l1: ``make("autoattack",
  eps=12.0, norm="l1")`` is the official L1 standard version; ``eot_iter`` for rand).
* minimum-norm attacks (results with a per-example ``distance``, see
  :func:`~robust_jax.attacks.robust_accuracy_at`): ``"fmn"`` (:func:`~robust_jax.attacks.fmn`, L0 /
  L1 / L2 / Linf), ``"ddn"`` (:func:`~robust_jax.attacks.ddn`, L2), ``"cw_l2"``
  (:func:`~robust_jax.attacks.cw_l2`) and ``"deepfool"`` (:func:`~robust_jax.attacks.deepfool`,
  L2 / Linf).

Adding an attack: its module, with a public function ``fn(logits_fn, x, y, *, key, ...)`` and a
data-free ``check_hyperparameters(**hyperparameters)``, and one row in :func:`_registry`.
"""

from __future__ import annotations

import functools
import inspect
import types
from typing import Any, Callable, Mapping, NamedTuple

from robust_jax.attacks import (_apgd, _beta, _cw_l2, _ddn, _deepfool, _fab, _fgsm_pgd, _fmn,
                                _restarts, _square)

NAMES = ("fgsm", "pgd", "pgd_restarts", "cw_inf", "apgd_ce", "apgd_dlr", "apgd_t", "fab", "fab_t",
         "square", "autoattack", "beta", "fmn", "ddn", "cw_l2", "deepfool")

# Arguments of the attack functions that are neither hyperparameters nor per-call inputs.
_CALL_ARGUMENTS = ("logits_fn", "x", "y", "key")


class _Entry(NamedTuple):
  """One attack of the registry.

  Attributes:
    fn: the public attack ``fn(logits_fn, x, y, *, key, **hyperparameters, **inputs)``.
    check: its data-free hyperparameter checker, called with every hyperparameter (defaults
      included); it raises ValueError naming the first bad one.
    fixed: hyperparameters the name fixes (``"apgd_dlr"``: ``loss="dlr"``); not settable.
    inputs: the per-call keyword arguments of the returned attack (``target``, ``active``, ...).
  """
  fn: Callable[..., Any]
  check: Callable[..., Any]
  fixed: Mapping[str, Any] = types.MappingProxyType({})
  inputs: tuple[str, ...] = ()


@functools.cache
def _registry() -> Mapping[str, _Entry]:
  # AutoAttack builds its stages with make(), so its module is imported here, on the first call.
  from robust_jax.attacks import _autoattack  # pylint: disable=g-import-not-at-top
  apgd_inputs = ("target", "active")
  return types.MappingProxyType({
      "fgsm": _Entry(_fgsm_pgd.fgsm, _fgsm_pgd.check_fgsm_hyperparameters, inputs=("target",)),
      "pgd": _Entry(_fgsm_pgd.pgd, _fgsm_pgd.check_hyperparameters, inputs=("target",)),
      "pgd_restarts": _Entry(_restarts.pgd_restarts, _restarts.check_hyperparameters,
                             inputs=("target",)),
      "cw_inf": _Entry(_restarts.cw_inf, _restarts.check_cw_hyperparameters),
      "apgd_ce": _Entry(_apgd.apgd, _apgd.check_hyperparameters, {"loss": "ce"}, apgd_inputs),
      "apgd_dlr": _Entry(_apgd.apgd, _apgd.check_hyperparameters, {"loss": "dlr"}, apgd_inputs),
      "apgd_t": _Entry(_apgd.apgd_targeted, _apgd.check_hyperparameters, inputs=("active",)),
      "fab": _Entry(_fab.fab, _fab.check_hyperparameters,
                    {"targeted": False, "n_target_classes": None}, ("active",)),
      "fab_t": _Entry(_fab.fab, _fab.check_hyperparameters, {"targeted": True}, ("active",)),
      "square": _Entry(_square.square, _square.check_hyperparameters, inputs=("active",)),
      "autoattack": _Entry(_autoattack.autoattack, _autoattack.check_hyperparameters,
                           inputs=("sharding",)),
      "beta": _Entry(_beta.beta_attack, _beta.check_hyperparameters),
      "fmn": _Entry(_fmn.fmn, _fmn.check_hyperparameters),
      "ddn": _Entry(_ddn.ddn, _ddn.check_hyperparameters),
      "cw_l2": _Entry(_cw_l2.cw_l2, _cw_l2.check_hyperparameters),
      "deepfool": _Entry(_deepfool.deepfool, _deepfool.check_hyperparameters),
  })


def _entry(name: str) -> _Entry:
  registry = _registry()
  if name not in registry:
    raise ValueError(f"unknown attack {name!r}; valid names: {NAMES}")
  return registry[name]


def hyperparameter_defaults(name: str) -> dict[str, Any]:
  """The hyperparameters :func:`make` accepts for ``name``, with their defaults.

  Args:
    name: one of :data:`NAMES`.

  Returns:
    ``{hyperparameter: default}`` in the attack's signature order; ``inspect.Parameter.empty``
    marks one without a default, which :func:`make` requires.

  Raises:
    ValueError: for an unknown name (the valid names are listed).

  Example:
    >>> list(hyperparameter_defaults("cw_inf"))
    ['eps', 'step_size', 'num_steps', 'kappa', 'num_restarts', 'norm', 'start']
  """
  entry = _entry(name)
  skip = set(_CALL_ARGUMENTS) | set(entry.fixed) | set(entry.inputs)
  return {p.name: p.default for p in inspect.signature(entry.fn).parameters.values()
          if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in skip}


def call_inputs(name: str) -> tuple[str, ...]:
  """The per-call keyword arguments of the attack :func:`make` returns for ``name``.

  Example:
    >>> call_inputs("apgd_ce"), call_inputs("cw_inf")
    (('target', 'active'), ())
  """
  return _entry(name).inputs


def make(name: str, **hyperparameters: Any) -> Callable[..., Any]:
  """Builds the attack ``name`` with the given hyperparameters, validated now.

  Args:
    name: one of :data:`NAMES`.
    **hyperparameters: keyword hyperparameters of the attack (:func:`hyperparameter_defaults`
      lists them with their defaults; e.g. ``eps``, ``step_size``, ``num_steps`` for ``"pgd"``).
      Python numbers are range-checked now; traced values (inside ``jax.jit``) are passed through.

  Returns:
    A pure function ``attack(logits_fn, x, y, key, **inputs)`` returning what the attack's function
    returns (an :class:`~robust_jax.attacks.AttackResult`, a ``FabResult``, ...). ``key`` may be
    None where the attack needs none (PGD without a random start, FAB with one restart).
    ``inputs`` are the per-call arrays of :func:`call_inputs` (``target``, ``active``,
    ``sharding``). The function carries ``attack.name`` and ``attack.hyperparameters`` (the bound
    values, read-only).

  Raises:
    ValueError: for an unknown name, unknown hyperparameters (listed, with the valid ones), a
      missing required hyperparameter, or one out of its range (named, with the range); the
      returned function raises for unknown inputs and for bad data, as the attack does.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from robust_jax import attacks
    >>> logits_fn = lambda x: x.reshape(x.shape[0], -1) @ jnp.eye(4)[:, :3]
    >>> x = jnp.full((2, 2, 2, 1), 0.5); y = jnp.array([0, 1])
    >>> pgd = attacks.make("pgd", eps=0.1, step_size=0.05, num_steps=3)
    >>> r = pgd(logits_fn, x, y, None)
    >>> bool(jnp.all(r.x_adv == attacks.pgd(logits_fn, x, y, eps=0.1, step_size=0.05,
    ...                                      num_steps=3).x_adv))
    True
    >>> attacks.make("pgd", eps=0.1, step_size=0.05, steps=3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: make('pgd'): unknown hyperparameter(s) ['steps']; valid: ['eps', 'step_size', ...]
  """
  entry = _entry(name)
  accepted = hyperparameter_defaults(name)
  unknown = sorted(set(hyperparameters) - set(accepted))
  if unknown:
    fixed = "".join(f"; {k}={v!r} is fixed by the name" for k, v in entry.fixed.items()
                    if k in unknown)
    raise ValueError(f"make({name!r}): unknown hyperparameter(s) {unknown}; valid: "
                     f"{list(accepted)}{fixed}")
  missing = [k for k, v in accepted.items()
             if v is inspect.Parameter.empty and k not in hyperparameters]
  if missing:
    raise ValueError(f"make({name!r}) needs the hyperparameter(s) {missing}")
  bound = types.MappingProxyType({**hyperparameters, **entry.fixed})
  defaults = {k: v for k, v in accepted.items() if v is not inspect.Parameter.empty}
  entry.check(**{**defaults, **bound})

  def attack(logits_fn, x, y, key, **inputs_):
    extra = sorted(set(inputs_) - set(entry.inputs))
    if extra:
      raise ValueError(f"attack {name!r}: unknown input(s) {extra}; valid: {list(entry.inputs)}")
    return entry.fn(logits_fn, x, y, key=key, **bound, **inputs_)

  attack.__name__ = attack.__qualname__ = name
  attack.__doc__ = (f"The {name!r} attack of robust_jax.attacks.make: "
                    f"attack(logits_fn, x, y, key, **inputs), inputs from {entry.inputs}.")
  attack.name = name
  attack.hyperparameters = bound
  return attack
