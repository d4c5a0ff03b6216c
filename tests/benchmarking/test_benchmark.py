"""launch.benchmark (robust_jax.benchmarking): the JSON lines and markdown tables it writes (no speed
is asserted)."""

import json
import os
import subprocess
import sys

import pytest

from robust_jax import benchmarking as benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """The tiniest real run: MLP, batch 8, one timed call, standard + pgd_at, one attack."""
  md = tmp_path_factory.mktemp("bench") / "BENCHMARKS.md"
  proc = subprocess.run(
      [sys.executable, "-m", "launch.benchmark", "--models=mlp", "--batch=8", "--repeats=1",
       "--warmup=0", "--methods=standard,pgd_at", "--attacks=fwd_bwd,pgd10", "--json",
       f"--write_markdown={md}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
  return lines, md.read_text()


def test_json_lines_have_the_required_keys_and_positive_numbers(tiny_run):
  lines, _ = tiny_run
  measured = [l for l in lines if l["kind"] in ("train", "attack")]
  assert {(l["kind"], l["method"]) for l in measured} == {
      ("train", "standard"), ("train", "pgd_at"), ("attack", "fwd_bwd"), ("attack", "pgd10")}
  for l in measured:
    for key in benchmark.REQUIRED_KEYS:
      assert key in l, (key, l)
    assert l["model"] == "mlp" and l["batch"] == 8
    for key in ("compile_s", "step_ms", "examples_per_s", "peak_mem_mb"):
      assert isinstance(l[key], (int, float)) and l[key] > 0, (key, l)
    assert l["device"]
  at = next(l for l in measured if l["method"] == "pgd_at")
  assert at["attack_steps"] == 10.0  # PGD-10 never stops early


def test_ratios_are_derived_from_the_same_run(tiny_run):
  lines, _ = tiny_run
  ratios = {l["name"]: l for l in lines if l["kind"] == "ratio"}
  assert "PGD-10 AT step / clean step" in ratios
  assert "PGD-10 attack / one forward+backward (to the input)" in ratios
  assert all(r["value"] > 0 for r in ratios.values())


def test_markdown_has_the_machine_and_the_tables(tiny_run):
  _, md = tiny_run
  assert md.startswith("# Benchmarks")
  for text in ("## Machine and command", "python -m launch.benchmark --models=mlp", "jaxlib",
               "## How to read", "## Training steps", "| " + " | ".join(benchmark.TRAIN_HEADERS),
               "## Attacks alone", "| " + " | ".join(benchmark.ATTACK_HEADERS),
               "## Ratios (measured in the same run)", "| " + " | ".join(benchmark.RATIO_HEADERS)):
    assert text in md, text


def _rec(kind, model, method, step_ms, **kw):
  return dict(name=f"{kind}/{model}/{method}", kind=kind, model=model, batch=8, method=method,
              compile_s=1.0, step_ms=step_ms, examples_per_s=8e3 / step_ms, peak_mem_mb=1.0,
              device="cpu", **kw)


def test_markdown_writer_renders_every_table_from_records():
  recs = [
      _rec("train", "small_cnn", "standard", 10.0),
      _rec("train", "small_cnn", "pgd_at", 75.0, attack_steps=10.0),
      _rec("train", "small_cnn", "pgd_at+awp", 90.0, attack_steps=10.0),
      _rec("train", "small_cnn", "dart", 20.0, attack_steps=1.0),
      _rec("attack", "small_cnn", "fwd_bwd", 6.0),
      _rec("attack", "small_cnn", "pgd10", 66.0, steps_mean=10.0, steps_max=10),
      _rec("attack", "small_cnn", "pgd10_unrolled", 64.0),
      _rec("attack", "small_cnn", "pgd10_default_vjp", 400.0, steps_mean=10.0, steps_max=10),
      _rec("attack", "small_cnn", "pgd10_fat", 30.0, steps_mean=1.5, steps_max=4),
  ]
  for label, ms in (("JAX, library step (make_train_step)", 300.0),
                    (benchmark.LIB_FAST_LABEL, 260.0),
                    ("JAX, minimal step (same work as PyTorch)", 250.0),
                    ("PyTorch eager", 450.0), ("PyTorch eager, channels_last, malloc tuned", 240.0)):
    recs.append(dict(_rec("framework", "small_cnn", label, ms), clean_step_ms=ms / 7, rounds=3,
                     steps_per_round=3, lib_over_this=300.0 / ms, min_over_this=250.0 / ms,
                     fast_over_this=260.0 / ms))
  recs += benchmark.compute_ratios(recs)
  md = benchmark.render_markdown(recs, {"date": "today", "command": "python -m launch.benchmark"})
  for headers in (benchmark.TRAIN_HEADERS, benchmark.ATTACK_HEADERS, benchmark.RATIO_HEADERS,
                  benchmark.EARLY_HEADERS, benchmark.WHILE_HEADERS, benchmark.TORCH_HEADERS):
    assert "| " + " | ".join(headers) + " |" in md
  assert "## JAX against PyTorch" in md and "## Findings" in md
  assert "slower than the best PyTorch configuration" in md
  assert "the library step is slower than the best PyTorch configuration: JAX / PyTorch = 1.08" in md
  ratio = {r["name"]: r["value"] for r in recs if r["kind"] == "ratio"}
  assert ratio["PGD-10 AT step / clean step"] == 7.5
  assert ratio["AWP overhead: AT+AWP step / AT step"] == 1.2


def test_method_variants_parse_into_configs():
  c = benchmark.make_config("small_cnn", "trades+awp@beta=1.5@fosc_c_max=0", 16)
  assert (c.method, c.weight_perturbation, c.beta, c.fosc_c_max, c.batch_size) == (
      "trades", "awp", 1.5, 0.0, 16)
  with pytest.raises(ValueError, match="method"):
    benchmark.make_config("mlp", "not_a_method", 8)


def test_markdown_renders_the_compaction_and_official_autoattack_tables():
  rows = [dict(kind="compaction_saving", model="mlp", batch=128, method="fat", devices=d,
               attack_steps=2.2, plain_ms=3.0, compact_ms=c, saving=1 - c / 3.0)
          for d, c in ((8, 2.1), (1, 1.5))]
  runs = [dict(kind="aa_official", model="small_cnn", batch=100, side=side, n=100, eps=0.3,
               round=0, seconds=s, stages=["apgd-ce", "apgd-t"], stage_s=[s / 10, s * 0.9],
               accuracy=[0.8, 0.78]) for side, s in (("official (PyTorch)", 100.0),
                                                     ("robust_jax", 50.0))]
  ratio = dict(kind="ratio", name=benchmark.autoattack_official.OFFICIAL_LABEL,
               model="small_cnn", batch=100, value=2.0, ideal=">= 1.5", of="", note="runs/x",
               rounds=1, per_round=[2.0])
  md = benchmark.render_markdown(rows + runs + [ratio], {})
  assert "| mlp | 128 | fat | 2.20 | 3.0 | 1.5 | 50% | 3.0 | 2.1 | 30% |" in md  # 1 device, 8
  assert "compaction saves 30% of the step on 8 devices against 50% on one" in md
  assert "| robust_jax | 0 | 50.0 | 5.0 / 45.0 | 80.0 / 78.0 |" in md
  assert "Official seconds / robust_jax seconds (warm): **2.0**" in md


def test_the_optional_comparisons_refuse_bad_arguments_before_measuring(tmp_path):
  check = benchmark.autoattack_official.check_arguments
  with pytest.raises(ValueError, match="--aa_official_python: '/no/python' does not exist"):
    check("/no/python", str(tmp_path), 100)
  with pytest.raises(ValueError, match="--aa_official_workdir: .* is not a directory"):
    check(sys.executable, str(tmp_path / "missing"), 100)
  with pytest.raises(ValueError, match="--aa_official_n must be an integer >= 1, got 0"):
    check(sys.executable, str(tmp_path), 0)
  check(sys.executable, str(tmp_path), 1)
  with pytest.raises(ValueError, match="--compaction_models: unknown model 'foo'"):
    benchmark.compaction.check_models(["mlp", "foo"])
  benchmark.compaction.check_models(["mlp"])
