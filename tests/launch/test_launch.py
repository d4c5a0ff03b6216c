"""The README's path through the launchers: train, then eval and analyze the checkpoint (subprocesses)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT)


def _run(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=ENV, check=True, timeout=600,
                        capture_output=True, text=True)


def test_train_then_eval_then_analyze(tmp_path):
  wd = str(tmp_path / "run")
  out = _run("launch.train", "--config=launch/configs/digits.py", f"--workdir={wd}",
             "--config.num_epochs=3", "--config.num_steps=3", "--config.progress=False")
  assert "test (best checkpoint" in out.stdout
  out = _run("launch.eval", f"--workdir={wd}", "--num_examples=40", "--n_iter=5",
             "--n_queries=20")
  header = "| Clean | FGSM | PGD-20 | PGD-100 | CW-inf | APGD-CE | APGD-T | AA | worst class |"
  assert header in out.stdout
  with open(os.path.join(wd, "eval_best.json")) as f:
    report = json.load(f)
  assert report["num_examples"] == 40 and report["method"] == "pgd_at"
  assert report["robust_accuracy"] <= min(report["attack_accuracy"].values())
  assert os.path.getsize(os.path.join(wd, "eval_best.md")) > len(header)
  _run("launch.analyze", f"--checkpoint={wd}", "--what=gap,fosc", "--num_examples=32")
  produced = os.listdir(os.path.join(wd, "analysis"))
  assert any(p.endswith(".png") for p in produced) and any(p.endswith(".json") for p in produced)
