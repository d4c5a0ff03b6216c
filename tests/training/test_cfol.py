"""CFOL-AT (Pethick et al., TMLR 2023): the online-learning update, the class sampler, resume.

The class weights are checked against a float64 transcription of the official
``ClassSampler.batch_update`` on given losses; the sampler's class frequencies against the
distribution (a chi-square test at level 1e-3 on fixed seeds); and a CFOL run interrupted in the
middle of an epoch and resumed from its checkpoint against the uninterrupted run, bitwise (the
class distribution is restored with the state, so the resumed run draws the same batches).
"""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from robust_jax import checkpoint as ckpt_lib
from robust_jax import weighting
from robust_jax.data import class_sampler, pipeline
from robust_jax.training import config as config_lib
from robust_jax.training import loop, sampling


def _official_batch_update(w, class_ids, eta_times_losses, gamma):
  """cfol/class_sampler.py: p = gamma u + (1 - gamma) softmax(w) before the update, then
  loss_vec[c] += eta l_i / p[c] example by example, w += loss_vec (float64)."""
  w = np.asarray(w, np.float64)
  q = np.exp(w - w.max())
  q /= q.sum()
  p = gamma / len(w) + (1 - gamma) * q
  loss_vec = np.zeros(len(w))
  for i, c in enumerate(class_ids):
    loss_vec[c] = loss_vec[c] + eta_times_losses[i] / p[c]
  return w + loss_vec


@pytest.mark.parametrize("gamma", [0.5, 0.1, 1.0])
def test_weights_follow_the_official_update_on_given_losses(gamma):
  rng = np.random.default_rng(0)
  w = rng.normal(size=10).astype(np.float32)
  eta = 0.01
  for _ in range(5):
    y = rng.integers(0, 10, size=128)
    loss = rng.uniform(size=128).astype(np.float32)
    expected = _official_batch_update(w, y, eta * loss, gamma)
    w = np.asarray(weighting.cfol_update(jnp.asarray(w), jnp.asarray(loss), jnp.asarray(y),
                                         eta=eta, gamma=gamma))
    np.testing.assert_allclose(w, expected, rtol=1e-5)


def test_the_part_updates_from_the_misclassified_adversarial_logits():
  part = weighting.cfol(cfol_eta=0.05, cfol_gamma=0.5, cfol_num_classes=4)
  state = part.init()
  np.testing.assert_array_equal(np.asarray(state.w), np.zeros(4))
  np.testing.assert_allclose(np.asarray(part.class_distribution(state)), np.full(4, 0.25))
  rng = np.random.default_rng(1)
  for _ in range(3):
    logits = rng.normal(size=(32, 4)).astype(np.float32)
    y = rng.integers(0, 4, size=32)
    zero_one = (logits.argmax(1) != y).astype(np.float64)
    expected = _official_batch_update(np.asarray(state.w), y, 0.05 * zero_one, 0.5)
    state = part.update(state, jnp.asarray(logits), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(state.w), expected, rtol=1e-5)
  p = np.asarray(part.class_distribution(state), np.float64)
  w = np.asarray(state.w, np.float64)
  np.testing.assert_allclose(p, 0.5 / 4 + 0.5 * np.exp(w) / np.exp(w).sum(), rtol=1e-5)


def test_sampler_class_frequencies_follow_the_distribution():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 5, size=500)
  index = class_sampler.class_index(labels, 5)
  p = np.array([0.4, 0.05, 0.25, 0.2, 0.1])
  draws = np.concatenate([class_sampler.batch_indices(index, p, batch_size=64, seed=3, epoch=0,
                                                      step=s) for s in range(300)])
  counts = np.bincount(labels[draws], minlength=5)
  chi2 = np.sum((counts - len(draws) * p) ** 2 / (len(draws) * p))
  assert chi2 < stats.chi2.ppf(1 - 1e-3, df=4), (counts, len(draws) * p)
  # Within a class, every example equally likely (drawn with replacement).
  within = draws[labels[draws] == 0]
  members = index[0]
  per_member = np.array([np.sum(within == m) for m in members])
  expected = len(within) / len(members)
  chi2 = np.sum((per_member - expected) ** 2 / expected)
  assert chi2 < stats.chi2.ppf(1 - 1e-3, df=len(members) - 1)


def test_sampler_is_a_pure_function_and_reads_the_distribution_before_each_batch():
  labels = np.repeat(np.arange(3), 20)
  arrays = {"image": np.arange(60, dtype=np.float32).reshape(60, 1, 1, 1) / 60, "label": labels}
  index = class_sampler.class_index(labels, 3)
  a = class_sampler.batch_indices(index, [0.2, 0.3, 0.5], batch_size=8, seed=1, epoch=2, step=3)
  b = class_sampler.batch_indices(index, [0.2, 0.3, 0.5], batch_size=8, seed=1, epoch=2, step=3)
  c = class_sampler.batch_indices(index, [0.2, 0.3, 0.5], batch_size=8, seed=1, epoch=2, step=4)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  calls = []
  law = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
  def probs():
    calls.append(len(calls))
    return np.array(law[min(len(calls) - 1, 2)])
  got = [batch["label"] for batch in class_sampler.train_batches(
      arrays, class_probs=probs, batch_size=20, seed=0, epoch=0)]
  assert [set(g.tolist()) for g in got] == [{0}, {2}, {1}]  # each batch from the law read before it
  resumed = [batch["label"] for batch in class_sampler.train_batches(
      arrays, class_probs=lambda: np.array(law[2]), batch_size=20, seed=0, epoch=0, start_step=2)]
  np.testing.assert_array_equal(resumed[0], got[2])


def test_sampler_checks_the_number_of_classes():
  with pytest.raises(ValueError, match=r"config\.cfol_num_classes=3 must be the dataset's"):
    class_sampler.class_index(np.array([0, 1, 5]), 3)
  with pytest.raises(ValueError, match=r"classes \[2\] have no training example"):
    class_sampler.class_index(np.array([0, 1, 1, 3]), 4)


def test_validation_names_the_field():
  c = config_lib.base_config()
  c.method = "cfol"
  c.cfol_gamma = 0.0
  with pytest.raises(ValueError, match=r"config\.cfol_gamma must be in \(0, 1\]"):
    config_lib.validate(c)
  c.cfol_gamma, c.cfol_eta = 0.5, -1.0
  with pytest.raises(ValueError, match=r"config\.cfol_eta must be >= 0"):
    config_lib.validate(c)
  c.cfol_eta, c.cfol_num_classes = 1e-5, 1
  with pytest.raises(ValueError, match=r"config\.cfol_num_classes must be an integer >= 2"):
    config_lib.validate(c)


def _config(**overrides):
  c = config_lib.base_config()
  c.update(dict(dataset="digits", model="mlp", method="cfol", eps=0.2, step_size=0.05,
                num_steps=3, batch_size=128, num_epochs=2, learning_rate=0.05,
                lr_schedule="constant", progress=False, select_attack_steps=3,
                test_attack_steps=1, cfol_eta=2e-3, train_diagnostics=False,
                checkpoint_every_steps=3))
  c.update(overrides)
  return c


class _Interrupted(Exception):
  pass


def _final_state(workdir):
  manager = ckpt_lib.CheckpointManager(os.path.join(workdir, "checkpoints"), read_only=True)
  return manager.latest_step(), manager.restore_raw("latest")[0]


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path, monkeypatch):
  ref = str(tmp_path / "ref")
  loop.train_and_evaluate(_config(), ref)
  step_ref, state_ref = _final_state(ref)
  assert step_ref == 2 * (1294 // 128)
  w = np.asarray(state_ref["parts"]["weighting"]["w"])
  assert np.ptp(w) > 0  # the adversary moved: the batches were drawn from a changing law

  # The same run, interrupted after 14 steps (the checkpoint at step 12 is mid-epoch 2), resumed.
  original = sampling.train_batches_for
  seen = []
  def interrupting(bundle, current_state):
    batches = original(bundle, current_state)
    def wrapped(*args, **kwargs):
      for batch in batches(*args, **kwargs):
        if len(seen) == 14:
          raise _Interrupted
        seen.append(batch["label"])
        yield batch
    return wrapped
  killed = str(tmp_path / "killed")
  monkeypatch.setattr(sampling, "train_batches_for", interrupting)
  with pytest.raises(_Interrupted):
    loop.train_and_evaluate(_config(), killed)
  monkeypatch.setattr(sampling, "train_batches_for", original)
  assert _final_state(killed)[0] == 12
  # The loop drew its batches from the class sampler: step 0 from the initial, uniform law.
  labels = pipeline.load_dataset("digits").train["label"]
  first = class_sampler.batch_indices(class_sampler.class_index(labels, 10), np.full(10, 0.1),
                                      batch_size=128, seed=0, epoch=0, step=0)
  np.testing.assert_array_equal(seen[0], labels[first])
  loop.train_and_evaluate(_config(), killed)
  step_killed, state_killed = _final_state(killed)
  assert step_killed == step_ref
  chex.assert_trees_all_equal(state_ref, state_killed)  # bitwise, the class weights included
