"""Claims and verdicts of the reproduction suite: statistics over seeds, one verdict per claim.

The suite's seed claims, each judged from the numbers of :mod:`robust_jax.experiments.reproduce`:

* Dynamic AT: better-converged, controlled FOSC and robustness comparable to or better than PGD-AT;
* FAT: higher clean accuracy at similar robustness;
* GAIRAT: higher PGD robustness but not higher AutoAttack robustness;
* TRADES, MART: a better clean/robust trade-off than PGD-AT;
* AWP: a flatter weight loss landscape and a smaller robust generalisation gap than PGD-AT.

Example:

>>> mean_std([0.5, 0.7, None, float("nan")])[0], pm([0.5, 0.7])
(0.6, '60.0 ± 14.1')
>>> [round(v, 1) for v in diff([0.6, 0.62], [0.5, 0.52])]
[10.0, 2.0]
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


def mean_std(values: Sequence[Optional[float]]) -> Tuple[float, float, int]:
  """Mean, sample standard deviation (0 for one value) and count of the finite values.

  None and non-finite entries are left out; with none left the result is ``(nan, nan, 0)``.
  """
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
  if v.size == 0:
    return float("nan"), float("nan"), 0
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def pm(values: Sequence[Optional[float]], scale: float = 100.0, digits_: int = 1) -> str:
  """``"mean ± std"`` of ``values`` times ``scale`` (percent by default), ``"value (1 seed)"`` for
  one value (no spread to show: "± 0.0" would read as none measured), or ``"n/a"`` if none.

  >>> pm([0.977])
  '97.7 (1 seed)'
  """
  m, s, n = mean_std(values)
  if n == 0:
    return "n/a"
  if n == 1:
    return f"{scale * m:.{digits_}f} (1 seed)"
  return f"{scale * m:.{digits_}f} ± {scale * s:.{digits_}f}"


def diff(a: Sequence[float], b: Sequence[float]) -> Tuple[float, float]:
  """Mean difference a - b (points) and the combined spread sqrt(s_a^2 + s_b^2) (points)."""
  ma, sa, _ = mean_std(a)
  mb, sb, _ = mean_std(b)
  return 100 * (ma - mb), 100 * math.sqrt(sa ** 2 + sb ** 2)


def verdicts(fosc: Dict[str, Any], flat: Dict[str, Any], res: Dict[str, List[Dict[str, Any]]],
             gaps: Optional[Dict[str, Any]] = None) -> List[Dict[str, str]]:
  """One plain verdict per seed claim, from the numbers.

  Differences are in points; 'spread' is sqrt(std_a^2 + std_b^2) over seeds (with one seed per
  method, none is measured: the evidence says "one seed, no spread"); a difference within
  max(spread, 1 point) is a tie. A claim is judged only when the methods it compares were run.
  The rules, each against PGD-AT (d = method minus PGD-AT, s = its spread):

  * Dynamic AT: robustness is "better" when d(worst case) > max(s, 1), "comparable" when tied.
    FOSC is "controlled" when, in at least 80% of the epochs where c_t is at least PGD-AT's median
    FOSC (where c_t is attainable), Dynamic AT's median FOSC is <= c_t, and "converged" when its
    final median is <= 1.1 x PGD-AT's (+ 1e-4). Reproduced: robustness better or comparable and
    FOSC controlled and converged; partly: one of the two.
  * FAT: higher clean accuracy, d(clean) > max(s, 0.5), and similar robustness,
    d(worst case) >= -max(s, 2). Reproduced: both; partly: higher clean, or similar robustness
    with d(clean) > 0.
  * GAIRAT: higher PGD-20, d > max(s, 1), and no AutoAttack gain, d(AA) <= max(s, 1).
    Reproduced: both; partly: no AA gain with a larger PGD-20-minus-AA gap than PGD-AT's.
  * TRADES, MART: the signs of d(clean) and d(worst case) (0 when tied) name the shift.
    Reproduced: more robust, or higher clean accuracy bought with robustness (a trade-off).
  * AWP: flatter when its mean loss rise ((L(a) + L(-a)) / 2 - L(0)) is smaller at a = 0.5 and 1,
    clearly so when mean + std is below PGD-AT's mean - std; a smaller robust generalisation gap,
    d < -max(s, 1), at the best checkpoint (train minus test PGD-20) or at the last epoch.
    Reproduced: clearly flatter and a smaller gap; partly: any one of them.

  Args:
    fosc: ``method -> per-epoch FOSC quantiles`` (``reproduce.fosc_over_epochs``) of ``pgd_at``
      and ``dart`` where run.
    flat: ``method -> flatness`` (``"rise"`` at alpha 0.5 and 1: [mean, std]) of ``pgd_at`` and
      ``pgd_at_awp`` where run.
    res: ``method -> one result per seed`` (``clean``, ``worst_case``, ``attacks``,
      ``train_pgd20``; ``beta``, the TRADES / MART weight the runs used, names it in the claim).
    gaps: ``method -> {"last": [...], "max": [...]}``, the per-epoch robust generalisation gaps.

  Returns:
    ``[{"claim", "verdict", "evidence"}]``; verdicts are ``"reproduced"``, ``"partly reproduced"``
    or ``"not reproduced"``.
  """
  out = []

  def col(m, key):
    return [r[key] for r in res.get(m, [])]

  def atk(m, name):
    return [r["attacks"][name] for r in res.get(m, [])]

  def tie(d, s):
    return abs(d) <= max(s, 1.0)

  have = lambda *ms: all(m in res and res[m] for m in ms)  # noqa: E731

  if have("pgd_at", "dart"):
    d_w, s_w = diff(col("dart", "worst_case"), col("pgd_at", "worst_case"))
    d_p, s_p = diff(atk("dart", "PGD-20"), atk("pgd_at", "PGD-20"))
    rob = ("better" if d_w > max(s_w, 1.0) else "comparable" if tie(d_w, s_w) else "worse")
    text = (f"Worst-case robust accuracy, Dynamic AT minus PGD-AT: {d_w:+.1f} points (spread "
            f"{s_w:.1f}); PGD-20: {d_p:+.1f} (spread {s_p:.1f}) -> robustness {rob}. ")
    if "dart" in fosc and "pgd_at" in fosc:
      fd, fp = fosc["dart"], fosc["pgd_at"]
      q50d, q50p = fd["quantiles"]["fosc_q50"], fp["quantiles"]["fosc_q50"]
      q90d = fd["quantiles"]["fosc_q90"]
      ct = fd.get("fosc_c")
      q50p_all = fp["quantiles"]["fosc_q50"]
      # Epochs where c_t is attainable (>= PGD-AT's median FOSC of that epoch): there Dynamic AT's
      # median FOSC should be <= c_t.
      att = [i for i, c in enumerate(ct or []) if c >= q50p_all[i]]
      ctrl = sum(q50d[i] <= ct[i] * 1.0001 for i in att)
      n_ep = len(att)
      text += (f"FOSC median, first -> last epoch: Dynamic AT {q50d[0]:.3g} -> {q50d[-1]:.3g}, "
               f"PGD-AT {q50p[0]:.3g} -> {q50p[-1]:.3g}; Dynamic AT's median <= c_t in "
               f"{ctrl}/{n_ep} epochs where c_t >= PGD-AT's median (c_t {ct[0]:.2f} -> "
               f"{ct[-1]:.2f}; 90% quantile first -> last {q90d[0]:.3g} -> {q90d[-1]:.3g}); mean "
               f"attack steps {fd['attack_steps'][0]:.1f} -> {fd['attack_steps'][-1]:.1f}. ")
      controlled = n_ep > 0 and ctrl >= 0.8 * n_ep
      converged = q50d[-1] <= q50p[-1] * 1.1 + 1e-4
      fosc_ok = controlled and converged
    else:
      fosc_ok, controlled, converged = None, None, None
    if rob in ("better", "comparable") and fosc_ok:
      verdict = "reproduced"
    elif rob in ("better", "comparable") or fosc_ok:
      verdict = "partly reproduced"
    else:
      verdict = "not reproduced"
    if fosc_ok is not None:
      text += (f"FOSC controlled by c_t: {'yes' if controlled else 'no'}; final FOSC as low as "
               f"PGD-AT's: {'yes' if converged else 'no'}.")
    out.append({"methods": ("dart",),
                "claim": "Dynamic AT: better-converged, controlled FOSC and robustness comparable "
                         "to or better than PGD-AT", "verdict": verdict, "evidence": text})

  if have("pgd_at", "fat"):
    d_c, s_c = diff(col("fat", "clean"), col("pgd_at", "clean"))
    d_w, s_w = diff(col("fat", "worst_case"), col("pgd_at", "worst_case"))
    higher_clean = d_c > max(s_c, 0.5)
    similar = d_w >= -max(s_w, 2.0)
    verdict = ("reproduced" if higher_clean and similar else
               "partly reproduced" if higher_clean or (similar and d_c > 0) else "not reproduced")
    out.append({"methods": ("fat",),
                "claim": "FAT: higher clean accuracy at similar robustness (vs PGD-AT)",
                "verdict": verdict,
                "evidence": f"clean {d_c:+.1f} points (spread {s_c:.1f}); worst-case robust "
                            f"{d_w:+.1f} (spread {s_w:.1f})."})

  def with_aa(m):  # the results with an AA column: every seed's, or the full evaluations'
    rs = res.get(m, [])
    if rs and all("AA" in r["attacks"] for r in rs):
      return [r["attacks"] for r in rs]
    return [r["full"]["attacks"] for r in rs if "AA" in r.get("full", {}).get("attacks", {})]

  if have("pgd_at", "gairat") and with_aa("gairat") and with_aa("pgd_at"):
    d_p, s_p = diff(atk("gairat", "PGD-20"), atk("pgd_at", "PGD-20"))
    d_a, s_a = diff([a["AA"] for a in with_aa("gairat")], [a["AA"] for a in with_aa("pgd_at")])
    d_w, s_w = diff(col("gairat", "worst_case"), col("pgd_at", "worst_case"))
    gp = [a["PGD-20"] - a["AA"] for a in with_aa("gairat")]
    pp = [a["PGD-20"] - a["AA"] for a in with_aa("pgd_at")]
    higher_pgd = d_p > max(s_p, 1.0)
    no_aa_gain = d_a <= max(s_a, 1.0)
    verdict = ("reproduced" if higher_pgd and no_aa_gain else
               "partly reproduced" if (no_aa_gain and mean_std(gp)[0] > mean_std(pp)[0])
               else "not reproduced")
    out.append({"methods": ("gairat",),
                "claim": "GAIRAT: higher PGD robustness but not higher AutoAttack robustness",
                "verdict": verdict,
                "evidence": f"PGD-20 {d_p:+.1f} points (spread {s_p:.1f}); AA {d_a:+.1f} "
                            f"(spread {s_a:.1f}); worst case {d_w:+.1f} (spread {s_w:.1f}); "
                            f"PGD-20 minus AA: GAIRAT {pm(gp)}, PGD-AT {pm(pp)} points."})

  for m, name in (("trades", "TRADES"), ("trades_beta6", "TRADES"), ("mart", "MART")):
    if have("pgd_at", m):
      d_c, s_c = diff(col(m, "clean"), col("pgd_at", "clean"))
      d_w, s_w = diff(col(m, "worst_case"), col("pgd_at", "worst_case"))
      d_p, s_p = diff(atk(m, "PGD-20"), atk("pgd_at", "PGD-20"))
      sign = lambda d, sp: 0 if tie(d, sp) else (1 if d > 0 else -1)  # noqa: E731
      c_, w_ = sign(d_c, s_c), sign(d_w, s_w)
      shape = {
          (0, 0): "no measurable shift (both differences within the spread)",
          (0, 1): "more robust at the same clean accuracy",
          (0, -1): "less robust at the same clean accuracy",
          (1, 0): "higher clean accuracy at the same robustness",
          (-1, 0): "lower clean accuracy at the same robustness",
          (1, -1): "a trade-off: clean accuracy bought with robustness",
          (-1, 1): "a trade-off: robustness bought with clean accuracy",
          (1, 1): "better on both",
          (-1, -1): "worse on both",
      }[(c_, w_)]
      verdict = "reproduced" if w_ == 1 or (c_, w_) == (1, -1) else "not reproduced"
      gp = [r["attacks"]["PGD-20"] - r["worst_case"] for r in res[m]]
      pp = [r["attacks"]["PGD-20"] - r["worst_case"] for r in res["pgd_at"]]
      beta = res[m][0].get("beta")  # the runs' beta (older records lack it)
      out.append({"methods": (m,),
                  "claim": f"{name}: a better clean/robust trade-off than PGD-AT"
                           + ("" if beta is None else f" (beta = {beta:g})"),
                  "verdict": verdict,
                  "evidence": f"clean {d_c:+.1f} points (spread {s_c:.1f}), worst-case robust "
                              f"{d_w:+.1f} (spread {s_w:.1f}), PGD-20 {d_p:+.1f} (spread "
                              f"{s_p:.1f}): {shape}. PGD-20 minus worst case: {name} {pm(gp)}, "
                              f"PGD-AT {pm(pp)} points (CW-inf and APGD-T find what PGD-CE "
                              f"misses)."})

  if have("pgd_at", "pgd_at_awp"):
    g_at = [r["train_pgd20"] - r["attacks"]["PGD-20"] for r in res["pgd_at"]]
    g_awp = [r["train_pgd20"] - r["attacks"]["PGD-20"] for r in res["pgd_at_awp"]]
    d_g, s_g = diff(g_awp, g_at)
    d_w, s_w = diff(col("pgd_at_awp", "worst_case"), col("pgd_at", "worst_case"))
    text = (f"Gap at the best checkpoint (train minus test PGD-20): AWP {pm(g_awp)} vs PGD-AT "
            f"{pm(g_at)} points (difference {d_g:+.1f}, spread {s_g:.1f}). ")
    smaller_last = False
    if gaps and "pgd_at" in gaps and "pgd_at_awp" in gaps:
      la, lw = gaps["pgd_at"]["last"], gaps["pgd_at_awp"]["last"]
      d_l, s_l = diff(lw, la)
      smaller_last = d_l < -max(s_l, 1.0)
      text += (f"Gap at the last epoch (training-batch minus validation PGD-10, after the last "
               f"learning-rate decay): AWP {pm(lw)} vs PGD-AT {pm(la)} (difference {d_l:+.1f}, "
               f"spread {s_l:.1f}). ")
    text += f"Worst-case robust {d_w:+.1f} (spread {s_w:.1f}). "
    flatter = clear = False
    if "pgd_at" in flat and "pgd_at_awp" in flat:
      fa, fw = flat["pgd_at"], flat["pgd_at_awp"]
      rises = []
      for a in (0.5, 1.0):
        ra, rw = fa["rise"][str(a)], fw["rise"][str(a)]
        rises.append((a, ra, rw))
        text += (f"Loss rise at ±{a:g}: AWP {rw[0]:.3f} ± {rw[1]:.3f} vs PGD-AT {ra[0]:.3f} ± "
                 f"{ra[1]:.3f}. ")
      flatter = all(rw[0] < ra[0] for _, ra, rw in rises)
      clear = all(rw[0] + rw[1] < ra[0] - ra[1] for _, ra, rw in rises)
    smaller_best = d_g < -max(s_g, 1.0)
    flat_word = "yes" if clear else "on average only, within the spread" if flatter else "no"
    text += (f"Flatter: {flat_word}"
             f"; smaller gap at the best checkpoint: {'yes' if smaller_best else 'no'}; at the "
             f"last epoch: {'yes' if smaller_last else 'no'}.")
    if clear and (smaller_best or smaller_last):
      verdict = "reproduced"
    elif flatter or smaller_best or smaller_last:
      verdict = "partly reproduced"
    else:
      verdict = "not reproduced"
    out.append({"methods": ("pgd_at_awp",),
                "claim": "AWP: flatter weight loss landscape and smaller robust generalisation "
                         "gap than PGD-AT", "verdict": verdict, "evidence": text.strip()})
  for v in out:
    # One seed of each compared method (and of PGD-AT): no spread was measured; "spread 0.0"
    # would read as a measured zero.
    if all(len(res[m]) == 1 for m in v.pop("methods") + ("pgd_at",)):
      v["evidence"] = re.sub(r"\bspread 0\.0\b", "one seed, no spread", v["evidence"])
  return out
