"""Catastrophic overfitting of single-step adversarial training on MNIST-5k, and what prevents it.

:func:`run` trains the settings of :data:`SETTINGS` (rows of ``launch/configs/mnist5k.py``, Wong et
al.'s MNIST network and protocol: Adam, cyclic lr, batch 100) for ``epochs`` epochs each, logging
after every epoch the validation clean and PGD-10 accuracy and the PGD-10 accuracy of a fixed
training batch (the loop's catastrophic-overfitting monitor, run here with a drop of 1.0 that can
never fire, except in the ``guard`` setting, where the rollback guard runs at its default 0.2).
Then it evaluates the last and the best checkpoint on the 1,000 test images with FGSM (from a
uniform start, as in the fast-AT papers) and PGD-50 (steps of 0.01, fast_adversarial's
``evaluate_mnist.py`` without its 10 restarts), and writes ``OUT/catastrophic.json``, which the
report (:mod:`robust_jax.experiments.report`) renders.

Catastrophic overfitting (CO) is judged from the validation curve by :func:`collapse`: the
validation PGD-10 accuracy falls more than ``DROP`` below its best so far and the last epoch is
still that far below (a collapse that persists, not one noisy epoch), while FGSM accuracy on the
test set stays far above PGD-50 (:func:`verdict`).

Sources of the settings: Wong, Rice and Kolter, "Fast is better than free" (ICLR 2020),
locuslab/fast_adversarial ``MNIST/train_mnist.py`` (eps 0.3, FGSM step 1.25 eps from the
unclamped uniform start); Andriushchenko and Flammarion, "Understanding and improving fast
adversarial training" (NeurIPS 2020), who report CO of FGSM on MNIST at larger eps and GradAlign
preventing it (the exact MNIST eps is unverified here, see ``launch/configs/mnist5k.py``); Abad
Rocamora et al., "Efficient local linearity regularization to overcome catastrophic overfitting"
(ICLR 2024, ELLE). Zero-init FGSM with a step >= eps is the setting Wong et al. name as overfitting.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import ml_collections
import numpy as np

from robust_jax import evaluation
from robust_jax import metrics as metrics_lib
from robust_jax.data import pipeline
from robust_jax.experiments import archive as archive_lib
from robust_jax.experiments import report
from robust_jax.experiments import reproduce as reproduce_lib
from robust_jax.experiments.reproduce import epochs_seconds, train
from robust_jax.training import restore

# key -> (label, row of launch/configs/mnist5k.py, overrides).
SETTINGS = {
    "fgsm_03": ("FGSM-AT, eps 0.3, step 1.25 eps, unclamped uniform start (Wong)", "fgsm_at", {}),
    "fgsm_zero_03": ("FGSM-AT, eps 0.3, step 1.25 eps, from x (zero init)", "fgsm_at",
                     {"attack_start": "none"}),
    "fgsm_04": ("FGSM-AT, eps 0.4, step 1.25 eps, unclamped uniform start", "fgsm_at_co", {}),
    "fgsm_04_guard": ("FGSM-AT, eps 0.4, + rollback guard (drop 0.2)", "fgsm_at_co",
                      {"co_guard": "rollback", "co_guard_drop": 0.2}),
    "gradalign_04": ("GradAlign, eps 0.4, lambda 2.0", "gradalign_co", {}),
    "gradalign_04_l05": ("GradAlign, eps 0.4, lambda 0.5", "gradalign_co",
                         {"gradalign_lambda": 0.5}),
    "elle_04": ("ELLE, eps 0.4, lambda 0.038", "elle_co", {}),
}
EPOCHS = 50       # 1,800 updates of batch 100 (the official 10 MNIST epochs are 6,000)
DROP = 0.2        # a collapse: validation PGD-10 more than 20 points below its best so far
FGSM_GAP = 0.3    # CO: the last checkpoint's test FGSM accuracy >= PGD-50's + 30 points ...
PGD_FLOOR = 0.1   # ... and PGD-50 below 10%
CHANCE = 0.2      # a last checkpoint at most this accurate on clean images did not learn
TEST_PGD_STEPS = 50
TEST_PGD_STEP_SIZE = 0.01
RESULTS_FILE = "catastrophic.json"


def make_config(get_config: Callable[[str], ml_collections.ConfigDict], setting: str, seed: int,
                *, epochs: int) -> ml_collections.ConfigDict:
  """The config of ``setting`` (a key of :data:`SETTINGS`): its row, its overrides, ``epochs``
  epochs (the cyclic lr follows), the monitor on (never stopping unless the setting guards)."""
  if setting not in SETTINGS:
    raise ValueError(f"setting must be one of {list(SETTINGS)}, got {setting!r}")
  _, row, overrides = SETTINGS[setting]
  c = get_config(row)
  c.num_epochs = epochs
  c.seed = seed
  c.progress = False
  c.co_guard, c.co_guard_drop, c.co_guard_steps = "stop", 1.0, c.select_attack_steps
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def collapse(pgd: Sequence[float], *, drop: float = DROP) -> Optional[int]:
  """The 0-based epoch at which a persisting collapse of ``pgd`` (per-epoch robust accuracy)
  starts: the first epoch more than ``drop`` below the best so far, provided the last epoch is too;
  None if there is none.

  >>> collapse([0.1, 0.5, 0.6, 0.1, 0.05])
  3
  >>> collapse([0.1, 0.5, 0.6, 0.1, 0.55]) is None   # recovered: not a persisting collapse
  True
  """
  best = -np.inf
  for e, a in enumerate(pgd):
    if a < best - drop and pgd[-1] < max(pgd[:e]) - drop:
      return e
    best = max(best, a)
  return None


def curves(workdir: str) -> Dict[str, List[float]]:
  """Per-epoch validation clean and PGD-10 accuracy and the training-batch PGD-10 accuracy."""
  recs = metrics_lib.read(workdir)
  val = {int(r["epoch"]): r for r in recs
         if r.get("kind") == "eval" and r.get("split") == "validation" and "epoch" in r}
  co = {int(r["epoch"]): r["train_pgd_acc"] for r in recs if r.get("kind") == "co_guard"}
  epochs = sorted(val)
  return {"epochs": epochs, "val_clean": [val[e]["clean_acc"] for e in epochs],
          "val_pgd10": [val[e]["robust_acc"] for e in epochs],
          "train_pgd10": [co.get(e, float("nan")) for e in epochs],
          "fired": any(r.get("fired") for r in recs if r.get("kind") == "co_guard")}


def evaluate_checkpoint(workdir: str, which: str, test: Dict[str, np.ndarray], *, eps: float,
                        seed: int) -> Dict[str, Any]:
  """Clean, FGSM and PGD-50 test accuracy of the ``which`` checkpoint, and its epoch."""
  tm = restore.load_trained(workdir, which=which)
  fn, _ = restore.as_classifier(tm)
  table = evaluation.default_attacks(eps, pgd_steps=(TEST_PGD_STEPS,),
                                     step_size=TEST_PGD_STEP_SIZE)
  attacks = {k: table[k] for k in ("FGSM", f"PGD-{TEST_PGD_STEPS}")}
  rep = evaluation.evaluate(fn, test, attacks, batch_size=len(test["label"]),
                            key=jax.random.key(20_000 + seed), eps=eps)
  return {"epoch": int(tm.meta.get("epoch", 0)), "clean": rep.clean_accuracy,
          "fgsm": rep.attack_accuracy["FGSM"], "pgd50": rep.attack_accuracy[f"PGD-{TEST_PGD_STEPS}"]}


def verdict(r: Dict[str, Any]) -> str:
  """The plain verdict on one run of :func:`run`'s results: catastrophic overfitting (the last
  checkpoint's test FGSM accuracy at least :data:`FGSM_GAP` above its PGD-50 accuracy, PGD-50 below
  :data:`PGD_FLOOR`) or not, "did not learn" at a clean accuracy <= :data:`CHANCE`, and the epoch of a persisting collapse of the validation PGD-10
  accuracy (:func:`collapse`) if there was one."""
  last = r["last"]
  if last["clean"] <= CHANCE:
    return f"did not learn (clean accuracy {100 * last['clean']:.1f}%)"
  co = last["fgsm"] - last["pgd50"] >= FGSM_GAP and last["pgd50"] < PGD_FLOOR
  if co:
    parts = ["**CO**"]
  elif last["pgd50"] < PGD_FLOOR:
    parts = [f"not robust to either attack (FGSM {100 * last['fgsm']:.1f}%)"]
  else:
    parts = ["no CO"]
  if r["collapse_epoch"] is not None:
    parts.append(f"val PGD-10 collapsed at epoch {r['collapse_epoch'] + 1}")
  elif last["pgd50"] < PGD_FLOOR:
    parts.append("never robust (from the first epochs)")
  if r["curves"].get("fired"):
    parts.append("guard fired, rolled back")
  return "; ".join(parts)


def _epochs_s(out: str, setting: str, r: Dict[str, Any]) -> float:
  """The run's training epochs' seconds, from its records when they are there."""
  wd = os.path.join(out, "co_runs", setting, f"seed{r['seed']}")
  return epochs_seconds(wd) if os.path.exists(wd) else r.get("train_epochs_s", float("nan"))


def report_lines(out: str) -> List[str]:
  """The catastrophic-overfitting study (``OUT/catastrophic.json``), when it ran."""
  path = os.path.join(out, "catastrophic.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    co = json.load(f)
  L = ["\n## Catastrophic overfitting of single-step AT (Wong et al.'s MNIST network)\n"]
  L.append(f"Each setting trains `launch/configs/mnist5k.py`'s row ({co['epochs']} epochs of 36 "
           f"updates of batch 100, Adam, cyclic lr peaking at 2/5 of training; the official script "
           f"runs 6,000 updates on the 60,000 MNIST images). After every epoch: validation PGD-10 "
           f"accuracy (400 images). A collapse is a validation PGD-10 accuracy more than "
           f"{100 * co['drop']:.0f} points below its best so far that persists to the last epoch; "
           f"catastrophic overfitting (CO) is a last checkpoint whose test FGSM accuracy is at "
           f"least {100 * FGSM_GAP:.0f} points above its PGD-50 accuracy, with PGD-50 below "
           f"{100 * PGD_FLOOR:.0f}% (robust to the training attack, not to PGD), whether or not "
           f"the model was robust before. "
           f"Test ({co.get('test_examples', 1000):,} images): {co['test_attacks']}, of the last "
           f"and of the best checkpoint (model selection by validation PGD-10, which is itself a "
           f"guard).\n")
  L.append("| Setting | seed | verdict | val PGD-10: peak / last | last ckpt: clean / FGSM / "
           "PGD-50 | best ckpt (epoch): clean / FGSM / PGD-50 | training epochs (s) |")
  L.append("|---|---:|---|---:|---:|---:|---:|")
  for setting, rs in co["runs"].items():
    for r in rs:
      last, best = r["last"], r["best"]
      v = verdict(r)
      L.append(f"| {r['label']} | {r['seed']} | {v} | {100 * r['peak_val_pgd10']:.1f} / "
               f"{100 * r['last_val_pgd10']:.1f} | {100 * last['clean']:.1f} / "
               f"{100 * last['fgsm']:.1f} / {100 * last['pgd50']:.1f} | ({best['epoch']}) "
               f"{100 * best['clean']:.1f} / {100 * best['fgsm']:.1f} / "
               f"{100 * best['pgd50']:.1f} | {_epochs_s(out, setting, r):.0f} |")
  L.append("\nValidation PGD-10 accuracy (%) every 5 epochs (seed of the first run):\n")
  first = {s: rs[0] for s, rs in co["runs"].items()}
  n = max(len(r["curves"]["epochs"]) for r in first.values())
  pick = list(range(4, n, 5)) or [n - 1]
  L.append("| Setting | " + " | ".join(f"ep {e + 1}" for e in pick) + " |")
  L.append("|---|" + "---:|" * len(pick))
  for s, r in first.items():
    v = r["curves"]["val_pgd10"]
    L.append(f"| {r['label']} | " + " | ".join(f"{100 * v[e]:.0f}" if e < len(v) else ""
                                               for e in pick) + " |")
  return L




def run(out: str, *, get_config: Callable[[str], ml_collections.ConfigDict],
        settings: Sequence[str], seeds: Sequence[int], epochs: int = EPOCHS,
        eval_examples: int = 0, archive: Optional[str] = None) -> Dict[str, Any]:
  """Trains and evaluates every (setting, seed); resumable (finished runs are read back).

  Args:
    out: the output directory; runs go to ``OUT/co_runs/<setting>/seed<k>``, the results to
      ``OUT/catastrophic.json`` (rewritten after every run).
    get_config: ``launch/configs/mnist5k.py``'s ``get_config``.
    settings: keys of :data:`SETTINGS`.
    seeds: training seeds.
    epochs: epochs per run.
    eval_examples: the first this many test images are evaluated (0: the whole test split).
    archive: a directory of :mod:`robust_jax.experiments.archive` (None: none): restored into
      ``out`` first, saved into after every run. A run recorded in the previous
      ``catastrophic.json`` with the same epochs, test attacks and examples, whose summary file
      has the same config, is reported from that record without training or evaluating it (its
      checkpoints need not exist).

  Returns:
    ``{"epochs", "drop", "test_attacks", "runs": {setting: [per-seed dict]}}``; each dict has the
    label, eps, seed, curves (:func:`curves`), ``collapse_epoch``, the peak and last validation
    PGD-10, ``last`` and ``best`` (:func:`evaluate_checkpoint`), the training wall and CPU seconds.
  """
  unknown = [s for s in settings if s not in SETTINGS]
  if unknown:
    raise ValueError(f"unknown settings {unknown}; valid: {list(SETTINGS)}")
  path = os.path.join(out, RESULTS_FILE)
  if archive:
    archive_lib.restore(archive, out)
  previous = _previous(path)
  data: Dict[str, Any] = {"epochs": epochs, "drop": DROP, "runs": {},
                          "test_attacks": f"FGSM (uniform start, step eps), PGD-{TEST_PGD_STEPS} "
                                          f"(step {TEST_PGD_STEP_SIZE:g}, uniform start, 1 "
                                          f"restart)"}
  ds = None
  for setting in settings:
    for seed in seeds:
      c = make_config(get_config, setting, seed, epochs=epochs)
      if ds is None:
        ds = pipeline.load_dataset(c.dataset, validation_fraction=c.validation_fraction)
        n = eval_examples or len(ds.test["label"])
        test = {"image": pipeline.to_float(ds.test["image"][:n]),
                "label": np.asarray(ds.test["label"][:n], np.int32)}
        data["test_examples"] = int(len(test["label"]))
      wd = os.path.join(out, "co_runs", setting, f"seed{seed}")
      os.makedirs(wd, exist_ok=True)
      r = _recorded(previous, data, wd, c, setting, seed)
      if r is not None:  # finished earlier, possibly on another machine (an archive)
        data["runs"].setdefault(setting, []).append(r)
        continue
      t, cpu = time.time(), report.cpu_seconds()
      summary = train(c, wd)
      cv = curves(wd)
      r = {"label": SETTINGS[setting][0], "eps": float(c.eps), "seed": seed, "curves": cv,
           "collapse_epoch": collapse(cv["val_pgd10"]),
           "peak_val_pgd10": max(cv["val_pgd10"]) if cv["val_pgd10"] else float("nan"),
           "last_val_pgd10": cv["val_pgd10"][-1] if cv["val_pgd10"] else float("nan"),
           "last": evaluate_checkpoint(wd, "latest", test, eps=float(c.eps), seed=seed),
           "best": evaluate_checkpoint(wd, "best", test, eps=float(c.eps), seed=seed),
           "train_epochs_s": epochs_seconds(wd), "train_wall_s": time.time() - t,
           "train_cpu_s": report.cpu_seconds() - cpu}
      data["runs"].setdefault(setting, []).append(r)
      reproduce_lib.write_summary(wd, c, summary)
      print(f"[catastrophic] {setting} seed {seed}: {verdict(r)}; val PGD-10 peak "
            f"{100 * r['peak_val_pgd10']:.1f}, last {100 * r['last_val_pgd10']:.1f}; last ckpt "
            f"test FGSM {100 * r['last']['fgsm']:.1f}, PGD-50 {100 * r['last']['pgd50']:.1f}",
            flush=True)
      reproduce_lib.write_json(path, data)
      if archive:
        archive_lib.save(out, archive)
  return data


def _previous(path: str) -> Dict[str, Any]:
  """The ``catastrophic.json`` of an earlier run of the study (empty when there is none)."""
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _recorded(previous: Dict[str, Any], data: Dict[str, Any], workdir: str, config,
              setting: str, seed: int) -> Optional[Dict[str, Any]]:
  """The recorded result of ``(setting, seed)`` in ``previous`` when it was made with the same
  epochs, test attacks and test examples as ``data`` and the run's summary has this config
  (:func:`robust_jax.experiments.reproduce.recorded_config_matches`); else None."""
  if any(previous.get(k) != data.get(k) for k in ("epochs", "test_attacks", "test_examples")):
    return None
  if not reproduce_lib.recorded_config_matches(workdir, config):
    return None
  for r in previous.get("runs", {}).get(setting, []):
    if r.get("seed") == seed:
      return r
  return None
