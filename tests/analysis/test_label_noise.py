"""The label-noise analysis: the kappa AUC, the subset accuracies and the histograms, each against
a direct count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.analysis import label_noise as ln


def _mann_whitney_auc(score, positive):
  # P(score_pos > score_neg) + 0.5 P(tie), by a double loop over all pairs.
  pos, neg = score[positive], score[~positive]
  total = 0.0
  for p in pos:
    for q in neg:
      total += 1.0 if p > q else 0.5 if p == q else 0.0
  return total / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kappa_auc_is_the_mann_whitney_probability(seed):
  rng = np.random.default_rng(seed)
  noisy = rng.random(120) < 0.25
  kappa = np.where(noisy, rng.integers(0, 6, 120), rng.integers(2, 11, 120))  # many ties
  assert ln.kappa_auc(kappa, noisy) == pytest.approx(_mann_whitney_auc(-kappa, noisy), abs=1e-12)


def test_kappa_auc_extremes_and_empty_groups():
  noisy = np.array([True, True, False, False])
  assert ln.kappa_auc(np.array([0, 1, 5, 9]), noisy) == 1.0
  assert ln.kappa_auc(np.array([9, 5, 1, 0]), noisy) == 0.0
  assert ln.kappa_auc(np.array([3, 3, 3, 3]), noisy) == 0.5
  with pytest.raises(ValueError):
    ln.kappa_auc(np.array([1, 2]), np.array([True, True]))


def test_subset_accuracies_count_directly():
  rng = np.random.default_rng(0)
  clean_label = rng.integers(0, 10, 200)
  noisy = rng.random(200) < 0.3
  label = np.where(noisy, (clean_label + 1) % 10, clean_label)
  pred = np.where(rng.random(200) < 0.5, label, clean_label)
  out = ln.subset_accuracies(pred, {"label": label, "clean_label": clean_label, "noisy": noisy})
  clean_hits = sum(int(pred[i] == label[i]) for i in range(200) if not noisy[i])
  fit = sum(int(pred[i] == label[i]) for i in range(200) if noisy[i])
  true = sum(int(pred[i] == clean_label[i]) for i in range(200) if noisy[i])
  assert out["clean_acc"] == pytest.approx(clean_hits / (~noisy).sum())
  assert out["noisy_fit"] == pytest.approx(fit / noisy.sum())
  assert out["noisy_true"] == pytest.approx(true / noisy.sum())
  assert out["n_clean"] + out["n_noisy"] == 200


def test_kappa_histograms():
  kappa = np.array([0, 1, 1, 10, 3, 3, 3])
  noisy = np.array([True, True, False, False, False, True, False])
  h = ln.kappa_histograms(kappa, noisy, 10)
  assert h["noisy"] == np.bincount([0, 1, 3], minlength=11).tolist()
  assert h["clean"] == np.bincount([1, 10, 3, 3], minlength=11).tolist()


def test_kappa_values_are_pgd_kappa_against_the_given_labels():
  # A linear model: examples labelled with their predicted class have kappa > 0 for a small eps, and
  # examples whose label is not the prediction have kappa 0 (the start is already misclassified).
  w = jnp.eye(4)[:, :3] * 5.0
  logits_fn = lambda x: x.reshape(x.shape[0], -1) @ w
  x = np.zeros((6, 2, 2, 1), np.float32)
  x[:, 0, 0, 0] = 0.9
  pred = np.zeros(6, np.int32)
  labels = np.array([0, 0, 0, 1, 2, 1], np.int32)
  kappa = ln.kappa_values(logits_fn, x, labels, eps=0.05, step_size=0.01, num_steps=5,
                          key=jax.random.key(0), batch_size=4)
  assert kappa.shape == (6,)
  np.testing.assert_array_equal(kappa[labels != pred], 0)
  np.testing.assert_array_equal(kappa[labels == pred], 5)
