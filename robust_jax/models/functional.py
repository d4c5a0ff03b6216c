"""The one functional interface through which the training step sees a model.

A :class:`ModelFn` is a pair of pure functions:

* ``init(rngs, x) -> variables`` with ``variables = {"params": ..., "batch_stats": ...}``
  (``batch_stats``: any non-trainable model state, ``{}`` when there is none);
* ``apply(variables, x, *, train, rngs=None) -> (logits, new_batch_stats)``: float logits [B, C]
  for images [B, H, W, C]; ``train=True`` uses batch statistics (and dropout, from
  ``rngs["dropout"]``) and returns the updated state, ``train=False`` returns the state unchanged;
* optionally ``training(variables, x, y, *, rngs=None) -> (logits, aux, new_batch_stats)``: the
  forward of the outer loss in train mode, given the labels ``y`` (int32 [B]), with a tuple of
  auxiliary logits [B, C] whose CE the objective adds (:func:`training_forward`; the CIFS models'
  label rule and probes). ``None`` (every other model): ``apply(train=True)``, no auxiliary logits.

Adapters: :func:`from_linen` (a Flax linen module with ``__call__(x, train)``, every model of
:mod:`robust_jax.models`; a module's method ``training_logits(x, labels)``, :data:`TRAINING_HOOK`,
becomes ``training``) and :func:`from_nnx` (a Flax NNX module, split into a graph definition and
its states). Any pair of functions of this shape can be trained by
:func:`robust_jax.training.step.make_train_step`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax

Variables = Dict[str, Any]


TRAINING_HOOK = "training_logits"


class ModelFn(NamedTuple):
  """A model as two pure functions and an optional training forward (see the module docstring).

  Attributes:
    init: ``(rngs, x) -> variables``; ``rngs`` is ``{"params": key, "dropout": key}``.
    apply: ``(variables, x, *, train, rngs=None) -> (logits, new_batch_stats)``.
    training: ``None``, or ``(variables, x, y, *, rngs=None) -> (logits, aux, new_batch_stats)``,
      the outer loss's forward with the labels (:func:`training_forward`).
  """
  init: Callable[[Dict[str, jax.Array], jax.Array], Variables]
  apply: Callable[..., Tuple[jax.Array, Any]]
  training: Optional[Callable[..., Tuple[jax.Array, Tuple[jax.Array, ...], Any]]] = None


def from_linen(module) -> ModelFn:
  """A linen module with ``__call__(x, train)`` and optional ``batch_stats`` as a :class:`ModelFn`.

  A module with a method ``training_logits(x, labels) -> (logits, [aux logits])``
  (:data:`TRAINING_HOOK`) gets it as ``training``, run in train mode with the batch's labels.

  Example:
    >>> import flax.linen as nn, jax.numpy as jnp
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x, train=False):
    ...     return nn.Dense(3)(x.reshape(x.shape[0], -1))
    >>> fn = from_linen(Net())
    >>> v = fn.init({"params": jax.random.key(0)}, jnp.zeros((1, 2, 2, 1)))
    >>> logits, stats = fn.apply(v, jnp.zeros((4, 2, 2, 1)), train=True)
    >>> logits.shape, stats
    ((4, 3), {})
  """

  def init(rngs, x):
    variables = module.init(rngs, x, train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

  def apply(variables, x, *, train: bool, rngs: Optional[Dict[str, jax.Array]] = None):
    if train:
      logits, updates = module.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
      return logits, updates.get("batch_stats", variables["batch_stats"])
    return module.apply(variables, x, train=False), variables["batch_stats"]

  if not callable(getattr(module, TRAINING_HOOK, None)):
    return ModelFn(init=init, apply=apply)

  def training(variables, x, y, *, rngs: Optional[Dict[str, jax.Array]] = None):
    (logits, aux), updates = module.apply(variables, x, y, method=TRAINING_HOOK,
                                          mutable=["batch_stats"], rngs=rngs)
    return logits, tuple(aux), updates.get("batch_stats", variables["batch_stats"])

  return ModelFn(init=init, apply=apply, training=training)


def from_nnx(module) -> ModelFn:
  """A Flax NNX module as a :class:`ModelFn`.

  The module is split once into its graph definition, its ``nnx.Param`` state (``params``) and the
  rest (``batch_stats``: BatchNorm statistics and any other variables); ``apply`` merges a copy,
  switches it to ``train()`` or ``eval()`` mode and calls it. ``init`` returns the module's own
  initial states (NNX modules are initialised when they are constructed; ``rngs`` is unused).
  Dropout draws from the module's own ``nnx.Rngs``, which NNX keeps in the non-parameter state.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> fn = from_nnx(nnx.Linear(4, 3, rngs=nnx.Rngs(0)))
    >>> v = fn.init({}, jnp.zeros((1, 4)))
    >>> fn.apply(v, jnp.ones((2, 4)), train=False)[0].shape
    (2, 3)
  """
  from flax import nnx  # pylint: disable=import-outside-toplevel

  graphdef, params, rest = nnx.split(module, nnx.Param, ...)

  def init(rngs, x):
    del rngs, x
    return {"params": params, "batch_stats": rest}

  def apply(variables, x, *, train: bool, rngs: Optional[Dict[str, jax.Array]] = None):
    del rngs
    model = nnx.merge(graphdef, variables["params"], variables["batch_stats"], copy=True)
    if train:
      model.train()
    else:
      model.eval()
    logits = model(x)
    if not train:
      return logits, variables["batch_stats"]
    _, _, new_rest = nnx.split(model, nnx.Param, ...)
    return logits, new_rest

  return ModelFn(init=init, apply=apply)


def as_model_fn(model) -> ModelFn:
  """``model`` if it is a :class:`ModelFn`; an NNX module or a linen module adapted to one."""
  if isinstance(model, ModelFn):
    return model
  from flax import nnx  # pylint: disable=import-outside-toplevel
  if isinstance(model, nnx.Module):
    return from_nnx(model)
  if hasattr(model, "init") and hasattr(model, "apply"):
    return from_linen(model)
  raise TypeError(f"model must be a ModelFn, a Flax linen module or an NNX module, got "
                  f"{type(model).__name__}")


def training_forward(model) -> Callable:
  """The training forward for the outer loss: ``(variables, x, y, *, rngs) -> (logits, aux, bs)``.

  ``model``'s :attr:`ModelFn.training` when it has one: a linen module that declares
  ``training_logits(x, labels) -> (logits, [aux logits])`` (:data:`TRAINING_HOOK`), run in train
  mode with the batch's labels. The CIFS models (:mod:`robust_jax.models.cifs`) use it for the
  official label rule of the masks and return their probes' logits, which the objective adds to the
  loss (:attr:`robust_jax.objectives.OuterObjective.auxiliary`). Every other model runs through
  ``apply(train=True)`` with no labels and no auxiliary logits (``aux = ()``): the same operations
  as without this function. Attacks, regularisers and the eval step never see the hook: they call
  ``x -> logits`` (for CIFS, the top-1 rule).

  Args:
    model: a :class:`ModelFn`, a linen module or an NNX module (adapted by :func:`as_model_fn`).

  Returns:
    ``forward(variables, x, y, *, rngs=None) -> (logits [B, C], aux: tuple of [B, C], new
    batch_stats)``; ``y``: int32 [B], the labels of ``x``.

  Example:
    >>> import flax.linen as nn, jax.numpy as jnp
    >>> class Net(nn.Module):  # an auxiliary head that sees the labels in training
    ...   @nn.compact
    ...   def __call__(self, x, train=False, labels=None):
    ...     h = x.reshape(x.shape[0], -1)
    ...     aux = nn.Dense(3)(h) + (0.0 if labels is None else jax.nn.one_hot(labels, 3))
    ...     return nn.Dense(3)(h), aux
    ...   def training_logits(self, x, labels):
    ...     logits, aux = self(x, train=True, labels=labels)
    ...     return logits, [aux]
    >>> net = Net()
    >>> v = {"params": net.init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)))["params"],
    ...      "batch_stats": {}}
    >>> logits, aux, _ = training_forward(net)(v, jnp.ones((4, 2, 2, 1)), jnp.array([0, 1, 2, 0]))
    >>> logits.shape, len(aux), aux[0].shape
    ((4, 3), 1, (4, 3))
  """
  fn = as_model_fn(model)
  if fn.training is not None:
    return fn.training
  apply = fn.apply

  def forward(variables, x, y, *, rngs=None):
    del y
    logits, new_state = apply(variables, x, train=True, rngs=rngs)
    return logits, (), new_state

  return forward
