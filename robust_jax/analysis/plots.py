"""Figures of the analyses: each writes a PNG and, next to it, the numbers behind it as JSON.

Matplotlib is used through :class:`matplotlib.figure.Figure` and the Agg canvas only (no pyplot, no
global backend state), so the functions are safe in scripts, tests and notebooks alike; a notebook
shows the written PNG with ``IPython.display.Image(path)``.

Every ``plot_*`` function takes the numbers (not a model), writes ``out_png`` and
``out_png`` with the suffix ``.json`` (:func:`json_path`), and returns the JSON data.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def json_path(out_png: str) -> str:
  """``dir/name.png -> dir/name.json``."""
  return os.path.splitext(os.fspath(out_png))[0] + ".json"


def to_jsonable(obj: Any) -> Any:
  """Numpy and JAX arrays and scalars to lists and Python numbers, recursively (NaN kept)."""
  if isinstance(obj, Mapping):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if hasattr(obj, "tolist") and hasattr(obj, "dtype"):
    return np.asarray(obj).tolist()
  if isinstance(obj, (np.floating, np.integer, np.bool_)):
    return obj.item()
  return obj


def new_figure(*, nrows: int = 1, ncols: int = 1, width: float = 5.0,
               height: float = 3.6) -> Figure:
  """A figure with an Agg canvas and ``nrows * ncols`` axes (``fig.axes``, row-major)."""
  fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
  FigureCanvasAgg(fig)
  fig.subplots(nrows, ncols, squeeze=False)
  return fig


def save_figure(fig: Figure, out_png: str, data: Any, *, dpi: int = 110) -> tuple[str, str]:
  """Writes ``fig`` to ``out_png`` and ``data`` to the JSON next to it (directories created).

  Returns:
    ``(png_path, json_path)``.
  """
  out_png = os.fspath(out_png)
  os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
  fig.savefig(out_png, dpi=dpi)
  return out_png, save_json(data, json_path(out_png))


def save_json(data: Any, path: str) -> str:
  """Writes ``data`` (arrays converted, NaN written as ``NaN``) to ``path``; returns the path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(to_jsonable(data), f, indent=1)
  return path


def plot_landscape_1d(alphas, curves: Mapping[str, Any], out_png: str, *,
                      ylabel: str = "adversarial loss", accuracies: Optional[Mapping] = None,
                      title: str = "Weight loss landscape (filter-normalised direction)"
                      ) -> Dict[str, Any]:
  """1-D weight landscapes g(alpha) = L(w + alpha d) of one or several models on one axis.

  Args:
    alphas: [A] step sizes along the direction.
    curves: ``label -> [A]`` losses (e.g. ``{"AT": ..., "AT-AWP": ...}``, as AWP's Figure 1).
    out_png: the PNG; the JSON goes next to it.
    ylabel: the y label.
    accuracies: optional ``label -> [A]`` robust accuracies, drawn on a second panel.
    title: the figure title.

  Returns:
    ``{"alphas": ..., "curves": ..., "accuracies": ...}``.
  """
  fig = new_figure(ncols=2 if accuracies else 1)
  ax = fig.axes[0]
  for label, c in curves.items():
    ax.plot(np.asarray(alphas), np.asarray(c), marker=".", label=label)
  ax.set_xlabel("alpha")
  ax.set_ylabel(ylabel)
  ax.legend(fontsize=8)
  if accuracies:
    ax2 = fig.axes[1]
    for label, c in accuracies.items():
      ax2.plot(np.asarray(alphas), np.asarray(c), marker=".", label=label)
    ax2.set_xlabel("alpha")
    ax2.set_ylabel("robust accuracy")
  fig.suptitle(title)
  data = {"alphas": alphas, "curves": curves, "accuracies": accuracies or {}}
  save_figure(fig, out_png, data)
  return to_jsonable(data)


def plot_landscape_2d(alphas, betas, grid, out_png: str, *, label: str = "adversarial loss",
                      title: str = "Weight loss landscape (2-D, filter-normalised)",
                      levels: int = 20) -> Dict[str, Any]:
  """Contours of a 2-D weight landscape L(w + alpha d1 + beta d2).

  Args:
    alphas: [A] along d1 (x axis).
    betas: [B] along d2 (y axis).
    grid: [A, B] values.
    out_png: the PNG; the JSON goes next to it.
    label: colour-bar label.
    title: the figure title.
    levels: number of contour levels.

  Returns:
    ``{"alphas", "betas", "grid"}``.
  """
  grid = np.asarray(grid, np.float64)
  fig = new_figure(width=5.2, height=4.4)
  ax = fig.axes[0]
  a, b = np.meshgrid(np.asarray(alphas), np.asarray(betas), indexing="ij")
  finite = np.isfinite(grid)
  if finite.any() and np.ptp(grid[finite]) > 0:
    cs = ax.contourf(a, b, grid, levels=levels, cmap="viridis")
    ax.contour(a, b, grid, levels=levels, colors="k", linewidths=0.3)
    fig.colorbar(cs, ax=ax, label=label)
  else:
    ax.pcolormesh(a, b, grid, shading="auto")
  ax.plot([0], [0], "r*", ms=8)
  ax.set_xlabel("alpha (d1)")
  ax.set_ylabel("beta (d2)")
  ax.set_title(title)
  data = {"alphas": alphas, "betas": betas, "grid": grid}
  save_figure(fig, out_png, data)
  return to_jsonable(data)


def plot_hessian_spectrum(eigenvalues: Mapping[str, Any], out_png: str, *,
                          title: str = "Top Hessian eigenvalues of the adversarial loss"
                          ) -> Dict[str, Any]:
  """Bar chart of top-k Hessian eigenvalues, one group of bars per model (Liu et al. 2020, Fig. 4).

  Args:
    eigenvalues: ``label -> [k]`` eigenvalues, largest first.
    out_png: the PNG; the JSON goes next to it.
    title: the figure title.

  Returns:
    ``{"eigenvalues": {label: [k]}}``.
  """
  fig = new_figure()
  ax = fig.axes[0]
  n = len(eigenvalues)
  width = 0.8 / max(n, 1)
  for j, (label, ev) in enumerate(eigenvalues.items()):
    ev = np.asarray(ev, np.float64)
    ax.bar(np.arange(1, len(ev) + 1) + (j - (n - 1) / 2) * width, ev, width=width, label=label)
  ax.set_xlabel("rank")
  ax.set_ylabel("eigenvalue")
  ax.set_title(title)
  ax.legend(fontsize=8)
  data = {"eigenvalues": eigenvalues}
  save_figure(fig, out_png, data)
  return to_jsonable(data)


def plot_similarity(results: Mapping[str, Mapping[str, Any]], out_png: str, *,
                    title: str = "Cosine of perturbations at theta + a v and theta - a v"
                    ) -> Dict[str, Any]:
  """Average cosine similarity against a, one curve per direction (Liu et al. 2020, Tables 1-2).

  Args:
    results: ``direction name -> {"alphas": [A], "cosine": [A], ...}`` (the output of
      :func:`robust_jax.analysis.similarity.perturbation_similarity`).
    out_png: the PNG; the JSON goes next to it.
    title: the figure title.

  Returns:
    The results as JSON data.
  """
  fig = new_figure(ncols=2)
  ax, ax2 = fig.axes
  for name, r in results.items():
    ax.plot(r["alphas"], r["cosine"], marker="o", label=name)
    if "robust_error" in r:
      ax2.plot(r["alphas"], r["robust_error"], marker="o", label=name)
  ax.set_xlabel("a")
  ax.set_ylabel("mean cosine")
  ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.05)
  ax.legend(fontsize=8)
  ax2.set_xlabel("a")
  ax2.set_ylabel("robust error at theta + a v")
  fig.suptitle(title)
  save_figure(fig, out_png, results)
  return to_jsonable(results)


def plot_robust_gap(gaps: Mapping[str, Mapping[str, Sequence[float]]], out_png: str, *,
                    title: str = "Robust generalisation gap") -> Dict[str, Any]:
  """Train and validation robust accuracy per epoch and their gap, per run (AWP's Figure 1(d)).

  Args:
    gaps: ``run name -> robust_generalization_gap(records)`` (:mod:`robust_jax.analysis.gap`).
    out_png: the PNG; the JSON goes next to it.
    title: the figure title.

  Returns:
    The data as JSON.
  """
  fig = new_figure(ncols=2)
  ax, ax2 = fig.axes
  for name, g in gaps.items():
    ep = np.asarray(g["epochs"]) + 1
    source = g.get("train_source", "?")
    line, = ax.plot(ep, g["train_robust_acc"], label=f"{name} train ({source})")
    ax.plot(ep, g["eval_robust_acc"], ls="--", color=line.get_color(), label=f"{name} {g['split']}")
    ax2.plot(ep, g["gap"], color=line.get_color(), label=name)
  ax.set_xlabel("epoch")
  ax.set_ylabel("robust accuracy")
  ax.legend(fontsize=7)
  ax2.set_xlabel("epoch")
  ax2.set_ylabel("train - eval robust accuracy")
  ax2.axhline(0.0, color="k", lw=0.5)
  ax2.legend(fontsize=7)
  fig.suptitle(title)
  save_figure(fig, out_png, gaps)
  return to_jsonable(gaps)
