r"""Analyses a trained model: ``python -m launch.analyze --checkpoint=DIR --what=landscape``.

``--what`` (comma-separated) picks the analyses of :mod:`robust_jax.analysis.reports`:

* ``landscape``: the adversarial loss (PGD regenerated at every point) along a filter-normalised
  random direction (``--dims=2``: a 2-D grid), Li et al. 2018 / AWP;
* ``hessian``: the top ``--topk`` Hessian eigenvalues of the adversarial loss on examples generated
  once (Liu et al. 2020);
* ``similarity``: the cosine of perturbations at theta +- a v, v the top eigenvector or random
  (Liu et al. 2020, Tables 1-2);
* ``fosc``: FOSC of PGD examples against the model, and over the training epochs when the run
  logged FOSC histograms (Wang et al. 2019);
* ``gap``: train versus validation robust accuracy per epoch, from ``metrics.jsonl``.

Each writes ``<name>.png`` and ``<name>.json`` into ``--out`` (default ``DIR/analysis``). The attack
defaults to the training attack of the run's config (``--eps``, ``--step_size``, ``--num_steps``
override it). The data are the first ``--num_examples`` of ``--split`` (default: ``train`` for the
Hessian and the similarity, as Liu et al., ``test`` otherwise).

  python -m launch.train --config=launch/configs/digits.py --workdir=runs/digits_pgd_at
  python -m launch.analyze --checkpoint=runs/digits_pgd_at --what=landscape,hessian,gap
"""

import os

from absl import app, flags, logging

import launch  # noqa: F401  (XLA CPU flags)
from robust_jax.analysis import reports
from robust_jax.training import restore

WHAT = ("landscape", "hessian", "similarity", "fosc", "gap")

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A training workdir (or its checkpoints/).")
_WHAT = flags.DEFINE_list("what", None, f"Analyses, any of {', '.join(WHAT)}.")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: <checkpoint>/analysis).")
_SPLIT = flags.DEFINE_enum("split", None, ["train", "validation", "test"],
                           "Data split (default: train for hessian/similarity, test otherwise).")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 512, "Examples analysed (<= 0: the split).")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Examples per batch.")
_EPS = flags.DEFINE_float("eps", None, "Attack radius (default: the training eps).")
_STEP = flags.DEFINE_float("step_size", None, "Attack step (default: the training step).")
_STEPS = flags.DEFINE_integer("num_steps", None, "Attack steps (default: the training K).")
_DIMS = flags.DEFINE_enum("dims", "1", ["1", "2"], "Landscape: 1-D curve or 2-D grid.")
_POINTS = flags.DEFINE_integer("num_points", 21, "Landscape: points per axis.")
_SPAN = flags.DEFINE_float("span", 1.0, "Landscape: alpha in [-span, span].")
_ONE_DIM = flags.DEFINE_enum("one_dim", "zero", ["zero", "elementwise"],
                             "Landscape: biases/BatchNorm of the direction (Li et al.: zero).")
_TOPK = flags.DEFINE_integer("topk", 5, "Hessian: eigenvalues.")
_ITERS = flags.DEFINE_integer("max_iters", 50, "Hessian: power iterations per eigenvalue.")
_TOL = flags.DEFINE_float("tol", 1e-3, "Hessian: relative tolerance.")
_ALPHAS = flags.DEFINE_list("alphas", ["0", "0.01", "0.03", "0.05", "0.1"], "Similarity: a values.")
_INDEPENDENT = flags.DEFINE_bool("independent_starts", False,
                                 "Similarity: independent random starts at theta +- a v.")
_SEED = flags.DEFINE_integer("seed", 0, "Directions, starts and power-iteration vectors.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  if not _CHECKPOINT.value or not _WHAT.value:
    raise app.UsageError("pass --checkpoint=DIR and --what=" + "|".join(WHAT))
  unknown = [w for w in _WHAT.value if w not in WHAT]
  if unknown:
    raise app.UsageError(f"--what: unknown {unknown}; valid: {list(WHAT)}")
  tm = restore.load_trained(_CHECKPOINT.value, which=_WHICH.value)
  out = _OUT.value or os.path.join(tm.workdir, "analysis")
  attack = {"eps": _EPS.value, "step_size": _STEP.value, "num_steps": _STEPS.value}
  name = tm.config.method
  cache = {}

  def batches(default_split):
    split = _SPLIT.value or default_split
    if split not in cache:
      cache[split] = reports.analysis_batches(tm.config, split=split,
                                              num_examples=_NUM_EXAMPLES.value,
                                              batch_size=_BATCH.value)
    return cache[split]

  for what in _WHAT.value:
    if what == "landscape":
      reports.landscape_report({name: tm}, batches("test"), out, dims=int(_DIMS.value),
                               num_points=_POINTS.value, span=_SPAN.value,
                               one_dim=_ONE_DIM.value, seed=_SEED.value, attack=attack)
    elif what == "hessian":
      r = reports.hessian_report({name: tm}, batches("train"), out, topk=_TOPK.value,
                                 seed=_SEED.value, max_iters=_ITERS.value, tol=_TOL.value,
                                 attack=attack)
      print("top Hessian eigenvalues:", [round(e, 4) for e in r["eigenvalues"][name]])
    elif what == "similarity":
      reports.similarity_report({name: tm}, batches("train"), out,
                                alphas=[float(a) for a in _ALPHAS.value], seed=_SEED.value,
                                max_iters=_ITERS.value, tol=_TOL.value,
                                independent_starts=_INDEPENDENT.value, attack=attack)
    elif what == "fosc":
      reports.fosc_report({name: tm}, batches("test"), out, seed=_SEED.value, attack=attack)
    elif what == "gap":
      reports.gap_report({name: tm.workdir}, out)
    print(f"{what}: written to {out}", flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["checkpoint", "what"])
  app.run(main)
