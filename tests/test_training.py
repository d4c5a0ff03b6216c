"""The compiled training step: one compilation per run, AWP's exact update, determinism, validation."""

import chex
import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robust_jax import attacks, objectives
from robust_jax import weight_perturbation as wp
from robust_jax.models import functional
from robust_jax.training import config as config_lib
from robust_jax.training import schedules
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib
from robust_jax.training.loop import initial_parts


class TinyBNNet(nn.Module):
  """A small MLP with BatchNorm, so that BatchNorm handling is exercised."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(32)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x)
    return nn.Dense(self.num_classes)(x)


B, SPE = 16, 3


def _config(**overrides):
  c = config_lib.base_config()
  c.eps, c.step_size, c.num_steps = 0.2, 0.05, 4
  c.batch_size, c.num_epochs, c.learning_rate = B, 4, 0.05
  c.lr_decay_epochs, c.lr_decay_factors = (2,), (0.1,)
  for k, v in overrides.items():
    c[k] = v
  config_lib.validate(c)
  return c


def _setup(c, model=None):
  model = model or TinyBNNet()
  tx, lr_fn = step_lib.make_optimizer(c, SPE)
  state = state_lib.create(model=model, tx=tx, sample_input=jnp.zeros((1, 8, 8, 1)), seed=c.seed)
  state = state.replace(parts=initial_parts(c, state.params))
  step = step_lib.make_train_step(c, model, tx, lr_fn, SPE)
  return model, tx, lr_fn, state, step


def _batches(n, seed=0):
  rng = np.random.default_rng(seed)
  return [{"image": rng.uniform(size=(B, 8, 8, 1)).astype(np.float32),
           "label": rng.integers(0, 10, size=B).astype(np.int32)} for _ in range(n)]


@pytest.mark.parametrize("method", ["dart", "fat", "gairat", "cat", "pgd_at"])
def test_one_compilation_across_schedule_changes(method):
  c = _config(method=method, fat_tau_boundaries=(1, 2), fat_tau_values=(0, 1, 3),
              cat_steps_boundaries=(1,), cat_steps_values=(2, 4), gairat_begin_epoch=1)
  _, _, _, state, step = _setup(c)
  jitted = jax.jit(step)
  seen = {}
  for batch in _batches(4 * SPE):  # four epochs: lr decay, c_t, tau, K and GAIRAT's start change
    state, m = jitted(state, batch)
    for k in ("fosc_c", "fat_tau", "lr"):
      if k in m:
        seen.setdefault(k, set()).add(float(m[k]))
  assert jitted._cache_size() == 1
  if method == "dart":
    assert len(seen["fosc_c"]) == 4  # c_t decreased every epoch
  if method == "fat":
    assert seen["fat_tau"] == {0.0, 1.0, 3.0}
  assert len(seen["lr"]) == 2


def test_dynamic_c_and_tau_schedules_match_formulas():
  for t in range(0, 12):
    want = max(0.5 - t * 0.5 / 8.0, 0.0)
    assert float(schedules.dynamic_c(t, c_max=0.5, t_prime=8.0)) == pytest.approx(want)
  taus = [int(schedules.piecewise_by_epoch(e, boundaries=(50, 90), values=(0, 1, 2),
                                           dtype=jnp.int32)) for e in (0, 49, 50, 89, 90, 119)]
  assert taus == [0, 0, 1, 1, 2, 2]  # FAT.py: epoch <= 50 -> 0, <= 90 -> 1, else 2 (1-based)


def test_awp_update_is_exact_and_ascent_leaves_batchnorm_alone():
  c = _config(method="pgd_at", weight_perturbation="awp", awp_gamma=0.05, momentum=0.0,
              weight_decay=0.0, lr_schedule="constant")
  model, tx, lr_fn, state, step = _setup(c)
  batch = _batches(1)[0]
  # Warm the BatchNorm statistics up so that eval and train modes differ.
  state, _ = jax.jit(step)(state, batch)
  new_state, m = jax.jit(step)(state, batch)

  # Independent reconstruction of the same step.
  key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
  k_attack = jax.random.split(key, 4)[0]
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  logits_fn = lambda x: model.apply(variables, x, train=False)
  x_adv = attacks.pgd(logits_fn, batch["image"], batch["label"], eps=c.eps, step_size=c.step_size,
                      num_steps=c.num_steps, start="uniform", key=k_attack).x_adv

  def loss_at(p):
    logits, upd = model.apply({"params": p, "batch_stats": state.batch_stats}, x_adv, train=True,
                              mutable=["batch_stats"])
    return objectives.ce_adv(None, logits, batch["label"]), upd["batch_stats"]

  g_ascent = jax.grad(lambda p: loss_at(p)[0])(state.params)
  v = wp.perturbation("awp", state.params, g_ascent, size=c.awp_gamma)
  for (path, vl), wl in zip(jax.tree_util.tree_leaves_with_path(v),
                            jax.tree.leaves(state.params)):
    if wl.ndim >= 2:
      np.testing.assert_allclose(jnp.linalg.norm(vl), c.awp_gamma * jnp.linalg.norm(wl), rtol=1e-5)
    else:
      assert float(jnp.abs(vl).max()) == 0.0, path
  w_plus_v = jax.tree.map(jnp.add, state.params, v)
  grads, stats_after = jax.grad(loss_at, has_aux=True)(w_plus_v)
  lr = float(lr_fn(state.step))
  want = jax.tree.map(lambda w, g: w - lr * g, state.params, grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               new_state.params, want)
  # BatchNorm statistics: exactly one train-mode update (the forward at w + v); the ascent pass at w
  # added none.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               new_state.batch_stats, stats_after)
  assert float(m["wp_norm"]) > 0


def test_awp_warmup_means_no_perturbation():
  c = _config(method="pgd_at", weight_perturbation="awp", awp_warmup=1)
  _, _, _, state, step = _setup(c)
  jitted = jax.jit(step)
  norms = []
  for batch in _batches(2 * SPE):
    state, m = jitted(state, batch)
    norms.append(float(m["wp_norm"]))
  assert norms[:SPE] == [0.0] * SPE and min(norms[SPE:]) > 0


def test_gairat_weights_enter_the_loss_from_the_start_epoch():
  c = _config(method="gairat", gairat_begin_epoch=1, gairat_lambda=-1.0)
  c_at = _config(method="pgd_at")
  model, _, _, s1, step_g = _setup(c)
  _, _, _, s2, step_a = _setup(c_at)
  batch = _batches(1)[0]
  # Labels the initial model gets right at x, so that kappa varies across examples.
  logits = model.apply({"params": s1.params, "batch_stats": s1.batch_stats}, batch["image"])
  batch["label"] = np.asarray(jnp.argmax(logits, -1), np.int32)
  (_, mg), (_, ma) = jax.jit(step_g)(s1, batch), jax.jit(step_a)(s2, batch)
  assert float(mg["loss"]) == pytest.approx(float(ma["loss"]), rel=1e-6)  # epoch 0: uniform
  late = s1.replace(step=jnp.asarray(SPE, jnp.int32))
  late_at = s2.replace(step=jnp.asarray(SPE, jnp.int32))
  (_, mg), (_, ma) = jax.jit(step_g)(late, batch), jax.jit(step_a)(late_at, batch)
  assert 0 < float(mg["kappa"]) < c.num_steps
  assert float(mg["loss"]) != pytest.approx(float(ma["loss"]), rel=1e-4)


@pytest.mark.parametrize("method", ["pgd_at", "trades", "mart", "alp", "clp", "mma", "fat_trades",
                                    "fat_mart", "gair_fat", "standard"])
def test_every_method_steps_and_is_deterministic(method):
  c = _config(method=method)
  _, _, _, state, step = _setup(c)
  batches = _batches(3)
  outs = []
  for _ in range(2):
    s = state
    jitted = jax.jit(step)
    for batch in batches:
      s, m = jitted(s, batch)
    outs.append((s, m))
  (s1, m1), (s2, _) = outs
  jax.tree.map(np.testing.assert_array_equal, s1.params, s2.params)  # bitwise
  assert np.isfinite(float(m1["loss"]))
  assert not jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), s1.params,
                                       state.params))


@pytest.mark.parametrize("method", ["pgd_at", "dart", "gairat", "trades"])
def test_train_diagnostics_off_trains_identically(method):
  """Without diagnostics the attack skips evaluating x_adv: the same updates, fewer metrics."""
  batches = _batches(3)
  runs = {}
  for diagnostics in (True, False):
    c = _config(method=method, train_diagnostics=diagnostics, gairat_begin_epoch=0)
    _, _, _, state, step = _setup(c)
    jitted = jax.jit(step)
    for batch in batches:
      state, m = jitted(state, batch)
    runs[diagnostics] = (state, m)
  (s_on, m_on), (s_off, m_off) = runs[True], runs[False]
  jax.tree.map(np.testing.assert_array_equal, s_on.params, s_off.params)  # bitwise
  jax.tree.map(np.testing.assert_array_equal, s_on.batch_stats, s_off.batch_stats)
  for k in ("loss", "adv_acc", "attack_steps", "kappa"):
    np.testing.assert_array_equal(m_on[k], m_off[k])
  assert {"fosc", "clean_acc"} <= set(m_on) and not {"fosc", "clean_acc"} & set(m_off)


def test_attack_bn_train_mode_differs_from_eval_mode():
  batch = _batches(1)[0]
  res = {}
  for mode in ("eval", "train"):
    c = _config(method="pgd_at", attack_bn_mode=mode)
    _, _, _, state, step = _setup(c)
    jitted = jax.jit(step)
    state, _ = jitted(state, batch)
    state, m = jitted(state, batch)
    res[mode] = float(m["loss"])
  assert res["eval"] != res["train"]


@pytest.mark.parametrize("overrides,match", [
    (dict(method="madry"), r"method must be one of \["),
    (dict(method="standard", weight_perturbation="awp"), "needs an adversarial method"),
    (dict(awp_gamma=-0.1), r"config.awp_gamma must be >= 0"),
    (dict(beta=-1.0), r"config.beta must be >= 0"),
    (dict(eps=0.0), r"config.eps must be in \(0, 1\]"),
    (dict(eps=1.5), r"config.eps must be in \(0, 1\]"),
    (dict(num_epochs=0), r"config.num_epochs must be an integer >= 1"),
    (dict(batch_size=0), r"config.batch_size must be an integer >= 1"),
    (dict(weight_perturbation="swa"), "config.weight_perturbation must be one of"),
])
def test_bad_configs_are_named(overrides, match):
  with pytest.raises(ValueError, match=match):
    _config(**overrides)


def test_batch_not_divisible_by_devices():
  c = config_lib.base_config()
  c.batch_size = 10
  with pytest.raises(ValueError, match="divisible by the number of devices"):
    config_lib.validate(c, num_devices=4)


class TinyBNNetNNX(nnx.Module):
  """TinyBNNet written in Flax NNX."""

  def __init__(self, rngs):
    self.dense1 = nnx.Linear(64, 32, rngs=rngs)
    self.bn = nnx.BatchNorm(32, momentum=0.9, rngs=rngs)
    self.dense2 = nnx.Linear(32, 10, rngs=rngs)

  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    return self.dense2(nnx.relu(self.bn(self.dense1(x))))


def _nnx_from_linen(variables):
  """An NNX TinyBNNet holding the linen TinyBNNet's parameters and statistics."""
  net = TinyBNNetNNX(nnx.Rngs(0))
  p, s = variables["params"], variables["batch_stats"]
  for dst, src in ((net.dense1, p["Dense_0"]), (net.dense2, p["Dense_1"])):
    dst.kernel[...], dst.bias[...] = src["kernel"], src["bias"]
  net.bn.scale[...], net.bn.bias[...] = p["BatchNorm_0"]["scale"], p["BatchNorm_0"]["bias"]
  net.bn.mean[...], net.bn.var[...] = s["BatchNorm_0"]["mean"], s["BatchNorm_0"]["var"]
  return net


@pytest.mark.parametrize("method,wpk", [("pgd_at", "none"), ("trades", "awp")])
def test_nnx_model_trains_through_the_step_like_its_linen_twin(method, wpk):
  """The step sees models only through ModelFn: an NNX module with the same weights follows the
  linen module's trajectory (parameters and BatchNorm statistics) through attack, AWP and update."""
  c = _config(method=method, weight_perturbation=wpk)
  _, tx, lr_fn, state, step = _setup(c)
  net = _nnx_from_linen({"params": state.params, "batch_stats": state.batch_stats})
  model_fn = functional.from_nnx(net)
  nnx_state = state_lib.create(model=model_fn, tx=tx, sample_input=jnp.zeros((1, 8, 8, 1)),
                               seed=c.seed)
  nnx_state = nnx_state.replace(parts=initial_parts(c, nnx_state.params))
  nnx_step = jax.jit(step_lib.make_train_step(c, model_fn, tx, lr_fn, SPE))
  linen_step = jax.jit(step)
  for batch in _batches(3):
    state, m_linen = linen_step(state, batch)
    nnx_state, m_nnx = nnx_step(nnx_state, batch)
    np.testing.assert_allclose(m_nnx["loss"], m_linen["loss"], rtol=1e-5)
  got = _nnx_from_linen({"params": state.params, "batch_stats": state.batch_stats})
  trained = nnx.merge(nnx.graphdef(net), nnx_state.params, nnx_state.batch_stats)
  chex.assert_trees_all_close(nnx.to_pure_dict(nnx.state(trained)),
                              nnx.to_pure_dict(nnx.state(got)), rtol=1e-5, atol=1e-6)
  assert not np.allclose(trained.dense1.kernel[...], net.dense1.kernel[...])  # it trained
