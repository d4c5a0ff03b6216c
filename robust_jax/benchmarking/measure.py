"""Measuring one thing: the library's training step, or one attack alone against a model.

Training steps (:func:`bench_train_step`) are the library's own ``make_train_step``, jitted with
the state donated and compiled ahead of time, on one fixed synthetic batch. Attacks alone
(:func:`bench_attack`) run in eval mode against a model whose every example starts correctly
classified; ``pgd10_unrolled`` is :func:`unrolled_pgd`, the library's PGD-10 written as a Python
loop (the same K + 1 gradient evaluations), and ``pgd10_default_vjp`` builds the model with
``conv_vjp="jax"`` to measure what the custom convolution VJP saves inside the while loop.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import attacks, losses, models
from robust_jax.benchmarking import user_models
from robust_jax.benchmarking.specs import (ATTACKS, EXPENSIVE_ATTACKS, LINEN_ATTACKS, MIN_TIME_S,
                                           STEPS_PER_EPOCH, ModelSpec, make_config, new_state,
                                           spec_for)
from robust_jax.benchmarking.timing import (record, reset_peak_memory, round_or_none,
                                            synthetic_batch, temp_mb, time_calls)
from robust_jax.models import layers
from robust_jax.training import restore, step as step_lib


def bench_train_step(model_name: str, variant: str, *, batch: int, repeats: int,
                     warmup: int) -> Tuple[Dict[str, Any], Any]:
  """Compiles and times the library's training step.

  ``make_train_step`` of :func:`~robust_jax.benchmarking.specs.make_config`'s config, jitted with
  the state donated and compiled ahead of time (``compile_s``), then called on one fixed synthetic
  batch: ``1 + warmup`` untimed calls, then at least ``repeats`` timed ones (more while they add up
  to less than :data:`~robust_jax.benchmarking.specs.MIN_TIME_S`). Calling the AOT-compiled step
  with the state it returned also proves that the step needs no second compilation.

  Args:
    model_name: a model of the registry.
    variant: a method variant (``pgd_at``, ``pgd_at+awp``, ``dart@fosc_c_max=0``).
    batch: the batch size.
    repeats: the minimum number of timed calls.
    warmup: untimed calls after the first one.

  Returns:
    ``(record, final state)``; the record adds the step's ``attack_steps`` and ``stopped_early``
    metrics, whether every metric was finite, and XLA's scratch memory.
  """
  spec = spec_for(model_name)
  config = make_config(model_name, variant, batch)
  # The model of the config, as training builds it (``remat``, ``dtype`` are model options).
  model = restore.build_model(config, num_classes=10)
  tx, lr_fn = step_lib.make_optimizer(config, STEPS_PER_EPOCH)
  state = new_state(config, model, tx, spec.image_shape)
  data = synthetic_batch(spec.image_shape, batch)
  step = jax.jit(step_lib.make_train_step(config, model, tx, lr_fn, STEPS_PER_EPOCH),
                 donate_argnums=0)
  reset_peak_memory()
  t0 = time.perf_counter()
  compiled = step.lower(state, data).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state, "metrics": None}

  def call():
    holder["state"], holder["metrics"] = compiled(holder["state"], data)
    return holder["state"], holder["metrics"]

  time_calls(call, 1 + warmup)
  times = time_calls(call, repeats, MIN_TIME_S)
  m = {k: float(v) for k, v in jax.device_get(holder["metrics"]).items() if np.ndim(v) == 0}
  rec = record(kind="train", model=model_name, batch=batch, method=variant, compile_s=compile_s,
               times=times, xla_temp_mb=round_or_none(temp_mb(compiled)),
               attack_steps=round_or_none(m.get("attack_steps")),
               stopped_early=round_or_none(m.get("stopped_early")),
               finite_metrics=all(np.isfinite(v) for v in m.values()))
  return rec, holder["state"]


# --------------------------------------------------------------------------------------------------
# Attacks alone.


def uses_conv(model, variables, x) -> bool:
  """Whether ``model.apply(variables, x)`` calls a :class:`robust_jax.models.layers.Conv`."""
  seen = []

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, layers.Conv):
      seen.append(True)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda v, xx: model.apply(v, xx), variables, x)
  return bool(seen)


def unrolled_pgd(logits_fn, x, y, key, *, eps, step_size, num_steps):
  """PGD-K as a Python loop: K steps and K + 1 gradient evaluations, as the library's loop."""
  def grad(xx):
    return jax.grad(lambda z: jnp.sum(losses.cross_entropy(logits_fn(z), y)))(xx)

  x_adv = jnp.clip(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), 0.0, 1.0)
  g = grad(x_adv)
  for _ in range(num_steps):
    x_adv = jnp.clip(jnp.clip(x_adv + step_size * jnp.sign(g), x - eps, x + eps), 0.0, 1.0)
    g = grad(x_adv)
  return x_adv, g


def attack_fn(name: str, logits_fn, x, y, key, spec: ModelSpec, flags_: Dict[str, Any]):
  """The attack ``name`` of :data:`~robust_jax.benchmarking.specs.ATTACKS` (not ``autoattack``,
  which is not jittable) against ``logits_fn``, with the budgets of ``spec`` and ``flags_``
  (``fosc_c``, ``apgd_iter``).

  Raises:
    ValueError: for an unknown name.
  """
  eps, a = spec.eps, spec.step_size
  if name == "fwd_bwd":
    return jax.grad(lambda z: jnp.sum(losses.cross_entropy(logits_fn(z), y)))(x)
  if name in ("pgd10", "pgd20", "pgd10_default_vjp"):
    k = 20 if name == "pgd20" else 10
    return attacks.pgd(logits_fn, x, y, eps=eps, step_size=a, num_steps=k, start="uniform",
                       key=key)
  if name == "pgd10_unrolled":
    return unrolled_pgd(logits_fn, x, y, key, eps=eps, step_size=a, num_steps=10)
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
                 options: Dict[str, Any],
                 calls: Optional[Dict[str, Callable]] = None) -> Optional[Dict[str, Any]]:
  """Times one attack against the model in ``state`` (eval mode).

  The labels are the model's own predictions, so every example starts correctly classified
  (``pgd10_fat*``: every other label off by one). ``pgd10_default_vjp`` attacks the same model
  built with ``conv_vjp="jax"`` (JAX's own convolution gradient instead of the custom VJP).

  Args:
    model_name: a model of the registry.
    attack: a name of :data:`~robust_jax.benchmarking.specs.ATTACKS`.
    state: a train state of that model (its params and batch_stats are attacked).
    batch: the batch size.
    repeats: the minimum number of timed calls (at most 2 for the expensive attacks).
    warmup: untimed calls after the first one (none for the expensive attacks).
    options: ``apgd_iter``, ``aa_n_iter``, ``aa_n_queries``, ``fosc_c``.
    calls: if given, receives ``attack -> the timed call`` (for
      :func:`~robust_jax.benchmarking.runs.alternate`).

  Returns:
    The record (``steps_mean`` / ``steps_max`` for attacks returning an ``AttackResult``), or None
    if the attack does not apply (``pgd10_default_vjp`` on a model without convolutions).
  """
  spec = spec_for(model_name)
  model = models.get_model(model_name, num_classes=10)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  x = synthetic_batch(spec.image_shape, batch, seed=1)["image"]
  if attack == "pgd10_default_vjp" and not uses_conv(model, variables, x):
    return None
  if attack in LINEN_ATTACKS:
    if model_name != "small_cnn":
      return None  # the user's model is SmallCNN's plain-linen twin
    model = user_models.PlainSmallCNN()
    variables = jax.jit(model.init)(jax.random.key(0), x[:1])
  # The model whose gradients the attack takes: the same parameters, convolutions differentiated
  # by JAX's own rules for the default-VJP row; the user's model through the fast path.
  attacked = (models.get_model(model_name, num_classes=10, conv_vjp="jax")
              if attack == "pgd10_default_vjp" else model)
  base, through_fast = LINEN_ATTACKS.get(attack, (attack, False))
  wrap = models.fast if through_fast else (lambda fn: fn)
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
  reset_peak_memory()
  if attack == "autoattack":
    logits_fn = jax.jit(lambda xx: model.apply(variables, xx))
    run = lambda: attacks.autoattack(
        logits_fn, x, y, eps=spec.eps, key=key, version="standard", n_iter=options["aa_n_iter"],
        n_queries=options["aa_n_queries"]).x_adv
    t0 = time.perf_counter()
    jax.block_until_ready(run())
    first = time.perf_counter() - t0
    times = time_calls(run, max(1, repeats))
    compile_s = max(first - statistics.median(times), 0.0)
    extra["budget"] = f"n_iter={options['aa_n_iter']}, n_queries={options['aa_n_queries']}"
  else:
    def fn(v, xx, yy, kk):
      return attack_fn(base, wrap(lambda z: attacked.apply(v, z)), xx, yy, kk, spec, options)

    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(variables, x, y, key).compile()
    compile_s = time.perf_counter() - t0
    out = {}

    def call():
      out["r"] = compiled(variables, x, y, key)
      return out["r"]

    time_calls(call, 1 + warmup)
    times = time_calls(call, repeats, 0.0 if attack in EXPENSIVE_ATTACKS else MIN_TIME_S)
    if calls is not None:
      calls[attack] = call
    extra["xla_temp_mb"] = round_or_none(temp_mb(compiled))
    r = out["r"]
    if isinstance(r, attacks.AttackResult):
      extra["steps_mean"] = round_or_none(jnp.mean(r.num_steps))
      extra["steps_max"] = int(jnp.max(r.num_steps))
    if base == "apgd_ce":
      extra["budget"] = f"n_iter={options['apgd_iter']}"
    if attack == "pgd10_fosc":
      extra["budget"] = f"c={options['fosc_c']}"
  return record(kind="attack", model=model_name, batch=batch, method=attack, compile_s=compile_s,
                times=times, **extra)
