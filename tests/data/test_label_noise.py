"""Label noise (Zhu et al. 2021): exact rate, exact pattern, recorded indices, determinism by seed."""

import numpy as np
import pytest

from robust_jax.data import label_noise, pipeline


def _labels(n=1000, c=10, seed=3):
  return np.random.default_rng(seed).integers(0, c, size=n).astype(np.int32)


@pytest.mark.parametrize("kind", ["symmetric", "pair"])
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.45])
def test_rate_is_exact_and_mask_marks_exactly_the_changed_labels(kind, rate):
  y = _labels()
  noisy, mask = label_noise.corrupt_labels(y, num_classes=10, kind=kind, rate=rate, seed=0)
  assert mask.sum() == round(rate * len(y))
  np.testing.assert_array_equal(noisy != y, mask)
  assert noisy.dtype == np.int32 and noisy.min() >= 0 and noisy.max() < 10


def test_pair_noise_is_y_plus_one_mod_c():
  y = _labels(c=7)
  noisy, mask = label_noise.corrupt_labels(y, num_classes=7, kind="pair", rate=0.3, seed=1)
  np.testing.assert_array_equal(noisy[mask], (y[mask] + 1) % 7)
  np.testing.assert_array_equal(noisy[~mask], y[~mask])


def test_symmetric_noise_is_uniform_over_the_other_classes():
  c = 5
  y = np.zeros(20000, np.int32)  # every true label 0: the new labels should be uniform on 1..4
  noisy, mask = label_noise.corrupt_labels(y, num_classes=c, kind="symmetric", rate=0.5, seed=2)
  counts = np.bincount(noisy[mask], minlength=c)
  assert counts[0] == 0
  expected = mask.sum() / (c - 1)
  # chi-square with 3 degrees of freedom: 16.3 is its 0.999 quantile.
  chi2 = float(np.sum((counts[1:] - expected) ** 2 / expected))
  assert chi2 < 16.3, counts


def test_deterministic_by_seed_and_different_across_seeds():
  y = _labels()
  a = label_noise.corrupt_labels(y, num_classes=10, kind="symmetric", rate=0.2, seed=5)
  b = label_noise.corrupt_labels(y, num_classes=10, kind="symmetric", rate=0.2, seed=5)
  c = label_noise.corrupt_labels(y, num_classes=10, kind="symmetric", rate=0.2, seed=6)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[1], c[1])


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="label_noise must"):
    label_noise.check("asym", 0.1, 0)
  with pytest.raises(ValueError, match="label_noise_rate"):
    label_noise.check("pair", 1.0, 0)
  with pytest.raises(ValueError, match="label_noise_seed"):
    label_noise.check("pair", 0.1, -1)


def test_load_dataset_records_the_noisy_indices_on_the_training_split_only():
  clean = pipeline.load_dataset("digits")
  ds = pipeline.load_dataset("digits", label_noise="pair", label_noise_rate=0.2, label_noise_seed=0)
  n = len(clean.train["label"])
  idx = label_noise.noisy_indices(ds.train)
  assert len(idx) == round(0.2 * n)
  np.testing.assert_array_equal(ds.train["clean_label"], clean.train["label"])
  np.testing.assert_array_equal(ds.train["label"][idx], (clean.train["label"][idx] + 1) % 10)
  others = np.setdiff1d(np.arange(n), idx)
  np.testing.assert_array_equal(ds.train["label"][others], clean.train["label"][others])
  np.testing.assert_array_equal(ds.test["label"], clean.test["label"])
  np.testing.assert_array_equal(ds.validation["label"], clean.validation["label"])
  assert "noisy" not in clean.train  # label_noise="none" leaves the split as it was
  # The training batches carry the noisy labels.
  batch = next(pipeline.train_batches(ds.train, batch_size=n, seed=0, epoch=0))
  order = pipeline.epoch_permutation(n, seed=0, epoch=0)
  np.testing.assert_array_equal(batch["label"], ds.train["label"][order])


def test_a_training_run_trains_on_the_noisy_labels():
  """``config.label_noise`` reaches the data the trainer loads (``loop.load_dataset``)."""
  from robust_jax.training import config as config_lib  # pylint: disable=import-outside-toplevel
  from robust_jax.training import loop  # pylint: disable=import-outside-toplevel
  c = config_lib.base_config()
  c.label_noise, c.label_noise_rate, c.label_noise_seed = "symmetric", 0.2, 3
  train = loop.load_dataset(c).train
  flipped = train["label"] != train["clean_label"]
  assert (flipped == train["noisy"]).all()
  assert flipped.sum() == round(0.2 * len(train["label"]))
  c.label_noise = "none"
  assert "clean_label" not in loop.load_dataset(c).train
