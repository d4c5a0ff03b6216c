r"""Reproduces the seeds' claims on the embedded digits or MNIST-5k and writes REPRODUCTION.md.

  python -m launch.reproduce --out=runs/reproduce --seeds=0,1,2
  python -m launch.reproduce --suite=mnist5k --out=runs/reproduce_mnist5k \
      --archive=reproduction/mnist5k   # several sessions of 2 cores, resumable on any machine
  python -m launch.reproduce --out=runs/reproduce --report_only   # re-render from the JSON

Trains standard training, PGD-AT, Dynamic AT, FAT, GAIRAT, TRADES, MART and PGD-AT + AWP (mnist5k:
and TRADES at beta 6 beside the official MNIST script's beta 1), evaluates
every best checkpoint with the attacks of the seeds' table and writes ``OUT/REPRODUCTION.md`` and
``OUT/reproduction.json`` (:mod:`robust_jax.experiments.reproduce` says what and how). A stopped
suite resumes where it stopped when run again with the same flags.

* ``--suite=digits`` (default): the recipe of ``launch/configs/digits.py`` scaled to ``--epochs``,
  attacks at reduced budgets (``--n_iter=50 --n_queries=1000``); ``launch/reproduction_notes.md``
  (hand-written results of runs this suite does not make) is included in the report.
* ``--suite=mnist5k``: the CPU variants of ``launch/configs/mnist5k.py`` (``--epochs`` overrides
  their 15), AutoAttack at its standard budget (100 iterations, 5,000 Square queries) on the
  1,000 test images, columns FGSM, PGD-20, PGD-40 (TRADES' MNIST test attack), CW-inf, APGD-CE and
  AutoAttack (APGD-T runs inside AutoAttack); then the catastrophic-overfitting study
  (:mod:`robust_jax.experiments.catastrophic`, ``--co_epochs``).
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import List, Tuple

from absl import app, flags, logging

import launch  # noqa: F401  (XLA CPU flags)
from launch.configs import digits, mnist5k
from robust_jax.experiments import archive, catastrophic, reproduce, suite

NOTES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reproduction_notes.md")


# Per suite: the defaults of the flags left unset (None).
SUITE_DEFAULTS = {
    "digits": dict(epochs=40, n_iter=50, n_queries=1000, pgd_steps=["20", "100"], columns=None,
                   notes=NOTES, aa_seeds=None, methods=list(suite.DIGITS_METHODS)),
    "mnist5k": dict(epochs=None, n_iter=100, n_queries=5000, pgd_steps=["20", "40"],
                    columns=["FGSM", "PGD-20", "PGD-40", "CW-inf", "APGD-CE", "AA"], notes=None,
                    aa_seeds=["0"], methods=list(suite.MNIST5K_METHODS)),
}


def _flag_values() -> flags.FlagValues:
  """This launcher's flags, in their own FlagValues (``--out`` and ``--methods`` are also flags of
  other launchers, which may be imported into the same process, e.g. by the tests)."""
  fv = flags.FlagValues()
  flags.DEFINE_enum("suite", "digits", list(SUITE_DEFAULTS), "Which suite.", flag_values=fv)
  flags.DEFINE_string("out", None, "Output directory (runs, REPRODUCTION.md, reproduction.json).",
                      flag_values=fv)
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds.", flag_values=fv)
  flags.DEFINE_list("methods", None, f"Any of {', '.join(suite.METHODS)} (digits: "
                    f"{','.join(suite.DIGITS_METHODS)}; mnist5k: also trades_beta6).",
                    flag_values=fv)
  flags.DEFINE_integer("epochs", None, "Epochs per run (digits: 40, the recipe's schedules scaled "
                       "from 60; mnist5k: the CPU variants' 15).", flag_values=fv)
  flags.DEFINE_float("eps", 0.2, "digits: linf radius for training and evaluation (mnist5k: the "
                     "recipes' 0.3).", flag_values=fv)
  flags.DEFINE_float("awp_gamma", 0.005, "digits: AWP's relative per-layer weight perturbation "
                     "(mnist5k: the recipe's 0.01).", flag_values=fv)
  flags.DEFINE_integer("n_iter", None, "APGD-CE / APGD-T / AutoAttack iterations (digits 50, "
                       "mnist5k 100).", flag_values=fv)
  flags.DEFINE_integer("n_queries", None, "Square queries inside AutoAttack (digits 1000, mnist5k "
                       "5000).", flag_values=fv)
  flags.DEFINE_integer("cw_steps", 30, "CW-inf steps.", flag_values=fv)
  flags.DEFINE_list("pgd_steps", None, "PGD columns (20 is required; digits 20,100, mnist5k "
                    "20,40).", flag_values=fv)
  flags.DEFINE_list("columns", None, "Attack columns (default: digits all, mnist5k FGSM,PGD-20,"
                    "PGD-40,CW-inf,APGD-CE,AA).", flag_values=fv)
  flags.DEFINE_integer("eval_examples", 0, "Test examples evaluated, by the suite and by the "
                       "catastrophic-overfitting study (0 = the whole test split).",
                       flag_values=fv)
  flags.DEFINE_integer("directions", 3, "Random directions per flatness measurement.",
                       flag_values=fv)
  flags.DEFINE_list("co_settings", list(catastrophic.SETTINGS), "mnist5k: the catastrophic-"
                    "overfitting settings (empty: none).", flag_values=fv)
  flags.DEFINE_list("aa_seeds", None, "Seeds evaluated with the AA column too (digits: every "
                    "seed; mnist5k: 0, the others get every other column; 'all': every seed).",
                    flag_values=fv)
  flags.DEFINE_list("co_seeds", ["0"], "mnist5k: seeds of the catastrophic-overfitting study.",
                    flag_values=fv)
  flags.DEFINE_integer("co_epochs", catastrophic.EPOCHS, "mnist5k: epochs of each catastrophic-"
                       "overfitting run.", flag_values=fv)
  flags.DEFINE_bool("report_only", False, "Rewrite REPRODUCTION.md from OUT/reproduction.json "
                    "(restored from --archive first where OUT lacks it).",
                    flag_values=fv)
  flags.DEFINE_bool("finished_only", False, "Write REPRODUCTION.md from the runs finished so far "
                    "(trains and evaluates nothing; for a suite still running or stopped).",
                    flag_values=fv)
  flags.DEFINE_string("archive", None, "A directory of the results without checkpoints "
                      "(robust_jax.experiments.archive), e.g. reproduction/mnist5k: restored into "
                      "--out first, saved into after every finished run, so that the suite resumes "
                      "on another machine from it.", flag_values=fv)
  flags.DEFINE_string("command", None, "The command line to print in the report (default: argv).",
                      flag_values=fv)
  return fv


def _ints(name: str, values) -> list:
  """``--name``'s values as non-negative integers, or a UsageError naming the flag."""
  try:
    out = [int(v) for v in values]
  except ValueError:
    out = None
  if out is None or any(v < 0 for v in out):
    raise app.UsageError(f"--{name} takes non-negative integers, got {','.join(values)}")
  return out


def _check_flags(fv: flags.FlagValues) -> Tuple[List[int], List[int]]:
  """The flags that would otherwise fail late (the catastrophic-overfitting settings only after the
  whole suite, hours in), checked before anything runs. Returns ``(seeds, co_seeds)`` as ints."""
  if not fv.out:
    raise app.UsageError("pass --out=DIR")
  seeds, co_seeds = _ints("seeds", fv.seeds), _ints("co_seeds", fv.co_seeds)
  unknown = [m for m in fv.methods or () if m not in suite.METHODS]
  if unknown:
    raise app.UsageError(f"--methods: unknown {unknown}; valid: {list(suite.METHODS)}")
  unknown = [s for s in fv.co_settings if s not in catastrophic.SETTINGS]
  if unknown:
    raise app.UsageError(f"--co_settings: unknown {unknown}; valid: {list(catastrophic.SETTINGS)}")
  if fv.archive:
    if os.path.exists(fv.archive) and not os.path.isdir(fv.archive):
      raise app.UsageError(f"--archive must be a directory, got the file {fv.archive}")
    if os.path.realpath(fv.archive) == os.path.realpath(fv.out):
      raise app.UsageError(f"--archive must be another directory than --out (both {fv.out}): "
                           "the archive is the copy that outlives --out")
  return seeds, co_seeds


HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")


def parse_argv(argv: List[str]) -> List[str]:
  """absl's parser for ``app.run``: absl's global flags get only the program name (this launcher's
  flags live in their own FlagValues, parsed by ``main``), and ``--help`` prints this module's
  docstring and flags and exits 0 (absl's own ``--help`` would list only the global flags)."""
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(__doc__.strip() + "\n\nflags:\n" + _flag_values().get_help())
    sys.exit(0)
  flags.FLAGS(argv[:1])
  return list(argv)


def main(argv):
  fv = _flag_values()
  rest = fv(list(argv))
  if len(rest) > 1:
    raise app.UsageError(f"Unexpected arguments: {rest[1:]}")
  seeds, co_seeds = _check_flags(fv)
  logging.set_verbosity(logging.ERROR)
  d = SUITE_DEFAULTS[fv.suite]
  get = lambda name: d[name] if getattr(fv, name) is None else getattr(fv, name)  # noqa: E731
  extra = lambda: catastrophic.report_lines(fv.out) if fv.suite == "mnist5k" else []  # noqa: E731
  if fv.report_only:
    if fv.archive:  # a fresh --out (another machine) renders from the archive alone
      archive.restore(fv.archive, fv.out)
    reproduce.rewrite_report(fv.out, notes_path=d["notes"], extra_lines=extra(),
                             archive=fv.archive)
    if fv.archive:
      archive.save(fv.out, fv.archive)
    return
  cmd = fv.command or ("python -m launch.reproduce " + " ".join(shlex.quote(a) for a in argv[1:]))
  if fv.suite == "digits":
    spec = suite.digits_suite(digits.get_config, epochs=get("epochs"), eps=fv.eps,
                              awp_gamma=fv.awp_gamma)
  else:
    spec = suite.mnist5k_suite(mnist5k.get_config, epochs=fv.epochs)
  aa_seeds = get("aa_seeds")
  aa_seeds = (None if aa_seeds is None or aa_seeds == ["all"] else
              [x for x in _ints("aa_seeds", aa_seeds) if x in seeds])
  reproduce.run(fv.out, suite_spec=spec, seeds=seeds,
                methods=list(get("methods")), n_iter=get("n_iter"), n_queries=get("n_queries"),
                cw_steps=fv.cw_steps, pgd_steps=[int(k) for k in get("pgd_steps")],
                columns=get("columns"), eval_examples=fv.eval_examples,
                directions=fv.directions, command=cmd, notes_path=d["notes"],
                finished_only=fv.finished_only, full_seeds=aa_seeds, archive=fv.archive)
  if fv.finished_only:
    reproduce.rewrite_report(fv.out, notes_path=d["notes"], extra_lines=extra(),
                             archive=fv.archive)
  elif fv.suite == "mnist5k" and fv.co_settings:
    catastrophic.run(fv.out, get_config=mnist5k.get_config, settings=list(fv.co_settings),
                     seeds=co_seeds, epochs=fv.co_epochs,
                     eval_examples=fv.eval_examples, archive=fv.archive)
    reproduce.rewrite_report(fv.out, notes_path=d["notes"], extra_lines=extra(),
                             archive=fv.archive)
    if fv.archive:
      archive.save(fv.out, fv.archive)


if __name__ == "__main__":
  # The launcher's flags live in their own FlagValues, parsed by main; absl's global flags get none.
  app.run(main, flags_parser=parse_argv)
