"""Deterministic stratified splits of a labelled array (shared by every dataset source).

A split is a pure function of the labels, the fraction and a ``split_seed``: the same inputs always give
the same indices, on every host and in every run, independently of the training seed. Each class gives
up (almost exactly) the same fraction of its examples; the per-class quotas are rounded by the largest
remainder so that the held-out part has exactly ``round(fraction * n)`` examples.
"""

from __future__ import annotations

import numpy as np


def check_fraction(name: str, fraction: float) -> float:
  """Returns ``fraction`` as a float, or raises ValueError unless ``0 <= fraction < 1``."""
  try:
    value = float(fraction)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a number in [0, 1), got {fraction!r}") from None
  if not 0.0 <= value < 1.0:
    raise ValueError(f"{name} must be in [0, 1), got {fraction!r}")
  return value


def stratified_split(
    labels: np.ndarray, fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Splits indices into a kept part and a held-out part with the class proportions of ``labels``.

  Args:
    labels: integer class labels [N].
    fraction: the held-out fraction, in [0, 1).
    seed: the split seed, an int >= 0 (independent of any training seed).

  Returns:
    ``(kept, held_out)``: sorted int64 index arrays into ``labels``, disjoint, together
    ``arange(N)``; ``len(held_out) == round(fraction * N)``.

  Raises:
    ValueError: if ``labels`` is not 1-D, ``fraction`` is outside [0, 1) or ``seed`` is negative.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D [N], got shape {labels.shape}")
  fraction = check_fraction("fraction", fraction)
  if int(seed) < 0:
    raise ValueError(f"seed must be an int >= 0, got {seed!r}")
  n = labels.shape[0]
  classes, counts = np.unique(labels, return_counts=True)
  exact = fraction * counts
  quota = np.floor(exact).astype(np.int64)
  # Largest remainder: hand the leftover examples to the classes with the largest fractional parts
  # (ties to the smaller class label), so that the total is exactly round(fraction * n).
  leftover = int(round(fraction * n)) - int(quota.sum())
  if leftover > 0:
    order = np.lexsort((classes, -(exact - quota)))
    quota[order[:leftover]] += 1
  rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0x5A17,)))
  held = []
  for c, q in zip(classes, quota):
    members = np.flatnonzero(labels == c)
    held.append(rng.permutation(members)[:q])
  held_out = np.sort(np.concatenate(held)) if held else np.zeros((0,), np.int64)
  mask = np.ones((n,), bool)
  mask[held_out] = False
  return np.flatnonzero(mask).astype(np.int64), held_out.astype(np.int64)


def train_validation_test(images: np.ndarray, labels: np.ndarray, *, validation_fraction: float,
                          test_fraction: float, split_seed: int) -> dict[str, dict[str, np.ndarray]]:
  """The embedded datasets' split: ``test_fraction`` of all examples is the test set, then
  ``validation_fraction`` of the rest the validation set, both stratified and seeded by
  ``split_seed`` only (the validation split by ``split_seed + 1``).

  Args:
    images: [N, ...] examples; labels: int [N].
    validation_fraction, test_fraction: in [0, 1).
    split_seed: an int >= 0.

  Returns:
    ``{"train": arrays, "validation": arrays, "test": arrays}``, each ``{"image", "label"}``;
    disjoint, together all N examples.
  """
  rest, test = stratified_split(labels, test_fraction, seed=split_seed)
  train, val = stratified_split(labels[rest], validation_fraction, seed=split_seed + 1)
  train, val = rest[train], rest[val]
  return {
      name: {"image": images[idx], "label": labels[idx]}
      for name, idx in (("train", train), ("validation", val), ("test", test))
  }

