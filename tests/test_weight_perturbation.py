"""The weight adversary (AWP, RWP, SAM, SAMPa): sizes, directions, masks, SGD step, SAMPa -> SAM."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robust_jax import weight_perturbation as wp


def _params(seed=0):
  """A flax-like params dict: conv and dense kernels, biases, BatchNorm scale/bias."""
  k = iter(jax.random.split(jax.random.key(seed), 8))
  return {
      "Conv_0": {"kernel": jax.random.normal(next(k), (3, 3, 2, 4)),
                 "bias": jax.random.normal(next(k), (4,))},
      "BatchNorm_0": {"scale": 1.0 + 0.1 * jax.random.normal(next(k), (4,)),
                      "bias": jax.random.normal(next(k), (4,))},
      "Dense_0": {"kernel": jax.random.normal(next(k), (6, 3)),
                  "bias": jax.random.normal(next(k), (3,))},
  }


def _grads(seed=1):
  p = _params(seed)
  return jax.tree.map(lambda x: 0.37 * x, p)


def _np_norm(x):
  return float(np.sqrt(np.sum(np.asarray(x, np.float64) ** 2)))


def _np_global_norm(tree):
  return float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(tree))))


def _flat(tree):
  return jax.tree_util.tree_flatten_with_path(tree)[0]


@pytest.mark.parametrize("kind", ["awp", "rwp"])
@pytest.mark.parametrize("gamma", [0.005, 0.01, 0.5])
def test_layerwise_size_and_mask(kind, gamma):
  params, g = _params(), _grads()
  v = wp.perturbation(kind, params, g if kind == "awp" else None, size=gamma,
                      key=jax.random.key(3))
  for (path, w), (_, vl) in zip(_flat(params), _flat(v)):
    assert vl.shape == w.shape and vl.dtype == w.dtype
    if w.ndim >= 2:
      np.testing.assert_allclose(_np_norm(vl), gamma * _np_norm(w), rtol=1e-6)
    else:  # biases and BatchNorm scale/bias: exactly zero
      np.testing.assert_array_equal(np.asarray(vl), 0.0)


def test_awp_direction_parallel_to_gradient_per_layer():
  params, g = _params(), _grads()
  v = wp.perturbation("awp", params, g, size=0.01)
  for (_, w), (_, gl), (_, vl) in zip(_flat(params), _flat(g), _flat(v)):
    if w.ndim < 2:
      continue
    a, b = np.asarray(vl, np.float64).ravel(), np.asarray(gl, np.float64).ravel()
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    np.testing.assert_allclose(cos, 1.0, rtol=1e-6)
    # The exact formula of diff_in_weights: gamma * ||w|| * g / (||g|| + 1e-20).
    np.testing.assert_allclose(np.asarray(vl), 0.01 * _np_norm(w) * np.asarray(gl) / _np_norm(gl),
                               rtol=1e-5, atol=1e-7)


def test_awp_zero_gradient_gives_zero_perturbation():
  params = _params()
  v = wp.perturbation("awp", params, jax.tree.map(jnp.zeros_like, params), size=0.01)
  assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(v))


def test_rwp_uses_the_key():
  params = _params()
  v1 = wp.perturbation("rwp", params, size=0.01, key=jax.random.key(0))
  v2 = wp.perturbation("rwp", params, size=0.01, key=jax.random.key(0))
  v3 = wp.perturbation("rwp", params, size=0.01, key=jax.random.key(1))
  k = ("Dense_0", "kernel")
  np.testing.assert_array_equal(np.asarray(v1[k[0]][k[1]]), np.asarray(v2[k[0]][k[1]]))
  assert not np.allclose(np.asarray(v1[k[0]][k[1]]), np.asarray(v3[k[0]][k[1]]))


@pytest.mark.parametrize("rho", [0.05, 0.1, 2.0])
def test_sam_global_norm_and_direction(rho):
  params, g = _params(), _grads()
  v = wp.perturbation("sam", params, g, size=rho)
  np.testing.assert_allclose(_np_global_norm(v), rho, rtol=1e-6)
  gn = _np_global_norm(g)
  for (_, gl), (_, vl) in zip(_flat(g), _flat(v)):  # every leaf, biases and BN included
    np.testing.assert_allclose(np.asarray(vl), rho * np.asarray(gl) / gn, rtol=1e-5, atol=1e-7)
  # Zero gradient: no NaN (the official dual_vector would divide by zero).
  v0 = wp.perturbation("sam", params, jax.tree.map(jnp.zeros_like, params), size=rho)
  assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(v0))


def test_norm_helpers_and_add():
  params = _params()
  norms = wp.layer_norms(params)
  for (_, w), (_, n) in zip(_flat(params), _flat(norms)):
    np.testing.assert_allclose(float(n), _np_norm(w), rtol=1e-6)
  np.testing.assert_allclose(float(wp.global_norm(params)), _np_global_norm(params), rtol=1e-6)
  v = _grads()
  s = wp.add(params, v)
  for (_, a), (_, b), (_, c) in zip(_flat(params), _flat(v), _flat(s)):
    np.testing.assert_array_equal(np.asarray(c), np.asarray(a) + np.asarray(b))


def test_is_perturbed_leaf_custom_filter():
  params, g = _params(), _grads()
  only_dense = lambda path, leaf: leaf.ndim >= 2 and "Dense_0" in jax.tree_util.keystr(path)
  v = wp.perturbation("awp", params, g, size=0.01, leaf_filter=only_dense)
  assert np.all(np.asarray(v["Conv_0"]["kernel"]) == 0)
  assert np.any(np.asarray(v["Dense_0"]["kernel"]) != 0)
  assert wp.is_perturbed_leaf(None, jnp.ones((2, 2)))
  assert not wp.is_perturbed_leaf(None, jnp.ones(3))


def test_validation():
  params, g = _params(), _grads()
  with pytest.raises(ValueError, match=r"kind must be one of \('awp', 'rwp', 'sam'\)"):
    wp.perturbation("asam", params, g, size=0.1)
  with pytest.raises(ValueError, match=r"gamma.*must be in \[0"):
    wp.perturbation("awp", params, g, size=-0.01)
  with pytest.raises(ValueError, match=r"gamma.*must be in \[0"):
    wp.perturbation("rwp", params, size=-0.01, key=jax.random.key(0))
  with pytest.raises(ValueError, match=r"rho.*must be in \[0"):
    wp.perturbation("sam", params, g, size=-0.05)
  with pytest.raises(ValueError, match="needs a PRNG key"):
    wp.perturbation("rwp", params, size=0.01)
  with pytest.raises(ValueError, match="needs ascent_grad"):
    wp.perturbation("awp", params, size=0.01)
  with pytest.raises(ValueError, match=r"lam must be in \[0"):
    wp.sampa_combine(g, g, lam=1.5)


def test_jit_with_traced_size():
  params, g = _params(), _grads()
  f = jax.jit(lambda p, gg, s: wp.perturbation("awp", p, gg, size=s))
  v = f(params, g, 0.02)
  np.testing.assert_allclose(_np_norm(v["Dense_0"]["kernel"]),
                             0.02 * _np_norm(params["Dense_0"]["kernel"]), rtol=1e-6)


# ---- The training-step contract: gradient at w + v, applied to w. ----

def _mlp_params(seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return {"Dense_0": {"kernel": jax.random.normal(k1, (4, 8)) * 0.5, "bias": jnp.zeros((8,))},
          "Dense_1": {"kernel": jax.random.normal(k2, (8, 3)) * 0.5, "bias": jnp.zeros((3,))}}, k3


def _mlp_loss(p, x, y):
  h = jnp.tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  z = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y))


@pytest.mark.parametrize("kind", ["awp", "sam"])
def test_sgd_step_applies_gradient_at_perturbed_point_to_w(kind):
  params, k = _mlp_params()
  x = jax.random.normal(k, (16, 4))
  y = jnp.arange(16) % 3
  lr, size = 0.1, 0.05
  tx = optax.sgd(lr)
  opt_state = tx.init(params)
  loss = lambda p: _mlp_loss(p, x, y)

  # The step: perturb, take the gradient at w + v, apply it to w.
  v = wp.perturbation(kind, params, jax.grad(loss)(params), size=size)
  updates, _ = tx.update(jax.grad(loss)(wp.add(params, v)), opt_state, params)
  new_params = optax.apply_updates(params, updates)

  # Independent reference: w - lr * grad L(w + v), with v from the formula.
  g = jax.grad(loss)(params)
  if kind == "awp":
    v_ref = jax.tree.map(lambda w, gl: size * jnp.linalg.norm(w) * gl / jnp.linalg.norm(gl)
                         if w.ndim >= 2 else jnp.zeros_like(w), params, g)
  else:
    gn = jnp.sqrt(sum(jnp.sum(gl ** 2) for gl in jax.tree.leaves(g)))
    v_ref = jax.tree.map(lambda gl: size * gl / gn, g)
  g_at = jax.grad(loss)(jax.tree.map(jnp.add, params, v_ref))
  want = jax.tree.map(lambda w, gg: w - lr * gg, params, g_at)
  for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  # w is restored: the perturbation itself never enters the new parameters.
  assert not np.allclose(np.asarray(new_params["Dense_0"]["kernel"]),
                         np.asarray(want["Dense_0"]["kernel"] + v_ref["Dense_0"]["kernel"]))


# ---- SAMPa. ----

def _sampa_step(params, state, loss, *, rho, lr, lam):
  v = wp.sampa_perturbation(params, state, rho=rho)
  y_next = wp.sampa_lookahead(params, state, lr=lr)
  g_tilde = jax.grad(loss)(wp.add(params, v))
  g_y = jax.grad(loss)(y_next)
  return wp.sampa_combine(g_tilde, g_y, lam=lam)


def test_sampa_with_lam_zero_and_y_equal_x_reduces_to_sam():
  params, k = _mlp_params(1)
  x = jax.random.normal(k, (16, 4))
  y = jnp.arange(16) % 3
  loss = lambda p: _mlp_loss(p, x, y)
  rho = 0.05
  # Auxiliary sequence equal to the iterate: grad f(y_t) = grad f(x_t).
  state = wp.sampa_init(params, jax.grad(loss)(params))
  direction, _ = jax.jit(lambda p, s: _sampa_step(p, s, loss, rho=rho, lr=0.1, lam=0.0))(
      params, state)
  g = jax.grad(loss)(params)
  sam_dir = jax.grad(loss)(wp.add(params, wp.perturbation("sam", params, g, size=rho)))
  for a, b in zip(jax.tree.leaves(direction), jax.tree.leaves(sam_dir)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_sampa_update_matches_the_paper():
  params, k = _mlp_params(2)
  x = jax.random.normal(k, (16, 4))
  y = jnp.arange(16) % 3
  loss = lambda p: _mlp_loss(p, x, y)
  rho, lr, lam = 0.1, 0.05, 0.2
  g_prev = jax.tree.map(lambda w: 0.3 * jnp.ones_like(w), params)  # some grad f(y_t)
  state = wp.SampaState(grad_y=g_prev)
  direction, new_state = _sampa_step(params, state, loss, rho=rho, lr=lr, lam=lam)
  n = jnp.sqrt(sum(jnp.sum(a ** 2) for a in jax.tree.leaves(g_prev)))
  x_tilde = jax.tree.map(lambda w, gy: w + rho * gy / n, params, g_prev)
  y_next = jax.tree.map(lambda w, gy: w - lr * gy, params, g_prev)
  g_y = jax.grad(loss)(y_next)
  want = jax.tree.map(lambda a, b: (1 - lam) * a + lam * b, jax.grad(loss)(x_tilde), g_y)
  for a, b in zip(jax.tree.leaves(direction), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  for a, b in zip(jax.tree.leaves(new_state.grad_y), jax.tree.leaves(g_y)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)


def test_sampa_init_zero_state_is_unperturbed_and_official_lookahead():
  params, _ = _mlp_params()
  state = wp.sampa_init(params)
  v = wp.sampa_perturbation(params, state, rho=0.1)
  assert all(np.all(np.asarray(a) == 0) for a in jax.tree.leaves(v))
  # Official look-ahead: x - lr (g + mu buf + wd x).
  g = jax.tree.map(lambda w: 0.1 * jnp.ones_like(w), params)
  buf = jax.tree.map(lambda w: 0.2 * jnp.ones_like(w), params)
  y_next = wp.sampa_lookahead(params, wp.SampaState(g), lr=0.1, momentum=0.9, momentum_buffer=buf,
                              weight_decay=5e-4)
  want = jax.tree.map(lambda w, gg, b: w - 0.1 * (gg + 0.9 * b + 5e-4 * w), params, g, buf)
  for a, b in zip(jax.tree.leaves(y_next), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)


# ---- m-sharpness: the batch as groups of consecutive examples, and back. ----

def test_split_into_groups_and_merge_groups():
  from robust_jax import weight_adversaries as wa  # pylint: disable=import-outside-toplevel
  b, groups = 12, 3
  x = jnp.arange(b * 2, dtype=jnp.float32).reshape(b, 2)
  y = jnp.arange(b, dtype=jnp.int32)
  w = jnp.linspace(0.5, 1.5, b)
  w = w * b / jnp.sum(w)  # the weighting's convention: mean 1 over the batch
  ex = wa.Examples(x=x, x_adv=None, y=y, weights=w, keys=(jax.random.key(0), jax.random.key(1)))
  g = wa.split_into_groups(ex, groups)
  assert g.x.shape == (3, 4, 2) and g.y.shape == (3, 4) and g.x_adv is None
  np.testing.assert_array_equal(g.y, np.arange(b).reshape(3, 4))  # consecutive examples
  for k in g.keys:  # one key per group, all different
    data = np.asarray(jax.random.key_data(k)).reshape(groups, -1)
    assert len({tuple(r) for r in data}) == groups
  # The mean over groups of the groups' weighted means is the batch's weighted mean.
  per_example = (y.astype(jnp.float32) - 4.0) ** 2
  groups_mean = jnp.mean(jnp.mean(g.weights * per_example.reshape(3, 4), axis=1))
  np.testing.assert_allclose(groups_mean, jnp.mean(w * per_example), rtol=1e-6)
  aux = wa.LossAux(batch_stats={"mean": jnp.arange(6.0).reshape(3, 2)}, logits=g.x,
                   metrics={"lin_err": jnp.array([1.0, 2.0, 6.0])})
  merged = wa.merge_groups(aux)
  np.testing.assert_array_equal(merged.logits, x)  # back in example order
  np.testing.assert_allclose(merged.batch_stats["mean"], [2.0, 3.0])
  np.testing.assert_allclose(merged.metrics["lin_err"], 3.0)
  with pytest.raises(ValueError, match="does not split into 5 equal groups"):
    wa.split_into_groups(ex, 5)
