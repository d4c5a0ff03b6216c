"""The vocabulary of the composed training step: what a part sees, and how a part is built.

A training method is a bundle of five parts (:mod:`robust_jax.training.methods`):

=================  ===================================  ===========================================
family             built in                             what it does in the step
=================  ===================================  ===========================================
input adversary    :mod:`robust_jax.training.adversary`  x -> x_adv and the attack's diagnostics
weighting          :mod:`robust_jax.weighting`           diagnostics -> per-example weights [B]
objective          :mod:`robust_jax.objectives`          logits (clean, adversarial) -> outer loss
regularizer        :mod:`robust_jax.regularizers`        loss -> loss + lambda * Omega; typed state
weight adversary   :mod:`robust_jax.weight_adversaries`  loss -> update gradient at w + v, stats
=================  ===================================  ===========================================

Each part is a NamedTuple of pure functions, built by a keyword-only factory. **The factory's keyword
arguments are its sub-config**: they are named exactly as the fields of the training config
(:mod:`robust_jax.training.config`) that they read, and :func:`bind` passes a part exactly those
fields and nothing else, so no part ever sees the whole ConfigDict. Every factory validates its own
hyperparameters when it is built (before anything is compiled); :func:`bind` names the config field
in the error (``config.awp_gamma must be >= 0, got -0.1``). The config stays flat, so every field
keeps its command-line name (``--config.awp_gamma=0.005``) and resumed runs keep their checkpoints.

Within the step every part sees the same :class:`StepInfo` (the traced step, its epoch, the scheduled
eps and learning rate), so every schedule is a function of traced values and the step compiles once.
Part states that are carried between steps (SAMPa's gradient, ELLE-A's lambda) are NamedTuples
gathered in :class:`PartStates`, a field of the train state, checkpointed with it.

A :class:`Registry` maps the names used in the method table (and in config fields such as
``weight_perturbation``) to factories; adding a part is one factory and one ``register`` call.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

import jax


class StepInfo(NamedTuple):
  """What every part may depend on at step t (all traced; the step compiles once).

  Attributes:
    step: int32 scalar, optimizer steps taken before this one.
    epoch: int32 scalar, the 0-based epoch ``step // steps_per_epoch``.
    eps: float32 scalar, the training radius at this step (warm-up and periodic schedules applied).
    lr: float32 scalar, the learning rate of this step.
  """
  step: jax.Array
  epoch: jax.Array
  eps: jax.Array
  lr: jax.Array


class EmptyState(NamedTuple):
  """The state of a part that carries nothing between steps."""


class PartStates(NamedTuple):
  """The carried states of a method's parts (a field of the train state; orbax saves it whole).

  Attributes:
    weight_adversary: e.g. ``SampaState`` (SAMPa's gradient at the auxiliary point).
    regularizer: e.g. ``ElleAState`` (ELLE-A's lambda and error statistics).
  """
  weight_adversary: Any = EmptyState()
  regularizer: Any = EmptyState()


def require(ok: bool, name: str, condition: str, value: Any) -> None:
  """Raises ``ValueError(f"{name} {condition}, got {value!r}")`` unless ``ok`` (a build-time check).

  Example:
    >>> require(0.1 >= 0, "awp_gamma", "must be >= 0", 0.1)  # passes silently
  """
  if not ok:
    raise ValueError(f"{name} {condition}, got {value!r}")


def fields_of(factory: Callable) -> Tuple[str, ...]:
  """The config fields a factory reads: its keyword-only parameters, in order."""
  return tuple(p.name for p in inspect.signature(factory).parameters.values()
               if p.kind is inspect.Parameter.KEYWORD_ONLY)


def bind(factory: Callable, config: Mapping[str, Any], **context: Any) -> Any:
  """Builds a part from the config fields named by its factory's keyword arguments.

  Args:
    factory: a keyword-only factory; each keyword is a config field (or one of ``context``).
    config: the training config (a ConfigDict or a mapping). Only the factory's fields are read.
    **context: values that are not config fields (e.g. ``steps_per_epoch``); those the factory
      takes are passed and take precedence, the others are ignored.

  Returns:
    ``factory(**{f: config[f] for f in fields_of(factory)}, **context)``.

  Raises:
    ValueError: a field is missing from the config; or the factory rejected a value, re-raised as
      ``config.<field> ...`` when its message starts with the field's name.
  """
  kwargs: Dict[str, Any] = {}
  fields = fields_of(factory)
  context = {k: v for k, v in context.items() if k in fields}
  for name in fields:
    if name in context:
      continue
    if name not in config:
      raise ValueError(f"{factory.__name__} reads config.{name}, which the config lacks")
    value = config[name]
    kwargs[name] = tuple(value) if isinstance(value, list) else value
  try:
    return factory(**kwargs, **context)
  except ValueError as e:
    msg = str(e)
    if any(msg.startswith(f + " ") for f in kwargs):
      raise ValueError(f"config.{msg}") from None
    raise


class Registry:
  """Names to part factories, for one family of parts.

  Example:
    >>> reg = Registry("regularizer")
    >>> _ = reg.register("zero", lambda: "built")  # returns the factory (usable as a decorator)
    >>> reg.build("zero", {})
    'built'
  """

  def __init__(self, family: str, *, field: Optional[str] = None):
    """``family`` names the parts in messages; ``field`` is the config field that selects one, if
    any (an unknown name is then reported as ``config.<field> must be one of ...``)."""
    self.family = family
    self.field = field
    self._factories: Dict[str, Callable] = {}

  def register(self, name: str, factory: Callable) -> Callable:
    """Adds ``factory`` under ``name`` (a name is registered once)."""
    if name in self._factories:
      raise ValueError(f"{self.family} {name!r} is registered already")
    self._factories[name] = factory
    return factory

  def names(self) -> Tuple[str, ...]:
    return tuple(sorted(self._factories))

  def factory(self, name: str) -> Callable:
    """The factory called ``name``; an unknown name lists the valid ones."""
    if name not in self._factories:
      what = f"config.{self.field}" if self.field else self.family
      raise ValueError(f"{what} must be one of {self.names()}, got {name!r}")
    return self._factories[name]

  def build(self, name: str, config: Mapping[str, Any], **context: Any) -> Any:
    """``bind(self.factory(name), config, **context)``."""
    return bind(self.factory(name), config, **context)

  def check_all(self, config: Mapping[str, Any], **context: Any) -> None:
    """Builds every registered part from ``config``: each rejects its own bad fields, whichever
    part the method uses (so a bad value never waits for the run that would use it)."""
    for name in self.names():
      self.build(name, config, **context)
