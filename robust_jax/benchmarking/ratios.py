"""Derived ratios: step times divided by step times measured in the same run.

Absolute times on a shared machine drift with its load; ratios of measurements taken close together
are what BENCHMARKS.md compares (PGD-10 AT step / clean step, AWP's overhead, while loop / unrolled
loop, JAX's convolution VJP / the custom one, the library step / a minimal JAX step).

Example:

>>> recs = [dict(kind="train", model="mlp", batch=8, method="standard", step_ms=2.0),
...         dict(kind="train", model="mlp", batch=8, method="pgd_at", step_ms=15.0)]
>>> [(r["name"], r["value"]) for r in compute_ratios(recs)]
[('PGD-10 AT step / clean step', 7.5)]
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from robust_jax.benchmarking.specs import (FAST, LIB_FAST_LABEL, LIB_LABEL, MIN_LABEL,
                                           TORCH_MODELS, model_order)


def find(records: Sequence[Dict[str, Any]], kind: str, model: str,
         method: str) -> Optional[Dict[str, Any]]:
  """The first record of ``kind`` for ``model`` and ``method`` (a variant or an attack), or None."""
  for r in records:
    if r["kind"] == kind and r["model"] == model and r["method"] == method:
      return r
  return None


def compute_ratios(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """The ratios of the issue, from measurements of the same run (missing pieces are skipped).

  Per model: the PGD-10 AT step over the clean step (~7-8: PyTorch's work is 10 input-gradient
  passes and one training pass); AWP's, TRADES', FGSM-AT's, GradAlign's and ELLE's steps over the
  step they extend; the PGD-10 and PGD-20 attacks and the AT step over one forward+backward pass;
  the while-loop PGD-10 over the unrolled one (~1.0) and with JAX's convolution VJP over the custom
  one (1.0 if XLA's CPU backend handled the while loop); the step with diagnostics over the one
  without. Per PyTorch model: the library AT and clean steps over the minimal JAX steps. Each
  ratio carries the value it would have if time followed the work counted (``ideal``).

  Args:
    records: training-step, attack and framework records of one run.

  Returns:
    ``kind="ratio"`` records: ``name``, ``model``, ``batch``, ``value`` (numerator / denominator
    step time), ``ideal`` (what it would be with the work counted), ``note`` and ``of`` (the two
    measurements).
  """
  out = []

  def add(name, model, num, den, ideal, note=""):
    if num and den and den["step_ms"] > 0:
      out.append(dict(name=name, kind="ratio", model=model, batch=num["batch"],
                      value=round(num["step_ms"] / den["step_ms"], 3), ideal=ideal, note=note,
                      of=f"{num['method']} / {den['method']}"))

  train_models = sorted({r["model"] for r in records if r["kind"] in ("train", "attack")},
                        key=model_order)
  for m in train_models:
    std, at = find(records, "train", m, "standard"), find(records, "train", m, "pgd_at")
    add("PGD-10 AT step / clean step", m, at, std, "~7-8 (PyTorch's work: 10 input-gradient "
        "passes + 1 training pass, vs 1 training pass)")
    add("AWP overhead: AT+AWP step / AT step", m, find(records, "train", m, "pgd_at+awp"), at,
        "~1.1-1.3 (one more forward+backward to the weights)")
    add("TRADES step / AT step", m, find(records, "train", m, "trades"), at,
        "~1.1 (clean + adversarial train passes)")
    for meth, ideal in (("fgsm_at", "~2-2.5"), ("gradalign", "~4-6 (double backprop)"),
                        ("elle", "~3-4 (3 forward passes on a 3B batch)")):
      add(f"{meth} step / standard step", m, find(records, "train", m, meth), std, ideal)
    add("GradAlign step / FGSM-AT step", m, find(records, "train", m, "gradalign"),
        find(records, "train", m, "fgsm_at"), "~2-3 (two input gradients, differentiated)")
    fwd = find(records, "attack", m, "fwd_bwd")
    pgd = find(records, "attack", m, "pgd10")
    add("PGD-10 attack / one forward+backward (to the input)", m, pgd, fwd,
        "~11 (the loop evaluates the gradient K + 1 times)")
    add("PGD-20 attack / PGD-10 attack", m, find(records, "attack", m, "pgd20"), pgd, "~1.9")
    add("PGD-10 AT step / one forward+backward (to the input)", m, at, fwd,
        "~12-13 (11 passes + 1 training pass + 1 forward)")
    add("while_loop PGD-10 / unrolled PGD-10", m, pgd, find(records, "attack", m,
                                                             "pgd10_unrolled"), "~1.0")
    add("while_loop PGD-10, JAX's conv VJP / with the custom VJP", m,
        find(records, "attack", m, "pgd10_default_vjp"), pgd, "1.0 if XLA handled it")
  for m in TORCH_MODELS:
    lib = find(records, "framework", m, LIB_LABEL)
    mini = find(records, "framework", m, MIN_LABEL)
    fast = find(records, "framework", m, LIB_FAST_LABEL)
    if lib and mini:
      out.append(dict(name="library AT step / minimal JAX AT step", kind="ratio", model=m,
                      batch=lib["batch"], value=round(lib["step_ms"] / mini["step_ms"], 3),
                      ideal="~1.1 (11 vs 10 gradient evaluations, a clean forward and metrics)",
                      note="", of=f"{LIB_LABEL} / {MIN_LABEL}"))
      out.append(dict(name="library clean step / minimal JAX clean step", kind="ratio",
                      model=m, batch=lib["batch"],
                      value=round(lib["clean_step_ms"] / mini["clean_step_ms"], 3),
                      ideal="~1.3 (one more eval-mode forward for the metrics)", note="",
                      of=f"{LIB_LABEL} / {MIN_LABEL}"))
    if fast and mini:
      out.append(dict(name="library AT step without diagnostics / minimal JAX AT step",
                      kind="ratio", model=m, batch=fast["batch"],
                      value=round(fast["step_ms"] / mini["step_ms"], 3),
                      ideal="~1.0 (the same work)", note="", of=f"{LIB_FAST_LABEL} / {MIN_LABEL}"))
  for m in sorted({r["model"] for r in records if r["kind"] == "train"}, key=model_order):
    full, lean = find(records, "train", m, "pgd_at"), find(records, "train", m, "pgd_at" + FAST)
    add("PGD-10 AT step with diagnostics / without", m, full, lean,
        "~1.1 (11 + 1 vs 10 + 1 passes, one clean forward)")
  return out
