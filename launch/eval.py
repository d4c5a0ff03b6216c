r"""Evaluates a trained model: ``python -m launch.eval --workdir=DIR`` (or ``--checkpoint=DIR``).

Runs the seeds' table (Clean | FGSM | PGD-20 | PGD-100 | CW-inf | APGD-CE | APGD-T | AA, plus the
worst class; ``--attacks`` may add AA+ (AutoAttack plus) and the minimum-norm attacks FMN,
DeepFool, DDN and CW-L2 counted at eps, :func:`robust_jax.evaluation.extra_attacks`) on the test
split at the training eps, prints it, and writes ``eval_<which>.json`` and
``eval_<which>.md`` next to the checkpoints. ``--attacks`` selects columns, ``--num_examples`` a
prefix of the split, ``--split`` the split (``test``), ``--n_iter`` / ``--n_queries`` the
APGD/AutoAttack budgets, ``--apgd_variant`` the APGD algorithm of the APGD and AA columns
(``official``: fra31/auto-attack's ``autopgd_base.py``, the default; ``paper``).

One file per suite: the full default suite (every column, the whole test split, the training eps,
the default budgets, seed 0) writes ``eval_<which>.{md,json}``; any other suite adds a suffix
naming what differs (:func:`robust_jax.evaluation.suite_name`, e.g. ``eval_best_FGSM_eps0.1_n50``),
so a partial run never replaces the full report, and rerunning one suite replaces only its own
files.

``--curve=0.05,0.1,0.2`` also measures robust accuracy at each of those radii with one attack
(``--curve_attack``: a column such as ``PGD-20``, the default, swept over eps in one compiled
program, or a minimum-norm attack ``fmn`` / ``ddn`` / ``deepfool`` run once for every eps; see
:func:`robust_jax.evaluation.robustness_curve`) on the same examples and seed (a column of the
table with that column's random starts, so that at ``--eps`` it repeats the column's own number),
and writes ``<suite>_curve_<attack>.json`` and ``.png`` (accuracy against eps, the training eps
marked) next to the report.

``--robustbench`` runs RobustBench's evaluation instead of the table
(:func:`robust_jax.robustbench.benchmark`: AutoAttack ``standard``, ``--n_iter`` / ``--n_queries``
as given, on the first ``--num_examples`` test points, default RobustBench's 10,000 for CIFAR or the
whole split) and writes ``model_info/<dataset>/<Linf|L2>/<--robustbench_name>.json`` in the
workdir, RobustBench's leaderboard fields (clean_acc, autoattack_acc, eps, dataset, architecture,
...) plus the threat model, n_examples and version.

``--norm`` evaluates in another threat model than the training one (``linf``, ``l2`` or ``l1``; it
needs ``--eps``, and the report's name then ends in ``_<norm>``): every column is made for that
norm by :func:`robust_jax.evaluation.default_attacks` and run by
:func:`robust_jax.evaluation.evaluate` (for ``l1``: APGD-CE, APGD-T and AutoAttack's L1 standard
version); a column a norm does not support is one line on stderr.

Every record says what was run: the split, the number of examples, eps and the norm, the seed and
the key, every hyperparameter of every column (``attack_settings``: budgets, variants, restarts),
the checkpoint (which, epoch, step) and the library version; the Markdown header says the same.

Flags are checked before anything is loaded or compiled: ``--eps`` in (0, 1) for linf (as
training's ``config.eps``; at eps >= 1 the linf ball holds the whole [0, 1] box) and below the box
diameter for l2, ``--num_examples`` at most the size of the split, budgets >= 1. A bad flag or an
unreadable workdir is one line on stderr (exit code 2 or 1), not a traceback. A progress bar on
stderr names the attack and batch that run (``--noprogress`` hides it).
"""

import dataclasses
import json
import os
import re

from absl import flags, logging

import launch  # noqa: F401  (XLA CPU flags)
import jax
from launch import _cli
from robust_jax import evaluation
from robust_jax import evaluation_curves
from robust_jax import robustbench
from robust_jax import validation
from robust_jax.data import pipeline
from robust_jax.training import restore

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Alias of --workdir.")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint.")
_ATTACKS = flags.DEFINE_list("attacks", list(evaluation.TABLE_COLUMNS),
                             "Columns to run: the seeds' table "
                             f"({', '.join(evaluation.TABLE_COLUMNS)}) and "
                             f"{', '.join(evaluation.EXTRA_COLUMNS)}.")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "validation", "train"], "The data split.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 0, "0 = the whole split.")
_BATCH = flags.DEFINE_integer("batch_size", 500, "Examples per attack call.")
_EPS = flags.DEFINE_float("eps", None, "Radius (default: the training eps).")
_N_ITER = flags.DEFINE_integer("n_iter", 100, "APGD / AutoAttack iterations.")
_N_QUERIES = flags.DEFINE_integer("n_queries", 5000, "Square queries inside AutoAttack.")
_SEED = flags.DEFINE_integer("seed", 0, "Attack randomness.")
_NORM = flags.DEFINE_enum("norm", None, ["linf", "l2", "l1"],
                          "The threat model's norm (default: the training norm; another needs "
                          "--eps).")
_APGD_VARIANT = flags.DEFINE_enum("apgd_variant", "official", ["official", "paper"],
                                  "APGD algorithm of the APGD and AA columns.")
_PROGRESS = flags.DEFINE_bool("progress", True, "A progress bar per attack and batch on stderr.")
_CURVE = flags.DEFINE_list("curve", [], "Radii of a robustness curve (e.g. 0.05,0.1,0.2); none: "
                           "no curve.")
_CURVE_ATTACK = flags.DEFINE_string("curve_attack", "PGD-20",
                                    "The curve's attack: FGSM, PGD-<k>, CW-inf, APGD-CE, APGD-T "
                                    "(swept over eps) or fmn, ddn, deepfool (minimum norm).")


_ROBUSTBENCH = flags.DEFINE_bool("robustbench", False, "Run RobustBench's evaluation (AutoAttack "
                                  "standard) and write its model-info JSON instead of the table.")
_RB_NAME = flags.DEFINE_string("robustbench_name", None, "The model's name in the JSON (default "
                               "<method>_<model>).")


def _curve_eps() -> list:
  """The radii of --curve, as floats (a usage error for anything else)."""
  values = []
  for v in _CURVE.value:
    try:
      values.append(float(v))
    except ValueError:
      raise _cli.UsageError(f"--curve: {v!r} is not a number") from None
  return values


def _check_flags():
  """The flags that need nothing loaded."""
  _cli.check(bool(_WORKDIR.value or _CHECKPOINT.value), "pass --workdir=DIR (or --checkpoint=DIR)")
  _cli.check(_NUM_EXAMPLES.value >= 0,
             f"--num_examples must be >= 0 (0: the whole split), got {_NUM_EXAMPLES.value}")
  _cli.check(_BATCH.value >= 1, f"--batch_size must be >= 1, got {_BATCH.value}")
  _cli.check(_N_ITER.value >= 1, f"--n_iter must be >= 1, got {_N_ITER.value}")
  _cli.check(_N_QUERIES.value >= 0, f"--n_queries must be >= 0, got {_N_QUERIES.value}")
  _cli.check(_EPS.value is None or 0.0 < _EPS.value < float("inf"),
             f"--eps must be > 0, got {_EPS.value}")
  _cli.check(bool(_ATTACKS.value), "--attacks must name at least one column")
  unknown = [a for a in _ATTACKS.value
             if a not in evaluation.TABLE_COLUMNS + evaluation.EXTRA_COLUMNS]
  _cli.check(not unknown, f"--attacks: unknown {unknown}; valid: "
                          f"{list(evaluation.TABLE_COLUMNS) + list(evaluation.EXTRA_COLUMNS)}")
  dup = sorted({a for a in _ATTACKS.value if _ATTACKS.value.count(a) > 1})
  _cli.check(not dup, f"--attacks: {dup} given twice")
  curve = _curve_eps()
  _cli.check(all(0.0 < e < float("inf") for e in curve), f"--curve radii must be > 0, got {curve}")
  _cli.check(len(set(curve)) == len(curve), f"--curve: a radius given twice in {curve}")
  try:
    evaluation_curves.check_curve_attack(_CURVE_ATTACK.value)
  except ValueError as e:
    raise _cli.UsageError(f"--curve_attack: {e}") from e


def main(argv):
  if len(argv) > 1:
    raise _cli.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  _check_flags()
  workdir = _WORKDIR.value or _CHECKPOINT.value
  _cli.check(os.path.isdir(workdir), f"--workdir={workdir} is not a directory")
  logits_fn, info = restore.load_classifier(workdir, which=_WHICH.value)
  config = info["config"]
  norm = _NORM.value or info["norm"]
  _cli.check(norm == info["norm"] or _EPS.value is not None,
             f"--norm={norm} is not the training norm ({info['norm']}): pass --eps, a radius in "
             f"{norm} (the training eps is a {info['norm']} radius)")
  eps = _EPS.value if _EPS.value is not None else info["eps"]
  ds = pipeline.load_dataset(config.dataset, data_dir=config.data_dir or None,
                             validation_fraction=config.validation_fraction)
  try:
    validation.check_eps(eps, norm, low_open=True, image_shape=(1, *ds.image_shape))
  except ValueError as e:
    raise _cli.UsageError(f"--eps: {e}") from e
  curve_eps = _curve_eps()
  try:
    for e in curve_eps:
      validation.check_eps(e, norm, low_open=True, image_shape=(1, *ds.image_shape))
    if curve_eps:
      evaluation_curves.check_curve_attack(_CURVE_ATTACK.value, norm)
  except ValueError as e:
    raise _cli.UsageError(f"--curve: {e}") from e
  data = dict(ds.split(_SPLIT.value))
  size = len(data["label"])
  _cli.check(size > 0, f"the {_SPLIT.value} split of {config.dataset} is empty")
  _cli.check(_NUM_EXAMPLES.value <= size,
             f"--num_examples must be at most the size of the {_SPLIT.value} split of "
             f"{config.dataset}, {size}, got {_NUM_EXAMPLES.value} (0: the whole split)")
  if _NUM_EXAMPLES.value:
    data = {k: v[:_NUM_EXAMPLES.value] for k, v in data.items()}
  data = {"image": pipeline.to_float(data["image"]), "label": data["label"]}
  if _ROBUSTBENCH.value:
    _robustbench(logits_fn, info, data, eps, workdir, norm)
    return
  try:
    table = evaluation.default_attacks(eps, norm=norm, n_iter=_N_ITER.value,
                                       n_queries=_N_QUERIES.value,
                                       apgd_variant=_APGD_VARIANT.value)
  except ValueError as e:
    raise _cli.UsageError(f"--norm={norm}: {e}") from e
  extra = [k for k in _ATTACKS.value if k in evaluation.EXTRA_COLUMNS]
  try:
    table.update(evaluation.extra_attacks(eps, extra, norm=norm, n_iter=_N_ITER.value,
                                          n_queries=_N_QUERIES.value,
                                          apgd_variant=_APGD_VARIANT.value))
  except ValueError as e:
    raise _cli.UsageError(f"--attacks: {e}") from e
  # The default --attacks is the linf/l2 table: for l1 it is the columns that norm has.
  names = (_ATTACKS.value if flags.FLAGS["attacks"].present
           else [k for k in _ATTACKS.value if k in table])
  missing = [k for k in names if k not in table]
  _cli.check(not missing, f"--attacks: {missing} have no {norm} version; valid for --norm={norm}: "
             f"{list(table)}")
  attacks = {k: table[k] for k in names}
  # No batch larger than the data: padding 40 examples to 500 would run the attacks on 500.
  batch_size = min(_BATCH.value, len(data["label"]))
  report = evaluation.evaluate(logits_fn, data, attacks, batch_size=batch_size,
                               key=jax.random.key(_SEED.value), eps=eps, norm=norm,
                               progress=_PROGRESS.value)
  md = evaluation.format_table(report)
  name = evaluation.suite_name(_WHICH.value, attacks=names, split=_SPLIT.value,
                               num_examples=_NUM_EXAMPLES.value, eps=eps,
                               training_eps=info["eps"], n_iter=_N_ITER.value,
                               n_queries=_N_QUERIES.value, seed=_SEED.value,
                               apgd_variant=_APGD_VARIANT.value)
  if norm != info["norm"]:  # another threat model: never the training norm's report
    name += f"_{norm}"
  header = (f"{info['method']} / {info['model']} / {info['dataset']}, {_WHICH.value} checkpoint "
            f"(epoch {info['epoch']}, step {info['step']}), {_SPLIT.value} split, "
            f"{report.num_examples} examples, eps {eps:g} ({norm}); attacks "
            f"{', '.join(names)}; APGD {_APGD_VARIANT.value} variant, n_iter "
            f"{_N_ITER.value}, n_queries {_N_QUERIES.value}, seed {_SEED.value}, robust_jax "
            f"{report.library_version}")
  print(header)
  print(md.replace("Worst case over all attacks:",
                   f"Worst case over all attacks ({_SPLIT.value} split):"))
  out = os.path.join(workdir, name)
  with open(out + ".md", "w") as f:
    f.write(header + "\n\n" + md + "\n")
  with open(out + ".json", "w") as f:
    record = json.loads(evaluation.report_to_json(report))
    record.update(suite=name, method=info["method"], model=info["model"],
                  dataset=info["dataset"], split=_SPLIT.value, split_size=size,
                  checkpoint=_WHICH.value, epoch=info["epoch"], step=info["step"],
                  training_eps=info["eps"], seed=_SEED.value, attacks=list(names),
                  apgd_variant=_APGD_VARIANT.value, n_iter=_N_ITER.value,
                  n_queries=_N_QUERIES.value, batch_size=batch_size,
                  num_examples_requested=_NUM_EXAMPLES.value)
    json.dump(record, f, indent=2)
  print(f"wrote {out}.md and {out}.json")
  if curve_eps:
    curve = evaluation.robustness_curve(
        logits_fn, data, curve_eps, attack=_CURVE_ATTACK.value, key=jax.random.key(_SEED.value),
        batch_size=batch_size, norm=norm, seed=_SEED.value, training_eps=info["eps"],
        n_iter=_N_ITER.value, apgd_variant=_APGD_VARIANT.value,
        # A column of the table: its random starts, so the curve at --eps is its own accuracy.
        key_index=report.attack_key_index.get(_CURVE_ATTACK.value, 0))
    curve = dataclasses.replace(curve, context=dict(
        suite=name, method=info["method"], model=info["model"], dataset=info["dataset"],
        split=_SPLIT.value, checkpoint=_WHICH.value, epoch=info["epoch"], step=info["step"]))
    print(f"robust accuracy against eps ({_CURVE_ATTACK.value}, {curve.kind.replace('_', ' ')}): "
          + ", ".join(f"{e:g}: {100 * a:.2f}" for e, a in zip(curve.eps, curve.accuracy)))
    paths = evaluation_curves.save_robustness_curve(
        curve, f"{out}_curve_{re.sub(r'[^A-Za-z0-9_.+-]', '-', _CURVE_ATTACK.value)}")
    print(f"wrote {paths[0]} and {paths[1]}")


def _robustbench(logits_fn, info, data, eps, workdir, norm):
  """``--robustbench``: RobustBench's evaluation of the checkpoint and its model-info JSON."""
  threat = {"linf": "Linf", "l2": "L2"}.get(norm)
  _cli.check(threat is not None, f"--robustbench: RobustBench ranks Linf and L2 models; this "
                                 f"evaluation's norm is {norm!r}")
  _cli.check(_SPLIT.value == "test", "--robustbench evaluates the test split (RobustBench's); "
                                     f"got --split={_SPLIT.value}")
  name = _RB_NAME.value or f"{info['method']}_{info['model']}"
  _cli.check(bool(re.fullmatch(r"[A-Za-z0-9_.+-]+", name)),
             f"--robustbench_name must be letters, digits and _.+- only, got {name!r}")
  n = _NUM_EXAMPLES.value or None
  entry = robustbench.benchmark(
      logits_fn, data["image"], data["label"], dataset=info["dataset"], threat_model=threat,
      eps=eps, key=jax.random.key(_SEED.value), n_examples=n,
      batch_size=min(_BATCH.value, len(data["label"])), model_name=name,
      architecture=info["model"], n_iter=_N_ITER.value, n_queries=_N_QUERIES.value,
      apgd_variant=_APGD_VARIANT.value)
  entry["robust_jax"].update(method=info["method"], checkpoint=_WHICH.value, epoch=info["epoch"],
                             step=info["step"], seed=_SEED.value, n_iter=_N_ITER.value,
                             n_queries=_N_QUERIES.value)
  path = robustbench.model_info_path(workdir, dataset=info["dataset"], threat_model=threat,
                                     model_name=name)
  robustbench.write_model_info(path, entry)
  print(f"RobustBench ({threat}, eps {eps:g}, AutoAttack {entry['version']}, "
        f"{entry['n_examples']} test examples): clean {entry['clean_acc']}%, AutoAttack "
        f"{entry['autoattack_acc']}%")
  print(f"wrote {path}")


if __name__ == "__main__":
  flags.mark_flags_as_mutual_exclusive(["workdir", "checkpoint"])
  _cli.run(main, "launch.eval")
