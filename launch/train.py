r"""Trains a model: ``python -m launch.train --config=launch/configs/digits.py --workdir=DIR``.

Every config field is overridable: ``--config.method=trades --config.beta=6 --config.num_epochs=5``.
A restarted run resumes from the latest checkpoint in ``--workdir``; a finished one says so and does
nothing.

Exit codes:
  0    trained and evaluated (or had finished already).
  75   pre-empted: SIGTERM or SIGINT arrived, the current step was finished and a checkpoint saved
       (one log line names it); rerun the same command to resume. A second signal exits at once
       with the signal's own status (143 for SIGTERM, 130 for SIGINT).
  1    an error, printed as one line: another trainer holds the workdir, nothing in it restores
       (``--config.restart=True`` moves it aside and starts over), a changed config would alter the
       checkpoint's trajectory (``--config.allow_config_change``), a checkpoint could not be
       written (full disk; the last good one is named and kept), or a bad config field.
"""

from absl import app, flags, logging
from ml_collections import config_flags

import launch  # noqa: F401  (XLA CPU flags)
from robust_jax import checkpoint as ckpt_lib
from robust_jax.training import loop, resume, workdir_lock

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file (launch/configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.")
flags.mark_flags_as_required(["config", "workdir"])

# Errors whose message says what happened and what to do: one line, no traceback.
_CLEAR_ERRORS = (loop.InvalidRun, workdir_lock.WorkdirLocked, resume.ResumeError,
                 resume.ConfigChangeError, ckpt_lib.CheckpointWriteError)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except _CLEAR_ERRORS as e:
    raise SystemExit(f"launch.train: {e}") from None


if __name__ == "__main__":
  app.run(main)
