"""evaluate / transfer / format_table / report_to_json, and PGD restarts and CW-inf."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import robust_jax
from robust_jax import attacks
from robust_jax import evaluation
from robust_jax import losses
from robust_jax.attacks import _restarts as restarts

N_TEST = 128
EPS = 0.1


@pytest.fixture(scope="module")
def data(train_digits_mlp, mlp_apply, digits_splits):
  """Two MLPs trained without attacks on scikit-learn's digits (different seeds), test data."""
  test = {"image": digits_splits["test"]["image"][:N_TEST],
          "label": digits_splits["test"]["label"][:N_TEST]}
  return (jax.tree_util.Partial(mlp_apply, train_digits_mlp(0)),
          jax.tree_util.Partial(mlp_apply, train_digits_mlp(1)), test)


@pytest.fixture(scope="module")
def report(data):
  logits_fn, _, test = data
  table = evaluation.default_attacks(EPS, pgd_steps=(5, 10), cw_steps=5, n_iter=10,
                                     n_queries=100)
  return evaluation.evaluate(logits_fn, test, table, batch_size=64, key=jax.random.key(0),
                             eps=EPS)


def test_default_table_columns(report):
  assert list(report.attack_accuracy) == ["FGSM", "PGD-5", "PGD-10", "CW-inf", "APGD-CE",
                                          "APGD-T", "AA"]
  assert list(evaluation.default_attacks(8 / 255)) == list(evaluation.TABLE_COLUMNS)
  assert report.num_examples == N_TEST and report.num_classes == 10
  assert set(report.seconds) == {"clean", *report.attack_accuracy}
  assert all(v >= 0 for v in report.seconds.values())
  assert all(v == 0 for v in report.invalid.values())


def test_worst_case_is_below_every_attack(report):
  accs = report.attack_accuracy
  assert report.robust_accuracy <= min(accs.values()) <= report.clean_accuracy
  assert accs["AA"] <= accs["APGD-CE"] and accs["AA"] <= accs["APGD-T"]
  assert accs["PGD-10"] <= accs["FGSM"]
  assert report.robust_accuracy < report.clean_accuracy  # the undefended model is attackable


def test_per_class_numbers_are_consistent(report, data):
  _, _, test = data
  counts = np.asarray(report.per_class_count)
  np.testing.assert_array_equal(counts, np.bincount(test["label"], minlength=10))
  clean = np.asarray(report.per_class_clean_accuracy, float)
  robust = np.asarray(report.per_class_robust_accuracy, float)
  np.testing.assert_allclose((counts * clean).sum() / counts.sum(), report.clean_accuracy)
  np.testing.assert_allclose((counts * robust).sum() / counts.sum(), report.robust_accuracy)
  assert np.all(robust <= clean)
  assert robust[report.worst_class] == robust.min()
  assert report.worst_class_name == str(report.worst_class)


def test_format_table_and_json(report):
  table = evaluation.format_table(report)
  lines = table.splitlines()
  assert lines[0] == ("| Clean | FGSM | PGD-5 | PGD-10 | CW-inf | APGD-CE | APGD-T | AA | "
                      "worst class |")
  assert lines[1] == "|" + "---:|" * 9
  cells = [c.strip() for c in lines[2].strip("|").split("|")]
  assert cells[0] == f"{100 * report.clean_accuracy:.2f}"
  assert cells[-2] == f"{100 * report.attack_accuracy['AA']:.2f}"
  assert cells[-1].startswith(f"{report.worst_class_name}: ")
  assert f"{100 * report.robust_accuracy:.2f}%" in lines[-1]
  back = json.loads(evaluation.report_to_json(report))
  assert back["attack_accuracy"] == report.attack_accuracy
  assert back["robust_accuracy"] == report.robust_accuracy and back["eps"] == EPS


def test_json_records_what_ran(report):
  """Every evaluation JSON says which algorithm ran with which budgets: the library version, the
  key, and per column every hyperparameter (the APGD variant, n_iter, restarts, target classes,
  n_queries, eps, norm; AutoAttack's per stage)."""
  back = json.loads(evaluation.report_to_json(report))
  assert back["library_version"] == robust_jax.__version__ != ""
  assert back["key_data"] == jax.random.key_data(jax.random.key(0)).tolist()
  s = back["attack_settings"]
  assert list(s) == list(report.attack_accuracy)
  for name in ("APGD-CE", "APGD-T"):
    assert s[name]["variant"] == "official"  # fra31/auto-attack's APGD by default
    assert (s[name]["n_iter"], s[name]["n_restarts"], s[name]["eps"], s[name]["norm"]) == (
        10, 1, EPS, "linf")
  assert s["APGD-CE"]["attack"] == "apgd_ce" and s["APGD-CE"]["loss"] == "ce"
  assert s["APGD-T"]["n_target_classes"] == 9
  assert s["PGD-10"]["num_steps"] == 10 and s["PGD-10"]["step_size"] == EPS / 4
  assert s["AA"]["attack"] == "autoattack" and s["AA"]["version"] == "standard"
  assert s["AA"]["apgd_variant"] == "official" and s["AA"]["square_variant"] == "autoattack"
  stages = s["AA"]["stages"]
  assert list(stages) == ["apgd-ce", "apgd-t", "fab-t", "square"]
  assert stages["apgd-ce"]["variant"] == stages["apgd-t"]["variant"] == "official"
  assert stages["apgd-t"]["n_target_classes"] == stages["fab-t"]["n_target_classes"] == 9
  assert all(stages[k]["n_iter"] == 10 and stages[k]["n_restarts"] == 1
             for k in ("apgd-ce", "apgd-t", "fab-t"))
  assert stages["square"]["n_queries"] == 100 and stages["square"]["variant"] == "autoattack"
  # A plain callable is evaluated but its settings cannot be known.
  assert evaluation.attack_settings(lambda f, x, y, k: x) == {"attack": None}
  # The paper's APGD on request, recorded as such.
  paper = evaluation.default_attacks(EPS, apgd_variant="paper")
  assert evaluation.attack_settings(paper["APGD-CE"])["variant"] == "paper"
  aa_paper = evaluation.attack_settings(paper["AA"], 10)
  assert aa_paper["stages"]["apgd-t"]["variant"] == "paper"


def test_dataset_formats_and_masks(data):
  logits_fn, _, test = data
  x, y = test["image"], test["label"]
  key = jax.random.key(0)
  full = evaluation.evaluate(logits_fn, (x, y), batch_size=64, key=key)
  as_dict = evaluation.evaluate(logits_fn, test, batch_size=64, key=key)
  ragged = [{"image": x[i:i + 37], "label": y[i:i + 37]} for i in range(0, N_TEST, 37)]
  stream = evaluation.evaluate(logits_fn, ragged, batch_size=64, key=key)
  for r in (as_dict, stream):
    assert r.clean_accuracy == full.clean_accuracy
    assert r.per_class_count == full.per_class_count
  mask = np.arange(N_TEST) < 100
  masked = evaluation.evaluate(logits_fn, (x, y, mask), batch_size=64, key=key)
  assert masked.num_examples == 100
  want = float(np.mean(np.asarray(jnp.argmax(logits_fn(jnp.asarray(x[:100])), -1)) == y[:100]))
  np.testing.assert_allclose(masked.clean_accuracy, want)
  with pytest.raises(ValueError, match="batch_size"):
    evaluation.evaluate(logits_fn, (x, y), batch_size=0, key=key)
  with pytest.raises(ValueError, match="image"):
    evaluation.evaluate(logits_fn, (x * 2.0, y), batch_size=64, key=key)


def test_points_outside_the_ball_never_count(data):
  logits_fn, _, test = data

  def cheat(logits_fn, x, y, key):  # a far-away point: misclassified, but not within eps
    del logits_fn, y, key
    return jnp.clip(1.0 - x, 0.0, 1.0)

  r = evaluation.evaluate(logits_fn, test, {"cheat": cheat}, batch_size=64,
                          key=jax.random.key(0), eps=EPS)
  assert r.invalid["cheat"] > 0
  assert r.attack_accuracy["cheat"] == r.clean_accuracy == r.robust_accuracy


def test_transfer(data):
  source, target, test = data

  def pgd5(logits_fn, x, y, key):
    return restarts.pgd_restarts(logits_fn, x, y, eps=EPS, step_size=EPS / 4, num_steps=5,
                                 key=key)

  key = jax.random.key(5)
  white = evaluation.evaluate(target, test, {"pgd": pgd5}, batch_size=64, key=key)
  same = evaluation.transfer(target, target, test, pgd5, batch_size=64, key=key)
  assert same.library_version == robust_jax.__version__ and same.key_data == [0, 5]
  assert same.attack_settings == {"attack": None}  # a plain function: not recorded
  # Source == target: the transfer attack is the white-box attack (same keys and batches).
  assert same.transfer_accuracy == same.source_accuracy == white.attack_accuracy["pgd"]
  assert same.clean_accuracy == white.clean_accuracy and same.num_examples == N_TEST
  # From an independently trained model the attack transfers, but less than white-box.
  other = evaluation.transfer(source, target, test, pgd5, batch_size=64, key=key)
  assert white.attack_accuracy["pgd"] <= other.transfer_accuracy < other.clean_accuracy


def test_attacks_given_by_name_equal_the_made_attacks(data):
  logits_fn, _, test = data
  key = jax.random.key(3)
  specs = {"PGD-5": ("pgd", dict(eps=EPS, step_size=EPS / 4, num_steps=5, start="uniform")),
           "CW": ("cw_inf", dict(eps=EPS, num_steps=4))}
  by_name = evaluation.evaluate(logits_fn, test, specs, batch_size=64, key=key, eps=EPS)
  made = {name: attacks.make(n, **hp) for name, (n, hp) in specs.items()}
  by_fn = evaluation.evaluate(logits_fn, test, made, batch_size=64, key=key, eps=EPS)
  assert by_name.attack_accuracy == by_fn.attack_accuracy
  assert by_name.attack_accuracy["PGD-5"] < by_name.clean_accuracy  # the attacks did run
  table = evaluation.default_attacks(EPS, pgd_steps=(5,))
  assert by_name.attack_accuracy["PGD-5"] == evaluation.evaluate(
      logits_fn, test, {"PGD-5": table["PGD-5"]}, batch_size=64, key=key).attack_accuracy["PGD-5"]
  same = evaluation.transfer(logits_fn, logits_fn, test, specs["PGD-5"], batch_size=64, key=key)
  assert same.transfer_accuracy == by_name.attack_accuracy["PGD-5"]
  # Bad specifications fail before any batch is attacked, naming what is wrong.
  with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['steps'\]"):
    evaluation.evaluate(logits_fn, test, {"bad": ("pgd", dict(eps=EPS, step_size=0.1, steps=3))},
                        batch_size=64, key=key)
  with pytest.raises(ValueError, match="attack 'bad' must be a callable"):
    evaluation.evaluate(logits_fn, test, {"bad": "pgd"}, batch_size=64, key=key)
  with pytest.raises(ValueError, match=r"eps must be in \[0.0, inf\)"):
    evaluation.evaluate(logits_fn, test, {"bad": ("fgsm", dict(eps=-1.0))}, batch_size=64, key=key)


# --- PGD restarts and CW-inf ----------------------------------------------------------------------


def test_restarts_keep_the_per_example_worst_case(data):
  logits_fn, _, test = data
  x, y = jnp.asarray(test["image"][:64]), jnp.asarray(test["label"][:64])  # the report's shape
  kw = dict(eps=0.08, step_size=0.02, num_steps=5, key=jax.random.key(6))
  one = restarts.pgd_restarts(logits_fn, x, y, num_restarts=1, **kw)
  three = restarts.pgd_restarts(logits_fn, x, y, num_restarts=3, **kw)
  assert bool(jnp.all(three.misclassified | ~one.misclassified))  # restart 0 is the same
  same = three.misclassified == one.misclassified
  assert bool(jnp.all(three.loss[same] >= one.loss[same] - 1e-6))
  assert three.num_steps.tolist() == [15] * 64
  assert float(jnp.abs(three.x_adv - x).max()) <= 0.08 + 1e-6


def test_cw_inf_ascends_the_cw_loss(data):
  logits_fn, _, test = data
  x, y = jnp.asarray(test["image"][:64]), jnp.asarray(test["label"][:64])
  r = restarts.cw_inf(logits_fn, x, y, eps=EPS, num_steps=5, key=jax.random.key(7))
  cw = losses.make_cw(50.0)
  np.testing.assert_allclose(r.loss, cw(logits_fn(r.x_adv), y), rtol=1e-5, atol=1e-5)
  assert float(jnp.mean(r.loss)) > float(jnp.mean(cw(logits_fn(x), y)))
  assert float(jnp.abs(r.x_adv - x).max()) <= EPS + 1e-6
  with pytest.raises(ValueError, match="num_restarts"):
    restarts.pgd_restarts(logits_fn, x, y, eps=EPS, step_size=0.02, num_steps=5,
                          num_restarts=0, key=jax.random.key(0))


# ----------------------------------------------------------------------------------------------
# Bad model outputs and inputs (issue 15): clear errors, never silent numbers. A random linear
# model on 8x8x1 inputs; nothing here needs a trained one.

_W = jax.random.normal(jax.random.key(0), (64, 10))
_X = np.asarray(jax.random.uniform(jax.random.key(1), (10, 8, 8, 1)))
_Y = np.arange(10, dtype=np.int32)
_TABLE = {"PGD-2": ("pgd", dict(eps=0.1, step_size=0.05, num_steps=2)),
          "FGSM": ("fgsm", dict(eps=0.1))}


def _linear(x):
  return x.reshape(x.shape[0], -1) @ _W


def test_nan_logits_are_refused_not_counted():
  with pytest.raises(evaluation.NonFiniteLogitsError,
                     match=r"non-finite logits.*at the clean inputs.*4 of 4 examples of batch 0"):
    evaluation.evaluate(lambda x: _linear(x) * jnp.nan, (_X, _Y), _TABLE, batch_size=4,
                        key=jax.random.key(0), eps=0.1)


def test_an_attack_returning_nan_is_refused_not_counted_robust():
  # A NaN x_adv is outside the ball, so the validity check alone would count it robust.
  nan_attack = lambda logits_fn, x, y, key: x * jnp.nan  # noqa: E731
  with pytest.raises(evaluation.NonFiniteLogitsError, match=r"attack 'bad'.*batch 0"):
    evaluation.evaluate(_linear, (_X, _Y), {"bad": nan_attack}, batch_size=4,
                        key=jax.random.key(0), eps=0.1)
  # Logits that turn non-finite only away from the clean points (large inputs overflow).
  blowup = lambda x: _linear(x) * jnp.where(jnp.max(x) > 0.999, jnp.inf, 1.0)  # noqa: E731
  to_one = lambda logits_fn, x, y, key: jnp.ones_like(x)  # noqa: E731
  with pytest.raises(evaluation.NonFiniteLogitsError, match="attack 'ones'"):
    evaluation.evaluate(blowup, (_X * 0.5, _Y), {"ones": to_one}, batch_size=4,
                        key=jax.random.key(0))


@pytest.mark.parametrize("bad_fn,match", [
    (lambda x: _linear(x)[:1], r"\[B, C\] = \[4, C\].*\(1, 10\)"),
    (lambda x: _linear(x)[:, 0], r"\[B, C\].*\(4,\)"),
    (lambda x: jnp.argmax(_linear(x), -1)[:, None] + jnp.zeros((1, 10), jnp.int32), "floating"),
])
def test_evaluate_checks_the_model_output_first(bad_fn, match):
  with pytest.raises(ValueError, match=match):
    evaluation.evaluate(bad_fn, (_X, _Y), _TABLE, batch_size=4, key=jax.random.key(0))


def test_evaluate_refuses_eps_above_the_box_and_bad_keys():
  with pytest.raises(ValueError, match=r"eps must be in .0, 1\) for norm='linf'"):
    evaluation.default_attacks(2.0)
  with pytest.raises(ValueError, match=r"eps must be in .0, 1\) for norm='linf'"):
    evaluation.evaluate(_linear, (_X, _Y), None, batch_size=4, key=jax.random.key(0), eps=2.0)
  with pytest.raises(ValueError, match="key must be a PRNG key"):
    evaluation.evaluate(_linear, (_X, _Y), None, batch_size=4, key=0)
  with pytest.raises(ValueError, match=r"batch_size must be in \[1, inf\)"):
    evaluation.evaluate(_linear, (_X, _Y), None, batch_size=0, key=jax.random.key(0))
  with pytest.raises(ValueError, match="channels-first"):
    evaluation.evaluate(_linear, (_X.transpose(0, 3, 1, 2), _Y), None, batch_size=4,
                        key=jax.random.key(0))


def test_progress_bar_names_each_attack_on_stderr(capsys):
  r = evaluation.evaluate(_linear, (_X, _Y), _TABLE, batch_size=4, key=jax.random.key(0),
                          eps=0.1, progress=True)
  err = capsys.readouterr().err
  assert "evaluate PGD-2, batch 1/3" in err and "evaluate FGSM, batch 3/3" in err
  assert "6/6" in err and set(r.attack_accuracy) == set(_TABLE)
  evaluation.evaluate(_linear, (_X, _Y), _TABLE, batch_size=4, key=jax.random.key(0), eps=0.1)
  assert capsys.readouterr().err == ""  # off by default


def test_suite_names_tell_partial_suites_apart():
  full = dict(attacks=evaluation.TABLE_COLUMNS, split="test", num_examples=0, eps=0.3,
              training_eps=0.3, n_iter=100, n_queries=5000, seed=0, apgd_variant="official")
  assert evaluation.suite_name("best", **full) == "eval_best"
  variants = [dict(attacks=["FGSM"]), dict(num_examples=50), dict(eps=0.1),
              dict(split="validation"), dict(n_iter=5), dict(n_queries=20), dict(seed=1),
              dict(apgd_variant="paper"), dict(attacks=["FGSM"], num_examples=50, eps=0.1)]
  names = [evaluation.suite_name("best", **{**full, **v}) for v in variants]
  assert len(set(names)) == len(names) and "eval_best" not in names
  assert all(n.startswith("eval_best_") and "/" not in n for n in names)
  # A budget no chosen column uses does not split the suite.
  assert evaluation.suite_name("best", **{**full, "attacks": ["FGSM"], "n_iter": 5}) == (
      evaluation.suite_name("best", **{**full, "attacks": ["FGSM"]}))


def test_l1_table_is_apgd_l1_and_the_l1_autoattack_and_checks_the_l1_ball():
  table = evaluation.default_attacks(2.0, norm="l1", n_iter=10, n_queries=20)
  assert list(table) == ["APGD-CE", "APGD-T", "AA"]
  assert all(a.hyperparameters["norm"] == "l1" for a in table.values())
  assert table["AA"].hyperparameters["version"] == "standard"
  x = np.full((3, 2, 2, 1), 0.5, np.float32)
  d = np.zeros_like(x)
  d[0, 0, 0, 0], d[1, :, :, 0] = 0.3, 0.25  # L1 norms 0.3 and 1.0 (linf 0.3 and 0.25)
  d[2, :, :, 0] = 0.26                       # L1 norm 1.04: outside the ball of radius 1
  assert evaluation._valid(x + d, x, 1.0, "l1").tolist() == [True, True, False]
