r"""Trains a GAN: ``python -m launch.train_gan --config=launch/configs/gan.py:wgan_gp --workdir=DIR``.

Kinds: ``vanilla``, ``wgan``, ``wgan_gp``, ``sngan`` (``,cpu`` for the CPU budget, ``,digits`` for
the 8x8 digits). Every config field is overridable (``--config.num_steps=500``). A restarted run
resumes bit-exactly from the latest checkpoint in ``--workdir``.
"""

from absl import app, flags, logging
from ml_collections import config_flags

import launch  # noqa: F401  (XLA CPU flags)
from robust_jax.games import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "launch/configs/gan.py:<kind>[,cpu].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and samples go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  summary = loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print({k: v for k, v in summary.items() if k != "last_eval"}, flush=True)


if __name__ == "__main__":
  app.run(main)
