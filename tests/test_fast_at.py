"""Fast adversarial training and the newer formulations: GradAlign, ELLE, BETA, periodic eps, SAM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks, regularizers
from robust_jax import losses, parts
from robust_jax.attacks import beta_attack
from robust_jax.training import config as config_lib
from robust_jax.training import schedules
from robust_jax.training import step as step_lib

KEY = jax.random.key(0)
X = jax.random.uniform(jax.random.key(1), (8, 4, 4, 1))
Y = jnp.arange(8, dtype=jnp.int32) % 3


def test_gradalign_and_elle_vanish_for_a_loss_linear_in_the_input():
  # Logits (0, 40 + v.x) with label 0: CE = softplus(40 + v.x) = 40 + v.x up to e^-40, a loss that
  # is linear in x, so its input gradient is constant (cos = 1) and its linearity error is 0.
  v = jnp.full((16, 1), 3.0)
  logits_fn = lambda x: jnp.concatenate(
      [jnp.zeros((x.shape[0], 1)), 40.0 + x.reshape(x.shape[0], -1) @ v], axis=1)
  y = jnp.zeros(8, jnp.int32)
  ga = regularizers.gradalign(logits_fn, X, y, KEY, eps=0.1)
  elle = regularizers.local_linearity_error(logits_fn, X, y, KEY, eps=0.1)
  assert abs(float(ga)) < 1e-6 and float(elle) < 1e-8


def _curved(w1, w2):
  return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1 * 4) @ w2


def test_gradalign_and_elle_are_positive_for_a_curved_model():
  w1 = jax.random.normal(jax.random.key(2), (16, 32))
  w2 = jax.random.normal(jax.random.key(3), (32, 3))
  f = _curved(w1, w2)
  assert float(regularizers.gradalign(f, X, Y, KEY, eps=0.3)) > 1e-3
  assert float(regularizers.local_linearity_error(f, X, Y, KEY, eps=0.3)) > 1e-4


def test_gradalign_gradient_flows_through_the_input_gradients():
  w2 = jax.random.normal(jax.random.key(3), (32, 3))

  def omega(w1, detach_first):
    return regularizers.gradalign(_curved(w1, w2), X, Y, KEY, eps=0.3, detach_first=detach_first)

  w1 = jax.random.normal(jax.random.key(2), (16, 32))
  g = jax.grad(omega)(w1, False)
  g_detached = jax.grad(omega)(w1, True)
  assert float(jnp.linalg.norm(g)) > 0
  # Double backprop through both gradients (paper) differs from through the second only (code).
  assert float(jnp.abs(g - g_detached).max()) > 1e-6
  # Finite differences agree with the double-backprop gradient.
  d = jax.random.normal(jax.random.key(4), w1.shape)
  h = 1e-3
  fd = (omega(w1 + h * d, False) - omega(w1 - h * d, False)) / (2 * h)
  np.testing.assert_allclose(float(jnp.sum(g * d)), float(fd), rtol=2e-2, atol=1e-4)


def test_published_lambdas():
  for e, want in [(8, 0.2), (16, 2.0), (4, 0.02 * 10 ** 0.5)]:
    assert float(regularizers.gradalign_lambda(e / 255)) == pytest.approx(want, rel=1e-5)
  assert float(regularizers.gradalign_lambda(20 / 255)) == pytest.approx(2.0)  # capped
  assert [float(regularizers.elle_lambda(e / 255)) for e in (2, 8, 10, 20, 22, 26)] == [
      1000.0, 1000.0, 5000.0, 5000.0, 10000.0, 10000.0]


def test_elle_a_switches_on_at_a_spike_and_decays():
  reg = parts.bind(regularizers.elle_a_part, config_lib.base_config())
  state = reg.init()
  lams = []
  for err in [1.0, 1.1, 0.9, 1.0, 50.0, 1.0, 1.0]:
    state = reg.update(state, {"lin_err": jnp.asarray(err)})
    lams.append(float(state.lam))
  assert lams[:4] == [0.0] * 4
  assert lams[4] == regularizers.ELLE_A_LAMBDA_MAX
  assert lams[5] == pytest.approx(0.99 * lams[4]) and lams[6] == pytest.approx(0.99 ** 2 * lams[4])


def test_beta_picks_the_class_of_largest_margin():
  w = jax.random.normal(jax.random.key(5), (16, 5))
  logits_fn = lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w) * 3
  y = jnp.arange(8, dtype=jnp.int32) % 5
  kw = dict(eps=0.2, step_size=0.05, num_steps=5, start="none")
  res, cls = beta_attack(logits_fn, X, y, return_class=True, **kw)
  margins = []
  for offset in range(1, 5):
    t = (y + offset) % 5
    r = attacks.pgd(logits_fn, X, y, loss="margin", target=t, **kw)
    z = logits_fn(r.x_adv)
    margins.append(z[jnp.arange(8), t] - z[jnp.arange(8), y])
  margins = jnp.stack(margins)  # [C - 1, B]
  want_cls = (y + 1 + jnp.argmax(margins, 0)) % 5
  np.testing.assert_array_equal(cls, want_cls)
  np.testing.assert_allclose(res.loss, margins.max(0), rtol=1e-5, atol=1e-6)
  z = logits_fn(res.x_adv)
  np.testing.assert_allclose(res.loss, z[jnp.arange(8), cls] - z[jnp.arange(8), y], rtol=1e-5,
                             atol=1e-6)


def test_periodic_eps_and_learning_rate_follow_the_formulas():
  bounds = (0, 10, 15, 20)
  for t in [0.0, 2.5, 5.0, 9.99, 10.0, 12.5, 14.0, 17.5, 25.0]:
    k = max(i for i in range(3) if t >= bounds[i]) if t < 20 else 2
    r = min(max((t - bounds[k]) / (bounds[k + 1] - bounds[k]), 0.0), 1.0)
    cos = min(0.0 + 0.5 * (16 / 255) * (1 - np.cos(np.pi * r)), 8 / 255)
    lin = min(0.0 + (16 / 255) * r, 8 / 255)
    for kind, want in (("cycle_cos", cos), ("cycle_linear", lin)):
      got = float(schedules.periodic_eps(t, kind=kind, eps_min=0.0, eps_max=16 / 255,
                                         eps_cap=8 / 255, period_bounds=bounds))
      assert got == pytest.approx(want, abs=1e-7), (kind, t)
  lr = schedules.learning_rate(kind="periodic_cosine", base_lr=0.1, num_epochs=20,
                               steps_per_epoch=10, restart_epochs=(10, 15))
  for step, want in [(0, 0.1), (50, 0.05), (100, 0.1), (125, 0.05), (150, 0.1), (175, 0.05)]:
    assert float(lr(step)) == pytest.approx(want, rel=1e-5), step
  cyc = schedules.learning_rate(kind="cyclic", base_lr=0.2, num_epochs=10, steps_per_epoch=10,
                                peak_epoch_fraction=0.4)
  for step, want in [(0, 0.0), (20, 0.1), (40, 0.2), (70, 0.1), (100, 0.0)]:
    assert float(cyc(step)) == pytest.approx(want, abs=1e-6), step
  pw = schedules.learning_rate(kind="piecewise", base_lr=0.1, num_epochs=10, steps_per_epoch=10,
                               decay_epochs=(5, 8), decay_factors=(0.1, 0.01))
  assert [round(float(pw(s)), 6) for s in (0, 49, 50, 79, 80, 99)] == [0.1, 0.1, 0.01, 0.01,
                                                                       0.001, 0.001]


def test_training_eps_is_periodic_inside_the_step():
  c = config_lib.base_config()
  c.update(dict(eps=8 / 255, periodic_eps="cycle_cos", periodic_eps_max=16 / 255,
                periodic_bounds=(0, 4, 6)))
  for step, epoch_float in [(0, 0.0), (10, 1.0), (25, 2.5), (45, 4.5)]:
    want = schedules.periodic_eps(epoch_float, kind="cycle_cos", eps_min=0.0, eps_max=16 / 255,
                                  eps_cap=8 / 255, period_bounds=(0, 4, 6))
    assert float(step_lib.current_eps(step, c, 10)) == pytest.approx(float(want))


def test_fgsm_rs_is_a_step_of_1_25_eps_from_a_uniform_start():
  w = jax.random.normal(jax.random.key(6), (16, 3))
  f = lambda x: x.reshape(x.shape[0], -1) @ w
  eps = 0.1
  r = attacks.fgsm(f, X, Y, eps=eps, start="uniform", step_size=1.25 * eps, key=KEY)
  start = attacks.pgd(f, X, Y, eps=eps, step_size=1.0, num_steps=0, start="uniform", key=KEY).x_adv
  g = jax.grad(lambda xx: jnp.sum(losses.cross_entropy(f(xx), Y)))(start)
  want = jnp.clip(jnp.clip(start + 1.25 * eps * jnp.sign(g), X - eps, X + eps), 0, 1)
  np.testing.assert_allclose(r.x_adv, want, atol=1e-7)


def test_gradalign_gradient_is_finite_when_an_input_gradient_vanishes():
  # Example 0 has an all-zero input (ReLU dead): its gradients are 0 and it is dropped; the
  # regulariser's gradient must stay finite (the gradient of a norm at 0 is NaN).
  w1 = jax.random.normal(jax.random.key(2), (16, 32))
  w2 = jax.random.normal(jax.random.key(3), (32, 3))
  f = lambda w: (lambda x: jax.nn.relu(x.reshape(x.shape[0], -1) @ w) @ w2)
  x = X.at[0].set(0.0)
  w1 = w1.at[:, :].set(jnp.abs(w1))  # positive weights: a zero input gives zero pre-activations...
  omega = lambda w: regularizers.gradalign(f(w), x, Y, KEY, eps=0.0)  # ...and eps 0 keeps it there
  g = jax.grad(omega)(w1)
  assert bool(jnp.all(jnp.isfinite(g)))
