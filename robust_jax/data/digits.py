"""The embedded default dataset: scikit-learn's ``load_digits`` (real 8x8 handwritten digits, offline).

1,797 greyscale images of the digits 0-9 (UCI optical recognition of handwritten digits), shipped
inside scikit-learn, so tests, notebooks and CPU runs need no download. Pixel values 0..16 are scaled
to [0, 1] by ``/ 16``.

The split is deterministic and stratified: ``test_fraction`` of all examples (default 20%) becomes the
test set, then ``validation_fraction`` of the rest (default 10%) the validation set; the remainder is
the training set. It depends only on ``split_seed`` (default 0), never on the training seed. With the
defaults: 1,294 train / 144 validation / 359 test.
"""

from __future__ import annotations

import numpy as np

from robust_jax.data import splits

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)
NUM_EXAMPLES = 1797


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
  """Loads all 1,797 digits.

  Returns:
    ``(images, labels)``: float32 [1797, 8, 8, 1] in [0, 1] and int32 [1797] in 0..9, in
    scikit-learn's order.
  """
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top

  digits = sk_datasets.load_digits()
  images = (np.asarray(digits.images, np.float32) / 16.0)[..., None]
  labels = np.asarray(digits.target, np.int32)
  return images, labels


def load_digits_splits(
    *, validation_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
  """Loads the digits and splits them into train / validation / test.

  Args:
    validation_fraction: the fraction of the non-test examples held out for validation, in [0, 1).
    test_fraction: the fraction of all examples held out for testing, in [0, 1).
    split_seed: the seed of the stratified split, an int >= 0.

  Returns:
    ``{"train": arrays, "validation": arrays, "test": arrays}``, each ``arrays`` a dict with
    ``"image"`` float32 [n, 8, 8, 1] in [0, 1] and ``"label"`` int32 [n]. The three parts are
    disjoint and together hold all 1,797 examples.

  Raises:
    ValueError: if a fraction is outside [0, 1) or ``split_seed`` is negative.
  """
  images, labels = load_digits_arrays()
  return splits.train_validation_test(images, labels, validation_fraction=validation_fraction,
                                      test_fraction=test_fraction, split_seed=split_seed)
