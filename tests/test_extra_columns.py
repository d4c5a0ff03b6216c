"""The columns beyond the seeds' table (``evaluation.extra_attacks``): a minimum-norm attack
counted at eps breaks exactly the examples whose minimal perturbation found is at most eps, and its
returned points stay in the ball; AA+ is AutoAttack's official plus composition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks, evaluation
from robust_jax.data import pipeline


@pytest.fixture(scope="module")
def linear_digits():
  ds = pipeline.load_dataset("digits")
  xtr = pipeline.to_float(ds.train["image"]).reshape(-1, 64)
  w = jnp.linalg.lstsq(xtr, jax.nn.one_hot(ds.train["label"], 10) * 10.0)[0]
  fn = jax.tree_util.Partial(lambda w, xx: xx.reshape(xx.shape[0], -1) @ w, w)
  return fn, {"image": pipeline.to_float(ds.test["image"][:40]),
              "label": np.asarray(ds.test["label"][:40], np.int32)}


@pytest.mark.parametrize("name,norm,eps", [("FMN", "linf", 0.35), ("FAB", "linf", 0.035),
                                           ("DeepFool", "l2", 0.05), ("DDN", "l2", 0.41)])
def test_a_minimum_norm_column_is_its_robust_accuracy_at_eps(linear_digits, name, norm, eps):
  fn, data = linear_digits
  (col,) = evaluation.extra_attacks(eps, [name], norm=norm, min_norm_steps=20).values()
  key = jax.random.key(0)
  rep = evaluation.evaluate(fn, data, {name: col}, batch_size=40, key=key, eps=eps, norm=norm)
  raw = {"FMN": lambda: attacks.make("fmn", norm=norm, steps=20),
         "FAB": lambda: attacks.make("fab", eps=eps, norm=norm, n_iter=20, early_stop=False),
         "DeepFool": lambda: attacks.make("deepfool", norm=norm),
         "DDN": lambda: attacks.make("ddn", steps=20)}[name]()
  r = raw(fn, jnp.asarray(data["image"]), jnp.asarray(data["label"]),
          jax.random.fold_in(jax.random.fold_in(key, 0), 0))
  want = float(attacks.robust_accuracy_at(r.distance, eps))
  assert rep.attack_accuracy[name] == pytest.approx(want, abs=1e-6)  # float32 mean of 40
  assert rep.invalid[name] == 0  # no returned point outside the ball
  assert 0 < want < rep.clean_accuracy  # some broken within eps, some not


def test_l2_only_columns_are_refused_for_linf_and_aa_plus_is_the_plus_version():
  with pytest.raises(ValueError, match="are l2 attacks"):
    evaluation.extra_attacks(0.1, ["DDN"], norm="linf")
  with pytest.raises(ValueError, match="unknown extra columns"):
    evaluation.extra_attacks(0.1, ["FOO"])
  (aa,) = evaluation.extra_attacks(0.1, ["AA+"]).values()
  assert aa.hyperparameters["version"] == "plus"
  (std,) = [evaluation.default_attacks(0.5, norm="l2")["AA"]]
  assert std.hyperparameters["version"] == "standard"  # l2 standard now has Square-L2
