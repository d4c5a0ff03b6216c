"""Wong et al.'s MNIST FGSM start: the first gradient at the unclamped x + U(-eps, eps).

Official code: locuslab/fast_adversarial ``MNIST/train_mnist.py`` (@54f7287) lines 74-83::

    delta = torch.zeros_like(X).uniform_(-args.epsilon, args.epsilon).cuda()
    delta.requires_grad = True
    output = model(X + delta)
    loss = F.cross_entropy(output, y)
    loss.backward()
    grad = delta.grad.detach()
    delta.data = torch.clamp(delta + args.alpha * torch.sign(grad), -args.epsilon, args.epsilon)
    delta.data = torch.max(torch.min(1-X, delta.data), 0-X)
    delta = delta.detach()
    output = model(torch.clamp(X + delta, 0, 1))

The transcription below runs those lines in NumPy with the library's draw of delta.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.parts import StepInfo
from robust_jax.training import config as config_lib
from robust_jax.training import curriculum
from robust_jax.training import methods

SHAPE = (6, 6, 1)
EPS = 0.3


def _config(**overrides):
  c = config_lib.base_config()
  c.method = "fgsm_at"
  c.eps = EPS
  c.fgsm_step_factor = 1.25
  c.attack_start = "uniform_unclamped"
  c.train_diagnostics = False
  for k, v in overrides.items():
    c[k] = v
  config_lib.validate(c)
  return c


def _params():
  k1, k2 = jax.random.split(jax.random.key(0))
  return {"w1": jax.random.normal(k1, (36, 24)), "w2": jax.random.normal(k2, (24, 10))}


def _logits(p, x):
  return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"]) @ p["w2"]


def _batch(seed=0, n=32):
  rng = np.random.default_rng(seed)
  # MNIST-like: most pixels at 0 or 1, where clamping the start matters.
  x = rng.choice([0.0, 1.0, 0.5], size=(n,) + SHAPE, p=[0.6, 0.3, 0.1]).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(rng.integers(0, 10, size=n), jnp.int32)


def _info():
  return StepInfo(step=jnp.int32(0), epoch=jnp.int32(0), eps=jnp.float32(EPS),
                  lr=jnp.float32(1e-3))


def test_the_start_is_in_the_ball_and_leaves_the_box():
  x, _ = _batch()
  start = np.asarray(curriculum.uniform_unclamped_start(jax.random.key(1), x, eps=EPS))
  delta = start - np.asarray(x)
  assert np.abs(delta).max() <= EPS + 1e-7
  assert np.abs(delta).max() > 0.95 * EPS
  assert (start < 0).any() and (start > 1).any()  # not clamped to the box


def test_transcription_of_wongs_mnist_fgsm():
  params = _params()
  x, y = _batch(2)
  key = jax.random.key(3)
  adversary = methods.build(_config()).input_adversary
  out = jax.jit(lambda x, y, key: adversary.apply(lambda xx: _logits(params, xx), x, y, key,
                                                  _info()))(x, y, key)

  def ce_mean(xx, yy):
    logp = jax.nn.log_softmax(_logits(params, xx))
    return -jnp.mean(jnp.take_along_axis(logp, yy[:, None], axis=1))

  xn = np.asarray(x)
  delta = np.asarray(jax.random.uniform(key, x.shape, jnp.float32, -1.0, 1.0)) * np.float32(EPS)
  grad = np.asarray(jax.grad(ce_mean)(jnp.asarray(xn + delta), y))  # at the unclamped X + delta
  alpha = np.float32(1.25 * EPS)
  delta = np.clip(delta + alpha * np.sign(grad), -EPS, EPS)
  delta = np.maximum(np.minimum(1 - xn, delta), 0 - xn)
  want = np.clip(xn + delta, 0, 1)
  np.testing.assert_allclose(np.asarray(out.x_adv), want, rtol=0, atol=1e-6)


def test_the_clamped_start_gives_another_attack():
  """The option matters: from the clamped start the FGSM step lands elsewhere on MNIST-like data."""
  params = _params()
  x, y = _batch(2)
  key = jax.random.key(3)
  run = lambda c: methods.build(c).input_adversary.apply(  # noqa: E731
      lambda xx: _logits(params, xx), x, y, key, _info()).x_adv
  unclamped, clamped = run(_config()), run(_config(attack_start="uniform"))
  assert not np.array_equal(np.asarray(unclamped), np.asarray(clamped))


@pytest.mark.parametrize("overrides, field", [
    (dict(norm="l2", eps=1.0), "config.attack_start"),
])
def test_the_unclamped_start_is_linf_only(overrides, field):
  with pytest.raises(ValueError, match=field):
    _config(**overrides)
