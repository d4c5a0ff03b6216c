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
* ``gap``: train versus validation robust accuracy per epoch, from ``metrics.jsonl``;
* ``transfer``: PGD examples crafted on this model (no random start, as ``attack_sgm.py``) evaluated
  on the models of ``--targets`` (workdirs); ``--sgm_gamma`` adds the Skip Gradient Method's
  surrogate (Wu et al. 2020; ResNet-family sources) beside the plain one;
* ``sammd``: SAMMD's two-sample test (Gao et al. 2021) with phi the output of ``--sammd_layer``:
  its power on clean against PGD batches and its type-I error on two clean batches.

Each writes ``<name>.png`` and ``<name>.json`` into ``--out`` (default ``DIR/analysis``). The attack
defaults to the training attack of the run's config (``--eps``, ``--step_size``, ``--num_steps``
override it). The data are the first ``--num_examples`` of ``--split`` (default: ``train`` for the
Hessian and the similarity, as Liu et al., ``test`` otherwise). Each JSON records, under
``"settings"``, the split, the number of examples, the seed, the attack (eps, norm, step size,
steps), the checkpoint's step and the library version; each PNG title says the same.

Flags are checked before anything is loaded: ``--num_points`` odd and >= 3 (so that alpha = 0, the
trained model itself, is a grid point), ``--span`` > 0, ``--eps`` in (0, 1) for linf,
``--num_examples`` at most the size of the split when given, budgets >= 1. A bad flag or an
unreadable checkpoint is one line on stderr (exit code 2 or 1), not a traceback; orbax's
read-only warnings are not shown. A progress bar on stderr names the analysis that runs
(``--noprogress`` hides it).

  python -m launch.train --config=launch/configs/digits.py --workdir=runs/digits_pgd_at
  python -m launch.analyze --checkpoint=runs/digits_pgd_at --what=landscape,hessian,gap
"""

import os
import sys

import tqdm
from absl import flags, logging

import launch  # noqa: F401  (XLA CPU flags)
from launch import _cli
from robust_jax import validation
from robust_jax.analysis import reports
from robust_jax.data import pipeline
from robust_jax.training import restore

WHAT = ("landscape", "hessian", "similarity", "fosc", "gap", "transfer", "sammd")

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
_TARGETS = flags.DEFINE_list("targets", None, "Transfer: workdirs of the target models.")
_SGM = flags.DEFINE_float("sgm_gamma", None, "Transfer: also the SGM surrogate at this gamma in "
                          "(0, 1] (ResNet-family sources).")
_SAMMD_LAYER = flags.DEFINE_string("sammd_layer", None, "SAMMD: the submodule whose output is phi "
                                   "(e.g. fc2 of the digits MLP).")
_SAMMD_N = flags.DEFINE_integer("sammd_n", 50, "SAMMD: points per sample of each test.")
_SAMMD_TESTS = flags.DEFINE_integer("sammd_tests", 100, "SAMMD: tests per rejection rate.")
_KERNEL_STEPS = flags.DEFINE_integer("kernel_steps", 1000, "SAMMD: Adam steps of the kernel.")
_PROGRESS = flags.DEFINE_bool("progress", True, "A progress bar over the analyses on stderr.")


def _check_flags():
  """The flags that need nothing loaded."""
  _cli.check(bool(_CHECKPOINT.value) and bool(_WHAT.value),
             "pass --checkpoint=DIR and --what=" + "|".join(WHAT))
  unknown = [w for w in _WHAT.value if w not in WHAT]
  _cli.check(not unknown, f"--what: unknown {unknown}; valid: {list(WHAT)}")
  _cli.check(_BATCH.value >= 1, f"--batch_size must be >= 1, got {_BATCH.value}")
  if "landscape" in _WHAT.value:
    try:
      reports.check_landscape_grid(dims=int(_DIMS.value), num_points=_POINTS.value,
                                   span=_SPAN.value)
    except ValueError as e:
      raise _cli.UsageError(f"--{str(e)}") from e
  _cli.check(_TOPK.value >= 1, f"--topk must be >= 1, got {_TOPK.value}")
  _cli.check(_ITERS.value >= 1, f"--max_iters must be >= 1, got {_ITERS.value}")
  _cli.check(_TOL.value > 0, f"--tol must be > 0, got {_TOL.value}")
  _cli.check(_EPS.value is None or 0.0 < _EPS.value < float("inf"),
             f"--eps must be > 0, got {_EPS.value}")
  _cli.check(_STEP.value is None or 0.0 < _STEP.value < float("inf"),
             f"--step_size must be > 0, got {_STEP.value}")
  _cli.check(_STEPS.value is None or 0 <= _STEPS.value < 2**31,
             f"--num_steps must be in [0, 2**31), got {_STEPS.value}")
  try:
    alphas = [float(a) for a in _ALPHAS.value]
  except ValueError as e:
    raise _cli.UsageError(f"--alphas must be numbers, got {_ALPHAS.value}") from e
  _cli.check(all(0.0 <= a < float("inf") for a in alphas),
             f"--alphas must be >= 0, got {_ALPHAS.value}")
  if "transfer" in _WHAT.value:
    _cli.check(bool(_TARGETS.value), "--what=transfer needs --targets=DIR[,DIR...]")
    missing = [t for t in _TARGETS.value if not os.path.isdir(t)]
    _cli.check(not missing, f"--targets: not directories: {missing}")
  _cli.check(_SGM.value is None or 0.0 < _SGM.value <= 1.0,
             f"--sgm_gamma must be in (0, 1], got {_SGM.value}")
  if "sammd" in _WHAT.value:
    _cli.check(bool(_SAMMD_LAYER.value), "--what=sammd needs --sammd_layer=NAME (a submodule)")
  _cli.check(_SAMMD_N.value >= 2, f"--sammd_n must be >= 2, got {_SAMMD_N.value}")
  _cli.check(_SAMMD_TESTS.value >= 1, f"--sammd_tests must be >= 1, got {_SAMMD_TESTS.value}")
  _cli.check(_KERNEL_STEPS.value >= 0, f"--kernel_steps must be >= 0, got {_KERNEL_STEPS.value}")


def main(argv):
  if len(argv) > 1:
    raise _cli.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  _check_flags()
  _cli.check(os.path.isdir(_CHECKPOINT.value),
             f"--checkpoint={_CHECKPOINT.value} is not a directory")
  tm = restore.load_trained(_CHECKPOINT.value, which=_WHICH.value)
  out = _OUT.value or os.path.join(tm.workdir, "analysis")
  _cli.check(not os.path.exists(out) or os.path.isdir(out), f"--out={out} is not a directory")
  attack = {"eps": _EPS.value, "step_size": _STEP.value, "num_steps": _STEPS.value}
  settings = reports.attack_settings(tm.config, **attack)
  try:
    validation.check_eps(settings["eps"], settings["norm"], low_open=True)
  except ValueError as e:
    raise _cli.UsageError(f"--eps: {e}") from e
  name = tm.config.method
  cache = {}
  needs_data = [w for w in _WHAT.value if w != "gap"]
  splits = {_SPLIT.value or ("train" if w in ("hessian", "similarity") else "test")
            for w in needs_data} | ({"train"} if "sammd" in needs_data else set())
  if needs_data and flags.FLAGS["num_examples"].present and _NUM_EXAMPLES.value > 0:
    ds = pipeline.load_dataset(tm.config.dataset, data_dir=tm.config.get("data_dir") or None,
                               validation_fraction=tm.config.get("validation_fraction", 0.1))
    for split in sorted(splits):
      size = len(ds.split(split)["label"])
      _cli.check(_NUM_EXAMPLES.value <= size,
                 f"--num_examples must be at most the size of the {split} split of "
                 f"{tm.config.dataset}, {size}, got {_NUM_EXAMPLES.value} (<= 0: the whole split)")

  def batches(default_split):
    split = _SPLIT.value or default_split
    if split not in cache:
      cache[split] = reports.analysis_batches(tm.config, split=split,
                                              num_examples=_NUM_EXAMPLES.value,
                                              batch_size=_BATCH.value)
    return cache[split], split

  bar = tqdm.tqdm(_WHAT.value, desc="analyze", unit="analysis", file=sys.stderr,
                  disable=not _PROGRESS.value, dynamic_ncols=True)
  for what in bar:
    bar.set_description(f"analyze {what} (PGD-{settings['num_steps']}, {settings['norm']} eps "
                        f"{settings['eps']:g})" if what != "gap" else "analyze gap")
    if what == "landscape":
      data, split = batches("test")
      reports.landscape_report({name: tm}, data, out, dims=int(_DIMS.value),
                               num_points=_POINTS.value, span=_SPAN.value,
                               one_dim=_ONE_DIM.value, seed=_SEED.value, attack=attack,
                               split=split)
    elif what == "hessian":
      data, split = batches("train")
      r = reports.hessian_report({name: tm}, data, out, topk=_TOPK.value,
                                 seed=_SEED.value, max_iters=_ITERS.value, tol=_TOL.value,
                                 attack=attack, split=split)
      bar.write(f"top Hessian eigenvalues ({split} split, PGD-{settings['num_steps']} examples): "
                f"{[round(e, 4) for e in r['eigenvalues'][name]]}", file=sys.stdout)
    elif what == "similarity":
      data, split = batches("train")
      reports.similarity_report({name: tm}, data, out,
                                alphas=[float(a) for a in _ALPHAS.value], seed=_SEED.value,
                                max_iters=_ITERS.value, tol=_TOL.value,
                                independent_starts=_INDEPENDENT.value, attack=attack,
                                split=split)
    elif what == "fosc":
      data, split = batches("test")
      reports.fosc_report({name: tm}, data, out, seed=_SEED.value, attack=attack, split=split)
    elif what == "gap":
      reports.gap_report({name: tm.workdir}, out)
    elif what == "transfer":
      if _SGM.value is not None:
        try:
          reports.check_sgm_gamma(tm.model, _SGM.value)
        except ValueError as e:
          raise _cli.UsageError(f"--{e}") from e
      targets = {os.path.basename(os.path.normpath(t)): restore.load_trained(t, which=_WHICH.value)
                 for t in _TARGETS.value}
      data, split = batches("test")
      r = reports.transfer_report(tm, targets, data, out, seed=_SEED.value, attack=attack,
                                  sgm_gamma=_SGM.value, split=split)
      for row in r["rows"]:
        bar.write(f"transfer gamma {row['gamma']:g} -> {row['target']}: clean "
                  f"{row['target_clean_acc']:.3f}, on transferred "
                  f"{row['target_acc_on_transferred']:.3f}", file=sys.stdout)
    elif what == "sammd":
      data, split = batches("test")
      kernel_data = reports.analysis_batches(tm.config, split="train",
                                             num_examples=_NUM_EXAMPLES.value,
                                             batch_size=_BATCH.value)
      try:
        r = reports.sammd_report(tm, kernel_data, data, out, layer=_SAMMD_LAYER.value,
                                 n=_SAMMD_N.value, num_tests=_SAMMD_TESTS.value,
                                 kernel_steps=_KERNEL_STEPS.value, seed=_SEED.value,
                                 attack=attack, split=split)
      except ValueError as e:
        raise _cli.UsageError(f"--what=sammd: {e}") from e
      bar.write(f"SAMMD ({_SAMMD_LAYER.value}): power {r['power']:.2f}, type-I error "
                f"{r['type_i_error']:.2f}", file=sys.stdout)
    bar.write(f"{what}: written to {out}", file=sys.stdout)
  bar.close()


if __name__ == "__main__":
  _cli.run(main, "launch.analyze")
