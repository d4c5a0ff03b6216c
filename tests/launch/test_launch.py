"""The README's path through the launchers: train, then eval and analyze the checkpoint.

The launchers run as subprocesses. One tiny training run (module fixture) serves every test: the
README path, and the faults of issue 15 on the evaluation side (suite-named reports that a partial
run never overwrites, flags checked before anything loads, one-line errors without tracebacks, no
orbax read-only warnings, progress bars).
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT)


def _run(*args, check=True):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=ENV, check=check,
                        timeout=600, capture_output=True, text=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("launch") / "run")
  out = _run("launch.train", "--config=launch/configs/digits.py", f"--workdir={wd}",
             "--config.num_epochs=3", "--config.num_steps=3", "--config.progress=False")
  return wd, out


def _load(path):
  with open(path) as f:
    return json.load(f)


def test_train_then_eval_then_analyze(trained):
  wd, out = trained
  assert "test (best checkpoint" in out.stdout
  # The closing line says which split and attack each number is.
  assert "test clean accuracy" in out.stdout and "test PGD-20 robust accuracy" in out.stdout
  out = _run("launch.eval", f"--workdir={wd}", "--num_examples=40", "--n_iter=5",
             "--n_queries=20")
  header = "| Clean | FGSM | PGD-20 | PGD-100 | CW-inf | APGD-CE | APGD-T | AA | worst class |"
  assert header in out.stdout
  # Not the full default suite (40 examples, smaller budgets): its own files, named by the suite.
  report = _load(os.path.join(wd, "eval_best_n40_iter5_q20.json"))
  assert report["num_examples"] == 40 and report["method"] == "pgd_at"
  assert report["robust_accuracy"] <= min(report["attack_accuracy"].values())
  assert os.path.getsize(os.path.join(wd, "eval_best_n40_iter5_q20.md")) > len(header)
  assert not os.path.exists(os.path.join(wd, "eval_best.json"))
  _run("launch.analyze", f"--checkpoint={wd}", "--what=gap,fosc", "--num_examples=32")
  produced = os.listdir(os.path.join(wd, "analysis"))
  assert any(p.endswith(".png") for p in produced) and any(p.endswith(".json") for p in produced)
  settings = _load(os.path.join(wd, "analysis", "fosc_distribution.json"))["settings"]
  assert settings["split"] == "test" and settings["num_examples"] == 32
  assert settings["models"]["pgd_at"]["checkpoint_step"] is not None


def test_a_partial_eval_never_replaces_a_fuller_report(trained):
  wd, _ = trained
  full = os.path.join(wd, "eval_best.json")
  with open(full, "w") as f:  # stands for the full default suite's report
    json.dump({"suite": "eval_best"}, f)
  out = _run("launch.eval", f"--workdir={wd}", "--attacks=FGSM", "--num_examples=20",
             "--eps=0.1")
  assert _load(full) == {"suite": "eval_best"}
  record = _load(os.path.join(wd, "eval_best_FGSM_eps0.1_n20.json"))
  # What ran is in the record: eps, norm, examples, split, seed, budgets, checkpoint, version.
  assert record["eps"] == 0.1 and record["norm"] == "linf" and record["num_examples"] == 20
  assert record["split"] == "test" and record["seed"] == 0 and record["step"] > 0
  assert record["attack_settings"]["FGSM"]["attack"] == "fgsm"
  assert record["attack_settings"]["FGSM"]["eps"] == 0.1
  assert record["library_version"] and record["suite"] == "eval_best_FGSM_eps0.1_n20"
  assert "test split" in out.stdout and "step" in out.stdout
  # A progress bar per attack and batch on stderr; orbax's read-only warning is gone.
  assert "evaluate FGSM, batch 1/1" in out.stderr
  assert "Given directory is read only" not in out.stderr
  quiet = _run("launch.eval", f"--workdir={wd}", "--attacks=FGSM", "--num_examples=20",
               "--eps=0.1", "--noprogress")
  assert "evaluate FGSM" not in quiet.stderr


def test_eval_robustbench_writes_the_leaderboard_fields(trained):
  wd, _ = trained
  out = _run("launch.eval", f"--workdir={wd}", "--robustbench", "--num_examples=40", "--n_iter=3",
             "--n_queries=10", "--robustbench_name=tiny")
  path = os.path.join(wd, "model_info", "digits", "Linf", "tiny.json")
  info = _load(path)
  assert (info["dataset"], info["threat_model"], info["version"], info["n_examples"]) == (
      "digits", "Linf", "standard", 40)
  assert info["name"] == "tiny" and info["architecture"] == "mlp" and info["eps"] == 0.2
  assert 0.0 <= float(info["autoattack_acc"]) <= float(info["clean_acc"]) <= 100.0
  assert info["robust_jax"]["stages"] == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
  assert info["robust_jax"]["accuracy_after_stage"][-1] * 100 == pytest.approx(
      float(info["autoattack_acc"]), abs=0.006)
  assert f"wrote {path}" in out.stdout


@pytest.mark.parametrize("args,match", [
    (["--eps=2"], "eps must be in (0, 1) for norm='linf'"),
    (["--eps=-0.1"], "--eps must be > 0"),
    (["--num_examples=100000"], "--num_examples must be at most the size of the test split"),
    (["--num_examples=-1"], "--num_examples must be >= 0"),
    (["--attacks=FGSM,FOO"], "--attacks: unknown ['FOO']"),
    (["--batch_size=0"], "--batch_size must be >= 1"),
])
def test_eval_flags_are_checked_with_one_line(trained, args, match):
  wd, _ = trained
  out = _run("launch.eval", f"--workdir={wd}", *args, check=False)
  assert out.returncode == 2, out.stderr
  assert match in out.stderr and "Traceback" not in out.stderr
  assert "launch.eval: error: " in out.stderr


def test_eval_writes_a_robustness_curve_next_to_the_report(trained):
  wd, _ = trained
  bad = _run("launch.eval", f"--workdir={wd}", "--curve=0.1,abc", check=False)
  assert bad.returncode == 2 and "--curve: 'abc' is not a number" in bad.stderr
  out = _run("launch.eval", f"--workdir={wd}", "--attacks=PGD-20", "--num_examples=20",
             "--eps=0.1", "--curve=0.05,0.1", "--noprogress")
  stem = os.path.join(wd, "eval_best_PGD-20_eps0.1_n20")
  curve, report = _load(stem + "_curve_PGD-20.json"), _load(stem + ".json")
  assert curve["eps"] == [0.05, 0.1] and curve["kind"] == "eps_swept"
  assert curve["n_examples"] == 20 and curve["seed"] == 0 and curve["norm"] == "linf"
  assert curve["training_eps"] == report["training_eps"] and curve["context"]["step"] > 0
  # The column's own random starts: at --eps the curve repeats the table's number.
  assert curve["accuracy"][1] == report["attack_accuracy"]["PGD-20"]
  with open(stem + "_curve_PGD-20.png", "rb") as f:
    assert f.read(4) == b"\x89PNG"
  assert "robust accuracy against eps (PGD-20" in out.stdout


@pytest.mark.parametrize("args,match", [
    (["--what=landscape", "--num_points=1"], "num_points must be an odd integer >= 3"),
    (["--what=landscape", "--num_points=20"], "num_points must be an odd integer >= 3"),
    (["--what=landscape", "--span=-1"], "span must be in (0, inf)"),
    (["--what=fosc", "--num_examples=100000"], "--num_examples must be at most the size"),
    (["--what=fosc", "--eps=2"], "eps must be in (0, 1) for norm='linf'"),
    (["--what=nothing"], "--what: unknown ['nothing']"),
])
def test_analyze_flags_are_checked_with_one_line(trained, args, match):
  wd, _ = trained
  out = _run("launch.analyze", f"--checkpoint={wd}", *args, check=False)
  assert out.returncode == 2, out.stderr
  assert match in out.stderr and "Traceback" not in out.stderr


def test_a_workdir_that_is_not_a_directory(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("")
  for args in (["launch.eval", f"--workdir={path}"],
               ["launch.analyze", f"--checkpoint={path}", "--what=gap"]):
    out = _run(*args, check=False)
    assert out.returncode != 0 and "is not a directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_training_leaves_no_workdir_behind_for_a_bad_call(tmp_path):
  from launch.configs import digits  # pylint: disable=g-import-not-at-top
  from robust_jax.training import loop  # pylint: disable=g-import-not-at-top
  config = digits.get_config()
  config.model = "no_such_model"
  wd = tmp_path / "never_created"
  with pytest.raises(ValueError, match="unknown model 'no_such_model'"):
    loop.train_and_evaluate(config, str(wd))
  assert not wd.exists()
  path = tmp_path / "a_file"
  path.write_text("")
  with pytest.raises(ValueError, match="exists and is not a directory"):
    loop.train_and_evaluate(digits.get_config(), str(path))


@pytest.mark.parametrize("flag, match", [
    ("--config.model=no_such_model", "config.model: unknown model 'no_such_model'"),
    ("--config.eps=1.5", "config.eps must be in (0, 1)"),
])
def test_train_refuses_a_bad_call_in_one_line(tmp_path, flag, match):
  wd = tmp_path / "never_created"
  out = _run("launch.train", "--config=launch/configs/digits.py", f"--workdir={wd}", flag,
             check=False)
  assert out.returncode == 1, out.stderr
  assert match in out.stderr and "Traceback" not in out.stderr
  assert not wd.exists()
