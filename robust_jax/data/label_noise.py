"""Symmetric and pair-flip label noise on the training split, seeded once and recorded.

Zhu, Zhang, Han, Liu, Niu, Yang, Kankanhalli and Sugiyama, "Understanding the interaction of
adversarial training with noisy labels", arXiv 2102.03482 (2021). The paper has no public code; the
noise types are those of the same group's ``zjfheart/NoiLIn`` (``NoiLIn_utils/utils.py``:
``noisify_multiclass_symmetric``, ``noisify_pairflip``, drawn by ``multiclass_noisify``):

* ``"symmetric"``: a corrupted label is drawn uniformly from the C - 1 *other* classes;
* ``"pair"``: a corrupted label ``y`` becomes ``(y + 1) mod C``.

Difference from NoiLIn: NoiLIn draws every label independently from the transition matrix's row
(the realised rate varies around ``rate``); here exactly ``round(rate * n)`` examples, chosen by a
seeded permutation, are corrupted, so the rate is exact and the noisy set is a pure function of
``(labels, kind, rate, seed)``. Every method trained with the same seed sees the same noisy set
(the paper's pitfall: seed the corruption once and store it).

:func:`corrupt_labels` returns the noisy labels and a boolean mask of the corrupted examples;
:func:`apply_to_split` adds them to a split as ``"label"`` (the noisy labels, what training sees),
``"clean_label"`` (the originals) and ``"noisy"`` (the mask); :func:`robust_jax.data.pipeline.
load_dataset` applies it to the training split when ``label_noise != "none"`` (training configs:
``config.label_noise``, ``config.label_noise_rate``, ``config.label_noise_seed``). Validation and
test splits keep their clean labels.

Recipe (the digits with 20% symmetric noise, PGD-AT)::

  python -m launch.train --config=launch/configs/digits.py --workdir=runs/digits_noisy20 \\
      --config.label_noise=symmetric --config.label_noise_rate=0.2

Example:
  >>> import numpy as np
  >>> y = np.arange(10, dtype=np.int32).repeat(10)
  >>> noisy, mask = corrupt_labels(y, num_classes=10, kind="pair", rate=0.2, seed=0)
  >>> int(mask.sum()), bool(np.all(noisy[mask] == (y[mask] + 1) % 10))
  (20, True)
  >>> bool(np.all(noisy[~mask] == y[~mask]))
  True
"""

from __future__ import annotations

from typing import Mapping, Tuple

import numpy as np

KINDS = ("none", "symmetric", "pair")


def check(kind: str, rate: float, seed: int) -> None:
  """Raises ValueError naming the bad argument (``label_noise``, ``label_noise_rate`` or ``_seed``)."""
  if kind not in KINDS:
    raise ValueError(f"label_noise must be one of {KINDS}, got {kind!r}")
  if not 0.0 <= float(rate) < 1.0:
    raise ValueError(f"label_noise_rate must be in [0, 1), got {rate!r}")
  if isinstance(seed, bool) or int(seed) != seed or seed < 0:
    raise ValueError(f"label_noise_seed must be an int >= 0, got {seed!r}")


def corrupt_labels(labels: np.ndarray, *, num_classes: int, kind: str, rate: float,
                   seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """Corrupts exactly ``round(rate * n)`` labels, deterministically in ``seed``.

  Args:
    labels: int [n] in [0, num_classes).
    num_classes: C >= 2.
    kind: ``"none"``, ``"symmetric"`` (uniform over the other C - 1 classes) or ``"pair"``
      (y -> (y + 1) mod C).
    rate: the fraction of corrupted labels, in [0, 1).
    seed: int >= 0; the chosen examples and the symmetric draws depend only on it.

  Returns:
    ``(noisy_labels int32 [n], noisy bool [n])``: ``noisy_labels[i] != labels[i]`` exactly where
    ``noisy[i]``.

  Raises:
    ValueError: on a bad argument.
  """
  check(kind, rate, seed)
  labels = np.asarray(labels)
  if labels.ndim != 1 or num_classes < 2 or labels.size and (
      labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels must be int [n] in [0, {num_classes}) with num_classes >= 2")
  n = labels.shape[0]
  noisy = np.zeros(n, bool)
  out = labels.astype(np.int32).copy()
  if kind == "none" or rate == 0.0:
    return out, noisy
  rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0x4E015E,)))
  chosen = rng.permutation(n)[:int(round(rate * n))]
  noisy[chosen] = True
  if kind == "pair":
    out[chosen] = (out[chosen] + 1) % num_classes
  else:  # an offset in 1..C-1 is a uniform draw over the other classes
    out[chosen] = (out[chosen] + rng.integers(1, num_classes, size=chosen.size)) % num_classes
  return out, noisy


def apply_to_split(arrays: Mapping[str, np.ndarray], *, num_classes: int, kind: str, rate: float,
                   seed: int) -> dict:
  """A copy of ``arrays`` with noisy ``"label"``, the original ``"clean_label"`` and ``"noisy"``.

  ``kind="none"`` returns the split unchanged (no extra keys), so clean runs are exactly as before.
  """
  check(kind, rate, seed)
  if kind == "none":
    return dict(arrays)
  noisy_labels, mask = corrupt_labels(arrays["label"], num_classes=num_classes, kind=kind,
                                      rate=rate, seed=seed)
  return {**arrays, "label": noisy_labels,
          "clean_label": np.asarray(arrays["label"], np.int32), "noisy": mask}


def noisy_indices(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
  """The indices of the corrupted examples of a split (empty if it carries no noise record)."""
  if "noisy" not in arrays:
    return np.zeros(0, np.int64)
  return np.flatnonzero(arrays["noisy"])


__all__ = ["KINDS", "apply_to_split", "check", "corrupt_labels", "noisy_indices"]
