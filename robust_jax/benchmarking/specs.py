"""What the benchmark measures: the models' synthetic shapes, the method variants, the attacks.

A method variant is ``method[+weight_perturbation][@field=value...]``: a method of the registry,
optionally a weight adversary and any overrides of ``base_config()`` (``pgd_at``, ``pgd_at+awp``,
``dart@fosc_c_max=0``); :func:`make_config` turns it into a config. The attack names are those of
:data:`ATTACKS` (:mod:`robust_jax.benchmarking` describes each). Every model of the registry can be
measured; those not in :data:`MODEL_SPECS` get CIFAR shapes and batch 32.

Example:

>>> c = make_config("small_cnn", "trades+awp@beta=1.5", 16)
>>> (c.method, c.weight_perturbation, c.beta, c.batch_size, c.num_steps)
('trades', 'awp', 1.5, 16, 10)
>>> spec_for("small_cnn").image_shape, spec_for("a_new_model").batch
((28, 28, 1), 32)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

import jax.numpy as jnp
import ml_collections

from robust_jax.training import config as config_lib
from robust_jax.training import loop as loop_lib
from robust_jax.training import state as state_lib

# Synthetic input shapes and attack budgets (linf eps, PGD step) of the two image families.
_CIFAR = dict(image_shape=(32, 32, 3), eps=8 / 255, step_size=2 / 255)
_MNIST = dict(image_shape=(28, 28, 1), eps=0.3, step_size=0.075)

FAST = "@train_diagnostics=false"  # K gradient evaluations for PGD-K, no clean-batch metrics
LIGHT_METHODS = ("standard", "standard" + FAST, "pgd_at", "pgd_at" + FAST, "pgd_at+awp", "trades",
                 "mart", "dart", "dart@fosc_c_max=0", "fat", "fat@attack_compaction=0", "fgsm_at",
                 "gradalign", "elle")
RESNET_METHODS = ("standard", "pgd_at", "pgd_at" + FAST, "pgd_at+awp", "trades", "dart", "fat",
                  "fat@attack_compaction=0", "fgsm_at", "gradalign", "elle")
HEAVY_METHODS = ("standard", "pgd_at", "pgd_at" + FAST)
# Memory for wide networks: PGD-10 AT with and without rematerialised residual blocks.
REMAT_METHODS = ("pgd_at" + FAST, "pgd_at" + FAST + "@remat=true")
LIGHT_ATTACKS = ("fwd_bwd", "pgd10", "pgd10_unrolled", "pgd10_default_vjp", "pgd20", "pgd10_fat",
                 "pgd10_fat_compact",
                 "pgd10_fosc", "apgd_ce", "autoattack")
RESNET_ATTACKS = ("fwd_bwd", "pgd10", "pgd10_unrolled", "pgd10_default_vjp", "pgd10_fat",
                  "pgd10_fat_compact")
HEAVY_ATTACKS = ("fwd_bwd", "pgd10")
# The user's model (plain linen SmallCNN, robust_jax.benchmarking.user_models) without and with
# robust_jax.models.fast: for small_cnn only, beside the library model's pgd10 and apgd_ce.
# Each row: (the attack of the library model's row it repeats, whether through models.fast).
LINEN_ATTACKS = {"pgd10_linen": ("pgd10", False), "pgd10_linen_fast": ("pgd10", True),
                 "apgd_ce_linen": ("apgd_ce", False), "apgd_ce_linen_fast": ("apgd_ce", True)}
ATTACKS = ("fwd_bwd", "pgd10", "pgd20", "pgd10_unrolled", "pgd10_default_vjp", "pgd10_fat",
           "pgd10_fat_compact",
           "pgd10_fosc", "apgd_ce", "autoattack") + tuple(LINEN_ATTACKS)
# Attacks that cost many forward+backward passes: at most 2 timed calls, no extra warm-up.
EXPENSIVE_ATTACKS = ("pgd10_default_vjp", "apgd_ce", "autoattack", "apgd_ce_linen",
                     "apgd_ce_linen_fast")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Synthetic input shape, attack budget and the default batch / methods / attacks of a model.

  Attributes:
    image_shape: (H, W, C) of the synthetic images.
    eps: linf radius of the attacks and of the training attack.
    step_size: PGD step.
    batch: the default batch size.
    methods: the method variants measured by default (see :func:`make_config`).
    attacks: the attacks measured by default (:data:`ATTACKS`).
  """
  image_shape: tuple
  eps: float
  step_size: float
  batch: int
  methods: tuple = LIGHT_METHODS
  attacks: tuple = LIGHT_ATTACKS


MODEL_SPECS: Dict[str, ModelSpec] = {
    "mlp": ModelSpec((8, 8, 1), 0.2, 0.05, 128),
    "small_cnn": ModelSpec(**_MNIST, batch=128, attacks=LIGHT_ATTACKS + tuple(LINEN_ATTACKS)),
    "cnn4": ModelSpec(**_MNIST, batch=128),
    "cnn8": ModelSpec(**_CIFAR, batch=128),
    "preact_resnet18": ModelSpec(**_CIFAR, batch=32, methods=RESNET_METHODS,
                                 attacks=RESNET_ATTACKS),
    "resnet18": ModelSpec(**_CIFAR, batch=32, methods=RESNET_METHODS, attacks=RESNET_ATTACKS),
    "wrn28_10": ModelSpec(**_CIFAR, batch=8, methods=HEAVY_METHODS, attacks=HEAVY_ATTACKS),
    "wrn32_10": ModelSpec(**_CIFAR, batch=8, methods=HEAVY_METHODS, attacks=HEAVY_ATTACKS),
    "wrn34_10": ModelSpec(**_CIFAR, batch=8, methods=HEAVY_METHODS + REMAT_METHODS[1:],
                          attacks=HEAVY_ATTACKS),
    # Not a default model: ``--models=wrn34_10,wrn70_16 --methods=<REMAT_METHODS>`` gives the
    # remat rows (peak memory and step time with and without rematerialised blocks).
    "wrn70_16": ModelSpec(**_CIFAR, batch=2, methods=REMAT_METHODS, attacks=()),
}
DEFAULT_MODELS = ("mlp", "small_cnn", "preact_resnet18", "wrn34_10")
STEPS_PER_EPOCH = 100
MIN_TIME_S = 2.0  # fast measurements repeat until their timed calls add up to this
NUM_STEPS = 10
# Labels shared by the measurements, the ratios and the markdown.
ALTERNATED_WHILE = "while_loop PGD-10 / unrolled PGD-10, alternated in 5 rounds"
LINEN_FAST_LABEL = ("PGD-10 on a plain-linen SmallCNN through models.fast / on the library's "
                    "SmallCNN, alternated in 5 rounds")
LINEN_PLAIN_LABEL = ("PGD-10 on a plain-linen SmallCNN as written / through models.fast, "
                     "alternated in 5 rounds")
ALTERNATED_LABELS = (ALTERNATED_WHILE, LINEN_FAST_LABEL, LINEN_PLAIN_LABEL)
LIB_LABEL = "JAX, library step (make_train_step)"
LIB_FAST_LABEL = "JAX, library step, train_diagnostics=False (same work as PyTorch)"
MIN_LABEL = "JAX, minimal step (same work as PyTorch)"
# The malloc tuning of the "malloc tuned" PyTorch variants.
GLIBC_TUNABLES = ("glibc.malloc.mmap_threshold=33554432:"
                  "glibc.malloc.trim_threshold=68719476736")
TORCH_MODELS = ("small_cnn", "preact_resnet18")  # the models launch/benchmark_torch.py has
# Every training-step and attack record has these keys.
REQUIRED_KEYS = ("name", "kind", "model", "batch", "method", "compile_s", "step_ms",
                 "examples_per_s", "peak_mem_mb", "device")


def _parse_value(text: str, like: Any):
  """``text`` as the type of the config field's current value ``like`` (tuples: ``a:b:c``)."""
  if isinstance(like, bool):
    return text.lower() in ("1", "true", "yes")
  if isinstance(like, int):
    return int(text)
  if isinstance(like, float):
    return float(text)
  if isinstance(like, tuple):
    return tuple(type(like[0])(v) if like else float(v) for v in text.split(":") if v)
  return text


def make_config(model_name: str, variant: str, batch: int) -> ml_collections.ConfigDict:
  """``base_config()`` for ``model_name`` and the method variant ``method[+wp][@field=value...]``.

  Args:
    model_name: a model of the registry (its :func:`spec_for` gives eps and the PGD step).
    variant: a method of the registry, optionally ``+`` a weight perturbation and any number of
      ``@field=value`` overrides of ``base_config()`` fields (``trades+awp@beta=1.5``).
    batch: the batch size.

  Returns:
    A validated config: 10 epochs, constant learning rate 0.01, PGD-10 (:data:`NUM_STEPS`).

  Raises:
    ValueError: if the config does not validate (e.g. an unknown method).
  """
  spec = spec_for(model_name)
  c = config_lib.base_config()
  head, *assigns = variant.split("@")
  method, *wps = head.split("+")
  c.model, c.method, c.batch_size = model_name, method, batch
  c.eps, c.step_size, c.num_steps = spec.eps, spec.step_size, NUM_STEPS
  # Many steps on one fixed batch: a small constant learning rate keeps every method finite.
  c.num_epochs, c.progress = 10, False
  c.learning_rate, c.lr_schedule = 0.01, "constant"
  if wps:
    c.weight_perturbation = wps[0]
  for a in assigns:
    k, v = a.split("=", 1)
    setattr(c, k, _parse_value(v, c[k]))
  config_lib.validate(c)
  return c


def new_state(config, model, tx, image_shape) -> state_lib.TrainState:
  """The initial train state of a measured step (with the method's part states, as the loop's)."""
  state = state_lib.create(model=model, tx=tx, sample_input=jnp.zeros((1,) + tuple(image_shape)),
                           seed=config.seed)
  return state.replace(parts=loop_lib.initial_parts(config, state.params))


def spec_for(model_name: str) -> ModelSpec:
  """The :class:`ModelSpec` of a model (CIFAR shapes and batch 32 for one not in MODEL_SPECS)."""
  return MODEL_SPECS.get(model_name, ModelSpec(**_CIFAR, batch=32))


def model_order(name: str) -> int:
  """Sort key of model names: the default models first, then the others alphabetically."""
  order = list(DEFAULT_MODELS) + sorted(MODEL_SPECS)
  return order.index(name) if name in order else len(order)
