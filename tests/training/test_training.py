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
  chex.clear_trace_counter()
  jitted = jax.jit(chex.assert_max_traces(step, n=1))  # a second trace raises
  seen = {}
  for batch in _batches(4 * SPE):  # four epochs: lr decay, c_t, tau, K and GAIRAT's start change
    state, m = jitted(state, batch)
    for k in ("fosc_c", "fat_tau", "lr"):
      if k in m:
        seen.setdefault(k, set()).add(float(m[k]))
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
    (dict(eps=0.0), r"config.eps must be in \(0, 1\) for config.norm='linf'"),
    (dict(eps=1.0), r"config.eps must be in \(0, 1\) for config.norm='linf'"),
    (dict(eps=1.5), r"config.eps must be in \(0, 1\) for config.norm='linf'"),
    (dict(eps=0.0, norm="l2"), r"config.eps must be > 0"),
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


# ---- Weight adversaries against transcriptions of the official updates (issue 13). ----
# Each reference below is the official update written out in a few lines of JAX on TinyBNNet, with
# its own loss (optax's cross-entropy, not the library's objectives) and its own optimizer
# arithmetic; the library runs the same steps through make_train_step.

def _ce(logits, y):
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def _train_forward(model, bs, x, y):
  """``p -> (mean CE, batch_stats after one train-mode forward)`` at fixed statistics ``bs``."""
  def f(p):
    logits, upd = model.apply({"params": p, "batch_stats": bs}, x, train=True,
                              mutable=["batch_stats"])
    return _ce(logits, y), upd["batch_stats"]
  return f


def _tmap(f, *trees):
  return jax.tree.map(f, *trees)


def _sqnorm(tree):
  return sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(tree))


def _assert_close(a, b, rtol=1e-5, atol=1e-6):
  chex.assert_trees_all_close(a, b, rtol=rtol, atol=atol)


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_awp_update_with_weight_decay_and_momentum_is_torch_sgd_at_w_plus_v():
  """AT-AWP's step (csdongxian/AWP ``AT_AWP/train_cifar10.py`` lines 338-363 and ``utils_awp.py``):
  the proxy ascends one SGD step of lr 0.01, v = gamma * diff_in_weights, the model moves to w + v,
  ``opt.step()`` (``torch.optim.SGD(momentum=0.9, weight_decay=...)``, line 240) runs there, so
  coupled weight decay is wd * (w + v) and enters the momentum buffer, then v is subtracted.

  Each step is reconstructed from the library's (w_t, BatchNorm statistics) so that PGD's signs see
  the same model; the momentum buffer is the reference's own. Weight decay at w (instead of w + v)
  would move the parameters by lr * wd * v per step, far outside the tolerance (checked). The
  official extra train-mode forward on clean X after the restore (for logging, line 365) is not
  reproduced by the library, nor here.
  """
  wd, mom, gamma = 0.05, 0.9, 0.1
  c = _config(method="pgd_at", weight_perturbation="awp", awp_gamma=gamma, momentum=mom,
              weight_decay=wd, lr_schedule="constant")
  model, _, lr_fn, state, step = _setup(c)
  jitted = jax.jit(step)
  lr = float(lr_fn(0))
  buf = buf_wrong = None
  for t, batch in enumerate(_batches(3)):
    w, bs = state.params, state.batch_stats
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    logits_fn = lambda xx, w=w, bs=bs: model.apply({"params": w, "batch_stats": bs}, xx,
                                                  train=False)
    x_adv = attacks.pgd(logits_fn, batch["image"], batch["label"], eps=c.eps,
                        step_size=c.step_size, num_steps=c.num_steps, start="uniform",
                        key=jax.random.split(key, 4)[0]).x_adv
    loss_at = _train_forward(model, bs, x_adv, batch["label"])
    # calc_awp: the proxy takes one SGD step (lr 0.01) on -loss; diff_in_weights (lines 8-18).
    proxy = _tmap(lambda p, g: p + 0.01 * g, w, jax.grad(lambda p: loss_at(p)[0])(w))
    v = _tmap(lambda a, b: (gamma * jnp.linalg.norm(a) / (jnp.linalg.norm(b - a) + 1e-20)
                            * (b - a)) if a.ndim > 1 else jnp.zeros_like(a), w, proxy)
    w_v = _tmap(jnp.add, w, v)                                   # awp_adversary.perturb
    g, bs_next = jax.grad(loss_at, has_aux=True)(w_v)            # robust_loss.backward()
    d = _tmap(lambda gl, p: gl + wd * p, g, w_v)                 # SGD: d_p += wd * p, p = w + v
    d_wrong = _tmap(lambda gl, p: gl + wd * p, g, w)             # (wrong: decay at w)
    buf = d if t == 0 else _tmap(lambda b, dd: mom * b + dd, buf, d)
    buf_wrong = d_wrong if t == 0 else _tmap(lambda b, dd: mom * b + dd, buf_wrong, d_wrong)
    want = _tmap(lambda p, vv, b: (p - lr * b) - vv, w_v, v, buf)  # opt.step(); restore
    wrong = _tmap(lambda p, b: p - lr * b, w, buf_wrong)
    state, m = jitted(state, batch)
    _assert_close(state.params, want)
    _assert_close(state.batch_stats, bs_next, atol=1e-6)
    assert _max_diff(state.params, wrong) > 20 * 1e-6, t  # the test tells w + v from w
    assert float(m["wp_norm"]) > 0


def _official_sam_step(model, params, bs, buf, x, y, *, rho, l2, lr, beta):
  """google-research/sam ``flax_training.py`` ``train_step`` (lines 496-568) on one device, with
  ``--gradient_clipping=0``: the L2 term in the loss (513-522), the dual vector of the gradient at
  w (537-546), the gradient at w + rho * dual (547-550), the first pass's state kept (551) and
  ``optim.Momentum(beta, nesterov=True)`` (218-220; flax's rule: m = beta m + g,
  w -= lr (g + beta m))."""
  def forward_and_loss(p):
    loss, new_bs = _train_forward(model, bs, x, y)(p)
    return loss + l2 * 0.5 * _sqnorm(p), new_bs
  (_, inner_state), grad = jax.value_and_grad(forward_and_loss, has_aux=True)(params)
  grad = _tmap(lambda g: g / jnp.sqrt(_sqnorm(grad)), grad)
  noised = _tmap(lambda a, b: a + rho * b, params, grad)
  (_, second_state), grad = jax.value_and_grad(forward_and_loss, has_aux=True)(noised)
  buf = _tmap(lambda mm, g: beta * mm + g, buf, grad)
  new_params = _tmap(lambda p, g, mm: p - lr * (g + beta * mm), params, grad, buf)
  return new_params, inner_state, buf, second_state


def _sam_config(**overrides):
  kw = dict(method="standard", weight_perturbation="sam", sam_rho=0.5, weight_decay=0.05,
            momentum=0.9, nesterov=True, lr_schedule="constant")
  kw.update(overrides)
  return _config(**kw)


def test_sam_official_matches_a_transcription_of_the_official_train_step():
  """``sam_weight_decay="official"`` (the default): the ascent direction includes weight_decay * w,
  the decay of the update is taken at w + v, and the BatchNorm statistics are the ascent pass's."""
  c = _sam_config()
  assert c.sam_weight_decay == "official" and c.sam_m == 0
  model, _, lr_fn, state, step = _setup(c)
  jitted = jax.jit(step)
  w, bs = state.params, state.batch_stats
  buf = _tmap(jnp.zeros_like, w)
  for batch in _batches(3):
    x, y = batch["image"], batch["label"]
    w, bs, buf, second = _official_sam_step(model, w, bs, buf, x, y, rho=c.sam_rho,
                                            l2=c.weight_decay, lr=float(lr_fn(0)), beta=c.momentum)
    state, m = jitted(state, batch)
    _assert_close(state.params, w)
    _assert_close(state.batch_stats, bs)
    # The statistics are the first pass's, not the second's (which the library used to keep).
    assert _max_diff(state.batch_stats, second) > 1e-4
    np.testing.assert_allclose(float(m["wp_norm"]), c.sam_rho, rtol=1e-5)


def test_sam_paper_weight_decay_is_outside_the_maximisation():
  """``sam_weight_decay="paper"`` (Foret et al. eq. 1): v from grad L(w) alone, the update
  grad L(w + v) + wd * w; it differs from the official variant by more than the tolerance."""
  c = _sam_config(sam_weight_decay="paper", nesterov=False)
  model, _, lr_fn, state, step = _setup(c)
  jitted = jax.jit(step)
  official = jax.jit(_setup(_sam_config(nesterov=False))[4])
  s_off = state
  lr, mom, wd, rho = float(lr_fn(0)), c.momentum, c.weight_decay, c.sam_rho
  w, bs, buf = state.params, state.batch_stats, None
  for t, batch in enumerate(_batches(3)):
    f = _train_forward(model, bs, batch["image"], batch["label"])
    g, bs = jax.grad(f, has_aux=True)(w)
    v = _tmap(lambda gl: rho * gl / jnp.sqrt(_sqnorm(g)), g)
    g_at, _ = jax.grad(f, has_aux=True)(_tmap(jnp.add, w, v))
    d = _tmap(lambda gl, p: gl + wd * p, g_at, w)
    buf = d if t == 0 else _tmap(lambda b, dd: mom * b + dd, buf, d)
    w = _tmap(lambda p, b: p - lr * b, w, buf)
    state, _ = jitted(state, batch)
    s_off, _ = official(s_off, batch)
    _assert_close(state.params, w)
    _assert_close(state.batch_stats, bs)
  assert _max_diff(state.params, s_off.params) > 1e-4


def test_sam_m_equal_to_the_batch_is_one_perturbation_bitwise():
  batches = _batches(3)
  runs = []
  for m in (0, B):
    _, _, _, state, step = _setup(_sam_config(sam_m=m))
    jitted = jax.jit(step)
    for batch in batches:
      state, metrics = jitted(state, batch)
    runs.append((state, metrics))
  (s0, m0), (sb, mb) = runs
  jax.tree.map(np.testing.assert_array_equal, (s0.params, s0.batch_stats, s0.opt_state, m0),
               (sb.params, sb.batch_stats, sb.opt_state, mb))


@pytest.mark.parametrize("weight_decay_kind", ["official", "paper"])
def test_sam_m_sharpness_matches_the_official_per_device_perturbations(weight_decay_kind):
  """m-sharpness as the official code with ``--sync_perturbations=False`` on B/m devices: each
  device (group of m consecutive examples) runs the official step on its shard with its own state
  (its BatchNorm normalises over the shard), its own dual vector and its own w + v_g; the gradients
  are ``pmean``-ed (line 564); the devices' states are averaged when evaluated (line 615). The
  ``"paper"`` variant keeps the L2 term out of both gradients and adds wd * w to their mean.

  Two devices of 8 examples (BatchNorm over 4 examples amplifies float32 rounding beyond 1e-6 in
  three steps, in the reference as much as in the library: both are within ~1e-6 of a float64
  transcription)."""
  m, groups = B // 2, 2
  c = _sam_config(sam_m=m, sam_weight_decay=weight_decay_kind)
  official = weight_decay_kind == "official"
  model, _, lr_fn, state, step = _setup(c)
  jitted = jax.jit(step)
  lr, beta, wd, rho = float(lr_fn(0)), c.momentum, c.weight_decay, c.sam_rho
  w, buf = state.params, _tmap(jnp.zeros_like, state.params)
  device_bs = [state.batch_stats] * groups
  for batch in _batches(3):
    grads = []
    for g_i in range(groups):
      sl = slice(g_i * m, (g_i + 1) * m)
      f = _train_forward(model, device_bs[g_i], batch["image"][sl], batch["label"][sl])
      l2 = (lambda p: wd * 0.5 * _sqnorm(p)) if official else (lambda p: 0.0)
      full = lambda p, f=f, l2=l2: (f(p)[0] + l2(p), f(p)[1])
      g, device_bs[g_i] = jax.grad(full, has_aux=True)(w)
      v = _tmap(lambda gl, g=g: rho * gl / jnp.sqrt(_sqnorm(g)), g)
      g_at, _ = jax.grad(full, has_aux=True)(_tmap(jnp.add, w, v))
      if not official:
        g_at = _tmap(lambda gl, p: gl + wd * p, g_at, w)
      grads.append(g_at)
    grad = _tmap(lambda *gs: sum(gs) / groups, *grads)           # jax.lax.pmean(grad, 'batch')
    buf = _tmap(lambda mm, g: beta * mm + g, buf, grad)
    w = _tmap(lambda p, g, mm: p - lr * (g + beta * mm), w, grad, buf)
    state, metrics = jitted(state, batch)
    _assert_close(state.params, w)
    _assert_close(state.batch_stats, _tmap(lambda *s: sum(s) / groups, *device_bs))
    np.testing.assert_allclose(float(metrics["wp_norm"]), rho, rtol=1e-5)
  # Two perturbations are not one.
  _, _, _, s1, step1 = _setup(_sam_config(sam_weight_decay=weight_decay_kind))
  for batch in _batches(3):
    s1, _ = jax.jit(step1)(s1, batch)
  assert _max_diff(state.params, s1.params) > 1e-3


def test_sampa_weight_decay_is_taken_at_x_t():
  """SAMPa's optimizer step as LIONS-EPFL/SAMPa ``train.py``: x~_t = x_t + rho g_y / ||g_y||
  (lines 52-58), y_{t+1} = x_t - lr g_y (the paper's look-ahead; the official one, lines 67-81, also
  adds wd x_t and the momentum), g = (1 - lam) grad f(x~_t) + lam grad f(y_{t+1}) (63-64, 86-89),
  the weights moved back to x_t (93-94) and torch SGD with coupled decay at x_t (30, 99). The
  library uses the current batch for both gradients (the official rank 0 uses the previous one)
  and keeps the BatchNorm statistics of the pass at x~_t. Decay at x~_t would not match."""
  wd, mom, rho, lam = 0.05, 0.9, 0.5, 0.2
  c = _config(method="standard", weight_perturbation="sampa", sam_rho=rho, sampa_lambda=lam,
              weight_decay=wd, momentum=mom, lr_schedule="constant")
  model, _, lr_fn, state, step = _setup(c)
  jitted = jax.jit(step)
  lr = float(lr_fn(0))
  x_t, bs = state.params, state.batch_stats
  g_y = _tmap(jnp.zeros_like, x_t)
  buf = buf_wrong = None
  wrong = x_t
  for t, batch in enumerate(_batches(4)):
    f = _train_forward(model, bs, batch["image"], batch["label"])
    scale = rho / (jnp.sqrt(_sqnorm(g_y)) + 1e-12)
    x_tilde = _tmap(lambda p, g: p + scale * g, x_t, g_y)
    g_tilde, bs_tilde = jax.grad(f, has_aux=True)(x_tilde)
    y_next = _tmap(lambda p, g: p - lr * g, x_t, g_y)
    g_y = jax.grad(lambda p: f(p)[0])(y_next)
    agg = _tmap(lambda a, b: (1 - lam) * a + lam * b, g_tilde, g_y)
    d = _tmap(lambda g, p: g + wd * p, agg, x_t)                 # optimizer.step() at x_t
    d_wrong = _tmap(lambda g, p: g + wd * p, agg, x_tilde)       # (wrong: decay at x~_t)
    buf = d if t == 0 else _tmap(lambda b, dd: mom * b + dd, buf, d)
    buf_wrong = d_wrong if t == 0 else _tmap(lambda b, dd: mom * b + dd, buf_wrong, d_wrong)
    wrong = _tmap(lambda p, b: p - lr * b, x_t, buf_wrong)
    x_t, bs = _tmap(lambda p, b: p - lr * b, x_t, buf), bs_tilde
    state, _ = jitted(state, batch)
    _assert_close(state.params, x_t)
    _assert_close(state.batch_stats, bs)
    if t:  # from step 1 on, x~_t != x_t
      assert _max_diff(state.params, wrong) > 20 * 1e-6, t


@pytest.mark.parametrize("overrides,match", [
    (dict(sam_m=5), r"config.sam_m must divide config.batch_size=16"),
    (dict(sam_m=-1), r"config.sam_m must be an integer >= 0"),
    (dict(sam_m=32), r"config.sam_m must divide config.batch_size=16"),
    (dict(sam_weight_decay="decoupled"), r"config.sam_weight_decay must be one of"),
])
def test_bad_sam_fields_are_named(overrides, match):
  with pytest.raises(ValueError, match=match):
    _config(weight_perturbation="sam", **overrides)


def test_radial_start_trains_l2_and_is_refused_for_linf():
  """``attack_start="radial"`` (robust_overfitting's l2 start) reaches the training attack for l2,
  its iterates stay in the l2 ball, and linf is refused at validation, naming the fields."""
  c = _config(method="pgd_at", norm="l2", eps=0.5, step_size=0.1, attack_start="radial")
  _, _, _, state, step = _setup(c)
  bundle = step_lib.methods.build(c)
  batch = _batches(1)[0]
  info = step_lib.StepInfo(step=state.step, epoch=jnp.asarray(0), eps=jnp.asarray(c.eps),
                           lr=jnp.asarray(0.0))
  logits_fn = lambda x: TinyBNNet().apply({"params": state.params, "batch_stats": state.batch_stats},
                                          x, train=False)
  out = bundle.input_adversary.apply(logits_fn, batch["image"], batch["label"], jax.random.key(3),
                                     info)
  d = np.linalg.norm((np.asarray(out.x_adv) - batch["image"]).reshape(B, -1), axis=1)
  assert d.max() <= c.eps * (1 + 1e-5) and d.min() > 0
  _, m = jax.jit(step)(state, batch)
  assert np.isfinite(float(m["loss"]))
  with pytest.raises(ValueError, match=r"config.attack_start 'radial'.*needs config.norm='l2'"):
    _config(method="pgd_at", norm="linf", attack_start="radial")
