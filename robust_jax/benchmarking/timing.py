"""Measuring: wall-clock timing of compiled calls, peak memory, synthetic data, the machine.

Every measurement of :mod:`robust_jax.benchmarking.runs` is a median of :func:`time_calls` (each
call waited for with ``jax.block_until_ready``), turned into a record by :func:`record`:
``step_ms``, ``examples_per_s``, ``peak_mem_mb`` (the process's peak resident set since the last
:func:`reset_peak_memory`, or the accelerator's ``peak_bytes_in_use``) and the device.

Example:

>>> import jax.numpy as jnp
>>> times = time_calls(lambda: jnp.ones(3) * 2, repeats=3)
>>> rec = record(kind="attack", model="mlp", batch=8, method="fwd_bwd", compile_s=0.5, times=times)
>>> len(times), rec["name"], rec["step_ms"] > 0, rec["repeats"]
(3, 'attack/mlp/fwd_bwd/b8', True, 3)
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax


def reset_peak_memory() -> None:
  """Resets the process's peak-RSS high-water mark (Linux >= 4.0); a no-op elsewhere."""
  with contextlib.suppress(OSError):
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")


def peak_memory_mb() -> float:
  """Peak device memory where JAX reports it (accelerators), else the process's peak RSS."""
  with contextlib.suppress(Exception):
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
      return stats["peak_bytes_in_use"] / 2**20
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / (2**20 if sys.platform == "darwin" else 2**10)


def device_name() -> str:
  """``platform:device_kind xN`` of the default backend (``cpu:cpu x1``)."""
  d = jax.devices()[0]
  return f"{d.platform}:{getattr(d, 'device_kind', d.platform)} x{jax.device_count()}"


def temp_mb(compiled) -> Optional[float]:
  """XLA's scratch memory of a compiled program in MiB (``memory_analysis``), None if unknown."""
  with contextlib.suppress(Exception):
    return compiled.memory_analysis().temp_size_in_bytes / 2**20
  return None


def time_calls(call: Callable[[], Any], repeats: int, min_time_s: float = 0.0,
               max_repeats: int = 1000) -> List[float]:
  """Times ``repeats`` calls, and more while their total is under ``min_time_s``.

  Fast steps get enough samples for a stable median on a noisy machine. Each call's result is
  waited for with ``jax.block_until_ready``.

  Args:
    call: a function of no argument returning arrays (or a pytree of them).
    repeats: the minimum number of timed calls, >= 1.
    min_time_s: keep calling until the timed calls add up to this many seconds...
    max_repeats: ...or until this many calls.

  Returns:
    The wall-clock seconds of each call.
  """
  times = []
  while len(times) < repeats or (sum(times) < min_time_s and len(times) < max_repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - t0)
  return times


def record(*, kind, model, batch, method, compile_s, times, **extra) -> Dict[str, Any]:
  """One measurement as a JSON-ready dict: the median of ``times`` as ``step_ms``, examples/s, the
  spread, the peak memory and the device; ``extra`` fields are added unless None."""
  step_s = statistics.median(times)
  rec = dict(name=f"{kind}/{model}/{method}/b{batch}", kind=kind, model=model, batch=batch,
             method=method, compile_s=round(compile_s, 3), step_ms=round(1e3 * step_s, 3),
             examples_per_s=round(batch / step_s, 2), peak_mem_mb=round(peak_memory_mb(), 1),
             device=device_name(), repeats=len(times), step_ms_min=round(1e3 * min(times), 3),
             step_ms_max=round(1e3 * max(times), 3))
  rec.update({k: v for k, v in extra.items() if v is not None})
  return rec


def synthetic_batch(image_shape, batch: int, seed: int = 0) -> Dict[str, jax.Array]:
  """Uniform [0, 1] images and uniform labels in 0..9 (the timings do not depend on the values)."""
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.uniform(size=(batch,) + tuple(image_shape)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, 10, size=batch), jnp.int32)}


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
              optax=optax.__version__, device=device_name(),
              xla_flags=os.environ.get("XLA_FLAGS", ""), loadavg=loadavg())


def loadavg() -> str:
  """The 1, 5 and 15 minute load averages as ``"a b c"`` (``"?"`` where unknown)."""
  with contextlib.suppress(OSError):
    return " ".join(f"{v:.2f}" for v in os.getloadavg())
  return "?"


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
  """XLA's float32 matmul throughput at n x n (a rough roof for this machine)."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda u, v: u @ v)
  jax.block_until_ready(f(a, a))
  t = statistics.median(time_calls(lambda: f(a, a), repeats))
  return 2 * n**3 / t / 1e9


def round_or_none(v, n: int = 3) -> Optional[float]:
  """``round(float(v), n)``, or None for None."""
  return None if v is None else round(float(v), n)
