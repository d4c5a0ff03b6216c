"""AutoAttack's other versions: the compositions of ``set_version`` (fra31/auto-attack
``autoattack.py``) for linf, l2 (Square-L2) and l1 (APGD-L1 with ``use_largereps``, FAB-L1 and
Square-L1, whose algorithms tests/attacks/test_l1_autoattack.py checks), and ``version="rand"`` (EOT
over ``eot_iter`` passes of a randomised ``logits_fn(x, key)``, the gradient averaged)."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks, losses
from robust_jax.attacks import _apgd as apgd_lib
from robust_jax.attacks import _autoattack as aa

OFFICIAL = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
            "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
            "rand": ("apgd-ce", "apgd-dlr")}


def _linear(seed=0, d=16, k=5):
  w = jax.random.normal(jax.random.key(seed), (d, k)) * 3.0
  return lambda v: v.reshape(v.shape[0], -1) @ w


def test_compositions_are_the_official_ones():
  for version, names in OFFICIAL.items():
    assert aa.version_attacks(version) == names
  l2 = attacks.autoattack_settings(eps=0.5, norm="l2", num_classes=10)
  assert tuple(l2) == OFFICIAL["standard"]
  assert l2["square"]["norm"] == "l2" and l2["square"]["variant"] == "autoattack"
  assert l2["square"]["n_queries"] == 5000 and l2["square"]["p_init"] == 0.8
  assert l2["apgd-ce"]["n_restarts"] == 1 and l2["apgd-t"]["n_target_classes"] == 9
  assert l2["fab-t"]["n_target_classes"] == 9 and l2["fab-t"]["norm"] == "l2"
  rand = attacks.autoattack_settings(eps=8 / 255, version="rand", num_classes=10)
  assert tuple(rand) == OFFICIAL["rand"]
  for stage in rand.values():
    assert stage["eot_iter"] == 20 and stage["randomized"] and stage["n_restarts"] == 1
  assert rand["apgd-ce"]["loss"] == "ce" and rand["apgd-dlr"]["loss"] == "dlr"
  # L1 standard: APGD-CE with 5 restarts and APGD-T with 5 targets, both with use_largereps ...
  l1 = attacks.autoattack_settings(eps=12.0, norm="l1", version="custom",
                                   attacks=("apgd-ce", "apgd-t"), num_classes=10)
  assert l1["apgd-ce"]["n_restarts"] == 5 and l1["apgd-ce"]["use_largereps"]
  assert l1["apgd-t"]["n_target_classes"] == 5 and l1["apgd-t"]["use_largereps"]
  assert l1["apgd-t"]["n_restarts"] == 1 and l1["apgd-ce"]["variant"] == "official"
  # ... then FAB-T and Square with the L1 norm (the official standard composition).
  full = attacks.autoattack_settings(eps=12.0, norm="l1", num_classes=10)
  assert tuple(full) == OFFICIAL["standard"]
  assert full["fab-t"]["norm"] == "l1" and full["square"]["norm"] == "l1"
  with pytest.raises(ValueError, match="square_variant"):
    attacks.autoattack_settings(eps=0.5, norm="l2", square_variant="square_attack")
  with pytest.raises(ValueError, match="eot_iter"):
    attacks.autoattack_settings(eps=0.1, eot_iter=5)
  with pytest.raises(ValueError, match="eot_iter"):
    attacks.autoattack_settings(eps=0.1, version="rand", eot_iter=0)


def test_autoattack_runs_each_version_composition(monkeypatch):
  """What autoattack() makes for each version and norm (stub attacks that break nothing)."""
  made = []

  def stub_make(name, **h):
    made.append((name, h))

    def attack(logits_fn, x, y, key, active=None):
      return types.SimpleNamespace(x_adv=x, misclassified=jnp.zeros(x.shape[0], bool),
                                   distance=jnp.full(x.shape[0], jnp.inf))
    return attack

  monkeypatch.setattr(aa._factory, "make", stub_make)
  f = _linear()
  x = jax.random.uniform(jax.random.key(1), (6, 4, 4, 1))
  y = jnp.argmax(f(x), -1)
  r = aa.autoattack(f, x, y, eps=0.5, key=jax.random.key(0), norm="l2")
  assert r.attack_names == ("clean",) + OFFICIAL["standard"]
  assert [n for n, _ in made] == ["apgd_ce", "apgd_t", "fab_t", "square"]
  assert made[3][1]["norm"] == "l2" and made[3][1]["variant"] == "autoattack"
  made.clear()
  fr = lambda v, k: f(v)  # noqa: E731  (a "randomised" model that ignores its key)
  r = aa.autoattack(fr, x, y, eps=0.1, key=jax.random.key(0), version="rand")
  assert r.attack_names == ("clean",) + OFFICIAL["rand"]
  assert [(n, h["eot_iter"], h["randomized"]) for n, h in made] == [
      ("apgd_ce", 20, True), ("apgd_dlr", 20, True)]
  with pytest.raises(ValueError, match="version='rand'.*logits_fn\\(x, key\\)"):
    aa.autoattack(f, x, y, eps=0.1, key=jax.random.key(0), version="rand")
  made.clear()
  r = aa.autoattack(f, x, y, eps=2.0, key=jax.random.key(0), norm="l1")
  assert r.attack_names == ("clean",) + OFFICIAL["standard"]
  assert [(n, h["norm"]) for n, h in made] == [
      ("apgd_ce", "l1"), ("apgd_t", "l1"), ("fab_t", "l1"), ("square", "l1")]


def test_eot_gradient_is_the_mean_of_the_pass_gradients():
  f = _linear(d=12)
  x = jax.random.uniform(jax.random.key(2), (4, 2, 2, 3))
  y = jnp.array([0, 1, 2, 3])

  def noisy(v, k):  # a multiplicative random input transformation
    return f(v * (1.0 + 0.3 * jax.random.normal(k, v.shape)))

  key, n = jax.random.key(4), 5
  evaluate = apgd_lib.eot_value_and_grad(noisy, losses.get_loss("ce"), y, None, n, True)
  loss, mis, grad = jax.jit(evaluate)(x, key)
  pass_grad = jax.jit(jax.grad(lambda v, k: jnp.sum(losses.get_loss("ce")(noisy(v, k), y))))
  per_pass = [np.asarray(pass_grad(x, jax.random.fold_in(key, j))) for j in range(n)]
  np.testing.assert_allclose(np.asarray(grad), np.mean(per_pass, 0), rtol=1e-5, atol=1e-6)
  assert np.abs(per_pass[0] - per_pass[1]).max() > 1e-3  # the passes do differ
  last = jax.random.fold_in(key, n - 1)  # the loss and prediction are the last pass's (official)
  np.testing.assert_allclose(np.asarray(loss), np.asarray(losses.get_loss("ce")(noisy(x, last), y)),
                             rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(mis), np.asarray(jnp.argmax(noisy(x, last), -1) != y))


def test_eot_on_a_deterministic_model_equals_one_pass():
  f = _linear(seed=3)
  fr = lambda v, k: f(v)  # noqa: E731
  x = jax.random.uniform(jax.random.key(5), (8, 4, 4, 1))
  y = jnp.argmax(f(x), -1)
  key = jax.random.key(6)
  common = dict(eps=0.1, key=key, n_iter=6, variant="official", randomized=True)
  one = attacks.apgd(fr, x, y, eot_iter=1, **common)
  two = attacks.apgd(fr, x, y, eot_iter=2, **common)  # g + g = 2 g and 2 g / 2 = g: exact
  for a, b in ((one.x_adv, two.x_adv), (one.loss, two.loss), (one.num_steps, two.num_steps)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert 0 < int(one.misclassified.sum()) < 8
  assert np.all(np.abs(np.asarray(one.x_adv) - np.asarray(x)).max((1, 2, 3)) <= 0.1 + 1e-6)
  with pytest.raises(ValueError, match="randomized=True"):
    attacks.make("apgd_ce", eps=0.1, eot_iter=20)
  with pytest.raises(ValueError, match="eot_iter"):
    attacks.make("apgd_dlr", eps=0.1, eot_iter=0, randomized=True)
  with pytest.raises(ValueError, match=r"logits_fn\(x, key\)"):
    attacks.apgd(f, x, y, eps=0.1, key=key, randomized=True)
