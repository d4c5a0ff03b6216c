"""Runs that never lose work or lie (issue 15, the training loop): pre-emption, every latest checkpoint
corrupt, two trainers on one workdir, a full disk, resume with a changed config, a finished run.

Each test reproduces the fault on the embedded digits with a tiny MLP and checks the guarantee:
bitwise equality with an uninterrupted run, exit codes, and messages that name what happened.
"""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
from jax.experimental.compilation_cache import compilation_cache
import orbax.checkpoint as ocp
import pytest

from launch.configs import digits as digits_recipe
from robust_jax import checkpoint as ckpt_lib
from robust_jax import metrics as metrics_lib
from robust_jax.training import loop, preemption, resume, workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT)

_CACHE_OPTIONS = {"jax_compilation_cache_dir": None,
                  "jax_persistent_cache_min_compile_time_secs": 0,
                  "jax_persistent_cache_min_entry_size_bytes": 0}


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
  """One persistent XLA cache for this module's runs (in-process and subprocess): the same few
  programs are compiled once instead of once per run (compilation is ~80% of a digits run)."""
  options = dict(_CACHE_OPTIONS, jax_compilation_cache_dir=str(tmp_path_factory.mktemp("xla")))
  before = {k: getattr(jax.config, k) for k in options}
  for k, v in options.items():
    jax.config.update(k, v)
    ENV[k.upper()] = str(v)
  compilation_cache.reset_cache()
  yield
  for k, v in before.items():
    jax.config.update(k, v)
    ENV.pop(k.upper(), None)
  compilation_cache.reset_cache()

# The same run in-process (config) and on the command line (flags).
_OVERRIDES = dict(num_epochs=3, batch_size=64, num_steps=3, select_attack_steps=3,
                  test_attack_steps=3, progress=False, lr_decay_epochs=(2,), lr_decay_factors=(0.1,))


def _config(**overrides):
  c = digits_recipe.get_config()
  c.update(dict(_OVERRIDES, **overrides))
  return c


def _flags(**overrides):
  return [f"--config.{k}={v!r}" if isinstance(v, tuple) else f"--config.{k}={v}"
          for k, v in dict(_OVERRIDES, **overrides).items()]


def _train_cmd(workdir, **overrides):
  return [sys.executable, "-m", "launch.train", "--config=launch/configs/digits.py",
          f"--workdir={workdir}", *_flags(**overrides)]


def _latest(workdir):
  manager = ckpt_lib.CheckpointManager(os.path.join(workdir, "checkpoints"), read_only=True)
  return manager.latest_step(), manager.restore_raw("latest")[0]


def _records(workdir, kind=None):
  return [r for r in metrics_lib.read(workdir) if kind is None or r["kind"] == kind]


def _assert_metrics_never_go_back(workdir, num_epochs, num_tests=1):
  records = _records(workdir)
  for kind in ("train", "eval"):
    steps = [r["step"] for r in records if r["kind"] == kind]
    assert steps == sorted(steps), (kind, steps)
  assert [r["epoch"] for r in records if r["kind"] == "train"] == list(range(num_epochs))
  tests = [r for r in records if r["kind"] == "eval" and r["split"] == "test"]
  assert len(tests) == num_tests, tests
  assert tests[-1]["step"] >= max(r["step"] for r in records if r["kind"] == "eval")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted 3-epoch run: ``(workdir, latest step, latest state)``."""
  wd = str(tmp_path_factory.mktemp("reference"))
  loop.train_and_evaluate(_config(), wd)
  return (wd,) + _latest(wd)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """``epochs -> a fresh copy of a finished run of that many epochs`` (each trained once)."""
  done = {}

  def copy(epochs, dest):
    if epochs not in done:
      done[epochs] = str(tmp_path_factory.mktemp(f"epochs{epochs}"))
      loop.train_and_evaluate(_config(num_epochs=epochs), done[epochs])
    shutil.copytree(done[epochs], dest)
    return dest
  return copy


# ------------------------------------------------------------------------------------ SIGTERM


def _interrupt(wd, max_delay):
  """Starts the trainer, SIGTERMs it at a random moment after its first epoch; returns
  ``(returncode, stderr, delay)``."""
  proc = subprocess.Popen(_train_cmd(wd), cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
  first = proc.stdout.readline()   # epoch 1 is done: compiled, and training epoch 2
  delay = random.uniform(0.0, max_delay)
  time.sleep(delay)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert first.startswith("epoch 1/"), (first, err)
  return proc.returncode, err, delay


def test_sigterm_at_a_random_moment_then_resume_is_bitwise_identical(tmp_path, reference):
  _, step_ref, state_ref = reference
  for attempt in range(4):   # a loaded machine may finish the last two epochs within the delay
    wd = str(tmp_path / f"interrupted{attempt}")
    rc, err, delay = _interrupt(wd, max_delay=0.2 / 2 ** attempt)
    if rc != 0:
      break
  assert rc == preemption.EXIT_PREEMPTED, (delay, rc, err[-2000:])
  saved = [line for line in err.splitlines() if "saved the checkpoint" in line]
  assert len(saved) == 1, err
  step = _records(wd, "preempted")[-1]["step"]
  assert f"latest/{step} (step {step}," in saved[0] and "rerun the same command" in saved[0]
  assert step < step_ref  # stopped before the end

  loop.train_and_evaluate(_config(), wd)   # resume
  step_res, state_res = _latest(wd)
  assert step_ref == step_res
  chex.assert_trees_all_equal(state_ref, state_res)  # bitwise: params, optimizer, rng, step
  _assert_metrics_never_go_back(wd, 3)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_second_signal_exits_at_once(sig):
  script = ("import os, signal, time\n"
            "from robust_jax.training import preemption\n"
            "with preemption.PreemptionGuard() as guard:\n"
            f"  os.kill(os.getpid(), signal.{sig})\n"
            "  assert guard.requested\n"
            f"  os.kill(os.getpid(), signal.{sig})\n"
            "  time.sleep(30)\n")
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=ENV, timeout=60,
                        capture_output=True, text=True)
  assert proc.returncode == -getattr(signal, sig), proc.stderr
  assert "exiting at once" in proc.stderr


def test_the_guard_restores_the_previous_handlers():
  before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
  with preemption.PreemptionGuard():
    assert signal.getsignal(signal.SIGTERM) != before[0]
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# ------------------------------------------------------------------- every latest checkpoint corrupt


def _corrupt(step_dir):
  with open(os.path.join(step_dir, "metadata", "metadata"), "w") as f:
    f.write("{garb")


def _corrupt_all(workdir, which):
  root = os.path.join(workdir, "checkpoints", which)
  for d in os.listdir(root):
    if d.isdigit():
      _corrupt(os.path.join(root, d))


def test_every_latest_corrupt_resumes_from_best_and_ends_bitwise_identical(tmp_path, reference,
                                                                          runs):
  wd = runs(2, str(tmp_path / "wd"))
  _corrupt_all(wd, "latest")
  loop.train_and_evaluate(_config(), wd)   # 3 epochs: from the best checkpoint on
  _, ref_step, ref_state = reference
  step, state = _latest(wd)
  assert step == ref_step
  chex.assert_trees_all_equal(state, ref_state)
  train = [r["epoch"] for r in _records(wd, "train")]
  assert train == sorted(train) and sorted(set(train)) == [0, 1, 2]


def test_nothing_restorable_stops_unless_restart(tmp_path, runs):
  wd = runs(1, str(tmp_path / "wd"))
  n_records = len(_records(wd))
  _corrupt_all(wd, "latest")
  _corrupt_all(wd, "best")
  for _ in range(2):   # and again: the moved-aside checkpoints still count as existing work
    with pytest.raises(resume.ResumeError, match=r"no checkpoint in .*checkpoints restores.*"
                       r"config\.restart=True"):
      loop.train_and_evaluate(_config(num_epochs=1), wd)
    assert len(_records(wd)) == n_records  # nothing overwritten
  loop.train_and_evaluate(_config(num_epochs=1, restart=True), wd)
  abandoned = [d for d in os.listdir(wd) if d.startswith("abandoned-")]
  assert len(abandoned) == 1
  assert os.path.exists(os.path.join(wd, abandoned[0], "metrics.jsonl"))
  assert [r["epoch"] for r in _records(wd, "train")] == [0]


# ------------------------------------------------------------------------- two trainers, one workdir


def test_a_second_trainer_is_refused_at_once_with_one_line(tmp_path):
  wd = str(tmp_path)
  with workdir_lock.WorkdirLock(wd):   # this process: a live holder on this host
    proc = subprocess.run(_train_cmd(wd), cwd=ROOT, env=ENV, timeout=120, capture_output=True,
                          text=True)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "in use by another trainer" in lines[0] and f"pid {os.getpid()}" in lines[0]
    assert os.path.join(wd, workdir_lock.LOCK_FILE) in lines[0]
    assert not os.path.exists(os.path.join(wd, "checkpoints"))  # refused before anything
  assert not os.path.exists(os.path.join(wd, workdir_lock.LOCK_FILE))  # released


def test_a_stale_lock_of_a_dead_trainer_is_replaced(tmp_path, caplog):
  wd = str(tmp_path)
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  with open(os.path.join(wd, workdir_lock.LOCK_FILE), "w") as f:
    json.dump({"host": os.uname().nodename, "pid": dead.pid, "since": time.time()}, f)
  with workdir_lock.WorkdirLock(wd) as lock:
    with open(lock.path) as f:
      assert json.load(f)["pid"] == os.getpid()
  assert any("stale lock" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------------- full disk


def test_a_full_disk_names_the_cause_the_checkpoint_and_the_last_good_one(tmp_path, monkeypatch):
  wd = str(tmp_path)
  real_save = ocp.CheckpointManager.save
  calls = []

  def save(self, step, *args, **kwargs):
    calls.append(step)
    if len(calls) > 2:
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  with pytest.raises(ckpt_lib.CheckpointWriteError) as info:
    loop.train_and_evaluate(_config(checkpoint_every_steps=5), wd)
  _assert_full_disk_error(info.value, wd)


def _assert_full_disk_error(error, wd):
  first = str(error).splitlines()[0]
  assert error.errno == errno.ENOSPC
  assert first.startswith("No space left on device"), first
  assert os.path.join(wd, "checkpoints") in first
  good = first.split("the last good checkpoint is ")[1].split(" (kept)")[0]
  step = int(os.path.basename(good))
  manager = ckpt_lib.CheckpointManager(os.path.join(wd, "checkpoints"), read_only=True)
  assert manager.latest_step() == step  # named, kept and restorable
  assert manager.restore_raw("latest") is not None


def _mount_tmpfs(path, size):
  os.makedirs(path, exist_ok=True)
  try:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], check=True,
                   capture_output=True, timeout=30)
  except (OSError, subprocess.SubprocessError):
    pytest.skip("cannot mount a small tmpfs here (needs root); the injected error covers it")


def test_a_real_full_filesystem(tmp_path, caplog):
  small = str(tmp_path / "small")
  _mount_tmpfs(small, "2500k")
  try:
    wd = os.path.join(small, "wd")
    with pytest.raises(ckpt_lib.CheckpointWriteError) as info:
      loop.train_and_evaluate(_config(checkpoint_every_steps=5), wd)
    _assert_full_disk_error(info.value, wd)
    assert "RESOURCE_EXHAUSTED" in str(info.value)
    # orbax's background-thread tracebacks for the same failure are held back.
    assert not [r for r in caplog.records if r.levelname == "ERROR" and "orbax" in r.pathname]
  finally:
    subprocess.run(["umount", "-l", small], check=False, timeout=30)


# ------------------------------------------------------------------------ changed config on resume


def test_a_changed_trajectory_field_is_refused_naming_it_unless_allowed(tmp_path, runs):
  wd = runs(1, str(tmp_path / "wd"))
  with pytest.raises(resume.ConfigChangeError) as info:
    loop.train_and_evaluate(_config(num_epochs=2, weight_decay=1e-3, step_size=0.04), wd)
  msg = str(info.value)
  assert "weight_decay (checkpoint 0.0005, now 0.001)" in msg and "step_size" in msg
  assert "num_epochs" not in msg   # extending a piecewise schedule is free
  # Accepted when named, and recorded.
  loop.train_and_evaluate(_config(num_epochs=2, weight_decay=1e-3, step_size=0.04,
                                  allow_config_change=("weight_decay", "step_size"),
                                  test_attack_steps=4), wd)
  (change,) = _records(wd, "config_change")
  assert change["allowed_by_allow_config_change"] == ["step_size", "weight_decay"]
  assert change["fields"]["weight_decay"] == {"checkpoint": 0.0005, "config": 0.001,
                                              "free": False}
  assert change["fields"]["test_attack_steps"]["free"]
  meta = ckpt_lib.CheckpointManager(os.path.join(wd, "checkpoints"),
                                    read_only=True).restore_metadata("latest")
  assert meta["config_changes"][0]["allowed_by_allow_config_change"] == ["step_size",
                                                                          "weight_decay"]


def test_num_epochs_is_refused_when_the_schedule_depends_on_it(tmp_path):
  wd = str(tmp_path)
  loop.train_and_evaluate(_config(num_epochs=1, lr_schedule="cosine"), wd)
  with pytest.raises(resume.ConfigChangeError, match=r"num_epochs .*lr_schedule='cosine'"):
    loop.train_and_evaluate(_config(num_epochs=2, lr_schedule="cosine"), wd)


def test_free_fields_are_listed_and_exist():
  from robust_jax.training import config as config_lib
  fields = set(config_lib.base_config().keys())
  assert set(config_lib.FIELDS_FREE_ON_RESUME) <= fields
  assert not set(config_lib.FIELDS_FREE_ON_RESUME) & set(config_lib.FIELDS_THAT_MUST_MATCH_ON_RESUME)


# ------------------------------------------------------------------------ finished run, metrics


def test_a_finished_run_does_nothing(reference, capsys):
  wd = reference[0]
  with open(os.path.join(wd, "metrics.jsonl"), "rb") as f:
    before = f.read()
  summary = loop.train_and_evaluate(_config(), wd)
  assert summary["finished"] and "clean_acc" in summary["test"]
  assert "finished at epoch 3" in capsys.readouterr().out
  with open(os.path.join(wd, "metrics.jsonl"), "rb") as f:
    assert f.read() == before   # no re-evaluation, no duplicate test record
  _assert_metrics_never_go_back(wd, 3)


def test_records_newer_than_the_restored_step_are_dropped(tmp_path, reference, runs):
  wd = runs(2, str(tmp_path / "wd"))
  step, _ = _latest(wd)
  # A kill after an epoch's records but before its checkpoint: records past the latest step, and a
  # line cut short.
  with open(os.path.join(wd, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"kind": "train", "step": step + 5, "epoch": 2}) + "\n")
    f.write('{"kind": "eval", "st')
  loop.train_and_evaluate(_config(), wd)
  # One test record per finished length (2, then 3 epochs), each after its validation records.
  _assert_metrics_never_go_back(wd, 3, num_tests=2)
  tests = [r for r in _records(wd, "eval") if r["split"] == "test"]
  assert [t["step"] for t in tests] == [step, reference[1]]
