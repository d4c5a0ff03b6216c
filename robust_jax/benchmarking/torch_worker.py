"""The PyTorch comparison: a ``benchmark_torch.py`` worker process and the alternating session.

``launch/benchmark_torch.py`` is a standalone PyTorch script (it runs in its own virtual environment
and never imports jax); :class:`TorchWorker` starts it with ``--worker`` and reads one JSON line per
command. :func:`torch_comparison` alternates, in one session, the library's PGD-10 AT step (with
and without diagnostics), :func:`minimal_steps` (a hand-written JAX step doing exactly PyTorch's
work) and four PyTorch variants (default or ``channels_last``, with and without the glibc malloc
tuning), so that a load change on a shared machine hits every implementation alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import time
from typing import Any, Callable, Dict, List

import jax
import jax.numpy as jnp
import optax

from robust_jax import losses, models
from robust_jax.benchmarking.specs import (FAST, GLIBC_TUNABLES, LIB_FAST_LABEL, LIB_LABEL,
                                           MIN_LABEL, MODEL_SPECS, NUM_STEPS, STEPS_PER_EPOCH,
                                           TORCH_MODELS, make_config, new_state)
from robust_jax.benchmarking.timing import device_name, synthetic_batch, time_calls
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib


class TorchWorker:
  """A ``benchmark_torch.py --worker`` subprocess (one per PyTorch variant).

  Args:
    python: a Python interpreter with ``torch`` and ``numpy``.
    script: the path of ``launch/benchmark_torch.py`` (a standalone script: it never imports jax).
    channels_last: run the PyTorch model in ``channels_last`` memory format.
    malloc: set ``GLIBC_TUNABLES`` to :data:`~robust_jax.benchmarking.specs.GLIBC_TUNABLES`.
    batch: the batch size.
    model: one of :data:`~robust_jax.benchmarking.specs.TORCH_MODELS`.

  Raises:
    RuntimeError: if the worker exits before its first line.
  """

  def __init__(self, python: str, *, script: str, channels_last: bool, malloc: bool, batch: int,
               model: str = "small_cnn"):
    env = dict(os.environ)
    env.pop("GLIBC_TUNABLES", None)
    if malloc:
      env["GLIBC_TUNABLES"] = GLIBC_TUNABLES
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
    """Seconds of each of ``n`` steps of ``kind`` (``"at"`` or ``"clean"``), timed by the worker."""
    self.proc.stdin.write(f"{kind} {n}\n")
    self.proc.stdin.flush()
    return json.loads(self.proc.stdout.readline())["times_s"]

  def close(self):
    """Asks the worker to quit and waits for it (at most a minute)."""
    with contextlib.suppress(Exception):
      self.proc.stdin.write("quit\n")
      self.proc.stdin.flush()
    self.proc.wait(timeout=60)


def minimal_steps(model, tx, *, eps, step_size, num_steps):
  """A hand-written JAX AT step with exactly PyTorch's work: K gradients, no metrics, no extras.

  ``variables`` = {"params": ..., "batch_stats": ...} (an empty batch_stats for models without
  BatchNorm); the attack runs in eval mode, the update in train mode.

  Returns:
    ``(at_step, clean_step)``, jitted with the variables and the optimizer state donated:
    ``at_step(variables, opt_state, x, y, key)`` (PGD-K with a uniform start, then one update on
    the adversarial batch) and ``clean_step(...)`` (the update on x), each returning
    ``(variables, opt_state, loss)``.
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


def torch_comparison(python: str, *, script: str, rounds: int, steps: int,
                     model_name: str = "small_cnn", batch: int = 0) -> List[Dict[str, Any]]:
  """JAX (library and minimal) and PyTorch (4 variants) AT steps, alternating, one session.

  Each round times ``steps`` AT and clean steps of every implementation in turn (a short pause
  between them lets the other framework's threads go idle); the records hold the median over
  rounds of each round's median and the median of the per-round ratios to the JAX steps.

  Args:
    python: a Python with ``torch`` (:class:`TorchWorker`).
    script: the path of ``launch/benchmark_torch.py``.
    rounds: alternation rounds, >= 1.
    steps: timed steps per implementation, kind and round.
    model_name: one of :data:`~robust_jax.benchmarking.specs.TORCH_MODELS`.
    batch: the batch size (0: the model's default).

  Returns:
    One ``kind="framework"`` record per implementation.

  Raises:
    ValueError: for a model the PyTorch script does not have.
  """
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
    holder = {"s": new_state(config, model, tx, spec.image_shape)}
    t0 = time.perf_counter()
    compiled = jax.jit(step_lib.make_train_step(config, model, tx, lr_fn, STEPS_PER_EPOCH),
                       donate_argnums=0).lower(holder["s"], data).compile()
    compile_s[f"{label}/{variant}"] = time.perf_counter() - t0

    def call(compiled=compiled, holder=holder):
      holder["s"], m = compiled(holder["s"], data)
      return holder["s"], m

    time_calls(call, 3)
    impls.setdefault(label, {})[
        "clean" if variant.startswith("standard") else "at"] = (
            lambda n, call=call: time_calls(call, n))
  # The minimal JAX step.
  model = models.get_model(model_name, num_classes=10)
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.01, momentum=0.9))
  at_fn, clean_fn = minimal_steps(model, tx, eps=spec.eps, step_size=spec.step_size,
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
    time_calls(minimal(fn), 1)
    compile_s[f"min/{kind}"] = time.perf_counter() - t0
    time_calls(minimal(fn), 2)
    impls.setdefault(MIN_LABEL, {})[kind] = (
        lambda n, c=minimal(fn): time_calls(c, n))
  # PyTorch workers.
  workers = []
  try:
    for malloc in (False, True):
      for cl in (False, True):
        w = TorchWorker(python, script=script, channels_last=cl, malloc=malloc, batch=batch,
                        model=model_name)
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
        peak_mem_mb=None, device=device_name(), rounds=rounds, steps_per_round=steps,
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
