"""A reproduction's results without its checkpoints: what a later machine needs to resume it.

A suite's output directory (``OUT``) holds checkpoints, TensorBoard files and logs: far too much to
keep in version control, and lost with the machine it ran on. The archive is the small part that
carries every number of the report: per finished run its ``metrics.jsonl`` (training, validation
and FOSC records), its cached evaluations (``reproduce_eval.json``), its training summary
(``reproduce_summary.json``) and, for the runs the flatness analysis measured, that measurement
(``reproduce_flatness.json``); and the suite's ``reproduction.json`` and ``catastrophic.json``.

:func:`save` copies them from ``OUT`` into the archive (after every finished run); :func:`restore`
copies them back into a fresh ``OUT`` (before a suite starts), never over a file ``OUT`` has. A
run restored this way is reported from its recorded numbers and not trained or evaluated again
(:func:`robust_jax.experiments.reproduce.run`, :func:`robust_jax.experiments.catastrophic.run`),
so a suite that is stopped, or whose machine is replaced, continues on another machine from the
archive, e.g. ``reproduction/mnist5k/`` committed beside the code.
"""

from __future__ import annotations

import os
import shutil
from typing import List

# Per run: the files kept. A run is archived once its summary is written (it finished training).
RUN_FILES = ("metrics.jsonl", "reproduce_eval.json", "reproduce_summary.json",
             "reproduce_flatness.json")
SUMMARY_FILE = "reproduce_summary.json"
# Per suite: the JSON written by the suite and by the catastrophic-overfitting study.
SUITE_FILES = ("reproduction.json", "catastrophic.json")
RUN_ROOTS = ("runs", "co_runs")


def _finished_runs(root: str) -> List[str]:
  """The run directories under ``root/runs`` and ``root/co_runs`` (``<method>/seed<k>``) that hold
  a training summary, relative to ``root``."""
  found = []
  for top in RUN_ROOTS:
    base = os.path.join(root, top)
    if not os.path.isdir(base):
      continue
    for method in sorted(os.listdir(base)):
      for seed in sorted(os.listdir(os.path.join(base, method))):
        rel = os.path.join(top, method, seed)
        if os.path.exists(os.path.join(root, rel, SUMMARY_FILE)):
          found.append(rel)
  return found


def _copy(src: str, dst: str, *, overwrite: bool) -> bool:
  """Copies one file (atomically: a killed copy leaves the old file or none); returns whether it
  copied."""
  if not os.path.exists(src) or (not overwrite and os.path.exists(dst)):
    return False
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  shutil.copyfile(src, dst + ".tmp")
  os.replace(dst + ".tmp", dst)
  return True


def _copy_results(src: str, dst: str, runs: List[str], *, overwrite: bool) -> List[str]:
  """Copies :data:`RUN_FILES` of ``runs`` and :data:`SUITE_FILES` from ``src`` to ``dst``; returns
  the paths copied, relative to both."""
  paths = [os.path.join(rel, name) for rel in runs for name in RUN_FILES] + list(SUITE_FILES)
  return [p for p in paths
          if _copy(os.path.join(src, p), os.path.join(dst, p), overwrite=overwrite)]


def save(out: str, archive: str) -> List[str]:
  """Copies the results of ``out``'s finished runs and its suite JSON into ``archive``
  (overwriting: ``out`` is the newer). Returns the paths copied, relative to ``archive``."""
  return _copy_results(out, archive, _finished_runs(out), overwrite=True)


def restore(archive: str, out: str) -> List[str]:
  """Copies ``archive`` into ``out`` where ``out`` has no such file (a file of ``out``, e.g. of a
  run trained here since, is never replaced; nor are the files of a run in progress here). Returns
  the paths copied, relative to ``out``."""
  if not os.path.isdir(archive):
    return []
  runs = [rel for rel in _finished_runs(archive)
          if os.path.exists(os.path.join(out, rel, SUMMARY_FILE))
          or not os.path.isdir(os.path.join(out, rel, "checkpoints"))]
  return _copy_results(archive, out, runs, overwrite=False)
