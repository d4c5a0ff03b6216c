"""``launch.reproduce`` (:mod:`robust_jax.experiments`) end to end on a tiny budget: the report and
its JSON are written, hold the methods asked for, and the worst case over the attacks is never above
any single attack."""

import json
import os
import re

import pytest

from launch import reproduce
from robust_jax.experiments import suite

METHODS = ("standard", "pgd_at")
LABELS = {"standard": "Standard", "pgd_at": "PGD-AT"}
COLUMNS = ("FGSM", "PGD-20", "CW-inf", "APGD-CE", "APGD-T", "AA")


def _mean(cell: str) -> float:
  m = re.fullmatch(r"\s*(-?[0-9.]+) ± [0-9.]+\s*", cell)
  assert m, cell
  return float(m.group(1))


def test_reproduce_writes_a_consistent_report(tmp_path):
  out = str(tmp_path / "reproduce")
  reproduce.main(["reproduce", f"--out={out}", "--seeds=0", f"--methods={','.join(METHODS)}",
                  "--epochs=2", "--n_iter=3", "--n_queries=10", "--cw_steps=3", "--pgd_steps=20",
                  "--eval_examples=64", "--directions=1"])
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
  # The analyses that need PGD-AT ran on it; the ones that need a missing method did not.
  assert set(data["fosc"]) == {"pgd_at"} and set(data["flatness"]) == {"pgd_at"}
  assert len(data["flatness"]["pgd_at"]["loss"][0]) == len(suite.ALPHAS)
  assert set(data["gaps"]) == set(METHODS)

  # The report: the command, the machine, the date, and the numbers as written.
  assert "python -m launch.reproduce" in md and "--methods=standard,pgd_at" in md
  assert "Machine:" in md and "Date:" in md and "runtime" in md
  assert "n_iter=3" in md and "n_queries=10" in md
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
