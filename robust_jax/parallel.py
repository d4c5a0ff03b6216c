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

One exception is per device: the early-stopping attacks' compaction (FAT, Dynamic AT,
``config.attack_compaction``; :func:`robust_jax.attacks.ascent`). Gathering the still-active
examples of the global batch would move them across devices, so each device runs the attack's while
loops on its own shard instead (:func:`per_device`, a ``shard_map`` over the data axis, the
parameters closed over, i.e. replicated) and halves its own batch as its own examples stop: static
shapes, no collective, and each device leaves its loops when its own examples have stopped (the
global ``any(active)`` above holds for the attacks that do not compact). The random start is drawn
for the global batch before the split, so the trajectories are the one-device ones
(tests/training/test_compaction_devices.py). The attack is differentiated only with respect to its
input, never to the parameters, and returns ``stop_gradient`` inputs, so the gradient trap above
does not arise. The step finds the mesh with :func:`data_mesh`: :func:`jit_data_parallel` traces
the step under the mesh's abstract mesh (``jax.sharding.use_abstract_mesh``), which changes nothing
else in the program (on one device the step's results are bitwise those of a plain ``jit``).

Multi-host: :func:`initialize_distributed` wraps ``jax.distributed.initialize``; each process loads its
own slice of every global batch and :func:`shard_batch` assembles the global array with
``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
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


def data_mesh() -> Optional[jax.sharding.AbstractMesh]:
  """The mesh over which the program being traced spreads its batch, or None.

  The context's abstract mesh (set by :func:`jit_data_parallel`, or by ``jax.set_mesh``) when it
  has the axis :data:`DATA_AXIS` of ``AxisType.Auto`` and no other axis of more than one device;
  None outside such a context (a plain ``jax.jit``: the caller cannot tell how its batch is
  placed).

  Example:
    >>> from jax.sharding import AbstractMesh, AxisType
    >>> data_mesh() is None
    True
    >>> with jax.sharding.use_abstract_mesh(AbstractMesh((8,), ("data",), (AxisType.Auto,))):
    ...   data_mesh().shape["data"]
    8
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or DATA_AXIS not in mesh.axis_names:
    return None
  if mesh.size != mesh.shape[DATA_AXIS]:
    return None
  if mesh.axis_types[mesh.axis_names.index(DATA_AXIS)] != jax.sharding.AxisType.Auto:
    return None
  return mesh


def per_device(fn: Callable, mesh) -> Callable:
  """``fn`` run by every device of ``mesh`` on its own shard of the batch (a ``shard_map``).

  Every argument and every output of ``fn`` is a pytree of arrays whose leading axis is the batch,
  split over :data:`DATA_AXIS` (``P("data")``); whatever ``fn`` closes over (the parameters) is
  replicated. ``fn`` sees a batch of ``B / n`` examples and must treat examples independently: it
  holds no collective, so its outputs for a device's examples depend on that device's shard alone
  (each device may, e.g., run a ``while_loop`` for its own number of iterations). Do not
  differentiate through it with respect to what it closes over (the early-stopping attacks it
  serves return ``stop_gradient`` inputs).

  Args:
    fn: ``(*batch_arrays) -> pytree of batch arrays``.
    mesh: a mesh (or abstract mesh) with the axis :data:`DATA_AXIS`, e.g. :func:`data_mesh`.

  Returns:
    ``(*batch_arrays) -> outputs``, callable inside ``jax.jit``.

  Raises:
    ValueError: (when called) an argument with a leaf whose leading axis is not divisible by the
      number of devices on :data:`DATA_AXIS` (or a scalar), named.

  Example:
    >>> import jax.numpy as jnp
    >>> double = jax.jit(per_device(lambda x: 2 * x, make_mesh(jax.devices()[:1])))
    >>> double(jnp.arange(4.0)).tolist()
    [0.0, 2.0, 4.0, 6.0]
    >>> from jax.sharding import AbstractMesh, AxisType
    >>> eight = AbstractMesh((8,), ("data",), (AxisType.Auto,))
    >>> per_device(lambda x: 2 * x, eight)(jnp.zeros(12))
    Traceback (most recent call last):
    ...
    ValueError: x (argument 0 of <lambda>) has shape (12,): its leading (batch) axis must be ...
  """
  n = mesh.shape[DATA_AXIS]
  # check_vma=False: pmap's semantics. Values ``fn`` makes itself (a loop's zero counters) are
  # then not typed device-invariant, which a while loop carrying them next to its shard's values
  # would reject; with no collective and no gradient to the closed-over values nothing else changes.
  mapped = jax.shard_map(fn, mesh=mesh, in_specs=P(DATA_AXIS), out_specs=P(DATA_AXIS),
                         check_vma=False)

  try:
    names = list(inspect.signature(fn).parameters)
  except (TypeError, ValueError):
    names = []

  @functools.wraps(fn)
  def run(*args):
    for i, arg in enumerate(args):
      for leaf in jax.tree.leaves(arg):
        if not jnp.ndim(leaf) or jnp.shape(leaf)[0] % n:
          name = names[i] if i < len(names) else f"argument {i}"
          raise ValueError(f"{name} (argument {i} of {getattr(fn, '__name__', 'fn')}) has shape "
                           f"{jnp.shape(leaf)}: its leading (batch) axis must be divisible by "
                           f"the {n} devices of the mesh's {DATA_AXIS!r} axis")
    return mapped(*args)

  return run


def jit_data_parallel(fn: Callable, mesh, *, donate_state: bool = True) -> Callable:
  """``jax.jit(fn)`` for ``fn(state, batch) -> (state, metrics)`` with the state replicated and the
  batch sharded over the mesh.

  ``fn`` is traced under ``mesh``'s abstract mesh, so parts of the step that work per device (the
  attacks' compaction) find it with :func:`data_mesh`.
  """
  rep, data = replicated(mesh), batch_sharded(mesh)

  @functools.wraps(fn)
  def traced_on_mesh(*args):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args)

  return jax.jit(traced_on_mesh, in_shardings=(rep, data), out_shardings=(rep, rep),
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
