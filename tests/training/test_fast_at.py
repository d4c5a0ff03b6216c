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


# ELLE's endpoints, lambda and the eps schedule (issue 13).

def _ce64(logits, y):
  """Per-example cross-entropy in float64 numpy (independent of robust_jax.losses)."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(1, keepdims=True)
  return np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), np.asarray(y)]


@pytest.mark.parametrize("endpoints", ["random", "clean"])
def test_elle_points_are_the_papers_or_the_lectures(endpoints):
  x = jax.random.uniform(jax.random.key(7), (4096, 4, 4, 1))
  eps = 0.1
  x_a, x_b, a = regularizers.elle_points(x, KEY, eps=eps, endpoints=endpoints)
  assert x_a.shape == x_b.shape == x.shape and a.shape == (4096, 1, 1, 1)
  assert float(jnp.abs(x_b - x).max()) <= eps and float(jnp.min(a)) >= 0 and float(jnp.max(a)) <= 1
  if endpoints == "clean":
    np.testing.assert_array_equal(x_a, x)  # the lecture's a: the clean point itself
  else:
    assert float(jnp.abs(x_a - x).max()) <= eps and float(jnp.abs(x_a - x).min()) > 0
  # The law of x_b - x_a: U(-eps, eps) - U(-eps, eps) has E[d^2] = 2 eps^2 / 3 (paper), U(-eps, eps)
  # alone eps^2 / 3 (lecture); 65,536 coordinates put the mean within 1% (std 0.4%).
  want = (2 if endpoints == "random" else 1) * eps ** 2 / 3
  assert float(jnp.mean((x_b - x_a) ** 2)) == pytest.approx(want, rel=0.02)
  # x_b and a are drawn from the same subkeys in both modes.
  x_a_r, x_b_r, a_r = regularizers.elle_points(x, KEY, eps=eps, endpoints="random")
  np.testing.assert_array_equal(x_b, x_b_r)
  np.testing.assert_array_equal(a, a_r)


@pytest.mark.parametrize("endpoints", ["random", "clean"])
def test_linearity_error_matches_the_papers_and_the_lectures_formula(endpoints):
  w1 = jax.random.normal(jax.random.key(2), (16, 32))
  w2 = jax.random.normal(jax.random.key(3), (32, 3))
  f = _curved(w1, w2)
  eps = 0.3
  x_a, x_b, a = regularizers.elle_points(X, KEY, eps=eps, endpoints=endpoints)
  a = np.asarray(a, np.float64).reshape(-1)
  if endpoints == "random":
    # Paper / official code: x_c = (1 - a) x_a + a x_b, e = l(x_c) - ((1 - a) l(x_a) + a l(x_b)).
    x_c = (1 - a[:, None, None, None]) * np.asarray(x_a) + a[:, None, None, None] * np.asarray(x_b)
    want = (_ce64(f(jnp.asarray(x_c, jnp.float32)), Y)
            - ((1 - a) * _ce64(f(x_a), Y) + a * _ce64(f(x_b), Y)))
  else:
    # Lecture (seed 003, Eq. 21) literally: alpha = 1 - a weighs the clean point a = x,
    # a_hat = alpha a + (1 - alpha) a_tilde, ELLE = L(a_hat) - alpha L(a) - (1 - alpha) L(a_tilde).
    alpha, a_tilde = 1 - a, np.asarray(x_b)
    a_hat = (alpha[:, None, None, None] * np.asarray(X)
             + (1 - alpha[:, None, None, None]) * a_tilde)
    want = (_ce64(f(jnp.asarray(a_hat, jnp.float32)), Y) - alpha * _ce64(f(X), Y)
            - (1 - alpha) * _ce64(f(jnp.asarray(a_tilde)), Y))
  got = regularizers.linearity_errors(f, X, Y, KEY, eps=eps, endpoints=endpoints)
  assert float(np.abs(want).max()) > 1e-2  # a curved loss: the check is not 0 == 0
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)  # float32 losses of size ~5
  np.testing.assert_allclose(
      regularizers.local_linearity_error(f, X, Y, KEY, eps=eps, endpoints=endpoints),
      np.mean(want ** 2), rtol=1e-4)


@pytest.mark.parametrize("endpoints", ["random", "clean"])
def test_linearity_error_of_a_quadratic_loss_is_the_second_order_term(endpoints):
  # Logits (0, 40 + c |x|^2 / 2) with label 0: CE = 40 + c |x|^2 / 2 up to e^-40, so
  # e = l(x_c) - (1 - a) l(x_a) - a l(x_b) = -a (1 - a) c |x_b - x_a|^2 / 2 exactly.
  c = 2.0
  f = lambda x: jnp.stack(
      [jnp.zeros(x.shape[0]), 40.0 + 0.5 * c * jnp.sum(x.reshape(x.shape[0], -1) ** 2, 1)], 1)
  y = jnp.zeros(8, jnp.int32)
  eps = 0.3
  x_a, x_b, a = regularizers.elle_points(X, KEY, eps=eps, endpoints=endpoints)
  a = np.asarray(a, np.float64).reshape(-1)
  dist2 = np.sum((np.asarray(x_b, np.float64) - np.asarray(x_a, np.float64)) ** 2, axis=(1, 2, 3))
  want = -a * (1 - a) * c * dist2 / 2
  got = regularizers.linearity_errors(f, X, y, KEY, eps=eps, endpoints=endpoints)
  assert float(np.abs(want).min()) > 1e-3
  np.testing.assert_allclose(got, want, rtol=0, atol=3e-5)  # float32 losses of size ~42


def test_elle_lambda_on_other_inputs_is_the_calibration_point_transported_by_eps4():
  ref = 8 / 255
  for eps in (2 / 255, 8 / 255, 16 / 255, 0.1, 0.2, 0.3):
    for d in (64, 784, 150528):
      want = 1000.0 * (ref / eps) ** 4
      assert float(regularizers.elle_lambda_fn(eps, d)) == pytest.approx(want, rel=1e-6)
      assert regularizers.elle_a_lambda_max_fn(eps, d) == pytest.approx(4 * want, rel=1e-6)
    # On inputs of the published size: the published table, for ELLE-A 4000 at every eps.
    assert float(regularizers.elle_lambda_fn(eps, 3072)) == float(regularizers.elle_lambda(eps))
    assert regularizers.elle_a_lambda_max_fn(eps, 3072) == regularizers.ELLE_A_LAMBDA_MAX
  assert float(regularizers.elle_lambda_fn(0.2, 64)) == pytest.approx(0.6054, abs=1e-4)


def _info(eps):
  z = jnp.asarray(0, jnp.int32)
  return parts.StepInfo(step=z, epoch=z, eps=jnp.asarray(eps, jnp.float32),
                        lr=jnp.asarray(0.1, jnp.float32))


def _reg(name, **overrides):
  c = config_lib.base_config()
  c.update(overrides)
  return regularizers.REGULARIZERS.build(name, c)


@pytest.mark.parametrize("follows", [False, True])
def test_regularizer_lambda_comes_from_the_recipes_eps_unless_it_follows_the_schedule(follows):
  # Recipe eps 16/255, scheduled eps 4/255 (as in a warm-up): the official codes fix lambda from
  # the recipe's 16/255; both modes sample Omega in the ball of the scheduled eps.
  eps, eps_t = 16 / 255, 4 / 255
  w2 = jax.random.normal(jax.random.key(3), (32, 3))
  f_small = _curved(jax.random.normal(jax.random.key(2), (16, 32)), w2)
  f_cifar = _curved(jax.random.normal(jax.random.key(2), (3072, 32)) / 14, w2)
  x_cifar = jax.random.uniform(jax.random.key(8), (8, 32, 32, 3))
  gradalign_t = lambda f, x: regularizers.gradalign(f, x, Y, KEY, eps=eps_t)
  elle_t = lambda f, x: regularizers.local_linearity_error(f, x, Y, KEY, eps=eps_t)
  cases = [  # (part, logits_fn, inputs, Omega at eps_t, lambda official, lambda followed)
      ("gradalign", f_small, X, gradalign_t, 2.0, 0.02 * 10 ** 0.5),  # 0.02 * 10^(eps / 8)
      ("elle", f_cifar, x_cifar, elle_t, 5000.0, 1000.0),  # the published table
      # Other inputs: 1000 (8/255 / eps)^4 of the recipe's eps in both modes.
      ("elle", f_small, X, elle_t, 1000.0 * (8 / 16) ** 4, 1000.0 * (8 / 16) ** 4),
  ]
  loss0 = jnp.asarray(1.5)
  for name, f, x, omega_fn, lam_official, lam_followed in cases:
    reg = _reg(name, eps=eps, reg_lambda_follows_schedule=follows)
    loss, m = reg.apply(loss0, f, x, Y, KEY, reg.init(), _info(eps_t))
    lam = lam_followed if follows else lam_official
    assert float(m["reg_lambda"]) == pytest.approx(lam, rel=1e-5), (name, x.shape)
    omega = omega_fn(f, x)
    assert float(omega) > 0
    np.testing.assert_allclose(loss, loss0 + lam * omega, rtol=1e-5)


def test_elle_a_lambda_max_is_transported_on_other_inputs_and_not_scheduled():
  w2 = jax.random.normal(jax.random.key(3), (32, 3))
  f = _curved(jax.random.normal(jax.random.key(2), (16, 32)), w2)
  for follows in (False, True):
    reg = _reg("elle_a", eps=0.2, reg_lambda_follows_schedule=follows)
    state = reg.init()._replace(lam=jnp.asarray(regularizers.ELLE_A_LAMBDA_MAX))
    loss, m = reg.apply(jnp.asarray(0.0), f, X, Y, KEY, state, _info(0.05))
    assert float(m["reg_lambda"]) == pytest.approx(4000 * (8 / 255 / 0.2) ** 4, rel=1e-5)
    err = regularizers.local_linearity_error(f, X, Y, KEY, eps=0.05)
    np.testing.assert_allclose(loss, m["reg_lambda"] * err, rtol=1e-5)
  # An explicit lambda_max is used as it is.
  reg = _reg("elle_a", eps=0.2, elle_lambda=300.0)
  state = reg.init()._replace(lam=jnp.asarray(300.0))
  _, m = reg.apply(jnp.asarray(0.0), f, X, Y, KEY, state, _info(0.2))
  assert float(m["reg_lambda"]) == 300.0


def test_bad_regularizer_fields_are_named():
  for field, value in (("elle_endpoints", "both"), ("reg_lambda_follows_schedule", "yes")):
    bad = config_lib.base_config().to_dict()
    bad[field] = value
    with pytest.raises(ValueError, match=f"config.{field} "):
      regularizers.REGULARIZERS.check_all(bad)


def test_defaults_are_the_official_codes():
  c = config_lib.base_config()
  assert c.elle_endpoints == "random" and c.reg_lambda_follows_schedule is False


@pytest.mark.parametrize("follows", [False, True])
def test_gradalign_lambda_under_eps_warmup_in_the_training_step(follows, digits_splits):
  from robust_jax import models  # pylint: disable=import-outside-toplevel
  from robust_jax.training import state as state_lib  # pylint: disable=import-outside-toplevel
  c = config_lib.base_config()
  c.update(dict(method="gradalign", eps=16 / 255, eps_warmup_epochs=2, batch_size=16,
                train_diagnostics=False, reg_lambda_follows_schedule=follows))
  config_lib.validate(c)
  steps_per_epoch = 10
  model = models.get_model("mlp", num_classes=10)
  tx, lr_fn = step_lib.make_optimizer(c, steps_per_epoch)
  state = state_lib.create(model=model, tx=tx, sample_input=jnp.zeros((1, 8, 8, 1)), seed=0)
  train_step = jax.jit(step_lib.make_train_step(c, model, tx, lr_fn, steps_per_epoch))
  batch = {"image": jnp.asarray(digits_splits["train"]["image"][:16], jnp.float32),
           "label": jnp.asarray(digits_splits["train"]["label"][:16])}
  for step in range(2):
    state, m = train_step(state, batch)
    eps_t = 16 / 255 * (step + 1) / 20  # the linear warm-up over 2 epochs of 10 steps
    assert float(m["eps"]) == pytest.approx(eps_t, rel=1e-6)
    want = float(regularizers.gradalign_lambda(eps_t if follows else 16 / 255))
    assert float(m["reg_lambda"]) == pytest.approx(want, rel=1e-6)
  assert (want < 0.05) == follows  # lambda(eps_t) = 0.032 at step 1 against lambda(16/255) = 2.0


def test_elle_trains_on_cifar_sized_inputs_with_the_published_lambda():
  """At 32x32x3 (the published input size) ELLE's default lambda is the published table's, taken
  inside the compiled step from the recipe's eps (a Python float there: it once crashed on it)."""
  from robust_jax import models  # pylint: disable=import-outside-toplevel
  from robust_jax.training import state as state_lib  # pylint: disable=import-outside-toplevel
  from robust_jax.training.loop import initial_parts  # pylint: disable=import-outside-toplevel
  c = config_lib.base_config()
  c.method, c.eps, c.step_size, c.elle_lambda, c.batch_size = "elle", 8 / 255, 8 / 255, 0.0, 4
  config_lib.validate(c)
  model = models.get_model("mlp")
  tx, lr_fn = step_lib.make_optimizer(c, 10)
  st = state_lib.create(model=model, tx=tx, sample_input=jnp.zeros((1, 32, 32, 3)), seed=0)
  st = st.replace(parts=initial_parts(c, st.params))
  step = jax.jit(step_lib.make_train_step(c, model, tx, lr_fn, 10))
  batch = {"image": jax.random.uniform(jax.random.key(0), (4, 32, 32, 3)),
           "label": jnp.arange(4, dtype=jnp.int32)}
  _, metrics = step(st, batch)
  assert float(metrics["reg_lambda"]) == 1000.0 and np.isfinite(float(metrics["loss"]))
