"""``launch.reproduce`` (:mod:`robust_jax.experiments`) end to end on a tiny budget: the report and
its JSON are written, hold the methods asked for, and the worst case over the attacks is never above
any single attack."""

import json
import os
import re

import pytest

from launch import reproduce
from launch.configs import mnist5k
from robust_jax.experiments import catastrophic, suite
from robust_jax.experiments import report as report_lib
from robust_jax.experiments import reproduce as reproduce_lib

METHODS = ("standard", "pgd_at")
LABELS = {"standard": "Standard", "pgd_at": "PGD-AT"}
COLUMNS = ("FGSM", "PGD-20", "CW-inf", "APGD-CE", "APGD-T", "AA")


def _mean(cell: str) -> float:
  m = re.fullmatch(r"\s*(-?[0-9.]+)(?: ± [0-9.]+| \(1 seed\))\s*", cell)
  assert m, cell
  return float(m.group(1))


def _nothing_is_computed(monkeypatch):
  """Makes training and every evaluation of the suites fail: a suite restored from an archive must
  report without them (and without checkpoints)."""
  def fail(*args, **kwargs):
    raise AssertionError("trained or evaluated a run the archive holds")
  for name in ("train", "evaluate_run", "flatness"):
    monkeypatch.setattr(reproduce_lib, name, fail)
  for name in ("train", "evaluate_checkpoint"):
    monkeypatch.setattr(catastrophic, name, fail)


def _resumes_elsewhere(argv, out, archive, tmp_path, monkeypatch, files=("reproduction.json",)):
  """Runs ``argv`` again into a new output directory holding nothing but what ``--archive``
  restores (no checkpoints): the archive must hold every result, so that nothing is trained or
  evaluated and the JSON files come out as before (but the timings of this process; the runs' own
  training and evaluation times are recorded with them)."""
  fresh = str(tmp_path / "elsewhere")
  with monkeypatch.context() as mp:
    _nothing_is_computed(mp)
    reproduce.main([a.replace(out, fresh) for a in argv])
  assert not any(os.path.isdir(os.path.join(root, "checkpoints"))
                 for root, _, _ in os.walk(fresh))
  drop = ("out", "date", "runtime_s", "cpu_s", "loadavg_start", "loadavg_end", "train_s",
          "eval_s", "analysis_s", "command", "finished_only")
  for name in files:
    a = json.load(open(os.path.join(out, name)))
    b = json.load(open(os.path.join(fresh, name)))
    if name == "reproduction.json":
      for d in (a, b):
        for k in drop:
          d.pop(k, None)
    assert a == b, name
  # The cost summed from the runs' records is the same: it does not depend on who ran them.
  cost = lambda d: [l for l in open(os.path.join(d, "REPRODUCTION.md")).read().splitlines()  # noqa
                    if l.startswith("- Wall time of the")]
  assert len(cost(out)) == 1 and cost(fresh) == cost(out)
  # --report_only renders the report in an empty directory from the archive alone.
  rendered = str(tmp_path / "rendered")
  with monkeypatch.context() as mp:
    _nothing_is_computed(mp)
    reproduce.main([a.replace(out, rendered) for a in argv] + ["--report_only"])
  assert cost(rendered) == cost(out)
  for name in files:
    with open(os.path.join(rendered, name)) as a, open(os.path.join(fresh, name)) as b:
      assert json.load(a) == json.load(b), name


def test_reproduce_writes_a_consistent_report(tmp_path, monkeypatch):
  out = str(tmp_path / "reproduce")
  archive = str(tmp_path / "archive")
  argv = ["reproduce", f"--out={out}", "--seeds=0", f"--methods={','.join(METHODS)}",
          "--epochs=2", "--n_iter=3", "--n_queries=10", "--cw_steps=3", "--pgd_steps=20",
          "--eval_examples=64", "--directions=1", f"--archive={archive}"]
  reproduce.main(argv)
  with open(os.path.join(out, "reproduction.json")) as f:
    data = json.load(f)
  with open(os.path.join(out, "REPRODUCTION.md")) as f:
    md = f.read()

  # The JSON: the methods asked for, one run each, every column, a consistent worst case.
  assert set(data["results"]) == set(METHODS)
  assert data["params"]["epochs"] == 2 and data["params"]["seeds"] == [0]
  assert data["params"]["n_iter"] == 3 and data["params"]["n_queries"] == 10
  for m in METHODS:
    (r,) = data["results"][m]
    assert tuple(r["attacks"]) == COLUMNS
    assert r["num_examples"] == 64
    assert 0.0 <= r["worst_case"] <= r["clean"] <= 1.0
    for name, acc in r["attacks"].items():
      assert r["worst_case"] <= acc + 1e-12, (m, name)
      assert acc <= r["clean"] + 1e-12, (m, name)
    assert sum(r["invalid"].values()) == 0
    assert os.path.exists(os.path.join(out, r["workdir"], "metrics.jsonl"))
    with open(os.path.join(out, r["workdir"], "reproduce_summary.json")) as f:
      assert r["beta"] == json.load(f)["config"]["beta"]  # the verdicts name it
  # The analyses that need PGD-AT ran on it; the ones that need a missing method did not.
  assert set(data["fosc"]) == {"pgd_at"} and set(data["flatness"]) == {"pgd_at"}
  assert len(data["flatness"]["pgd_at"]["loss"][0]) == len(suite.ALPHAS)
  assert set(data["gaps"]) == set(METHODS)

  # The report: the command, the machine, the date, and the numbers as written.
  assert "python -m launch.reproduce" in md and "--methods=standard,pgd_at" in md
  assert "Machine:" in md and "Date:" in md and "runtime" in md
  assert "n_iter=3" in md and "n_queries=10" in md
  # The raw numbers are named where they outlive this machine: the archive (tmp_path lies outside
  # the working directory, so its path is as given).
  assert f"Raw numbers: `{archive}/reproduction.json`" in md and f"`{archive}/runs/" in md
  rows = {}
  lines = md.splitlines()
  start = lines.index("Every column:")
  header = [c.strip() for c in lines[start + 2].strip("|").split("|")]
  assert header == ["Method", "Clean", *COLUMNS, "Worst case"]
  for line in lines[start + 4:]:
    if not line.startswith("|"):
      break
    cells = [c.strip() for c in line.strip("|").split("|")]
    rows[cells[0]] = dict(zip(header[1:], (_mean(c) for c in cells[1:])))
  assert set(rows) == {LABELS[m] for m in METHODS}
  for m in METHODS:
    row = rows[LABELS[m]]
    for name in COLUMNS:
      assert row["Worst case"] <= row[name], (m, name)
    assert row["Worst case"] == pytest.approx(100 * data["results"][m][0]["worst_case"], abs=0.051)
    assert row["Clean"] == pytest.approx(100 * data["results"][m][0]["clean"], abs=0.051)

  # The archive holds the results without checkpoints; a new machine resumes from it.
  assert not any("checkpoints" in dirs for _, dirs, _ in os.walk(archive))
  _resumes_elsewhere(argv, out, archive, tmp_path, monkeypatch)

  # Each run records the machine that trained it (the CPU's flags hashed: XLA compiles for them);
  # a report over runs of several machines lists them.
  assert "CPU flags sha1" in data["machine"]
  assert {r["machine"] for m in METHODS for r in data["results"][m]} == {data["machine"]}
  assert "trained on" not in md
  data["results"][METHODS[0]][0]["machine"] = "another CPU"
  with open(os.path.join(out, "reproduction.json"), "w") as f:
    json.dump(data, f)
  (line,) = [l for l in reproduce_lib.rewrite_report(out).splitlines() if "trained on" in l]
  assert line.startswith("- The runs were trained on: ") and "another CPU" in line
  assert data["machine"] in line


@pytest.mark.xla_default
def test_the_mnist5k_suite_resumes_without_redoing_work(tmp_path, monkeypatch):
  """The MNIST-5k suite on a tiny budget: its report and the catastrophic-overfitting table are
  written; run again with the same flags it neither trains nor evaluates anything again, on this
  machine or, from its archive, on another."""
  out = str(tmp_path / "m5k")
  archive = str(tmp_path / "archive")
  argv = ["reproduce", "--suite=mnist5k", f"--out={out}", "--seeds=0",
          "--methods=dart", "--epochs=1", "--n_iter=2", "--n_queries=5",
          "--columns=FGSM,PGD-20", "--eval_examples=32", "--directions=1",
          "--co_settings=fgsm_03", "--co_epochs=1", f"--archive={archive}"]
  reproduce.main(argv)
  with open(os.path.join(out, "reproduction.json")) as f:
    data = json.load(f)
  assert data["suite"] == "mnist5k" and data["params"]["seeds_done"] == [0]
  for m in ("dart",):
    (r,) = data["results"][m]
    assert tuple(r["attacks"]) == ("FGSM", "PGD-20")
    assert r["num_examples"] == 32 and 0.0 <= r["worst_case"] <= r["clean"] <= 1.0
    assert r["train_epochs_s"] > 0 and r["eval_wall_s"] > 0
  # Dynamic AT stops examples early: fewer than its 10 steps per example on average.
  assert 0 < data["results"]["dart"][0]["attack_steps"] < 10
  md = open(os.path.join(out, "REPRODUCTION.md")).read()
  assert md.startswith("# Reproducing the seeds' claims on real 28x28 images (MNIST-5k)")
  assert "Catastrophic overfitting" in md and "FGSM-AT, eps 0.3" in md
  co = json.load(open(os.path.join(out, "catastrophic.json")))
  (run,) = co["runs"]["fgsm_03"]
  assert len(run["curves"]["val_pgd10"]) == 1 and run["last"]["epoch"] == 1

  stamps = {p: os.path.getmtime(p) for p in
            [os.path.join(out, "runs", m, "seed0", f) for m in ("dart",)
             for f in ("metrics.jsonl", "reproduce_eval.json")]}
  reproduce.main(argv)
  assert {p: os.path.getmtime(p) for p in stamps} == stamps  # nothing trained or evaluated again
  again = json.load(open(os.path.join(out, "reproduction.json")))
  assert again["results"] == data["results"]  # the training times too: they are recorded
  # --finished_only reports the same runs without training or evaluating anything.
  os.remove(os.path.join(out, "reproduction.json"))
  reproduce.main(argv + ["--finished_only"])
  assert {p: os.path.getmtime(p) for p in stamps} == stamps
  partial = json.load(open(os.path.join(out, "reproduction.json")))
  assert partial["params"]["seeds_done"] == [0]
  # The same results, the training times and selected epochs too (read from the runs' records).
  keep = ("worst_case", "train_wall_s", "train_cpu_s", "val_best", "beta")
  assert {m: [{k: r[k] for k in keep} for r in rs] for m, rs in partial["results"].items()} == {
      m: [{k: r[k] for k in keep} for r in rs] for m, rs in data["results"].items()}
  reproduce.main(argv)  # the full report again (--finished_only wrote a partial one)
  _resumes_elsewhere(argv, out, archive, tmp_path, monkeypatch,
                     files=("reproduction.json", "catastrophic.json"))


def test_autoattack_on_some_seeds_keeps_the_tables_consistent(tmp_path):
  """``--aa_seeds``: every seed gets the common columns (the tables and spreads use them), the AA
  seeds also every column, kept beside; the two evaluations of a seed agree on the shared columns
  (same keys), and a legacy one-entry cache file is still read."""
  out = str(tmp_path / "aa")
  argv = ["reproduce", f"--out={out}", "--seeds=0,1", "--methods=standard", "--epochs=1",
          "--n_iter=2", "--n_queries=5", "--pgd_steps=20", "--columns=FGSM,PGD-20,AA",
          "--eval_examples=32", "--directions=0", "--aa_seeds=0"]
  reproduce.main(argv)
  data = json.load(open(os.path.join(out, "reproduction.json")))
  r0, r1 = data["results"]["standard"]
  assert data["params"]["columns"] == ["FGSM", "PGD-20"] and data["params"]["full_seeds"] == [0]
  assert tuple(r0["attacks"]) == tuple(r1["attacks"]) == ("FGSM", "PGD-20")
  assert "full" not in r1 and tuple(r0["full"]["attacks"]) == ("FGSM", "PGD-20", "AA")
  for c in ("FGSM", "PGD-20"):
    assert r0["full"]["attacks"][c] == r0["attacks"][c]
  assert r0["full"]["worst_case"] <= r0["worst_case"] and r0["full"]["clean"] == r0["clean"]
  md = open(os.path.join(out, "REPRODUCTION.md")).read()
  assert "With AutoAttack (seeds [0]" in md and "AutoAttack runs on seeds [0] only" in md

  # A cache file of the earlier one-entry format is read as one entry.
  path = os.path.join(out, "runs", "standard", "seed1", "reproduce_eval.json")
  (entry,) = json.load(open(path))["entries"]
  with open(path, "w") as f:
    json.dump(entry, f)
  stamp = os.path.getmtime(path)
  reproduce.main(argv + ["--finished_only"])
  assert os.path.getmtime(path) == stamp
  again = json.load(open(os.path.join(out, "reproduction.json")))
  assert [r["attacks"] for r in again["results"]["standard"]] == [r0["attacks"], r1["attacks"]]


@pytest.mark.parametrize("flag, named", [
    ("--seeds=0,x", "--seeds"), ("--co_seeds=-1", "--co_seeds"), ("--aa_seeds=a", "--aa_seeds"),
    ("--methods=pgd_at,pgd", "--methods"), ("--co_settings=fgsm_03,fgsm_9", "--co_settings"),
    ("--archive=FILE", "--archive"), ("--archive=OUT", "--archive")])
def test_bad_flags_fail_before_anything_runs(tmp_path, flag, named):
  """A bad flag is a UsageError naming it, raised before the suite writes anything (the
  catastrophic-overfitting settings are used only hours in, after the whole suite)."""
  out = tmp_path / "out"
  (tmp_path / "FILE").write_text("not a directory")
  flag = flag.replace("FILE", str(tmp_path / "FILE")).replace("OUT", str(out))
  with pytest.raises(reproduce.app.UsageError, match=named):
    reproduce.main(["reproduce", "--suite=mnist5k", f"--out={out}", flag])
  assert not out.exists()


def test_the_mnist5k_suite_runs_trades_at_the_scripts_and_the_papers_beta():
  """MNIST-5k's default methods add TRADES at beta 6 (the paper's MNIST setting) beside the
  official script's beta 1; the two rows differ in beta only. The digits suite is unchanged."""
  defaults = reproduce.SUITE_DEFAULTS
  assert defaults["digits"]["methods"] == list(suite.DIGITS_METHODS)
  assert set(defaults["mnist5k"]["methods"]) == set(suite.DIGITS_METHODS) | {"trades_beta6"}
  spec = suite.mnist5k_suite(mnist5k.get_config)
  c1, c6 = (spec.make_config(m, 0).to_dict() for m in ("trades", "trades_beta6"))
  assert {k for k in c1 if c1[k] != c6[k]} == {"beta"} and (c1["beta"], c6["beta"]) == (1.0, 6.0)


def test_report_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
  # A report written with absolute paths names the repository's paths, not the machine's.
  monkeypatch.chdir(tmp_path)
  assert report_lib.display_path(str(tmp_path / "runs" / "x")) == os.path.join("runs", "x")
  assert report_lib.display_path("runs/x") == os.path.join("runs", "x")
  outside = str(tmp_path.parent / "elsewhere")
  assert report_lib.display_path(outside) == outside


@pytest.mark.parametrize("flag", reproduce.HELP_FLAGS)
def test_help_lists_the_launchers_own_flags(flag, capsys):
  # The launcher's flags live in their own FlagValues: absl's --help would list none of them.
  with pytest.raises(SystemExit) as exit_info:
    reproduce.parse_argv(["reproduce", "--suite=mnist5k", flag])
  assert exit_info.value.code == 0
  printed = capsys.readouterr().out
  names = list(reproduce._flag_values())
  assert names and all(f"--{n}:" in printed or f"--[no]{n}:" in printed for n in names), printed
  assert reproduce.parse_argv(["reproduce", "--suite=mnist5k"]) == ["reproduce", "--suite=mnist5k"]
