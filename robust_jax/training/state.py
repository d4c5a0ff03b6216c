"""The train state: one registered dataclass pytree, checkpointed whole by orbax."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


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
    extra: per-method state carried between steps: SAMPa's gradient at the auxiliary iterate,
      ELLE-A's lambda and running statistics of the linearity error (empty dict when unused).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  key: jax.Array
  extra: Any


def create(*, model, tx: optax.GradientTransformation, sample_input: jax.Array, seed: int,
           extra: Any = None) -> TrainState:
  """Initialises the model (eval-mode shapes) and the optimizer from ``seed``."""
  base = jax.random.key(seed)
  init_key, dropout_key = jax.random.split(jax.random.fold_in(base, -1 & 0x7FFFFFFF))
  variables = jax.jit(lambda x: model.init({"params": init_key, "dropout": dropout_key}, x,
                                           train=False))(sample_input)
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  return TrainState(step=jnp.asarray(0, jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), key=jax.random.key_data(base),
                    extra={} if extra is None else extra)
