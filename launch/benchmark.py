r"""Speed of the real training steps and of the attacks: compile time, step time, examples/s, memory.

  python -m launch.benchmark                               # the default subset, a table on stdout
  python -m launch.benchmark --models=small_cnn --methods=standard,pgd_at --batch=64 --json
  python -m launch.benchmark --torch_python=/work/torchvenv/bin/python --write_markdown=BENCHMARKS.md

Every training step is the library's own: ``robust_jax.training.step.make_train_step`` on a
``base_config()`` with per-model and per-method overrides, jitted with the state donated, compiled
ahead of time (``compile_s`` = trace + lower + compile), then run on one fixed synthetic batch:
``warmup`` untimed calls, then ``repeats`` timed calls (``jax.block_until_ready``), whose median is
``step_ms``. Calling the AOT-compiled step with the state it returned also proves that the step does
not need a second compilation (a changed input type would raise). ``peak_mem_mb`` is the process's
peak resident set during that measurement (``/proc/self/clear_refs`` resets the high-water mark, read
back by ``resource.getrusage``; it includes the JAX runtime and every live buffer) or, on an
accelerator, ``device.memory_stats()["peak_bytes_in_use"]``; ``xla_temp_mb`` is XLA's scratch memory
of the program (``compiled.memory_analysis()``).

Methods are names of the method registry, optionally with a weight adversary and config overrides:
``pgd_at``, ``pgd_at+awp``, ``trades+awp``, ``standard+sam``, ``dart@fosc_c_max=2`` (``@field=value``
sets any ``base_config()`` field). Attacks alone (eval mode, labels = the model's own predictions so
that every example starts correctly classified):

========================= ====================================================================
``fwd_bwd``               one forward + backward pass to the input (the attack's unit of work)
``pgd10``, ``pgd20``      the library's PGD (``lax.while_loop``), uniform start
``pgd10_unrolled``        the same 10 steps (and the same K + 1 = 11 gradient evaluations) as a
                          Python-unrolled loop
``pgd10_default_vjp``     ``pgd10`` with JAX's own convolution gradient instead of the custom VJP of
                          ``robust_jax.models.layers`` (conv models only; slow on CPU)
``pgd10_fat``             PGD-10 with FAT's early stop, tau = 0 (stops at the first misclassified
                          iterate), every other label off by one (half the batch starts
                          misclassified); ``steps_mean`` / ``steps_max`` show the work saved
``pgd10_fat_compact``     the same with ``compaction=3`` (the batch halves as examples stop): the
                          saved steps become saved time
``pgd10_fosc``            PGD-10 with Dynamic AT's FOSC stop, c = ``--fosc_c``
``apgd_ce``               APGD-CE, ``--apgd_iter`` iterations, full budget (``early_stop=False``)
``autoattack``            AutoAttack ``standard`` with ``--aa_n_iter`` iterations and
                          ``--aa_n_queries`` Square queries (not jittable: ``compile_s`` = first call
                          minus a steady call)
========================= ====================================================================

``--torch_python`` (a Python with ``torch``; optional, outside the core install) adds the TRADES
SmallCNN and PreActResNet-18 PGD-10 AT steps in PyTorch eager (``launch/benchmark_torch.py``;
``--torch_models`` selects), with and without
``channels_last`` and glibc malloc tuning, measured alternately with the JAX steps in this session.
``--write_markdown`` regenerates BENCHMARKS.md (never edit it by hand).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence

from absl import app, flags

import launch  # noqa: F401  (XLA CPU flags, before JAX starts)
import jax
import jax.numpy as jnp
import numpy as np
import optax

from robust_jax import attacks, models
from robust_jax.attacks import losses
from robust_jax.models import layers
from robust_jax.training import config as config_lib
from robust_jax.training import loop as loop_lib
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib

# --------------------------------------------------------------------------------------------------
# What is measured by default.

_CIFAR = dict(image_shape=(32, 32, 3), eps=8 / 255, step_size=2 / 255)
_MNIST = dict(image_shape=(28, 28, 1), eps=0.3, step_size=0.075)

FAST = "@train_diagnostics=false"  # K gradient evaluations for PGD-K, no clean-batch metrics
LIGHT_METHODS = ("standard", "standard" + FAST, "pgd_at", "pgd_at" + FAST, "pgd_at+awp", "trades",
                 "mart", "dart", "dart@fosc_c_max=0", "fat", "fat@attack_compaction=0", "fgsm_at",
                 "gradalign", "elle")
RESNET_METHODS = ("standard", "pgd_at", "pgd_at" + FAST, "pgd_at+awp", "trades", "dart", "fat",
                  "fat@attack_compaction=0", "fgsm_at", "gradalign", "elle")
HEAVY_METHODS = ("standard", "pgd_at", "pgd_at" + FAST)
LIGHT_ATTACKS = ("fwd_bwd", "pgd10", "pgd10_unrolled", "pgd10_default_vjp", "pgd20", "pgd10_fat",
                 "pgd10_fat_compact",
                 "pgd10_fosc", "apgd_ce", "autoattack")
RESNET_ATTACKS = ("fwd_bwd", "pgd10", "pgd10_unrolled", "pgd10_default_vjp", "pgd10_fat",
                  "pgd10_fat_compact")
HEAVY_ATTACKS = ("fwd_bwd", "pgd10")
ATTACKS = ("fwd_bwd", "pgd10", "pgd20", "pgd10_unrolled", "pgd10_default_vjp", "pgd10_fat",
           "pgd10_fat_compact",
           "pgd10_fosc", "apgd_ce", "autoattack")
# Attacks that cost many forward+backward passes: at most 2 timed calls, no extra warm-up.
EXPENSIVE_ATTACKS = ("pgd10_default_vjp", "apgd_ce", "autoattack")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Synthetic input shape, attack budget and the default batch / methods / attacks of a model."""
  image_shape: tuple
  eps: float
  step_size: float
  batch: int
  methods: tuple = LIGHT_METHODS
  attacks: tuple = LIGHT_ATTACKS


MODEL_SPECS: Dict[str, ModelSpec] = {
    "mlp": ModelSpec((8, 8, 1), 0.2, 0.05, 128),
    "small_cnn": ModelSpec(**_MNIST, batch=128),
    "cnn4": ModelSpec(**_MNIST, batch=128),
    "cnn8": ModelSpec(**_CIFAR, batch=128),
    "preact_resnet18": ModelSpec(**_CIFAR, batch=32, methods=RESNET_METHODS,
                                 attacks=RESNET_ATTACKS),
    "resnet18": ModelSpec(**_CIFAR, batch=32, methods=RESNET_METHODS, attacks=RESNET_ATTACKS),
    "wrn28_10": ModelSpec(**_CIFAR, batch=8, methods=HEAVY_METHODS, attacks=HEAVY_ATTACKS),
    "wrn32_10": ModelSpec(**_CIFAR, batch=8, methods=HEAVY_METHODS, attacks=HEAVY_ATTACKS),
    "wrn34_10": ModelSpec(**_CIFAR, batch=8, methods=HEAVY_METHODS, attacks=HEAVY_ATTACKS),
}
DEFAULT_MODELS = ("mlp", "small_cnn", "preact_resnet18", "wrn34_10")
STEPS_PER_EPOCH = 100
MIN_TIME_S = 2.0  # fast measurements repeat until their timed calls add up to this
NUM_STEPS = 10
ALTERNATED_WHILE = "while_loop PGD-10 / unrolled PGD-10, alternated in 5 rounds"
LIB_LABEL = "JAX, library step (make_train_step)"
LIB_FAST_LABEL = "JAX, library step, train_diagnostics=False (same work as PyTorch)"
MIN_LABEL = "JAX, minimal step (same work as PyTorch)"
GLIBC_TUNABLES = ("glibc.malloc.mmap_threshold=33554432:"
                  "glibc.malloc.trim_threshold=68719476736")
REQUIRED_KEYS = ("name", "kind", "model", "batch", "method", "compile_s", "step_ms",
                 "examples_per_s", "peak_mem_mb", "device")

# --------------------------------------------------------------------------------------------------
# Measuring.


def _reset_peak_memory() -> None:
  """Resets the process's peak-RSS high-water mark (Linux >= 4.0); a no-op elsewhere."""
  with contextlib.suppress(OSError):
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")


def _peak_memory_mb() -> float:
  """Peak device memory where JAX reports it (accelerators), else the process's peak RSS."""
  with contextlib.suppress(Exception):
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
      return stats["peak_bytes_in_use"] / 2**20
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / (2**20 if sys.platform == "darwin" else 2**10)


def _device() -> str:
  d = jax.devices()[0]
  return f"{d.platform}:{getattr(d, 'device_kind', d.platform)} x{jax.device_count()}"


def _temp_mb(compiled) -> Optional[float]:
  with contextlib.suppress(Exception):
    return compiled.memory_analysis().temp_size_in_bytes / 2**20
  return None


def _time_calls(call: Callable[[], Any], repeats: int, min_time_s: float = 0.0,
                max_repeats: int = 1000) -> List[float]:
  """Times ``repeats`` calls, and more while their total is under ``min_time_s`` (fast steps get
  enough samples for a stable median on a noisy machine)."""
  times = []
  while len(times) < repeats or (sum(times) < min_time_s and len(times) < max_repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - t0)
  return times


def _record(*, kind, model, batch, method, compile_s, times, **extra) -> Dict[str, Any]:
  step_s = statistics.median(times)
  rec = dict(name=f"{kind}/{model}/{method}/b{batch}", kind=kind, model=model, batch=batch,
             method=method, compile_s=round(compile_s, 3), step_ms=round(1e3 * step_s, 3),
             examples_per_s=round(batch / step_s, 2), peak_mem_mb=round(_peak_memory_mb(), 1),
             device=_device(), repeats=len(times), step_ms_min=round(1e3 * min(times), 3),
             step_ms_max=round(1e3 * max(times), 3))
  rec.update({k: v for k, v in extra.items() if v is not None})
  return rec


def synthetic_batch(image_shape, batch: int, seed: int = 0) -> Dict[str, jax.Array]:
  """Uniform [0, 1] images and uniform labels in 0..9 (the timings do not depend on the values)."""
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.uniform(size=(batch,) + tuple(image_shape)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, 10, size=batch), jnp.int32)}


def _parse_value(text: str, like: Any):
  if isinstance(like, bool):
    return text.lower() in ("1", "true", "yes")
  if isinstance(like, int):
    return int(text)
  if isinstance(like, float):
    return float(text)
  if isinstance(like, tuple):
    return tuple(type(like[0])(v) if like else float(v) for v in text.split(":") if v)
  return text


def make_config(model_name: str, variant: str, batch: int):
  """``base_config()`` for ``model_name`` and the method variant ``method[+wp][@field=value...]``."""
  spec = MODEL_SPECS.get(model_name, ModelSpec(**_CIFAR, batch=32))
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


def _new_state(config, model, tx, image_shape):
  state = state_lib.create(model=model, tx=tx, sample_input=jnp.zeros((1,) + tuple(image_shape)),
                           seed=config.seed)
  return state.replace(extra=loop_lib.initial_extra(config, state.params))


def bench_train_step(model_name: str, variant: str, *, batch: int, repeats: int, warmup: int):
  """Compiles and times the library's training step; returns (record, final state)."""
  spec = MODEL_SPECS.get(model_name, ModelSpec(**_CIFAR, batch=32))
  config = make_config(model_name, variant, batch)
  model = models.get_model(model_name, num_classes=10)
  tx, lr_fn = step_lib.make_optimizer(config, STEPS_PER_EPOCH)
  state = _new_state(config, model, tx, spec.image_shape)
  data = synthetic_batch(spec.image_shape, batch)
  step = jax.jit(step_lib.make_train_step(config, model, tx, lr_fn, STEPS_PER_EPOCH),
                 donate_argnums=0)
  _reset_peak_memory()
  t0 = time.perf_counter()
  compiled = step.lower(state, data).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state, "metrics": None}

  def call():
    holder["state"], holder["metrics"] = compiled(holder["state"], data)
    return holder["state"], holder["metrics"]

  _time_calls(call, 1 + warmup)
  times = _time_calls(call, repeats, MIN_TIME_S)
  m = {k: float(v) for k, v in jax.device_get(holder["metrics"]).items() if np.ndim(v) == 0}
  rec = _record(kind="train", model=model_name, batch=batch, method=variant, compile_s=compile_s,
                times=times, xla_temp_mb=_round(_temp_mb(compiled)),
                attack_steps=_round(m.get("attack_steps")),
                stopped_early=_round(m.get("stopped_early")),
                finite_metrics=all(np.isfinite(v) for v in m.values()))
  return rec, holder["state"]


def _round(v, n=3):
  return None if v is None else round(float(v), n)


# --------------------------------------------------------------------------------------------------
# Attacks alone.


@contextlib.contextmanager
def default_conv_vjp():
  """Traces the models' convolutions with JAX's own gradient rule instead of the custom VJP."""
  original = layers._conv2d  # pylint: disable=protected-access
  layers._conv2d = lambda x, w, strides, pads: layers._forward(x, w, strides, pads)  # pylint: disable=protected-access
  try:
    yield
  finally:
    layers._conv2d = original  # pylint: disable=protected-access


def _uses_conv(model, variables, x) -> bool:
  seen = []

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, layers.Conv):
      seen.append(True)
    return next_fun(*args, **kwargs)

  with nn_intercept(interceptor):
    jax.eval_shape(lambda v, xx: model.apply(v, xx), variables, x)
  return bool(seen)


def nn_intercept(fn):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return nn.intercept_methods(fn)


def _unrolled_pgd(logits_fn, x, y, key, *, eps, step_size, num_steps):
  """PGD-K as a Python loop: K steps and K + 1 gradient evaluations, as the library's loop."""
  def grad(xx):
    return jax.grad(lambda z: jnp.sum(losses.cross_entropy(logits_fn(z), y)))(xx)

  x_adv = jnp.clip(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), 0.0, 1.0)
  g = grad(x_adv)
  for _ in range(num_steps):
    x_adv = jnp.clip(jnp.clip(x_adv + step_size * jnp.sign(g), x - eps, x + eps), 0.0, 1.0)
    g = grad(x_adv)
  return x_adv, g


def _attack_fn(name: str, logits_fn, x, y, key, spec: ModelSpec, flags_: Dict[str, Any]):
  eps, a = spec.eps, spec.step_size
  if name == "fwd_bwd":
    return jax.grad(lambda z: jnp.sum(losses.cross_entropy(logits_fn(z), y)))(x)
  if name in ("pgd10", "pgd20", "pgd10_default_vjp"):
    k = 20 if name == "pgd20" else 10
    return attacks.pgd(logits_fn, x, y, eps=eps, step_size=a, num_steps=k, start="uniform",
                       key=key)
  if name == "pgd10_unrolled":
    return _unrolled_pgd(logits_fn, x, y, key, eps=eps, step_size=a, num_steps=10)
  if name in ("pgd10_fat", "pgd10_fat_compact"):
    return attacks.pgd(logits_fn, x, y, eps=eps, step_size=a, num_steps=10, start="uniform",
                       key=key, stop=attacks.misclassified_stop(0),
                       compaction=3 if name == "pgd10_fat_compact" else 0)
  if name == "pgd10_fosc":
    return attacks.pgd(logits_fn, x, y, eps=eps, step_size=a, num_steps=10, start="uniform",
                       key=key, stop=attacks.fosc_stop(flags_["fosc_c"]))
  if name == "apgd_ce":
    return attacks.apgd(logits_fn, x, y, eps=eps, key=key, n_iter=flags_["apgd_iter"],
                         early_stop=False)
  raise ValueError(f"unknown attack {name!r}; valid: {ATTACKS}")


def bench_attack(model_name: str, attack: str, state, *, batch: int, repeats: int, warmup: int,
                 options: Dict[str, Any], calls: Optional[Dict[str, Callable]] = None):
  """Times one attack against the model in ``state`` (eval mode); None if it does not apply."""
  spec = MODEL_SPECS.get(model_name, ModelSpec(**_CIFAR, batch=32))
  model = models.get_model(model_name, num_classes=10)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  x = synthetic_batch(spec.image_shape, batch, seed=1)["image"]
  if attack == "pgd10_default_vjp" and not _uses_conv(model, variables, x):
    return None
  y = jnp.argmax(model.apply(variables, x), -1).astype(jnp.int32)
  if attack.startswith("pgd10_fat"):
    # Every other label off by one: those examples start misclassified and FAT (tau = 0) stops them
    # at once, the others run until misclassified or K. Half the batch stops early: the masked
    # loop still runs max-over-the-batch iterations, the compacted one halves its batch.
    y = y.at[::2].set((y[::2] + 1) % 10)
  key = jax.random.key(0)
  extra = {}
  if attack in EXPENSIVE_ATTACKS:
    repeats, warmup = min(repeats, 2), 0
  _reset_peak_memory()
  if attack == "autoattack":
    logits_fn = jax.jit(lambda xx: model.apply(variables, xx))
    run = lambda: attacks.autoattack(
        logits_fn, x, y, eps=spec.eps, key=key, version="standard", n_iter=options["aa_n_iter"],
        n_queries=options["aa_n_queries"]).x_adv
    t0 = time.perf_counter()
    jax.block_until_ready(run())
    first = time.perf_counter() - t0
    times = _time_calls(run, max(1, repeats))
    compile_s = max(first - statistics.median(times), 0.0)
    extra["budget"] = f"n_iter={options['aa_n_iter']}, n_queries={options['aa_n_queries']}"
  else:
    def fn(v, xx, yy, kk):
      return _attack_fn(attack, lambda z: model.apply(v, z), xx, yy, kk, spec, options)

    ctx = default_conv_vjp() if attack == "pgd10_default_vjp" else contextlib.nullcontext()
    t0 = time.perf_counter()
    with ctx:
      compiled = jax.jit(fn).lower(variables, x, y, key).compile()
    compile_s = time.perf_counter() - t0
    out = {}

    def call():
      out["r"] = compiled(variables, x, y, key)
      return out["r"]

    _time_calls(call, 1 + warmup)
    times = _time_calls(call, repeats, 0.0 if attack in EXPENSIVE_ATTACKS else MIN_TIME_S)
    if calls is not None:
      calls[attack] = call
    extra["xla_temp_mb"] = _round(_temp_mb(compiled))
    r = out["r"]
    if isinstance(r, attacks.AttackResult):
      extra["steps_mean"] = _round(jnp.mean(r.num_steps))
      extra["steps_max"] = int(jnp.max(r.num_steps))
    if attack == "apgd_ce":
      extra["budget"] = f"n_iter={options['apgd_iter']}"
    if attack == "pgd10_fosc":
      extra["budget"] = f"c={options['fosc_c']}"
  return _record(kind="attack", model=model_name, batch=batch, method=attack, compile_s=compile_s,
                 times=times, **extra)


# --------------------------------------------------------------------------------------------------
# The PyTorch comparison (SmallCNN, PGD-10 AT, batch 128).


class TorchWorker:
  """A ``launch/benchmark_torch.py --worker`` subprocess (one per PyTorch variant)."""

  def __init__(self, python: str, *, channels_last: bool, malloc: bool, batch: int,
               model: str = "small_cnn"):
    env = dict(os.environ)
    env.pop("GLIBC_TUNABLES", None)
    if malloc:
      env["GLIBC_TUNABLES"] = GLIBC_TUNABLES
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark_torch.py")
    cmd = [python, script, "--worker", f"--batch={batch}", f"--model={model}"] + (
        ["--channels_last"] if channels_last else [])
    self.label = "PyTorch eager" + (", channels_last" if channels_last else "") + (
        ", malloc tuned" if malloc else "")
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env=env)
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"{cmd} exited with code {self.proc.wait()}")
    self.info = json.loads(line)

  def time(self, kind: str, n: int) -> List[float]:
    self.proc.stdin.write(f"{kind} {n}\n")
    self.proc.stdin.flush()
    return json.loads(self.proc.stdout.readline())["times_s"]

  def close(self):
    with contextlib.suppress(Exception):
      self.proc.stdin.write("quit\n")
      self.proc.stdin.flush()
    self.proc.wait(timeout=60)


def _minimal_steps(model, tx, *, eps, step_size, num_steps):
  """A hand-written JAX AT step with exactly PyTorch's work: K gradients, no metrics, no extras.

  ``variables`` = {"params": ..., "batch_stats": ...} (an empty batch_stats for models without
  BatchNorm); the attack runs in eval mode, the update in train mode.
  """
  def ce(variables, xx, y, train, key=None):
    if train:
      logits, upd = model.apply(variables, xx, train=True, mutable=["batch_stats"],
                                rngs={"dropout": key})
      return jnp.mean(losses.cross_entropy(logits, y)), upd.get("batch_stats", {})
    return jnp.mean(losses.cross_entropy(model.apply(variables, xx, train=False), y)), None

  def update(variables, opt_state, xx, y, key):
    def loss(p):
      return ce({"params": p, "batch_stats": variables["batch_stats"]}, xx, y, True, key)
    (l, bs), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    updates, opt_state = tx.update(grads, opt_state, variables["params"])
    return ({"params": optax.apply_updates(variables["params"], updates), "batch_stats": bs},
            opt_state, l)

  def at_step(variables, opt_state, x, y, key):
    k_start, k_drop = jax.random.split(key)
    grad_x = jax.grad(lambda z: ce(variables, z, y, False)[0])
    x0 = jnp.clip(x + jax.random.uniform(k_start, x.shape, x.dtype, -eps, eps), 0.0, 1.0)

    def body(_, xa):
      xa = xa + step_size * jnp.sign(grad_x(xa))
      return jnp.clip(jnp.clip(xa, x - eps, x + eps), 0.0, 1.0)

    x_adv = jax.lax.fori_loop(0, num_steps, body, x0)
    return update(variables, opt_state, x_adv, y, k_drop)

  return (jax.jit(at_step, donate_argnums=(0, 1)), jax.jit(update, donate_argnums=(0, 1)))


TORCH_MODELS = ("small_cnn", "preact_resnet18")  # the models launch/benchmark_torch.py has


def torch_comparison(python: str, *, rounds: int, steps: int, model_name: str = "small_cnn",
                     batch: int = 0) -> List[Dict[str, Any]]:
  """JAX (library and minimal) and PyTorch (4 variants) AT steps, alternating, one session."""
  if model_name not in TORCH_MODELS:
    raise ValueError(f"torch comparison: model must be one of {TORCH_MODELS}, got {model_name!r}")
  spec = MODEL_SPECS[model_name]
  batch = batch or spec.batch
  data = synthetic_batch(spec.image_shape, batch)
  impls: Dict[str, Dict[str, Callable[[int], List[float]]]] = {}
  compile_s: Dict[str, float] = {}
  # The library's steps, with and without the per-step diagnostics.
  for label, variant in ((LIB_LABEL, "pgd_at"), (LIB_LABEL, "standard"),
                         (LIB_FAST_LABEL, "pgd_at" + FAST), (LIB_FAST_LABEL, "standard" + FAST)):
    config = make_config(model_name, variant, batch)
    config.learning_rate, config.lr_schedule = 0.01, "constant"
    model = models.get_model(model_name, num_classes=10)
    tx, lr_fn = step_lib.make_optimizer(config, STEPS_PER_EPOCH)
    holder = {"s": _new_state(config, model, tx, spec.image_shape)}
    t0 = time.perf_counter()
    compiled = jax.jit(step_lib.make_train_step(config, model, tx, lr_fn, STEPS_PER_EPOCH),
                       donate_argnums=0).lower(holder["s"], data).compile()
    compile_s[f"{label}/{variant}"] = time.perf_counter() - t0

    def call(compiled=compiled, holder=holder):
      holder["s"], m = compiled(holder["s"], data)
      return holder["s"], m

    _time_calls(call, 3)
    impls.setdefault(label, {})[
        "clean" if variant.startswith("standard") else "at"] = (
            lambda n, call=call: _time_calls(call, n))
  # The minimal JAX step.
  model = models.get_model(model_name, num_classes=10)
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.01, momentum=0.9))
  at_fn, clean_fn = _minimal_steps(model, tx, eps=spec.eps, step_size=spec.step_size,
                                   num_steps=NUM_STEPS)
  st = state_lib.create(model=model, tx=tx, sample_input=jnp.zeros((1,) + spec.image_shape), seed=0)
  mh = {"p": {"params": st.params, "batch_stats": st.batch_stats}, "o": st.opt_state,
        "k": jax.random.key(1)}

  def minimal(fn):
    def call():
      mh["k"], k = jax.random.split(mh["k"])
      mh["p"], mh["o"], loss = fn(mh["p"], mh["o"], data["image"], data["label"], k)
      return loss
    return call

  for kind, fn in (("at", at_fn), ("clean", clean_fn)):
    t0 = time.perf_counter()
    _time_calls(minimal(fn), 1)
    compile_s[f"min/{kind}"] = time.perf_counter() - t0
    _time_calls(minimal(fn), 2)
    impls.setdefault(MIN_LABEL, {})[kind] = (
        lambda n, c=minimal(fn): _time_calls(c, n))
  # PyTorch workers.
  workers = []
  try:
    for malloc in (False, True):
      for cl in (False, True):
        w = TorchWorker(python, channels_last=cl, malloc=malloc, batch=batch, model=model_name)
        workers.append(w)
        impls[w.label] = {k: (lambda n, w=w, k=k: w.time(k, n)) for k in ("at", "clean")}
    per_round: Dict[str, Dict[str, List[float]]] = {k: {"at": [], "clean": []} for k in impls}
    fastest = {k: {"at": float("inf"), "clean": float("inf")} for k in impls}
    for _ in range(rounds):
      for label, fns in impls.items():
        for kind in ("at", "clean"):
          time.sleep(0.2)  # let the other framework's spinning threads go idle
          ts = fns[kind](steps)
          per_round[label][kind].append(statistics.median(ts))
          fastest[label][kind] = min(fastest[label][kind], min(ts))
    torch_version = workers[0].info.get("torch", "?")
  finally:
    for w in workers:
      w.close()
  records = []
  def over(num_label, rs):  # the median over rounds of num_label's AT step / this one's
    return round(statistics.median(
        a / b for a, b in zip(per_round[num_label]["at"], rs["at"])), 3)

  for label, rs in per_round.items():
    at, clean = statistics.median(rs["at"]), statistics.median(rs["clean"])
    records.append(dict(
        name=f"torch_cmp/{model_name}/{label}/b{batch}", kind="framework", model=model_name,
        batch=batch, method=label, compile_s=None, step_ms=round(1e3 * at, 2),
        clean_step_ms=round(1e3 * clean, 2), examples_per_s=round(batch / at, 2),
        peak_mem_mb=None, device=_device(), rounds=rounds, steps_per_round=steps,
        torch=torch_version if label.startswith("PyTorch") else None,
        lib_over_this=over(LIB_LABEL, rs),
        fastest_step_ms=round(1e3 * fastest[label]["at"], 2),
        lib_over_this_fastest=round(fastest[LIB_LABEL]["at"] / fastest[label]["at"], 3),
        min_over_this=over(MIN_LABEL, rs), fast_over_this=over(LIB_FAST_LABEL, rs)))
  for r in records:
    r["compile_s"] = {LIB_LABEL: compile_s.get(f"{LIB_LABEL}/pgd_at"),
                      LIB_FAST_LABEL: compile_s.get(f"{LIB_FAST_LABEL}/pgd_at{FAST}"),
                      MIN_LABEL: compile_s.get("min/at")}.get(r["method"])
    if r["compile_s"] is not None:
      r["compile_s"] = round(r["compile_s"], 3)
  return records


# --------------------------------------------------------------------------------------------------
# Derived ratios (always from records of one run).


def _find(records, kind, model, method):
  for r in records:
    if r["kind"] == kind and r["model"] == model and r["method"] == method:
      return r
  return None


def compute_ratios(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """The ratios of the issue, from measurements of the same run (missing pieces are skipped)."""
  out = []

  def add(name, model, num, den, ideal, note=""):
    if num and den and den["step_ms"] > 0:
      out.append(dict(name=name, kind="ratio", model=model, batch=num["batch"],
                      value=round(num["step_ms"] / den["step_ms"], 3), ideal=ideal, note=note,
                      of=f"{num['method']} / {den['method']}"))

  train_models = sorted({r["model"] for r in records if r["kind"] in ("train", "attack")},
                        key=_model_order)
  for m in train_models:
    std, at = _find(records, "train", m, "standard"), _find(records, "train", m, "pgd_at")
    add("PGD-10 AT step / clean step", m, at, std, "~7-8 (PyTorch's work: 10 input-gradient "
        "passes + 1 training pass, vs 1 training pass)")
    add("AWP overhead: AT+AWP step / AT step", m, _find(records, "train", m, "pgd_at+awp"), at,
        "~1.1-1.3 (one more forward+backward to the weights)")
    add("TRADES step / AT step", m, _find(records, "train", m, "trades"), at,
        "~1.1 (clean + adversarial train passes)")
    for meth, ideal in (("fgsm_at", "~2-2.5"), ("gradalign", "~4-6 (double backprop)"),
                        ("elle", "~3-4 (3 forward passes on a 3B batch)")):
      add(f"{meth} step / standard step", m, _find(records, "train", m, meth), std, ideal)
    add("GradAlign step / FGSM-AT step", m, _find(records, "train", m, "gradalign"),
        _find(records, "train", m, "fgsm_at"), "~2-3 (two input gradients, differentiated)")
    fwd = _find(records, "attack", m, "fwd_bwd")
    pgd = _find(records, "attack", m, "pgd10")
    add("PGD-10 attack / one forward+backward (to the input)", m, pgd, fwd,
        "~11 (the loop evaluates the gradient K + 1 times)")
    add("PGD-20 attack / PGD-10 attack", m, _find(records, "attack", m, "pgd20"), pgd, "~1.9")
    add("PGD-10 AT step / one forward+backward (to the input)", m, at, fwd,
        "~12-13 (11 passes + 1 training pass + 1 forward)")
    add("while_loop PGD-10 / unrolled PGD-10", m, pgd, _find(records, "attack", m,
                                                             "pgd10_unrolled"), "~1.0")
    add("while_loop PGD-10, JAX's conv VJP / with the custom VJP", m,
        _find(records, "attack", m, "pgd10_default_vjp"), pgd, "1.0 if XLA handled it")
  for m in TORCH_MODELS:
    lib = _find(records, "framework", m, LIB_LABEL)
    mini = _find(records, "framework", m, MIN_LABEL)
    fast = _find(records, "framework", m, LIB_FAST_LABEL)
    if lib and mini:
      out.append(dict(name="library AT step / minimal JAX AT step", kind="ratio", model=m,
                      batch=lib["batch"], value=round(lib["step_ms"] / mini["step_ms"], 3),
                      ideal="~1.1 (11 vs 10 gradient evaluations, a clean forward and metrics)",
                      note="", of=f"{LIB_LABEL} / {MIN_LABEL}"))
      out.append(dict(name="library clean step / minimal JAX clean step", kind="ratio",
                      model=m, batch=lib["batch"],
                      value=round(lib["clean_step_ms"] / mini["clean_step_ms"], 3),
                      ideal="~1.3 (one more eval-mode forward for the metrics)", note="",
                      of=f"{LIB_LABEL} / {MIN_LABEL}"))
    if fast and mini:
      out.append(dict(name="library AT step without diagnostics / minimal JAX AT step",
                      kind="ratio", model=m, batch=fast["batch"],
                      value=round(fast["step_ms"] / mini["step_ms"], 3),
                      ideal="~1.0 (the same work)", note="", of=f"{LIB_FAST_LABEL} / {MIN_LABEL}"))
  for m in sorted({r["model"] for r in records if r["kind"] == "train"}, key=_model_order):
    full, lean = _find(records, "train", m, "pgd_at"), _find(records, "train", m, "pgd_at" + FAST)
    add("PGD-10 AT step with diagnostics / without", m, full, lean,
        "~1.1 (11 + 1 vs 10 + 1 passes, one clean forward)")
  return out


def _model_order(name):
  order = list(DEFAULT_MODELS) + sorted(MODEL_SPECS)
  return order.index(name) if name in order else len(order)


# --------------------------------------------------------------------------------------------------
# Markdown.


def machine_info() -> Dict[str, Any]:
  """CPU model, cores, memory, library versions, XLA flags, load average."""
  cpu = platform.processor() or platform.machine()
  with contextlib.suppress(OSError):
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  mem_gib = None
  with contextlib.suppress(OSError, ValueError):
    with open("/proc/meminfo") as f:
      mem_gib = round(int(f.readline().split()[1]) / 2**20, 1)
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  return dict(cpu=cpu, cores=os.cpu_count(),
              usable_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else os.cpu_count(), memory_gib=mem_gib, python=platform.python_version(),
              jax=jax.__version__, jaxlib=jaxlib.__version__, flax=flax.__version__,
              optax=optax.__version__, device=_device(), xla_flags=os.environ.get("XLA_FLAGS", ""),
              loadavg=_loadavg())


def _loadavg() -> str:
  with contextlib.suppress(OSError):
    return " ".join(f"{v:.2f}" for v in os.getloadavg())
  return "?"


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
  """XLA's float32 matmul throughput at n x n (a rough roof for this machine)."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda u, v: u @ v)
  jax.block_until_ready(f(a, a))
  t = statistics.median(_time_calls(lambda: f(a, a), repeats))
  return 2 * n**3 / t / 1e9


def _fmt(v, digits=1):
  if v is None or v == "":
    return ""
  if isinstance(v, float):
    if abs(v) >= 100:
      return f"{v:,.0f}"
    return f"{v:.{digits}f}" if abs(v) >= 1 else f"{v:.{max(digits, 2)}f}"
  return str(v)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
  lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


TRAIN_HEADERS = ("model", "batch", "method", "compile s", "step ms", "min-max ms", "examples/s",
                 "attack steps (mean)", "peak RSS MB", "XLA temp MB")
ATTACK_HEADERS = ("model", "batch", "attack", "compile s", "ms per call", "min-max ms",
                  "examples/s", "steps mean / max", "peak RSS MB")
RATIO_HEADERS = ("ratio", "model", "batch", "measured", "expected (ideal)")
EARLY_HEADERS = ("model", "batch", "what", "gradient steps (mean / max)", "ms", "time saved vs "
                 "PGD-10", "steps saved vs PGD-10")
WHILE_HEADERS = ("model", "batch", "PGD-10 while_loop (custom VJP) ms", "Python-unrolled ms",
                 "while / unrolled", "while / unrolled, alternated", "while_loop, JAX's conv VJP ms", "default VJP / custom VJP")
TORCH_HEADERS = ("implementation", "PGD-10 AT step ms", "fastest AT step ms", "clean step ms",
                 "examples/s (AT)", "JAX library step / this",
                 "JAX library step without diagnostics / this", "JAX minimal step / this",
                 "JAX library / this, fastest steps")


def render_markdown(records: Sequence[Dict[str, Any]], meta: Dict[str, Any]) -> str:
  """BENCHMARKS.md from one run's records and its machine description."""
  recs = list(records)
  ratios = [r for r in recs if r["kind"] == "ratio"]
  if all(r["name"] == ALTERNATED_WHILE for r in ratios):
    ratios += compute_ratios(recs)
  train = [r for r in recs if r["kind"] == "train"]
  atk = [r for r in recs if r["kind"] == "attack"]
  fw = [r for r in recs if r["kind"] == "framework"]
  out = ["# Benchmarks", "",
         "Generated by `launch/benchmark.py`; do not edit by hand (rerun the command below).", "",
         "## Machine and command", "",
         f"* date (UTC): {meta.get('date', '?')}",
         f"* command: `{meta.get('command', '?')}`",
         f"* CPU: {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores "
         f"({meta.get('usable_cores', '?')} usable), {meta.get('memory_gib', '?')} GiB memory",
         f"* device: {meta.get('device', '?')}; XLA float32 matmul (n = 2048): "
         f"{_fmt(meta.get('matmul_gflops'))} GFLOP/s",
         f"* Python {meta.get('python', '?')}, jax {meta.get('jax', '?')}, jaxlib "
         f"{meta.get('jaxlib', '?')}, flax {meta.get('flax', '?')}, optax {meta.get('optax', '?')}"
         + (f", torch {meta['torch']}" if meta.get("torch") else ""),
         f"* XLA_FLAGS: `{meta.get('xla_flags', '')}`",
         f"* load average (1, 5, 15 min) at the start: {meta.get('loadavg', '?')}; at the end: "
         f"{meta.get('loadavg_end', '?')} (above the core count means other processes shared the "
         "CPU: absolute times are then inflated, ratios measured close together less so)",
         f"* total wall time of the run: {_fmt(meta.get('wall_s'))} s", "",
         "## How to read", "",
         "* Every number comes from the one run above. Machines, and shared machines above all, are "
         "noisy: compare **ratios measured in the same run** (the tables below), not absolute times "
         "taken on different days or machines.",
         "* `step ms` is the median of the timed calls after warm-up (`jax.block_until_ready`); "
         "`compile s` is trace + lower + compile of the jitted step (ahead of time); `examples/s` "
         "is batch / step time. Each training step is the library's `make_train_step` on synthetic "
         "data (uniform images, random labels), so the accuracy-dependent parts (early stopping) "
         "behave as on an untrained model.",
         "* `peak RSS MB` is the process's peak resident memory during that measurement (JAX "
         "runtime and every live array included; the high-water mark is reset before each one), "
         "`XLA temp MB` the compiled program's scratch memory.",
         "* By default (`train_diagnostics=True`, the digits config) the attack loop evaluates "
         "the gradient K + 1 times for K steps (the last gives the loss, FOSC and correctness at "
         "the returned point), so PGD-10 costs about 11 forward+backward passes, and the training "
         "step also runs one eval-mode forward on the clean batch for its metrics. The rows "
         "`@train_diagnostics=false` (the paper recipes' setting) do PyTorch's reference work: 10 "
         "and none.",
         "* In a masked while loop, early stopping saves time only when *every* example of the "
         "batch has stopped. The training steps of FAT and Dynamic AT compact the batch (halve it "
         "up to 3 times as examples stop, `attack_compaction`); `fat@attack_compaction=0` and the "
         "attack-only rows (no compaction but `pgd10_fat_compact`) show the masked loop alone.", ""]
  if train:
    out += ["## Training steps", "", _table(TRAIN_HEADERS, [
        (r["model"], r["batch"], r["method"] + ("" if r.get("finite_metrics", True) else
                                                " (metrics non-finite)"),
         r["compile_s"], r["step_ms"], _spread(r), r["examples_per_s"], r.get("attack_steps"), r["peak_mem_mb"], r.get("xla_temp_mb"))
        for r in train]), ""]
  if atk:
    out += ["## Attacks alone", "",
            "Eval mode, labels = the model's predictions (every example starts correctly "
            "classified), except the `pgd10_fat` rows: every other label is off by one there, so "
            "half the batch starts misclassified and stops at once. " + "; ".join(sorted({f"{r['method']}: {r['budget']}" for r in atk
                                                if r.get("budget")})) + ".", "",
            _table(ATTACK_HEADERS, [
                (r["model"], r["batch"], r["method"], r["compile_s"], r["step_ms"], _spread(r),
                 r["examples_per_s"],
                 f"{r['steps_mean']:g} / {r['steps_max']}" if "steps_mean" in r else "",
                 r["peak_mem_mb"]) for r in atk]), ""]
  if ratios:
    out += ["## Ratios (measured in the same run)", "", _table(RATIO_HEADERS, [
        (r["name"], r["model"], r["batch"], r["value"], r["ideal"]) for r in ratios]), ""]
  early = _early_rows(recs)
  if early:
    out += ["## Early stopping: wall-clock against the gradient steps actually taken", "",
            "Training rows: `attack steps` is the step's `attack_steps` metric (mean over the "
            "batch); Dynamic AT at epoch 0 uses c = `fosc_c_max`. Attack rows: mean and max "
            "steps of the returned `AttackResult`.", "", _table(EARLY_HEADERS, early), ""]
  wl = _while_rows(recs)
  if wl:
    out += ["## while_loop against unrolled attack loop", "",
            "PGD-10 with the library's `lax.while_loop` (early exit, masked steps) against the "
            "same 10 steps and 11 gradient evaluations written as a Python loop (unrolled in the "
            "HLO), and the while loop with JAX's default convolution gradient instead of the "
            "custom VJP of `robust_jax/models/layers.py`.", "", _table(WHILE_HEADERS, wl), ""]
  titles = {"small_cnn": "TRADES SmallCNN (MNIST shapes)",
            "preact_resnet18": "robust_overfitting PreActResNet-18 (CIFAR shapes)"}
  for m in TORCH_MODELS:
    rows = [r for r in fw if r["model"] == m]
    if not rows:
      continue
    out += [f"## JAX against PyTorch: {titles[m]}, PGD-10 AT step, batch {rows[0]['batch']}", "",
            "Alternating the implementations in one session, "
            f"{rows[0]['rounds']} rounds of {rows[0]['steps_per_round']} steps each; the table "
            "gives the median over rounds of each round's median, and the ratios are the median of "
            "the per-round ratios. The PyTorch step is the official TRADES/MART/AT-AWP structure "
            "(attack in eval mode, one SGD-momentum update in train mode, `launch/"
            "benchmark_torch.py`); the JAX library step is `make_train_step` (11 gradient "
            "evaluations + metrics: FOSC at x_adv, clean accuracy); without diagnostics "
            "(`config.train_diagnostics=False`) it does PyTorch's work (10 gradient evaluations), "
            "as does the minimal JAX step (a `fori_loop`, no metrics). malloc tuned = "
            "`GLIBC_TUNABLES="
            f"{GLIBC_TUNABLES}`.", "", _table(TORCH_HEADERS, [
                (r["method"], r["step_ms"], r.get("fastest_step_ms"), r["clean_step_ms"],
                 r["examples_per_s"], r["lib_over_this"], r.get("fast_over_this"),
                 r["min_over_this"], r.get("lib_over_this_fastest")) for r in rows]), ""]
  notes = findings(recs)
  if notes:
    out += ["## Findings", ""] + [f"* {n}" for n in notes] + [""]
  return "\n".join(out)


def _early_rows(recs):
  rows = []
  for m in sorted({r["model"] for r in recs if r["kind"] in ("train", "attack")}, key=_model_order):
    at = _find(recs, "train", m, "pgd_at")
    for r in recs:
      if r["kind"] == "train" and r["model"] == m and at and r.get("attack_steps") is not None and (
          r["method"].startswith(("dart", "fat", "pgd_at")) and "+" not in r["method"]):
        rows.append((m, r["batch"], f"train step: {r['method']}", f"{r['attack_steps']:.2f}",
                     r["step_ms"], _pct(1 - r["step_ms"] / at["step_ms"]),
                     _pct(1 - r["attack_steps"] / at["attack_steps"])))
    pgd = _find(recs, "attack", m, "pgd10")
    for name in ("pgd10", "pgd10_fat", "pgd10_fat_compact", "pgd10_fosc"):
      r = _find(recs, "attack", m, name)
      if r and pgd and "steps_mean" in r:
        rows.append((m, r["batch"], f"attack: {name}" + (f" ({r['budget']})" if r.get("budget")
                                                          else ""),
                     f"{r['steps_mean']:.2f} / {r['steps_max']}", r["step_ms"],
                     _pct(1 - r["step_ms"] / pgd["step_ms"]),
                     _pct(1 - r["steps_mean"] / pgd["steps_mean"])))
  return rows


def _while_rows(recs):
  rows = []
  for m in sorted({r["model"] for r in recs}, key=_model_order):
    w, u = _find(recs, "attack", m, "pgd10"), _find(recs, "attack", m, "pgd10_unrolled")
    d = _find(recs, "attack", m, "pgd10_default_vjp")
    if w and u:
      alt = next((r for r in recs if r["kind"] == "ratio" and r["model"] == m
                  and r["name"] == ALTERNATED_WHILE), None)
      rows.append((m, w["batch"], w["step_ms"], u["step_ms"], round(w["step_ms"] / u["step_ms"], 2),
                   alt["value"] if alt else "", d["step_ms"] if d else "", round(d["step_ms"] / w["step_ms"], 2) if d else ""))
  return rows


def _spread(r):
  if "step_ms_min" not in r:
    return ""
  return f"{_fmt(r['step_ms_min'])}-{_fmt(r['step_ms_max'])}"


def _pct(v):
  return f"{100 * v:.0f}%"


def findings(recs) -> List[str]:
  """Plain statements of where the measurements stand, with their numbers."""
  notes = []
  for m in TORCH_MODELS:
    fw = {r["method"]: r for r in recs if r["kind"] == "framework" and r["model"] == m}
    if not any(k.startswith("PyTorch") for k in fw):
      continue
    lib = fw.get(LIB_LABEL)
    best = min((r for k, r in fw.items() if k.startswith("PyTorch")), key=lambda r: r["step_ms"])
    default = fw.get("PyTorch eager")
    what = f"{m} PGD-10 AT step, batch {best['batch']}"
    if lib and default:
      word = ("on par with" if abs(default["lib_over_this"] - 1) < 0.05 else
              "slower than" if default["lib_over_this"] > 1 else "faster than")
      notes.append(
          f"{what}: the JAX library step is {word} PyTorch eager "
          f"with its defaults (JAX / PyTorch = {default['lib_over_this']:.2f})"
          f" and {'slower' if best['lib_over_this'] > 1 else 'faster'} than the best PyTorch "
          f"configuration measured ({best['method']}: JAX / PyTorch = "
          f"{best['lib_over_this']:.2f}). The minimal JAX step (PyTorch's exact work) gives "
          f"{best['min_over_this']:.2f} against that best PyTorch configuration.")
    if best.get("fast_over_this") is not None:
      r = best["fast_over_this"]
      notes.append(
          f"{what}, doing PyTorch's exact work (`train_diagnostics=False`: PGD-10 with 10 "
          f"gradient evaluations, no FOSC at x_adv, no clean-batch metrics): the library step is "
          f"{'faster' if r < 1 else 'slower'} than the best PyTorch configuration: JAX / PyTorch "
          f"= {r:.2f}" + (f", {1 / r:.2f}x the speed." if r < 1 else "."))
  for m in sorted({r["model"] for r in recs if r["kind"] == "train"}, key=_model_order):
    at, fat = _find(recs, "train", m, "pgd_at"), _find(recs, "train", m, "fat")
    if (at and fat and fat.get("attack_steps") is not None and fat["attack_steps"] < 5
        and fat["step_ms"] > 0.9 * at["step_ms"]):
      notes.append(
          f"{m}: FAT took {fat['attack_steps']:.2f} gradient steps per example on average against "
          f"PGD-10's 10, yet its step took {fat['step_ms'] / at['step_ms']:.2f}x the PGD-10 AT "
          "step: the masked while loop runs until the last example of the batch stops, so early "
          "stopping saves wall-clock only when all of them stop early (Dynamic AT's rows, where "
          "every example stops after one step, do save it).")
    plain = _find(recs, "train", m, "fat@attack_compaction=0")
    if at and fat and plain and fat.get("attack_steps") is not None:
      notes.append(
          f"{m}: FAT with the attack loop's compaction (the default, batch halved up to 3 times as "
          f"examples stop) took {fat['step_ms']:,.0f} ms per step ({fat['attack_steps']:.2f} steps "
          f"per example), without it {plain['step_ms']:,.0f} ms ({plain['attack_steps']:.2f} "
          f"steps), PGD-10 AT {at['step_ms']:,.0f} ms: compaction turns early stops into "
          f"{_pct(1 - fat['step_ms'] / plain['step_ms'])} of the step's time saved.")
  for r in recs:
    if r["kind"] != "ratio":
      continue
    if r["name"] == ALTERNATED_WHILE and r["value"] > 1.3:
      notes.append(f"{r['model']}: the while-loop PGD-10 is {r['value']:.2f}x the unrolled loop "
                   "(expected ~1.0 with the custom-VJP convolution): a while-loop slowdown remains.")
    if r["name"].startswith("AWP overhead") and r["value"] > 2:
      notes.append(f"{r['model']}: AT+AWP costs {r['value']:.1f}x AT (expected ~1.1-1.3): the "
                   "weight adversary's gradient runs inside a lax.cond (AWP's warm-up switch).")
    if r["name"].startswith("GradAlign step") and r["value"] > 5:
      notes.append(f"{r['model']}: GradAlign costs {r['value']:.1f}x FGSM-AT (expected ~2-3): "
                   "its double backprop differentiates the convolution's backward pass with JAX's "
                   "default rules, which XLA's CPU backend compiles slowly.")
    if r["name"].startswith("while_loop PGD-10, JAX's conv VJP"):
      notes.append(f"{r['model']}: with JAX's default convolution gradient the while-loop PGD-10 is "
                   f"{r['value']:.1f}x slower than with the custom VJP (the CPU trap the custom VJP "
                   "avoids).")
  return notes


# --------------------------------------------------------------------------------------------------
# Driver.


def run_benchmarks(*, model_names: Sequence[str], methods: Optional[Sequence[str]],
                   attack_names: Optional[Sequence[str]], batch: int, repeats: int, warmup: int,
                   options: Dict[str, Any], emit: Callable[[Dict[str, Any]], None] = lambda r: None
                   ) -> List[Dict[str, Any]]:
  """Runs the measurements; ``emit`` sees each record as soon as it exists. Returns the records of
  the training steps and attacks (:func:`compute_ratios` derives the ratios from them)."""
  records = []
  for m in model_names:
    if m not in models.MODELS:
      raise ValueError(f"unknown model {m!r}; valid: {sorted(models.MODELS)}")
    spec = MODEL_SPECS.get(m, ModelSpec(**_CIFAR, batch=32))
    b = batch or spec.batch
    state = None
    for variant in (spec.methods if methods is None else methods):
      rec, st = bench_train_step(m, variant, batch=b, repeats=repeats, warmup=warmup)
      if variant == "standard" or state is None:
        state = st
      records.append(rec)
      emit(rec)
    todo = spec.attacks if attack_names is None else attack_names
    if todo and state is None:
      _, state = bench_train_step(m, "standard", batch=b, repeats=1, warmup=1)
    calls: Dict[str, Callable] = {}
    for a in todo:
      rec = bench_attack(m, a, state, batch=b, repeats=repeats, warmup=warmup, options=options,
                         calls=calls)
      if rec is not None:
        records.append(rec)
        emit(rec)
    if "pgd10" in calls and "pgd10_unrolled" in calls:
      rec = alternate_while_unrolled(calls["pgd10"], calls["pgd10_unrolled"], model=m, batch=b)
      records.append(rec)
      emit(rec)
  return records


def alternate_while_unrolled(while_call, unrolled_call, *, model: str, batch: int,
                             rounds: int = 5) -> Dict[str, Any]:
  """while_loop / unrolled PGD-10 timed back to back in ``rounds`` rounds (median of the per-round
  ratios), so that a load change on a shared machine hits both sides alike."""
  ratios = []
  for _ in range(rounds):
    w = statistics.median(_time_calls(while_call, 1, 0.5))
    u = statistics.median(_time_calls(unrolled_call, 1, 0.5))
    ratios.append(w / u)
  return dict(name=ALTERNATED_WHILE, kind="ratio", model=model, batch=batch,
              value=round(statistics.median(ratios), 3), ideal="~1.0", note="",
              of="pgd10 / pgd10_unrolled", rounds=rounds,
              per_round=[round(r, 3) for r in ratios])


FLAGS = flags.FLAGS
_MODELS = flags.DEFINE_list("models", list(DEFAULT_MODELS), "Models of the registry.")
_METHODS = flags.DEFINE_list(
    "methods", None, "Method variants, method[+weight_perturbation][@field=value...]; default: "
    "each model's subset (all light methods; standard,pgd_at for the WideResNets).")
_ATTACKS = flags.DEFINE_list("attacks", None, f"Attacks alone, from {ATTACKS}; default: each "
                             "model's subset; empty string: none.")
_BATCH = flags.DEFINE_integer("batch", 0, "Batch size; 0: each model's default (mlp, small_cnn "
                              "128; ResNets 32; WideResNets 8).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (the median is kept).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed calls after the first one.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON line per measurement.")
_MARKDOWN = flags.DEFINE_string("write_markdown", None, "Write the tables to this file.")
_TORCH = flags.DEFINE_string("torch_python", "", "A Python with torch: adds the PyTorch comparison.")
_TORCH_ROUNDS = flags.DEFINE_integer("torch_rounds", 3, "Alternation rounds of the comparison.")
_TORCH_MODELS = flags.DEFINE_list("torch_models", list(TORCH_MODELS),
                                  f"Models of the PyTorch comparison, from {TORCH_MODELS}.")
_TORCH_STEPS = flags.DEFINE_integer("torch_steps", 3, "Timed steps per implementation and round.")
_APGD_ITER = flags.DEFINE_integer("apgd_iter", 100, "APGD-CE iterations.")
_AA_ITER = flags.DEFINE_integer("aa_n_iter", 10, "AutoAttack: APGD/FAB iterations.")
_AA_QUERIES = flags.DEFINE_integer("aa_n_queries", 100, "AutoAttack: Square queries.")
_FOSC_C = flags.DEFINE_float("fosc_c", 0.5, "FOSC threshold of the pgd10_fosc attack.")
_FROM_JSONL = flags.DEFINE_string(
    "from_jsonl", None, "Measure nothing: re-render --write_markdown from the JSON lines (with "
    "their final 'meta' line) that an earlier --json run printed.")


def read_jsonl(path: str):
  """(records, meta) from the stdout of a ``--json`` run."""
  records, meta = [], {}
  with open(path) as f:
    for line in f:
      if line.startswith("{"):
        rec = json.loads(line)
        if rec.get("kind") == "meta":
          meta = rec
        else:
          records.append(rec)
  return records, meta


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  warnings.filterwarnings("ignore", message=".*donated buffers.*")
  if _FROM_JSONL.value:
    records, meta = read_jsonl(_FROM_JSONL.value)
    if not _MARKDOWN.value:
      raise app.UsageError("--from_jsonl needs --write_markdown")
    with open(_MARKDOWN.value, "w") as f:
      f.write(render_markdown(records, meta))
    return
  t_start = time.perf_counter()
  meta = machine_info()
  meta["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  meta["command"] = "python -m launch.benchmark " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  meta["matmul_gflops"] = round(matmul_gflops(), 1)

  def emit(rec):
    if _JSON.value:
      print(json.dumps(rec), flush=True)
    elif rec["kind"] == "ratio":
      print(f"{rec['name']} [{rec['model']}]: {rec['value']} (expected {rec['ideal']})")
    else:
      print(f"{rec['name']:<48} compile {_fmt(rec.get('compile_s'))} s  step "
            f"{_fmt(rec['step_ms'])} ms  {_fmt(rec['examples_per_s'])} ex/s  "
            f"{_fmt(rec.get('peak_mem_mb'))} MB"
            + (f"  steps {rec['attack_steps']}" if rec.get("attack_steps") is not None else "")
            + (f"  steps {rec['steps_mean']}/{rec['steps_max']}" if "steps_mean" in rec else ""),
            flush=True)

  attack_names = _ATTACKS.value
  if attack_names is not None:
    attack_names = [a for a in attack_names if a]
  records = run_benchmarks(
      model_names=_MODELS.value, methods=_METHODS.value, attack_names=attack_names,
      batch=_BATCH.value, repeats=_REPEATS.value, warmup=_WARMUP.value, emit=emit,
      options={"apgd_iter": _APGD_ITER.value, "aa_n_iter": _AA_ITER.value,
               "aa_n_queries": _AA_QUERIES.value, "fosc_c": _FOSC_C.value})
  if _TORCH.value:
    for m in _TORCH_MODELS.value:
      for rec in torch_comparison(_TORCH.value, rounds=_TORCH_ROUNDS.value,
                                  steps=_TORCH_STEPS.value, model_name=m):
        records.append(rec)
        emit(rec)
        meta["torch"] = rec.get("torch") or meta.get("torch")
  for rec in compute_ratios(records):
    records.append(rec)
    if _JSON.value:
      print(json.dumps(rec), flush=True)
    else:
      print(f"{rec['name']} [{rec['model']}]: {rec['value']} (expected {rec['ideal']})")
  meta["loadavg_end"] = _loadavg()
  meta["wall_s"] = round(time.perf_counter() - t_start, 1)
  if _JSON.value:
    print(json.dumps(dict(meta, kind="meta")), flush=True)
  if _MARKDOWN.value:
    with open(_MARKDOWN.value, "w") as f:
      f.write(render_markdown(records, meta))


if __name__ == "__main__":
  app.run(main)
