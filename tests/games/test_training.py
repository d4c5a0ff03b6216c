"""The GAN step and loop: n_critic really happens, clipping holds, resume is bit-exact, FD falls."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robust_jax import checkpoint as ckpt_lib
from robust_jax import metrics as metrics_lib
from robust_jax.data import pipeline
from robust_jax.games import config as gan_config
from robust_jax.games import constraints, loop, losses, networks
from robust_jax.games import step as step_lib

SHAPE = (8, 8, 1)


def _tiny(kind, **overrides):
  c = gan_config.for_kind(kind, dataset="digits", cpu=True)
  c.dim, c.latent_dim, c.batch_size, c.critic_unroll = 4, 8, 8, False
  c.update(overrides)
  return c


def _run_steps(c, num_steps):
  g, d = networks.build(c, SHAPE)
  state = step_lib.create(c, g, d, SHAPE)
  step = jax.jit(step_lib.make_train_step(c, g, d))
  x = jax.random.uniform(jax.random.key(0), (num_steps, c.batch_size, c.n_critic) + SHAPE)
  for i in range(num_steps):
    state, metrics = step(state, {"image": x[i]})
  return state, metrics


def _adam_count(opt_state):
  adam = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
          if isinstance(s, optax.ScaleByAdamState)]
  assert len(adam) == 1
  return int(adam[0].count)


def test_wgan_step_leaves_every_critic_weight_in_the_clipping_box():
  c = _tiny("wgan")
  state, _ = _run_steps(c, 2)
  leaves = jax.tree.leaves(state.critic)
  assert all(np.all(np.abs(np.asarray(w)) <= c.clip_value) for w in leaves)
  assert any(np.any(np.abs(np.asarray(w)) == np.float32(c.clip_value)) for w in leaves)  # binding


def _final_state(workdir, c):
  g, d = networks.build(c, SHAPE)
  target = ckpt_lib.abstract_state(step_lib.create(c, g, d, SHAPE))
  with ckpt_lib.CheckpointManager(os.path.join(workdir, "checkpoints"), read_only=True) as m:
    return m.restore_latest(target)[0]


class _Killed(Exception):
  pass


def test_resume_after_interruption_is_bit_exact(tmp_path, monkeypatch):
  """sngan: generator BatchNorm statistics, spectral-norm vectors, Adam states, the step key."""
  c = _tiny("sngan", n_critic=2, num_steps=4, checkpoint_every_steps=2, log_every_steps=1,
            evaluate=False, progress=False)
  loop.train_and_evaluate(c, str(tmp_path / "straight"))

  real_batches = loop.pipeline.train_batches
  def killed_at_step_3(*args, **kwargs):  # the process dies during step 3, after checkpoint 2
    for i, batch in enumerate(real_batches(*args, **kwargs)):
      if i == 2:
        raise _Killed()
      yield batch
  monkeypatch.setattr(loop.pipeline, "train_batches", killed_at_step_3)
  with pytest.raises(_Killed):
    loop.train_and_evaluate(c, str(tmp_path / "resumed"))
  monkeypatch.setattr(loop.pipeline, "train_batches", real_batches)
  assert _final_state(str(tmp_path / "resumed"), c).step == 2
  summary = loop.train_and_evaluate(c, str(tmp_path / "resumed"))
  assert summary["steps"] == 4 and summary["critic_steps"] == 8

  a, b = _final_state(str(tmp_path / "straight"), c), _final_state(str(tmp_path / "resumed"), c)
  init = step_lib.create(c, *networks.build(c, SHAPE), SHAPE)
  for name, stats in init.critic_stats.items():  # the critic steps moved the power-iteration u
    if stats["sn_u"].size > 1:
      assert not np.allclose(stats["sn_u"], a.critic_stats[name]["sn_u"])
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  train = lambda w: {r["step"]: r["generator_loss"] for r in metrics_lib.read(str(tmp_path / w))
                     if r["kind"] == "train"}
  assert train("straight") == train("resumed")  # the same losses at every logged step


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  """A short WGAN-GP run on the digits with the evaluation on (FD, W estimate, coverage, grids)."""
  workdir = str(tmp_path_factory.mktemp("wgan_gp_digits"))
  c = gan_config.for_kind("wgan_gp", dataset="digits", cpu=True)
  c.num_steps, c.eval_every_steps, c.log_every_steps, c.checkpoint_every_steps = 60, 30, 20, 60
  c.classifier_epochs, c.critic_unroll, c.progress = 3, False, False
  return c, workdir, loop.train_and_evaluate(c, workdir)


@pytest.mark.xla_default
def test_short_run_on_digits_moves_the_frechet_distance_down(digits_run):
  _, workdir, summary = digits_run
  evals = loop.history(workdir)
  assert [r["step"] for r in evals] == [0, 30, 60]
  assert evals[-1]["fd"] < evals[0]["fd"]
  assert all(r["fd_floor"] < r["fd"] for r in evals)  # the real-vs-real floor is below
  assert evals[-1]["wasserstein_heldout"] > evals[0]["wasserstein_heldout"]
  assert sum(evals[-1]["class_histogram"]) == evals[-1]["n"] and 1 <= evals[-1]["modes"] <= 10
  for r in evals:
    assert os.path.getsize(os.path.join(workdir, r["grid"])) > 1000
  train = loop.history(workdir, "train")
  assert train and all(r["step_time_s"] > 0 for r in train)
  assert os.listdir(os.path.join(workdir, "tb"))
  assert summary["last_eval"]["fd"] == evals[-1]["fd"]


@pytest.mark.xla_default
def test_n_critic_critic_updates_happen_per_generator_step(digits_run):
  c, workdir, summary = digits_run
  state = _final_state(workdir, c)
  assert int(state.step) == summary["steps"] == c.num_steps
  assert int(state.critic_steps) == summary["critic_steps"] == c.n_critic * c.num_steps
  assert all(r["critic_steps"] == c.n_critic * r["step"] for r in loop.history(workdir, "train"))
  # The optimisers' own counters: the critic's Adam took n_critic updates per generator update.
  assert _adam_count(state.critic_opt) == c.n_critic * c.num_steps
  assert _adam_count(state.generator_opt) == c.num_steps


@pytest.mark.xla_default
def test_gp_critic_is_about_1_lipschitz_after_short_training(digits_run):
  c, workdir, _ = digits_run
  g, d = networks.build(c, SHAPE)
  state = _final_state(workdir, c)
  ds = pipeline.load_dataset("digits")
  real = jnp.asarray(pipeline.to_float(ds.test["image"][:256]))

  @jax.jit
  def probe(state):
    critic = step_lib.critic_fn(d, state)
    fake = step_lib.sample(g, state, jax.random.normal(jax.random.key(5), (256, c.latent_dim)))
    pen = losses.gradient_penalty(critic, losses.interpolates(jax.random.key(6), real, fake))
    return (constraints.empirical_lipschitz(critic, real, fake),
            constraints.empirical_lipschitz(critic, real, real[::-1]), jnp.mean(pen.grad_norms))

  lip, lip_real, mean_norm = probe(state)
  assert lip <= 1.1 and lip_real <= 1.1, (lip, lip_real)
  assert 0.5 < float(mean_norm) < 1.5
