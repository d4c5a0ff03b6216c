"""The train state: one registered dataclass pytree, checkpointed whole by orbax."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from robust_jax.models import functional
from robust_jax.parts import PartStates


@flax.struct.dataclass
class TrainState:
  """Everything a training run needs to continue bit-exactly.

  Attributes:
    step: int32 scalar, optimizer steps taken so far (the epoch is ``step // steps_per_epoch``).
    params: the model's parameters (float32).
    batch_stats: BatchNorm running statistics (an empty dict for models without BatchNorm).
    opt_state: the optax state.
    key: uint32 raw key data of the run's base PRNG key (``jax.random.key_data``); each step draws
      ``fold_in(key, step)``, so a resumed run draws the same randomness as an uninterrupted one.
    parts: the carried states of the method's parts (:class:`robust_jax.parts.PartStates`: SAMPa's
      gradient at the auxiliary iterate, ELLE-A's lambda and error statistics; empty states when
      unused), from :meth:`robust_jax.training.methods.Bundle.init`.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  key: jax.Array
  parts: Any


def create(*, model, tx: optax.GradientTransformation, sample_input: jax.Array, seed: int,
           parts: Any = None) -> TrainState:
  """Initialises the model (eval-mode shapes) and the optimizer from ``seed``.

  Args:
    model: a :class:`robust_jax.models.functional.ModelFn`, or a linen / NNX module (adapted).
    tx: the optax transformation.
    sample_input: one batch-shaped input, e.g. zeros [1, H, W, C].
    seed: the run's seed (initialisation and every step's randomness).
    parts: the initial part states (default: empty :class:`robust_jax.parts.PartStates`).
  """
  model_fn = functional.as_model_fn(model)
  base = jax.random.key(seed)
  init_key, dropout_key = jax.random.split(jax.random.fold_in(base, -1 & 0x7FFFFFFF))
  variables = jax.jit(lambda x: model_fn.init({"params": init_key, "dropout": dropout_key}, x))(
      sample_input)
  params = variables["params"]
  return TrainState(step=jnp.asarray(0, jnp.int32), params=params,
                    batch_stats=variables["batch_stats"], opt_state=tx.init(params),
                    key=jax.random.key_data(base), parts=PartStates() if parts is None else parts)
