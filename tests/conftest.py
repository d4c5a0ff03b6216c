"""Test configuration: the CPU XLA flags of the project and small shared fixtures."""

import os

# Faster CPU convolutions (see robust_jax/xla_flags.py); must be set before JAX starts.
from robust_jax import xla_flags  # noqa: E402

xla_flags.configure_cpu()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
