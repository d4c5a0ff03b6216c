"""Data parallelism: one ``jax.jit`` over a 1-D device mesh, the batch sharded, the state replicated.

Why ``jit`` with shardings rather than ``pmap`` or ``shard_map``: this JAX implements ``pmap`` on top of
``jit`` + ``shard_map``, and the idiomatic data parallelism is a plain ``jit`` whose inputs carry
``NamedSharding``s. The step is then written for one device and its global semantics are exact by
construction: the loss is the mean over the *global* batch, so gradients come out mean-reduced across
devices; BatchNorm statistics are computed over the global batch (synchronised BatchNorm, i.e. the
single-device math; PyTorch's DataParallel in the official code computes them per GPU); the attack's
``while_loop`` condition ``any(active)`` is global, so all devices run the same number of iterations
(needed anyway, the body holds collectives). ``shard_map`` would need care with the gradient of
replicated parameters (it comes back already summed: a further ``pmean`` is wrong; see
../shared/reference/environment.md, section 3). The mesh is built with ``AxisType.Auto``.

Multi-host: :func:`initialize_distributed` wraps ``jax.distributed.initialize``; each process loads its
own slice of every global batch and :func:`shard_batch` assembles the global array with
``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(devices, (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh) -> None:
  n = mesh.devices.size
  if global_batch_size % n:
    raise ValueError(f"the global batch size {global_batch_size} must be divisible by the number "
                     f"of devices ({n})")


def replicate(tree: Any, mesh) -> Any:
  """Places a pytree on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def shard_batch(batch: Any, mesh) -> Any:
  """Shards this process's slice of the global batch along the batch axis.

  With one process ``batch`` is the global batch; with several, each process passes its own
  contiguous slice and the global array is assembled across processes.
  """
  sharding = batch_sharded(mesh)
  if jax.process_count() == 1:
    for leaf in jax.tree.leaves(batch):
      check_batch_size(leaf.shape[0], mesh)
    return jax.device_put(batch, sharding)
  return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), batch)


def jit_data_parallel(fn: Callable, mesh, *, donate_state: bool = True) -> Callable:
  """``jax.jit(fn)`` for ``fn(state, batch) -> (state, metrics)`` with the state replicated and the
  batch sharded over the mesh."""
  rep, data = replicated(mesh), batch_sharded(mesh)
  return jax.jit(fn, in_shardings=(rep, data), out_shardings=(rep, rep),
                 donate_argnums=(0,) if donate_state else ())


def initialize_distributed(coordinator_address: str = "", num_processes: int = 0,
                           process_id: int = -1, timeout_s: int = 300) -> None:
  """Calls ``jax.distributed.initialize`` when asked to (or automatically on TPU/SLURM clusters).

  Args:
    coordinator_address: ``host:port`` of process 0; empty means: let JAX detect the cluster (TPU
      pods, SLURM) if it can, otherwise run single-process.
    num_processes: number of processes (0: auto-detect).
    process_id: this process's index (-1: auto-detect).
    timeout_s: initialisation timeout.
  """
  if coordinator_address:
    if num_processes < 1 or process_id < 0:
      raise ValueError("with --config.coordinator_address, set --config.num_processes >= 1 and "
                       "--config.process_id in [0, num_processes)")
    if process_id >= num_processes:
      raise ValueError(f"config.process_id must be in [0, {num_processes}), got {process_id}")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout_s)
    logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
    return
  try:  # TPU pods and SLURM are detected by JAX itself.
    from jax._src import clusters  # pylint: disable=g-import-not-at-top
    if any(env.is_env_present() for env in clusters.ClusterEnv._cluster_types):  # pylint: disable=protected-access
      jax.distributed.initialize(initialization_timeout=timeout_s)
  except (ImportError, AttributeError):
    pass
