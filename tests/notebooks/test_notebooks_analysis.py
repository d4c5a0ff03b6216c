"""The analysis notebooks run end to end on a tiny budget and write their figures."""

import json
import os

from robust_jax.analysis import plots
from tests.notebooks.notebook_runner import assert_committed_without_outputs, run_notebook


def _assert_figure(path):
  assert path.exists() and os.path.getsize(path) > 1000, path
  with open(plots.json_path(str(path))) as f:
    json.load(f)


def test_dynamic_at_vs_pgd_at(tmp_path):
  assert_committed_without_outputs("dynamic_at_vs_pgd_at.ipynb")
  run_notebook("dynamic_at_vs_pgd_at.ipynb",
               f"NUM_EPOCHS = 2\nEPS = 0.2\nFOSC_C_MAX = 0.5\nNUM_EXAMPLES = 32\n"
               f"OUT_DIR = {str(tmp_path)!r}")
  for png in ("fosc_distribution.png", "robust_gap.png"):
    _assert_figure(tmp_path / png)
  logged = any("fosc_hist" in line for line in open(tmp_path / "pgd_at" / "metrics.jsonl"))
  if logged:  # the training step reports FOSC histograms
    _assert_figure(tmp_path / "fosc_over_epochs.png")


def test_awp_landscape(tmp_path):
  assert_committed_without_outputs("awp_landscape.ipynb")
  run_notebook("awp_landscape.ipynb",
               f"NUM_EPOCHS = 2\nEPS = 0.2\nAWP_GAMMA = 0.01\nNUM_EXAMPLES = 32\nNUM_POINTS = 3\n"
               f"TOPK = 1\nOUT_DIR = {str(tmp_path)!r}")
  for png in ("landscape_1d.png", "hessian_spectrum.png", "robust_gap.png"):
    _assert_figure(tmp_path / png)
  with open(tmp_path / "landscape_1d.json") as f:
    assert set(json.load(f)["curves"]) == {"AT", "AT-AWP"}
