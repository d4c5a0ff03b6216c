"""Properties of FGSM, PGD and the masked ascent loop (the core contract)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks
from robust_jax import fosc as fosc_lib
from robust_jax.attacks import fgsm_pgd, losses

B, C = 16, 10


def _model(seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  w1 = jax.random.normal(k1, (64, 32)) / 4
  w2 = jax.random.normal(k2, (32, C))

  def logits_fn(x):
    return jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2

  return logits_fn


LOGITS_FN = _model()


@pytest.fixture(scope="module")
def data():
  x = jax.random.uniform(jax.random.key(1), (B, 8, 8, 1))
  x = x.at[:, :2].set(0.0).at[:, -2:].set(1.0)  # pixels on the border of the box
  y = jnp.arange(B, dtype=jnp.int32) % C
  return x, y


def _dist(a, b, norm):
  d = (a - b).reshape(a.shape[0], -1)
  return jnp.max(jnp.abs(d), 1) if norm == "linf" else jnp.linalg.norm(d, axis=1)


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.03), ("l2", 0.8, 0.3)])
@pytest.mark.parametrize("start", ["none", "uniform", "normal"])
@pytest.mark.parametrize("loss", ["ce", "cw", "kl"])
def test_every_iterate_in_ball_and_box(data, norm, eps, step, start, loss):
  x, y = data
  key = jax.random.key(3)
  # With the same key the start is the same, so PGD-k's output is the k-th iterate of PGD-K.
  for k in range(0, 7):
    r = attacks.pgd(LOGITS_FN, x, y, eps=eps, step_size=step, num_steps=k, norm=norm, loss=loss,
                    start=start, key=key)
    assert float(_dist(r.x_adv, x, norm).max()) <= eps * (1 + 1e-5) + 1e-6
    assert float(r.x_adv.min()) >= 0.0 and float(r.x_adv.max()) <= 1.0
    assert r.x_adv.shape == x.shape and r.x_adv.dtype == x.dtype


def test_ascent_raises_the_loss(data):
  x, y = data
  clean = losses.cross_entropy(LOGITS_FN(x), y)
  r = attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=10)
  assert float(jnp.mean(r.loss)) > float(jnp.mean(clean)) + 0.1
  np.testing.assert_allclose(r.loss, losses.cross_entropy(LOGITS_FN(r.x_adv), y), rtol=1e-5)
  kl = attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=5, loss="kl",
                   start="normal", key=jax.random.key(0))
  assert float(kl.loss.min()) > 0.0
  # The kl attack's loss is TRADES' KL(p(x) || p(x')).
  np.testing.assert_allclose(kl.loss, losses.kl_divergence(LOGITS_FN(x), LOGITS_FN(kl.x_adv)),
                             rtol=1e-4, atol=1e-7)


def test_targeted_pulls_towards_the_target(data):
  x, y = data
  t = (y + 3) % C
  p0 = jax.nn.softmax(LOGITS_FN(x))[jnp.arange(B), t]
  r = attacks.pgd(LOGITS_FN, x, y, eps=0.2, step_size=0.05, num_steps=10, target=t)
  p1 = jax.nn.softmax(LOGITS_FN(r.x_adv))[jnp.arange(B), t]
  assert bool(jnp.all(p1 >= p0))


def test_zero_start_is_deterministic_and_keys_matter(data):
  x, y = data
  a = attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=5)
  b = attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=5)
  np.testing.assert_array_equal(a.x_adv, b.x_adv)
  kw = dict(eps=0.1, step_size=0.02, num_steps=0, start="uniform")
  s1 = attacks.pgd(LOGITS_FN, x, y, key=jax.random.key(1), **kw).x_adv
  s1b = attacks.pgd(LOGITS_FN, x, y, key=jax.random.key(1), **kw).x_adv
  s2 = attacks.pgd(LOGITS_FN, x, y, key=jax.random.key(2), **kw).x_adv
  np.testing.assert_array_equal(s1, s1b)
  assert float(jnp.abs(s1 - s2).max()) > 0.01


def test_per_example_independence(data):
  # The loop differentiates the sum of per-example losses: an example's attack and its FOSC do not
  # depend on the rest of the batch (a batch mean would divide FOSC by B).
  x, y = data
  full = attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=4)
  for i in (0, 5):
    one = attacks.pgd(LOGITS_FN, x[i:i + 1], y[i:i + 1], eps=0.1, step_size=0.02, num_steps=4)
    np.testing.assert_allclose(one.x_adv[0], full.x_adv[i], atol=1e-6)
    np.testing.assert_allclose(one.fosc[0], full.fosc[i], rtol=1e-4)


def test_reported_fosc_is_the_closed_form_at_x_adv(data):
  x, y = data
  r = attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=3)
  g = jax.grad(lambda xx: jnp.sum(losses.cross_entropy(LOGITS_FN(xx), y)))(r.x_adv)
  np.testing.assert_allclose(r.fosc, fosc_lib.fosc(r.x_adv, x, g, eps=0.1), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(r.misclassified, jnp.argmax(LOGITS_FN(r.x_adv), -1) != y)
  # The official Dynamic AT code measures from the random start instead.
  key = jax.random.key(4)
  s = attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=3, start="uniform", key=key,
                  fosc_reference="start")
  x_start = attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=0, start="uniform",
                        key=key).x_adv
  g = jax.grad(lambda xx: jnp.sum(losses.cross_entropy(LOGITS_FN(xx), y)))(s.x_adv)
  np.testing.assert_allclose(s.fosc, fosc_lib.fosc(s.x_adv, x_start, g, eps=0.1), rtol=1e-4,
                             atol=1e-5)


def test_fgsm_is_one_signed_step(data):
  x, y = data
  g = jax.grad(lambda xx: jnp.sum(losses.cross_entropy(LOGITS_FN(xx), y)))(x)
  want = jnp.clip(x + 0.05 * jnp.sign(g), 0.0, 1.0)
  r = attacks.fgsm(LOGITS_FN, x, y, eps=0.05)
  np.testing.assert_allclose(r.x_adv, want, atol=1e-7)
  assert r.num_steps.tolist() == [1] * B


def test_kappa_counts_correct_iterates(data):
  # GAIRAT: kappa = number of iterates x^0 .. x^{K-1} still classified correctly.
  x, y = data
  kw = dict(eps=0.15, step_size=0.03, start="uniform", key=jax.random.key(5))
  K = 6
  r = attacks.pgd(LOGITS_FN, x, y, num_steps=K, **kw)
  want = np.zeros(B, int)
  for k in range(K):
    xk = attacks.pgd(LOGITS_FN, x, y, num_steps=k, **kw).x_adv
    want += np.asarray(jnp.argmax(LOGITS_FN(xk), -1) == y)
  np.testing.assert_array_equal(r.kappa, want)
  assert 0 < want.sum() < B * K  # the test is informative


def test_fosc_stop_rule(data):
  x, y = data
  K, c = 10, 0.3
  r = attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=K, stop=attacks.fosc_stop(c))
  steps = np.asarray(r.num_steps)
  assert steps.min() >= 1 and steps.min() < K  # step 0 is always taken; some stop early
  for i in np.where(steps < K)[0]:
    assert float(r.fosc[i]) <= c
  # Examples that stopped at step j had FOSC > c at every earlier iterate 1..j-1.
  for j in range(1, K):
    rj = attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=j)
    still = steps > j
    assert bool(jnp.all(rj.fosc[still] > c))


def test_fosc_stop_with_c_zero_never_stops_early(data):
  x, y = data
  # step * K < eps keeps the iterates strictly inside the ball, where FOSC > 0.
  r = attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.01, num_steps=8,
                  stop=attacks.fosc_stop(0.0))
  assert r.num_steps.tolist() == [8] * B


@pytest.mark.parametrize("rule", ["fosc", "fat"])
def test_stopped_examples_never_move_again(data, rule):
  x, y = data
  stop = attacks.fosc_stop(0.3) if rule == "fosc" else attacks.misclassified_stop(1)
  start = "none" if rule == "fosc" else "uniform"
  kw = dict(eps=0.1, step_size=0.02, stop=stop, start=start, key=jax.random.key(7))
  short = attacks.pgd(LOGITS_FN, x, y, num_steps=8, **kw)
  long = attacks.pgd(LOGITS_FN, x, y, num_steps=20, **kw)
  stopped = np.asarray(short.num_steps) < 8
  assert stopped.any()
  np.testing.assert_array_equal(long.x_adv[stopped], short.x_adv[stopped])
  np.testing.assert_array_equal(long.num_steps[stopped], short.num_steps[stopped])


def test_fat_with_tau_equal_k_is_pgd(data):
  x, y = data
  kw = dict(eps=0.2, step_size=0.04, num_steps=10, start="uniform", key=jax.random.key(8))
  pgd = attacks.pgd(LOGITS_FN, x, y, **kw)
  fat = attacks.pgd(LOGITS_FN, x, y, stop=attacks.misclassified_stop(10), **kw)
  np.testing.assert_array_equal(fat.x_adv, pgd.x_adv)
  np.testing.assert_array_equal(fat.num_steps, pgd.num_steps)


def test_fat_tau_semantics(data):
  x, y = data
  kw = dict(eps=0.3, step_size=0.05, num_steps=10)
  for tau in (0, 2):
    r = attacks.pgd(LOGITS_FN, x, y, stop=attacks.misclassified_stop(tau), **kw)
    # Replay: find the first misclassified iterate m of PGD; the example stops at step m + tau.
    mis_at = np.full(B, 99)
    for k in range(10, -1, -1):
      mk = np.asarray(attacks.pgd(LOGITS_FN, x, y, num_steps=k, eps=0.3, step_size=0.05)
                      .misclassified)
      mis_at[mk] = k
    # Each example pays its budget only on misclassified iterates, so steps >= min(m + tau, K).
    want_min = np.minimum(mis_at + tau, 10)
    assert np.all(np.asarray(r.num_steps) >= want_min)
    assert np.all(np.asarray(r.num_steps)[mis_at == 99] == 10)


def test_while_loop_exits_early():
  calls = []

  def logits_fn(x):
    jax.debug.callback(lambda: calls.append(1))
    s = jnp.sum(x.reshape(x.shape[0], -1), axis=1, keepdims=True)
    return jnp.concatenate([10.0 + 0.01 * s, jnp.zeros((x.shape[0], 2))], axis=1)

  x = jnp.full((4, 2, 2, 1), 0.5)
  y = jnp.ones(4, jnp.int32)  # always misclassified (class 0 wins)
  r = attacks.pgd(logits_fn, x, y, eps=0.1, step_size=0.01, num_steps=50,
                  stop=attacks.misclassified_stop(2))
  jax.effects_barrier()
  assert r.num_steps.tolist() == [2] * 4
  # One evaluation of the start plus one per loop iteration: 2 iterations, not 50.
  assert len(calls) == 1 + 2


@pytest.mark.parametrize("rule", ["none", "fosc", "fat"])
@pytest.mark.parametrize("K", [0, 1, 5])
def test_final_eval_off_gives_the_same_iterates_with_one_evaluation_less(data, rule, K):
  calls = []

  def logits_fn(x):
    jax.debug.callback(lambda: calls.append(1))
    return LOGITS_FN(x)

  x, y = data
  stop = {"none": None, "fosc": attacks.fosc_stop(0.3), "fat": attacks.misclassified_stop(1)}[rule]
  kw = dict(eps=0.1, step_size=0.02, num_steps=K, stop=stop, start="uniform", key=jax.random.key(3))
  counts = []
  results = []
  for final_eval in (True, False):
    calls.clear()
    results.append(attacks.pgd(logits_fn, x, y, final_eval=final_eval, **kw))
    jax.effects_barrier()
    counts.append(len(calls))
  full, fast = results
  np.testing.assert_array_equal(fast.x_adv, full.x_adv)
  np.testing.assert_array_equal(fast.num_steps, full.num_steps)
  np.testing.assert_array_equal(fast.kappa, full.kappa)
  if rule == "none":
    assert counts == [K + 1, max(K, 1)]  # the start is always evaluated
    if K == 5:  # the diagnostics describe the iterate before the last step
      before = attacks.pgd(logits_fn, x, y, **dict(kw, num_steps=4))
      np.testing.assert_array_equal(fast.loss, before.loss)
  else:
    assert counts[1] in (counts[0], counts[0] - 1)  # early exit: the loop may end before K


def _compacted_work(steps, K, levels, min_batch=4):
  """Examples evaluated by the halving policy, replayed from each example's number of steps."""
  n, level, k, work = len(steps), 0, 0, len(steps)
  while True:
    active = int(np.sum(steps > k)) if k < K else 0
    while level < levels and (n + 1) // 2 >= min_batch and active <= (n + 1) // 2:
      level, n = level + 1, (n + 1) // 2
    if active == 0:
      return work
    work, k = work + n, k + 1


@pytest.mark.parametrize("rule,eps", [("fosc", 0.15), ("fat", 0.05)])
def test_compaction_keeps_trajectories_and_shrinks_the_batch(rule, eps):
  sizes = []

  def logits_fn(x):
    n = x.shape[0]
    jax.debug.callback(lambda: sizes.append(n))
    return LOGITS_FN(x)

  x = jax.random.uniform(jax.random.key(11), (64, 8, 8, 1))
  y = jnp.argmax(LOGITS_FN(x), -1).astype(jnp.int32)  # every example starts correct
  stop = attacks.fosc_stop(1.0) if rule == "fosc" else attacks.misclassified_stop(0)
  kw = dict(eps=eps, step_size=eps / 5, num_steps=12, stop=stop, start="uniform",
            key=jax.random.key(4))
  runs = {}
  for levels in (0, 3):
    sizes.clear()
    r = attacks.pgd(logits_fn, x, y, compaction=levels, **kw)
    jax.effects_barrier()
    runs[levels] = (r, sum(sizes))
  (plain, work_plain), (compact, work_compact) = runs[0], runs[3]
  np.testing.assert_array_equal(compact.num_steps, plain.num_steps)
  np.testing.assert_array_equal(compact.kappa, plain.kappa)
  np.testing.assert_allclose(compact.x_adv, plain.x_adv, atol=1e-6)
  np.testing.assert_allclose(compact.loss, plain.loss, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(compact.misclassified, plain.misclassified)
  steps = np.asarray(plain.num_steps)
  assert steps.min() < 5 and steps.max() == 12  # early stops, and stragglers that run all 12
  assert work_plain == 64 * 13
  assert work_compact == _compacted_work(steps, 12, 3) < work_plain


def test_traced_hyperparameters_do_not_recompile(data):
  x, y = data
  fn = fgsm_pgd._pgd
  attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=3, stop=attacks.fosc_stop(0.1))
  before = fn._cache_size()
  for eps, step, k, c in [(0.05, 0.01, 5, 0.2), (0.2, 0.03, 7, 0.0), (0.3, 0.1, 1, 1.0)]:
    attacks.pgd(LOGITS_FN, x, y, eps=eps, step_size=step, num_steps=k, stop=attacks.fosc_stop(c))
  assert fn._cache_size() == before
  attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=3,
              stop=attacks.misclassified_stop(1))
  after = fn._cache_size()
  for tau in (0, 3, 7):
    attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=3,
                stop=attacks.misclassified_stop(tau))
  assert fn._cache_size() == after


def test_jittable_inside_a_user_jit(data):
  x, y = data

  @jax.jit
  def run(x, y, eps):
    return attacks.pgd(LOGITS_FN, x, y, eps=eps, step_size=0.02, num_steps=3)

  r = run(x, y, 0.1)
  np.testing.assert_allclose(
      r.x_adv, attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=3).x_adv,
      atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(compaction=-1), r"compaction must be in \[0, inf\)"),
    (dict(compaction=1.5), "compaction must be an integer"),
    (dict(eps=-0.1), r"eps must be in \[0.0, inf\)"),
    (dict(step_size=0.0), r"step_size must be in \(0.0, inf\)"),
    (dict(num_steps=-1), r"num_steps must be in \[0, inf\)"),
    (dict(num_steps=2.5), "num_steps must be an integer"),
    (dict(norm="l1"), "norm must be one of"),
    (dict(loss="hinge"), "loss must be one of"),
    (dict(start="gauss"), "start must be one of"),
    (dict(start="uniform"), "needs a PRNG key"),
])
def test_bad_arguments_are_named(data, kwargs, match):
  x, y = data
  kw = dict(eps=0.1, step_size=0.02, num_steps=3)
  kw.update(kwargs)
  with pytest.raises(ValueError, match=match):
    attacks.pgd(LOGITS_FN, x, y, **kw)


def test_bad_inputs_are_named(data):
  x, y = data
  kw = dict(eps=0.1, step_size=0.02, num_steps=3)
  with pytest.raises(ValueError, match=r"x must be in \[0, 1\]"):
    attacks.pgd(LOGITS_FN, x * 2, y, **kw)
  with pytest.raises(ValueError, match="x contains NaN"):
    attacks.pgd(LOGITS_FN, x.at[0, 0, 0, 0].set(jnp.nan), y, **kw)
  with pytest.raises(ValueError, match="x must be a float"):
    attacks.pgd(LOGITS_FN, (x * 255).astype(jnp.uint8), y, **kw)
  with pytest.raises(ValueError, match=r"y must be in \[0, 9\]"):
    attacks.pgd(LOGITS_FN, x, y + 5, **kw)
  with pytest.raises(ValueError, match=r"y must have shape \(16,\)"):
    attacks.pgd(LOGITS_FN, x, y[:3], **kw)
  with pytest.raises(ValueError, match="y must be an integer"):
    attacks.pgd(LOGITS_FN, x, y.astype(jnp.float32), **kw)
  with pytest.raises(ValueError, match="c must be >= 0"):
    attacks.fosc_stop(-1.0)
  with pytest.raises(ValueError, match="tau must be an integer >= 0"):
    attacks.misclassified_stop(-2)
