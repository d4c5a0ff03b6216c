"""Spectral normalisation: power iteration against an SVD, normalised layers, Lipschitz by construction."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import models
from robust_jax.games import constraints, networks
from robust_jax.models import spectral_norm as sn
from robust_jax.data import pipeline
from robust_jax.training import config as train_config
from robust_jax.training import methods
from robust_jax.training import state as train_state
from robust_jax.training import step as train_step


def _iterator(module, x, n, **kwargs):
  """``variables -> variables`` after ``n`` train-mode applies (one power step each), compiled once."""
  @jax.jit
  def run(variables):
    def body(_, stats):
      v = {"params": variables["params"], "batch_stats": stats}
      return module.apply(v, x, mutable=["batch_stats"], **kwargs)[1]["batch_stats"]
    return {"params": variables["params"],
            "batch_stats": jax.lax.fori_loop(0, n, body, variables["batch_stats"])}
  return run


def _iterate(module, variables, x, n, **kwargs):
  return _iterator(module, x, n, **kwargs)(variables)


def _top_sv(kernel):
  return np.linalg.norm(np.asarray(sn.kernel_matrix(jnp.asarray(kernel)), np.float64), 2)


def test_power_iteration_converges_to_the_top_singular_value():
  for layer, x in ((sn.SNDense(7), jnp.ones((2, 11))),
                   (sn.SNConv(6, 3, strides=2), jnp.ones((2, 8, 8, 4)))):
    variables = layer.init(jax.random.key(0), x)
    kernel = variables["params"]["kernel"]
    estimates, run = [], _iterator(layer, x, 25, update_stats=True)
    for _ in range(4):
      variables = run(variables)
      w_bar = sn.normalized_kernel(variables)
      estimates.append(float(np.median(np.asarray(kernel) / np.asarray(w_bar))))
    np.testing.assert_allclose(estimates[-1], _top_sv(kernel), rtol=1e-4)
    assert all(b >= a * (1 - 1e-6) for a, b in zip(estimates, estimates[1:]))  # from below
    np.testing.assert_allclose(_top_sv(w_bar), 1.0, rtol=1e-4)


def test_eval_mode_changes_nothing_and_train_mode_updates_u():
  layer, x = sn.SNDense(5), jnp.ones((3, 4))
  variables = layer.init(jax.random.key(1), x)
  y_eval = layer.apply(variables, x)
  with_u = layer.apply(variables, x, update_stats=True, mutable=["batch_stats"])[1]
  assert not np.allclose(with_u["batch_stats"]["sn_u"], variables["batch_stats"]["sn_u"])
  np.testing.assert_array_equal(layer.apply(variables, x), y_eval)


def test_no_gradient_flows_through_the_power_iteration_vectors():
  w = jax.random.normal(jax.random.key(0), (4, 6))
  u = jax.random.normal(jax.random.key(1), (4,))
  grad = jax.grad(lambda ww: sn.power_iteration(ww, u)[2])(w)
  u1, v1, _ = sn.power_iteration(w, u)
  np.testing.assert_allclose(grad, jnp.outer(u1, v1), rtol=1e-5, atol=1e-6)  # d(u^T W v)/dW


class _DenseSNCritic(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = x.reshape(x.shape[0], -1)
    for width in (32, 32):
      x = nn.leaky_relu(sn.SNDense(width)(x, update_stats=train), 0.2)
    return sn.SNDense(1)(x, update_stats=train)[:, 0]


def test_spectrally_normalised_critic_is_1_lipschitz_by_construction():
  critic, x = _DenseSNCritic(), jnp.zeros((1, 8, 8, 1))
  variables = critic.init(jax.random.key(0), x)
  variables = jax.tree.map(lambda a: a * 5.0, variables)  # an unconstrained critic would be ~5^3
  variables = _iterate(critic, variables, x, 60, train=True)
  a, b = jax.random.uniform(jax.random.key(1), (2, 256, 8, 8, 1))
  lip = constraints.empirical_lipschitz(lambda z: critic.apply(variables, z), a, b)
  assert 0 < lip <= 1.0 + 1e-4


def test_sn_critic_layers_have_unit_matrix_norm():
  critic, x = networks.Critic(dim=4, spectral_norm=True), jnp.zeros((1, 8, 8, 1))
  variables = _iterate(critic, critic.init(jax.random.key(0), x), x, 100, train=True)
  for name in variables["params"]:
    np.testing.assert_allclose(_top_sv(sn.normalized_kernel(variables, name)), 1.0, rtol=1e-3)


def test_classifier_with_spectral_norm_trains_with_the_library_step():
  """``mlp_sn`` through the classifiers' own step: u rides in batch_stats, updated every step."""
  c = train_config.base_config()
  c.model, c.method, c.optimizer, c.learning_rate = "mlp_sn", "standard", "adam", 1e-3
  c.train_diagnostics = False
  ds = pipeline.load_dataset("digits")
  spe = pipeline.steps_per_epoch(len(ds.train["label"]), c.batch_size)
  model = models.get_model("mlp_sn")
  tx, lr_fn = train_step.make_optimizer(c, spe)
  state = train_state.create(model=model, tx=tx, sample_input=jnp.zeros((1, 8, 8, 1)), seed=0)
  bundle = methods.build(c)
  state = state.replace(parts=bundle.init(state.params))
  step = jax.jit(train_step.make_train_step(c, model, tx, lr_fn, spe, bundle=bundle))
  u0 = state.batch_stats
  for epoch in range(2):
    for batch in pipeline.train_batches(ds.train, batch_size=c.batch_size, seed=0, epoch=epoch):
      state, _ = step(state, batch)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  logits = model.apply(variables, jnp.asarray(pipeline.to_float(ds.test["image"])))
  assert np.mean(np.argmax(logits, -1) == ds.test["label"]) > 0.5
  for name in state.params:  # u moved and estimates the top singular value from below
    assert not np.allclose(u0[name]["sn_u"], state.batch_stats[name]["sn_u"])
    w = state.params[name]["kernel"]
    sigma = np.median(np.asarray(w) / np.asarray(sn.normalized_kernel(variables, name)))
    assert 0.5 * _top_sv(w) < sigma <= _top_sv(w) * (1 + 1e-5)
