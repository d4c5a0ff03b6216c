r"""Speed of the real training steps and of the attacks: compile time, step time, examples/s, memory.

  python -m launch.benchmark                               # the default subset, a table on stdout
  python -m launch.benchmark --models=small_cnn --methods=standard,pgd_at --batch=64 --json
  python -m launch.benchmark --torch_python=/work/torchvenv/bin/python --write_markdown=BENCHMARKS.md
  python -m launch.benchmark --models= --gans --json > gans.jsonl     # the GAN steps alone
  python -m launch.benchmark --models= --foolbox_python=/work/foolboxvenv/bin/python --json

Flags -> :func:`robust_jax.benchmarking.run` (the package docstring says what each measurement is:
the library's ``make_train_step`` compiled ahead of time on a synthetic batch, the attacks alone,
the PyTorch comparison). Methods are ``method[+weight_perturbation][@field=value...]`` (``pgd_at``,
``pgd_at+awp``, ``dart@fosc_c_max=2``); attacks are ``fwd_bwd``, ``pgd10``, ``pgd20``,
``pgd10_unrolled``, ``pgd10_default_vjp``, ``pgd10_fat``, ``pgd10_fat_compact``, ``pgd10_fosc``,
``apgd_ce`` and ``autoattack``. ``--torch_python`` (a Python with ``torch``) adds the PyTorch
comparison, run by ``launch/benchmark_torch.py``. ``--foolbox_python`` (a Python with foolbox
3.3.4, in its own virtual environment) adds the library's attacks against foolbox's on the same JAX
model and batch, alternated (:mod:`robust_jax.benchmarking.foolbox_worker`; ``--foolbox_attacks``,
``--foolbox_batch``, ``--foolbox_rounds``). ``--gans`` adds the GAN training steps (each
kind of ``--gan_kinds`` on each image size of ``--gan_datasets``, the kinds alternated in
``--gan_rounds`` rounds, with the WGAN-GP / WGAN ratios; :mod:`robust_jax.benchmarking.gans`); it
is off by default, so the default run measures what it always did (the published-width MNIST-5k
GAN steps take seconds each on a CPU). ``--compaction_models=small_cnn,mlp`` adds FAT's and Dynamic AT's steps with and without per-device
compaction on 8 host devices and 1 (:mod:`robust_jax.benchmarking.compaction`).
``--aa_official_python`` (a Python with torch and fra31/auto-attack) with ``--aa_official_workdir``
(a trained ``small_cnn``) adds AutoAttack standard against the official code on the same model and
images (:mod:`robust_jax.benchmarking.autoattack_official`). ``--write_markdown`` regenerates BENCHMARKS.md (never edit it
by hand), ``--from_jsonl`` re-renders it from earlier ``--json`` runs (comma-separated: records
merged, e.g. a full run and a GAN-only one).
"""

from __future__ import annotations

import os
import shlex
import sys
import warnings

from absl import app, flags

import launch  # noqa: F401  (XLA CPU flags, before JAX starts)
from robust_jax import benchmarking

TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark_torch.py")

_MODELS = flags.DEFINE_list("models", list(benchmarking.DEFAULT_MODELS), "Models of the registry.")
_METHODS = flags.DEFINE_list(
    "methods", None, "Method variants, method[+weight_perturbation][@field=value...]; default: "
    "each model's subset (all light methods; standard,pgd_at for the WideResNets).")
_ATTACKS = flags.DEFINE_list("attacks", None, f"Attacks alone, from {benchmarking.ATTACKS}; "
                             "default: each model's subset; empty string: none.")
_BATCH = flags.DEFINE_integer("batch", 0, "Batch size; 0: each model's default (mlp, small_cnn "
                              "128; ResNets 32; WideResNets 8).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (the median is kept).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed calls after the first one.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON line per measurement.")
_MARKDOWN = flags.DEFINE_string("write_markdown", None, "Write the tables to this file.")
_TORCH = flags.DEFINE_string("torch_python", "",
                             "A Python with torch: adds the PyTorch comparison.")
_TORCH_ROUNDS = flags.DEFINE_integer("torch_rounds", 3, "Alternation rounds of the comparison.")
_TORCH_MODELS = flags.DEFINE_list(
    "torch_models", list(benchmarking.TORCH_MODELS),
    f"Models of the PyTorch comparison, from {benchmarking.TORCH_MODELS}.")
_TORCH_STEPS = flags.DEFINE_integer("torch_steps", 3, "Timed steps per implementation and round.")
_APGD_ITER = flags.DEFINE_integer("apgd_iter", 100, "APGD-CE iterations.")
_AA_ITER = flags.DEFINE_integer("aa_n_iter", 10, "AutoAttack: APGD/FAB iterations.")
_AA_QUERIES = flags.DEFINE_integer("aa_n_queries", 100, "AutoAttack: Square queries.")
_FOSC_C = flags.DEFINE_float("fosc_c", 0.5, "FOSC threshold of the pgd10_fosc attack.")
_FOOLBOX = flags.DEFINE_string(
    "foolbox_python", "", "A Python with foolbox (its own venv): adds the foolbox comparison.")
_FOOLBOX_ATTACKS = flags.DEFINE_list(
    "foolbox_attacks", list(benchmarking.FOOLBOX_ATTACKS),
    f"Attacks of the foolbox comparison, from {benchmarking.FOOLBOX_ATTACKS}.")
_FOOLBOX_BATCH = flags.DEFINE_integer("foolbox_batch", 128,
                                      "MNIST-5k test images attacked in the foolbox comparison.")
_FOOLBOX_ROUNDS = flags.DEFINE_integer("foolbox_rounds", 3,
                                       "Alternation rounds of the foolbox comparison.")
_FOOLBOX_MIN_S = flags.DEFINE_float("foolbox_min_time_s", 1.0, "Foolbox comparison: each side's "
                                    "calls in a round add up to at least this many seconds.")
_AA_PYTHON = flags.DEFINE_string(
    "aa_official_python", "", "A Python with torch and fra31/auto-attack: with "
    "--aa_official_workdir adds AutoAttack standard against the official code on the same model.")
_AA_WORKDIR = flags.DEFINE_string(
    "aa_official_workdir", "", "A trained small_cnn workdir (e.g. launch.train "
    "--config=launch/configs/mnist5k.py:pgd_at,cpu) for the official AutoAttack comparison.")
_AA_N = flags.DEFINE_integer("aa_official_n", 100, "Test images of the AutoAttack comparison.")
_AA_ROUNDS = flags.DEFINE_integer("aa_official_rounds", 1,
                                  "Alternated rounds of the AutoAttack comparison.")
_COMPACTION = flags.DEFINE_list(
    "compaction_models", [], "Models for FAT's and Dynamic AT's steps with and without "
    "per-device compaction on 8 host devices and 1 (e.g. small_cnn,mlp); empty: not measured.")
_GANS = flags.DEFINE_bool("gans", False, "Add the GAN training steps (off by default).")
_GAN_KINDS = flags.DEFINE_list("gan_kinds", list(benchmarking.GAN_KINDS),
                               "GAN kinds timed with --gans.")
_GAN_DATASETS = flags.DEFINE_list("gan_datasets", list(benchmarking.GAN_DATASETS),
                                  "Image sizes of the GAN steps (digits 8x8, mnist5k 28x28).")
_GAN_CPU = flags.DEFINE_bool("gan_cpu", False, "The GANs at the reproduction's CPU widths "
                             "(launch/configs/gan.py:<kind>,cpu) instead of the published ones.")
_GAN_ROUNDS = flags.DEFINE_integer("gan_rounds", benchmarking.gans.DEFAULT_ROUNDS,
                                   "Alternation rounds of the GAN steps.")
_FROM_JSONL = flags.DEFINE_string(
    "from_jsonl", None, "Measure nothing: re-render --write_markdown from the JSON lines (with "
    "their final 'meta' line) that earlier --json runs printed (comma-separated: merged, the "
    "first run's machine and command on top).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  warnings.filterwarnings("ignore", message=".*donated buffers.*")
  if _FROM_JSONL.value:
    if not _MARKDOWN.value:
      raise app.UsageError("--from_jsonl needs --write_markdown")
    benchmarking.rerender(_FROM_JSONL.value, _MARKDOWN.value)
    return
  try:  # before anything is measured
    benchmarking.check_gan_names(_GAN_KINDS.value, _GAN_DATASETS.value)
    if _AA_PYTHON.value or _AA_WORKDIR.value:
      benchmarking.autoattack_official.check_arguments(_AA_PYTHON.value, _AA_WORKDIR.value,
                                                       _AA_N.value)
    if _COMPACTION.value:
      benchmarking.compaction.check_models(_COMPACTION.value)
    if _FOOLBOX.value:
      benchmarking.check_foolbox_python(_FOOLBOX.value)
      benchmarking.check_foolbox_attack_names(_FOOLBOX_ATTACKS.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  attack_names = _ATTACKS.value
  if attack_names is not None:
    attack_names = [a for a in attack_names if a]
  benchmarking.run(
      model_names=_MODELS.value, methods=_METHODS.value, attack_names=attack_names,
      batch=_BATCH.value, repeats=_REPEATS.value, warmup=_WARMUP.value,
      options={"apgd_iter": _APGD_ITER.value, "aa_n_iter": _AA_ITER.value,
               "aa_n_queries": _AA_QUERIES.value, "fosc_c": _FOSC_C.value},
      torch_python=_TORCH.value, torch_script=TORCH_SCRIPT, torch_models=_TORCH_MODELS.value,
      torch_rounds=_TORCH_ROUNDS.value, torch_steps=_TORCH_STEPS.value, json_lines=_JSON.value,
      markdown_path=_MARKDOWN.value, gan_kinds=_GAN_KINDS.value if _GANS.value else (),
      gan_datasets=_GAN_DATASETS.value, gan_cpu=_GAN_CPU.value, gan_rounds=_GAN_ROUNDS.value,
      foolbox_python=_FOOLBOX.value, foolbox_attacks=_FOOLBOX_ATTACKS.value,
      foolbox_batch=_FOOLBOX_BATCH.value, foolbox_rounds=_FOOLBOX_ROUNDS.value,
      foolbox_min_time_s=_FOOLBOX_MIN_S.value, aa_official_python=_AA_PYTHON.value,
      aa_official_workdir=_AA_WORKDIR.value, aa_official_n=_AA_N.value,
      aa_official_rounds=_AA_ROUNDS.value, compaction_models=_COMPACTION.value,
      command="python -m launch.benchmark " + " ".join(shlex.quote(a) for a in sys.argv[1:]))


if __name__ == "__main__":
  app.run(main)
