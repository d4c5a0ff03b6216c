"""The verdicts' evidence (:mod:`robust_jax.experiments.verdicts`) says when no spread was measured."""

from robust_jax.experiments import verdicts


def _run(clean, worst, pgd20, aa=None):
  r = {"clean": clean, "worst_case": worst, "attacks": {"PGD-20": pgd20}}
  if aa is not None:
    r["attacks"]["AA"] = aa
  return r


def test_one_seed_has_no_spread_and_several_seeds_have_theirs():
  one = {"pgd_at": [_run(0.97, 0.78, 0.81)], "fat": [_run(0.975, 0.77, 0.80)],
         "trades": [_run(0.96, 0.60, 0.66)]}
  out = verdicts.verdicts({}, {}, one)
  assert {v["claim"].split(":")[0] for v in out} >= {"FAT", "TRADES"}
  for v in out:
    assert "spread 0.0" not in v["evidence"], v
    assert "one seed, no spread" in v["evidence"], v
  two = {m: rs + [_run(rs[0]["clean"] - 0.01, rs[0]["worst_case"] - 0.02,
                       rs[0]["attacks"]["PGD-20"] - 0.01)] for m, rs in one.items()}
  for v in verdicts.verdicts({}, {}, two):
    assert "one seed" not in v["evidence"], v
    # sqrt(s_a^2 + s_b^2) of two equal spreads of 2 points / sqrt(2): 2.0 points
    assert "spread 2.0" in v["evidence"], v


def test_the_trade_off_claims_name_the_beta_the_runs_used():
  res = {"pgd_at": [_run(0.97, 0.78, 0.81)], "trades": [dict(_run(0.96, 0.60, 0.66), beta=1.0)],
         "trades_beta6": [dict(_run(0.95, 0.80, 0.83), beta=6.0)],
         "mart": [dict(_run(0.96, 0.70, 0.72), beta=6.0)]}
  out = verdicts.verdicts({}, {}, res)
  trades = [v for v in out if v["claim"].startswith("TRADES")]
  assert [v["claim"][-10:] for v in trades] == ["(beta = 1)", "(beta = 6)"]
  assert [v["verdict"] for v in trades] == ["not reproduced", "reproduced"]  # less / more robust
  claims = {v["claim"].split(":")[0]: v["claim"] for v in out}
  assert claims["MART"].endswith("(beta = 6)")
  del res["trades_beta6"]
  del res["trades"][0]["beta"]  # an older record: no beta is claimed
  claims = {v["claim"].split(":")[0]: v["claim"] for v in verdicts.verdicts({}, {}, res)}
  assert "beta" not in claims["TRADES"]


def test_a_method_with_more_seeds_leaves_the_one_seed_comparisons_as_they_are():
  # A partial suite: standard training has its second seed, the compared methods one each.
  res = {"pgd_at": [_run(0.97, 0.78, 0.81)], "trades": [_run(0.96, 0.60, 0.66)],
         "standard": [_run(0.95, 0.0, 0.01), _run(0.96, 0.0, 0.02)]}
  (v,) = [v for v in verdicts.verdicts({}, {}, res) if v["claim"].startswith("TRADES")]
  assert "one seed, no spread" in v["evidence"] and "spread 0.0" not in v["evidence"]
  assert "methods" not in v
