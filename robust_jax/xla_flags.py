"""XLA flags that make adversarial training fast on CPU.

``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`` turns off a convolution fusion of
this jaxlib whose scratch buffer (about 85 MB) is page-faulted on every call; on the project's 2-core
CPU it made a PGD-10 training step about 1.3x faster (../shared/reference/environment.md, section 12).
It only affects the CPU backend. The flags must be in ``XLA_FLAGS`` before JAX initialises its
backends, so launchers call :func:`configure_cpu` first thing; notebooks may call it before any JAX
computation. Set ``ROBUST_JAX_NO_XLA_FLAGS=1`` to leave ``XLA_FLAGS`` alone.
"""

import os

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def configure_cpu() -> None:
  """Appends :data:`CPU_FLAGS` to ``XLA_FLAGS`` unless already present or disabled."""
  if os.environ.get("ROBUST_JAX_NO_XLA_FLAGS"):
    return
  flags = os.environ.get("XLA_FLAGS", "")
  for flag in CPU_FLAGS:
    if flag.split("=")[0] not in flags:
      flags = f"{flags} {flag}".strip()
  os.environ["XLA_FLAGS"] = flags
