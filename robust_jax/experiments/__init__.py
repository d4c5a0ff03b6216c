"""Long experiments as library code: the small-scale reproduction of the seeds' claims.

Modules:
  suite       what is trained: the methods, their configs scaled from a recipe, the flatness grid.
  reproduce   training, evaluation of the best checkpoints, the analyses, ``run``.
  verdicts    statistics over seeds and one verdict per claim.
  report      REPRODUCTION.md from the JSON data.

``python -m launch.reproduce`` parses its flags and calls :func:`run` (or :func:`rewrite_report`
with ``--report_only``).
"""

from robust_jax.experiments import report, reproduce, suite, verdicts
from robust_jax.experiments.report import write_report
from robust_jax.experiments.reproduce import evaluate_run, flatness, rewrite_report, run
from robust_jax.experiments.suite import ALPHAS, METHODS, make_config
from robust_jax.experiments.verdicts import mean_std, pm

__all__ = [
    "ALPHAS", "METHODS", "evaluate_run", "flatness", "make_config", "mean_std", "pm", "report",
    "reproduce", "rewrite_report", "run", "suite", "verdicts", "write_report",
]
