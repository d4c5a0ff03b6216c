"""Compaction per device: on 8 devices, FAT's and Dynamic AT's compacted attacks keep trajectories.

Under ``parallel.jit_data_parallel`` on several devices each device runs the attack's while loop on
its own shard and halves it as its own examples stop (``attack_compaction``, per device). On 8 host
CPU devices (a process of its own: the device count is fixed when JAX starts), two training steps
of FAT and of Dynamic AT (the official unclipped start, ``fosc_reference="start"``) on a tiny MLP:

* with compaction equal those without (``attack_compaction=0``) on 8 devices: the means of the
  per-example step counts and kappa exactly, every other metric to the tolerances of the one-device
  compaction test (tests/attacks/test_attacks.py::test_compaction_keeps_trajectories_and_shrinks_
  the_batch: 1e-5 relative, 1e-6 absolute), the parameters to 1e-6;
* equal the one-device step (the random start is drawn for the global batch): the step counts
  exactly, the parameters to the criterion of tests/test_parallel.py;
* compaction happens: the compacted 8-device program holds one more while loop per level
  (per-device batch 16 -> 8 -> 4), and examples stop early while others take several steps.

Run as a script (``python test_compaction_devices.py METHOD OUT.npz``) this file is the worker.
"""

import os
import subprocess
import sys

if __name__ == "__main__":
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 128 examples: 16 per device, halved twice (16 -> 8 -> 4) on 8 devices, and 128 -> 64 -> 32 on one.
BATCH, K, LEVELS, NUM_STEPS = 128, 8, 2, 2
# Per method: eps, step and the stop rule's fields, so that the examples (every one starting
# correctly classified) stop at many different steps (FAT: tau = 0, at the first misclassified
# iterate; Dynamic AT: once FOSC <= c_0).
METHODS = {"fat": dict(eps=0.3, step_size=0.06),
           "dart": dict(eps=0.2, step_size=0.05, fosc_c_max=0.2, fosc_reference="start")}
# Metrics that are means of per-example integers: equal trajectories give equal values.
EXACT = ("attack_steps", "kappa", "stopped_early")


def _worker(method, out_path):
  """Trains NUM_STEPS steps on 8 devices with and without compaction and on one device; saves
  every step's metrics, the final parameters and the number of while loops of each program."""
  import jax  # pylint: disable=g-import-not-at-top

  from robust_jax import models, parallel  # pylint: disable=g-import-not-at-top
  from robust_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  from robust_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from robust_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top

  assert jax.device_count() == 8
  model = models.get_model("mlp", num_classes=10, hidden_sizes=(32,))

  def config(levels):
    c = config_lib.base_config()
    c.update(dict(model="mlp", method=method, num_steps=K, batch_size=BATCH,
                  attack_compaction=levels, **METHODS[method]))
    config_lib.validate(c)
    return c

  tx, lr_fn = step_lib.make_optimizer(config(LEVELS), 10)
  state = jax.device_get(state_lib.create(  # on the host: each run places (and donates) a copy
      model=model, tx=tx, sample_input=np.zeros((1, 8, 8, 1), np.float32), seed=0))
  x = np.random.default_rng(0).uniform(size=(BATCH, 8, 8, 1)).astype(np.float32)
  (k0, b0), (k1, b1) = ((p["kernel"], p["bias"]) for p in state.params.values())
  logits = np.maximum(x.reshape(BATCH, -1) @ k0 + b0, 0) @ k1 + b1  # the MLP, in NumPy
  batch = {"image": x, "label": np.argmax(logits, -1).astype(np.int32)}  # every example correct
  out = {f"init{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(state.params))}
  for n, levels in ((8, LEVELS), (8, 0), (1, LEVELS)):
    mesh, name = parallel.make_mesh(jax.devices()[:n]), f"d{n}_c{levels}"
    s, b = parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh)
    lowered = parallel.jit_data_parallel(
        step_lib.make_train_step(config(levels), model, tx, lr_fn, 10), mesh).lower(s, b)
    out[f"{name}_loops"] = lowered.as_text().count("stablehlo.while")
    step = lowered.compile()
    for t in range(NUM_STEPS):
      s, metrics = step(s, b)
      out.update({f"{name}_metric{t}_{k}": np.asarray(v) for k, v in metrics.items()})
    params = jax.tree.leaves(s.params)
    out.update({f"{name}_param{i}": np.asarray(a.addressable_shards[0].data)
                for i, a in enumerate(params)})
  np.savez(out_path, **out)


def _run_worker(method, tmp_path):
  out = str(tmp_path / f"{method}.npz")
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), method, out],
                        env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, timeout=300)
  assert proc.returncode == 0, proc.stderr.decode()[-3000:]
  with np.load(out) as f:
    return {k: f[k] for k in f.files}


def _group(r, prefix):
  return {k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)}


def _leaves(r, prefix):
  return [r[f"{prefix}{i}"] for i in range(len(_group(r, prefix)))]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_compaction_per_device_keeps_the_training_step(method, tmp_path):
  from tests.test_parallel import _assert_close  # pylint: disable=g-import-not-at-top

  r = _run_worker(method, tmp_path)
  compact, plain = _group(r, f"d8_c{LEVELS}_metric"), _group(r, "d8_c0_metric")
  # The test has teeth: compaction is in the program (one while loop per level, per device), and
  # examples stop early while others take several steps.
  assert r[f"d8_c{LEVELS}_loops"] == r["d8_c0_loops"] + LEVELS
  for t in range(NUM_STEPS):
    assert 0 < compact[f"{t}_stopped_early"] < 1 and compact[f"{t}_attack_steps"] > 2, t
  # 8 devices, compacted or not: the same metrics (the one-device compaction test's tolerances) and
  # parameters.
  assert compact.keys() == plain.keys()
  for k in compact:
    if k.split("_", 1)[1] in EXACT:
      np.testing.assert_array_equal(compact[k], plain[k], err_msg=k)
    else:
      np.testing.assert_allclose(compact[k], plain[k], rtol=1e-5, atol=1e-6, err_msg=k)
  for a, b in zip(_leaves(r, f"d8_c{LEVELS}_param"), _leaves(r, "d8_c0_param")):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  # And the 8-device step equals the 1-device step (tests/test_parallel.py's criterion), the
  # per-example step counts exactly.
  one = _group(r, f"d1_c{LEVELS}_metric")
  for k in compact:
    if k.split("_", 1)[1] in EXACT:
      np.testing.assert_array_equal(compact[k], one[k], err_msg=k)
  _assert_close(_leaves(r, f"d1_c{LEVELS}_param"), _leaves(r, f"d8_c{LEVELS}_param"),
                _leaves(r, "init"))


def test_compaction_is_per_device_under_a_data_mesh_and_off_without_one(monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import AbstractMesh, AxisType  # pylint: disable=g-import-not-at-top

  from robust_jax.training import adversary  # pylint: disable=g-import-not-at-top

  eight = AbstractMesh((8,), ("data",), (AxisType.Auto,))
  one = AbstractMesh((1,), ("data",), (AxisType.Auto,))
  monkeypatch.setattr(jax, "device_count", lambda: 1)
  assert adversary.compaction_placement(3) == (3, None)  # one device, no mesh: today's loop
  with jax.sharding.use_abstract_mesh(eight):
    assert adversary.compaction_placement(3) == (3, eight)  # each device compacts its shard
    assert adversary.compaction_placement(0) == (0, None)
  with jax.sharding.use_abstract_mesh(one):
    assert adversary.compaction_placement(3) == (3, None)
  monkeypatch.setattr(jax, "device_count", lambda: 8)
  assert adversary.compaction_placement(3) == (0, None)  # several devices, placement unknown


if __name__ == "__main__":
  _worker(sys.argv[1], sys.argv[2])
