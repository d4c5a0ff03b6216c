r"""Reproduces the seeds' claims at small scale on the embedded digits and writes REPRODUCTION.md.

  python -m launch.reproduce --out=runs/reproduce --seeds=0,1,2
  python -m launch.reproduce --out=runs/reproduce --report_only   # re-render from the JSON

Trains standard training, PGD-AT, Dynamic AT, FAT, GAIRAT, TRADES, MART and PGD-AT + AWP with the
recipe of ``launch/configs/digits.py`` scaled to ``--epochs``, evaluates every best checkpoint with
the attacks of the seeds' table at reduced budgets and writes ``OUT/REPRODUCTION.md`` and
``OUT/reproduction.json`` (:mod:`robust_jax.experiments.reproduce` says what and how);
``launch/reproduction_notes.md`` (hand-written results of runs this suite does not make) is included
in the report.
"""

from __future__ import annotations

import os
import shlex

from absl import app, flags, logging

import launch  # noqa: F401  (XLA CPU flags)
from launch.configs import digits
from robust_jax.experiments import reproduce, suite

NOTES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reproduction_notes.md")


def _flag_values() -> flags.FlagValues:
  """This launcher's flags, in their own FlagValues (``--out`` and ``--methods`` are also flags of
  other launchers, which may be imported into the same process, e.g. by the tests)."""
  fv = flags.FlagValues()
  flags.DEFINE_string("out", None, "Output directory (runs, REPRODUCTION.md, reproduction.json).",
                      flag_values=fv)
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds.", flag_values=fv)
  flags.DEFINE_list("methods", list(suite.METHODS), f"Any of {', '.join(suite.METHODS)}.",
                    flag_values=fv)
  flags.DEFINE_integer("epochs", 40, "Epochs per run (the recipe's schedules are scaled from 60).",
                       flag_values=fv)
  flags.DEFINE_float("eps", 0.2, "linf radius for training and evaluation.", flag_values=fv)
  flags.DEFINE_float("awp_gamma", 0.005, "AWP's relative per-layer weight perturbation.",
                     flag_values=fv)
  flags.DEFINE_integer("n_iter", 50, "APGD-CE / APGD-T / AutoAttack iterations.", flag_values=fv)
  flags.DEFINE_integer("n_queries", 1000, "Square queries inside AutoAttack.", flag_values=fv)
  flags.DEFINE_integer("cw_steps", 30, "CW-inf steps.", flag_values=fv)
  flags.DEFINE_list("pgd_steps", ["20", "100"], "PGD columns (20 is required).", flag_values=fv)
  flags.DEFINE_integer("eval_examples", 0, "Test examples evaluated (0 = the whole test split).",
                       flag_values=fv)
  flags.DEFINE_integer("directions", 3, "Random directions per flatness measurement.",
                       flag_values=fv)
  flags.DEFINE_bool("report_only", False, "Rewrite REPRODUCTION.md from OUT/reproduction.json.",
                    flag_values=fv)
  flags.DEFINE_string("command", None, "The command line to print in the report (default: argv).",
                      flag_values=fv)
  return fv


def main(argv):
  fv = _flag_values()
  rest = fv(list(argv))
  if len(rest) > 1:
    raise app.UsageError(f"Unexpected arguments: {rest[1:]}")
  if not fv.out:
    raise app.UsageError("pass --out=DIR")
  logging.set_verbosity(logging.ERROR)
  if fv.report_only:
    reproduce.rewrite_report(fv.out, notes_path=NOTES)
    return
  cmd = fv.command or ("python -m launch.reproduce " + " ".join(shlex.quote(a) for a in argv[1:]))
  reproduce.run(fv.out, recipe=digits.get_config, seeds=[int(s) for s in fv.seeds],
                methods=list(fv.methods), epochs=fv.epochs, eps=fv.eps, awp_gamma=fv.awp_gamma,
                n_iter=fv.n_iter, n_queries=fv.n_queries, cw_steps=fv.cw_steps,
                pgd_steps=[int(k) for k in fv.pgd_steps], eval_examples=fv.eval_examples,
                directions=fv.directions, command=cmd, notes_path=NOTES)


if __name__ == "__main__":
  # The launcher's flags live in their own FlagValues, parsed by main; absl's global flags get none.
  app.run(main, flags_parser=lambda argv: (flags.FLAGS(argv[:1]), list(argv))[1])
