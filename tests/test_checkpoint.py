"""Checkpointing: round trips, rotation with a kept best, corruption fallback, kills, compatibility."""

import glob
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robust_jax import checkpoint as ckpt
from robust_jax.training import restore

# When tensorstore fails to read a corrupt array, orbax closes its event loop while sibling reads are
# still pending; their callbacks then hit the closed loop ("RuntimeError: Event loop is closed",
# ignored by Python, reported by pytest at random). Harmless: the restore has already raised.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")


def _state(scale=1.0):
  scale = float(scale)
  params = {"conv": {"kernel": jnp.full((3, 3, 1, 4), scale), "bias": jnp.zeros(4)},
            "dense": {"kernel": jnp.arange(12.0).reshape(4, 3) * scale}}
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
  opt_state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, opt_state = tx.update(grads, opt_state, params)   # non-trivial mu, nu, count
  return {"params": params, "opt_state": opt_state, "step": jnp.asarray(int(scale), jnp.int32),
          "key": jax.random.key(int(scale)), "keys": jax.random.split(jax.random.key(7), 3),
          "mask": np.arange(5) % 2 == 0}


def _assert_states_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  def eq(x, y):
    if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
      assert x.dtype == y.dtype
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  jax.tree.map(eq, a, b)


def _save_steps(mngr, steps, metrics=None):
  for i, step in enumerate(steps):
    metric = None if metrics is None else metrics[i]
    mngr.save(step, _state(step), metadata={"epoch": step, "metric": metric}, metric=metric)
  mngr.wait_until_finished()


def _step_dir(root, step, which="latest"):
  return os.path.join(root, which, str(step))


CORRUPTIONS = {
    # Garbage bytes over the array data (tensorstore's OCDBT store detects it).
    "garbage_array_data": lambda p: [
        open(f, "wb").write(b"\x00garbage" * 8) for f in glob.glob(f"{p}/state/d/*")],
    "truncated_array_data": lambda p: [
        open(f, "r+b").truncate(os.path.getsize(f) // 2) for f in glob.glob(f"{p}/state/d/*")],
    "missing_manifest": lambda p: os.remove(f"{p}/state/manifest.ocdbt"),
    "missing_state": lambda p: shutil.rmtree(f"{p}/state"),
    "garbage_metadata_json": lambda p: open(f"{p}/metadata/metadata", "w").write("{garb"),
    "missing_info": lambda p: shutil.rmtree(f"{p}/info"),
    "empty_dir": lambda p: [shutil.rmtree(os.path.join(p, x)) if os.path.isdir(os.path.join(p, x))
                            else os.remove(os.path.join(p, x)) for x in os.listdir(p)],
}


def test_round_trip_preserves_namedtuples_keys_and_metadata(tmp_path):
  state = _state(3.0)
  config = {"model": "cnn", "eps": 8 / 255, "steps": (10, 20), "nested": {"lr": np.float32(0.1)}}
  with ckpt.CheckpointManager(tmp_path) as mngr:
    result = mngr.save(3, state, metadata={"config": config, "epoch": 1, "step_in_epoch": 5})
    assert result == ckpt.SaveResult(saved=True, best=False)
  mngr = ckpt.CheckpointManager(tmp_path)
  restored, metadata = mngr.restore_latest(ckpt.abstract_state(state))
  _assert_states_equal(restored, state)
  adam_state = restored["opt_state"][1][0]
  assert isinstance(adam_state, optax.ScaleByAdamState) and int(adam_state.count) == 1
  assert isinstance(restored["opt_state"][0], optax.EmptyState)
  assert restored["key"].dtype == state["key"].dtype       # a typed key, not raw data
  assert metadata == {"config": {"model": "cnn", "eps": 8 / 255, "steps": [10, 20],
                                 "nested": {"lr": pytest.approx(0.1)}},
                      "epoch": 1, "step_in_epoch": 5}
  # Also with an abstract target from jax.eval_shape (typed key dtype in the target).
  restored, _ = mngr.restore_latest(jax.eval_shape(lambda: _state(3.0)) | {"mask": state["mask"]})
  _assert_states_equal(restored, state)
  mngr.close()


def test_round_trip_flax_train_state(tmp_path):
  from flax.training import train_state  # pylint: disable=g-import-not-at-top

  def make(scale):
    params = {"w": jnp.full((2, 3), scale)}
    return train_state.TrainState.create(apply_fn=lambda p, x: x, params=params, tx=optax.sgd(0.1, 0.9))

  with ckpt.CheckpointManager(tmp_path) as mngr:
    mngr.save(1, make(2.0))
  restored, _ = ckpt.CheckpointManager(tmp_path).restore_latest(ckpt.abstract_state(make(0.0)))
  assert isinstance(restored, train_state.TrainState)
  np.testing.assert_array_equal(restored.params["w"], np.full((2, 3), 2.0))


def test_rotation_keeps_last_n_and_the_best(tmp_path):
  metrics = [0.1, 0.9, 0.3, 0.2, 0.5, float("nan")]
  with ckpt.CheckpointManager(tmp_path, max_to_keep=2) as mngr:
    results = [mngr.save(s, _state(s), metadata={"epoch": s}, metric=m)
               for s, m in zip(range(1, 7), metrics)]
    assert [r.best for r in results] == [True, True, False, False, False, False]
    assert mngr.all_steps() == [5, 6] and mngr.best_metric == 0.9
  assert sorted(os.listdir(tmp_path / "latest")) == ["5", "6"]
  mngr = ckpt.CheckpointManager(tmp_path, max_to_keep=2)
  assert mngr.best_metric == 0.9                          # re-read from disk
  best, metadata = mngr.restore_best(ckpt.abstract_state(_state()))
  _assert_states_equal(best, _state(2))
  assert metadata == {"epoch": 2}
  latest, metadata = mngr.restore_latest(ckpt.abstract_state(_state()))
  _assert_states_equal(latest, _state(6))
  # A later, better metric replaces the best; the previous best is kept as a fallback.
  assert mngr.save(7, _state(7), metric=0.95).best
  mngr.wait_until_finished()
  assert len(os.listdir(tmp_path / "best")) == ckpt.BEST_TO_KEEP
  _assert_states_equal(mngr.restore_best(ckpt.abstract_state(_state()))[0], _state(7))
  mngr.close()


def test_save_skips_steps_that_are_not_newer(tmp_path):
  with ckpt.CheckpointManager(tmp_path) as mngr:
    assert mngr.save(5, _state(5)).saved
    assert not mngr.save(5, _state(6)).saved               # e.g. right after resuming from 5
    assert not mngr.save(4, _state(4)).saved
    assert mngr.save(6, _state(6)).saved
  assert ckpt.CheckpointManager(tmp_path).all_steps() == [5, 6]


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_latest_falls_back_to_previous(tmp_path, caplog, corruption):
  with ckpt.CheckpointManager(tmp_path) as mngr:
    _save_steps(mngr, [1, 2, 3])
  CORRUPTIONS[corruption](_step_dir(tmp_path, 3))
  mngr = ckpt.CheckpointManager(tmp_path)
  with caplog.at_level(logging.WARNING):
    state, metadata = mngr.restore_latest(ckpt.abstract_state(_state()))
  _assert_states_equal(state, _state(2))
  assert metadata["epoch"] == 2
  assert any("falling back to the previous one" in r.getMessage() for r in caplog.records)
  # The good checkpoints are untouched; the corrupt one is moved aside, not deleted.
  assert mngr.all_steps() == [1, 2]
  assert os.path.isdir(_step_dir(tmp_path, 2))
  assert [d.startswith("latest-3-") for d in os.listdir(tmp_path / "corrupt")] == [True]
  # No crash loop: the resumed run saves step 3 again, and the next start restores it.
  assert mngr.save(3, _state(30)).saved
  mngr.close()
  state, _ = ckpt.CheckpointManager(tmp_path).restore_latest(ckpt.abstract_state(_state()))
  _assert_states_equal(state, _state(30))


def test_all_corrupt_returns_none(tmp_path, caplog):
  with ckpt.CheckpointManager(tmp_path) as mngr:
    _save_steps(mngr, [1, 2])
  CORRUPTIONS["garbage_array_data"](_step_dir(tmp_path, 1))
  CORRUPTIONS["missing_info"](_step_dir(tmp_path, 2))
  mngr = ckpt.CheckpointManager(tmp_path)
  with caplog.at_level(logging.WARNING):
    assert mngr.restore_latest(ckpt.abstract_state(_state())) is None
  assert sum("falling back" in r.getMessage() for r in caplog.records) == 2
  assert mngr.all_steps() == [] and len(os.listdir(tmp_path / "corrupt")) == 2
  assert mngr.save(1, _state(1)).saved                    # a fresh run can start over
  mngr.close()


def test_nothing_saved_returns_none(tmp_path):
  mngr = ckpt.CheckpointManager(tmp_path)
  assert mngr.restore_latest(ckpt.abstract_state(_state())) is None
  assert mngr.restore_best(ckpt.abstract_state(_state())) is None
  assert mngr.restore_raw("best") is None and mngr.restore_metadata() is None
  assert mngr.latest_step() is None and mngr.best_metric is None
  assert ckpt.CheckpointManager(tmp_path / "absent", read_only=True).restore_raw() is None
  assert not os.path.exists(tmp_path / "absent")


def test_corrupt_best_falls_back_to_previous_best(tmp_path, caplog):
  with ckpt.CheckpointManager(tmp_path) as mngr:
    _save_steps(mngr, [1, 2], metrics=[0.3, 0.6])
  CORRUPTIONS["garbage_array_data"](_step_dir(tmp_path, 2, "best"))
  mngr = ckpt.CheckpointManager(tmp_path)
  with caplog.at_level(logging.WARNING):
    state, metadata = mngr.restore_best(ckpt.abstract_state(_state()))
  _assert_states_equal(state, _state(1))
  assert metadata["metric"] == 0.3 and mngr.best_metric == 0.3
  assert any("corrupt" in r.getMessage() for r in caplog.records)
  mngr.close()


def test_mismatched_target_raises_and_moves_nothing(tmp_path):
  with ckpt.CheckpointManager(tmp_path) as mngr:
    _save_steps(mngr, [1, 2])
  other = _state()
  other["params"]["dense"]["kernel"] = jnp.zeros((4, 5))
  del other["mask"]
  mngr = ckpt.CheckpointManager(tmp_path)
  with pytest.raises(ValueError, match=r"does not match the checkpoint") as info:
    mngr.restore_latest(ckpt.abstract_state(other))
  msg = str(info.value)
  assert "['params']['dense']['kernel']: checkpoint [4, 3] vs target [4, 5]" in msg
  assert "['mask']: checkpoint [5] vs target <missing>" in msg
  assert mngr.all_steps() == [1, 2] and not os.path.exists(tmp_path / "corrupt")


def test_leftover_tmp_dir_from_a_kill_is_ignored_and_cleaned(tmp_path):
  with ckpt.CheckpointManager(tmp_path) as mngr:
    _save_steps(mngr, [1])
  # What a SIGKILL during the write of step 2 leaves behind: an unfinished temporary directory.
  tmp = tmp_path / "latest" / "2.orbax-checkpoint-tmp"   # orbax 0.12.8's name (no timestamp)
  shutil.copytree(_step_dir(tmp_path, 1), tmp)
  shutil.rmtree(tmp / "info")
  reader = ckpt.CheckpointManager(tmp_path, read_only=True)
  assert reader.all_steps() == [1] and tmp.exists()      # a reader never deletes a writer's tmp dir
  mngr = ckpt.CheckpointManager(tmp_path)
  assert mngr.all_steps() == [1]
  state, _ = mngr.restore_latest(ckpt.abstract_state(_state()))
  _assert_states_equal(state, _state(1))
  mngr.wait_until_finished()
  assert not tmp.exists()                                 # cleaned on start
  assert mngr.save(2, _state(2)).saved
  mngr.close()


_KILL_WORKER = textwrap.dedent("""
    import sys
    import jax.numpy as jnp
    from robust_jax import checkpoint as ckpt
    mngr = ckpt.CheckpointManager(sys.argv[1], max_to_keep=2)
    for step in range(1, 100000):
      mngr.save(step, {"w": jnp.full((2_000_000,), float(step)), "step": jnp.asarray(step)},
                metadata={"step": step})
""")


def test_sigkill_during_async_save_leaves_a_restorable_checkpoint(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.Popen([sys.executable, "-c", _KILL_WORKER, str(tmp_path)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  latest = tmp_path / "latest"
  saw_tmp = False
  try:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
      names = os.listdir(latest) if latest.exists() else []
      # Kill while a save is half written (its array store already exists in the tmp dir).
      if any(n.isdigit() for n in names) and any(
          "orbax-checkpoint-tmp" in n and (latest / n / "state").exists() for n in names):
        saw_tmp = True
        break
      time.sleep(0.005)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert saw_tmp, "the worker never got to write a checkpoint"
  mngr = ckpt.CheckpointManager(tmp_path, max_to_keep=2)
  target = {"w": jax.ShapeDtypeStruct((2_000_000,), jnp.float32),
            "step": jax.ShapeDtypeStruct((), jnp.int32)}
  finished = max(int(n) for n in os.listdir(latest) if n.isdigit())
  state, metadata = mngr.restore_latest(target)
  step = metadata["step"]
  assert step == finished
  assert int(state["step"]) == step and float(state["w"].min()) == float(state["w"].max()) == step
  mngr.wait_until_finished()
  assert not [n for n in os.listdir(latest) if "tmp" in n]
  mngr.close()


def test_restore_raw_and_metadata_without_a_target(tmp_path):
  state = _state(4.0)
  with ckpt.CheckpointManager(tmp_path) as mngr:
    mngr.save(4, state, metadata={"config": {"model": "cnn"}}, metric=0.5)
  reader = ckpt.CheckpointManager(tmp_path, read_only=True)
  assert reader.restore_metadata("best") == {"config": {"model": "cnn"}}
  raw, metadata = reader.restore_raw("best")
  assert metadata == {"config": {"model": "cnn"}}
  assert isinstance(raw["params"]["dense"]["kernel"], np.ndarray)
  np.testing.assert_array_equal(raw["params"]["dense"]["kernel"], state["params"]["dense"]["kernel"])
  assert raw["key"].dtype == np.uint32 and raw["key"].shape == (2,)
  np.testing.assert_array_equal(raw["keys"], jax.random.key_data(state["keys"]))
  adam = raw["opt_state"][1][0]                            # NamedTuples become dicts
  assert isinstance(adam, dict) and set(adam) == {"count", "mu", "nu"}
  with pytest.raises(ValueError, match="read_only"):
    reader.save(5, state)
  with pytest.raises(ValueError, match=r"which must be one of \['latest', 'best'\]"):
    reader.restore_raw("newest")


def test_bad_input(tmp_path):
  with pytest.raises(ValueError, match="max_to_keep must be an int >= 1"):
    ckpt.CheckpointManager(tmp_path, max_to_keep=0)
  with ckpt.CheckpointManager(tmp_path) as mngr:
    with pytest.raises(ValueError, match="step must be an int >= 0"):
      mngr.save(-1, _state())
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
      mngr.save(1, _state(), metadata={"fn": print})


def test_check_compatible_names_every_mismatching_field():
  saved = {"model": "resnet18", "dataset": "cifar10", "method": "trades",
           "attack": {"eps": 8 / 255, "steps": [10]}, "seed": 0}
  current = {"model": "wrn34", "dataset": "cifar10", "method": "pgd_at",
             "attack": {"eps": 8 / 255, "steps": (10,)}, "seed": 1}
  fields = ["model", "dataset", "method", "attack.eps", "attack.steps"]
  with pytest.raises(ValueError) as info:
    restore.check_compatible(saved, current, fields)
  msg = str(info.value)
  assert "model: checkpoint 'resnet18' != config 'wrn34'" in msg
  assert "method: checkpoint 'trades' != config 'pgd_at'" in msg
  assert "dataset" not in msg and "attack" not in msg      # equal ones (tuple == list) pass
  restore.check_compatible(saved, dict(current, model="resnet18", method="trades"), fields)
  restore.check_compatible(saved, current, ["seed"][:0])
  with pytest.raises(ValueError, match=r"attack.norm: checkpoint '<missing>' != config 'l2'"):
    restore.check_compatible(saved, {"attack": {"norm": "l2"}}, ["attack.norm"])
  with pytest.raises(ValueError, match="fields must be a sequence"):
    restore.check_compatible(saved, current, "model")


def test_check_compatible_accepts_config_dicts():
  ml_collections = pytest.importorskip("ml_collections")
  config = ml_collections.ConfigDict({"model": "cnn", "attack": {"eps": 0.1}})
  restore.check_compatible({"model": "cnn", "attack": {"eps": 0.1}}, config, ["model", "attack.eps"])
  with pytest.raises(ValueError, match="attack.eps: checkpoint 0.2 != config 0.1"):
    restore.check_compatible({"model": "cnn", "attack": {"eps": 0.2}}, config, ["attack.eps"])
