"""robustness_curve: robust accuracy at many eps in one compiled program, or from one minimum-norm
run; the curve's record, JSON and plot."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks
from robust_jax import evaluation
from robust_jax import evaluation_curves as curves

N_TEST = 96
BATCH = 64  # two batches, the second padded and masked
EPS = [0.02, 0.05, 0.1, 0.2]


@pytest.fixture(scope="module")
def model(train_digits_mlp, mlp_apply, digits_splits):
  """The digits MLP of the fixtures (as a ``Partial``) and the first N_TEST test examples."""
  test = {"image": digits_splits["test"]["image"][:N_TEST],
          "label": digits_splits["test"]["label"][:N_TEST]}
  return jax.tree_util.Partial(mlp_apply, train_digits_mlp(0)), test


def _examples(acc, n=N_TEST):
  return np.rint(np.asarray(acc) * n).astype(int)


@pytest.mark.parametrize("column", ["PGD-5", "FGSM"])
def test_the_curve_equals_evaluate_at_each_eps(model, column):
  """At every eps the sweep is evaluate() of the table's column at that eps, with the same key and
  batches (one example of slack: the sweep and the attack are compiled as different programs)."""
  logits_fn, test = model
  key = jax.random.key(3)
  c = evaluation.robustness_curve(logits_fn, test, EPS, attack=column, key=key, batch_size=BATCH)
  separate = []
  for e in EPS:
    table = evaluation.default_attacks(e, pgd_steps=(5,))
    r = evaluation.evaluate(logits_fn, test, {column: table[column]}, batch_size=BATCH, key=key,
                            eps=e)
    separate.append(r.attack_accuracy[column])
    assert c.clean_accuracy == r.clean_accuracy
  assert np.all(np.abs(_examples(c.accuracy) - _examples(separate)) <= 1), (c.accuracy, separate)
  assert c.eps == EPS and c.n_examples == N_TEST and c.kind == "eps_swept"
  assert c.invalid == [0] * len(EPS)
  assert c.accuracy[-1] < c.accuracy[0] <= c.clean_accuracy  # the attack did run
  # What ran: the hyperparameters that scale with eps are listed per radius.
  s = c.attack_settings
  assert s["eps"] == EPS and s["attack"] == ("pgd" if column == "PGD-5" else "fgsm")
  if column == "PGD-5":
    assert s["step_size"] == [e / 4 for e in EPS] and s["num_steps"] == 5
  assert c.n_restarts == 1 and c.key_data == jax.random.key_data(key).tolist()


def test_the_sweep_compiles_once_for_every_eps_and_batch():
  """A builder eps -> attack is traced once, however many radii and batches; a second curve with
  an equal named attack reuses the compiled program."""
  w = jax.random.normal(jax.random.key(0), (64, 10))
  logits_fn = jax.tree_util.Partial(lambda w, x: x.reshape(x.shape[0], -1) @ w, w)
  x = np.asarray(jax.random.uniform(jax.random.key(1), (40, 8, 8, 1)))
  y = np.arange(40, dtype=np.int32) % 10
  traced = []

  def build(eps):
    if isinstance(eps, jax.core.Tracer):
      traced.append(eps)
    return attacks.make("pgd", eps=eps, step_size=eps / 4, num_steps=3, start="uniform")

  many = np.linspace(0.01, 0.3, 7)
  c = evaluation.robustness_curve(logits_fn, (x, y), many, attack=build, key=jax.random.key(2),
                                  batch_size=16)  # three batches
  assert len(traced) == 1 and c.attack == "custom" and len(c.accuracy) == 7
  assert c.attack_settings == {"attack": None} and c.n_restarts is None
  # The same attack as a pair of the factory (step eps / 4 by default): a second curve with it,
  # radii reversed, reuses the compiled program.
  pair = ("pgd", dict(num_steps=3, start="uniform"))
  before = curves._sweep._cache_size()  # pylint: disable=protected-access
  a = evaluation.robustness_curve(logits_fn, (x, y), many, attack=pair, key=jax.random.key(2),
                                  batch_size=16)
  b = evaluation.robustness_curve(logits_fn, (x, y), many[::-1],  # an equal, new pair
                                  attack=("pgd", dict(num_steps=3, start="uniform")),
                                  key=jax.random.key(2), batch_size=16)
  assert curves._sweep._cache_size() == before + 1  # pylint: disable=protected-access
  assert a.accuracy == c.accuracy == b.accuracy[::-1] and a.attack == "pgd"
  # Radii vmapped two at a time: the same curve (to one example of the 40).
  v = evaluation.robustness_curve(logits_fn, (x, y), many, attack=pair, key=jax.random.key(2),
                                  batch_size=16, eps_batch=2)
  assert np.all(np.abs(_examples(v.accuracy, 40) - _examples(a.accuracy, 40)) <= 1)


def test_the_minimum_norm_curve_is_non_increasing_and_checks_the_distances(model):
  logits_fn, test = model
  eps = np.linspace(0.0, 0.3, 13)[::-1]  # any order: the curve keeps it
  key = jax.random.key(0)
  c = evaluation.robustness_curve(logits_fn, test, eps, attack=("fmn", dict(steps=20)), key=key,
                                  batch_size=BATCH)
  acc = np.asarray(c.accuracy)
  assert c.kind == "minimum_norm" and c.attack == "fmn" and c.eps == eps.tolist()
  assert np.all(np.diff(acc[::-1]) <= 0)  # non-increasing in eps
  assert acc[-1] == c.clean_accuracy  # eps = 0: exactly the correctly classified examples
  assert acc[0] < c.clean_accuracy and c.invalid == [0] * len(eps)
  assert c.attack_settings["norm"] == "linf" and c.attack_settings["steps"] == 20
  # The curve is robust_accuracy_at of the attack's own distances, batch by batch.
  made = attacks.make("fmn", norm="linf", steps=20)
  dist = []
  for b, start in enumerate(range(0, N_TEST, BATCH)):
    xb = test["image"][start:start + BATCH]
    yb = test["label"][start:start + BATCH]
    pad = BATCH - len(yb)
    xb = np.concatenate([xb, np.repeat(xb[:1], pad, 0)])
    yb = np.concatenate([yb, np.repeat(yb[:1], pad, 0)])
    r = made(logits_fn, jnp.asarray(xb), jnp.asarray(yb),
             jax.random.fold_in(jax.random.fold_in(key, b), 0))
    dist.append(np.asarray(r.distance)[:BATCH - pad])
  want = np.asarray(attacks.robust_accuracy_at(np.concatenate(dist), eps))
  np.testing.assert_array_equal(_examples(acc), _examples(want))


def test_json_round_trips_and_the_files_are_written(model, tmp_path):
  logits_fn, test = model
  c = evaluation.robustness_curve(logits_fn, test, EPS, attack="FGSM",
                                  key=jax.random.key(0), batch_size=BATCH, seed=0,
                                  training_eps=0.05)
  back = curves.RobustnessCurve.from_json(c.to_json())
  assert back == c
  record = json.loads(c.to_json())
  assert record["seed"] == 0 and record["training_eps"] == 0.05 and record["norm"] == "linf"
  assert record["key_data"] == jax.random.key_data(jax.random.key(0)).tolist()
  assert record["n_restarts"] == 1 and record["batch_size"] == BATCH
  json_path, png = curves.save_robustness_curve(c, str(tmp_path / "sub" / "curve"))
  with open(json_path) as f:
    assert curves.RobustnessCurve.from_json(f.read()) == c
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  # Several curves on one figure; the numbers next to the PNG.
  both = curves.plot_robustness_curve({"FGSM": c, "FGSM again": back}, str(tmp_path / "two.png"))
  with open(str(tmp_path / "two.json")) as f:
    assert set(json.load(f)) == {"FGSM", "FGSM again"} and both.endswith("two.png")


@pytest.mark.parametrize("kwargs,match", [
    (dict(eps_values=[0.1, 1.5]), r"eps must be in \[0, 1\) for norm='linf'"),
    (dict(eps_values=[]), "non-empty 1-D"),
    (dict(attack="AA"), "unknown curve attack 'AA'"),
    (dict(attack=("autoattack", {})), "cannot be swept"),
    (dict(attack=("pgd", dict(eps=0.1, num_steps=3))), "leave it out"),
    (dict(attack=("pgd", dict(num_steps=3, steps=2))), r"unknown hyperparameter\(s\) \['steps'\]"),
    (dict(attack="ddn"), "l2 attack"),
    (dict(batch_size=0), r"batch_size must be in \[1, inf\)"),
])
def test_bad_arguments_fail_before_anything_compiles(kwargs, match):
  x = np.full((4, 8, 8, 1), 0.5, np.float32)
  y = np.zeros(4, np.int32)
  args = dict(eps_values=[0.1], attack="PGD-2", key=jax.random.key(0), batch_size=4)
  args.update(kwargs)
  before = curves._sweep._cache_size()  # pylint: disable=protected-access
  with pytest.raises(ValueError, match=match):
    evaluation.robustness_curve(lambda x: x.reshape(4, -1)[:, :10], (x, y), **args)
  assert curves._sweep._cache_size() == before  # pylint: disable=protected-access
