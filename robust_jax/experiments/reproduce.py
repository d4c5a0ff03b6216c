r"""Reproduces the seeds' claims at small scale on the embedded digits and writes REPRODUCTION.md.

:func:`run` is what ``python -m launch.reproduce --out=runs/reproduce --seeds=0,1,2`` calls. It
trains standard training, PGD-AT, Dynamic AT (``dart``), FAT, GAIRAT, TRADES, MART and PGD-AT + AWP
(``pgd_at_awp``) on scikit-learn's 8x8 digits with the recipe of ``launch/configs/digits.py``
(passed in as ``recipe``: MLP 256-256, linf eps = 0.2, PGD-10 with step eps / 4, SGD 0.1, batch
64), every schedule of the recipe (learning-rate decays, FAT's tau, GAIRAT's start epoch; Dynamic
AT's T' = 0.8 T) scaled from 60 epochs to ``epochs`` (:mod:`robust_jax.experiments.suite`). Each
(method, seed) is one ``train_and_evaluate`` run in ``OUT/runs/<method>/seed<k>``; a run that
already finished is resumed, i.e. not trained again.

Every best checkpoint (selected by PGD-10 accuracy on the validation split, never the test set) is
evaluated on the whole test split with :func:`robust_jax.evaluation.default_attacks` at reduced
budgets: FGSM, PGD-20, PGD-100, CW-inf (30 steps), APGD-CE and APGD-T (``n_iter`` iterations) and
AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square; ``n_iter`` iterations, ``n_queries``
Square queries); the robust accuracy reported is the per-example worst case over all of them.

Analyses, all written into ``OUT/REPRODUCTION.md`` and ``OUT/reproduction.json``:

* mean +- std over seeds of the clean, PGD-20 and worst-case accuracy (and every column);
* FOSC quantiles of the training adversarial examples over the epochs, PGD-AT versus Dynamic AT,
  from the ``"train"`` records of ``metrics.jsonl`` (:mod:`robust_jax.analysis.fosc_tracking`);
* flatness, PGD-AT versus AWP: the adversarial loss (PGD-10 regenerated at every weight,
  :func:`robust_jax.analysis.adversarial.adversarial_metrics_fn`) at alpha = -1, -0.5, 0, 0.5, 1
  along ``directions`` filter-normalised random directions (:mod:`robust_jax.analysis.landscape`),
  on the test split;
* the robust generalisation gap: PGD-20 accuracy on training examples minus on the test split at the
  best checkpoint, and per epoch (PGD-10 on a fixed training batch minus validation PGD-10; the
  training-batch numbers come from the loop's catastrophic-overfitting monitor, run here with
  ``co_guard_drop = 1.0``, which can never fire, only to log them);
* one verdict per seed claim, with the numbers and their spread
  (:mod:`robust_jax.experiments.verdicts`); the markdown is :mod:`robust_jax.experiments.report`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import jax
import numpy as np

from robust_jax import evaluation
from robust_jax import fosc as fosc_lib
from robust_jax import metrics as metrics_lib
from robust_jax.analysis import adversarial, fosc_tracking, gap, landscape, reports
from robust_jax.data import pipeline
from robust_jax.experiments import archive as archive_lib
from robust_jax.experiments import report, suite, verdicts
from robust_jax.experiments.verdicts import mean_std
from robust_jax.training import loop, restore


# ----------------------------------------------------------------------------------------------
# Training.


def train(config, workdir: str) -> Dict[str, Any]:
  """``train_and_evaluate(config, workdir)`` with its output in ``workdir/train.log``; a finished run
  is resumed, i.e. not trained again. Returns the training summary."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "train.log"), "a") as f, contextlib.redirect_stdout(f):
    return loop.train_and_evaluate(config, workdir)


# ----------------------------------------------------------------------------------------------
# Evaluation of a best checkpoint.


def _arrays(split: Dict[str, np.ndarray], n: int = 0) -> Dict[str, np.ndarray]:
  """The first ``n`` examples (0: all) of a split, images as float32 in [0, 1]."""
  if n:
    split = {k: v[:n] for k, v in split.items()}
  return {"image": pipeline.to_float(split["image"]), "label": np.asarray(split["label"], np.int32)}


EVAL_FILE = "reproduce_eval.json"


def _eval_entries(path: str) -> List[Dict[str, Any]]:
  """The cached evaluations of a run: ``[{"key", "result"}]`` (the one-entry files of earlier
  versions, ``{"key", "result"}``, read as a list of one)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    cached = json.load(f)
  return cached["entries"] if "entries" in cached else [cached]


def evaluate_run_cached(workdir: str, attacks: Dict[str, Any], ds, *, eps: float,
                        eval_examples: int, seed: int, settings: Dict[str, Any]) -> Dict[str, Any]:
  """:func:`evaluate_run`, its result kept in ``workdir/reproduce_eval.json`` with ``settings``
  (the columns and attack budgets) and the checkpoint's step: a resumed suite re-evaluates a run
  only when either changed. The file keeps one entry per setting (a suite evaluating some seeds
  with more columns keeps both). The result gains ``eval_wall_s`` and ``eval_cpu_s`` (this
  process's user + system seconds, which the load of other jobs does not inflate as much as wall
  time)."""
  path = os.path.join(workdir, EVAL_FILE)
  step = restore.load_trained(workdir, which="best").step
  key = _jsonable({"settings": settings, "eps": eps, "eval_examples": eval_examples, "seed": seed,
                   "step": step})
  entries = _eval_entries(path)
  for e in entries:
    if e.get("key") == key:
      return e["result"]
  t, cpu = time.time(), report.cpu_seconds()
  r = evaluate_run(workdir, attacks, ds, eps=eps, eval_examples=eval_examples, seed=seed)
  r.update(eval_wall_s=time.time() - t, eval_cpu_s=report.cpu_seconds() - cpu)
  r = _jsonable(r)
  entries = [e for e in entries if e.get("key", {}).get("settings") != key["settings"]
             or e.get("key", {}).get("eps") != eps]  # a retrained checkpoint's old entry goes
  write_json(path, {"entries": entries + [{"key": key, "result": r}]})
  return r


def write_json(path: str, obj) -> None:
  """Writes ``obj`` to ``path`` atomically (a process killed meanwhile leaves the old file); numpy
  scalars are written as floats."""
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=1, default=float)
  os.replace(path + ".tmp", path)


def write_summary(workdir: str, config, summary: Optional[Dict[str, Any]] = None, *,
                  train_wall_s: float = float("nan"),
                  train_cpu_s: float = float("nan")) -> Dict[str, Any]:
  """Marks a run finished: ``workdir/reproduce_summary.json`` with its config, training summary,
  the wall and CPU seconds of the call that trained it and the machine that ran it
  (:func:`robust_jax.experiments.report.machine_description`); what
  :mod:`robust_jax.experiments.archive` keeps and :func:`recorded_config_matches` reads. Returns
  the record written."""
  rec = {"config": _jsonable(config.to_dict()), "summary": _jsonable(summary or {}),
         "train_wall_s": train_wall_s, "train_cpu_s": train_cpu_s,
         "machine": report.machine_description()}
  write_json(os.path.join(workdir, archive_lib.SUMMARY_FILE), rec)
  return rec


def _read_summary(workdir: str) -> Optional[Dict[str, Any]]:
  """The run's summary file (:func:`write_summary`), or None when it has none."""
  path = os.path.join(workdir, archive_lib.SUMMARY_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _summary_record(workdir: str, config) -> Optional[Dict[str, Any]]:
  """The run's summary file (:func:`write_summary`) when it exists and was written for ``config``,
  else None."""
  rec = _read_summary(workdir)
  return rec if rec is not None and rec.get("config") == _jsonable(config.to_dict()) else None


def recorded_config_matches(workdir: str, config) -> bool:
  """Whether the run's summary file exists and was written for ``config``."""
  return _summary_record(workdir, config) is not None


def _recorded_run(workdir: str, config, *, eps: float, eval_examples: int, seed: int,
                  settings: Dict[str, Any], full_settings: Optional[Dict[str, Any]],
                  directions: int):
  """``(summary record, result, full result or None)`` of a run that finished with this config
  and was evaluated with these settings (and measured with ``directions`` flatness directions, when
  > 0), read from its files (:mod:`robust_jax.experiments.archive`; no checkpoint needed), or
  None: the run is to be trained (resumed) and evaluated."""
  rec = _summary_record(workdir, config)
  if rec is None:
    return None
  kw = dict(eps=eps, eval_examples=eval_examples, seed=seed)
  r = _cached_evaluation(workdir, settings=settings, **kw)
  full = None if full_settings is None else _cached_evaluation(workdir, settings=full_settings,
                                                               **kw)
  if r is None or (full_settings is not None and full is None):
    return None
  if directions > 0 and _cached_flatness(workdir, directions=directions, seed=seed,
                                         eval_examples=eval_examples) is None:
    return None
  return rec, r, full


def _cached_evaluation(workdir: str, *, eps: float, eval_examples: int, seed: int,
                       settings: Dict[str, Any]) -> Optional[Dict[str, Any]]:
  """The result :func:`evaluate_run_cached` kept for these settings, or None (not run, or with
  other settings)."""
  want = _jsonable({"settings": settings, "eps": eps, "eval_examples": eval_examples,
                    "seed": seed})
  for e in _eval_entries(os.path.join(workdir, EVAL_FILE)):
    if {k: e.get("key", {}).get(k) for k in want} == want:
      return e["result"]
  return None


# The keys of a full evaluation kept beside a seed's common-column result (``result["full"]``).
FULL_KEYS = ("clean", "attacks", "worst_case", "invalid", "seconds", "worst_class",
             "eval_wall_s", "eval_cpu_s")


def evaluate_run(workdir: str, attacks: Dict[str, Any], ds, *, eps: float, eval_examples: int,
                 seed: int) -> Dict[str, Any]:
  """Test-split table of the best checkpoint, plus PGD-20 on as many training examples.

  Args:
    workdir: a finished run.
    attacks: ``name -> attack`` (:func:`robust_jax.evaluation.default_attacks`; needs ``"PGD-20"``).
    ds: the dataset (``ds.train``, ``ds.test``).
    eps: the radius.
    eval_examples: test examples evaluated (0: the whole split); as many training examples.
    seed: the run's seed (the attacks' key is ``10_000 + seed``).

  Returns:
    Clean, per-attack and worst-case accuracy, invalid counts, seconds, the worst class, PGD-20 and
    clean accuracy on training examples, and the best epoch.
  """
  tm = restore.load_trained(workdir, which="best")
  # A Partial over one jitted apply per architecture: every checkpoint reuses the compiled attacks.
  fn, _ = restore.as_classifier(tm)
  test = _arrays(ds.test, eval_examples)
  n = len(test["label"])
  key = jax.random.key(10_000 + seed)
  rep = evaluation.evaluate(fn, test, attacks, batch_size=n, key=key, eps=eps)
  train_sub = _arrays(ds.train, n)
  rep_train = evaluation.evaluate(fn, train_sub, {"PGD-20": attacks["PGD-20"]}, batch_size=n,
                                  key=key, eps=eps)
  return {
      "clean": rep.clean_accuracy,
      "attacks": dict(rep.attack_accuracy),
      "worst_case": rep.robust_accuracy,
      "invalid": dict(rep.invalid),
      "seconds": dict(rep.seconds),
      "num_examples": rep.num_examples,
      "worst_class": rep.worst_class_name,
      "train_pgd20": rep_train.attack_accuracy["PGD-20"],
      "train_clean": rep_train.clean_accuracy,
      "best_epoch": int(tm.meta.get("epoch", 0)),
  }


# ----------------------------------------------------------------------------------------------
# Flatness.


_METRICS_AT: Dict[Any, Any] = {}


def flatness(workdir: str, ds, *, directions: int, seed: int,
             eval_examples: int) -> Dict[str, Any]:
  """Adversarial loss and accuracy at ``suite.ALPHAS`` along filter-normalised random directions.

  On the test split, the run's training attack regenerated at every weight, common random starts.

  Args:
    workdir: a finished run (its best checkpoint is used).
    ds: the dataset.
    directions: random directions, each drawn from ``fold_in(key(1234 + seed), d)``.
    seed: the run's seed.
    eval_examples: test examples (0: the whole split), one batch.

  Returns:
    ``{"alphas", "loss": [directions][alphas], "robust_acc": [directions][alphas], "attack"}``.
  """
  tm = restore.load_trained(workdir, which="best")
  kw = reports.attack_settings(tm.config)
  test = _arrays(ds.test, eval_examples)
  batches = list(pipeline.eval_batches(test, batch_size=len(test["label"])))
  model = tm.model
  apply_fn = lambda variables, x, train=False: model.apply(variables, x, train=train)  # noqa: E731
  make = lambda: adversarial.adversarial_metrics_fn(  # noqa: E731
      apply_fn, tm.batch_stats, batches, key=jax.random.key(7), **kw)
  if tm.batch_stats:
    metrics_at = make()
  else:  # one compiled landscape per architecture, attack and data (parameters are arguments)
    cache_key = (tm.config.model, tuple(sorted(kw.items())), len(test["label"]))
    if cache_key not in _METRICS_AT:
      _METRICS_AT[cache_key] = make()
    metrics_at = _METRICS_AT[cache_key]
  losses, accs = [], []
  for d in range(directions):
    direction = landscape.filter_normalized_direction(
        jax.random.fold_in(jax.random.key(1234 + seed), d), tm.params)
    out = landscape.loss_landscape_1d(metrics_at, tm.params, direction, np.asarray(suite.ALPHAS),
                                      batch_size=1)
    losses.append(np.asarray(out["loss"], np.float64).tolist())
    accs.append(np.asarray(out["robust_acc"], np.float64).tolist())
  return {"alphas": list(suite.ALPHAS), "loss": losses, "robust_acc": accs, "attack": kw}


FLATNESS_FILE = "reproduce_flatness.json"
FLATNESS_METHODS = ("pgd_at", "pgd_at_awp")  # the flatness claim compares these two


def _flatness_key(*, directions: int, seed: int, eval_examples: int) -> Dict[str, Any]:
  return {"directions": directions, "seed": seed, "eval_examples": eval_examples,
          "alphas": list(suite.ALPHAS)}


def _cached_flatness(workdir: str, **key) -> Optional[Dict[str, Any]]:
  path = os.path.join(workdir, FLATNESS_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rec = json.load(f)
  return rec["result"] if rec.get("key") == _flatness_key(**key) else None


def flatness_cached(workdir: str, ds, *, directions: int, seed: int,
                    eval_examples: int) -> Dict[str, Any]:
  """:func:`flatness`, its result kept in ``workdir/reproduce_flatness.json`` with its arguments
  (the run's best checkpoint is then no longer needed to report it)."""
  key = dict(directions=directions, seed=seed, eval_examples=eval_examples)
  cached = _cached_flatness(workdir, **key)
  if cached is not None:
    return cached
  result = _jsonable(flatness(workdir, ds, **key))
  write_json(os.path.join(workdir, FLATNESS_FILE),
             {"key": _flatness_key(**key), "result": result})
  return result


# ----------------------------------------------------------------------------------------------
# Per-epoch records.


def fosc_over_epochs(workdirs: Sequence[str]) -> Dict[str, Any]:
  """Per-epoch FOSC quantiles averaged over seeds, with Dynamic AT's c_t and the attack steps.

  Args:
    workdirs: the runs of one method (one per seed), whose ``metrics.jsonl`` hold the training
      FOSC histograms.

  Returns:
    ``{"epochs": [...], "quantiles": {"fosc_q10": [...], ...}, "attack_steps": [...]}`` over the
    epochs every seed logged, plus ``"fosc_c"`` (c_t per epoch) when every run logged it.
  """
  per_seed = [fosc_tracking.epoch_histograms(w) for w in workdirs]
  steps = []
  for w in workdirs:
    recs = [r for r in metrics_lib.read(w) if r.get("kind") == "train"]
    steps.append({int(r["epoch"]): r.get("attack_steps", float("nan")) for r in recs})
  epochs = sorted(set.intersection(*[set(d["epochs"]) for d in per_seed]))
  out = {"epochs": epochs, "quantiles": {}, "attack_steps": []}
  for k in per_seed[0]["quantiles"]:
    out["quantiles"][k] = [float(np.mean([d["quantiles"][k][d["epochs"].index(e)]
                                          for d in per_seed])) for e in epochs]
  if all("fosc_c" in d for d in per_seed):
    out["fosc_c"] = [float(per_seed[0]["fosc_c"][per_seed[0]["epochs"].index(e)]) for e in epochs]
  out["attack_steps"] = [float(np.mean([s.get(e, float("nan")) for s in steps])) for e in epochs]
  return out


def _has_fosc(workdir: str) -> bool:
  """Whether the run logged FOSC histograms (``train_diagnostics`` on; the MNIST recipes other
  than Dynamic AT's turn them off, as their official code computes no FOSC)."""
  return any(fosc_lib.HIST_KEY in r for r in metrics_lib.read(workdir) if r.get("kind") == "train")


def gap_curve(workdir: str) -> Dict[str, Any]:
  """The per-epoch robust generalisation gap of a run, from its catastrophic-overfitting monitor."""
  return gap.robust_generalization_gap(workdir, train_source="co_guard")


# ----------------------------------------------------------------------------------------------
# The suite.


def _flatness_summary(per_seed: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
  """Pools :func:`flatness` over seeds x directions: the curves, the loss rise at +-0.5 and +-1
  ((L(a) + L(-a)) / 2 - L(0), mean and std) and the robust accuracy at +-1."""
  alphas = suite.ALPHAS
  loss = np.asarray([l for f in per_seed for l in f["loss"]])  # [seeds x dirs, alphas]
  acc = np.asarray([a for f in per_seed for a in f["robust_acc"]])
  i0 = alphas.index(0.0)
  rise = {}
  for a in (0.5, 1.0):
    r_ = (loss[:, alphas.index(a)] + loss[:, alphas.index(-a)]) / 2 - loss[:, i0]
    rise[str(a)] = [float(r_.mean()), float(r_.std(ddof=1)) if len(r_) > 1 else 0.0]
  acc1 = (acc[:, alphas.index(1.0)] + acc[:, alphas.index(-1.0)]) / 2
  return {"alphas": list(alphas), "loss": loss.tolist(), "robust_acc": acc.tolist(),
          "rise": rise, "acc_at_1": acc1.tolist(), "attack": per_seed[0]["attack"]}


def _gap_summary(curves: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
  """The last and the largest per-epoch gap of each seed's :func:`gap_curve`, and the curves."""
  return {"last": [c["gap"][-1] for c in curves if c["gap"]],
          "max": [max(c["gap"]) for c in curves if c["gap"]],
          "curves": [{"epochs": c["epochs"], "gap": c["gap"]} for c in curves]}


def rewrite_report(out: str, *, notes_path: Optional[str] = None,
                   extra_lines: Sequence[str] = (), archive: Optional[str] = None) -> str:
  """Recomputes the verdicts from ``OUT/reproduction.json``, saves it and rewrites REPRODUCTION.md
  (nothing is trained or evaluated), with ``extra_lines`` after the gap section; ``archive`` (None:
  as recorded) is the archive directory the report names for the raw numbers. Returns the
  markdown."""
  path = os.path.join(out, "reproduction.json")
  with open(path) as f:
    data = json.load(f)
  if archive:
    data["archive"] = archive
  for rs in data["results"].values():  # from the runs' records (older JSON files lack them)
    for r in rs:
      wd = os.path.join(out, r["workdir"])
      if os.path.exists(wd):
        r["train_epochs_s"] = epochs_seconds(wd)
        r["attack_steps"] = attack_steps_taken(wd)
      rec = _read_summary(wd)
      if "beta" not in r and rec is not None:
        r["beta"] = rec["config"].get("beta")
  data["verdicts"] = verdicts.verdicts(data["fosc"], data["flatness"], data["results"],
                                       data["gaps"])
  with open(path, "w") as f:
    json.dump(data, f, indent=1)
  return report.write_report(out, data, notes_path=notes_path, extra_lines=extra_lines)


def _jsonable(obj):
  """A JSON round trip (arrays as lists, anything else unknown as its str)."""
  return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist")
                               else str(o)))


def epochs_seconds(workdir: str) -> float:
  """The training epochs' wall time of a run (``epoch_time_s`` of its ``train`` records, summed:
  the steps, without compilation and the per-epoch validation), whichever process trained them."""
  return float(sum(r.get("epoch_time_s", 0.0) for r in metrics_lib.read(workdir)
                   if r.get("kind") == "train"))


def attack_steps_taken(workdir: str) -> float:
  """The mean attack steps per training example over the run (``attack_steps`` of the ``train``
  records, weighted by the examples of each epoch), NaN when not logged."""
  recs = [r for r in metrics_lib.read(workdir)
          if r.get("kind") == "train" and r.get("attack_steps") is not None]
  return float(np.mean([r["attack_steps"] for r in recs])) if recs else float("nan")


def _summary(results: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
  """Mean and std per method of the clean, worst-case and every attack's accuracy."""
  return {m: {"clean": mean_std([r["clean"] for r in rs])[:2],
              "worst_case": mean_std([r["worst_case"] for r in rs])[:2],
              **{c: mean_std([r["attacks"][c] for r in rs])[:2] for c in rs[0]["attacks"]}}
          for m, rs in results.items()}


def run(out: str, *, suite_spec: suite.Suite, seeds: Sequence[int], methods: Sequence[str],
        n_iter: int = 50, n_queries: int = 1000, cw_steps: int = 30,
        pgd_steps: Sequence[int] = (20, 100), columns: Optional[Sequence[str]] = None,
        eval_examples: int = 0, directions: int = 3, command: Optional[str] = None,
        notes_path: Optional[str] = None, finished_only: bool = False,
        full_seeds: Optional[Sequence[int]] = None,
        archive: Optional[str] = None) -> Dict[str, Any]:
  """Trains, evaluates, analyses and writes ``OUT/REPRODUCTION.md`` and ``OUT/reproduction.json``.

  The runs go seed by seed (every method of seed 0, then of seed 1, ...); after each seed the
  report is rewritten from the seeds finished so far (``params.seeds_done``), so a suite stopped
  early still has a consistent report, and a restarted one resumes: a finished run is neither
  trained (``train_and_evaluate`` resumes it) nor evaluated again (:func:`evaluate_run_cached`).

  Args:
    out: the output directory; run ``(method, seed)`` trains into ``OUT/runs/<method>/seed<k>``.
    suite_spec: the suite (:func:`robust_jax.experiments.suite.digits_suite` or
      :func:`~robust_jax.experiments.suite.mnist5k_suite`): the configs and the radius.
    seeds: training seeds, not empty.
    methods: keys of :data:`robust_jax.experiments.suite.METHODS`.
    n_iter: APGD-CE / APGD-T / AutoAttack iterations.
    n_queries: Square queries inside AutoAttack.
    cw_steps: CW-inf steps.
    pgd_steps: PGD columns; must include 20.
    columns: the columns of :func:`robust_jax.evaluation.default_attacks` evaluated (None: all);
      must include ``"PGD-20"``.
    eval_examples: test examples evaluated (0: the whole test split).
    directions: random directions per flatness measurement.
    command: the command line printed in the report (default: ``sys.argv``).
    notes_path: hand-written notes included in the report (:func:`report.write_report`).
    finished_only: train and evaluate nothing: report the runs whose evaluation with these
      settings is already cached (a suite still running, or stopped), marked partial, without the
      flatness analysis (it would evaluate models).
    full_seeds: the seeds evaluated with every column (None: all). When it leaves seeds out, every
      seed is evaluated with the common columns (all but ``"AA"``), which the tables, spreads and
      verdicts use, and the seeds of ``full_seeds`` also with every column, kept as
      ``result["full"]`` (:data:`FULL_KEYS`) and reported in their own table; the AutoAttack
      claims (GAIRAT's PGD-versus-AA gap) use those seeds. AutoAttack at its standard budget is
      most of a robust model's evaluation time (1,029 of 1,096 s for PGD-AT's SmallCNN on the
      1,000 MNIST-5k test images, a quiet 2-core Intel Xeon), so this is what keeps the MNIST-5k
      suite to about 3 to 4 hours of such a machine.
    archive: a directory of :mod:`robust_jax.experiments.archive` (None: none). Before anything
      runs, its files are restored into ``out`` where missing; after every finished run, the
      results are saved into it. A run whose results are recorded (``reproduce_summary.json``
      with the same config, the cached evaluations and, for :data:`FLATNESS_METHODS`, the flatness
      measurement) is reported from them, without its checkpoints: a suite resumes on a new
      machine from a committed archive.

  Returns:
    The JSON data, also written to ``OUT/reproduction.json``: ``suite`` (its name), ``params``
    (the arguments and the suite's settings), ``results`` (``method -> one`` :func:`evaluate_run`
    ``dict per seed``, with the seed, the workdir, the training wall and CPU time, the mean attack
    steps and the best and last validation numbers), ``summary`` (mean and std per method and
    column), ``fosc`` (:func:`fosc_over_epochs` of ``pgd_at`` and ``dart``), ``flatness`` (pooled
    :func:`flatness` of ``pgd_at`` and ``pgd_at_awp``), ``gaps`` (per-epoch gap curves of every
    method), ``verdicts``, and the command, machine, date, timings and load.

  Raises:
    ValueError: for an unknown method or column, ``pgd_steps`` or ``columns`` without PGD-20, or
      no seeds.
  """
  suite.check_methods(methods)
  if 20 not in pgd_steps:
    raise ValueError(f"pgd_steps must include 20 (the PGD-20 column), got {list(pgd_steps)}")
  if not seeds:
    raise ValueError("seeds is empty")
  eps = suite_spec.eps
  attacks = evaluation.default_attacks(eps, pgd_steps=tuple(pgd_steps), cw_steps=cw_steps,
                                       n_iter=n_iter, n_queries=n_queries)
  if columns is not None:
    unknown = [c for c in columns if c not in attacks]
    if unknown or "PGD-20" not in columns:
      raise ValueError(f"columns must be among {list(attacks)} and include 'PGD-20', got "
                       f"{list(columns)}")
    attacks = {c: attacks[c] for c in attacks if c in columns}
  full_seeds = list(seeds) if full_seeds is None else [int(s) for s in full_seeds]
  unknown_seeds = [s for s in full_seeds if s not in seeds]
  if unknown_seeds:
    raise ValueError(f"full_seeds must be among the seeds {list(seeds)}, got {unknown_seeds}")
  common = ({c: a for c, a in attacks.items() if c != "AA"}
            if set(full_seeds) != set(seeds) else dict(attacks))
  os.makedirs(out, exist_ok=True)
  if archive:
    restored = archive_lib.restore(archive, out)
    if restored:
      print(f"[reproduce] restored {len(restored)} files from {archive}", flush=True)
  t0 = time.time()
  cpu0 = report.cpu_seconds()
  load0 = os.getloadavg()
  base = suite_spec.make_config(methods[0], seeds[0])
  ds = pipeline.load_dataset(base.dataset, validation_fraction=base.validation_fraction)
  settings_of = lambda cols: {"columns": list(cols), "n_iter": n_iter,  # noqa: E731
                              "n_queries": n_queries, "cw_steps": cw_steps,
                              "pgd_steps": list(pgd_steps)}
  settings, full_settings = settings_of(common), settings_of(attacks)
  params = {"seeds": list(seeds), "methods": list(methods), **suite_spec.params, "eps": eps,
            "n_iter": n_iter, "n_queries": n_queries, "cw_steps": cw_steps,
            "pgd_steps": list(pgd_steps), "columns": list(common),
            "full_columns": list(attacks), "full_seeds": full_seeds,
            "eval_examples": eval_examples, "directions": directions}
  results: Dict[str, List[Dict[str, Any]]] = {}
  workdirs: Dict[str, List[str]] = {}
  timing = {"train_s": 0.0, "eval_s": 0.0}
  data: Dict[str, Any] = {}
  seeds_done: List[int] = []
  for i, s in enumerate(seeds):
    for m in methods:
      wd = os.path.join(out, "runs", m, f"seed{s}")
      config = suite_spec.make_config(m, s)
      if finished_only:
        r = _cached_evaluation(wd, eps=eps, eval_examples=eval_examples, seed=s,
                               settings=settings)
        full = (_cached_evaluation(wd, eps=eps, eval_examples=eval_examples, seed=s,
                                   settings=full_settings)
                if s in full_seeds and common != attacks else None)
        if r is None or (s in full_seeds and common != attacks and full is None):
          continue
        rec = _summary_record(wd, config) or {}  # a run trained to the end has one
      else:
        wants_full = s in full_seeds and common != attacks
        recorded = _recorded_run(wd, config, eps=eps, eval_examples=eval_examples, seed=s,
                                 settings=settings, full_settings=full_settings if wants_full
                                 else None, directions=directions if m in FLATNESS_METHODS
                                 else 0)
        if recorded is not None:  # finished earlier, possibly on another machine (archive)
          rec, r, full = recorded
        else:
          t, cpu = time.time(), report.cpu_seconds()
          summary = train(config, wd)
          dt_train, cpu_train = time.time() - t, report.cpu_seconds() - cpu
          timing["train_s"] += dt_train
          t = time.time()
          full = (evaluate_run_cached(wd, attacks, ds, eps=eps, eval_examples=eval_examples,
                                      seed=s, settings=full_settings) if wants_full else None)
          r = evaluate_run_cached(wd, common, ds, eps=eps, eval_examples=eval_examples, seed=s,
                                  settings=settings)
          timing["eval_s"] += time.time() - t
          if m in FLATNESS_METHODS and directions > 0:
            flatness_cached(wd, ds, directions=directions, seed=s, eval_examples=eval_examples)
          rec = write_summary(wd, config, summary, train_wall_s=dt_train, train_cpu_s=cpu_train)
          if archive:
            archive_lib.save(out, archive)
      val = [x for x in metrics_lib.read(wd)
             if x.get("kind") == "eval" and x.get("split") == "validation"]
      r = dict(r)
      if full is not None:
        r["full"] = {k: full[k] for k in FULL_KEYS if k in full}
      summary = rec.get("summary", {})
      dt_train = rec.get("train_wall_s", float("nan"))
      r.update(seed=s, workdir=os.path.relpath(wd, out), beta=float(config.beta),
               machine=rec.get("machine"),  # absent in records older than this field
               train_wall_s=dt_train, train_cpu_s=rec.get("train_cpu_s", float("nan")),
               train_epochs_s=epochs_seconds(wd),
               attack_steps=attack_steps_taken(wd), val_best=summary.get("best"),
               val_last={"clean": val[-1]["clean_acc"], "pgd10": val[-1]["robust_acc"]})
      results.setdefault(m, []).append(r)
      workdirs.setdefault(m, []).append(wd)
      print(f"[reproduce] {m} seed {s}: clean {100 * r['clean']:.1f}, PGD-20 "
            f"{100 * r['attacks']['PGD-20']:.1f}, worst case {100 * r['worst_case']:.1f} "
            f"(train {dt_train:.0f}s, {time.time() - t0:.0f}s elapsed)", flush=True)
    if all(len(results.get(m, [])) == i + 1 for m in methods):
      seeds_done.append(s)
    if not finished_only or i == len(seeds) - 1:
      data = _analyse_and_report(
          out, results, workdirs, ds, seeds_done=seeds_done, params=params,
          suite_name=suite_spec.name, directions=0 if finished_only else directions,
          eval_examples=eval_examples, timing=dict(timing, t0=t0, cpu0=cpu0, load0=load0),
          command=command, notes_path=notes_path, finished_only=finished_only, archive=archive)
      if archive and not finished_only:
        archive_lib.save(out, archive)
  print(f"[reproduce] wrote {os.path.join(out, 'REPRODUCTION.md')} "
        f"({(time.time() - t0) / 60:.1f} min)", flush=True)
  return data


def _analyse_and_report(out, results, workdirs, ds, *, seeds_done, params, suite_name,
                        directions, eval_examples, timing, command, notes_path,
                        finished_only=False, archive=None):
  """The analyses over the runs so far, ``reproduction.json`` and ``REPRODUCTION.md``."""
  if not results:
    raise ValueError(f"no finished run with these evaluation settings under {out}/runs")
  t = time.time()
  fosc = {m: fosc_over_epochs(workdirs[m]) for m in ("pgd_at", "dart")
          if m in workdirs and all(_has_fosc(w) for w in workdirs[m])}
  flat = {}
  for m in FLATNESS_METHODS:
    if m in workdirs and directions > 0 and len(workdirs[m]) == len(seeds_done):
      flat[m] = _flatness_summary(
          [flatness_cached(w, ds, directions=directions, seed=s, eval_examples=eval_examples)
           for w, s in zip(workdirs[m], seeds_done)])
  gaps = {m: _gap_summary([gap_curve(w) for w in wds]) for m, wds in workdirs.items()}
  analysis_s = time.time() - t
  data = {
      "out": out, "archive": archive, "suite": suite_name, "finished_only": finished_only,
      "command": command or " ".join(shlex.quote(a) for a in sys.argv),
      "machine": report.machine_description(),
      "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
      "runtime_s": time.time() - timing["t0"], "cpu_s": report.cpu_seconds() - timing["cpu0"],
      "loadavg_start": list(timing["load0"]), "loadavg_end": list(os.getloadavg()),
      "train_s": timing["train_s"], "eval_s": timing["eval_s"], "analysis_s": analysis_s,
      "num_test": next(iter(results.values()))[0]["num_examples"],
      "params": dict(params, seeds_done=seeds_done),
      "results": results, "summary": _summary(results),
      "fosc": fosc, "flatness": flat, "gaps": gaps,
      "verdicts": verdicts.verdicts(fosc, flat, results, gaps),
  }
  data = _jsonable(data)
  with open(os.path.join(out, "reproduction.json"), "w") as f:
    json.dump(data, f, indent=1)
  report.write_report(out, data, notes_path=notes_path)
  return data
