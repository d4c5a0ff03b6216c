"""The robust generalisation gap per epoch, from a run's ``metrics.jsonl``.

Robust overfitting (Rice et al. 2020) and AWP (Wu et al. 2020, Figure 1(d)) track the difference
between the robust accuracy on the training data and on held-out data over the epochs: it widens as
training continues, and AWP keeps it small.

Where the numbers come from (records of :mod:`robust_jax.training.loop`):

* held-out robust accuracy: the ``"eval"`` records of ``split`` (``"validation"``: PGD in eval mode
  after every epoch, the model-selection attack);
* training robust accuracy, by ``train_source``:

  - ``"co_guard"``: the ``"co_guard"`` records' ``train_pgd_acc``, PGD in eval mode on a fixed
    training batch after every epoch (written when ``config.co_guard`` is on): measured like the
    held-out number, so the gap is unbiased;
  - ``"train"``: the ``"train"`` records' ``adv_acc``, the accuracy on the training attack's
    examples averaged over the epoch while the weights moved, in train mode, at the weights the
    gradient was taken at (``w + v`` under AWP/SAM, which lowers it) and against the method's own
    attack (weaker for Dynamic AT, FAT, CAT): a running estimate, not a clean measurement;
  - ``"auto"`` (default): ``"co_guard"`` when those records exist, else ``"train"``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Sequence, Union

from robust_jax import metrics as metrics_lib

Records = Union[str, Sequence[Mapping[str, Any]]]


def _records(records_or_path: Records):
  if isinstance(records_or_path, (str, os.PathLike)):
    return metrics_lib.read(os.fspath(records_or_path))
  return list(records_or_path)


def robust_generalization_gap(records_or_path: Records, *, split: str = "validation",
                              train_source: str = "auto") -> Dict[str, Any]:
  """Per-epoch training and held-out robust accuracy and their difference.

  Args:
    records_or_path: records of :func:`robust_jax.metrics.read`, a ``metrics.jsonl`` or a workdir.
    split: the held-out ``"eval"`` split with per-epoch records (``"validation"``).
    train_source: ``"auto"``, ``"co_guard"`` or ``"train"`` (see the module doc).

  Returns:
    ``{"epochs", "train_robust_acc", "eval_robust_acc", "gap", "train_clean_acc",
    "eval_clean_acc"}`` (lists over the epochs present in both sources; 0-based epochs; gap is
    train minus eval) plus ``"split"``, ``"train_source"`` (the one used) and ``"best_epoch"``
    (highest held-out robust accuracy, None if no epoch).

  Raises:
    ValueError: for an unknown ``train_source``, or if ``"co_guard"`` is asked for but absent.
  """
  if train_source not in ("auto", "co_guard", "train"):
    raise ValueError(f"train_source must be 'auto', 'co_guard' or 'train', got {train_source!r}")
  records = _records(records_or_path)
  co = {int(r["epoch"]): r for r in records if r.get("kind") == "co_guard" and "epoch" in r}
  if train_source == "co_guard" and not co:
    raise ValueError("no 'co_guard' records: train with config.co_guard on, or use 'train'")
  source = train_source if train_source != "auto" else ("co_guard" if co else "train")
  train = {int(r["epoch"]): r for r in records if r.get("kind") == "train" and "epoch" in r}
  held = {int(r["epoch"]): r for r in records
          if r.get("kind") == "eval" and r.get("split") == split and "epoch" in r}
  if source == "co_guard":
    train_acc = {e: r["train_pgd_acc"] for e, r in co.items()}
  else:
    train_acc = {e: r["adv_acc"] for e, r in train.items() if "adv_acc" in r}
  epochs = sorted(set(train_acc) & set(held))
  out = {
      "epochs": epochs,
      "train_robust_acc": [float(train_acc[e]) for e in epochs],
      "eval_robust_acc": [float(held[e]["robust_acc"]) for e in epochs],
      "train_clean_acc": [float(train[e].get("clean_acc", float("nan"))) if e in train
                          else float("nan") for e in epochs],
      "eval_clean_acc": [float(held[e].get("clean_acc", float("nan"))) for e in epochs],
      "split": split,
      "train_source": source,
  }
  out["gap"] = [t - v for t, v in zip(out["train_robust_acc"], out["eval_robust_acc"])]
  out["best_epoch"] = (max(epochs, key=lambda e: held[e]["robust_acc"]) if epochs else None)
  return out
