"""``robust_jax.robustbench``: RobustBench's evaluation (AutoAttack standard on the first
n_examples) and its model-info JSON, on a small linear model of the digits."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks, robustbench
from robust_jax.data import pipeline


@pytest.fixture(scope="module")
def model_and_data():
  ds = pipeline.load_dataset("digits")
  x = pipeline.to_float(ds.test["image"][:48])
  y = np.asarray(ds.test["label"][:48], np.int32)
  w = jax.random.normal(jax.random.key(0), (64, 10)) * 0.5
  # A least-squares fit, so that most points are classified correctly and some are robust.
  xtr = pipeline.to_float(ds.train["image"]).reshape(-1, 64)
  w = jnp.linalg.lstsq(xtr, jax.nn.one_hot(ds.train["label"], 10) * 10.0)[0]
  return jax.tree_util.Partial(lambda w, xx: xx.reshape(xx.shape[0], -1) @ w, w), x, y


KW = dict(n_iter=3, n_queries=5)


def test_benchmark_is_autoattack_standard_on_the_first_n_examples(model_and_data):
  fn, x, y = model_and_data
  key = jax.random.key(3)
  info = robustbench.benchmark(fn, x, y, dataset="digits", threat_model="Linf", eps=0.1,
                               n_examples=32, key=key, model_name="lsq", **KW)
  r = attacks.autoattack(fn, x[:32], y[:32], eps=0.1, key=key, version="standard", **KW)
  assert info["autoattack_acc"] == str(round(float(np.mean(np.asarray(r.robust))) * 100, 2))
  assert info["clean_acc"] == str(round(float(np.mean(np.asarray(r.clean_correct))) * 100, 2))
  assert float(info["autoattack_acc"]) < float(info["clean_acc"])  # the attack found something
  assert info["robust_jax"]["stages"] == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
  assert (info["threat_model"], info["n_examples"], info["version"], info["eps"]) == (
      "Linf", 32, "standard", 0.1)
  assert set(info) - {"threat_model", "n_examples", "version", "robust_jax"} <= set(
      robustbench.MODEL_INFO_FIELDS)


def test_write_model_info_updates_like_update_json(tmp_path, model_and_data):
  path = robustbench.model_info_path(str(tmp_path), dataset="digits", threat_model="Linf",
                                     model_name="lsq")
  assert path.endswith("model_info/digits/Linf/lsq.json")
  robustbench.write_model_info(path, {"name": "lsq", "venue": "here", "clean_acc": "1.0"})
  out = robustbench.write_model_info(path, {"clean_acc": "2.0", "venue": None,
                                            "autoattack_acc": "0.5"})
  assert out == {"name": "lsq", "venue": "here", "clean_acc": "2.0", "autoattack_acc": "0.5"}
  assert json.load(open(path)) == out


@pytest.mark.parametrize("kwargs,match", [
    (dict(threat_model="corruptions"), "threat_model must be one of"),
    (dict(eps=1.5), "eps must be in"),
    (dict(n_examples=49), "n_examples must be in"),
    (dict(dataset="cifar11"), "dataset must be one of"),
])
def test_bad_arguments_are_refused_before_attacking(model_and_data, kwargs, match):
  fn, x, y = model_and_data
  args = dict(dataset="digits", threat_model="Linf", eps=0.1, n_examples=8,
              key=jax.random.key(0), **KW)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    robustbench.benchmark(fn, x, y, **args)
