"""Restarts are reported as the per-example worst case, with their count and keys in the record; the
columns of one attack family (PGD-20, PGD-100) share their random start and never report a higher
accuracy for a larger budget."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks
from robust_jax import evaluation

N_TEST = 96
BATCH = 64  # two batches, the second padded and masked
EPS = 0.1


@pytest.fixture(scope="module")
def model(train_digits_mlp, mlp_apply, digits_splits):
  test = {"image": digits_splits["test"]["image"][:N_TEST],
          "label": digits_splits["test"]["label"][:N_TEST]}
  return jax.tree_util.Partial(mlp_apply, train_digits_mlp(0)), test


def _batches(test):
  """evaluate's batches: (b, x, y, mask) of BATCH examples, the last padded with the first."""
  for b, start in enumerate(range(0, N_TEST, BATCH)):
    x, y = test["image"][start:start + BATCH], test["label"][start:start + BATCH]
    pad = BATCH - len(y)
    yield (b, jnp.asarray(np.concatenate([x, np.repeat(x[:1], pad, 0)])),
           jnp.asarray(np.concatenate([y, np.repeat(y[:1], pad, 0)])), np.arange(BATCH) < len(y))


def _correct(logits_fn, x, y):
  return np.array(jnp.argmax(logits_fn(x), -1) == y)  # a writable copy


def _pgd(logits_fn, x, y, key, num_steps, loss="ce"):
  """One randomly started run, as restart r of pgd_restarts draws it with fold_in(key, r)."""
  return attacks.pgd(logits_fn, x, y, eps=EPS, step_size=EPS / 4, num_steps=num_steps,
                     start="uniform", key=key, loss=loss)


def test_restarts_are_the_and_over_the_single_runs(model, loss="ce"):
  """Per example: robust after R restarts iff robust in each of the R single-restart runs from the
  folded keys; the returned point is the point of one of those runs."""
  logits_fn, test = model
  x, y = jnp.asarray(test["image"][:BATCH]), jnp.asarray(test["label"][:BATCH])
  key, r_count = jax.random.key(11), 3
  multi = attacks.pgd_restarts(logits_fn, x, y, eps=EPS, step_size=EPS / 4, num_steps=4,
                               num_restarts=r_count, key=key, loss=loss)
  runs = [_pgd(logits_fn, x, y, jax.random.fold_in(key, r), 4, loss) for r in range(r_count)]
  robust_each = np.stack([_correct(logits_fn, run.x_adv, y) for run in runs])
  np.testing.assert_array_equal(_correct(logits_fn, multi.x_adv, y), robust_each.all(0))
  assert robust_each.all(0).sum() < robust_each[0].sum()  # the restarts found more
  same = np.stack([np.all(np.asarray(multi.x_adv == run.x_adv).reshape(BATCH, -1), 1)
                   for run in runs])
  assert same.any(0).all()


def test_evaluate_reports_the_worst_over_restarts_and_records_them(model):
  logits_fn, test = model
  key = jax.random.key(4)
  table = {"FGSM": attacks.make("fgsm", eps=EPS, start="uniform"),
           "PGD-4x3": attacks.make("pgd_restarts", eps=EPS, step_size=EPS / 4, num_steps=4,
                                   num_restarts=3)}
  report = evaluation.evaluate(logits_fn, test, table, batch_size=BATCH, key=key, eps=EPS)
  robust = []
  for b, x, y, m in _batches(test):
    attack_key = jax.random.fold_in(jax.random.fold_in(key, b), 1)  # the second column's key
    ok = _correct(logits_fn, x, y)
    for r in range(3):
      ok &= _correct(logits_fn, _pgd(logits_fn, x, y, jax.random.fold_in(attack_key, r), 4).x_adv,
                     y)
    robust.append(ok[m])
  assert report.attack_accuracy["PGD-4x3"] == np.concatenate(robust).mean()
  record = json.loads(evaluation.report_to_json(report))
  assert record["attack_restarts"] == {"FGSM": 1, "PGD-4x3": 3}
  assert record["attack_key_index"] == {"FGSM": 0, "PGD-4x3": 1}
  assert record["attack_settings"]["PGD-4x3"]["num_restarts"] == 3
  assert record["key_data"] == jax.random.key_data(key).tolist()
  assert record["monotone_budgets"] is True


@pytest.mark.parametrize("eps,seed", [(0.05, 0), (0.1, 1)])
def test_a_family_shares_its_starts_and_never_rises_with_the_budget(model, eps, seed):
  """PGD-12 starts where PGD-3 starts and reports the worst case over the two: its accuracy is at
  most PGD-3's. Off, every column draws its own key and stands alone."""
  logits_fn, test = model
  key = jax.random.key(seed)
  table = evaluation.default_attacks(eps, pgd_steps=(3, 12), cw_steps=3)
  table = {k: table[k] for k in ("FGSM", "PGD-3", "PGD-12", "CW-inf")}
  on = evaluation.evaluate(logits_fn, test, table, batch_size=BATCH, key=key, eps=eps)
  acc = on.attack_accuracy
  assert acc["PGD-12"] <= acc["PGD-3"]
  assert on.attack_key_index == {"FGSM": 0, "PGD-3": 1, "PGD-12": 1, "CW-inf": 3}
  assert on.attack_nested["PGD-12"] == ["PGD-3", "PGD-12"] and on.attack_nested["CW-inf"] == [
      "CW-inf"]
  # The columns from their definition: both runs from the family's key, then the AND.
  r3, r12 = [], []
  for b, x, y, m in _batches(test):
    k = jax.random.fold_in(jax.random.fold_in(key, b), 1)
    ok = _correct(logits_fn, x, y)
    step = eps / 4
    run = lambda n: attacks.pgd(logits_fn, x, y, eps=eps, step_size=step, num_steps=n,  # noqa
                                start="uniform", key=k).x_adv
    r3.append((ok & _correct(logits_fn, run(3), y))[m])
    r12.append((ok & _correct(logits_fn, run(12), y))[m])
  r3, r12 = np.concatenate(r3), np.concatenate(r12)
  assert acc["PGD-3"] == r3.mean() == on.attack_accuracy_single["PGD-3"]
  assert on.attack_accuracy_single["PGD-12"] == r12.mean()
  assert acc["PGD-12"] == (r3 & r12).mean()
  assert acc["FGSM"] == on.attack_accuracy_single["FGSM"]
  off = evaluation.evaluate(logits_fn, test, table, batch_size=BATCH, key=key, eps=eps,
                            monotone_budgets=False)
  assert off.attack_key_index == {"FGSM": 0, "PGD-3": 1, "PGD-12": 2, "CW-inf": 3}
  assert off.attack_accuracy == off.attack_accuracy_single and off.monotone_budgets is False
  assert off.attack_accuracy["PGD-3"] == acc["PGD-3"]  # the first column keeps its key
  # Either way the worst case over all columns is at most every column.
  for r in (on, off):
    assert r.robust_accuracy <= min(r.attack_accuracy.values())
  table_text = evaluation.format_table(on)
  assert "PGD-12: per-example worst case over PGD-3, PGD-12" in table_text
  assert "per-example worst case" not in evaluation.format_table(off)


def test_budget_families_group_by_everything_but_the_budget():
  def settings(name, **hp):
    return evaluation.attack_settings(attacks.make(name, **hp), 10)

  plain = lambda logits_fn, x, y, key: x  # noqa: E731
  table = {
      "A5": settings("apgd_ce", eps=0.1, n_iter=5),
      "A10": settings("apgd_ce", eps=0.1, n_iter=10),
      "A10-rho": settings("apgd_ce", eps=0.1, n_iter=10, rho=0.5),
      "P10": settings("pgd_restarts", eps=0.1, step_size=0.02, num_steps=10),
      "P5x3": settings("pgd_restarts", eps=0.1, step_size=0.02, num_steps=5, num_restarts=3),
      "P10x3": settings("pgd_restarts", eps=0.1, step_size=0.02, num_steps=10, num_restarts=3),
      "P10-step": settings("pgd_restarts", eps=0.1, step_size=0.03, num_steps=10),
      "f1": evaluation.attack_settings(plain),
      "f2": evaluation.attack_settings(plain),
  }
  key_index, nested = evaluation.budget_families(table)
  assert key_index == {"A5": 0, "A10": 0, "A10-rho": 2, "P10": 3, "P5x3": 3, "P10x3": 3,
                       "P10-step": 6, "f1": 7, "f2": 8}
  assert nested["A10"] == ["A5", "A10"] and nested["A10-rho"] == ["A10-rho"]
  # (10 steps, 1 restart) and (5 steps, 3 restarts) are not ordered: neither includes the other.
  assert nested["P10"] == ["P10"] and nested["P5x3"] == ["P5x3"]
  assert nested["P10x3"] == ["P10", "P5x3", "P10x3"]
  assert nested["f1"] == ["f1"] and nested["f2"] == ["f2"]
