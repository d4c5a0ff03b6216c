r"""The four GANs of lecture 003 on MNIST-5k and the lecture's claims judged: ``gans.md`` in ``--out``.

  python -m launch.reproduce_gans --out=runs/gans                 # about 15 minutes on 2 CPU cores
  python -m launch.reproduce_gans --out=/tmp/g --dataset=digits --num_steps=40   # a quick check

Resumable: rerun the same command after an interruption; finished kinds are only re-read. The
report (a markdown section for REPRODUCTION.md), the sample grids and the curves plot are written
under ``--out`` (:mod:`robust_jax.games.reproduce`).
"""

from absl import app, flags, logging

import launch  # noqa: F401  (XLA CPU flags)
from robust_jax.games import reproduce

_OUT = flags.DEFINE_string("out", None, "Output directory (runs, grids, curves, gans.md).")
_KINDS = flags.DEFINE_list("kinds", list(reproduce.KIND_ORDER), "GAN kinds to train.")
_DATASET = flags.DEFINE_enum("dataset", "mnist5k", ["mnist5k", "digits"], "Training data.")
_STEPS = flags.DEFINE_integer("num_steps", None, "Generator steps per kind (default: each kind's "
                              "CPU budget).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every run and of the feature classifier.")
flags.mark_flags_as_required(["out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.ERROR)
  result = reproduce.run(_OUT.value, kinds=_KINDS.value, dataset=_DATASET.value,
                         num_steps=_STEPS.value, seed=_SEED.value)
  for claim, verdict in result["verdicts"].items():
    print(f"{claim}: {verdict}")
  print(f"report: {result['report']}", flush=True)


if __name__ == "__main__":
  app.run(main)
