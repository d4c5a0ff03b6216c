"""MNIST, CIFAR-10, CIFAR-100 and SVHN from TensorFlow Datasets, without TensorFlow.

``tfds.data_source`` reads a dataset prepared in the ``array_record`` format by random access and
needs no TensorFlow (``tfds.load`` does). Each split is read once into numpy: images stay uint8
[N, H, W, C] (CIFAR-10's training set is 150 MB) and become float32 in [0, 1] only per batch, in
:mod:`robust_jax.data.pipeline`. Labels become int32 (CIFAR-100's fine ``label``).

The validation split is carved out of the training split by a deterministic stratified split
(:func:`robust_jax.data.splits.stratified_split`), never out of the test set.

Nothing here downloads: a dataset that is not prepared under ``data_dir`` raises
:class:`DatasetNotFoundError` explaining how to prepare it on a machine with network access. Tests use
``tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE)``, under which the mock's batched
``__getitems__`` is broken, so reading falls back to ``src[i]`` one example at a time.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from robust_jax.data import splits

# name -> (tfds name, the train split, the test split).
TFDS_DATASETS = {
    "mnist": ("mnist", "train", "test"),
    "cifar10": ("cifar10", "train", "test"),
    "cifar100": ("cifar100", "train", "test"),
    "svhn_cropped": ("svhn_cropped", "train", "test"),
}

_READ_CHUNK = 1024


class DatasetNotFoundError(FileNotFoundError):
  """The requested TFDS dataset is not prepared (in ``array_record`` format) under ``data_dir``."""


def _not_prepared_message(name: str, data_dir: Optional[str], resolved: str, cause: Exception) -> str:
  where = data_dir if data_dir is not None else (
      f"the default TFDS data dir ({os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')})")
  dir_arg = repr(data_dir) if data_dir is not None else "DIR"
  return (
      f"TFDS dataset {name!r} is not prepared in array_record format under {where} (looked in "
      f"{resolved}). robust_jax never downloads during training. To get it, run once on a machine "
      f"with network access (TensorFlow is not needed):\n"
      f"  python -c \"import tensorflow_datasets as tfds; tfds.builder({name!r}, data_dir={dir_arg}, "
      f"file_format='array_record').download_and_prepare()\"\n"
      f"or equivalently tfds.data_source({name!r}, data_dir={dir_arg}, "
      f"builder_kwargs={{'file_format': 'array_record'}}); then copy DIR here if needed and point "
      f"--config.data_dir at it (or set TFDS_DATA_DIR). A copy prepared in the default tfrecord "
      f"format (by tfds.load) cannot be read without TensorFlow; prepare it again as above. "
      f"Underlying error: {type(cause).__name__}: {cause}")


def _open_source(tfds_name: str, split: str, data_dir: Optional[str]):
  """Returns ``tfds.data_source(tfds_name, split=split)`` or raises DatasetNotFoundError."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    return tfds.data_source(
        tfds_name, split=split, data_dir=data_dir, download=False,
        builder_kwargs={"file_format": "array_record"})
  except Exception as e:  # pylint: disable=broad-except
    try:
      resolved = str(tfds.builder(tfds_name, data_dir=data_dir).data_dir)
    except Exception:  # pylint: disable=broad-except
      resolved = str(data_dir)
    raise DatasetNotFoundError(_not_prepared_message(tfds_name, data_dir, resolved, e)) from e


def _builder_info(tfds_name: str, data_dir: Optional[str]) -> tuple[int, tuple[int, int, int]]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  info = tfds.builder(tfds_name, data_dir=data_dir, file_format="array_record").info
  return int(info.features["label"].num_classes), tuple(int(d) for d in info.features["image"].shape)


def read_source(src: Any, image_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
  """Reads a whole TFDS data source into numpy.

  Args:
    src: a random-access source (``len(src)``, ``src[i]`` giving ``{"image", "label", ...}``).
    image_shape: (H, W, C) of one image.

  Returns:
    ``{"image": uint8 [N, H, W, C], "label": int32 [N]}``.
  """
  n = len(src)
  images = np.empty((n,) + tuple(image_shape), np.uint8)
  labels = np.empty((n,), np.int32)
  batched = hasattr(src, "__getitems__")
  for start in range(0, n, _READ_CHUNK):
    idx = list(range(start, min(start + _READ_CHUNK, n)))
    examples = None
    if batched:
      try:
        examples = src.__getitems__(idx)
      except TypeError:  # tfds.testing.mock_data leaves __getitems__ unbound (tfds 4.9.10).
        batched = False
    if examples is None:
      examples = [src[i] for i in idx]
    for i, ex in zip(idx, examples):
      images[i] = np.asarray(ex["image"]).reshape(image_shape)
      labels[i] = int(ex["label"])
  return {"image": images, "label": labels}


def load_tfds_splits(
    name: str, *, data_dir: Optional[str] = None, validation_fraction: float = 0.1,
    split_seed: int = 0,
) -> tuple[dict[str, dict[str, np.ndarray]], int, tuple[int, int, int]]:
  """Loads a TFDS image-classification dataset into numpy with a validation split from train.

  Args:
    name: one of :data:`TFDS_DATASETS` (``mnist``, ``cifar10``, ``cifar100``, ``svhn_cropped``).
    data_dir: the TFDS data dir holding the prepared dataset; None uses TFDS's default
      (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    validation_fraction: the fraction of the *training* split held out for validation, in [0, 1).
    split_seed: the seed of the stratified train/validation split, an int >= 0.

  Returns:
    ``(arrays, num_classes, image_shape)``: ``arrays`` maps ``"train"``, ``"validation"`` and
    ``"test"`` to ``{"image": uint8 [n, H, W, C], "label": int32 [n]}``; ``test`` is TFDS's test
    split, untouched.

  Raises:
    ValueError: for an unknown ``name`` or a bad fraction or seed.
    DatasetNotFoundError: if the dataset is not prepared under ``data_dir`` (the message says how
      to prepare it).
  """
  if name not in TFDS_DATASETS:
    raise ValueError(f"name must be one of {sorted(TFDS_DATASETS)}, got {name!r}")
  validation_fraction = splits.check_fraction("validation_fraction", validation_fraction)
  tfds_name, train_split, test_split = TFDS_DATASETS[name]
  data_dir = None if data_dir is None else os.fspath(data_dir)
  train_src = _open_source(tfds_name, train_split, data_dir)
  test_src = _open_source(tfds_name, test_split, data_dir)
  num_classes, image_shape = _builder_info(tfds_name, data_dir)
  full = read_source(train_src, image_shape)
  test = read_source(test_src, image_shape)
  kept, held = splits.stratified_split(full["label"], validation_fraction, seed=split_seed)
  arrays = {
      "train": {k: v[kept] for k, v in full.items()},
      "validation": {k: v[held] for k, v in full.items()},
      "test": test,
  }
  return arrays, num_classes, image_shape
