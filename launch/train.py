r"""Trains a model: ``python -m launch.train --config=launch/configs/digits.py --workdir=DIR``.

Every config field is overridable: ``--config.method=trades --config.beta=6 --config.num_epochs=5``.
A restarted run resumes from the latest checkpoint in ``--workdir``.
"""

from absl import app, flags, logging
from ml_collections import config_flags

import launch  # noqa: F401  (XLA CPU flags)
from robust_jax.training import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file (launch/configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
