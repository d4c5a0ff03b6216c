"""The first-hour notebook runs end to end (tiny budget) and draws its figures."""

import os

from tests.notebooks.notebook_runner import assert_committed_without_outputs, run_notebook


def test_attacks_first_hour(tmp_path):
  assert_committed_without_outputs("attacks_first_hour.ipynb")
  run_notebook("attacks_first_hour.ipynb",
               f"NUM_EPOCHS = 3\nEPS = 0.2\nOUT_DIR = {str(tmp_path)!r}")
  for png in ("fosc_over_steps.png", "clean_vs_adversarial.png"):
    path = tmp_path / png
    assert path.exists() and os.path.getsize(path) > 1000


def test_evaluation_report(tmp_path):
  assert_committed_without_outputs("evaluation_report.ipynb")
  run_notebook("evaluation_report.ipynb",
               f"NUM_EPOCHS = 3\nMETHODS = ('trades',)\nEPS = 0.2\nNUM_EXAMPLES = 40\nN_ITER = 10\n"
               f"N_QUERIES = 50\n"
               f"OUT_DIR = {str(tmp_path)!r}")
  assert (tmp_path / "report.json").stat().st_size > 100


def test_gans(tmp_path):
  assert_committed_without_outputs("gans.ipynb")
  run_notebook("gans.ipynb", f"KINDS = ('wgan_gp',)\nDATASET = 'digits'\nNUM_STEPS = 4\n"
               f"OUT_DIR = {str(tmp_path)!r}")
  assert (tmp_path / "curves.png").stat().st_size > 1000
  assert "final FD" in (tmp_path / "gans.md").read_text()
