"""SGM (Wu et al. 2020): the forward is unchanged, gamma = 1 is autodiff, gamma < 1 the product formula.

The independent references: a residual network written out in NumPy (float64) whose input gradient
is the slide's product prod_i (gamma J_i + I) of its branches' Jacobians; and, for the library's
identity-skip blocks, the closed form ``gamma * (J^T v - v) + v`` from the plain (gamma = 1) vector-
Jacobian product.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import models
from robust_jax.models import resnet, sgm, wide_resnet


def _residual_net_params(rng, depth=4, width=5, hidden=7):
  return [(rng.normal(size=(hidden, width)) / np.sqrt(width),
           rng.normal(size=(width, hidden)) / np.sqrt(hidden)) for _ in range(depth)]


def _jax_net(params, x, gamma):
  z = x
  for w1, w2 in params:
    z = z + sgm.skip_gradient(w2 @ jnp.tanh(w1 @ z), gamma)
  return z


@pytest.mark.parametrize("gamma", [0.0, 0.2, 0.5, 1.0])
def test_gradient_is_the_product_formula(gamma):
  rng = np.random.default_rng(0)
  params = _residual_net_params(rng)
  x, c = rng.normal(size=5), rng.normal(size=5)
  # NumPy: forward, then d loss/dx = c^T prod_{i = L-1 .. 0} (gamma J_i + I), J_i = W2 diag(tanh') W1.
  z, jacobians = x.copy(), []
  for w1, w2 in params:
    h = w1 @ z
    jacobians.append(w2 @ np.diag(1.0 - np.tanh(h) ** 2) @ w1)
    z = z + w2 @ np.tanh(h)
  row = c.copy()
  for jac in reversed(jacobians):
    row = row @ (gamma * jac + np.eye(5))
  p32 = [(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)) for a, b in params]
  grad = jax.grad(lambda v: jnp.dot(jnp.asarray(c, jnp.float32), _jax_net(p32, v, gamma)))(
      jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(np.asarray(grad), row, rtol=1e-5, atol=1e-6)
  # ... and the forward is the same network whatever gamma.
  np.testing.assert_allclose(np.asarray(_jax_net(p32, jnp.asarray(x, jnp.float32), gamma)), z,
                             rtol=1e-5, atol=1e-6)


def test_scale_gradient_is_the_identity_forward():
  x = jnp.linspace(-2.0, 2.0, 7)
  np.testing.assert_array_equal(np.asarray(sgm.scale_gradient(x, 0.3)), np.asarray(x))
  g = jax.grad(lambda v: jnp.sum(sgm.scale_gradient(v, 0.3) ** 2))(x)
  np.testing.assert_allclose(np.asarray(g), 0.3 * 2.0 * np.asarray(x), rtol=1e-6)


def test_gamma_outside_the_unit_interval_is_refused():
  with pytest.raises(ValueError, match="sgm_gamma"):
    sgm.check_gamma(1.5)


# Small members of the family (the 11M-parameter ResNet-18s take too long to compile here; their
# blocks are tested below, and they pass ``sgm_gamma`` to every block as the WideResNet does).
_MODELS = {
    "wrn10_1": (lambda g: models.get_model("wrn28_10", depth=10, widen_factor=1, sgm_gamma=g),
                (2, 8, 8, 1)),
}


@pytest.fixture(scope="module", params=sorted(_MODELS))
def model_case(request):
  make, shape = _MODELS[request.param]
  x = jax.random.uniform(jax.random.key(1), shape)
  variables = jax.jit(make(1.0).init)(jax.random.key(0), x)
  return make, x, variables


def test_forward_logits_identical_with_and_without_sgm(model_case):
  make, x, variables = model_case
  plain = jax.jit(lambda v, xx: make(1.0).apply(v, xx))(variables, x)
  skipped = jax.jit(lambda v, xx: make(0.2).apply(v, xx))(variables, x)
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(skipped))


def test_gamma_one_is_plain_autodiff_and_gamma_changes_the_gradient(model_case):
  make, x, variables = model_case
  y = jnp.array([3, 7])

  def input_grad(model):
    loss = lambda xx: jnp.sum(jax.nn.log_softmax(model.apply(variables, xx))[jnp.arange(2), y])
    return jax.jit(jax.grad(loss))(x)

  plain_model = make(1.0).clone()  # the attribute's default: no custom VJP inserted
  g_plain = input_grad(plain_model)
  g_one = input_grad(make(1.0))
  np.testing.assert_array_equal(np.asarray(g_one), np.asarray(g_plain))
  g_sgm = input_grad(make(0.2))
  assert np.max(np.abs(np.asarray(g_sgm) - np.asarray(g_plain))) > 1e-4 * np.max(
      np.abs(np.asarray(g_plain)))


_BLOCKS = {
    "preact": lambda g: resnet.PreActBlock(8, 1, sgm_gamma=g),
    "wide": lambda g: wide_resnet.WideBasicBlock(8, 1, sgm_gamma=g),
}


@pytest.mark.parametrize("name", sorted(_BLOCKS))
@pytest.mark.parametrize("gamma", [0.0, 0.3])
def test_identity_skip_block_gradient_is_gamma_times_branch_plus_skip(name, gamma):
  # An identity-skip block is x + f(x): its VJP with SGM is gamma (J^T v - v) + v, where J^T v is the
  # plain VJP (gamma = 1) and the skip contributes v itself.
  make = _BLOCKS[name]
  x = jax.random.normal(jax.random.key(2), (2, 4, 4, 8))
  v = jax.random.normal(jax.random.key(3), (2, 4, 4, 8))
  variables = make(1.0).init(jax.random.key(0), x)
  vjp = lambda g: jax.grad(lambda xx: jnp.sum(v * make(g).apply(variables, xx)))(x)
  expected = gamma * (vjp(1.0) - v) + v
  np.testing.assert_allclose(np.asarray(vjp(gamma)), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_post_activation_block_gradient():
  # kuangliu's BasicBlock is relu(f(x) + x): VJP = gamma (J^T v - D v) + D v, D = 1[out > 0].
  x = jax.random.normal(jax.random.key(4), (2, 4, 4, 8))
  v = jax.random.normal(jax.random.key(5), (2, 4, 4, 8))
  make = lambda g: resnet.BasicBlock(8, 1, sgm_gamma=g)
  variables = make(1.0).init(jax.random.key(0), x)
  out = make(1.0).apply(variables, x)
  dv = v * (out > 0)
  vjp = lambda g: jax.grad(lambda xx: jnp.sum(v * make(g).apply(variables, xx)))(x)
  np.testing.assert_allclose(np.asarray(vjp(0.25)), np.asarray(0.25 * (vjp(1.0) - dv) + dv),
                             rtol=1e-5, atol=1e-5)
