"""One metrics writer: JSON lines (one record per epoch and per evaluation) and TensorBoard events.

Only process 0 writes. TensorBoard files are written with tensorboardX, which needs no TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Dict, Mapping

import jax
import numpy as np


def _plain(v: Any):
  if isinstance(v, (np.ndarray, jax.Array)):
    v = np.asarray(v)
    return v.item() if v.ndim == 0 else v.tolist()
  if isinstance(v, (np.floating, np.integer)):
    return v.item()
  return v


class MetricWriter:
  """Appends records to ``workdir/metrics.jsonl`` and scalars to TensorBoard under ``workdir/tb``."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled and jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tb"))

  def write(self, kind: str, step: int, values: Mapping[str, Any]) -> Dict[str, Any]:
    """Writes one record ``{"kind", "step", "time", **values}``; scalars also go to TensorBoard."""
    record = {"kind": kind, "step": int(step), "time": time.time()}
    record.update({k: _plain(v) for k, v in values.items()})
    if not self.enabled:
      return record
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for k, v in record.items():
      if k in ("kind", "step", "time"):
        continue
      if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        self._tb.add_scalar(f"{kind}/{k}", v, int(step))
    return record

  def flush(self):
    if self._tb is not None:
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


def read(workdir_or_path: str):
  """All records of a metrics file, in order."""
  path = workdir_or_path
  if os.path.isdir(path):
    path = os.path.join(path, "metrics.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
