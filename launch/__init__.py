"""absl-flag entry points: parse flags, call one library function."""

from robust_jax import xla_flags as _xla_flags

_xla_flags.configure_cpu()
