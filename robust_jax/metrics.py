"""One metrics writer: JSON lines (one record per epoch and per evaluation) and TensorBoard events.

Only process 0 writes. TensorBoard files are written with tensorboardX, which needs no TensorFlow.

Never back in time: a resumed run opens the writer with ``resume_step`` (the step of the checkpoint
it restored). Records of ``metrics.jsonl`` with a larger step were written by the work that is
about to be redone (a kill between the records of an epoch and its checkpoint) and are dropped, so
every step appears once and the steps of each kind never decrease; TensorBoard gets the same
instruction (``purge_step``: events after the checkpoint's step are discarded when the logs are
read). A last line cut short by a kill is dropped too.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Dict, List, Mapping, Optional

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
  """Appends records to ``workdir/metrics.jsonl`` and scalars to TensorBoard under ``workdir/tb``.

  Args:
    workdir: the training workdir.
    enabled: False writes nothing (process 0 writes, the others never do).
    resume_step: the step of the checkpoint the run resumes from (0 for a fresh run): records with
      a larger step are dropped (:func:`truncate`) and TensorBoard purges the events after it.
      None (the default) appends to whatever is there.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: Optional[int] = None):
    self.enabled = enabled and jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.dropped: List[Dict[str, Any]] = []
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      tb_dir = os.path.join(workdir, "tb")
      purge = None
      if resume_step is not None:
        self.dropped = truncate(self.path, int(resume_step))
        purge = int(resume_step) + 1 if os.path.isdir(tb_dir) else None
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(tb_dir, purge_step=purge)

  def write(self, kind: str, step: int, values: Mapping[str, Any]) -> Dict[str, Any]:
    """Writes one record ``{"kind", "step", "time", **values}``; scalars also go to TensorBoard."""
    record = {"kind": kind, "step": int(step), "time": time.time()}
    record.update({k: _plain(v) for k, v in values.items()})
    if not self.enabled:
      return record
    try:
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")
    except OSError as e:
      raise OSError(e.errno, f"{e.strerror} while appending a {kind!r} record to {self.path} "
                    "(the checkpoints are unaffected; free space and rerun to resume)") from None
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


def _parse(lines) -> List[Dict[str, Any]]:
  """The records of ``lines``; a last line cut short by a kill (not valid JSON) is skipped."""
  out = []
  lines = [line for line in lines if line.strip()]
  for i, line in enumerate(lines):
    try:
      out.append(json.loads(line))
    except ValueError:
      if i != len(lines) - 1:
        raise
  return out


def read(workdir_or_path: str) -> List[Dict[str, Any]]:
  """All records of a metrics file, in order."""
  path = workdir_or_path
  if os.path.isdir(path):
    path = os.path.join(path, "metrics.jsonl")
  with open(path) as f:
    return _parse(f)


def truncate(path: str, step: int) -> List[Dict[str, Any]]:
  """Drops the records with a step above ``step`` from the metrics file ``path`` (atomically).

  Args:
    path: a ``metrics.jsonl`` (nothing happens if it does not exist).
    step: the step of the checkpoint a run resumes from.

  Returns:
    The dropped records (empty if the file was already consistent, and then it is not rewritten).
  """
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.readlines()
  records = _parse(lines)
  keep = [r for r in records if int(r.get("step", 0)) <= step]
  dropped = [r for r in records if int(r.get("step", 0)) > step]
  if not dropped and len(records) == sum(1 for line in lines if line.strip()):
    return []
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in keep)
  os.replace(tmp, path)
  return dropped
