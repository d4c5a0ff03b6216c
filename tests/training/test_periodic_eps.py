"""Periodic adversarial scheduling (Liu et al. 2020): the attack's step and start follow eps_t.

Official code: liuchen11/AdversaryLossLandscape ``util/attack.py``: ``PGD.adjust_threshold``
(lines 73-80) rescales the step with the scheduled threshold, ``PGD.attack`` (lines 82-127) starts
within +-step and takes sign steps projected onto the ball and the box; ``util/train.py`` line 46
calls ``adjust_threshold`` with the schedule's value. The transcriptions below follow those lines.
"""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.parts import StepInfo
from robust_jax.training import adversary as adv
from robust_jax.training import config as config_lib
from robust_jax.training import methods
from robust_jax.training import step as step_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHAPE = (4, 4, 1)
EPS, STEP = 8 / 255, 2 / 255


class OfficialPGD:
  """``util/attack.py`` ``PGD`` with ``step_size=2, threshold=8, iter_num=10, order=-1``."""

  def __init__(self, step_size, threshold, iter_num):
    self.step_size = step_size if step_size < 1. else step_size / 255.
    self.threshold = threshold if threshold < 1. else threshold / 255.
    self.iter_num = int(iter_num)
    self.meta_threshold = self.threshold
    self.meta_step_size = self.step_size

  def adjust_threshold(self, threshold):  # lines 73-78
    threshold = threshold if threshold < 1. else threshold / 255.
    self.step_size = self.meta_step_size * threshold / (self.meta_threshold + 1e-6)
    self.threshold = threshold

  def attack(self, grad_fn, data_batch, label_batch, rand):  # lines 82-127, order = inf
    if self.threshold < 1e-6:
      return data_batch
    ori_batch = data_batch
    step_size = np.float32(self.step_size)
    noise = np.clip((rand * 2 - 1) * step_size, -self.threshold, self.threshold)
    data_batch = np.clip(data_batch + noise, 0., 1.).astype(np.float32)
    for _ in range(self.iter_num):
      grad = np.asarray(grad_fn(data_batch, label_batch))
      next_point = data_batch + step_size * np.sign(grad)
      next_point = ori_batch + np.clip(next_point - ori_batch, -self.threshold, self.threshold)
      data_batch = np.clip(next_point, 0., 1.).astype(np.float32)
    return data_batch


def _config(**overrides):
  c = config_lib.base_config()
  c.method = "pgd_at"
  c.eps, c.step_size, c.num_steps = EPS, STEP, 10
  c.attack_step_follows_eps = True
  c.attack_start = "uniform_step"
  for k, v in overrides.items():
    c[k] = v
  config_lib.validate(c)
  return c


def _info(eps):
  return StepInfo(step=jnp.int32(0), epoch=jnp.int32(0), eps=jnp.float32(eps),
                  lr=jnp.float32(0.1))


def _params():
  k1, k2 = jax.random.split(jax.random.key(0))
  return {"w1": jax.random.normal(k1, (16, 24)), "w2": jax.random.normal(k2, (24, 10))}


def _logits(p, x):
  return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"]) @ p["w2"]


EPS_T = [0.0, 0.3 / 255, 2 / 255, 5.5 / 255, 8 / 255]


@pytest.mark.parametrize("eps_t", EPS_T)
def test_step_follows_eps_as_adjust_threshold(eps_t):
  official = OfficialPGD(step_size=2, threshold=8, iter_num=10)
  official.adjust_threshold(eps_t)
  k, step = adv.BUDGETS.build("fixed", _config()).schedule(_info(eps_t))
  assert k == 10
  assert float(step) == pytest.approx(official.step_size, rel=1e-6, abs=1e-12)
  # Off (the default): the step stays fixed whatever eps_t is.
  _, fixed_step = adv.BUDGETS.build("fixed", _config(attack_step_follows_eps=False)).schedule(
      _info(eps_t))
  assert fixed_step == STEP


@pytest.mark.parametrize("eps_t", [1 / 255, 4 / 255, 8 / 255])
def test_uniform_step_start_is_within_the_step(eps_t):
  step = STEP * eps_t / (EPS + 1e-6)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(64,) + SHAPE), jnp.float32)
  key = jax.random.key(1)
  start = adv.uniform_step_start(key, x, eps=eps_t, step_size=step)
  delta = np.asarray(start - x)
  assert np.all(np.abs(delta) <= step + 1e-7)
  assert np.all((np.asarray(start) >= 0) & (np.asarray(start) <= 1))
  interior = (np.asarray(x) > step) & (np.asarray(x) < 1 - step)
  assert np.abs(delta[interior]).max() > 0.95 * step  # it fills +-step, not a smaller box
  # The official formula with the same draws.
  rand = (np.asarray(jax.random.uniform(key, x.shape, jnp.float32, -1.0, 1.0)) + 1) / 2
  want = np.clip(np.asarray(x) + np.clip((rand * 2 - 1) * np.float32(step), -eps_t, eps_t), 0, 1)
  np.testing.assert_allclose(np.asarray(start), want, rtol=0, atol=1e-7)


@pytest.mark.parametrize("eps_t", EPS_T)
def test_transcription_of_the_official_pgd_with_adjusted_threshold(eps_t):
  params = _params()
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.uniform(size=(24,) + SHAPE), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, size=24), jnp.int32)
  key = jax.random.key(3)
  adversary = methods.build(_config(train_diagnostics=False)).input_adversary
  out = jax.jit(lambda x, y, key: adversary.apply(lambda xx: _logits(params, xx), x, y, key,
                                                  _info(eps_t)))(x, y, key)

  def ce_sum(xx, yy):
    logp = jax.nn.log_softmax(_logits(params, xx))
    return -jnp.sum(jnp.take_along_axis(logp, yy[:, None], axis=1))

  official = OfficialPGD(step_size=2, threshold=8, iter_num=10)
  official.adjust_threshold(np.float32(eps_t))
  rand = (np.asarray(jax.random.uniform(key, x.shape, jnp.float32, -1.0, 1.0)) + 1) / 2
  want = official.attack(jax.jit(jax.grad(ce_sum)), np.asarray(x), np.asarray(y), rand)
  np.testing.assert_allclose(np.asarray(out.x_adv), want, rtol=0, atol=2e-6)
  if eps_t == 0.0:
    np.testing.assert_array_equal(np.asarray(out.x_adv), np.asarray(x))
  else:
    assert np.abs(np.asarray(out.x_adv - x)).max() == pytest.approx(eps_t, rel=1e-5)


def test_the_default_start_and_step_are_unchanged():
  """Without the options, pgd_at's attack is the plain PGD of robust_jax.attacks (bit for bit)."""
  from robust_jax import attacks  # pylint: disable=import-outside-toplevel
  params = _params()
  x = jnp.asarray(np.random.default_rng(4).uniform(size=(8,) + SHAPE), jnp.float32)
  y = jnp.arange(8, dtype=jnp.int32)
  c = _config(attack_step_follows_eps=False, attack_start="default", train_diagnostics=False)
  out = methods.build(c).input_adversary.apply(lambda xx: _logits(params, xx), x, y,
                                               jax.random.key(0), _info(4 / 255))
  ref = attacks.pgd(lambda xx: _logits(params, xx), x, y, eps=4 / 255, step_size=STEP,
                    num_steps=10, start="uniform", key=jax.random.key(0), final_eval=False)
  np.testing.assert_array_equal(np.asarray(out.x_adv), np.asarray(ref.x_adv))


def test_the_pas_recipe_follows_eps_t_over_its_periods():
  spec = importlib.util.spec_from_file_location(
      "pas", ROOT / "launch" / "configs" / "cifar10_pas_preact18.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config()
  config_lib.validate(cfg)
  assert cfg.attack_step_follows_eps and cfg.attack_start == "uniform_step"
  budget = adv.BUDGETS.build("fixed", cfg)
  spe = 10
  official = OfficialPGD(step_size=2, threshold=8, iter_num=10)
  for epoch in (0, 5, 25, 49, 50, 99, 100, 120, 150, 199):
    eps_t = float(step_lib.current_eps(epoch * spe, cfg, spe))
    # seq_parser.continuous_seq, cycle_cos with eps_min=0, eps_max=16/255, max=8/255.
    lo, hi = [(0, 100), (100, 150), (150, 200)][int(np.searchsorted([100, 150], epoch, "right"))]
    ratio = (epoch - lo) / (hi - lo)
    assert eps_t == pytest.approx(min(0.5 * 16 / 255 * (1 - np.cos(ratio * np.pi)), 8 / 255),
                                  abs=1e-7)
    official.adjust_threshold(eps_t)
    _, step = budget.schedule(_info(eps_t))
    assert float(step) == pytest.approx(official.step_size, rel=1e-6, abs=1e-12)
