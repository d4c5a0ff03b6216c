"""train_and_evaluate end to end on the embedded digits: learning, NaN handling, bit-exact resume."""

import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from robust_jax import checkpoint as ckpt_lib
from robust_jax import metrics as metrics_lib
from robust_jax.training import config as config_lib
from robust_jax.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _digits_config(**overrides):
  c = config_lib.base_config()
  c.update(dict(dataset="digits", model="mlp", eps=0.2, step_size=0.05, num_steps=5, batch_size=64,
                num_epochs=12, learning_rate=0.1, lr_decay_epochs=(9,), lr_decay_factors=(0.1,),
                progress=False, select_attack_steps=10, test_attack_steps=10))
  c.update(overrides)
  return c


@pytest.fixture(scope="module")
def standard_and_pgd_at(tmp_path_factory):
  out = {}
  for method in ("standard", "pgd_at"):
    wd = str(tmp_path_factory.mktemp(method))
    out[method] = (wd, loop.train_and_evaluate(_digits_config(method=method), wd))
  return out


def test_pgd_at_is_clearly_more_robust_than_standard(standard_and_pgd_at):
  std = standard_and_pgd_at["standard"][1]["test"]
  at = standard_and_pgd_at["pgd_at"][1]["test"]
  assert std["clean_acc"] > 0.8 and at["clean_acc"] > 0.85  # both learned
  assert std["robust_acc"] < 0.15  # an undefended model falls to PGD at eps 0.2
  assert at["robust_acc"] > std["robust_acc"] + 0.25


def test_metrics_file_and_selection_on_validation(standard_and_pgd_at):
  wd, summary = standard_and_pgd_at["pgd_at"]
  records = metrics_lib.read(wd)
  train = [r for r in records if r["kind"] == "train"]
  evals = [r for r in records if r["kind"] == "eval" and r["split"] == "validation"]
  assert [r["epoch"] for r in train] == list(range(12))
  assert len(evals) == 12
  best = max(evals, key=lambda r: r["robust_acc"])
  assert summary["best"]["epoch"] == best["epoch"]  # selected on validation, not test
  assert os.listdir(os.path.join(wd, "tb"))
  for k in ("loss", "clean_acc", "adv_acc", "attack_steps", "fosc", "kappa", "lr"):
    assert np.isfinite(train[-1][k]), k


def test_load_classifier_gives_the_selected_model(standard_and_pgd_at):
  wd, summary = standard_and_pgd_at["pgd_at"]
  logits_fn, info = loop.load_classifier(wd)
  assert info["method"] == "pgd_at" and info["eps"] == 0.2 and info["dataset"] == "digits"
  from robust_jax.data import pipeline
  ds = pipeline.load_dataset("digits")
  acc = float(np.mean(np.argmax(logits_fn(ds.test["image"]), -1) == ds.test["label"]))
  assert acc == pytest.approx(summary["test"]["clean_acc"], abs=1e-6)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  wd = str(tmp_path)
  loop.train_and_evaluate(_digits_config(num_epochs=1, method="pgd_at"), wd)
  manager = ckpt_lib.CheckpointManager(os.path.join(wd, "checkpoints"), read_only=True)
  good_step = manager.latest_step()
  # Resume with an absurd learning rate (a trajectory change, so allowed explicitly): the loss
  # blows up in the second epoch.
  with pytest.raises(FloatingPointError, match=r"NaN/inf at step \d+"):
    loop.train_and_evaluate(_digits_config(num_epochs=2, learning_rate=1e30,
                                           allow_config_change=("learning_rate",)), wd)
  manager = ckpt_lib.CheckpointManager(os.path.join(wd, "checkpoints"), read_only=True)
  assert manager.latest_step() == good_step
  state, _ = manager.restore_raw("latest")
  assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(state["params"]))


def test_resume_with_an_incompatible_config_names_the_fields(tmp_path):
  wd = str(tmp_path)
  loop.train_and_evaluate(_digits_config(num_epochs=1), wd)
  with pytest.raises(ValueError, match="method"):
    loop.train_and_evaluate(_digits_config(num_epochs=2, method="trades"), wd)


def _train_cmd(workdir, extra=()):
  return [sys.executable, "-m", "launch.train", "--config=launch/configs/digits.py",
          f"--workdir={workdir}", "--config.num_epochs=5", "--config.batch_size=16",
          "--config.num_steps=5", "--config.checkpoint_every_steps=7", "--config.progress=False",
          "--config.lr_decay_epochs=(3,4)", "--config.test_attack_steps=5",
          "--config.select_attack_steps=5", *extra]


def _final_params(workdir):
  manager = ckpt_lib.CheckpointManager(os.path.join(workdir, "checkpoints"), read_only=True)
  state, meta = manager.restore_raw("latest")
  return manager.latest_step(), state


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT)
  ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
  subprocess.run(_train_cmd(ref), cwd=ROOT, env=env, check=True, timeout=600,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  steps_per_epoch = 1294 // 16
  proc = subprocess.Popen(_train_cmd(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  latest = os.path.join(killed, "checkpoints", "latest")
  deadline = time.time() + 300
  target = steps_per_epoch + 20  # in the middle of the second epoch
  try:
    while time.time() < deadline:
      steps = [int(d) for d in os.listdir(latest) if d.isdigit()] if os.path.isdir(latest) else []
      if steps and max(steps) >= target:
        break
      if proc.poll() is not None:
        break
      time.sleep(0.005)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  killed_at = max(int(d) for d in os.listdir(latest) if d.isdigit())
  assert killed_at < 5 * steps_per_epoch
  subprocess.run(_train_cmd(killed), cwd=ROOT, env=env, check=True, timeout=600,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  step_ref, state_ref = _final_params(ref)
  step_killed, state_killed = _final_params(killed)
  assert step_ref == step_killed == 5 * steps_per_epoch
  chex.assert_trees_all_equal(state_ref, state_killed)  # bitwise
  # Nothing lost in the metrics either: one train record per epoch.
  epochs = [r["epoch"] for r in metrics_lib.read(killed) if r["kind"] == "train"]
  assert sorted(set(epochs)) == list(range(5))
