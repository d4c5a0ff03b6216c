"""Wong et al.'s MNIST network (``mnist_net``): PyTorch's parameter count, forward pass and init.

The reference is ``locuslab/fast_adversarial`` ``MNIST/mnist_net.py``: ``Conv2d(1, 16, 4, stride=2,
padding=1) -> ReLU -> Conv2d(16, 32, 4, stride=2, padding=1) -> ReLU -> Flatten -> Linear(32*7*7,
100) -> ReLU -> Linear(100, 10)``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import models

_SHAPE = (3, 28, 28, 1)


@pytest.fixture(scope="module")
def net():
  model = models.get_model("mnist_net")
  x = jax.random.uniform(jax.random.key(1), _SHAPE, jnp.float32)
  variables = model.init(jax.random.key(0), x)
  return model, x, variables


def test_parameter_count_is_pytorchs(net):
  _, _, variables = net
  # PyTorch: weight out*in*kh*kw + bias out for each Conv2d; in*out + out for each Linear.
  conv1 = 16 * 1 * 4 * 4 + 16        # 272
  conv2 = 32 * 16 * 4 * 4 + 32       # 8,224
  fc1 = (32 * 7 * 7) * 100 + 100     # 156,900
  fc2 = 100 * 10 + 10                # 1,010
  assert conv1 + conv2 + fc1 + fc2 == 166_406
  assert models.count_params(variables) == 166_406
  shapes = jax.tree.map(jnp.shape, variables["params"])
  assert shapes == {
      "conv1": {"kernel": (4, 4, 1, 16), "bias": (16,)},
      "conv2": {"kernel": (4, 4, 16, 32), "bias": (32,)},
      "fc1": {"kernel": (1568, 100), "bias": (100,)},
      "fc2": {"kernel": (100, 10), "bias": (10,)},
  }
  assert "batch_stats" not in variables


def _reference_logits(params, x):
  """The forward pass written out with lax.conv (PyTorch's padding=1 is ((1, 1), (1, 1)))."""
  def conv(h, p):
    y = jax.lax.conv_general_dilated(
        h, p["kernel"], window_strides=(2, 2), padding=((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
    return jax.nn.relu(y + p["bias"])

  h = conv(conv(x, params["conv1"]), params["conv2"])
  assert h.shape == (x.shape[0], 7, 7, 32)
  h = h.reshape(x.shape[0], -1)
  dot = lambda a, p: jnp.dot(a, p["kernel"], precision=jax.lax.Precision.HIGHEST) + p["bias"]
  return dot(jax.nn.relu(dot(h, params["fc1"])), params["fc2"])


@pytest.mark.parametrize("conv_vjp", ["custom", "jax"])
def test_logits_equal_the_reference_computation(net, conv_vjp):
  _, x, variables = net
  model = models.get_model("mnist_net", conv_vjp=conv_vjp)
  logits = model.apply(variables, x)
  assert logits.shape == (3, 10) and logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, _reference_logits(variables["params"], x),
                             rtol=1e-5, atol=1e-5)
  # train=True changes nothing (no BatchNorm, no dropout).
  np.testing.assert_allclose(model.apply(variables, x, train=True), logits, rtol=0, atol=0)


def test_input_gradient_of_the_custom_vjp_equals_jaxs(net):
  """The strided, padded convolutions' custom VJP (what the attacks differentiate) is exact."""
  _, x, variables = net
  y = jnp.arange(3) % 10

  def grad_for(conv_vjp):
    model = models.get_model("mnist_net", conv_vjp=conv_vjp)
    loss = lambda xx: -jnp.sum(jax.nn.log_softmax(model.apply(variables, xx))[jnp.arange(3), y])
    return jax.grad(loss)(x)

  np.testing.assert_allclose(grad_for("custom"), grad_for("jax"), rtol=1e-4, atol=1e-6)


def test_initialisation_is_pytorchs_default(net):
  """Kernels and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in = kh * kw * C_in or in_features."""
  _, _, variables = net
  params = variables["params"]
  fan_ins = {"conv1": 16 * 1, "conv2": 16 * 16, "fc1": 1568, "fc2": 100}
  for name, fan_in in fan_ins.items():
    bound = 1.0 / math.sqrt(fan_in)
    for leaf in ("kernel", "bias"):
      w = np.asarray(params[name][leaf])
      assert np.abs(w).max() <= bound + 1e-7, (name, leaf)
      if w.size >= 1000:  # a uniform law fills its interval: max |w| near the bound, std b/sqrt(3)
        assert np.abs(w).max() > 0.95 * bound, (name, leaf)
        assert np.std(w) == pytest.approx(bound / math.sqrt(3), rel=0.1), (name, leaf)
