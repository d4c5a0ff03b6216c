"""DDi, CFOL-AT and BiSAM against their baselines on the embedded digits: one number per system.

* **DDi** (Latorre et al., ICLR 2023) against PGD-AT: clean and PGD-20 robust test accuracy.
* **CFOL-AT** (Pethick et al., TMLR 2023) against PGD-AT: the worst class's PGD-20 robust accuracy
  (the paper's claim: a higher worst class at a small cost in the average).
* **BiSAM** (Xie et al., ICML 2024) against SAM, both on standard training: clean test accuracy.

Every run is the digits recipe (``launch/configs/digits.py``: MLP, PGD-10 at eps 0.2, 60 epochs)
with ``--config.method`` / ``--config.weight_perturbation`` set, trained by
:func:`robust_jax.training.loop.train_and_evaluate` (best checkpoint by validation PGD accuracy),
then attacked on the test split with PGD-20 (uniform start, step eps / 4, one fixed key) here, per
class; standard training (SAM, BiSAM) is evaluated at its last checkpoint (:data:`CHECKPOINT`). CFOL runs twice: with the official eta (5e-6, the CIFAR-10 command) and with eta scaled to
the digits run's number of draws (``CFOL_DIGITS_ETA``: the CIFAR-10 command draws 200 epochs x 312
steps x 128 = 8.0e6 examples, the digits recipe 60 x 20 x 64 = 7.7e4, about 104 times fewer, and
the adversary's step sums over the draws; 5e-6 x 104 = 5.2e-4 -> 5e-4).

Resumable: each run trains into ``<out_dir>/<run>/seed<k>`` (the loop resumes by itself) and its
evaluation is cached in ``<out_dir>/results.json``; rerunning the command skips what is done.

  python -m robust_jax.experiments.descent_and_fairness --out_dir=runs/descent_and_fairness
  python -m robust_jax.experiments.descent_and_fairness --suite=mnist5k --seeds=0 \
      --runs=pgd_at,cfol,cfol_official_eta         # CFOL on MNIST-5k's CPU PGD-AT row

A few minutes of a 2-core CPU for three seeds (DDi's ten restarts and 1000-iteration QP per step
are its largest part).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from typing import Any, Callable, Dict, Iterable, List

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import attacks
from robust_jax.data import pipeline
from robust_jax.training import loop
from robust_jax.training import restore as restore_lib

CFOL_DIGITS_ETA = 5e-4
# MNIST-5k's CPU PGD-AT row (launch/configs/mnist5k.py:pgd_at,cpu): 15 epochs x 112 steps x 32 =
# 5.4e4 draws, 149 times fewer than the CIFAR-10 command's: 5e-6 x 149 = 7.4e-4 -> 7e-4.
CFOL_MNIST5K_ETA = 7e-4
SUITES = {
    "digits": dict(recipe="launch/configs/digits.py", cfol_eta=CFOL_DIGITS_ETA),
    "mnist5k": dict(recipe="launch/configs/mnist5k.py:pgd_at,cpu", cfol_eta=CFOL_MNIST5K_ETA),
}
# run name -> config overrides of the digits recipe.
RUNS: Dict[str, Dict[str, Any]] = {
    "pgd_at": dict(method="pgd_at"),
    "ddi": dict(method="ddi"),
    "cfol": dict(method="cfol", cfol_eta=CFOL_DIGITS_ETA),
    "cfol_official_eta": dict(method="cfol"),
    "sam": dict(method="standard", weight_perturbation="sam"),
    "bisam": dict(method="bisam"),
}
# The checkpoint evaluated: the loop's best by validation PGD accuracy for adversarial training; the
# last one for standard training (SAM, BiSAM), whose validation PGD accuracy is near 0 throughout
# and would select an early epoch.
CHECKPOINT = {name: "latest" if overrides["method"] in ("standard", "bisam") else "best"
              for name, overrides in RUNS.items()}
COMPARISONS = (
    ("DDi vs PGD-AT", "ddi", "pgd_at", "robust_acc"),
    ("CFOL-AT vs PGD-AT", "cfol", "pgd_at", "worst_class_robust_acc"),
    ("CFOL-AT vs PGD-AT (its cost)", "cfol", "pgd_at", "robust_acc"),
    ("CFOL-AT (official eta) vs PGD-AT", "cfol_official_eta", "pgd_at", "worst_class_robust_acc"),
    ("CFOL-AT (official eta) vs PGD-AT (its cost)", "cfol_official_eta", "pgd_at", "robust_acc"),
    ("BiSAM vs SAM", "bisam", "sam", "clean_acc"),
)
TEST_PGD_STEPS = 20


def load_recipe(spec_str: str) -> Callable[[], Any]:
  """``get_config`` of a recipe file, ``path[:arg]`` as ``ml_collections.config_flags`` reads
  ``--config`` (``launch/configs/mnist5k.py:pgd_at,cpu``)."""
  path, _, arg = spec_str.partition(":")
  spec = importlib.util.spec_from_file_location("recipe", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return (lambda: module.get_config(arg)) if arg else module.get_config


def make_config(recipe: Callable[[], Any], run: str, seed: int, *,
                cfol_eta: float = CFOL_DIGITS_ETA):
  """The recipe (``launch/configs/digits.py``'s ``get_config``) with the run's overrides; the
  scaled CFOL runs take ``cfol_eta``."""
  c = recipe()
  c.update(RUNS[run])
  if run == "cfol":
    c.cfol_eta = cfol_eta
  c.seed = seed
  c.progress = False
  return c


def per_class_pgd(logits_fn, arrays, *, eps: float, num_classes: int,
                  batch_size: int = 500) -> Dict[str, Any]:
  """Clean and PGD-20 accuracy on ``arrays``, overall and per class (eval mode, key 0)."""
  attack = jax.jit(lambda x, y: attacks.pgd(
      logits_fn, x, y, eps=eps, step_size=eps / 4, num_steps=TEST_PGD_STEPS, start="uniform",
      key=jax.random.key(0)).x_adv)
  clean, robust, labels = [], [], []
  for batch in pipeline.eval_batches(arrays, batch_size=batch_size):
    m = batch["mask"]
    x, y = jnp.asarray(batch["image"]), jnp.asarray(batch["label"])
    x_adv = attack(x, y)
    clean.append(np.asarray(jnp.argmax(logits_fn(x), -1) == y)[m])
    robust.append(np.asarray(jnp.argmax(logits_fn(x_adv), -1) == y)[m])
    labels.append(np.asarray(y)[m])
  clean, robust, labels = map(np.concatenate, (clean, robust, labels))
  robust &= clean
  per_class = [float(robust[labels == c].mean()) for c in range(num_classes)]
  return {"clean_acc": float(clean.mean()), "robust_acc": float(robust.mean()),
          "per_class_robust_acc": per_class, "worst_class_robust_acc": min(per_class),
          "worst_class": int(np.argmin(per_class)), "n": int(labels.size)}


def _load(path: str) -> Dict[str, Any]:
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return {}


def _save(path: str, results: Dict[str, Any]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(results, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def run(out_dir: str, recipe: Callable[[], Any], *, seeds: Iterable[int] = (0, 1, 2),
        runs: Iterable[str] = tuple(RUNS), cfol_eta: float = CFOL_DIGITS_ETA) -> Dict[str, Any]:
  """Trains and evaluates every (run, seed) not yet in ``<out_dir>/results.json``.

  Args:
    out_dir: where the runs and ``results.json`` go.
    recipe: the digits recipe's ``get_config`` (:func:`load_recipe` of ``launch/configs/digits.py``).
    seeds: the training seeds. runs: names of :data:`RUNS`.
    cfol_eta: the eta of the scaled ``cfol`` run (:data:`SUITES`).

  Returns:
    ``{"runs": {run: {seed: evaluation}}, "summary": ...}`` (also written to results.json).
  """
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "results.json")
  results = _load(path)
  per_run = results.setdefault("runs", {})
  ds = None
  for name in runs:
    for seed in seeds:
      if str(seed) in per_run.get(name, {}):
        continue
      config = make_config(recipe, name, seed, cfol_eta=cfol_eta)
      workdir = os.path.join(out_dir, name, f"seed{seed}")
      loop.train_and_evaluate(config, workdir)
      if ds is None:
        ds = pipeline.load_dataset(config.dataset, validation_fraction=config.validation_fraction)
      logits_fn, info = restore_lib.load_classifier(workdir, which=CHECKPOINT[name])
      ev = per_class_pgd(logits_fn, ds.test, eps=config.eps, num_classes=ds.num_classes)
      ev["checkpoint"], ev["checkpoint_epoch"] = CHECKPOINT[name], info.get("epoch")
      per_run.setdefault(name, {})[str(seed)] = ev
      _save(path, results)
  results["summary"] = summarize(per_run)
  _save(path, results)
  return results


def _mean_std(values: List[float]) -> Dict[str, float]:
  a = np.asarray(values, np.float64)
  return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
          "n": int(a.size)}


def summarize(per_run: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
  """Mean and std over seeds of each run's numbers, and each comparison's paired difference."""
  out: Dict[str, Any] = {"runs": {}, "comparisons": []}
  keys = ("clean_acc", "robust_acc", "worst_class_robust_acc")
  for name, by_seed in per_run.items():
    out["runs"][name] = {k: _mean_std([ev[k] for ev in by_seed.values()]) for k in keys}
  for title, a, b, key in COMPARISONS:
    if a in per_run and b in per_run:
      common = sorted(set(per_run[a]) & set(per_run[b]))
      diffs = [per_run[a][s][key] - per_run[b][s][key] for s in common]
      if diffs:
        out["comparisons"].append({"comparison": title, "metric": key,
                                   a: _mean_std([per_run[a][s][key] for s in common]),
                                   b: _mean_std([per_run[b][s][key] for s in common]),
                                   "difference": _mean_std(diffs), "seeds": common})
  return out


def format_summary(summary: Dict[str, Any]) -> str:
  """The comparisons as a Markdown table (percent, mean +- std over seeds)."""
  pct = lambda d: f"{100 * d['mean']:.1f} +- {100 * d['std']:.1f}"
  lines = ["| comparison | metric | system | baseline | difference | seeds |",
           "|---|---|---:|---:|---:|---:|"]
  for c in summary["comparisons"]:
    a, b = [k for k in c if k not in ("comparison", "metric", "difference", "seeds")]
    lines.append(f"| {c['comparison']} | {c['metric']} | {pct(c[a])} | {pct(c[b])} | "
                 f"{pct(c['difference'])} | {len(c['seeds'])} |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--suite", default="digits", choices=sorted(SUITES))
  parser.add_argument("--out_dir", default="", help="default runs/descent_and_fairness[_<suite>]")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--runs", default=",".join(RUNS))
  args = parser.parse_args(argv)
  suite = SUITES[args.suite]
  out_dir = args.out_dir or "runs/descent_and_fairness" + (
      "" if args.suite == "digits" else f"_{args.suite}")
  results = run(out_dir, load_recipe(suite["recipe"]), seeds=[int(s) for s in args.seeds.split(",")],
                runs=args.runs.split(","), cfol_eta=suite["cfol_eta"])
  print(format_summary(results["summary"]))


if __name__ == "__main__":
  main()
