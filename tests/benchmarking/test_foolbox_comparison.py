"""The foolbox comparison (robust_jax.benchmarking.foolbox_worker, foolbox_script) without foolbox:
the model the worker rebuilds from the exported parameters, the table rendered from records, and
the flag's checks before anything is measured."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks, models
from robust_jax import benchmarking as benchmark
from robust_jax.benchmarking import foolbox_script, foolbox_worker, report, runs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_exported_parameters_give_the_library_models_logits(tmp_path):
  model = models.get_model(foolbox_script.MODEL, num_classes=10)
  # Jitted: one compilation each instead of one per operation.
  variables = jax.jit(model.init)(jax.random.key(3), jnp.zeros((1, 28, 28, 1)))
  x = jax.random.uniform(jax.random.key(4), (6, 28, 28, 1))
  logits = jax.jit(model.apply)(variables, x)
  y = jnp.argmax(logits, -1).astype(jnp.int32)
  path = str(tmp_path / "m.npz")
  foolbox_worker.export_npz(path, variables, x, y, logits)
  params, x2, y2, ref = foolbox_script.load_npz(path)
  assert jax.tree.structure(params) == jax.tree.structure(dict(variables["params"]))
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(dict(variables["params"]))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(x2), np.asarray(x))
  np.testing.assert_array_equal(np.asarray(y2), np.asarray(y))
  np.testing.assert_array_equal(np.asarray(ref), np.asarray(logits))
  rebuilt = jax.jit(foolbox_script.mnist_net_logits)(params, x2)
  assert float(jnp.max(jnp.abs(rebuilt - logits))) < 1e-5  # the worker's check is 1e-4
  assert float(jnp.max(jnp.abs(logits))) > 1e-3  # not trivially zero


def test_distances_are_the_norms_and_inf_where_not_found():
  x = np.zeros((3, 2, 2, 1))
  x_adv = x.copy()
  x_adv[0, 0, 0, 0], x_adv[1, 1, 1, 0], x_adv[1, 0, 0, 0] = 0.3, 0.4, -0.3
  d2 = foolbox_script.distances(x_adv, x, np.array([True, True, False]), "l2")
  dinf = foolbox_script.distances(x_adv, x, np.array([True, True, False]), "linf")
  np.testing.assert_allclose(d2[:2], [0.3, 0.5])
  np.testing.assert_allclose(dinf[:2], [0.3, 0.4])
  assert np.isinf(d2[2]) and np.isinf(dinf[2])


def test_every_library_side_is_a_valid_attack_and_the_budgets_match():
  for name, c in foolbox_script.COMPARISONS.items():
    kwargs = dict(c["lib_kwargs"], **({} if c["eps"] is None else {"eps": c["eps"]}))
    attacks.make(c["lib"], **kwargs)  # raises for a bad hyperparameter
    fb, lib = c["foolbox_kwargs"], c["lib_kwargs"]
    steps = fb.get("steps")
    assert steps is None or steps in (lib.get("num_steps"), lib.get("steps"),
                                      lib.get("max_iterations"), lib.get("max_iter")), name
    if "abs_stepsize" in fb:
      assert fb["abs_stepsize"] == lib["step_size"] and fb["random_start"] == (
          lib["start"] == "uniform"), name
    assert c["norm"] in ("l2", "linf"), name


def _records():
  common = dict(kind="foolbox", model="mnist_net", batch=128, foolbox_version="3.3.4",
                eagerpy="0.30.0", foolbox_jax="0.10.2", logits_max_abs_diff=2.9e-6,
                clean_accuracy=1.0, train_steps=300, rounds=3, min_time_s=1.0,
                peak_mem_mb=None, device="cpu", loadavg=["9.10 9.00 7.00", "9.80 9.20 7.30"])
  return [
      dict(common, name="foolbox_cmp/mnist_net/linf_pgd10/b128", method="linf_pgd10",
           attack="LinfPGD", lib_attack="pgd", norm="linf", eps=0.1,
           budget="eps 0.1, 10 steps",
           compile_s=2.5, step_ms=40.0, examples_per_s=3200.0, foolbox_step_ms=200.0,
           foolbox_examples_per_s=640.0, foolbox_over_lib=5.0, per_round=[4.8, 5.0, 5.3],
           foolbox_first_call_s=3.9, lib_summary={"robust_accuracy": 0.3125},
           foolbox_summary={"robust_accuracy": 0.3203}, distance_ratio_median=1.0),
      dict(common, name="foolbox_cmp/mnist_net/ddn/b128", method="ddn", attack="DDNAttack",
           lib_attack="ddn", norm="l2", eps=None, note="no quantisation", budget="100 steps", compile_s=4.0, step_ms=500.0,
           examples_per_s=256.0, foolbox_step_ms=7500.0, foolbox_examples_per_s=17.07,
           foolbox_over_lib=15.0, per_round=[14.0, 15.0, 16.0], foolbox_first_call_s=12.0,
           lib_summary={"success": 1.0, "median_norm": 1.2345},
           foolbox_summary={"success": 0.9922, "median_norm": None},
           distance_ratio_median=1.01),
  ]


def test_report_renders_the_foolbox_table_and_ratio_from_records():
  recs = _records()
  md = report.render_markdown(recs, {"date": "today", "command": "python -m launch.benchmark",
                                     "foolbox": "3.3.4 (eagerpy 0.30.0, jax 0.10.2)"})
  assert "## Against foolbox 3.3.4 (same JAX model)" in md
  assert "| " + " | ".join(benchmark.FOOLBOX_HEADERS) + " |" in md
  rows = [l for l in md.splitlines() if l.startswith("| `")]
  assert len(rows) == 2
  pgd, ddn = rows
  assert "`pgd` linf / `LinfPGD`" in pgd and "| 3,200 | 640 | 5.0 | 4.80, 5.00, 5.30 |" in pgd
  assert "robust acc. 31.2%" in pgd and "robust acc. 32.0%" in pgd
  assert "robust acc. 32.0% |  | 2.5 |" in pgd  # no norm ratio for a fixed-eps attack
  assert "| 15.0 |" in ddn and "success 100.0%, median 1.2345" in ddn
  assert "success 99.2%, median inf" in ddn and "| 1.010 |" in ddn
  assert "* `ddn`: no quantisation" in md
  assert "max |logits difference| = 2.9e-06" in md and "9.10 to 9.80" in md
  assert "foolbox 3.3.4 (eagerpy 0.30.0, jax 0.10.2) (its own venv)" in md
  assert any("foolbox takes 5.0x (linf_pgd10) to 15.0x (ddn)" in n for n in report.findings(recs))
  line = report.format_record(recs[0])
  assert "foolbox / library 5.0" in line and "3,200 ex/s" in line


def test_check_foolbox_python_rejects_a_missing_or_non_executable_path(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    benchmark.check_foolbox_python(str(tmp_path / "no_python"))
  plain = tmp_path / "plain"
  plain.write_text("")
  with pytest.raises(ValueError, match="not an executable"):
    benchmark.check_foolbox_python(str(plain))
  benchmark.check_foolbox_python(sys.executable)
  with pytest.raises(ValueError, match="unknown"):
    benchmark.check_foolbox_attack_names(["fgsm", "pgd_l7"])


def test_run_rejects_a_bad_foolbox_python_before_measuring(monkeypatch):
  def measured(*args, **kwargs):
    raise AssertionError("something was measured")

  monkeypatch.setattr(runs, "machine_info", measured)
  monkeypatch.setattr(runs, "run_benchmarks", measured)
  with pytest.raises(ValueError, match="--foolbox_python: '/no/such/python' does not exist"):
    runs.run(model_names=[], methods=None, attack_names=[], batch=0, repeats=1, warmup=0,
             options={}, foolbox_python="/no/such/python")


def test_the_flag_rejects_a_missing_python_with_a_clear_error():
  proc = subprocess.run(
      [sys.executable, "-m", "launch.benchmark", "--models=mlp", "--json",
       "--foolbox_python=/no/such/python"],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode != 0
  assert "--foolbox_python: '/no/such/python' does not exist" in proc.stderr
  assert not [l for l in proc.stdout.splitlines() if l.startswith("{")]  # nothing measured
