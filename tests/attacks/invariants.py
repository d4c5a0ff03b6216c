"""The attack invariants shared by the attack tests, for float32 and bfloat16 inputs (test helper).

* :func:`check_in_ball_and_box`: the iterate keeps the input's shape and dtype, lies in the eps-ball
  around the input and in [0, 1]. float32 iterates are held to ``eps * (1 + 1e-5) + 1e-6``; a
  bfloat16 iterate is a float32 projection rounded to bfloat16, so it is allowed one bfloat16 ulp
  more per coordinate, at the magnitude of the larger of the two values (for l2, the l2 norm of
  those ulps). The box needs no slack in either dtype: 0 and 1 are bfloat16 numbers.
* :func:`run_attack`: runs an attack (bfloat16 inputs are supported; no case is excused).
* :func:`traced_at_most_once`: "one compilation across these calls", with
  ``chex.assert_max_traces``.
"""

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np

DTYPES = ("float32", "bfloat16")



def run_attack(dtype, attack, *args, **kwargs):
  """``attack(*args, **kwargs)``: bfloat16 inputs are supported by PGD and APGD (the projection
  keeps the images' dtype, the validation accepts every JAX float type), so no case is excused;
  ``dtype`` names the case for the reader."""
  del dtype
  return attack(*args, **kwargs)


def _per_example(a, norm):
  a = a.reshape(a.shape[0], -1)
  return np.max(np.abs(a), 1) if norm == "linf" else np.linalg.norm(a, axis=1)


def dist(a, b, norm):
  """Per-example linf or l2 distance [B], computed in float32 (exact for bfloat16 values)."""
  d = (jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32)).reshape(a.shape[0], -1)
  return jnp.max(jnp.abs(d), 1) if norm == "linf" else jnp.linalg.norm(d, axis=1)


def check_in_ball_and_box(x_adv, x, eps, norm):
  """Asserts the shape and dtype of ``x``, the eps-ball around ``x`` and the [0, 1] box."""
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype, (x_adv.shape, x_adv.dtype)
  slack = 0.0
  if x.dtype == jnp.bfloat16:
    mag = np.maximum(np.abs(np.asarray(x_adv)), np.abs(np.asarray(x)))
    slack = _per_example(np.spacing(mag).astype(np.float64), norm)
  d = np.asarray(dist(x_adv, x, norm), np.float64)
  assert np.all(d <= eps * (1 + 1e-5) + 1e-6 + slack), float(np.max(d - slack))
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def traced_at_most_once(jitted):
  """A fresh ``jax.jit`` of the function behind ``jitted``, wrapped in
  ``chex.assert_max_traces(n=1)``: its second trace (a recompilation) raises AssertionError.

  The attacks' compiled cores take their static options keyword-only, so those are the static
  arguments. Clears chex's trace counters; ``chex.clear_trace_counter()`` opens a new window. Swap
  it in for the core (``monkeypatch.setattr(module, "_core", traced_at_most_once(module._core))``)
  and call the public function.
  """
  fn = jitted.__wrapped__
  static = [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY]
  chex.clear_trace_counter()
  return jax.jit(chex.assert_max_traces(fn, n=1), static_argnames=static)


def tanh_mlp_case(key, batch, side, channels, *, scale, flip):
  """``(f, x, y)``: a tanh MLP ``f`` on random ``[batch, side, side, channels]`` images whose first
  and last rows lie on the faces of the box (so candidates get clipped), labelled by ``f`` itself
  (so every point is attacked) except example ``flip``, whose label is shifted (misclassified)."""
  k1, k2, k3 = jax.random.split(key, 3)
  w1 = jax.random.normal(k1, (side * side * channels, 16)) * scale
  w2 = jax.random.normal(k2, (16, 10))

  def f(v):
    return jnp.tanh(v.reshape(v.shape[0], -1) @ w1) @ w2

  x = jax.random.uniform(k3, (batch, side, side, channels))
  x = x.at[:, 0].set(0.0).at[:, -1].set(1.0)
  y = np.asarray(jnp.argmax(f(x), -1)).astype(np.int32)
  y[flip] = (y[flip] + 1) % 10
  return f, x, jnp.asarray(y)


def recording(f):
  """``(logits_fn, calls)``: ``f`` that appends every batch it is evaluated on to ``calls``."""
  calls = []

  def logits_fn(v):
    jax.debug.callback(lambda a: calls.append(np.asarray(a)), v, ordered=True)
    return f(v)

  return logits_fn, calls
