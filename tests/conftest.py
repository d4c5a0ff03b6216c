"""Test configuration: the CPU XLA flags of the project and small shared fixtures."""

import os

# Faster CPU convolutions (see robust_jax/xla_flags.py); must be set before JAX starts.
from robust_jax import xla_flags  # noqa: E402

# The suite compiles hundreds of small programs and runs each for milliseconds, so on CPU its time
# is mostly XLA:CPU's LLVM optimisation. Level 0 keeps the HLO passes (fusion, the disabled
# cse_barrier_expander, layouts) and the same operations, and skips the machine-code optimisation:
# measured on the 2-core CPU from a cold compilation cache, tests/training/test_every_method.py with
# tests/attacks/test_attacks.py took 202 -> 110 CPU-s, tests/launch/test_launch.py,
# tests/models/test_models.py and tests/training/test_loop.py 326 -> 182, the whole suite 1,905 ->
# 1,421 test-seconds (the launchers', notebooks' and workers' subprocesses inherit the flag). Every
# comparison a test makes is between computations under the same flags; launchers, notebooks run
# by hand and benchmarks keep XLA's default. Tests marked ``xla_default`` run under the default
# level only: their work is long loops (slower unoptimised), or they compare a chaotic trajectory
# or a margin at the rounding level, calibrated under it (at level 0 APGD's l2 iterates moved 1e-5
# from the op-by-op transcription, and APGD-T's one step sign). They are skipped here and run by
# ``bash run.sh test``'s second pass (``-m xla_default`` with ROBUST_JAX_TEST_XLA_OPT=default;
# that variable alone runs the whole suite under the default level). Only on CPU-only
# installations (an accelerator's kernels would run unoptimised).
TEST_CPU_FLAGS = ("--xla_backend_optimization_level=0",)
UNOPTIMISED = (os.environ.get("ROBUST_JAX_TEST_XLA_OPT") != "default"
               and not xla_flags.accelerator_plugin_installed())
if UNOPTIMISED:
  for _flag in TEST_CPU_FLAGS:
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
      os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()
xla_flags.configure_cpu()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX's persistent compilation cache, shared by the xdist workers and every subprocess the tests
# start (launchers, notebooks, workers): the same small programs (the digits MLP's steps and
# attacks) are compiled by many tests; measured on tests/launch + tests/experiments, 159 -> 145 s
# from a cold cache. Set ROBUST_JAX_TEST_JIT_CACHE=0 to compile everything afresh.
if os.environ.get("ROBUST_JAX_TEST_JIT_CACHE", "1") != "0":
  import tempfile  # noqa: E402
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                        os.path.join(tempfile.gettempdir(), "robust_jax_test_jit_cache"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 * 2**30))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

from absl import logging as absl_logging  # noqa: E402

from robust_jax.data import digits  # noqa: E402


def pytest_collection_modifyitems(config, items):
  """Under :data:`TEST_CPU_FLAGS`, skips the tests marked ``xla_default`` (see above)."""
  del config
  if UNOPTIMISED:
    skip = pytest.mark.skip(reason="runs under XLA's default optimisation level: "
                            "ROBUST_JAX_TEST_XLA_OPT=default (bash run.sh test does)")
    for item in items:
      if "xla_default" in item.keywords:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_absl_verbosity():
  """Launchers called in-process set absl's verbosity (``launch.reproduce`` sets ERROR); restore it
  after each test, so that a later test in the same worker still sees warnings (caplog)."""
  level = absl_logging.get_verbosity()
  yield
  absl_logging.set_verbosity(level)


def _mlp_apply(p, x):
  h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"])
  return h @ p["w2"] + p["b2"]


@pytest.fixture(scope="session")
def mlp_apply():
  """``apply(params, x) -> logits`` of the 64-64-10 ReLU MLP of the digits fixtures."""
  return _mlp_apply


@pytest.fixture(scope="session")
def digits_splits():
  """scikit-learn's digits, split by :func:`robust_jax.data.digits.load_digits_splits`."""
  return digits.load_digits_splits()


@pytest.fixture(scope="session")
def train_digits_mlp(digits_splits):
  """``seed -> params``: the MLP trained without attacks on the digits' training split (300
  full-batch Adam steps at 1e-2; about 98% clean test accuracy). Trained once per seed."""
  x_tr = jnp.asarray(digits_splits["train"]["image"])
  y_tr = jnp.asarray(digits_splits["train"]["label"])
  opt = optax.adam(1e-2)

  @jax.jit
  def step(p, s):
    g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        _mlp_apply(p, x_tr), y_tr).mean())(p)
    u, s = opt.update(g, s)
    return optax.apply_updates(p, u), s

  trained = {}

  def train(seed):
    if seed not in trained:
      k1, k2 = jax.random.split(jax.random.key(seed))
      params = {"w1": jax.random.normal(k1, (64, 64)) / 8.0, "b1": jnp.zeros(64),
                "w2": jax.random.normal(k2, (64, 10)) / 8.0, "b2": jnp.zeros(10)}
      state = opt.init(params)
      for _ in range(300):
        params, state = step(params, state)
      trained[seed] = params
    return trained[seed]

  return train


@pytest.fixture(scope="session")
def digits_mlp(train_digits_mlp, digits_splits):
  """``(params, logits_fn, x, y)``: the seed-0 MLP, its ``jax.tree_util.Partial`` logits function
  and the test split's images and labels (tests take their first ``N_TEST``)."""
  params = train_digits_mlp(0)
  x = jnp.asarray(digits_splits["test"]["image"])
  y = jnp.asarray(digits_splits["test"]["label"])
  return params, jax.tree_util.Partial(_mlp_apply, params), x, y
