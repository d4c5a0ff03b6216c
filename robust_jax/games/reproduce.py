"""The four GANs of lecture 003 on MNIST-5k, and the lecture's claims judged from one run.

:func:`run` trains ``vanilla``, ``wgan``, ``wgan_gp`` and ``sngan`` with their published settings
(:data:`robust_jax.games.config.KINDS`) at the CPU size of ``for_kind(..., cpu=True)``, all scored
by one shared feature classifier, then writes ``<out_dir>/gans.md``: a table (Frechet distance in
the classifier's feature space, not Inception FID; mode coverage; held-out Wasserstein estimate;
step time), the final sample grid of each kind, a plot of the FD and Wasserstein-estimate curves,
and two verdicts:

* **"Weight clipping is worse than the gradient penalty"** (Gulrajani et al.; the lecture quotes
  "a clearly terrible way to enforce a Lipschitz constraint"): holds if WGAN-GP ends with a lower
  FD than WGAN with clipping.
* **"GP and SN stabilise training"**: measured by the *setback* of each FD curve, the sum of its
  increases between consecutive evaluations divided by its total decrease from the start to its
  minimum (0 for a curve that only falls; 1 when setbacks undo as much as was gained). Holds if
  both WGAN-GP and SN-GAN have a smaller setback than the vanilla GAN and a final FD no worse than
  it.

Every run is resumable (``robust_jax.games.loop``): rerunning :func:`run` on the same ``out_dir``
continues unfinished kinds and only re-reads finished ones. The verdicts are about this budget
(hundreds of generator steps, narrow networks, one seed), which the report says next to them.

Example (a tiny budget on the digits, a minute on CPU)::

  from robust_jax.games import reproduce
  reproduce.run("/tmp/gans", dataset="digits", num_steps=40)
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

import numpy as np

from robust_jax.games import config as config_lib
from robust_jax.games import loop

KIND_ORDER = ("vanilla", "wgan", "wgan_gp", "sngan")


def setback(fd: Sequence[float]) -> float:
  """Sum of the FD increases between evaluations / (FD at the start - minimum FD); inf if it never
  fell below its start.

  >>> setback([10.0, 8.0, 6.0]), setback([10.0, 6.0, 8.0, 5.0])
  (0.0, 0.4)
  """
  fd = np.asarray(fd, np.float64)
  gained = fd[0] - fd.min()
  rises = np.clip(np.diff(fd), 0, None).sum()
  return float(rises / gained) if gained > 0 else float("inf")


def _plot(curves: Dict[str, Any], path: str) -> str:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
  for kind, c in curves.items():
    axes[0].plot(c["eval_steps"], c["fd"], marker="o", ms=3, label=kind)
    axes[1].plot(c["eval_steps"], c["w_heldout"], marker="o", ms=3, label=kind)
    axes[2].plot(c["train_steps"], c["w_train"], label=kind)
  axes[0].axhline(next(iter(curves.values()))["floor"], color="gray", ls=":", label="real vs real")
  axes[0].set(title="Frechet distance (classifier features)", xlabel="generator step", yscale="log")
  axes[1].set(title="critic's W estimate, held-out real vs samples", xlabel="generator step")
  axes[2].set(title="critic's W estimate, training batches", xlabel="generator step")
  for ax in axes:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _curves(workdir: str) -> Dict[str, Any]:
  evals, train = loop.history(workdir), loop.history(workdir, "train")
  return {"eval_steps": [r["step"] for r in evals], "fd": [r["fd"] for r in evals],
          "w_heldout": [r.get("wasserstein_heldout") for r in evals], "floor": evals[-1]["fd_floor"],
          "train_steps": [r["step"] for r in train],
          "w_train": [r["wasserstein_estimate"] for r in train], "last": evals[-1],
          "step_time_s": float(np.median([r["step_time_s"] for r in train]))}


def verdicts(curves: Dict[str, Dict[str, Any]]) -> Dict[str, str]:
  """The two claims of the module docstring, judged from the curves (a sentence each)."""
  out = {}
  fd = {k: c["fd"][-1] for k, c in curves.items()}
  sb = {k: setback(c["fd"]) for k, c in curves.items()}
  if {"wgan", "wgan_gp"} <= set(curves):
    holds = fd["wgan_gp"] < fd["wgan"]
    out["clipping_worse_than_gp"] = (
        f"{'holds' if holds else 'does not hold'}: final FD {fd['wgan_gp']:.1f} with the gradient "
        f"penalty against {fd['wgan']:.1f} with weight clipping.")
  if {"vanilla", "wgan_gp", "sngan"} <= set(curves):
    stable = all(sb[k] < sb["vanilla"] and fd[k] <= fd["vanilla"] for k in ("wgan_gp", "sngan"))
    word = "holds" if stable else "does not hold"
    if len(set(sb.values())) == 1:
      word = "not decided by this run (every FD curve has the same setback)"
    out["gp_and_sn_stabilise"] = (
        f"{word}: FD setback (sum of rises / total fall) "
        + ", ".join(f"{k} {sb[k]:.2f}" for k in curves)
        + "; final FD " + ", ".join(f"{k} {fd[k]:.1f}" for k in curves) + ".")
  return out


def run(out_dir: str, *, kinds: Sequence[str] = KIND_ORDER, dataset: str = "mnist5k",
        num_steps: Optional[int] = None, seed: int = 0, progress: bool = True) -> Dict[str, Any]:
  """Trains ``kinds`` into ``out_dir/<kind>`` (resuming) and writes ``out_dir/gans.md``.

  Args:
    out_dir: the output directory (also holds the shared ``classifier/``).
    kinds: rows of :data:`robust_jax.games.config.KINDS`.
    dataset: ``"mnist5k"`` (the reproduction) or ``"digits"`` (a quick check).
    num_steps: generator steps for every kind (None: each kind's CPU budget, about equal compute:
      2,400 for the vanilla GAN's single discriminator step, 800 for the n_critic = 5 kinds).
    seed: the seed of every run and of the classifier.
    progress: print the runs' progress lines.

  Returns:
    ``{"curves": {kind: ...}, "verdicts": {...}, "report": path}``.
  """
  os.makedirs(out_dir, exist_ok=True)
  curves, grids = {}, {}
  for kind in kinds:
    c = config_lib.for_kind(kind, dataset=dataset, cpu=True)
    c.seed, c.progress = seed, progress
    c.classifier_workdir = os.path.join(out_dir, "classifier")
    if num_steps:
      c.num_steps = num_steps
      c.eval_every_steps = c.checkpoint_every_steps = max(num_steps // 10, 1)
      c.log_every_steps = max(num_steps // 20, 1)
    workdir = os.path.join(out_dir, kind)
    loop.train_and_evaluate(c, workdir)
    curves[kind] = _curves(workdir)
    grids[kind] = os.path.join(kind, curves[kind]["last"]["grid"])
  plot = os.path.relpath(_plot(curves, os.path.join(out_dir, "curves.png")), out_dir)
  judged = verdicts(curves)
  lines = [
      "## GANs (lecture 003): vanilla, WGAN, WGAN-GP, SN-GAN", "",
      f"One run per kind on `{dataset}`, seed {seed}, the published optimiser settings at the CPU "
      "size of `launch/configs/gan.py:<kind>,cpu` (`python -m launch.reproduce_gans`). FD is the "
      "Frechet distance in the feature space of this library's classifier trained on the same data "
      "(not Inception FID), between generated samples and the test split at equal n; `floor` is "
      "real-train vs real-test. Modes: classes receiving at least half their uniform share.", "",
      "| kind | generator steps | critic steps | ms / step | final FD | best FD | floor | modes | "
      "KL to uniform | held-out W estimate |", "|---|---|---|---|---|---|---|---|---|---|"]
  for kind, c in curves.items():
    last = c["last"]
    w = last.get("wasserstein_heldout")
    lines.append(
        f"| {kind} | {last['step']} | {last['step'] * config_lib.KINDS[kind]['n_critic']} | "
        f"{c['step_time_s'] * 1e3:.0f} | {c['fd'][-1]:.1f} | {min(c['fd']):.1f} | {c['floor']:.1f} "
        f"| {last['modes']} | {last['kl_to_uniform']:.2f} | {w:.3f} |")
  lines += ["", f"Curves: ![FD and Wasserstein estimates]({plot})", "",
            "Final samples: " + ", ".join(f"{k}: ![{k}]({p})" for k, p in grids.items()), "",
            "The lecture's claims, judged on this budget (one seed, "
            + ", ".join(f"{k} {c['last']['step']}" for k, c in curves.items())
            + " generator steps, networks of width "
            f"{config_lib.for_kind(kinds[0], dataset=dataset, cpu=True).dim}; the held-out W "
            "estimates of different critics are not comparable across kinds, only along a "
            "curve):", ""]
  names = {"clipping_worse_than_gp": "Weight clipping is worse than the gradient penalty",
           "gp_and_sn_stabilise": "GP and SN stabilise training"}
  lines += [f"* **{names[k]}**: {v}" for k, v in judged.items()]
  report = os.path.join(out_dir, "gans.md")
  with open(report, "w") as f:
    f.write("\n".join(lines) + "\n")
  return {"curves": curves, "verdicts": judged, "report": report}


__all__ = ["KIND_ORDER", "run", "setback", "verdicts"]
