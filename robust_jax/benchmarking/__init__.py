r"""Speed of the real training steps and of the attacks: compile time, step time, examples/s, memory.

What ``python -m launch.benchmark`` runs (:func:`run`). Every training step is the library's own:
``robust_jax.training.step.make_train_step`` on a ``base_config()`` with per-model and per-method
overrides, jitted with the state donated, compiled ahead of time (``compile_s`` = trace + lower +
compile), then run on one fixed synthetic batch: ``warmup`` untimed calls, then ``repeats`` timed
calls (``jax.block_until_ready``), whose median is ``step_ms``. Calling the AOT-compiled step with
the state it returned also proves that the step does not need a second compilation (a changed
input type would raise). ``peak_mem_mb`` is the process's peak resident set during that measurement
(``/proc/self/clear_refs`` resets the high-water mark, read back by ``resource.getrusage``; it
includes the JAX runtime and every live buffer) or, on an accelerator,
``device.memory_stats()["peak_bytes_in_use"]``; ``xla_temp_mb`` is XLA's scratch memory of the
program (``compiled.memory_analysis()``).

Methods are names of the method registry, optionally with a weight adversary and config overrides:
``pgd_at``, ``pgd_at+awp``, ``trades+awp``, ``standard+sam``, ``dart@fosc_c_max=2`` (``@field=value``
sets any ``base_config()`` field). Attacks alone (eval mode, labels = the model's own predictions so
that every example starts correctly classified):

========================= ====================================================================
``fwd_bwd``               one forward + backward pass to the input (the attack's unit of work)
``pgd10``, ``pgd20``      the library's PGD (``lax.while_loop``), uniform start
``pgd10_unrolled``        the same 10 steps (and the same K + 1 = 11 gradient evaluations) as a
                          Python-unrolled loop
``pgd10_default_vjp``     ``pgd10`` against the model built with ``conv_vjp="jax"``: JAX's own
                          convolution gradient instead of the custom VJP of
                          ``robust_jax.models.kernels`` (conv models only; slow on CPU)
``pgd10_fat``             PGD-10 with FAT's early stop, tau = 0 (stops at the first misclassified
                          iterate), every other label off by one (half the batch starts
                          misclassified); ``steps_mean`` / ``steps_max`` show the work saved
``pgd10_fat_compact``     the same with ``compaction=3`` (the batch halves as examples stop): the
                          saved steps become saved time
``pgd10_fosc``            PGD-10 with Dynamic AT's FOSC stop, c = ``fosc_c``
``apgd_ce``               APGD-CE, ``apgd_iter`` iterations, full budget (``early_stop=False``)
``pgd10_linen``,          ``pgd10`` / ``apgd_ce`` on a user's model (small_cnn only): SmallCNN
``apgd_ce_linen``         written with plain ``nn.Conv`` / ``nn.max_pool`` (its own initialisation,
                          :mod:`robust_jax.benchmarking.user_models`), as written
``*_linen_fast``          the same through :func:`robust_jax.models.fast` (the library's kernels)
``autoattack``            AutoAttack ``standard`` with ``aa_n_iter`` iterations and
                          ``aa_n_queries`` Square queries (not jittable: ``compile_s`` = first call
                          minus a steady call)
========================= ====================================================================

The PyTorch comparison (a Python with ``torch``; optional, outside the core install) adds the TRADES
SmallCNN and PreActResNet-18 PGD-10 AT steps in PyTorch eager (``launch/benchmark_torch.py``), with
and without ``channels_last`` and glibc malloc tuning, measured alternately with the JAX steps in
the same session. The foolbox comparison (a Python with foolbox 3.3.4, in its own virtual
environment; optional) times the library's FGSM, PGD and minimum-norm attacks (CW-L2, DDN, FMN,
DeepFool) against foolbox's on the same JAX model (Wong et al.'s MNIST network, parameters passed as
``.npz``, logits checked equal) and MNIST-5k batch, alternated, with each side's robust accuracy or
median norm (:mod:`robust_jax.benchmarking.foolbox_worker`). The GAN training steps (``gan_kinds``;
off by default) time each kind of :mod:`robust_jax.games` as its trainer compiles it, on digits and
MNIST-5k shapes, alternating the kinds, with the WGAN-GP / WGAN step and critic-update ratios
(:mod:`robust_jax.benchmarking.gans`). BENCHMARKS.md is always generated, never edited by hand.

Modules:
  specs           what is measured: model shapes and budgets, method variants, attacks, labels.
  timing          clocks, peak memory, synthetic batches, the machine.
  measure         one training step, or one attack alone.
  gans            the GAN training steps, alternated, and the WGAN-GP / WGAN ratios.
  torch_worker    the PyTorch worker process and the alternating JAX / PyTorch session.
  foolbox_worker  the foolbox worker process and the alternating library / foolbox attacks.
  foolbox_script  the worker itself (runs in foolbox's venv; the attacks compared, the model).
  ratios          step-time ratios from the same run.
  report          BENCHMARKS.md, the findings, the console lines, reading JSON lines back.
  runs            a whole session: :func:`run`, :func:`run_benchmarks`, :func:`rerender`.
  compaction      FAT / Dynamic AT with and without per-device compaction on 8 host devices and 1.
  autoattack_official  AutoAttack standard against fra31/auto-attack (PyTorch) on the same model.
  user_models     a user's plain-linen SmallCNN (the ``*_linen`` attack rows).
"""

from robust_jax.benchmarking import (autoattack_official, compaction, foolbox_script,
                                     foolbox_worker, gans, measure, ratios, report, runs, specs,
                                     timing, torch_worker, user_models)
from robust_jax.benchmarking.foolbox_worker import (FOOLBOX_ATTACKS, FoolboxWorker,
                                                    check_foolbox_attack_names,
                                                    check_foolbox_python, foolbox_comparison)
from robust_jax.benchmarking.gans import (GAN_DATASETS, GAN_KINDS, GAN_RATIOS, GANContender,
                                          bench_gans, check_gan_names)
from robust_jax.benchmarking.measure import bench_attack, bench_train_step
from robust_jax.benchmarking.ratios import compute_ratios
from robust_jax.benchmarking.report import (ATTACK_HEADERS, EARLY_HEADERS, FOOLBOX_HEADERS,
                                            GAN_HEADERS, GAN_RATIO_HEADERS, RATIO_HEADERS,
                                            TORCH_HEADERS, TRAIN_HEADERS, WHILE_HEADERS, findings,
                                            read_jsonl, render_markdown)
from robust_jax.benchmarking.runs import alternate, rerender, run, run_benchmarks
from robust_jax.benchmarking.specs import (ATTACKS, DEFAULT_MODELS, LIB_FAST_LABEL, LIB_LABEL,
                                           MIN_LABEL, MODEL_SPECS, REQUIRED_KEYS, TORCH_MODELS,
                                           ModelSpec, make_config)
from robust_jax.benchmarking.timing import machine_info, synthetic_batch
from robust_jax.benchmarking.torch_worker import TorchWorker, torch_comparison

__all__ = [
    "ATTACKS", "ATTACK_HEADERS", "DEFAULT_MODELS", "EARLY_HEADERS", "FOOLBOX_ATTACKS",
    "FOOLBOX_HEADERS", "FoolboxWorker", "GANContender", "GAN_DATASETS",
    "GAN_HEADERS", "GAN_KINDS", "GAN_RATIOS", "GAN_RATIO_HEADERS", "LIB_FAST_LABEL", "LIB_LABEL",
    "MIN_LABEL", "MODEL_SPECS", "ModelSpec", "RATIO_HEADERS", "REQUIRED_KEYS", "TORCH_HEADERS",
    "TORCH_MODELS", "TRAIN_HEADERS", "TorchWorker", "WHILE_HEADERS", "alternate",
    "bench_attack", "bench_gans", "bench_train_step", "check_foolbox_attack_names",
    "check_foolbox_python", "check_gan_names", "compute_ratios", "findings", "foolbox_comparison",
    "foolbox_script", "foolbox_worker", "gans", "machine_info", "make_config",
    "measure", "ratios", "read_jsonl", "render_markdown", "report", "rerender", "run",
    "run_benchmarks", "runs", "specs", "synthetic_batch", "timing", "torch_comparison",
    "torch_worker",
]
