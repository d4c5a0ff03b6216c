"""Tests of robust_jax.models.linen_fast: plain ``nn.Conv`` / ``nn.max_pool`` models, fast path.

The model under test is what a notebook user writes: ``flax.linen.Conv`` with strides 1 and 2, SAME,
VALID, CIRCULAR, int and explicit-pair padding, with and without bias, then ``nn.max_pool`` 2x2 and
a Dense layer, on 1 and 16 input channels (the shallow-patches and the custom-VJP routes of
:func:`robust_jax.models.kernels.conv2d`). With and without the fast path: the same parameters, the
same logits (1e-6), input and parameter gradients (1e-5), second-order gradients (1e-4, GradAlign's
double backprop) and PGD adversarial examples (1e-5; l2 PGD, whose step is continuous in the
gradient: linf's sign step can turn a rounding-level difference in a near-zero gradient entry into a
whole step); unsupported configurations fall back; a spy and the jaxpr prove the kernels were used;
flax's functions come back after an exception.
"""

import functools

import flax.linen as nn
import flax.linen.pooling as flax_pooling
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks
from robust_jax.models import kernels, linen_fast
from robust_jax.models.linen_fast import fast, fast_convolutions

_ORIGINAL_MAX_POOL = flax_pooling.max_pool


class UserCNN(nn.Module):
  """A user-style CNN of plain flax layers; spatial size 16 -> 16 -> 16 -> 14 -> 7 -> 4 -> 2."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(16, (3, 3), padding="SAME")(x))                        # stride 1, SAME
    x = nn.relu(nn.Conv(16, (3, 3), padding="CIRCULAR")(x))                    # flax pads, VALID
    x = nn.relu(nn.Conv(16, (3, 3), padding="VALID", use_bias=False)(x))        # VALID, no bias
    x = nn.max_pool(x, (2, 2), strides=(2, 2))                                  # 14 -> 7
    x = nn.relu(nn.Conv(16, (3, 3), strides=2, padding=1)(x))                   # int pad, stride 2
    x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2), padding=((1, 0), (0, 1)))(x))  # explicit pairs
    x = nn.relu(nn.Conv(8, (2, 2), strides=2, padding="SAME", use_bias=False)(x))  # SAME, stride 2
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


class Unsupported(nn.Module):
  """Configurations the kernels do not compute: they must fall back to flax's code."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(16, (3, 3), feature_group_count=2)(x))
    x = nn.relu(nn.Conv(16, (3, 3), kernel_dilation=2, padding="VALID")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2))                  # not 2x2
    x = nn.max_pool(x, (2, 2), strides=(2, 2))                  # odd map (5x5): flax floors it
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


@functools.lru_cache(maxsize=None)
def _inits(model, channels):
  """(variables initialised without, with the fast path), once per (model, channels) and in one
  compilation: initialisers compile slowly. ``fast`` enters the context at trace time."""
  x = jnp.zeros((1, 16, 16, channels))
  return jax.jit(lambda k: (model().init(k, x), fast(model().init)(k, x)))(jax.random.key(0))


def _variables(model, channels):
  return _inits(model, channels)[0]


def _setup(channels, batch=4, model=UserCNN):
  x = jax.random.uniform(jax.random.key(1), (batch, 16, 16, channels))
  y = jnp.arange(batch, dtype=jnp.int32) % 10
  return model(), _variables(model, channels), x, y


def _loss(model, variables, x, y):
  logits = model.apply(variables, x)
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def _both(fn):
  """(fn jitted plainly, fn jitted with the fast path): fresh jits, so each traces on its own."""
  return jax.jit(fn), jax.jit(fast(fn))


def _assert_close(a, b, atol):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=atol, rtol=0), a, b)


@pytest.mark.parametrize("channels", [1, 16])
def test_init_inside_the_context_gives_the_same_variables(channels):
  variables, inside = _inits(UserCNN, channels)
  assert jax.tree.structure(inside) == jax.tree.structure(variables)
  jax.tree.map(np.testing.assert_array_equal, inside, variables)


@pytest.mark.parametrize("channels", [1, 16])
def test_logits_and_gradients_unchanged(channels):
  model, variables, x, y = _setup(channels)

  def loss_and_logits(v, xx):
    logits = model.apply(v, xx)
    ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
    return ce, logits

  plain, quick = _both(jax.value_and_grad(loss_and_logits, argnums=(0, 1), has_aux=True))
  (_, got_logits), got_grads = quick(variables, x)
  (_, want_logits), want_grads = plain(variables, x)
  _assert_close(got_logits, want_logits, 1e-6)
  _assert_close(got_grads, want_grads, 1e-5)  # parameter and input gradients


def test_second_order_gradients_equal():
  """GradAlign's double backprop: the parameter and input gradients of ||grad_x loss||^2 (16 input
  channels, so every deep convolution and the pooling go through their custom VJPs)."""
  model, variables, x, y = _setup(16, batch=2)

  def grad_norm(v, xx):
    g = jax.grad(lambda z: _loss(model, v, z, y))(xx)
    return jnp.sum(g ** 2) * 1e4  # scaled so that the 1e-4 tolerance is not vacuous

  plain, quick = _both(jax.grad(grad_norm, argnums=(0, 1)))
  got, want = quick(variables, x), plain(variables, x)
  assert max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(want)) > 1e-2
  _assert_close(got, want, 1e-4)


def _custom_calls(fn, *args):
  text = str(jax.make_jaxpr(fn)(*args))
  return text.count("name=_conv2d"), text.count("name=_max_pool_2x2")


@pytest.mark.parametrize("channels, deep_convs", [(1, 4), (16, 5)])
def test_the_context_routes_to_the_kernels(channels, deep_convs, monkeypatch):
  """A spy counts kernels.conv2d calls and the jaxpr holds the custom-VJP calls: not a no-op."""
  model, variables, x, y = _setup(channels)
  seen = []

  def spy(xx, kernel, strides, padding, **kwargs):
    seen.append((xx.shape[-1], kernel.shape))
    return kernels.conv2d.__wrapped_spy__(xx, kernel, strides, padding, **kwargs)

  spy.__wrapped_spy__ = kernels.conv2d
  monkeypatch.setattr(kernels, "conv2d", spy)
  loss = lambda xx: _loss(model, variables, xx, y)
  assert _custom_calls(loss, x) == (0, 0) and not seen  # outside the context: flax's code
  # Shallow convolutions (kh * kw * C_in <= 32: the first on 1 channel, the last 2x2 on 8) run as
  # patches @ kernel, without a custom VJP.
  assert _custom_calls(fast(loss), x) == (deep_convs, 1)
  assert len(seen) == 6


def test_unsupported_configurations_fall_back_and_match():
  model, variables, x, y = _setup(4, model=Unsupported)
  loss = lambda v, xx: _loss(model, v, xx, y)
  assert _custom_calls(fast(lambda xx: loss(variables, xx)), x) == (0, 0)
  plain, quick = _both(jax.value_and_grad(loss, argnums=(0, 1)))
  _assert_close(quick(variables, x), plain(variables, x), 1e-5)


def test_conv_primitive_replacement_falls_back_outside_its_cases():
  """The drop-in primitive equals lax's on its fast cases and passes the others through."""
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
  w = jax.random.normal(jax.random.key(1), (3, 3, 4, 6))
  dn = ("NHWC", "HWIO", "NHWC")
  for strides, padding in (((1, 1), "SAME"), ((2, 2), "VALID"), ((2, 1), ((2, 1), (0, 3))),
                           ((1, 1), ((-1, 0), (0, 0))), ((1, 1), "SAME_LOWER")):
    got = linen_fast.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)
    want = jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)
    np.testing.assert_allclose(got, want, atol=1e-5)
  nchw = linen_fast.conv_general_dilated(jnp.moveaxis(x, 3, 1), jnp.transpose(w, (3, 2, 0, 1)),
                                         (1, 1), "SAME")
  np.testing.assert_allclose(jnp.moveaxis(nchw, 1, 3), jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=dn), atol=1e-5)


def test_bfloat16_conv_promotes_like_flax():
  model = nn.Conv(8, (3, 3), dtype=jnp.bfloat16, kernel_init=nn.initializers.normal(0.1))
  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 16))
  variables = jax.jit(model.init)(jax.random.key(1), x)
  plain, quick = _both(lambda v, xx: model.apply(v, xx))
  got, want = quick(variables, x), plain(variables, x)
  assert got.dtype == want.dtype == jnp.bfloat16
  np.testing.assert_allclose(got.astype(jnp.float32), want.astype(jnp.float32), atol=5e-2)


def test_pgd_in_a_while_loop_gives_the_same_adversarial_examples():
  model, variables, x, y = _setup(1, batch=4)
  logits_fn = jax.tree_util.Partial(lambda v, xx: model.apply(v, xx), variables)
  kwargs = dict(eps=0.1, step_size=0.02, num_steps=5, norm="l2", start="uniform",
                key=jax.random.key(3))
  plain = attacks.pgd(logits_fn, x, y, **kwargs)
  quick = attacks.pgd(fast(logits_fn), x, y, **kwargs)
  np.testing.assert_allclose(quick.x_adv, plain.x_adv, atol=1e-5)
  np.testing.assert_allclose(quick.loss, plain.loss, atol=1e-5)
  assert float(jnp.max(jnp.abs(plain.x_adv - x))) > 1e-3  # the attack moved


def test_fast_keeps_partials_and_compiles_once():
  model, variables, x, y = _setup(1, batch=2)
  traces = []

  def apply(v, xx):
    traces.append(1)
    return model.apply(v, xx)

  wrapped = fast(jax.tree_util.Partial(apply, variables))
  assert isinstance(wrapped, jax.tree_util.Partial)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.leaves(wrapped), jax.tree.leaves(variables))
  assert fast(wrapped) is wrapped and fast(fast(apply)) == fast(apply)
  kwargs = dict(eps=0.1, step_size=0.02, num_steps=2)
  attacks.pgd(wrapped, x, y, **kwargs)  # compiles
  n = len(traces)
  # A new fast() of the same Partial: the compiled attack is reused; what traces is the argument
  # check's jax.eval_shape, once per new Partial object.
  attacks.pgd(fast(jax.tree_util.Partial(apply, variables)), x, y, **kwargs)
  per_call = len(traces) - n
  assert per_call <= 1
  other = jax.tree.map(lambda a: a * 0.5, variables)  # new parameter values
  attacks.pgd(fast(jax.tree_util.Partial(apply, other)), x, y, **kwargs)
  assert len(traces) - n == 2 * per_call  # no new compilation


def test_flax_functions_restored_after_an_exception():
  model, variables, x, _ = _setup(1, batch=2)
  with pytest.raises(RuntimeError, match="boom"):
    with fast_convolutions():
      with fast_convolutions():  # re-entrant: the inner exit keeps the outer patch
        pass
      assert nn.max_pool is linen_fast.max_pool and flax_pooling.max_pool is linen_fast.max_pool
      raise RuntimeError("boom")
  assert nn.max_pool is _ORIGINAL_MAX_POOL and flax_pooling.max_pool is _ORIGINAL_MAX_POOL
  assert _custom_calls(lambda xx: model.apply(variables, xx), x) == (0, 0)  # interceptor gone
  with pytest.raises(ValueError):
    fast(lambda: (_ for _ in ()).throw(ValueError("inside fast")))()
  assert nn.max_pool is _ORIGINAL_MAX_POOL
