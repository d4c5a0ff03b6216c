"""The reproduction archive (:mod:`robust_jax.experiments.archive`): what it keeps and what it never
overwrites."""

import os

from robust_jax.experiments import archive


def _write(root, rel, text):
  path = os.path.join(root, rel)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def _read(root, rel):
  with open(os.path.join(root, rel)) as f:
    return f.read()


def test_save_keeps_finished_runs_without_checkpoints_and_restore_never_overwrites(tmp_path):
  out, arch, other = (str(tmp_path / d) for d in ("out", "archive", "other"))
  done, running = "runs/pgd_at/seed0", "runs/trades/seed0"
  for name in archive.RUN_FILES:
    _write(out, f"{done}/{name}", f"{name} of the finished run")
  _write(out, f"{done}/checkpoints/best/params", "weights")
  _write(out, f"{running}/metrics.jsonl", "a run still training")
  _write(out, "co_runs/fgsm_03/seed0/reproduce_summary.json", "co summary")
  _write(out, "catastrophic.json", "co results")

  saved = archive.save(out, arch)
  assert sorted(saved) == sorted([f"{done}/{n}" for n in archive.RUN_FILES]
                                 + ["co_runs/fgsm_03/seed0/reproduce_summary.json",
                                    "catastrophic.json"])
  assert not os.path.exists(os.path.join(arch, done, "checkpoints"))
  assert not os.path.exists(os.path.join(arch, running))  # unfinished: nothing to keep yet

  # Into a new directory: everything comes back.
  assert sorted(archive.restore(arch, other)) == sorted(saved)
  assert _read(other, f"{done}/metrics.jsonl") == "metrics.jsonl of the finished run"

  # Into a directory where the run is being trained again (checkpoints, no summary yet), or where
  # a file exists: nothing of it is replaced.
  again = str(tmp_path / "again")
  _write(again, f"{done}/checkpoints/latest/params", "weights")
  _write(again, f"{done}/metrics.jsonl", "this machine's records")
  _write(again, "catastrophic.json", "this machine's study")
  restored = archive.restore(arch, again)
  assert not any(p.startswith(done) for p in restored)
  assert _read(again, f"{done}/metrics.jsonl") == "this machine's records"
  assert _read(again, "catastrophic.json") == "this machine's study"
  assert "co_runs/fgsm_03/seed0/reproduce_summary.json" in restored
  assert archive.restore(str(tmp_path / "missing"), again) == []
