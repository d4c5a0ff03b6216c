"""CIFS (Yan et al. 2021): shapes, the channel relevance from the probe's top-2 logits against NumPy
closed forms, the mask, the detached relevance, the joint loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import models
from robust_jax.models import cifs


def _np_softplus5(z):
  return np.log1p(np.exp(5.0 * z)) / 5.0


def _np_sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _expected_relevance(params, feat, labels):
  """Closed forms (float64): d s / d mean-pooled feature, which is the spatial sum of d s / d feat.

  linear: logits = m W + b        -> r = W[:, first] + W[:, second]
  nonlinear: logits = softplus5(m W1 + b1) W2 + b2
                                  -> r = W1 @ (sigmoid(5 (m W1 + b1)) * (W2[:, first] + W2[:, second]))
  """
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = np.asarray(feat, np.float64).mean(axis=(1, 2))
  if "w1" in p:
    z = m @ p["w1"] + p["b1"]
    logits = _np_softplus5(z) @ p["w2"] + p["b2"]
  else:
    logits = m @ p["w"] + p["b"]
  order = np.argsort(-logits, axis=1)
  first = order[:, 0] if labels is None else np.asarray(labels)
  second = order[:, 1]
  out = np.zeros(m.shape)
  for i in range(m.shape[0]):
    if "w1" in p:
      out[i] = p["w1"] @ (_np_sigmoid(5.0 * z[i]) * (p["w2"][:, first[i]] + p["w2"][:, second[i]]))
    else:
      out[i] = p["w"][:, first[i]] + p["w"][:, second[i]]
  return out, logits


@pytest.mark.parametrize("probe", ["linear", "nonlinear"])
@pytest.mark.parametrize("with_labels", [False, True])
def test_relevance_and_mask_follow_the_top2_rule(probe, with_labels):
  feat = jax.random.normal(jax.random.key(0), (5, 3, 3, 12))
  labels = jnp.array([0, 3, 5, 7, 9]) if with_labels else None
  module = cifs.CIFS(num_classes=10, probe=probe, hidden=16, mask_scale=2.0)
  variables = jax.jit(module.init)(jax.random.key(1), feat, labels)
  masked, logits = jax.jit(module.apply)(variables, feat, labels)
  assert masked.shape == feat.shape and logits.shape == (5, 10)
  expected_r, expected_logits = _expected_relevance(variables["params"], feat, labels)
  np.testing.assert_allclose(np.asarray(logits), expected_logits, rtol=1e-5, atol=1e-5)
  r = jax.jit(lambda p, f, yy: cifs.channel_relevance(
      lambda ff: cifs.probe_logits(p, ff), f, yy))(variables["params"], feat, labels)
  np.testing.assert_allclose(np.asarray(r), expected_r, rtol=1e-4, atol=1e-5)
  e = np.exp(expected_r - expected_r.max(axis=1, keepdims=True))
  mask = 2.0 * e / e.sum(axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(masked), np.asarray(feat) * mask[:, None, None, :],
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(mask.sum(axis=1), 2.0)


def test_features_get_no_gradient_through_the_mask_but_the_probe_does():
  feat = jax.random.normal(jax.random.key(2), (3, 2, 2, 6))
  v = jax.random.normal(jax.random.key(3), feat.shape)
  module = cifs.CIFS(num_classes=4, probe="linear")
  variables = jax.jit(module.init)(jax.random.key(4), feat)
  masked_sum = lambda f, p: jnp.sum(v * module.apply({"params": p}, f)[0])
  g_feat = jax.jit(jax.grad(masked_sum))(feat, variables["params"])
  masked = jax.jit(module.apply)(variables, feat)[0]
  mask = masked / feat
  np.testing.assert_allclose(np.asarray(g_feat), np.asarray(v * mask), rtol=1e-5, atol=1e-6)
  # The probe's weights do get a gradient through the relevance (second order, create_graph=True).
  g_p = jax.jit(jax.grad(masked_sum, argnums=1))(feat, variables["params"])
  assert float(jnp.max(jnp.abs(g_p["w"]))) > 0.0


def test_joint_loss_is_the_official_formula():
  k = jax.random.split(jax.random.key(5), 3)
  final, p1, p2 = (jax.random.normal(kk, (4, 10)) for kk in k)
  y = jnp.array([1, 2, 3, 4])
  ce = lambda z: float(np.mean(-np.asarray(jax.nn.log_softmax(z))[np.arange(4), np.asarray(y)]))
  expected = (ce(final) + 2.0 / 2 * (ce(p1) + ce(p2))) * 3.0 / 3.0
  assert float(cifs.joint_ce_loss(final, [p1, p2], y, beta=2.0)) == pytest.approx(expected, rel=1e-5)
  assert float(cifs.joint_ce_loss(final, [], y, beta=1.0)) == pytest.approx(1.5 * ce(final), rel=1e-5)


def test_cifs_cnn4_shapes_and_modes():
  shape = (3, 8, 8, 1)
  model = models.get_model("cifs_cnn4")
  x = jax.random.uniform(jax.random.key(6), shape)
  y = jnp.arange(shape[0]) % 10
  variables = jax.jit(model.init)(jax.random.key(7), x)

  @jax.jit
  def run(v, xx, yy):
    logits = model.apply(v, xx)
    out, probes = model.apply(v, xx, return_probes=True)
    (train_logits, train_probes), _ = model.apply(v, xx, train=True, labels=yy,
                                                  return_probes=True, mutable=["batch_stats"])
    return logits, out, probes, train_logits, train_probes, model.apply(v, xx, labels=yy)

  logits, out, probes, train_logits, train_probes, eval_with_labels = run(variables, x, y)
  assert logits.shape == (shape[0], 10) and logits.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(out), np.asarray(logits))
  assert [p.shape for p in probes] == [(shape[0], 10)] * 2
  assert train_logits.shape == (shape[0], 10) and len(train_probes) == 2
  # Eval mode ignores the labels (the top-1 rule, as the official ``not self.training``).
  np.testing.assert_array_equal(np.asarray(eval_with_labels), np.asarray(logits))
  # 28x28 (MNIST) traces too.
  big = jax.eval_shape(lambda xx: model.init(jax.random.key(0), xx), jnp.zeros((1, 28, 28, 1)))
  assert models.count_params(big) == 421_834 + (32 * 128 + 128 + 128 * 10 + 10) + (64 * 10 + 10)


def test_cifs_resnet18_places_the_two_probes_in_layer4():
  model = models.get_model("cifs_resnet18")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  params = shapes["params"]
  assert set(params["cifs4_0"]) == {"w1", "b1", "w2", "b2"} and params["cifs4_0"]["w1"].shape == (512, 128)
  assert set(params["cifs4_1"]) == {"w", "b"} and params["cifs4_1"]["w"].shape == (512, 10)
  out = jax.eval_shape(lambda v, xx: model.apply(v, xx, return_probes=True), shapes,
                       jnp.zeros((2, 32, 32, 3)))
  assert out[0].shape == (2, 10) and [p.shape for p in out[1]] == [(2, 10), (2, 10)]
  # The backbone without the probes is kuangliu's ResNet-18.
  base = jax.eval_shape(models.get_model("resnet18").init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert models.count_params(shapes) - models.count_params(base) == (512 * 128 + 128 + 128 * 10 + 10
                                                                     + 512 * 10 + 10)


def test_cifs_cnn4_trains_through_the_library_step():
  # What ``launch.train --config.model=cifs_cnn4`` runs: PGD-AT with the joint CE of the final and
  # probe logits, the label rule in the training forward (tests/training/test_cifs_step.py checks
  # the loss and the gradient against joint_ce_loss).
  from robust_jax.training import config as config_lib, methods, state as state_lib
  from robust_jax.training import step as step_lib
  config = config_lib.base_config()
  config.update(dict(model="cifs_cnn4", method="pgd_at", eps=0.2, step_size=0.05, num_steps=2,
                     batch_size=8, train_diagnostics=False))
  model = models.get_model("cifs_cnn4")
  tx, lr_fn = step_lib.make_optimizer(config, 10)
  state = state_lib.create(model=model, tx=tx, sample_input=jnp.zeros((1, 8, 8, 1)), seed=0)
  bundle = methods.build(config)
  state = state.replace(parts=bundle.init(state.params))
  step = jax.jit(step_lib.make_train_step(config, model, tx, lr_fn, 10, bundle=bundle))
  batch = {"image": jax.random.uniform(jax.random.key(0), (8, 8, 8, 1)),
           "label": jnp.arange(8, dtype=jnp.int32)}
  new_state, metrics = step(state, batch)
  assert np.isfinite(float(metrics["loss"]))
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), new_state.params, state.params)
  assert moved["cifs2"]["w"] > 0 and moved["conv1"]["kernel"] > 0
