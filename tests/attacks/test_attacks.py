"""Properties of FGSM, PGD and the masked ascent loop (the core contract)."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks
from robust_jax import fosc as fosc_lib
from robust_jax import losses
from robust_jax.attacks import _fgsm_pgd as fgsm_pgd
from tests.attacks.invariants import DTYPES, run_attack, check_in_ball_and_box, traced_at_most_once

B, C = 16, 10


def _model(seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  w1 = jax.random.normal(k1, (64, 32)) / 4
  w2 = jax.random.normal(k2, (32, C))

  def logits_fn(x):
    return jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2

  return logits_fn


LOGITS_FN = _model()


@functools.lru_cache(maxsize=None)
def _images(dtype="float32"):
  x = jax.random.uniform(jax.random.key(1), (B, 8, 8, 1))
  x = x.at[:, :2].set(0.0).at[:, -2:].set(1.0)  # pixels on the border of the box
  y = jnp.arange(B, dtype=jnp.int32) % C
  return x.astype(dtype), y


@pytest.fixture(scope="module")
def data():
  return _images()


class InvariantsTest(chex.TestCase):
  """The loop's invariants for float32 and bfloat16 images, called directly and in a user jit.

  bfloat16 iterates get one bfloat16 ulp of slack in the ball check (tests/attacks/invariants.py);
  float32 cases are held to the float32 tolerances.
  """

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(norm_eps_step=(("linf", 0.1, 0.03), ("l2", 0.8, 0.3)),
                         start=("none", "uniform", "normal"), loss=("ce", "cw", "kl"),
                         dtype=DTYPES)
  def test_every_iterate_in_ball_and_box(self, norm_eps_step, start, loss, dtype):
    norm, eps, step = norm_eps_step
    x, y = _images(dtype)

    @self.variant
    def run(x, y, key, k):
      return attacks.pgd(LOGITS_FN, x, y, eps=eps, step_size=step, num_steps=k, norm=norm,
                         loss=loss, start=start, key=key)

    key = jax.random.key(3)
    # With the same key the start is the same, so PGD-k's output is the k-th iterate of PGD-K.
    for k in range(0, 7):
      r = run_attack(dtype, run, x, y, key, k)
      check_in_ball_and_box(r.x_adv, x, eps, norm)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(rule=("fosc", "fat"), dtype=DTYPES)
  def test_stopped_examples_never_move_again(self, rule, dtype):
    x, y = _images(dtype)
    stop = attacks.fosc_stop(0.3) if rule == "fosc" else attacks.misclassified_stop(1)
    start = "none" if rule == "fosc" else "uniform"

    @self.variant
    def run(x, y, key, k):
      return attacks.pgd(LOGITS_FN, x, y, num_steps=k, eps=0.1, step_size=0.02, stop=stop,
                         start=start, key=key)

    short = run_attack(dtype, run, x, y, jax.random.key(7), 8)
    long = run_attack(dtype, run, x, y, jax.random.key(7), 20)
    stopped = np.asarray(short.num_steps) < 8
    assert stopped.any()
    np.testing.assert_array_equal(long.x_adv[stopped], short.x_adv[stopped])
    np.testing.assert_array_equal(long.num_steps[stopped], short.num_steps[stopped])


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
  # The official Dynamic AT code measures from the random start as drawn, before the [0, 1] clip
  # (tests/training/test_dynamic_at.py transcribes its loop).
  key = jax.random.key(4)
  s = attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=3, start="uniform", key=key,
                  fosc_reference="start")
  x_start = x + jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * 0.1
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


@pytest.fixture
def pgd_traced_once(monkeypatch):
  """PGD's compiled core, replaced by one that raises on its second trace (a recompilation);
  ``chex.clear_trace_counter()`` opens a new one-trace window."""
  monkeypatch.setattr(fgsm_pgd, "_pgd", traced_at_most_once(fgsm_pgd._pgd))
  yield
  chex.clear_trace_counter()


def test_traced_hyperparameters_do_not_recompile(data, pgd_traced_once):
  x, y = data
  # One compilation across eps, step sizes, step counts and FOSC thresholds.
  for eps, step, k, c in [(0.1, 0.02, 3, 0.1), (0.05, 0.01, 5, 0.2), (0.2, 0.03, 7, 0.0),
                          (0.3, 0.1, 1, 1.0)]:
    attacks.pgd(LOGITS_FN, x, y, eps=eps, step_size=step, num_steps=k, stop=attacks.fosc_stop(c))
  # FAT's stop rule is another program: one compilation across its tau.
  chex.clear_trace_counter()
  for tau in (1, 0, 3, 7):
    attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=3,
                stop=attacks.misclassified_stop(tau))


def test_trace_counting_catches_a_recompilation(data, pgd_traced_once):
  # The check above has teeth: a new input shape is a new program, and the second trace raises.
  x, y = data
  attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=3)
  with pytest.raises(AssertionError, match="is traced > 1 times"):
    attacks.pgd(LOGITS_FN, x[:4], y[:4], eps=0.1, step_size=0.02, num_steps=3)


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


# ----------------------------------------------------------------------------------------------
# The factory: attacks.make(name, **hyperparameters) -> attack(logits_fn, x, y, key).

# name -> (hyperparameters of make, the same attack called directly with key=...). Small budgets.
_DIRECT = {
    "fgsm": (dict(eps=0.1, start="uniform"),
             lambda f, x, y, k: attacks.fgsm(f, x, y, eps=0.1, start="uniform", key=k)),
    "pgd": (dict(eps=0.1, step_size=0.02, num_steps=4, start="uniform", loss="cw"),
            lambda f, x, y, k: attacks.pgd(f, x, y, eps=0.1, step_size=0.02, num_steps=4,
                                           start="uniform", loss="cw", key=k)),
    "pgd_restarts": (dict(eps=0.1, step_size=0.02, num_steps=3, num_restarts=2),
                     lambda f, x, y, k: attacks.pgd_restarts(f, x, y, eps=0.1, step_size=0.02,
                                                             num_steps=3, num_restarts=2, key=k)),
    "cw_inf": (dict(eps=0.1, num_steps=3),
               lambda f, x, y, k: attacks.cw_inf(f, x, y, eps=0.1, num_steps=3, key=k)),
    "apgd_ce": (dict(eps=0.05, n_iter=5),
                lambda f, x, y, k: attacks.apgd(f, x, y, eps=0.05, n_iter=5, key=k)),
    "apgd_dlr": (dict(eps=0.5, n_iter=5, norm="l2", variant="official"),
                 lambda f, x, y, k: attacks.apgd(f, x, y, eps=0.5, n_iter=5, norm="l2",
                                                 variant="official", loss="dlr", key=k)),
    "apgd_t": (dict(eps=0.05, n_iter=3, n_target_classes=2),
               lambda f, x, y, k: attacks.apgd_targeted(f, x, y, eps=0.05, n_iter=3,
                                                        n_target_classes=2, key=k)),
    "fab": (dict(eps=0.1, n_iter=5),
            lambda f, x, y, k: attacks.fab(f, x, y, eps=0.1, n_iter=5, targeted=False, key=k)),
    "fab_t": (dict(eps=0.1, n_iter=5, n_target_classes=2, n_restarts=2),
              lambda f, x, y, k: attacks.fab(f, x, y, eps=0.1, n_iter=5, n_target_classes=2,
                                             n_restarts=2, key=k)),
    "square": (dict(eps=0.1, n_queries=20),
               lambda f, x, y, k: attacks.square(f, x, y, eps=0.1, n_queries=20, key=k)),
    "autoattack": (dict(eps=0.05, n_iter=3, n_queries=10, n_target_classes=2),
                   lambda f, x, y, k: attacks.autoattack(f, x, y, eps=0.05, n_iter=3,
                                                         n_queries=10, n_target_classes=2, key=k)),
    "beta": (dict(eps=0.1, step_size=0.02, num_steps=2),
             lambda f, x, y, k: attacks.beta_attack(f, x, y, eps=0.1, step_size=0.02,
                                                    num_steps=2, key=k)),
    "fmn": (dict(norm="linf", steps=4),
            lambda f, x, y, k: attacks.fmn(f, x, y, norm="linf", steps=4, key=k)),
    "ddn": (dict(steps=4),
            lambda f, x, y, k: attacks.ddn(f, x, y, steps=4, key=k)),
    "cw_l2": (dict(binary_search_steps=2, max_iterations=3),
              lambda f, x, y, k: attacks.cw_l2(f, x, y, binary_search_steps=2, max_iterations=3,
                                               key=k)),
    "deepfool": (dict(norm="l2", max_iter=3),
                 lambda f, x, y, k: attacks.deepfool(f, x, y, norm="l2", max_iter=3, key=k)),
}


def test_make_knows_every_name():
  assert set(_DIRECT) == set(attacks.NAMES)
  assert {"fgsm", "pgd", "pgd_restarts", "cw_inf", "apgd_ce", "apgd_dlr", "apgd_t", "fab_t",
          "square", "autoattack", "beta"} <= set(attacks.NAMES)
  for name in attacks.NAMES:  # every name builds, and reports what it was built with
    hp = _DIRECT[name][0]
    attack = attacks.make(name, **hp)
    assert attack.name == name and hp.items() <= dict(attack.hyperparameters).items()
  assert attacks.make("apgd_dlr", eps=0.1).hyperparameters["loss"] == "dlr"  # fixed by the name
  assert attacks.make("fab_t", eps=0.1).hyperparameters["targeted"] is True


@pytest.mark.parametrize("name", sorted(_DIRECT))
def test_make_equals_the_function_called_directly(data, name):
  x, y = data
  x, y = x[:8], y[:8]
  hp, direct = _DIRECT[name]
  key = jax.random.key(12)
  made = attacks.make(name, **hp)(LOGITS_FN, x, y, key)
  want = direct(LOGITS_FN, x, y, key)
  if name == "autoattack":  # wall-clock seconds differ from run to run
    made, want = made.replace(seconds=0), want.replace(seconds=0)
  assert type(made) is type(want)
  chex.assert_trees_all_equal(made, want)  # the same tree structure, and bitwise equal leaves
  # A different key gives a different attack where the attack is random.
  if name in ("fgsm", "pgd", "pgd_restarts", "cw_inf"):
    other = attacks.make(name, **hp)(LOGITS_FN, x, y, jax.random.key(13))
    assert float(jnp.abs(other.x_adv - made.x_adv).max()) > 0


def test_make_passes_per_call_inputs(data):
  x, y = data
  t = (y + 1) % C
  active = jnp.arange(B) % 2 == 0
  key = jax.random.key(2)
  r = attacks.make("pgd", eps=0.1, step_size=0.02, num_steps=3)(LOGITS_FN, x, y, None, target=t)
  want = attacks.pgd(LOGITS_FN, x, y, eps=0.1, step_size=0.02, num_steps=3, target=t)
  np.testing.assert_array_equal(r.x_adv, want.x_adv)
  y_pred = jnp.argmax(LOGITS_FN(x), -1).astype(jnp.int32)  # every example starts correct
  a = attacks.make("apgd_ce", eps=0.05, n_iter=3)(LOGITS_FN, x, y_pred, key, active=active)
  np.testing.assert_array_equal(a.x_adv[~active], x[~active])  # masked-out examples never move
  assert a.num_steps[~active].tolist() == [0] * int((~active).sum())
  assert int(a.num_steps[active].sum()) > 0
  with pytest.raises(ValueError, match=r"attack 'pgd': unknown input\(s\) \['active'\]"):
    attacks.make("pgd", eps=0.1, step_size=0.02, num_steps=3)(LOGITS_FN, x, y, None,
                                                                 active=active)


@pytest.mark.parametrize("call,match", [
    (lambda: attacks.make("pgd20", eps=0.1), r"unknown attack 'pgd20'; valid names: \('fgsm'"),
    (lambda: attacks.make("pgd", eps=0.1, step_size=0.02, num_steps=3, steps=3, epsilon=1),
     r"make\('pgd'\): unknown hyperparameter\(s\) \['epsilon', 'steps'\]; valid: \['eps', "),
    (lambda: attacks.make("pgd", eps=0.1), r"make\('pgd'\) needs .*\['step_size', 'num_steps'\]"),
    (lambda: attacks.make("apgd_ce", eps=0.1, loss="dlr"), r"\['loss'\].*loss='ce' is fixed"),
    (lambda: attacks.make("fab", eps=0.1, n_target_classes=3), r"\['n_target_classes'\]"),
    (lambda: attacks.make("pgd", eps=-0.1, step_size=0.02, num_steps=3),
     r"eps must be in \[0.0, inf\), got -0.1"),
    (lambda: attacks.make("pgd", eps=0.1, step_size=0.02, num_steps=2.5),
     "num_steps must be an integer"),
    (lambda: attacks.make("pgd", eps=0.1, step_size=0.02, num_steps=3, compaction=-1),
     r"compaction must be in \[0, inf\)"),
    (lambda: attacks.make("fgsm", eps=0.1, norm="l1"), "norm must be one of"),
    (lambda: attacks.make("cw_inf", eps=0.0), r"eps must be in \(0.0, inf\)"),
    (lambda: attacks.make("apgd_t", eps=0.1, rho=1.5), r"rho must be in \[0.0, 1.0\]"),
    (lambda: attacks.make("apgd_t", eps=0.1, n_target_classes=0), "n_target_classes must be"),
    (lambda: attacks.make("fab_t", eps=0.1, eta=0.5), r"eta must be in \[1.0, inf\)"),
    (lambda: attacks.make("square", eps=0.1, p_init=0.0), r"p_init must be in \(0.0, 1.0\]"),
    (lambda: attacks.make("square", eps=0.1, norm="l2"), "norm must be one of"),
    (lambda: attacks.make("autoattack", eps=0.1, version="random"), "version must be one of"),
    (lambda: attacks.make("autoattack", eps=0.1, norm="l2", square_variant="square_attack"),
     "Square for norm='l2'"),
    (lambda: attacks.make("beta", eps=0.1, step_size=0.0, num_steps=3),
     r"step_size must be in \(0.0, inf\)"),
])
def test_make_validates_up_front(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_make_does_not_recompile_for_new_values(data, pgd_traced_once):
  x, y = data
  # One compilation across new values.
  for eps, step, k in [(0.1, 0.02, 3), (0.05, 0.01, 5), (0.2, 0.03, 7)]:
    attacks.make("pgd", eps=eps, step_size=step, num_steps=k)(LOGITS_FN, x, y, None)
  # Another apply function, passed as a Partial, is one more compilation; a new checkpoint of it
  # (the same function, new values) reuses that program.
  chex.clear_trace_counter()
  f = jax.tree_util.Partial(lambda s, xx: s * LOGITS_FN(xx), 1.0)
  attacks.make("pgd", eps=0.1, step_size=0.02, num_steps=3)(f, x, y, None)
  attacks.make("pgd", eps=0.1, step_size=0.02, num_steps=3)(
      jax.tree_util.Partial(f.func, 2.0), x, y, None)


def test_make_is_jittable(data):
  x, y = data
  attack = attacks.make("pgd", eps=0.1, step_size=0.02, num_steps=3, start="uniform")
  key = jax.random.key(5)
  r = jax.jit(lambda x, y, k: attack(LOGITS_FN, x, y, k))(x, y, key)
  np.testing.assert_allclose(r.x_adv, attack(LOGITS_FN, x, y, key).x_adv, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Shared helpers.


def test_bcast_and_per_example_norm():
  from robust_jax.attacks import _projections  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.key(0), (3, 4, 2, 1))
  np.testing.assert_allclose(_projections.per_example_norm(a),
                             np.linalg.norm(np.asarray(a).reshape(3, -1), axis=1), rtol=1e-6)
  np.testing.assert_array_equal(_projections.per_example_norm(a, "linf"),
                                np.abs(np.asarray(a)).reshape(3, -1).max(1))
  v = jnp.arange(3.0)
  assert _projections.bcast(v, a).shape == (3, 1, 1, 1)
  np.testing.assert_array_equal(_projections.bcast(v, a) * a,
                                np.asarray(v)[:, None, None, None] * a)


def test_check_attack_inputs_names_the_argument(data):
  from robust_jax import validation  # pylint: disable=g-import-not-at-top
  x, y = data
  assert validation.num_classes(LOGITS_FN, x) == C
  assert validation.num_classes(LOGITS_FN, jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)) == C
  assert validation.check_attack_inputs(LOGITS_FN, x, y) == C
  with pytest.raises(ValueError, match=r"target must be in \[0, 9\]"):
    validation.check_attack_inputs(LOGITS_FN, x, y, target=y + C)
  with pytest.raises(ValueError, match=r"active must be a bool array of shape \(16,\), got \(3,\)"):
    validation.check_attack_inputs(LOGITS_FN, x, y, active=jnp.ones(3, bool))
  with pytest.raises(ValueError, match="key: the random starts needs a PRNG key"):
    validation.check_attack_inputs(LOGITS_FN, x, y, key=None, key_needed_by="the random starts")
  validation.check_attack_inputs(LOGITS_FN, x, y, key=None)  # no key needed: no error
  # Inside a trace the class count is unknown and nothing is checked against it.
  jax.jit(lambda x: validation.check_attack_inputs(LOGITS_FN, x, y) or 0)(x)



# ----------------------------------------------------------------------------------------------
# l2: the projection onto the ball intersected with the box, and the random starts.


def _dykstra(z, x0, eps, iters=2000):
  """The projection of z onto {||p - x0||_2 <= eps} intersected with [0, 1]^d by Dykstra's
  alternating projections (float64; converges to the projection onto the intersection)."""
  p, q_ball, q_box = z.copy(), np.zeros_like(z), np.zeros_like(z)
  for _ in range(iters):
    a = p + q_ball
    d = a - x0
    n = np.linalg.norm(d)
    b = x0 + d * min(1.0, eps / n) if n > 0 else a
    q_ball = a - b
    c = b + q_box
    p = np.clip(c, 0.0, 1.0)
    q_box = c - p
  return p


def _l2_cases(n=24, d=6, seed=0):
  rng = np.random.default_rng(seed)
  x0 = rng.uniform(0, 1, (n, d))
  x0[::4, 0], x0[1::4, 1] = 0.0, 1.0  # centres on the faces of the box
  z = x0 + rng.normal(size=(n, d)) * rng.uniform(0.1, 1.5, (n, 1))
  return x0.astype(np.float32), z.astype(np.float32), 0.4


def test_project_l2_is_the_exact_projection_onto_ball_and_box():
  x0, z, eps = _l2_cases()
  p = np.asarray(attacks.project_l2(jnp.asarray(z), jnp.asarray(x0), eps)).astype(np.float64)
  x0d, zd = x0.astype(np.float64), z.astype(np.float64)
  for i in range(len(z)):
    ref = _dykstra(zd[i], x0d[i], eps)
    np.testing.assert_allclose(p[i], ref, rtol=0, atol=2e-6)
    # KKT: p in both sets, and z - p in the normal cone at p: mu (p - x0) on the free coordinates
    # (one mu >= 0 for all, 0 unless the ball constraint is active) plus, on a face of the box, a
    # part pointing out of the box.
    assert np.linalg.norm(p[i] - x0d[i]) <= eps * (1 + 1e-6) and p[i].min() >= 0 and p[i].max() <= 1
    v, g = zd[i] - p[i], p[i] - x0d[i]
    free = (p[i] > 1e-6) & (p[i] < 1 - 1e-6)
    mu = max(float(v[free] @ g[free] / max(g[free] @ g[free], 1e-30)), 0.0) if free.any() else 0.0
    np.testing.assert_allclose(v[free], mu * g[free], atol=2e-5)
    if mu > 1e-5:
      np.testing.assert_allclose(np.linalg.norm(g), eps, rtol=1e-5)
    rest = v - mu * g
    assert np.all(rest[p[i] >= 1 - 1e-6] >= -2e-5) and np.all(rest[p[i] <= 1e-6] <= 2e-5)
  # Rescaling into the ball then clipping to the box (the official APGD-L2 step, apgd
  # variant="official") is not this projection: never closer to z, and farther for some cases.
  d = z - x0
  n = np.linalg.norm(d, axis=1, keepdims=True)
  clipped = np.clip(x0 + d / (n + 1e-12) * np.minimum(eps, n), 0, 1).astype(np.float64)
  gap = np.linalg.norm(clipped - zd, axis=1) - np.linalg.norm(p - zd, axis=1)
  assert gap.min() >= -1e-6 and gap.max() > 1e-2


def test_l2_radial_start_and_volume_uniform_start():
  """``start="radial"`` (robust_overfitting's ``attack_pgd``, torchattacks' ``PGDL2``): radius
  eps U(0, 1); ``start="uniform"``: uniform in the volume of the ball, radius eps U^(1/d). Both
  isotropic. Centre 0.5 and eps 0.3 keep every start inside the box (no clipping)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  n, eps = 4000, 0.3
  x = jnp.full((n, 4, 4, 1), 0.5)
  d = 16
  key = jax.random.key(0)
  radial = np.asarray(attacks.random_start(key, x, eps, "l2", "radial")) - 0.5
  volume = np.asarray(attacks.random_start(key, x, eps, "l2", "uniform")) - 0.5
  r_radial = np.linalg.norm(radial.reshape(n, -1), axis=1) / eps
  r_volume = np.linalg.norm(volume.reshape(n, -1), axis=1) / eps
  assert r_radial.max() <= 1 + 1e-6 and r_volume.max() <= 1 + 1e-6
  assert stats.kstest(r_radial, "uniform").pvalue > 1e-3
  assert stats.kstest(r_volume ** d, "uniform").pvalue > 1e-3
  assert stats.kstest(r_radial ** d, "uniform").pvalue < 1e-6  # the two are different laws
  np.testing.assert_allclose(r_radial.mean(), 0.5, atol=0.02)
  np.testing.assert_allclose(r_volume.mean(), d / (d + 1), atol=0.01)
  for s in (radial, volume):  # isotropic: unit directions average to 0, covariance I / d
    u = s.reshape(n, -1) / np.linalg.norm(s.reshape(n, -1), axis=1, keepdims=True)
    assert np.abs(u.mean(0)).max() < 0.05
    np.testing.assert_allclose(np.diag(u.T @ u / n), 1 / d, atol=0.015)
  # Through the attacks: PGD with no step returns its start; radial is an l2 start only.
  r = attacks.pgd(LOGITS_FN, jnp.full((B, 8, 8, 1), 0.5), jnp.zeros(B, jnp.int32), eps=0.3,
                  step_size=0.1, num_steps=0, norm="l2", start="radial", key=key)
  np.testing.assert_allclose(
      r.x_adv, attacks.random_start(key, jnp.full((B, 8, 8, 1), 0.5), 0.3, "l2", "radial"),
      atol=1e-7)
  for make in (lambda: attacks.make("pgd", eps=0.1, step_size=0.1, num_steps=1, start="radial"),
               lambda: attacks.make("pgd_restarts", eps=0.1, step_size=0.1, num_steps=1,
                                    start="radial")):
    with pytest.raises(ValueError, match="radial"):
      make()
