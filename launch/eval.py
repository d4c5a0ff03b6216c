r"""Evaluates a trained model: ``python -m launch.eval --workdir=DIR`` (or ``--checkpoint=DIR``).

Runs the seeds' table (Clean | FGSM | PGD-20 | PGD-100 | CW-inf | APGD-CE | APGD-T | AA, plus the
worst class) on the test split at the training eps, prints it, and writes ``eval_<which>.json`` and
``eval_<which>.md`` next to the checkpoints. ``--attacks`` selects columns, ``--num_examples`` a
prefix of the test split, ``--n_iter`` / ``--n_queries`` the APGD/AutoAttack budgets,
``--apgd_variant`` the APGD algorithm of the APGD and AA columns (``official``: fra31/auto-attack's
``autopgd_base.py``, the default; ``paper``). The JSON record holds, besides the numbers, the
library version, the seed and every hyperparameter of every column (``attack_settings``).
"""

import json
import os

from absl import app, flags, logging

import launch  # noqa: F401  (XLA CPU flags)
import jax
from robust_jax import evaluation
from robust_jax.data import pipeline
from robust_jax.training import restore

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Alias of --workdir.")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint.")
_ATTACKS = flags.DEFINE_list("attacks", list(evaluation.TABLE_COLUMNS), "Columns to run.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 0, "0 = the whole test split.")
_BATCH = flags.DEFINE_integer("batch_size", 500, "Examples per attack call.")
_EPS = flags.DEFINE_float("eps", None, "Radius (default: the training eps).")
_N_ITER = flags.DEFINE_integer("n_iter", 100, "APGD / AutoAttack iterations.")
_N_QUERIES = flags.DEFINE_integer("n_queries", 5000, "Square queries inside AutoAttack.")
_SEED = flags.DEFINE_integer("seed", 0, "Attack randomness.")
_APGD_VARIANT = flags.DEFINE_enum("apgd_variant", "official", ["official", "paper"],
                                  "APGD algorithm of the APGD and AA columns.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  workdir = _WORKDIR.value or _CHECKPOINT.value
  if not workdir:
    raise app.UsageError("pass --workdir=DIR (or --checkpoint=DIR)")
  logits_fn, info = restore.load_classifier(workdir, which=_WHICH.value)
  config = info["config"]
  ds = pipeline.load_dataset(config.dataset, data_dir=config.data_dir or None,
                             validation_fraction=config.validation_fraction)
  test = dict(ds.test)
  if _NUM_EXAMPLES.value:
    if _NUM_EXAMPLES.value < 1:
      raise app.UsageError("--num_examples must be >= 0")
    test = {k: v[:_NUM_EXAMPLES.value] for k, v in test.items()}
  test = {"image": pipeline.to_float(test["image"]), "label": test["label"]}
  eps = _EPS.value if _EPS.value is not None else info["eps"]
  table = evaluation.default_attacks(eps, norm=info["norm"], n_iter=_N_ITER.value,
                                     n_queries=_N_QUERIES.value,
                                     apgd_variant=_APGD_VARIANT.value)
  unknown = [a for a in _ATTACKS.value if a not in table]
  if unknown:
    raise app.UsageError(f"--attacks: unknown {unknown}; valid: {list(table)}")
  attacks = {k: table[k] for k in _ATTACKS.value}
  report = evaluation.evaluate(logits_fn, test, attacks, batch_size=_BATCH.value,
                               key=jax.random.key(_SEED.value), eps=eps, norm=info["norm"],
                               verbose=True)
  md = evaluation.format_table(report)
  header = (f"{info['method']} / {info['model']} / {info['dataset']}, {_WHICH.value} checkpoint "
            f"(epoch {info['epoch']}), eps {eps:g} ({info['norm']}), {report.num_examples} test "
            f"examples; APGD {_APGD_VARIANT.value} variant, n_iter {_N_ITER.value}, n_queries "
            f"{_N_QUERIES.value}, seed {_SEED.value}, robust_jax {report.library_version}")
  print(header)
  print(md)
  out = os.path.join(workdir, f"eval_{_WHICH.value}")
  with open(out + ".md", "w") as f:
    f.write(header + "\n\n" + md + "\n")
  with open(out + ".json", "w") as f:
    record = json.loads(evaluation.report_to_json(report))
    record.update(method=info["method"], model=info["model"], dataset=info["dataset"],
                  checkpoint=_WHICH.value, epoch=info["epoch"], seed=_SEED.value,
                  apgd_variant=_APGD_VARIANT.value, n_iter=_N_ITER.value,
                  n_queries=_N_QUERIES.value, batch_size=_BATCH.value,
                  num_examples_requested=_NUM_EXAMPLES.value)
    json.dump(record, f, indent=2)
  print(f"wrote {out}.md and {out}.json")


if __name__ == "__main__":
  flags.mark_flags_as_mutual_exclusive(["workdir", "checkpoint"])
  app.run(main)
