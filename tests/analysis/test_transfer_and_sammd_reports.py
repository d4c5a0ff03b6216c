"""``reports.transfer_report`` (SGM transfer) and ``reports.sammd_report`` on tiny untrained models,
and their ``launch.analyze`` flags.

Properties: a model transferring to itself scores its own white-box accuracy; the SGM surrogate's
clean accuracy equals the plain one (SGM changes only the backward pass) while its examples differ;
the SAMMD report's rates are the rates of :func:`robust_jax.analysis.sammd.test_power` on the
halves it documents; bad arguments are refused with the valid choices named.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import models
from robust_jax.analysis import adversarial, reports, sammd
from robust_jax.data import pipeline
from robust_jax.training import config as config_lib
from robust_jax.training.restore import TrainedModel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _trained(model, seed=0):
  x = jnp.zeros((1, 8, 8, 1))
  variables = jax.jit(model.init)(jax.random.key(seed), x)
  c = config_lib.base_config()
  c.eps, c.step_size, c.num_steps = 0.2, 0.05, 5
  return TrainedModel(model=model, params=variables["params"],
                      batch_stats=variables.get("batch_stats", {}), config=c, meta={"epoch": 0},
                      workdir="", step=0)


@pytest.fixture(scope="module")
def digits_batches():
  ds = pipeline.load_dataset("digits")
  test = {k: v[:120] for k, v in ds.test.items()}
  train = {k: v[:40] for k, v in ds.train.items()}
  return (list(pipeline.eval_batches(train, batch_size=40)),
          list(pipeline.eval_batches(test, batch_size=120)))


@pytest.fixture(scope="module")
def wrn():
  return _trained(models.get_model("wrn28_10", depth=10, widen_factor=1))


def test_transfer_to_itself_is_white_box_and_sgm_keeps_the_forward(tmp_path, wrn, digits_batches):
  _, test = digits_batches
  r = reports.transfer_report(wrn, {"self": wrn}, test, str(tmp_path), sgm_gamma=0.2, seed=3)
  plain, skip = r["rows"]
  assert (plain["gamma"], skip["gamma"]) == (1.0, 0.2)
  # Crafted on the target itself: the transferred accuracy is the white-box accuracy.
  assert plain["target_acc_on_transferred"] == plain["source_whitebox_acc"]
  # SGM rescales gradients only: the same clean predictions.
  assert plain["target_clean_acc"] == skip["target_clean_acc"]
  assert r["settings"]["sgm_gamma"] == 0.2 and r["settings"]["start"] == "none"
  assert os.path.getsize(tmp_path / "transfer.png") > 1000


def test_sgm_needs_residual_branches_and_a_gamma_in_the_unit_interval(tmp_path, wrn,
                                                                      digits_batches):
  _, test = digits_batches
  mlp = _trained(models.get_model("mlp"))
  with pytest.raises(ValueError, match="residual branches"):
    reports.transfer_report(mlp, {"wrn": wrn}, test, str(tmp_path), sgm_gamma=0.5)
  with pytest.raises(ValueError, match="sgm_gamma"):
    reports.transfer_report(wrn, {"mlp": mlp}, test, str(tmp_path), sgm_gamma=1.5)
  with pytest.raises(ValueError, match="targets is empty"):
    reports.transfer_report(wrn, {}, test, str(tmp_path))


def test_sammd_report_rates_are_the_documented_tests(tmp_path, digits_batches):
  train, test = digits_batches
  tm = _trained(models.get_model("mlp"))
  kw = dict(n=10, num_tests=4, kernel_steps=3, seed=5, num_permutations=10)
  r = reports.sammd_report(tm, train, test, str(tmp_path), layer="fc2", **kw)
  # Recompute from the documented recipe: kernel on train halves, A vs PGD(B) and A vs B.
  variables = {"params": tm.params}
  phi = sammd.classifier_features(tm.model, variables, "fc2")
  logits_fn = tm.logits_fn()
  pgd = adversarial.pgd_attack(eps=0.2, step_size=0.05, num_steps=5, norm="linf")
  key = jax.random.key(5)
  x_tr, y_tr = np.asarray(train[0]["image"]), np.asarray(train[0]["label"])
  x, y = np.asarray(test[0]["image"]), np.asarray(test[0]["label"])
  adv = pgd(logits_fn, x_tr[20:40], y_tr[20:40], jax.random.fold_in(key, 0)).x_adv
  params = sammd.train_kernel(phi(x_tr[:20]), phi(adv), x_tr[:20], adv, steps=3,
                              learning_rate=2e-4)
  perm = np.random.default_rng(5).permutation(len(y))
  a, b = perm[:60], perm[60:]
  adv_b = pgd(logits_fn, x[b], y[b], jax.random.fold_in(key, 1)).x_adv
  for what, other in (("power", adv_b), ("type_i_error", x[b])):
    want = sammd.test_power(phi(x[a]), x[a], phi(other), other, params, n=10, num_tests=4,
                            key=jax.random.fold_in(key, 2), num_permutations=10)
    assert r[what] == pytest.approx(want, abs=1e-6), what
  assert r["layer"] == "fc2" and len(r["kernel"]) == 3
  assert os.path.exists(tmp_path / "sammd.json")


def test_sammd_report_names_the_layers_and_the_data_it_needs(tmp_path, digits_batches):
  train, test = digits_batches
  tm = _trained(models.get_model("mlp"))
  with pytest.raises(ValueError, match=r"one of \[.*'fc2'.*\], got 'nope'"):
    reports.sammd_report(tm, train, test, str(tmp_path), layer="nope")
  with pytest.raises(ValueError, match="needs at least 400 held-out examples"):
    reports.sammd_report(tm, train, test, str(tmp_path), layer="fc2", n=200)


@pytest.mark.parametrize("args,match", [
    (["--what=transfer"], "--what=transfer needs --targets"),
    (["--what=sammd"], "--what=sammd needs --sammd_layer"),
    (["--what=transfer", f"--targets={ROOT}", "--sgm_gamma=0"], "--sgm_gamma must be in (0, 1]"),
])
def test_analyze_refuses_incomplete_transfer_and_sammd_flags(tmp_path, args, match):
  out = subprocess.run([sys.executable, "-m", "launch.analyze", f"--checkpoint={tmp_path}", *args],
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 2, out.stderr
  assert match in out.stderr and "Traceback" not in out.stderr
