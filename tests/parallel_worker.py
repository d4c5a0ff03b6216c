"""Runs a few training steps on a device mesh and prints a digest of the parameters (test helper).

  python tests/parallel_worker.py single N_DEVICES_VISIBLE USE_DEVICES OUT.npz
  python tests/parallel_worker.py multi PROCESS_ID PORT OUT.npz     (2 processes, 1 device each)
"""

import os
import sys

mode = sys.argv[1]
if mode == "single":
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={sys.argv[2]}")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from robust_jax import models, parallel  # noqa: E402
from robust_jax.training import config as config_lib  # noqa: E402
from robust_jax.training import state as state_lib  # noqa: E402
from robust_jax.training import step as step_lib  # noqa: E402

GLOBAL_BATCH = 16


def run(mesh, process_slice=None):
  c = config_lib.base_config()
  c.update(dict(model="cnn4", method="trades", eps=0.2, step_size=0.05, num_steps=3,
                batch_size=GLOBAL_BATCH, weight_perturbation="awp", awp_gamma=0.01))
  model = models.get_model("cnn4", num_classes=10)
  tx, lr_fn = step_lib.make_optimizer(c, 10)
  state = state_lib.create(model=model, tx=tx, sample_input=np.zeros((1, 8, 8, 1), np.float32),
                           seed=0)
  step = parallel.jit_data_parallel(step_lib.make_train_step(c, model, tx, lr_fn, 10), mesh)
  init_leaves = [np.asarray(a) for a in jax.tree.leaves(state.params)]
  state = parallel.replicate(state, mesh)
  rng = np.random.default_rng(0)
  for _ in range(3):
    batch = {"image": rng.uniform(size=(GLOBAL_BATCH, 8, 8, 1)).astype(np.float32),
             "label": rng.integers(0, 10, GLOBAL_BATCH).astype(np.int32)}
    if process_slice is not None:
      batch = {k: v[process_slice] for k, v in batch.items()}
    state, metrics = step(state, parallel.shard_batch(batch, mesh))
  local = lambda a: np.asarray(a.addressable_shards[0].data)  # replicated: every copy is the state
  params = jax.tree.map(local, state.params)
  stats = jax.tree.map(local, state.batch_stats)
  leaves = jax.tree.leaves(params) + jax.tree.leaves(stats)
  out = {f"a{i}": np.asarray(a) for i, a in enumerate(leaves)}
  out.update({f"init{i}": a for i, a in enumerate(init_leaves)})
  return out


if mode == "single":
  n_use = int(sys.argv[3])
  out = run(parallel.make_mesh(jax.devices()[:n_use]))
  np.savez(sys.argv[4], **out)
else:
  pid, port = int(sys.argv[2]), int(sys.argv[3])
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                             process_id=pid, initialization_timeout=60,
                             coordinator_bind_address=f"127.0.0.1:{port}")
  assert jax.process_count() == 2 and jax.device_count() == 2
  half = GLOBAL_BATCH // 2
  out = run(parallel.make_mesh(), process_slice=slice(pid * half, (pid + 1) * half))
  np.savez(sys.argv[4], **out)
  jax.distributed.shutdown()
