"""The CIFAR augmentation of the adversarial-training papers: pad-4 random crop and horizontal flip.

``transforms.RandomCrop(32, padding=4)`` + ``transforms.RandomHorizontalFlip()`` of the PyTorch
reference code (Madry et al. 2018; Zhang et al. 2019, TRADES; Rice et al. 2020): each image is
zero-padded by ``pad`` pixels on every side, a window of the original size is cut at a uniformly random
offset (dy, dx) in {0, ..., 2 * pad}^2, and the window is mirrored left-right with probability 1/2.
Offset (pad, pad) without a flip is the identity.

Everything is numpy and per example, driven by an explicit ``np.random.Generator``. Sampling
(:func:`sample_crop_flip`) is separate from applying (:func:`apply_crop_flip`), so that the pipeline
can draw the parameters of a whole global batch and let each host apply its own slice: the union over
hosts is then exactly the single-host batch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class CropFlipParams(NamedTuple):
  """Per-example augmentation parameters.

  Attributes:
    offsets: int64 [N, 2], the (dy, dx) of each crop window in the padded image, in [0, 2 * pad].
    flips: bool [N], whether each window is mirrored left-right.
  """
  offsets: np.ndarray
  flips: np.ndarray


def _check_pad(pad: int) -> int:
  if int(pad) != pad or pad < 0:
    raise ValueError(f"pad must be an int >= 0, got {pad!r}")
  return int(pad)


def sample_crop_flip(rng: np.random.Generator, num: int, *, pad: int = 4) -> CropFlipParams:
  """Draws crop offsets and flips for ``num`` examples.

  Args:
    rng: the generator to draw from (consumed).
    num: the number of examples, >= 0.
    pad: the zero padding on every side, an int >= 0.

  Returns:
    :class:`CropFlipParams` with offsets uniform in {0..2*pad}^2 and flips Bernoulli(1/2).
  """
  pad = _check_pad(pad)
  if int(num) != num or num < 0:
    raise ValueError(f"num must be an int >= 0, got {num!r}")
  offsets = rng.integers(0, 2 * pad + 1, size=(int(num), 2), dtype=np.int64)
  flips = rng.random(int(num)) < 0.5
  return CropFlipParams(offsets=offsets, flips=flips)


def apply_crop_flip(images: np.ndarray, params: CropFlipParams, *, pad: int = 4) -> np.ndarray:
  """Applies given crops and flips (pure).

  Args:
    images: [N, H, W, C] of any dtype (uint8 or float32 in [0, 1]).
    params: :class:`CropFlipParams` for N examples.
    pad: the zero padding the offsets refer to.

  Returns:
    The augmented images, with the shape and dtype of ``images``; padded pixels are 0.

  Raises:
    ValueError: on a shape mismatch or offsets outside [0, 2 * pad].
  """
  pad = _check_pad(pad)
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
  n, h, w, _ = images.shape
  offsets = np.asarray(params.offsets)
  flips = np.asarray(params.flips, bool)
  if offsets.shape != (n, 2) or flips.shape != (n,):
    raise ValueError(
        f"params must hold offsets [{n}, 2] and flips [{n}], got {offsets.shape} and {flips.shape}")
  if offsets.size and (offsets.min() < 0 or offsets.max() > 2 * pad):
    raise ValueError(f"params.offsets must be in [0, {2 * pad}] for pad={pad}")
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  rows = offsets[:, :1] + np.arange(h)[None, :]                       # [N, H]
  cols = np.where(flips[:, None], np.arange(w)[::-1][None, :], np.arange(w)[None, :])
  cols = offsets[:, 1:] + cols                                        # [N, W]
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_crop_flip(images: np.ndarray, rng: np.random.Generator, *, pad: int = 4) -> np.ndarray:
  """Pad-``pad`` random crop + random horizontal flip, independently per example.

  Args:
    images: [N, H, W, C], uint8 or float32 in [0, 1].
    rng: the generator to draw the parameters from.
    pad: the zero padding on every side (4 in the papers).

  Returns:
    Augmented images with the shape, dtype and value range of ``images``.
  """
  images = np.asarray(images)
  return apply_crop_flip(images, sample_crop_flip(rng, images.shape[0], pad=pad), pad=pad)
