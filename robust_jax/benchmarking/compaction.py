"""Compaction per device: FAT's and Dynamic AT's training steps with and without it, on 8 devices.

What :func:`bench_compaction` measures. The early-stopping attacks of FAT and Dynamic AT halve their
batch as examples stop (``attack_compaction``, :func:`robust_jax.attacks.ascent`); on several
devices each device compacts its own shard (:func:`robust_jax.parallel.per_device`). For each model,
each method (``fat``, ``dart``) and each device count (8 host CPU devices,
``--xla_force_host_platform_device_count=8``, and one), in a worker process of its own (the device
count is fixed when JAX starts), the library's training step is built as the trainer builds it
(``step.make_train_step`` under ``parallel.jit_data_parallel``: state replicated, batch sharded),
compiled ahead of time, and timed with compaction (``method``, the config's default 3 levels) and
without (``method@attack_compaction=0``).

The work is the same in every call: the step is called again and again on the initial state (not
donated) and one fixed synthetic batch whose labels are the initial model's predictions with every
other label off by one (half the batch starts misclassified, as in the ``pgd10_fat`` attack rows of
BENCHMARKS.md: FAT stops those examples at once, the others run until misclassified or K = 10;
Dynamic AT stops examples by FOSC). Compaction does not change the trajectories, so both contenders
run the same attack (their ``attack_steps`` agree) and only the loop's batch sizes differ.

The contenders of one worker are timed alternately, ``rounds`` rounds, the order reversed every
other round, each contender called until its calls of a round add up to ``min_time_s``. The saving
of a method is ``1 - t_compact / t_plain``, the median over the rounds of the per-round ratio of the
two contenders' median call times (a load change on a shared machine hits both alike).

Example (the table from records; :func:`bench_compaction` produces them by measuring):

>>> rows = [dict(kind="compaction_saving", model="mlp", batch=128, method="fat", devices=d,
...              plain_ms=p, compact_ms=c, saving=1 - c / p, attack_steps=3.5)
...         for d, p, c in ((1, 4.0, 2.0), (8, 6.0, 4.5))]
>>> print(compaction_markdown(rows))  # doctest: +NORMALIZE_WHITESPACE
| model | batch | method | attack steps | 1 device: plain ms | compact ms | saving |
  8 devices: plain ms | compact ms | saving |
|---|---|---|---|---|---|---|---|---|---|
| mlp | 128 | fat | 3.50 | 4.0 | 2.0 | 50% | 6.0 | 4.5 | 25% |
>>> bench_compaction(methods=("pgd_at",))  # checked before any worker starts
Traceback (most recent call last):
...
ValueError: methods: 'pgd_at' does not stop examples early; valid: ('fat', 'dart')
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

COMPACTION_METHODS = ("fat", "dart")
COMPACTION_MODELS = ("small_cnn", "mlp")
DEVICE_COUNTS = (8, 1)
PLAIN = "@attack_compaction=0"  # the variant suffix of the uncompacted contender
_RECORD = "COMPACTION_RECORD "  # the worker's stdout prefix of a JSON record
_DEVICE_FLAG = "--xla_force_host_platform_device_count"
_WORKER_MAIN = ("import json, sys; from robust_jax.benchmarking import compaction; "
                "compaction._worker(json.loads(sys.argv[1]))")


def _check(*, models, methods, device_counts, batch, rounds, min_time_s):
  from robust_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  for name in models:
    if name not in models_lib.MODELS:
      raise ValueError(f"models: unknown model {name!r}; valid: "
                       f"{', '.join(sorted(models_lib.MODELS))}")
  for m in methods:
    if m not in COMPACTION_METHODS:
      raise ValueError(f"methods: {m!r} does not stop examples early; valid: {COMPACTION_METHODS}")
  if not device_counts or any(not isinstance(n, int) or n < 1 for n in device_counts):
    raise ValueError(f"device_counts must be integers >= 1, got {device_counts!r}")
  if not isinstance(batch, int) or batch < 1 or any(batch % n for n in device_counts):
    raise ValueError(f"batch must be an integer >= 1 divisible by every device count "
                     f"{tuple(device_counts)}, got {batch!r}")
  if not isinstance(rounds, int) or rounds < 1:
    raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
  if min_time_s < 0:
    raise ValueError(f"min_time_s must be >= 0, got {min_time_s!r}")


def check_models(models: Sequence[str]) -> None:
  """Raises ValueError for a model that is not in the registry (``--compaction_models``), before
  any worker starts."""
  try:
    _check(models=models, methods=COMPACTION_METHODS, device_counts=DEVICE_COUNTS, batch=128,
           rounds=1, min_time_s=0.0)
  except ValueError as e:
    raise ValueError(f"--compaction_{e}") from e


def worker_env(devices: int, environ: Optional[Dict[str, str]] = None) -> Dict[str, str]:
  """The environment of a worker with ``devices`` host CPU devices: ``environ`` (default
  ``os.environ``) with any device-count flag of ``XLA_FLAGS`` replaced by ``devices``, the project's
  CPU flags added (:mod:`robust_jax.xla_flags`) and the repository on ``PYTHONPATH``.

  Example:
    >>> env = worker_env(8, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    >>> [f for f in env["XLA_FLAGS"].split() if "device_count" in f]
    ['--xla_force_host_platform_device_count=8']
  """
  env = dict(os.environ if environ is None else environ)
  flags = re.sub(rf"{_DEVICE_FLAG}=\S+", "", env.get("XLA_FLAGS", ""))
  if not env.get("ROBUST_JAX_NO_XLA_FLAGS"):
    from robust_jax import xla_flags  # pylint: disable=g-import-not-at-top
    for flag in xla_flags.CPU_FLAGS:
      if flag.split("=")[0] not in flags:
        flags = f"{flags} {flag}"
  env["XLA_FLAGS"] = f"{flags} {_DEVICE_FLAG}={devices}".strip()
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
  return env


class _Contender:
  """One compiled training step on a fixed state and batch: ``contender()`` runs one step."""

  def __init__(self, model_name: str, variant: str, batch: int, mesh):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    from robust_jax import parallel  # pylint: disable=g-import-not-at-top
    from robust_jax.benchmarking import specs, timing  # pylint: disable=g-import-not-at-top
    from robust_jax.models import functional  # pylint: disable=g-import-not-at-top
    from robust_jax.training import restore, step as step_lib  # pylint: disable=g-import-not-at-top

    spec = specs.spec_for(model_name)
    self.model_name, self.variant, self.batch = model_name, variant, batch
    config = specs.make_config(model_name, variant, batch)
    model = restore.build_model(config, num_classes=10)
    tx, lr_fn = step_lib.make_optimizer(config, specs.STEPS_PER_EPOCH)
    state = specs.new_state(config, model, tx, spec.image_shape)
    data = timing.synthetic_batch(spec.image_shape, batch)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = functional.as_model_fn(model).apply(variables, data["image"], train=False)[0]
    y = jnp.argmax(logits, -1).astype(jnp.int32)
    data["label"] = y.at[::2].set((y[::2] + 1) % 10)  # half the batch starts misclassified
    self.state, self.data = parallel.replicate(state, mesh), parallel.shard_batch(data, mesh)
    step = parallel.jit_data_parallel(
        step_lib.make_train_step(config, model, tx, lr_fn, specs.STEPS_PER_EPOCH), mesh,
        donate_state=False)
    t0 = time.perf_counter()
    self.compiled = step.lower(self.state, self.data).compile()
    self.compile_s = time.perf_counter() - t0
    self.metrics = None
    self._jax = jax

  def __call__(self):
    _, self.metrics = self.compiled(self.state, self.data)
    return self.metrics

  def metric(self, name: str) -> Optional[float]:
    m = self._jax.device_get(self.metrics or {})
    return float(m[name]) if name in m else None


def _worker(options: Dict[str, Any]) -> None:
  """Times the contenders of one device count; prints one JSON record per line."""
  import jax  # pylint: disable=g-import-not-at-top

  from robust_jax import parallel  # pylint: disable=g-import-not-at-top
  from robust_jax.benchmarking import timing  # pylint: disable=g-import-not-at-top

  devices, batch, rounds = options["devices"], options["batch"], options["rounds"]
  if jax.device_count() != devices:
    raise RuntimeError(f"the worker has {jax.device_count()} devices, not {devices}: XLA_FLAGS "
                       f"must hold {_DEVICE_FLAG}={devices} before JAX starts")
  mesh = parallel.make_mesh()
  for model_name in options["models"]:
    contenders = []
    for method in options["methods"]:
      for variant in (method, method + PLAIN):
        contenders.append(_Contender(model_name, variant, batch, mesh))
    for c in contenders:
      timing.time_calls(c, 1 + options["warmup"])
    times = {c.variant: [] for c in contenders}
    per_round = {c.variant: [] for c in contenders}
    for r in range(rounds):
      for c in (contenders if r % 2 == 0 else contenders[::-1]):
        t = timing.time_calls(c, 1, options["min_time_s"])
        times[c.variant].extend(t)
        per_round[c.variant].append(statistics.median(t))
    for c in contenders:
      rec = timing.record(
          kind="compaction", model=model_name, batch=batch, method=c.variant,
          compile_s=c.compile_s, times=times[c.variant], devices=devices,
          compaction=not c.variant.endswith(PLAIN), rounds=rounds,
          round_ms=[round(1e3 * t, 3) for t in per_round[c.variant]],
          attack_steps=timing.round_or_none(c.metric("attack_steps")),
          stopped_early=timing.round_or_none(c.metric("stopped_early")))
      rec["name"] += f"/x{devices}"
      print(_RECORD + json.dumps(rec), flush=True)


def savings(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """``kind="compaction_saving"`` rows from the ``kind="compaction"`` records of one session.

  For each model, method and device count with both contenders: ``plain_ms`` and ``compact_ms``
  (their ``step_ms``), ``saving`` = 1 - the median over rounds of the per-round ratio
  compact / plain, ``saving_per_round``, and ``attack_steps`` (the compacted step's;
  ``same_attack_steps``: whether the uncompacted step's agrees, i.e. the same work).
  """
  by_key = {(r["model"], r["method"], r["devices"]): r for r in records
            if r.get("kind") == "compaction"}
  out = []
  for (model, variant, devices), compact in by_key.items():
    plain = by_key.get((model, variant + PLAIN, devices))
    if variant.endswith(PLAIN) or plain is None:
      continue
    ratios = [c / p for c, p in zip(compact["round_ms"], plain["round_ms"]) if p > 0]
    out.append(dict(
        name=f"compaction_saving/{model}/{variant}/b{compact['batch']}/x{devices}",
        kind="compaction_saving", model=model, batch=compact["batch"], method=variant,
        devices=devices, plain_ms=plain["step_ms"], compact_ms=compact["step_ms"],
        saving=round(1 - statistics.median(ratios), 3) if ratios else None,
        saving_per_round=[round(1 - q, 3) for q in ratios], rounds=len(ratios),
        attack_steps=compact.get("attack_steps"),
        same_attack_steps=compact.get("attack_steps") == plain.get("attack_steps"),
        device=compact.get("device")))
  return out


def _fmt_ms(v) -> str:
  if v is None:
    return ""
  return f"{v:,.0f}" if v >= 100 else (f"{v:.1f}" if v >= 1 else f"{v:.2f}")


def compaction_markdown(rows: Sequence[Dict[str, Any]]) -> str:
  """The markdown table of :func:`savings` rows: per model and method, the 1-device plain and
  compacted step times and saving, then the 8-device ones (every device count present, in
  increasing order)."""
  saving_rows = [r for r in rows if r.get("kind") == "compaction_saving"]
  counts = sorted({r["devices"] for r in saving_rows})
  head = ["model", "batch", "method", "attack steps"]
  for n in counts:
    head += [f"{n} device{'s' if n > 1 else ''}: plain ms", "compact ms", "saving"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  keys = []
  for r in saving_rows:
    if (r["model"], r["batch"], r["method"]) not in keys:
      keys.append((r["model"], r["batch"], r["method"]))
  for model, batch, method in keys:
    cells = {r["devices"]: r for r in saving_rows
             if (r["model"], r["batch"], r["method"]) == (model, batch, method)}
    steps = next((c["attack_steps"] for c in cells.values() if c.get("attack_steps") is not None),
                 None)
    row = [model, str(batch), method, "" if steps is None else f"{steps:.2f}"]
    for n in counts:
      c = cells.get(n)
      row += (["", "", ""] if c is None else
              [_fmt_ms(c["plain_ms"]), _fmt_ms(c["compact_ms"]),
               "" if c["saving"] is None else f"{100 * c['saving']:.0f}%"])
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def bench_compaction(*, models: Sequence[str] = COMPACTION_MODELS,
                     methods: Sequence[str] = COMPACTION_METHODS,
                     device_counts: Sequence[int] = DEVICE_COUNTS, batch: int = 128,
                     rounds: int = 5, min_time_s: float = 1.0, warmup: int = 1,
                     timeout_s: float = 3600.0, python: str = sys.executable,
                     emit: Callable[[Dict[str, Any]], None] = lambda r: None
                     ) -> Tuple[List[Dict[str, Any]], str]:
  """Times FAT's and Dynamic AT's training steps with and without compaction on 8 devices and 1.

  One worker process per device count (:func:`worker_env`: ``XLA_FLAGS`` with
  ``--xla_force_host_platform_device_count``), the contenders alternated in it (module docstring).

  Args:
    models: models of the registry (default ``small_cnn`` and ``mlp``, the BENCHMARKS.md rows;
      their shapes and budgets are :data:`robust_jax.benchmarking.specs.MODEL_SPECS`').
    methods: methods whose attack stops examples early: ``fat``, ``dart``.
    device_counts: host CPU device counts, one worker each (default 8 and 1).
    batch: the global batch, divisible by every device count (default 128: 16 per device on 8).
    rounds: alternation rounds, >= 1.
    min_time_s: each contender is called until its calls of a round add up to this.
    warmup: untimed calls after the first one.
    timeout_s: the limit of one worker process.
    python: the Python interpreter of the workers.
    emit: called with each record as soon as it exists (the savings rows at the end).

  Returns:
    ``(rows, markdown)``: the ``kind="compaction"`` records of every contender
    (:func:`robust_jax.benchmarking.timing.record` fields plus ``devices``, ``compaction``,
    ``rounds``, ``round_ms``, ``attack_steps``, ``stopped_early``), then the
    ``kind="compaction_saving"`` rows of :func:`savings`; and :func:`compaction_markdown`'s table.

  Raises:
    ValueError: a bad argument (named), before any worker starts.
    RuntimeError: a worker that failed (its last output in the message).
  """
  _check(models=models, methods=methods, device_counts=device_counts, batch=batch, rounds=rounds,
         min_time_s=min_time_s)
  records = []
  for devices in device_counts:
    options = dict(models=list(models), methods=list(methods), devices=devices, batch=batch,
                   rounds=rounds, min_time_s=min_time_s, warmup=warmup)
    proc = subprocess.run([python, "-c", _WORKER_MAIN, json.dumps(options)],
                          env=worker_env(devices), capture_output=True, text=True,
                          timeout=timeout_s)
    if proc.returncode:
      raise RuntimeError(f"the {devices}-device compaction worker failed "
                         f"(exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    for line in proc.stdout.splitlines():
      if line.startswith(_RECORD):
        rec = json.loads(line[len(_RECORD):])
        records.append(rec)
        emit(rec)
  rows = savings(records)
  for r in rows:
    emit(r)
  return records + rows, compaction_markdown(rows)
