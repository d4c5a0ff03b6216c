"""BiSAM (Xie et al., ICML 2024): the lower bound of the 0-1 loss, its ascent, and rho = 0.

The ascent loss is checked against a NumPy transcription of the official ``loss_fnc.py`` and
against the bound it is built on; the step's update gradient against an independent computation
(the CE gradient at w + rho grad Q / ||grad Q||); rho = 0 against the plain step, bitwise.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import losses, models
from robust_jax import weight_adversaries as wa_lib
from robust_jax.data import pipeline
from robust_jax.training import config as config_lib
from robust_jax.training import methods
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib


def _official_numpy(pred, targets, kind, mu, alpha):
  """LIONS-EPFL/BiSAM loss_fnc.py in float64 NumPy: the in-place margin loop, then
  logsumexp(mu tanh(alpha pred)) or logsumexp(mu (1 + softplus_beta=-1(pred - log(e - 1))))."""
  pred = np.array(pred, np.float64)
  for i in range(len(targets)):
    pred[i] = pred[i] - pred[i][targets[i]]
  if kind == "tanh":
    z = mu * np.tanh(alpha * pred)
  else:
    x = pred - math.log(math.e - 1)
    z = mu * (1 + (1 / -1.0) * np.log1p(np.exp(-1.0 * x)))  # torch softplus(x, beta=-1)
  m = z.max(1, keepdims=True)
  return (m + np.log(np.exp(z - m).sum(1, keepdims=True)))[:, 0]


@pytest.mark.parametrize("kind,mu,alpha", [("log", 1.0, 0.1), ("log", 3.0, 0.1),
                                           ("tanh", 1.0, 0.1), ("tanh", 10.0, 0.5)])
def test_lower_bound_matches_the_official_formula(kind, mu, alpha):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(64, 10)) * 4
  y = rng.integers(0, 10, size=64)
  got = wa_lib.bisam_lower_bound(jnp.asarray(logits, jnp.float32), jnp.asarray(y), kind=kind,
                                 mu=mu, alpha=alpha)
  np.testing.assert_allclose(np.asarray(got), _official_numpy(logits, y, kind, mu, alpha),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["log", "tanh"])
def test_phi_lower_bounds_the_step_and_q_the_zero_one_loss(kind):
  f = jnp.linspace(-30, 30, 6001)
  phi = np.asarray(wa_lib.bisam_phi(f, kind=kind, alpha=0.1))
  assert np.all(phi <= (np.asarray(f) > 0) + 1e-7)  # phi(F) <= 1[F > 0]
  assert abs(float(wa_lib.bisam_phi(jnp.zeros(()), kind=kind))) < 1e-6  # phi(0) = 0
  assert np.all(np.diff(phi) >= 0)  # increasing
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(256, 10)) * 3
  y = rng.integers(0, 10, size=256)
  mu = 2.0
  q = np.asarray(wa_lib.bisam_lower_bound(jnp.asarray(logits, jnp.float32), jnp.asarray(y),
                                          kind=kind, mu=mu, alpha=0.1))
  margins = logits - logits[np.arange(256), y][:, None]
  max_phi = np.asarray(wa_lib.bisam_phi(jnp.asarray(margins, jnp.float32), kind=kind,
                                        alpha=0.1)).max(1)
  zero_one = (logits.argmax(1) != y).astype(np.float64)
  assert np.all(max_phi <= zero_one + 1e-6)  # the smooth max's argument bounds the 0-1 loss
  assert np.all(max_phi <= q / mu + 1e-5)  # log-sum-exp: max <= Q / mu <= max + log(C) / mu
  assert np.all(q / mu <= max_phi + math.log(10) / mu + 1e-5)


@pytest.fixture(scope="module")
def digits_setup():
  ds = pipeline.load_dataset("digits")
  batches = list(pipeline.train_batches(ds.train, batch_size=32, seed=0, epoch=0))[:3]
  model = models.get_model("mlp", num_classes=ds.num_classes)
  c = config_lib.base_config()
  c.update(dict(method="standard", batch_size=32, weight_decay=5e-4, momentum=0.9))
  tx, lr_fn = step_lib.make_optimizer(c, 10)
  state = state_lib.create(model=model, tx=tx, sample_input=jnp.zeros((1, 8, 8, 1)), seed=0)
  return dict(batches=batches, model=model, config=c, tx=tx, lr_fn=lr_fn, state=state)


def _run(setup, **overrides):
  c = setup["config"].copy_and_resolve_references()
  c.update(overrides)
  config_lib.validate(c)
  step = jax.jit(step_lib.make_train_step(c, setup["model"], setup["tx"], setup["lr_fn"], 10))
  state = jax.tree.map(jnp.copy, setup["state"])
  state = state.replace(parts=methods.build(c).init(state.params))
  metrics = []
  for batch in setup["batches"]:
    state, m = step(state, batch)
    metrics.append(m["loss"])
  return state, metrics


def test_rho_zero_is_plain_training_bitwise(digits_setup):
  plain = _run(digits_setup, weight_perturbation="none")
  tanh = _run(digits_setup, weight_perturbation="bisam", sam_rho=0.0, bisam_lower_bound_kind="tanh")
  chex.assert_trees_all_equal(plain, tanh)
  log = _run(digits_setup, method="bisam", sam_rho=0.0)  # the method: log bound, standard training
  chex.assert_trees_all_equal(plain, log)


def test_update_gradient_is_ce_at_the_lower_bound_ascent_point(digits_setup):
  """grads = grad CE(w + v), v = rho grad Q(w) / ||grad Q(w)||, recomputed here; not SAM's v."""
  model, state, rho = digits_setup["model"], digits_setup["state"], 0.05
  batch = digits_setup["batches"][0]
  x, y = jnp.asarray(batch["image"]), jnp.asarray(batch["label"])
  logits_of = lambda p: model.apply({"params": p}, x, train=True)
  ce = lambda p: jnp.mean(losses.cross_entropy(logits_of(p), y))
  q = lambda p: jnp.mean(jnp.asarray(_official_jax(logits_of(p), y)))
  g = jax.jit(jax.grad(q))(state.params)
  norm = jnp.sqrt(sum(jnp.sum(a * a) for a in jax.tree.leaves(g)))
  w_v = jax.tree.map(lambda w, a: w + rho * a / (norm + 1e-12), state.params, g)
  expected = jax.jit(jax.grad(ce))(w_v)

  def loss_fn(params, ex):
    logits = model.apply({"params": params}, ex.x, train=True)
    return jnp.mean(losses.cross_entropy(logits, ex.y)), wa_lib.LossAux({}, logits, {})

  ex = wa_lib.Examples(x=x, x_adv=None, y=y, weights=None, keys=())
  out, _ = jax.jit(lambda p, e: wa_lib.bisam(sam_rho=rho).gradient(loss_fn, e, p, (), None, None))(
      state.params, ex)
  chex.assert_trees_all_close(out.grads, expected, atol=1e-6, rtol=1e-5)
  chex.assert_trees_all_equal(out.optimizer_params, state.params)  # the optimizer at w
  np.testing.assert_allclose(float(out.v_norm), rho, rtol=1e-5)
  sam_out, _ = jax.jit(lambda p, e: wa_lib.sam(sam_rho=rho, sam_weight_decay="paper").gradient(
      loss_fn, e, p, (), None, None))(state.params, ex)
  diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(out.grads), jax.tree.leaves(sam_out.grads)))
  assert diff > 1e-4  # the lower bound's ascent is not CE's


def _official_jax(logits, y):
  """The official log variant written out: logsumexp(1 - log(1 + exp(log(e - 1) - F)))."""
  f = logits - logits[jnp.arange(logits.shape[0]), y][:, None]
  return jax.nn.logsumexp(1.0 - jnp.log1p(jnp.exp(math.log(math.e - 1) - f)), axis=1)


def test_validation_names_the_field():
  c = config_lib.base_config()
  c.method, c.weight_perturbation = "standard", "bisam"
  c.bisam_mu = 0.0
  with pytest.raises(ValueError, match=r"config\.bisam_mu must be > 0"):
    config_lib.validate(c)
  c.bisam_mu, c.bisam_lower_bound_kind = 1.0, "exp"
  with pytest.raises(ValueError, match=r"config\.bisam_lower_bound_kind must be one of"):
    config_lib.validate(c)
  c.bisam_lower_bound_kind, c.method, c.weight_perturbation = "log", "bisam", "sam"
  with pytest.raises(ValueError, match=r"config\.weight_perturbation must be 'none'"):
    config_lib.validate(c)
