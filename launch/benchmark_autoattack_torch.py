r"""The official AutoAttack (``fra31/auto-attack``, PyTorch) on TRADES' SmallCNN, for the benchmark.

Optional and outside the core install: it needs ``torch``, ``numpy`` and the ``autoattack`` package
of ``fra31/auto-attack`` (never ``jax`` or ``robust_jax``), in its own virtual environment::

  /work/torchvenv/bin/pip install --no-deps <a checkout of fra31/auto-attack at a392200>

``launch.benchmark --aa_official_python=/work/torchvenv/bin/python --aa_official_workdir=DIR``
writes the trained SmallCNN's weights (converted to this script's ``SmallCNN`` state_dict), the
images (NCHW) and the labels to an ``.npz`` and runs this script with ``--npz=...``; it prints one
JSON line per evaluation: the total seconds, the seconds after each stage (the official log's
"total time"), the robust accuracy after each stage, and the per-point robustness.
"""

import argparse
import io
import json
import re
import time
from contextlib import redirect_stdout

import numpy as np
import torch

from benchmark_torch import SmallCNN  # pylint: disable=import-error  (same folder)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--npz", required=True)
  parser.add_argument("--eps", type=float, required=True)
  parser.add_argument("--version", default="standard")
  parser.add_argument("--bs", type=int, default=0, help="batch size (0: all points at once)")
  parser.add_argument("--rounds", type=int, default=1)
  parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
  args = parser.parse_args()
  from autoattack import AutoAttack  # pylint: disable=import-outside-toplevel
  if args.threads:
    torch.set_num_threads(args.threads)
  data = np.load(args.npz)
  model = SmallCNN()
  model.load_state_dict({k[len("sd/"):]: torch.from_numpy(data[k]) for k in data.files
                         if k.startswith("sd/")})
  model.eval()
  x = torch.from_numpy(data["x"])
  y = torch.from_numpy(data["y"]).long()
  for r in range(args.rounds):
    adversary = AutoAttack(model, norm="Linf", eps=args.eps, version=args.version, device="cpu",
                           seed=r)
    log = io.StringIO()
    t0 = time.perf_counter()
    with redirect_stdout(log):
      x_adv = adversary.run_standard_evaluation(x, y, bs=args.bs or len(x))
    total = time.perf_counter() - t0
    with torch.no_grad():
      robust = (model(x_adv).argmax(1) == y).numpy()
    text = log.getvalue()
    stages = [(m.group(1), float(m.group(2)) / 100, float(m.group(3))) for m in re.finditer(
        r"robust accuracy after ([\w-]+): ([\d.]+)% \(total time ([\d.]+) s\)", text)]
    clean = re.search(r"initial accuracy: ([\d.]+)%", text)
    print(json.dumps(dict(
        round=r, seconds=total, clean_accuracy=float(clean.group(1)) / 100 if clean else None,
        stages=[s[0] for s in stages], accuracy=[s[1] for s in stages],
        stage_total_s=[s[2] for s in stages], robust=robust.astype(int).tolist(),
        torch=torch.__version__, threads=torch.get_num_threads())), flush=True)


if __name__ == "__main__":
  main()
