"""DDi (Latorre et al., ICLR 2023): the simplex QP, the descent property, the K restarts, the step.

The QP's solution is checked against independent solvers (the K = 2 closed form, scipy's SLSQP, a
brute-force grid over the simplex for K = 3); the direction against Danskin's theorem on a
constructed problem with two maximisers, where the gradient at either maximiser is an ascent
direction of the max-loss and DDi's is a descent direction; and on the MLP against the optimality
condition <d, g_k> >= ||d||^2 with every g_k recomputed independently.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from robust_jax import danskin, losses, models
from robust_jax import weight_adversaries as wa_lib
from robust_jax.data import pipeline
from robust_jax.parts import StepInfo
from robust_jax.training import config as config_lib
from robust_jax.training import methods
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib


def _random_gram(rng, k, dim):
  g = rng.normal(size=(k, dim))
  return g, g @ g.T


def _simplex_projection_reference(v):
  """Bisection on theta for sum(max(v - theta, 0)) = 1 (no sorting), in float64."""
  lo, hi = v.min() - 1.0, v.max()
  for _ in range(200):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if np.maximum(v - mid, 0).sum() > 1 else (lo, mid)
  return np.maximum(v - (lo + hi) / 2, 0)


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_simplex_projection_matches_bisection(k):
  rng = np.random.default_rng(k)
  for _ in range(20):
    v = rng.normal(size=k) * 3
    got = np.asarray(danskin.project_to_simplex(jnp.asarray(v, jnp.float32)))
    np.testing.assert_allclose(got, _simplex_projection_reference(v), atol=1e-6)
    assert got.min() >= 0 and abs(got.sum() - 1) < 1e-6


def test_qp_matches_the_two_point_closed_form():
  rng = np.random.default_rng(0)
  cases = [_random_gram(rng, 2, 5)[1] for _ in range(30)]
  # And cases with the minimum at a vertex (one gradient inside the other's half-space).
  g = np.array([[1.0, 0.0], [3.0, 0.5]])
  cases.append(g @ g.T)
  cases.append((g @ g.T)[::-1, ::-1])
  for gram in cases:
    grads = np.linalg.cholesky(gram + 1e-12 * np.eye(2))  # any factor: only G matters
    # The closed form, in float64: t = <g2 - g1, g2> / ||g1 - g2||^2 clipped to [0, 1].
    den = gram[0, 0] - 2 * gram[0, 1] + gram[1, 1]
    t = np.clip((gram[1, 1] - gram[0, 1]) / den, 0, 1)
    y = np.asarray(danskin.min_norm_weights(jnp.asarray(gram, jnp.float32)))
    np.testing.assert_allclose(y, [t, 1 - t], atol=1e-5)
    np.testing.assert_allclose(np.asarray(danskin.two_point_weights(jnp.asarray(gram))),
                               [t, 1 - t], atol=1e-6)
    assert grads.shape == (2, 2)


@pytest.mark.parametrize("k,dim", [(3, 10), (5, 20), (8, 50)])
def test_qp_matches_scipy(k, dim):
  rng = np.random.default_rng(k)
  for _ in range(5):
    _, gram = _random_gram(rng, k, dim)  # full rank: the minimiser is unique
    res = optimize.minimize(lambda y: y @ gram @ y, np.full(k, 1 / k), jac=lambda y: 2 * gram @ y,
                            method="SLSQP", bounds=[(0, 1)] * k,
                            constraints=[{"type": "eq", "fun": lambda y: y.sum() - 1}],
                            options={"ftol": 1e-14, "maxiter": 1000})
    assert res.success
    y = np.asarray(danskin.min_norm_weights(jnp.asarray(gram, jnp.float32)), np.float64)
    assert y.min() >= 0 and abs(y.sum() - 1) < 1e-5
    np.testing.assert_allclose(y @ gram @ y, res.fun, rtol=1e-4)
    np.testing.assert_allclose(y, res.x, atol=2e-3)


def test_qp_beats_a_fine_grid_of_the_three_point_simplex():
  rng = np.random.default_rng(3)
  n = 400
  a, b = np.meshgrid(np.arange(n + 1) / n, np.arange(n + 1) / n, indexing="ij")
  keep = a + b <= 1
  grid = np.stack([a[keep], b[keep], 1 - a[keep] - b[keep]], 1)
  for dim in (2, 3, 10):  # dim 2: G is singular (three gradients in a plane)
    _, gram = _random_gram(rng, 3, dim)
    values = np.einsum("ni,ij,nj->n", grid, gram, grid)
    y = np.asarray(danskin.min_norm_weights(jnp.asarray(gram, jnp.float32)), np.float64)
    ours = y @ gram @ y
    assert ours <= values.min() + 1e-5 * np.abs(gram).max()
    # The grid's best point is within one grid cell of the optimum: its value is close.
    assert values.min() - ours <= 4 * np.abs(gram).max() / n


def _linear_softplus_loss(params, ex):
  """L_k(w) = mean_i softplus(<a_ki, w>) with a_ki the (flattened) point of copy k."""
  feats = ex.x_adv.reshape(ex.x_adv.shape[0], -1)
  loss = jnp.mean(jax.nn.softplus(feats @ params["w"]))
  return loss, wa_lib.LossAux(batch_stats={}, logits=feats, metrics={})


def test_two_maximisers_ddi_descends_where_the_single_maximiser_gradient_ascends():
  """phi(w) = max(L_1(w), L_2(w)); at w = 0 both points are maximisers (equal losses) with
  gradients a_1 / 2 = (1, 0) / 2 and a_2 / 2 = (-1, 1) / 2 at an obtuse angle."""
  a = np.array([[1.0, 0.0], [-1.0, 1.0]], np.float32)
  b = 4
  x_adv = jnp.asarray(np.repeat(a[:, None, None, None, :], b, axis=1))  # [K=2, B, 1, 1, 2]
  ex = wa_lib.Examples(x=x_adv[0], x_adv=x_adv, y=jnp.zeros(b, jnp.int32), weights=None, keys=())
  params = {"w": jnp.zeros(2)}
  info = StepInfo(step=0, epoch=0, eps=0.1, lr=0.1)
  out, _ = wa_lib.ddi(ddi_maximisers=2).gradient(_linear_softplus_loss, ex, params, (),
                                                 jax.random.key(0), info)
  d = np.asarray(out.grads["w"])
  np.testing.assert_allclose(d, 0.5 * (0.6 * a[0] + 0.4 * a[1]), atol=1e-6)  # closed form y = 3/5

  def phi(w):
    return max(float(_linear_softplus_loss({"w": jnp.asarray(w)}, ex._replace(x_adv=x_adv[k]))[0])
               for k in range(2))

  phi0 = phi(np.zeros(2))
  single = [np.asarray(jax.grad(lambda p, k=k: _linear_softplus_loss(
      p, ex._replace(x_adv=x_adv[k]))[0])(params)["w"]) for k in range(2)]
  for t in (1e-3, 1e-2, 1e-1):
    assert phi(-t * d) < phi0  # DDi: a descent direction of the max-loss
    for g in single:
      assert phi(-t * g) > phi0  # either maximiser's gradient alone: the max-loss goes up


@pytest.fixture(scope="module")
def digits_mlp():
  ds = pipeline.load_dataset("digits")
  batch = next(pipeline.train_batches(ds.train, batch_size=32, seed=0, epoch=0))
  model = models.get_model("mlp", num_classes=ds.num_classes)
  c = config_lib.base_config()
  c.update(dict(method="ddi", eps=0.2, step_size=0.05, num_steps=5, batch_size=32,
                ddi_maximisers=4, train_diagnostics=False))
  config_lib.validate(c)
  tx, lr_fn = step_lib.make_optimizer(c, 10)
  state = state_lib.create(model=model, tx=tx, sample_input=jnp.zeros((1, 8, 8, 1)), seed=0)
  return dict(batch=batch, model=model, config=c, tx=tx, lr_fn=lr_fn, state=state)


def test_restarts_give_k_distinct_points_in_the_ball(digits_mlp):
  c, model, state = digits_mlp["config"], digits_mlp["model"], digits_mlp["state"]
  bundle = methods.build(c)
  x, y = jnp.asarray(digits_mlp["batch"]["image"]), jnp.asarray(digits_mlp["batch"]["label"])
  logits_fn = lambda xx: model.apply({"params": state.params}, xx, train=False)
  adv = jax.jit(lambda xx, yy: bundle.input_adversary.apply(
      logits_fn, xx, yy, jax.random.key(1), StepInfo(step=0, epoch=0, eps=c.eps, lr=0.1)))(x, y)
  assert adv.x_adv.shape == (4,) + x.shape
  xa = np.asarray(adv.x_adv)
  assert np.all(np.abs(xa - np.asarray(x)[None]) <= c.eps + 1e-6)
  assert xa.min() >= 0 and xa.max() <= 1
  for k in range(1, 4):
    assert np.mean(np.any(xa[k] != xa[0], axis=(1, 2, 3))) > 0.9  # independent random starts


def test_ddi_direction_is_the_min_norm_point_of_the_independent_gradients(digits_mlp):
  """On the MLP: d = sum_k y_k g_k with y on the simplex and <d, g_k> >= ||d||^2 for all k, the
  gradients g_k of the batch-mean CE at each restart recomputed one by one."""
  c, model, state = digits_mlp["config"], digits_mlp["model"], digits_mlp["state"]
  bundle = methods.build(c)
  x, y = jnp.asarray(digits_mlp["batch"]["image"]), jnp.asarray(digits_mlp["batch"]["label"])
  logits_fn = lambda xx: model.apply({"params": state.params}, xx, train=False)
  adv = jax.jit(lambda xx, yy: bundle.input_adversary.apply(
      logits_fn, xx, yy, jax.random.key(1), StepInfo(step=0, epoch=0, eps=c.eps, lr=0.1)))(x, y)

  def loss_fn(params, ex):
    logits = model.apply({"params": params}, ex.x_adv, train=True)
    return jnp.mean(losses.cross_entropy(logits, ex.y)), wa_lib.LossAux({}, logits, {})

  ex = wa_lib.Examples(x=x, x_adv=adv.x_adv, y=y, weights=None, keys=())
  out, _ = jax.jit(lambda p, e: bundle.weight_adversary.gradient(
      loss_fn, e, p, (), None, StepInfo(step=0, epoch=0, eps=c.eps, lr=0.1)))(state.params, ex)
  flat = lambda t: np.concatenate([np.ravel(a) for a in jax.tree.leaves(t)]).astype(np.float64)
  grad_at = jax.jit(jax.grad(lambda p, xa: loss_fn(p, ex._replace(x_adv=xa))[0]))
  g = np.stack([flat(grad_at(state.params, adv.x_adv[k])) for k in range(4)])
  d = flat(out.grads)
  # d is in the hull of the g_k: the weights, solved from d = g^T y in least squares, are on it.
  weights = np.linalg.lstsq(g.T, d, rcond=None)[0]
  np.testing.assert_allclose(weights.sum(), 1, atol=1e-4)
  assert weights.min() >= -1e-4
  # Optimality: every g_k has <d, g_k> >= ||d||^2, so -d decreases every maximiser's loss.
  assert np.all(g @ d >= (d @ d) * (1 - 1e-3))
  assert not np.allclose(d, g[0], rtol=1e-2)  # the gradients differ: a non-trivial combination
  loss_at = jax.jit(lambda p, xa: loss_fn(p, ex._replace(x_adv=xa))[0])
  losses_k = [float(loss_at(state.params, adv.x_adv[k])) for k in range(4)]
  np.testing.assert_allclose(float(out.loss), max(losses_k), rtol=1e-6)


def test_ddi_with_one_maximiser_is_pgd_at(digits_mlp):
  """K = 1: the hull is the one gradient, so the DDi step is the PGD-AT step."""
  c, model = digits_mlp["config"], digits_mlp["model"]
  outs = []
  for method, k in (("ddi", 1), ("pgd_at", 10)):
    cc = c.copy_and_resolve_references()
    cc.method, cc.ddi_maximisers = method, k
    step = jax.jit(step_lib.make_train_step(cc, model, digits_mlp["tx"], digits_mlp["lr_fn"], 10))
    state = jax.tree.map(jnp.copy, digits_mlp["state"])
    state = state.replace(parts=methods.build(cc).init(state.params))
    for _ in range(3):
      state, m = step(state, digits_mlp["batch"])
    outs.append((state.params, m["loss"]))
  chex.assert_trees_all_close(outs[0], outs[1], atol=1e-6, rtol=1e-6)


def test_validation_names_the_field():
  c = config_lib.base_config()
  c.method = "ddi"
  c.ddi_maximisers = 0
  with pytest.raises(ValueError, match=r"config\.ddi_maximisers must be an integer >= 1"):
    config_lib.validate(c)
  c.ddi_maximisers, c.ddi_qp_iterations = 2, 0
  with pytest.raises(ValueError, match=r"config\.ddi_qp_iterations must be an integer >= 1"):
    config_lib.validate(c)
  c.ddi_qp_iterations, c.weight_perturbation = 10, "sam"
  with pytest.raises(ValueError, match=r"config\.weight_perturbation must be 'none'"):
    config_lib.validate(c)
  c.method, c.weight_perturbation = "standard", "ddi"
  with pytest.raises(ValueError, match="needs an adversarial method"):
    config_lib.validate(c)
  c.method = "gairat"
  with pytest.raises(ValueError, match="without per-example weights"):
    config_lib.validate(c)
