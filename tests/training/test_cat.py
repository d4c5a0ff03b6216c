"""CAT (Cai et al. 2018) as the official code runs it: batch mixing with PGD-0 ... PGD-k chunks.

Official code: sunblaze-ucb/curriculum-adversarial-training-CAT, ``advtrain_all.py``
(``regularLoss``, lines 284-310; the attack object, lines 201-205) and ``PGDAttack.py``
(``perturb_true``, lines 44-81). The transcription below follows those lines; it is fed the
library's random draws (:func:`robust_jax.training.adversary.cat_plan`), whose distribution is
tested on its own.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from robust_jax.parts import StepInfo
from robust_jax.training import adversary as adv
from robust_jax.training import config as config_lib
from robust_jax.training import methods
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib
from robust_jax.training.loop import initial_parts

EPS = 0.1
SHAPE = (4, 4, 1)


def _params(seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {"w1": jax.random.normal(k1, (16, 24)) * 0.8, "w2": jax.random.normal(k2, (24, 10))}


def _logits(p, x):
  """A tiny nonlinear model (no BatchNorm: every example is attacked independently)."""
  return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"]) @ p["w2"]


def _config(**overrides):
  c = config_lib.base_config()
  c.method = "cat"
  c.eps = EPS
  c.batch_size = 16
  c.cat_steps_boundaries, c.cat_steps_values = (), (2,)
  for k, v in overrides.items():
    c[k] = v
  config_lib.validate(c)
  return c


def _info(eps=EPS, epoch=0):
  return StepInfo(step=jnp.int32(0), epoch=jnp.int32(epoch), eps=jnp.float32(eps),
                  lr=jnp.float32(0.1))


def _batch(b, seed=1, interior=True):
  rng = np.random.default_rng(seed)
  lo, hi = (EPS, 1 - EPS) if interior else (0.0, 1.0)  # interior: the start's clamp is inactive
  x = rng.uniform(lo, hi, size=(b,) + SHAPE).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(rng.integers(0, 10, size=b), jnp.int32)


def _attack(config, x, y, key, params=None, info=None):
  adversary = methods.build(config).input_adversary
  params = _params() if params is None else params
  return jax.jit(lambda x, y, key: adversary.apply(lambda xx: _logits(params, xx), x, y, key,
                                                   info or _info()))(x, y, key)


def _official_chunks(batch_size, k):
  """``regularLoss`` lines 287-293 (Python 2 ``/`` on ints): the slice of each chunk."""
  each_batch = batch_size // (k + 1)
  out = np.zeros(batch_size, np.int64)
  for cur_k in range(k + 1):
    sl = (slice(cur_k * each_batch, (cur_k + 1) * each_batch) if cur_k != k
          else slice(k * each_batch, None))  # the last chunk "gets max share"
    out[sl] = cur_k
  return out


@pytest.mark.parametrize("diagnostics", [True, False])
@pytest.mark.parametrize("batch", [9, 10, 16])
def test_with_k_2_the_chunks_take_0_1_and_2_steps(batch, diagnostics):
  x, y = _batch(batch)
  out = _attack(_config(batch_size=max(batch, 3), train_diagnostics=diagnostics), x, y,
                jax.random.key(0))
  steps = np.asarray(out.result.num_steps)
  m = batch // 3
  want = np.array([0] * m + [1] * m + [2] * (batch - 2 * m))
  np.testing.assert_array_equal(steps, want)
  moved = np.asarray(jnp.max(jnp.abs(out.x_adv - x), axis=(1, 2, 3)))
  assert np.all(moved[want == 0] == 0.0)  # chunk 0 is the clean input, bit for bit
  assert np.all(moved[want > 0] > 0.0)
  assert np.all(moved <= EPS + 1e-6)
  assert float(out.metrics["attack_steps"]) == pytest.approx(want.mean())
  assert int(out.num_steps) == 2


@pytest.mark.parametrize("batch", [1, 7, 8, 16, 128, 200])
def test_cat_chunks_is_the_official_slicing(batch):
  for k in range(min(batch, 12)):
    np.testing.assert_array_equal(np.asarray(adv.cat_chunks(batch, k)),
                                  _official_chunks(batch, k))
  # Traced k: the same layout.
  traced = jax.jit(lambda k: adv.cat_chunks(batch, k))
  np.testing.assert_array_equal(np.asarray(traced(jnp.int32(min(batch - 1, 7)))),
                                _official_chunks(batch, min(batch - 1, 7)))


def test_k_0_trains_on_the_clean_batch():
  x, y = _batch(8)
  out = _attack(_config(batch_size=8, cat_steps_values=(0,)), x, y, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(out.x_adv), np.asarray(x))
  assert np.all(np.asarray(out.result.num_steps) == 0)


def test_step_sizes_follow_the_official_formula_and_distribution():
  """(base / j) U(1, 10 / j): constant within a chunk, uniform across draws; for j > 10 in
  (10 / j, 1] (NumPy's uniform with high < low), for j = 10 exactly base / 10."""
  batch, k, base = 26, 12, 2 * EPS
  chunks = adv.cat_chunks(batch, k)
  draws = jax.vmap(lambda key: adv.cat_step_sizes(key, chunks, base))(
      jax.random.split(jax.random.key(0), 4000))
  draws = np.asarray(draws, np.float64)
  chunks = np.asarray(chunks)
  for j in range(1, k + 1):
    in_chunk = draws[:, chunks == j]
    assert np.all(in_chunk == in_chunk[:, :1]), j  # one draw per chunk
    u = in_chunk[:, 0] * j / base               # the U(1, 10 / j) factor
    lo, hi = sorted((1.0, 10.0 / j))
    assert np.all(u >= lo - 1e-5) and np.all(u <= hi + 1e-5), (j, u.min(), u.max())
    if j == 10:
      np.testing.assert_allclose(u, 1.0, rtol=1e-6)
      continue
    # Uniform on [lo, hi]: Kolmogorov-Smirnov against the official distribution.
    assert stats.kstest((u - lo) / (hi - lo), "uniform").pvalue > 1e-3, j
  # Different chunks draw independently.
  assert abs(np.corrcoef(draws[:, chunks == 1][:, 0], draws[:, chunks == 2][:, 0])[0, 1]) < 0.1


def test_the_budget_gives_k_and_twice_eps():
  c = _config(cat_steps_boundaries=(2, 5), cat_steps_values=(0, 1, 3), cat_step_factor=2.0)
  budget = adv.BUDGETS.build("cat", c)
  for epoch, want_k in [(0, 0), (1, 0), (2, 1), (4, 1), (5, 3), (9, 3)]:
    k, base = budget.schedule(_info(eps=0.03, epoch=epoch))
    assert int(k) == want_k
    assert float(base) == pytest.approx(0.06)


def _official_cat_inputs(grad_fn, inputs, targets, k, eps, noise, steps):
  """``regularLoss`` (lines 284-299) with ``perturb_true`` (lines 44-81) in NumPy, given the
  chunks' start noise (``np.random.uniform(-eps, eps, x_nat.shape)``) and step sizes."""
  batch = inputs.shape[0]
  each_batch = batch // (k + 1)
  inputs_var = inputs.copy()
  for cur_k in range(k + 1):
    sl = (slice(cur_k * each_batch, (cur_k + 1) * each_batch) if cur_k != k
          else slice(k * each_batch, None))
    x_nat, y = inputs[sl], targets[sl]
    if cur_k == 0:
      inputs_var[sl] = x_nat  # ``if cur_k != 0 else inputs_now``
      continue
    step_size = steps[sl][0]
    x = x_nat + noise[sl]
    for _ in range(cur_k):
      grad = np.asarray(grad_fn(x.astype(np.float32), y))
      x = x.astype(np.float32)
      x = np.add(x, step_size * np.sign(grad), out=x, casting="unsafe")
      x = np.clip(x, x_nat - eps, x_nat + eps)
      x = np.clip(x, 0, 1)
    inputs_var[sl] = x
  return inputs_var


@pytest.mark.parametrize("batch,k", [(16, 2), (23, 4), (12, 11)])
def test_transcription_of_the_official_batch_mixing(batch, k):
  params = _params(3)
  x, y = _batch(batch, seed=batch)
  key = jax.random.key(5)
  c = _config(batch_size=batch, cat_steps_values=(k,), train_diagnostics=False)
  out = _attack(c, x, y, key, params=params)
  plan = adv.cat_plan(key, x, k, eps=EPS, base=2 * EPS)

  def ce_sum(xx, yy):
    logp = jax.nn.log_softmax(_logits(params, xx))
    return -jnp.sum(jnp.take_along_axis(logp, yy[:, None], axis=1))

  grad_fn = jax.jit(jax.grad(ce_sum))
  noise = np.asarray(plan.x_start - x)  # interior images: the library's clamp is inactive
  assert np.all(np.abs(noise) <= EPS + 1e-6)
  want = _official_cat_inputs(grad_fn, np.asarray(x), np.asarray(y), k, EPS, noise,
                              np.asarray(plan.step_sizes))
  np.testing.assert_allclose(np.asarray(out.x_adv), want, rtol=0, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out.result.num_steps), _official_chunks(batch, k))
  np.testing.assert_array_equal(np.asarray(plan.chunks), _official_chunks(batch, k))


def test_train_mode_is_refused_for_cat_and_early_stopping_rules():
  for method in ("cat", "dart", "fat", "gair_fat", "fat_trades", "fat_mart"):
    with pytest.raises(ValueError) as e:
      _config(method=method, attack_bn_mode="train")
    msg = str(e.value)
    assert "config.attack_bn_mode" in msg and f"config.method={method!r}" in msg, msg
  for method in ("pgd_at", "step_curriculum", "trades", "gairat"):
    _config(method=method, attack_bn_mode="train")  # every example takes every step


def test_step_curriculum_attacks_the_whole_batch_with_k_steps():
  x, y = _batch(12)
  c = _config(method="step_curriculum", batch_size=12, cat_steps_values=(3,), step_size=0.02)
  out = _attack(c, x, y, jax.random.key(0))
  assert np.all(np.asarray(out.result.num_steps) == 3)
  assert np.all(np.asarray(jnp.max(jnp.abs(out.x_adv - x), axis=(1, 2, 3))) > 0)


def test_the_training_step_mixes_chunks_under_one_compilation():
  """Through the composed step: k from the fixed schedule (1 then 3), the step's metrics report
  the chunks' mean step count, one compilation for both values of k."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      x = nn.Dense(16)(x.reshape(x.shape[0], -1))
      x = nn.BatchNorm(use_running_average=not train)(x)
      return nn.Dense(10)(nn.relu(x))

  spe, batch = 2, 12
  c = _config(batch_size=batch, cat_steps_boundaries=(1,), cat_steps_values=(1, 3),
              num_epochs=2, lr_decay_epochs=(), lr_decay_factors=())
  model = Net()
  tx, lr_fn = step_lib.make_optimizer(c, spe)
  state = state_lib.create(model=model, tx=tx, sample_input=jnp.zeros((1,) + SHAPE), seed=0)
  state = state.replace(parts=initial_parts(c, state.params))
  step = jax.jit(step_lib.make_train_step(c, model, tx, lr_fn, spe))
  seen = []
  for i in range(2 * spe):
    x, y = _batch(batch, seed=10 + i)
    state, m = step(state, {"image": x, "label": y})
    assert np.isfinite(float(m["loss"]))
    seen.append(float(m["attack_steps"]))
  assert step._cache_size() == 1
  assert seen[:spe] == [pytest.approx(_official_chunks(batch, 1).mean())] * spe
  assert seen[spe:] == [pytest.approx(_official_chunks(batch, 3).mean())] * spe


def test_a_batch_smaller_than_k_plus_1_is_refused_for_cat_only():
  with pytest.raises(ValueError, match=r"config.batch_size must exceed CAT's largest k \(7"):
    _config(batch_size=7, cat_steps_boundaries=(1,), cat_steps_values=(2, 7))
  _config(batch_size=8, cat_steps_boundaries=(1,), cat_steps_values=(2, 7))
  _config(method="step_curriculum", batch_size=4, cat_steps_values=(7,))  # no chunks


def test_step_limits_compose_with_another_stop_rule():
  """``AllStop``: an example moves while every rule keeps it (here FOSC <= inf stops everyone
  after the first step, which Dynamic AT's rule always takes)."""
  from robust_jax import attacks, losses  # pylint: disable=import-outside-toplevel
  params = _params()
  x, y = _batch(4)
  limits = adv.StepLimitStop(limits=jnp.array([0, 1, 3, 3]))
  run = lambda stop: attacks.ascent(lambda xx: _logits(params, xx), losses.get_loss("ce"), x, y,
                                    x, eps=EPS, step_size=0.02, num_steps=3, stop=stop)
  assert run(limits).num_steps.tolist() == [0, 1, 3, 3]
  both = adv.AllStop(rules=(limits, attacks.fosc_stop(float("inf"))))
  assert run(both).num_steps.tolist() == [0, 1, 1, 1]
