"""Training batches drawn from a class distribution (CFOL-AT's sampler), deterministic and resumable.

Every draw takes a class c ~ p and then an example uniformly, with replacement, among the training
examples of class c: the official ``ClassSampler.__iter__`` (LIONS-EPFL/class-focused-online-
learning-code, ``cfol/class_sampler.py``). An epoch has :func:`robust_jax.data.pipeline.steps_per_epoch`
batches (the official sampler makes N draws per epoch, cut into batches by the DataLoader).

The distribution may change from one batch to the next (CFOL's adversary updates it after every
step), so :func:`train_batches` calls ``class_probs()`` before each batch. The indices of step s are
a pure function of ``(seed, epoch, s, p)``: a run resumed at ``(epoch, start_step)`` with the
distribution restored from its checkpoint draws exactly the batches of an uninterrupted run.
Multi-host: every process draws the global batch and keeps its contiguous slice, as
:func:`robust_jax.data.pipeline.train_batches`; augmentation is that function's (per step).

Example:

>>> import numpy as np
>>> labels = np.array([0, 0, 1, 1, 1])
>>> idx = batch_indices(class_index(labels, 2), np.array([1.0, 0.0]), batch_size=4, seed=0,
...                     epoch=0, step=0)
>>> sorted(set(labels[idx].tolist()))  # every draw from class 0
[0]
"""

from __future__ import annotations

from typing import Callable, Iterator, List

import numpy as np

from robust_jax.data import augment as augment_lib
from robust_jax.data import pipeline

# The spawn-key tag of the sampler's stream, apart from the permutation (0) and augmentation (1)
# streams of robust_jax.data.pipeline.
_SAMPLER_STREAM = 2


def class_index(labels: np.ndarray, num_classes: int) -> List[np.ndarray]:
  """The indices of each class's examples, in order.

  Raises:
    ValueError: a label outside [0, num_classes), or a class without examples (the sampler could
      not draw it), named as ``config.cfol_num_classes``.
  """
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"config.cfol_num_classes={num_classes} must be the dataset's number of "
                     f"classes: the training labels span [{labels.min()}, {labels.max()}]")
  index = [np.flatnonzero(labels == c) for c in range(num_classes)]
  empty = [c for c, ix in enumerate(index) if ix.size == 0]
  if empty:
    raise ValueError(f"config.cfol_num_classes={num_classes} must be the dataset's number of "
                     f"classes: classes {empty} have no training example")
  return index


def _normalised(probs, num_classes: int) -> np.ndarray:
  p = np.asarray(probs, np.float64).reshape(-1)
  if p.shape != (num_classes,) or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
    raise ValueError(f"the class distribution must be {num_classes} finite probabilities >= 0, "
                     f"got {p}")
  return p / p.sum()


def batch_indices(index: List[np.ndarray], probs, *, batch_size: int, seed: int, epoch: int,
                  step: int) -> np.ndarray:
  """The training indices of one global batch: ``batch_size`` draws, class ~ p, example uniform in
  its class (with replacement); a pure function of ``(seed, epoch, step, probs)``.

  Args:
    index: :func:`class_index` of the training labels.
    probs: float [C], the class distribution (normalised here in float64).
    batch_size: the global batch size. seed, epoch, step: ints >= 0.

  Returns:
    int64 [batch_size].
  """
  p = _normalised(probs, len(index))
  rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(epoch, _SAMPLER_STREAM,
                                                                       step)))
  classes = rng.choice(len(index), size=batch_size, p=p)
  counts = np.array([ix.size for ix in index])
  within = rng.integers(0, counts[classes])
  return np.array([index[c][j] for c, j in zip(classes, within)], np.int64)


def train_batches(split_arrays, *, class_probs: Callable[[], np.ndarray], batch_size: int,
                  seed: int, epoch: int, start_step: int = 0, augment: str = "none",
                  process_index: int = 0, process_count: int = 1
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Yields one epoch of class-sampled training batches (this process's share).

  The arguments are those of :func:`robust_jax.data.pipeline.train_batches`, plus:

  Args:
    class_probs: called before each batch; returns the current class distribution, float [C]
      (CFOL: read from the train state after the previous step).

  Yields:
    ``{"image": float32 [b, H, W, C] in [0, 1], "label": int32 [b]}``,
    ``b = batch_size // process_count``, for the steps ``start_step .. steps_per_epoch - 1``.
  """
  # The pipeline's own checks (the same argument ranges), before the first batch.
  n = len(split_arrays["label"])
  pipeline.train_batches(split_arrays, batch_size=batch_size, seed=seed, epoch=epoch,
                         start_step=start_step, augment=augment, process_index=process_index,
                         process_count=process_count)
  num_steps = pipeline.steps_per_epoch(n, batch_size)
  probs = np.asarray(class_probs())
  index = class_index(split_arrays["label"], probs.shape[-1])
  return _batches(split_arrays, index, class_probs, probs, batch_size, seed, epoch, start_step,
                  num_steps, augment, process_index, process_count)


def _batches(arrays, index, class_probs, first_probs, batch_size, seed, epoch, start_step,
             num_steps, augment, process_index, process_count):
  images, labels = arrays["image"], arrays["label"]
  local = batch_size // process_count
  lo, hi = process_index * local, (process_index + 1) * local
  for step in range(start_step, num_steps):
    probs = first_probs if step == start_step else class_probs()
    idx = batch_indices(index, probs, batch_size=batch_size, seed=seed, epoch=epoch,
                        step=step)[lo:hi]
    x = np.asarray(images[idx])
    if augment == "crop_flip":
      params = augment_lib.sample_crop_flip(
          np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(epoch, 1, step))),
          batch_size, pad=pipeline.CROP_PAD)
      x = augment_lib.apply_crop_flip(
          x, augment_lib.CropFlipParams(params.offsets[lo:hi], params.flips[lo:hi]),
          pad=pipeline.CROP_PAD)
    yield {"image": pipeline.to_float(x), "label": np.asarray(labels[idx], np.int32)}
