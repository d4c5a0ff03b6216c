"""The gradient penalty against finite differences, the losses' formulas, clipping, Lipschitz."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.games import constraints, losses, networks

# A small smooth critic d(x) = w2 . tanh(W1^T x + b1) + b2, in JAX (float32) and in numpy (float64).
D_IN, D_HID = 6, 5


def _params(seed=0):
  rng = np.random.default_rng(seed)
  return {"w1": rng.normal(size=(D_IN, D_HID)) / np.sqrt(D_IN), "b1": rng.normal(size=D_HID) * 0.1,
          "w2": rng.normal(size=D_HID), "b2": np.asarray(0.3)}


def _critic_jax(p):
  return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def _critic_np(p, x):
  return np.tanh(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def _fd_input_grads(p, x, h=1e-5):
  g = np.zeros_like(x)
  for idx in np.ndindex(*x.shape[1:]):
    e = np.zeros_like(x)
    e[(slice(None),) + idx] = h
    g[(slice(None),) + idx] = (_critic_np(p, x + e) - _critic_np(p, x - e)) / (2 * h)
  return g


def _penalty_np(p, x):
  """The penalty with the analytic input gradient W1 (w2 * (1 - tanh^2)), float64."""
  t = np.tanh(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"])
  g = ((1 - t ** 2) * p["w2"]) @ p["w1"].T
  return np.mean((np.linalg.norm(g, axis=1) - 1.0) ** 2)


def _f32(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


def test_gradient_penalty_equals_its_formula_with_finite_difference_gradients():
  p = _params()
  rng = np.random.default_rng(1)
  real, fake = rng.uniform(size=(8, 2, 3, 1)), rng.uniform(size=(8, 2, 3, 1))
  x_hat = np.asarray(losses.interpolates(jax.random.key(0), jnp.asarray(real, jnp.float32),
                                         jnp.asarray(fake, jnp.float32)), np.float64)
  pen = losses.gradient_penalty(_critic_jax(_f32(p)), jnp.asarray(x_hat, jnp.float32))
  norms_fd = np.linalg.norm(_fd_input_grads(p, x_hat).reshape(8, -1), axis=1)
  np.testing.assert_allclose(pen.grad_norms, norms_fd, rtol=1e-5)
  np.testing.assert_allclose(pen.value, np.mean((norms_fd - 1.0) ** 2), rtol=1e-4)
  np.testing.assert_allclose(pen.value, _penalty_np(p, x_hat), rtol=1e-4)


def test_gradient_penalty_parameter_gradient_matches_finite_differences():
  """Double backpropagation: d penalty / d params against central differences in float64."""
  p = _params(2)
  x = np.random.default_rng(3).uniform(size=(8, D_IN))
  grad = jax.grad(lambda q: losses.gradient_penalty(_critic_jax(q), jnp.asarray(x, jnp.float32))
                  .value)(_f32(p))
  h = 1e-6
  for name in ("w1", "b1", "w2"):
    fd = np.zeros_like(p[name])
    for idx in np.ndindex(*p[name].shape):
      hi, lo = {**p, name: p[name].copy()}, {**p, name: p[name].copy()}
      hi[name][idx] += h
      lo[name][idx] -= h
      fd[idx] = (_penalty_np(hi, x) - _penalty_np(lo, x)) / (2 * h)
    np.testing.assert_allclose(grad[name], fd, rtol=1e-4, atol=1e-6)


def test_interpolates_lie_on_the_segments_with_one_u_per_example():
  real = jax.random.uniform(jax.random.key(0), (16, 4, 4, 1))
  fake = real + 1.0
  u = np.asarray(losses.interpolates(jax.random.key(1), real, fake) - real)
  per_example = u.reshape(16, -1)
  np.testing.assert_allclose(per_example, per_example[:, :1] * np.ones_like(per_example), atol=1e-6)
  assert np.all((per_example >= 0) & (per_example <= 1)) and np.std(per_example[:, 0]) > 0.05


def test_conv_critic_penalty_gradient_equals_jax_rules():
  """The library convolution's custom VJP is twice differentiable: same double backprop as JAX's."""
  x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
  params = networks.Critic(dim=2).init(jax.random.key(1), x)["params"]

  @jax.jit
  def both(p):
    return [jax.grad(lambda q: losses.gradient_penalty(
        lambda xx: networks.Critic(dim=2, vjp=vjp).apply({"params": q}, xx), x).value)(p)
            for vjp in ("custom", "jax")]

  grads = both(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), *grads)


def test_losses_are_their_formulas():
  real, fake = jnp.array([0.5, -1.0, 2.0]), jnp.array([1.5, 0.0, -0.5])
  sig = jax.nn.sigmoid
  np.testing.assert_allclose(losses.vanilla_critic_loss(real, fake),
                             -np.mean(np.log(sig(real))) - np.mean(np.log(1 - sig(fake))),
                             rtol=1e-6)
  np.testing.assert_allclose(losses.minimax_generator_loss(fake), np.mean(np.log(1 - sig(fake))),
                             rtol=1e-6)
  np.testing.assert_allclose(losses.non_saturating_generator_loss(fake),
                             -np.mean(np.log(sig(fake))), rtol=1e-6)
  np.testing.assert_allclose(losses.wasserstein_critic_loss(real, fake),
                             -losses.wasserstein_estimate(real, fake), rtol=1e-6)
  np.testing.assert_allclose(losses.hinge_critic_loss(real, fake),
                             np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake)),
                             rtol=1e-6)


def test_clipping_puts_every_weight_in_the_box_and_keeps_the_inside():
  params = networks.Critic(dim=4).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  params = jax.tree.map(lambda a: a * 10.0, params)
  clipped = constraints.clip_weights(params, 0.01)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(clipped)):
    assert np.all(np.abs(b) <= 0.01)
    inside = np.abs(a) <= 0.01
    np.testing.assert_array_equal(np.asarray(b)[inside], np.asarray(a)[inside])
  with pytest.raises(ValueError):
    constraints.clip_weights(params, 0.0)


def test_empirical_lipschitz_of_a_linear_critic_is_its_norm():
  w = jax.random.normal(jax.random.key(0), (12,))
  a, b = jax.random.normal(jax.random.key(1), (2, 64, 12))
  lip = constraints.empirical_lipschitz(lambda x: x @ w, a, b)
  assert lip <= jnp.linalg.norm(w) * (1 + 1e-6)
  assert lip >= 0.5 * jnp.linalg.norm(w)
