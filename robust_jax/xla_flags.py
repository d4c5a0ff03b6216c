"""XLA flags that make adversarial training fast, and rematerialisation work, on CPU.

* ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`` turns off a convolution fusion
  of this jaxlib whose scratch buffer (about 85 MB) is page-faulted on every call; on the project's
  2-core CPU it made a PGD-10 training step about 1.3x faster (../shared/reference/environment.md,
  section 12). It only affects the CPU backend.
* ``--xla_disable_hlo_passes=cse_barrier_expander``: ``jax.checkpoint`` (``nn.remat``, the models'
  ``remat=True``) keeps its recomputation from being merged back into the forward pass with
  ``optimization_barrier``s; XLA:CPU's pipeline expands (deletes) those barriers *before* its CSE
  pass, which then undoes the rematerialisation: on jaxlib 0.10.2 a WRN-34-10's parameter gradient
  at batch 8 took 278 MB of XLA scratch memory with and without ``remat``, and a 10-block tanh chain
  needed *more* memory with ``jax.checkpoint`` (800 MB against 656 MB) since the recomputed
  element-wise ops stayed. With the pass disabled the barriers survive to the CPU emitter (which
  runs them as no-ops), the recomputation happens and the memory falls: 278 -> 66 MB for the
  WRN-34-10 gradient, 656 -> 224 MB for the chain (peak RSS 971 -> 541 MB). Programs without
  barriers compile unchanged. The flag names a pass of every backend, so it is added only when no
  GPU/TPU plugin of JAX is installed (the accelerators' pipelines keep their own order, unmeasured
  here).

The flags must be in ``XLA_FLAGS`` before JAX initialises its backends, so launchers call
:func:`configure_cpu` first thing; notebooks may call it before any JAX computation. Set
``ROBUST_JAX_NO_XLA_FLAGS=1`` to leave ``XLA_FLAGS`` alone.
"""

import importlib.metadata
import os

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
DISABLE_PASSES = "--xla_disable_hlo_passes"
# HLO passes disabled on CPU-only installations (see the module docstring).
CPU_DISABLED_PASSES = ("cse_barrier_expander",)
_ACCELERATOR_PLUGINS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")


def accelerator_plugin_installed() -> bool:
  """Whether a GPU or TPU plugin of JAX (``jax-cuda*``, ``jax-rocm*``, ``libtpu``) is installed."""
  names = (d.metadata.get("Name", "") or "" for d in importlib.metadata.distributions())
  return any(n.lower().startswith(_ACCELERATOR_PLUGINS) for n in names)


def with_disabled_passes(flags: str, passes) -> str:
  """``flags`` with ``passes`` added to its ``--xla_disable_hlo_passes`` list (created if absent)."""
  parts = flags.split()
  for i, part in enumerate(parts):
    if part.startswith(DISABLE_PASSES + "="):
      listed = [p for p in part.split("=", 1)[1].split(",") if p]
      parts[i] = f"{DISABLE_PASSES}=" + ",".join(listed + [p for p in passes if p not in listed])
      return " ".join(parts)
  return " ".join(parts + [f"{DISABLE_PASSES}=" + ",".join(passes)])


def configure_cpu() -> None:
  """Appends :data:`CPU_FLAGS` (and, without an accelerator plugin, :data:`CPU_DISABLED_PASSES`) to
  ``XLA_FLAGS`` unless already present or disabled."""
  if os.environ.get("ROBUST_JAX_NO_XLA_FLAGS"):
    return
  flags = os.environ.get("XLA_FLAGS", "")
  for flag in CPU_FLAGS:
    if flag.split("=")[0] not in flags:
      flags = f"{flags} {flag}".strip()
  if not accelerator_plugin_installed():
    flags = with_disabled_passes(flags, CPU_DISABLED_PASSES)
  os.environ["XLA_FLAGS"] = flags
