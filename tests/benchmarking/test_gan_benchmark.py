"""The GAN part of launch.benchmark (robust_jax.benchmarking.gans): the step timed is the trainer's,
the records carry what the report needs, the report renders them, bad names fail early (no speed is
asserted)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from robust_jax import benchmarking, parallel
from robust_jax.benchmarking import gans
from robust_jax.games import loop as games_loop
from robust_jax.games import networks
from robust_jax.games import step as games_step

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(dim=4, latent_dim=8, batch_size=4)


@pytest.fixture(scope="module")
def wgan_run():
  """One real bench_gans run (WGAN on digits shapes, tiny widths, 2 rounds) and its contenders,
  each call counted."""
  made = []

  class Counted(gans.GANContender):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      self.calls = 0
      made.append(self)

    def __call__(self):
      self.calls += 1
      return super().__call__()

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(gans, "GANContender", Counted)
    recs = gans.bench_gans(kinds=["wgan"], datasets=["digits"], overrides=TINY, rounds=2,
                           warmup=0, min_time_s=0.0)
  return recs, made


def test_the_timed_step_is_the_trainers_step_bitwise(wgan_run):
  _, made = wgan_run
  full = next(c for c in made if c.config.n_critic == 5)
  config, shape = full.config, full.image_shape
  assert full.batch["image"].shape == (4, 5, 8, 8, 1)
  # The trainer's own compiled step (games.loop), from a fresh state, as many times as the
  # benchmark called its step: the same state, bit for bit.
  mesh = parallel.make_mesh()
  step = games_loop._compiled_step(  # pylint: disable=protected-access
      json.dumps({k: config[k] for k in games_loop.STEP_FIELDS}, sort_keys=True), shape, mesh)
  g, d = networks.build(config, shape)
  state = parallel.replicate(games_step.create(config, g, d, shape), mesh)
  batch = parallel.shard_batch(gans.gan_batch(config, shape), mesh)
  for _ in range(full.calls):
    state, metrics = step(state, batch)
  assert int(state.step) == full.calls and int(state.critic_steps) == 5 * full.calls
  for got, want in zip(jax.tree.leaves(full.state), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  for k, v in metrics.items():
    np.testing.assert_array_equal(np.asarray(full.metrics[k]), np.asarray(v))


def test_the_record_has_what_the_report_needs(wgan_run):
  recs, made = wgan_run
  assert [c.config.n_critic for c in made] == [5, 1]  # full step, then the reduced one
  (rec,) = recs  # one kind: no ratio
  for key in benchmarking.REQUIRED_KEYS + (
      "gan_kind", "n_critic", "critic_update_ms", "rest_ms", "reduced_n_critic", "reduced_step_ms",
      "image_shape", "dim", "latent_dim", "xla_temp_mb", "finite_metrics", "rounds",
      "step_ms_min", "step_ms_max"):
    assert key in rec, key
  assert (rec["kind"], rec["model"], rec["method"], rec["batch"]) == ("gan", "digits", "wgan", 4)
  assert (rec["n_critic"], rec["reduced_n_critic"], rec["image_shape"]) == (5, 1, [8, 8, 1])
  assert (rec["dim"], rec["latent_dim"], rec["rounds"], rec["finite_metrics"]) == (4, 8, 2, True)
  assert rec["repeats"] == 2  # one timed call per round
  # Real examples per second: B * n_critic per step.
  assert rec["examples_per_s"] == pytest.approx(4 * 5 / (rec["step_ms"] / 1e3), rel=1e-3)
  assert rec["rest_ms"] == pytest.approx(rec["step_ms"] - 5 * rec["critic_update_ms"], abs=1e-2)
  json.dumps(rec)


def _gan_rec(dataset, kind, step_ms, critic_ms, n_critic=5):
  return dict(name=f"gan/{dataset}/{kind}/b64", kind="gan", model=dataset, batch=64, method=kind,
              compile_s=2.0, step_ms=step_ms, examples_per_s=64 * n_critic / step_ms * 1e3,
              peak_mem_mb=900.0, device="cpu:cpu x1", repeats=5, step_ms_min=step_ms,
              step_ms_max=step_ms, gan_kind=kind, n_critic=n_critic, critic_update_ms=critic_ms,
              rest_ms=step_ms - n_critic * critic_ms, reduced_n_critic=1, image_shape=[28, 28, 1],
              dim=64, latent_dim=128, xla_temp_mb=10.0, finite_metrics=True, rounds=2,
              round_min_time_s=0.5)


def test_the_report_renders_the_table_and_the_ratio_from_records():
  recs = [_gan_rec("mnist5k", "vanilla", 300.0, 120.0, n_critic=1),
          _gan_rec("mnist5k", "wgan", 1000.0, 150.0), _gan_rec("mnist5k", "wgan_gp", 1750.0, 300.0)]
  recs += gans.alternated_ratios({"wgan": [(1000.0, 150.0), (1100.0, 160.0)],
                                  "wgan_gp": [(1700.0, 300.0), (2035.0, 320.0)]},
                                 dataset="mnist5k", batch=64)
  ratio = {r["name"]: r for r in recs if r["kind"] == "ratio"}
  assert ratio[gans.GAN_STEP_RATIO]["value"] == 1.775  # median of 1.70 and 1.85
  assert ratio[gans.GAN_CRITIC_RATIO]["value"] == 2.0
  assert ratio[gans.GAN_STEP_RATIO]["per_round"] == [1.7, 1.85]
  md = benchmarking.render_markdown(recs, {"date": "today", "command": "python -m launch.benchmark"})
  assert "## GAN training steps" in md
  assert "| " + " | ".join(benchmarking.GAN_HEADERS) + " |" in md
  assert "| " + " | ".join(benchmarking.GAN_RATIO_HEADERS) + " |" in md
  assert ("| mnist5k | 28x28x1 | wgan_gp | 64 | 5 | 64 / 128 | 2.0 | 1,750 | 1,750-1,750 | 183 "
          "| 300 | 250 | 900 | 10.0 |") in md
  assert "| WGAN-GP step / WGAN step, alternated | mnist5k | 64 | 1.8 | 1.70, 1.85 | ~1.7 |" in md
  assert "| WGAN-GP critic update / WGAN critic update, alternated | mnist5k | 64 | 2.0 |" in md
  # The GAN ratios have their own table, not the classifiers' one.
  assert "## Ratios (measured in the same run)" not in md


def test_rerender_merges_a_gan_only_run_into_a_full_one(tmp_path):
  full = [dict(name="train/mlp/standard/b8", kind="train", model="mlp", batch=8, method="standard",
               compile_s=1.0, step_ms=2.0, examples_per_s=4e3, peak_mem_mb=1.0, device="cpu"),
          {"kind": "meta", "date": "day 1", "command": "python -m launch.benchmark"}]
  gan = [_gan_rec("digits", "wgan", 10.0, 1.5),
         {"kind": "meta", "date": "day 2", "command": "python -m launch.benchmark --models= --gans"}]
  for name, lines in (("full.jsonl", full), ("gan.jsonl", gan)):
    (tmp_path / name).write_text("".join(json.dumps(l) + "\n" for l in lines))
  md = benchmarking.rerender(f"{tmp_path / 'full.jsonl'},{tmp_path / 'gan.jsonl'}",
                             str(tmp_path / "BENCHMARKS.md"))
  assert "* command: `python -m launch.benchmark`" in md
  assert "merged with the records of a further run (day 2" in md
  assert "`python -m launch.benchmark --models= --gans`" in md
  assert "## Training steps" in md and "## GAN training steps" in md


def test_an_unknown_kind_is_refused_before_anything_is_measured():
  with pytest.raises(ValueError, match="unknown GAN kind 'wgan_pg'; valid kinds: vanilla, wgan"):
    gans.bench_gans(kinds=["wgan", "wgan_pg"], datasets=["digits"])
  with pytest.raises(ValueError, match="unknown GAN dataset 'cifar10'"):
    gans.check_gan_names(["wgan"], ["cifar10"])
  proc = subprocess.run(
      [sys.executable, "-m", "launch.benchmark", "--models=mlp", "--methods=standard",
       "--attacks=", "--json", "--gans", "--gan_kinds=wgan,wgan_pg"],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode != 0
  assert "unknown GAN kind 'wgan_pg'; valid kinds: vanilla, wgan, wgan_gp, sngan" in proc.stderr
  assert not [l for l in proc.stdout.splitlines() if l.startswith("{")]  # nothing measured
