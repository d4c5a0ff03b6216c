"""AutoAttack ``standard``: robust_jax against the official code (``fra31/auto-attack``, PyTorch) on
the same trained SmallCNN, the same images and labels, on this machine.

What is compared: :func:`robust_jax.attacks.autoattack` (``version="standard"``, the official budgets:
APGD-CE 100 iterations, APGD-T 9 x 100, FAB-T 9 x 100, Square 5,000 queries) on a trained
``small_cnn`` checkpoint (``launch.train`` / ``launch.reproduce`` workdir), against
``autoattack.AutoAttack(model, norm="Linf", eps, version="standard").run_standard_evaluation`` on
TRADES' PyTorch SmallCNN carrying the same weights (:func:`smallcnn_state_dict`), the first ``n``
test images of the checkpoint's dataset, labels as given. The two sides alternate: JAX's first call
(which compiles every stage) is reported on its own, then ``rounds`` rounds of official, JAX. Reported
per side: the total seconds, the seconds per stage, the robust accuracy after each stage, and the
points on which the two verdicts differ (different random starts: they agree to about a point).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from typing import Any, Dict, List

import jax
import numpy as np

from robust_jax import attacks
from robust_jax.data import pipeline
from robust_jax.training import restore

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "launch", "benchmark_autoattack_torch.py")
OFFICIAL_LABEL = "AutoAttack standard: robust_jax / official fra31/auto-attack (PyTorch), same model"


def check_official_python(python: str) -> None:
  """Raises ValueError, before anything is measured, unless ``python`` is an executable file.

  >>> check_official_python("/no/such/python")  # doctest: +ELLIPSIS
  Traceback (most recent call last):
  ...
  ValueError: --aa_official_python: '/no/such/python' does not exist ...
  """
  if not os.path.exists(python):
    raise ValueError(f"--aa_official_python: {python!r} does not exist (a Python with torch and "
                     "numpy, and fra31/auto-attack installed: pip install --no-deps <checkout>)")
  if not (os.path.isfile(python) and os.access(python, os.X_OK)):
    raise ValueError(f"--aa_official_python: {python!r} is not an executable file")


def check_arguments(python: str, workdir: str, n: int) -> None:
  """Raises ValueError, before anything is measured, for a bad interpreter, a workdir that is not a
  directory, or ``n`` < 1 (each named by its flag)."""
  check_official_python(python)
  if not os.path.isdir(workdir):
    raise ValueError(f"--aa_official_workdir: {workdir!r} is not a directory (a trained small_cnn "
                     "workdir, e.g. launch.train --config=launch/configs/mnist5k.py:pgd_at,cpu)")
  if not isinstance(n, int) or n < 1:
    raise ValueError(f"--aa_official_n must be an integer >= 1, got {n!r}")


def smallcnn_state_dict(params: Dict[str, Any]) -> Dict[str, np.ndarray]:
  """The ``small_cnn`` parameters as the state_dict of TRADES' PyTorch SmallCNN
  (``launch/benchmark_torch.py``; ``yaodongyu/TRADES`` ``models/small_cnn.py``).

  Convolutions HWIO -> OIHW, dense kernels [in, out] -> [out, in]; fc1's input is the flattened
  4x4x64 map, NHWC order here and NCHW there, so its rows are permuted (h, w, c) -> (c, h, w).
  """
  sd = {}
  for i in range(1, 5):
    p = params[f"conv{i}"]
    sd[f"feature_extractor.conv{i}.weight"] = np.transpose(np.asarray(p["kernel"]), (3, 2, 0, 1))
    sd[f"feature_extractor.conv{i}.bias"] = np.asarray(p["bias"])
  fc1 = np.asarray(params["fc1"]["kernel"])  # [(h, w, c), 200]
  fc1 = fc1.reshape(4, 4, 64, -1).transpose(2, 0, 1, 3).reshape(1024, -1)
  sd["classifier.fc1.weight"] = fc1.T
  sd["classifier.fc1.bias"] = np.asarray(params["fc1"]["bias"])
  for name in ("fc2", "fc3"):
    sd[f"classifier.{name}.weight"] = np.asarray(params[name]["kernel"]).T
    sd[f"classifier.{name}.bias"] = np.asarray(params[name]["bias"])
  return {k: np.array(v, np.float32, order="C") for k, v in sd.items()}


def _jax_side(trained, x, y, eps, key_seed):
  logits_fn, _ = restore.as_classifier(trained)
  t0 = time.perf_counter()
  r = attacks.autoattack(logits_fn, x, y, eps=eps, key=jax.random.key(key_seed),
                         version="standard")
  total = time.perf_counter() - t0
  return dict(seconds=total, stages=list(r.attack_names[1:]),
              accuracy=[float(a) for a in np.asarray(r.robust_accuracy)[1:]],
              stage_s=[float(s) for s in np.asarray(r.seconds)[1:]],
              clean_accuracy=float(np.asarray(r.robust_accuracy)[0]),
              robust=np.asarray(r.robust).astype(int).tolist())


def official_comparison(python: str, workdir: str, *, n: int = 100, rounds: int = 1,
                        log=print) -> List[Dict[str, Any]]:
  """Times both AutoAttacks on the checkpoint in ``workdir`` (a ``small_cnn`` trained on a 28x28x1
  dataset); returns records (``kind="aa_official"`` per run, one ``kind="ratio"``).

  Raises:
    ValueError: if the checkpoint is not a ``small_cnn`` or ``n`` is not positive.
  """
  check_arguments(python, workdir, n)
  trained = restore.load_trained(workdir)
  if trained.config.model != "small_cnn":
    raise ValueError(f"--aa_official_workdir: the comparison needs a small_cnn checkpoint (the "
                     f"PyTorch side is TRADES' SmallCNN), got model {trained.config.model!r}")
  ds = pipeline.load_dataset(trained.config.dataset)
  x = np.asarray(ds.test["image"][:n], np.float32)
  y = np.asarray(ds.test["label"][:n], np.int32)
  eps = float(trained.config.eps)
  records = []
  with tempfile.TemporaryDirectory() as tmp:
    npz = os.path.join(tmp, "aa.npz")
    np.savez(npz, x=np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y=y,
             **{f"sd/{k}": v for k, v in smallcnn_state_dict(trained.params).items()})
    first = _jax_side(trained, x, y, eps, 0)
    records.append(dict(kind="aa_official", model="small_cnn", batch=n,
                        side="robust_jax, first call (compiles)", n=n,
                        eps=eps, **first))
    log(f"[aa_official] robust_jax first call {first['seconds']:.1f} s")
    for r in range(rounds):
      proc = subprocess.run([python, SCRIPT, f"--npz={npz}", f"--eps={eps}", "--rounds=1"],
                            capture_output=True, text=True, check=False)
      if proc.returncode:
        raise RuntimeError(f"the official AutoAttack failed:\n{proc.stderr[-3000:]}")
      off = json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])
      off["stage_s"] = list(np.diff([0.0] + off.pop("stage_total_s")))
      records.append(dict(kind="aa_official", model="small_cnn", batch=n,
                          side="official (PyTorch)", n=n, eps=eps, round=r,
                          **{k: v for k, v in off.items() if k != "round"}))
      log(f"[aa_official] official {off['seconds']:.1f} s")
      ours = _jax_side(trained, x, y, eps, r + 1)
      records.append(dict(kind="aa_official", model="small_cnn", batch=n, side="robust_jax", n=n,
                          eps=eps, round=r, **ours))
      log(f"[aa_official] robust_jax {ours['seconds']:.1f} s")
  off = [r for r in records if r["side"] == "official (PyTorch)"]
  ours = [r for r in records if r["side"] == "robust_jax"]
  value = statistics.median(a["seconds"] / b["seconds"] for a, b in zip(off, ours))
  records.append(dict(kind="ratio", name=OFFICIAL_LABEL, model="small_cnn", batch=n,
                      value=round(value, 3), ideal=">= 1.5", of="official seconds / robust_jax "
                      "seconds (warm; the first call with compilation is its own row)",
                      note=f"{workdir}", rounds=rounds,
                      per_round=[round(a["seconds"] / b["seconds"], 3) for a, b in zip(off, ours)]))
  return records
