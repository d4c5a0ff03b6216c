"""Dynamic AT's official switches against transcriptions of the official code.

Official code: YisenWang/dynamic_adv_training @470210e (TF 1.10 + Keras 2.2.2).

* ``fosc_reference="start"``: ``pgd_attack.py``, ``LinfPGDAttack.perturb``. The start is
  ``x_nat + np.random.uniform(-eps, eps)`` *without* a clip; ``original_batch_x`` keeps it as the
  FOSC reference; the first gradient is taken there; every step is ``+ eps_iter sign(g)`` (times the
  0/1 ``control_indicator`` from step 1 on), then the clip to the eps-ball around x_nat and to
  [clip_min, clip_max]; after each step FOSC_i = eps ||g_i||_1 - <x_i - original_i, g_i> at the new
  iterate, and ``control_indicator_i = FOSC_i > cri`` for the next step. The transcription below
  follows those lines in NumPy (float64, as NumPy promotes ``x_nat + uniform(...)``), with two
  changes: the random draw is supplied (the library's), and ``np.repeat(indicator, 32*32*3)`` (the
  hard-coded CIFAR shape) is a per-example broadcast. ``sess.run([loss, grad])`` is a JAX gradient
  of the official ``xent``, ``-sum(y log(softmax(z) + 1e-20))``, summed over the batch as
  ``tf.gradients`` of the loss vector is.
* ``dart_official_reweight=True``: ``train_models.py``, ``advs_train``: ``probs =
  model.predict(batch_advs)``, ``loss_weight = np.max(-batch_y * np.log(probs + 1e-12), axis=1)``,
  ``train_on_batch(batch_advs, batch_y, sample_weight=loss_weight)`` from epoch 1 (no weights at
  epoch 0), which Keras 2.2 (``keras/engine/training_utils.py``, ``weighted_masked_objective``)
  reduces as ``mean(l * w / mean(w != 0))``.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
from numpy import linalg as LA
import pytest

from robust_jax import attacks, losses, objectives, weighting
from robust_jax.attacks import _projections as projections
from robust_jax.parts import StepInfo
from robust_jax.training import config as config_lib
from robust_jax.training import methods

EPS = 0.031           # train_models.py: -p 0.031
EPS_ITER = EPS / 4    # LinfPGDAttack(eps_iter=epsilon / 4)
NB_ITER = 10          # nb_iter=10
B, SHAPE, C = 24, (4, 4, 3), 10


def _params(seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {"w1": jax.random.normal(k1, (48, 32)) * 0.6, "w2": jax.random.normal(k2, (32, C))}


def _logits(p, x):
  """A tiny nonlinear model without BatchNorm (the official attack runs in inference mode)."""
  return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"]) @ p["w2"]


PARAMS = _params()
LOGITS_FN = jax.tree_util.Partial(_logits, PARAMS)


def _images():
  rng = np.random.default_rng(0)
  x = rng.uniform(0.0, 1.0, size=(B,) + SHAPE).astype(np.float32)
  x[:, 0] = 0.0   # pixels on the border of the box: the unclipped start leaves it there
  x[:, -1] = 1.0
  return x, (np.arange(B) % C).astype(np.int32)


def _official_xent_grad(p):
  """``sess.run([self.loss, self.grad])`` of ``LinfPGDAttack`` (loss_func='xent')."""
  def total(x, y_true):
    y_pred = jax.nn.softmax(_logits(p, x))
    return jnp.sum(-jnp.sum(y_true * jnp.log(y_pred + 1e-20), axis=1))

  grad = jax.jit(jax.grad(total))
  return lambda x, y_true: np.asarray(grad(jnp.asarray(x, jnp.float32), y_true))


def _official_perturb(sess_run, x_nat, y, noise, epsilon, eps_iter, nb_iter, cri, clip_min=0.0,
                      clip_max=1.0):
  """``LinfPGDAttack.perturb`` for one chunk (batch_size = len(x)), the draw supplied.

  Returns the iterates [nb_iter + 1, B, ...] (the start first), ``fosc_batch`` [B, nb_iter] and the
  steps each example took (the official code does not count them: step 0, plus each j >= 1 whose
  ``control_indicator`` was 1).
  """
  x = x_nat + noise  # np.random.uniform(-epsilon, epsilon, x_nat.shape)
  batch_x = x
  original_batch_x = np.copy(batch_x)
  step_size = eps_iter
  iterates, steps, fosc_batch = [np.copy(batch_x)], np.zeros(len(x), np.int64), None
  for j in range(nb_iter):
    if j == 0:
      grad = sess_run(batch_x, y)
      batch_x = batch_x + step_size * np.sign(grad)
      steps += 1
    else:
      indicator = control_indicator.reshape((-1,) + (1,) * (batch_x.ndim - 1))
      batch_x = batch_x + np.multiply(step_size * np.sign(grad), indicator)
      steps += control_indicator[:, 0].astype(np.int64)
    batch_x = np.clip(batch_x, x_nat - epsilon, x_nat + epsilon)
    batch_x = np.clip(batch_x, clip_min, clip_max)
    grad = sess_run(batch_x, y)
    grad_adv = np.copy(grad)
    grad_flatten = grad_adv.reshape(batch_x.shape[0], -1)
    grad_norm = LA.norm(grad_flatten, ord=1, axis=1).reshape(-1, 1)
    diff = (batch_x - original_batch_x).reshape(batch_x.shape[0], -1)
    fosc = np.copy(grad_norm)
    for i in range(batch_x.shape[0]):
      fosc[i] = -np.dot(grad_flatten[i], diff[i]) + epsilon * grad_norm[i]
    control_indicator = np.copy(fosc)
    control_indicator[control_indicator <= cri] = 0
    control_indicator[control_indicator > cri] = 1
    fosc_batch = fosc if j == 0 else np.concatenate((fosc_batch, fosc), axis=1)
    iterates.append(np.copy(batch_x))
  return np.stack(iterates), fosc_batch, steps


def _library_noise(key, x):
  """The library's uniform draw (``random_start``): U(-1, 1) * eps in float32."""
  return np.asarray(jax.random.uniform(key, x.shape, jnp.float32, -1.0, 1.0) * jnp.float32(EPS))


# The threshold: between two FOSC values of the official run, so that the examples stop at
# different steps and no value sits within float32 rounding of it (checked in the tests).
CRI = 1.0


@pytest.fixture(scope="module")
def official():
  x, y = _images()
  key = jax.random.key(7)
  noise = _library_noise(key, x)
  y_true = np.eye(C, dtype=np.float32)[y]
  iterates, fosc_batch, steps = _official_perturb(_official_xent_grad(PARAMS), x, y_true,
                                                  noise.astype(np.float64), EPS, EPS_ITER,
                                                  NB_ITER, CRI)
  return types.SimpleNamespace(x=x, y=y, key=key, noise=noise, iterates=iterates,
                               fosc=fosc_batch, steps=steps)


def test_the_transcription_exercises_the_switch(official):
  # The data make the test sensitive: the unclipped start leaves the box, examples stop at several
  # different steps (some after the first, some never), and no FOSC value is a near-tie with cri.
  start = official.iterates[0]
  assert start.min() < 0.0 and start.max() > 1.0
  assert len(set(official.steps.tolist())) >= 3
  assert official.steps.min() == 1 and official.steps.max() == NB_ITER
  assert np.min(np.abs(official.fosc - CRI)) > 1e-4


def test_pgd_with_fosc_reference_start_is_linf_pgd_attack_perturb(official):
  x, y = jnp.asarray(official.x), jnp.asarray(official.y)
  stop = attacks.fosc_stop(CRI)
  for k in range(1, NB_ITER + 1):
    r = attacks.pgd(LOGITS_FN, x, y, eps=EPS, step_size=EPS_ITER, num_steps=k, start="uniform",
                    key=official.key, stop=stop, fosc_reference="start")
    # Iterates to float32 rounding (the official iterates are float64); a wrong start, clip or
    # mask moves a pixel by a step, 0.00775.
    np.testing.assert_allclose(np.asarray(r.x_adv), official.iterates[k], rtol=0, atol=1e-6)
    # FOSC at x^k, measured from the unclipped start.
    np.testing.assert_allclose(np.asarray(r.fosc), official.fosc[:, k - 1], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(r.num_steps), official.steps)


def test_ascent_from_the_supplied_unclipped_start(official):
  # The same start handed to both: the ascent loop itself, with the raw start x + U(-eps, eps).
  x, y = jnp.asarray(official.x), jnp.asarray(official.y)
  x_start = jnp.asarray(official.iterates[0], jnp.float32)
  r = jax.jit(lambda xs: attacks.ascent(
      LOGITS_FN, losses.ce, x, y, xs, eps=EPS, step_size=EPS_ITER, num_steps=NB_ITER,
      stop=attacks.fosc_stop(CRI), fosc_reference="start"))(x_start)
  np.testing.assert_allclose(np.asarray(r.x_adv), official.iterates[-1], rtol=0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(r.fosc), official.fosc[:, -1], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(r.num_steps), official.steps)
  # The start draws of pgd and random_start(project_start=False) are this start.
  raw = projections.random_start(official.key, x, jnp.float32(EPS), "linf", "uniform",
                                 project_start=False)
  np.testing.assert_array_equal(np.asarray(raw), np.asarray(x_start))


def test_the_paper_reference_and_a_clipped_start_differ_from_the_official_code(official):
  # What the switch changes: measured from x (the paper) the FOSC values and the stop steps differ.
  x, y = jnp.asarray(official.x), jnp.asarray(official.y)
  kw = dict(eps=EPS, step_size=EPS_ITER, num_steps=NB_ITER, start="uniform", key=official.key,
            stop=attacks.fosc_stop(CRI))
  paper = attacks.pgd(LOGITS_FN, x, y, fosc_reference="natural", **kw)
  assert np.max(np.abs(np.asarray(paper.fosc) - official.fosc[:, -1])) > 1e-2
  assert np.any(np.asarray(paper.num_steps) != official.steps)
  # And the clipped start (the library before this switch matched the code) moves border pixels.
  clipped = np.clip(official.iterates[0], 0.0, 1.0)
  assert np.max(np.abs(clipped - official.iterates[0])) > 1e-3


def test_no_step_returns_the_projected_start(official):
  x, y = jnp.asarray(official.x), jnp.asarray(official.y)
  r = attacks.pgd(LOGITS_FN, x, y, eps=EPS, step_size=EPS_ITER, num_steps=0, start="uniform",
                  key=official.key, fosc_reference="start")
  want = np.clip(official.iterates[0], official.x - EPS, official.x + EPS).clip(0.0, 1.0)
  np.testing.assert_allclose(np.asarray(r.x_adv), want, rtol=0, atol=1e-7)
  assert float(jnp.min(r.x_adv)) >= 0.0 and float(jnp.max(r.x_adv)) <= 1.0


def _dart_config(**overrides):
  c = config_lib.base_config()
  c.method = "dart"
  c.eps = EPS
  c.step_size = EPS_ITER
  c.num_steps = NB_ITER
  c.fosc_c_max = CRI            # c_0 = c_max at epoch 0
  c.fosc_reference = "start"
  c.dart_official_reweight = True
  for k, v in overrides.items():
    c[k] = v
  config_lib.validate(c)
  return c


def _info(epoch):
  return StepInfo(step=jnp.int32(0), epoch=jnp.int32(epoch), eps=jnp.float32(EPS),
                  lr=jnp.float32(0.01))


@pytest.mark.parametrize("compaction", [0, 3])
def test_the_training_adversary_of_dart_is_the_official_attack(official, compaction):
  bundle = methods.build(_dart_config(attack_compaction=compaction))
  x, y = jnp.asarray(official.x), jnp.asarray(official.y)
  out = jax.jit(lambda x, y, key: bundle.input_adversary.apply(
      LOGITS_FN, x, y, key, _info(0)))(x, y, official.key)
  np.testing.assert_allclose(np.asarray(out.x_adv), official.iterates[-1], rtol=0, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out.result.num_steps), official.steps)


def _keras_weighted_loss(per_example, sample_weight):
  """``weighted_masked_objective`` (Keras 2.2) for 1-D scores and weights."""
  score_array = per_example * sample_weight
  score_array = score_array / np.mean((sample_weight != 0).astype(np.float32))
  return np.mean(score_array)


def _official_loss_weight(logits, y):
  """``probs = model.predict(batch_advs)``; ``np.max(-batch_y * np.log(probs + 1e-12), axis=1)``."""
  z = logits - logits.max(axis=1, keepdims=True)
  probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
  batch_y = np.eye(logits.shape[1], dtype=np.float32)[y]
  return np.max(-batch_y * np.log(probs + 1e-12), axis=1)


def _logits_batch():
  rng = np.random.default_rng(3)
  logits = rng.normal(0.0, 3.0, size=(8, C)).astype(np.float32)
  y = rng.integers(0, C, size=8).astype(np.int32)
  logits[0] = 0.0
  logits[0, y[0]] = 200.0      # p_y = 1 in float32: weight 0, left out of Keras' count
  logits[1] = 0.0
  logits[1, y[1]] = -200.0     # p_y = 0: weight -log(1e-12) = 27.63, not CE = 200
  return logits, y


def test_official_reweighting_is_keras_sample_weight():
  logits, y = _logits_batch()
  # The weighting sees the attack's x_adv through logits_fn; here x_adv are the logits themselves.
  adv = types.SimpleNamespace(x_adv=jnp.asarray(logits))
  part = weighting.dart(dart_official_reweight=True)
  w_official = _official_loss_weight(logits, y)
  assert w_official[0] == 0.0 and w_official[1] == pytest.approx(27.631021, rel=1e-6)
  per_example = np.asarray(losses.cross_entropy(jnp.asarray(logits), jnp.asarray(y)))

  w = np.asarray(part.apply(adv, lambda z: z, jnp.asarray(y), _info(1)))
  # The weights are Keras': w_i / mean(w != 0), not renormalised to mean 1.
  np.testing.assert_allclose(w, w_official / (7 / 8), rtol=1e-6)
  assert abs(w.mean() - 1.0) > 1.0
  loss = objectives.ce_adv(None, jnp.asarray(logits), jnp.asarray(y), weights=jnp.asarray(w))
  np.testing.assert_allclose(float(loss), _keras_weighted_loss(per_example, w_official),
                             rtol=1e-6)

  # Epoch 0: train_on_batch without sample_weight, i.e. Keras' weights of ones.
  w0 = np.asarray(part.apply(adv, lambda z: z, jnp.asarray(y), _info(0)))
  np.testing.assert_array_equal(w0, np.ones(8, np.float32))
  loss0 = objectives.ce_adv(None, jnp.asarray(logits), jnp.asarray(y), weights=jnp.asarray(w0))
  np.testing.assert_allclose(float(loss0), _keras_weighted_loss(per_example, np.ones(8)),
                             rtol=1e-6)


def test_keras_sample_weights_all_zero_gives_a_zero_loss():
  # Keras would divide 0 by 0 here; the library's weights (and loss) are 0 instead.
  np.testing.assert_array_equal(np.asarray(weighting.keras_sample_weights(jnp.zeros(4))),
                                np.zeros(4))


def test_the_paper_default_has_no_weights():
  adv = types.SimpleNamespace(x_adv=jnp.zeros((2, C)))
  assert weighting.dart().apply(adv, lambda z: z, jnp.zeros(2, jnp.int32), _info(3)) is None
  bundle = methods.build(_dart_config(dart_official_reweight=False, fosc_reference="natural"))
  assert bundle.weighting.apply(adv, lambda z: z, jnp.zeros(2, jnp.int32), _info(3)) is None
