"""FOSC distributions: per-batch histograms on fixed bins, quantiles, and their plots over epochs.

The first-order stationary condition (FOSC, :mod:`robust_jax.fosc`) of each adversarial example says
how well the inner maximisation converged (0: a stationary point of the linearised problem). Wang et
al. (2019) plot its distribution over the training epochs (their Figures 2 and 5: standard PGD-AT,
curriculum AT and Dynamic AT): Dynamic AT's distributions are concentrated at every stage and move
down as the criterion c_t decreases. This module produces the numbers and the figure.

Fixed bins: the bin edges are chosen once (:func:`fosc_bin_edges`) and never depend on the data, so
per-step histograms add up to per-epoch histograms and epochs and runs are comparable. The default
:data:`DEFAULT_EDGES` is scale-free: a first bin [0, 1e-4) for converged examples, then ten
log-spaced bins per decade up to 1e2 (FOSC is ``eps * ||g||_1 - <x - x0, g>`` and its scale moves
with eps, the input dimension and the loss' gradient, which a fixed linear range would not follow).
Values below the first edge (negative FOSC of ``fosc_reference="start"``) are counted in the first
bin and values above the last edge in the last bin, so the counts always sum to the number of
examples.

Two kinds of quantiles: :func:`fosc_quantiles` is exact on the values (``jnp.quantile``, linear
interpolation, as numpy's default); :func:`quantiles_from_histogram` estimates them from summed
counts (linear interpolation of the empirical CDF inside a bin, exact to one bin width), which is
all a training loop keeps of an epoch.

This module imports matplotlib only when plotting, so the training step can use it cheaply.

Training integration: the train step adds ``fosc_histogram(res.fosc)`` to its metrics (float32
counts on :data:`DEFAULT_EDGES`), the loop sums them over the epoch and writes
:func:`epoch_summary` (``fosc_hist``, ``fosc_hist_edges``, ``fosc_q10`` ... ``fosc_q90``) into the
``"train"`` record of ``metrics.jsonl``; :func:`plot_fosc_over_epochs` reads those records.

References:
  Wang, Ma, Bailey, Yi, Zhou, Gu, "On the Convergence and Robustness of Adversarial Training",
  ICML 2019 (FOSC, eq. 3; Dynamic AT, Algorithm 1; FOSC distributions, Figures 2 and 5).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import attacks
from robust_jax.fosc import (  # pylint: disable=unused-import
    DEFAULT_EDGES, EDGES_KEY, HIST_KEY, QUANTILES, epoch_summary, fosc_bin_edges, fosc_histogram,
    fosc_quantiles, quantile_key, quantiles_from_histogram, summarize_fosc)
from robust_jax import metrics as metrics_lib

# The fixed-bin histogram and its summaries live in robust_jax.fosc (used by the training step).
def fosc_distribution(
    logits_fn: Callable[[jax.Array], jax.Array],
    batches: Iterable[Mapping[str, Any]],
    *,
    eps,
    step_size,
    num_steps,
    norm: str = "linf",
    loss: str = "ce",
    start: str = "uniform",
    key: Optional[jax.Array] = None,
    stop: Any = None,
    fosc_reference: str = "natural",
) -> np.ndarray:
  """FOSC of PGD adversarial examples on given data (one value per real example).

  Args:
    logits_fn: ``x -> logits`` [B, C] (e.g. from :func:`robust_jax.training.restore.load_classifier`).
    batches: dicts ``{"image": float32 [B, H, W, C] in [0, 1], "label": int [B]}``, optionally with
      a bool ``"mask"`` of real examples (:func:`robust_jax.data.pipeline.eval_batches`).
    eps, step_size, num_steps, norm, loss, start, stop, fosc_reference: as
      :func:`robust_jax.attacks.pgd` (``stop=attacks.fosc_stop(c)`` gives Dynamic AT's attack).
    key: PRNG key of the random starts; batch i uses ``fold_in(key, i)``. Default ``key(0)``.

  Returns:
    float32 [N]: per-example FOSC at the returned adversarial examples, in batch order.
  """
  key = jax.random.key(0) if key is None else key
  attack = attacks.make("pgd", eps=eps, step_size=step_size, num_steps=num_steps, norm=norm,
                        loss=loss, start=start, stop=stop, fosc_reference=fosc_reference)
  out = []
  for i, batch in enumerate(batches):
    x = jnp.asarray(batch["image"], jnp.float32)
    y = jnp.asarray(batch["label"], jnp.int32)
    res = attack(logits_fn, x, y, jax.random.fold_in(key, i))
    f = np.asarray(res.fosc)
    if "mask" in batch:
      f = f[np.asarray(batch["mask"], bool)]
    out.append(f)
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def has_fosc_histograms(records_or_path: Union[str, Sequence[Mapping[str, Any]]]) -> bool:
  """Whether a metrics file (or its records) holds per-epoch FOSC histograms."""
  records = _records(records_or_path)
  return any(r.get("kind") == "train" and HIST_KEY in r for r in records)


def _records(records_or_path):
  if isinstance(records_or_path, (str, os.PathLike)):
    return metrics_lib.read(os.fspath(records_or_path))
  return list(records_or_path)


def epoch_histograms(records_or_path) -> Dict[str, Any]:
  """The per-epoch FOSC histograms of one run's ``"train"`` records.

  Args:
    records_or_path: the records of :func:`robust_jax.metrics.read`, a ``metrics.jsonl`` path or a
      workdir.

  Returns:
    ``{"epochs": [E], "counts": [E, num_bins], "edges": [num_bins + 1], "quantiles": {key: [E]}}``
    (lists), plus ``"fosc_c": [E]`` (Dynamic AT's criterion, epoch mean) when the records have it.
    The last record of an epoch wins (a resumed run may repeat one).

  Raises:
    ValueError: if no ``"train"`` record has a ``fosc_hist``.
  """
  by_epoch = {}
  edges = None
  for r in _records(records_or_path):
    if r.get("kind") == "train" and HIST_KEY in r:
      by_epoch[int(r.get("epoch", len(by_epoch)))] = r
      edges = r.get(EDGES_KEY, edges)
  if not by_epoch:
    raise ValueError("no 'train' record holds a 'fosc_hist': train with FOSC tracking on "
                     "(robust_jax.training.step reports per-step histograms)")
  edges = DEFAULT_EDGES.tolist() if edges is None else edges
  epochs = sorted(by_epoch)
  counts = [by_epoch[e][HIST_KEY] for e in epochs]
  qkeys = [quantile_key(q) for q in QUANTILES]
  quantiles = {k: [by_epoch[e].get(k, float("nan")) for e in epochs] for k in qkeys}
  out = {"epochs": epochs, "counts": counts, "edges": list(edges), "quantiles": quantiles}
  if all("fosc_c" in by_epoch[e] for e in epochs):
    out["fosc_c"] = [by_epoch[e]["fosc_c"] for e in epochs]  # Dynamic AT's criterion c_t
  return out


def plot_fosc_over_epochs(runs, out_png: str, *, max_violins: int = 12,
                          title: str = "FOSC of the training adversarial examples"
                          ) -> Dict[str, Any]:
  """Draws FOSC distributions over the epochs, one panel of violins per run, as Wang et al. (2019).

  Each epoch (at most ``max_violins`` of them, evenly spaced, the last included) gets a violin whose
  width follows the epoch's histogram on the fixed bins; a last panel overlays every run's median
  with its 25-75% band (and Dynamic AT's c_t, dotted, when logged) on a linear axis, so runs
  (PGD-AT, Dynamic AT, ...) are compared on one axis. The violins use a symlog axis (linear below
  the first positive bin edge).

  Args:
    runs: one run (records, a ``metrics.jsonl`` path or a workdir) or a mapping ``name -> run``.
    out_png: the PNG to write; the numbers behind it go to the same path with ``.json``.
    max_violins: the most epochs drawn as violins per run.
    title: the figure title.

  Returns:
    The JSON data: ``{run name: epoch_histograms(run)}``.
  """
  from robust_jax.analysis import plots  # pylint: disable=g-import-not-at-top (matplotlib: lazy)
  if not isinstance(runs, Mapping):
    runs = {"run": runs}
  data = {name: epoch_histograms(run) for name, run in runs.items()}
  fig = plots.new_figure(ncols=len(data) + 1, width=4.2)
  axes = fig.axes
  for ax, (name, d) in zip(axes, data.items()):
    _violins(ax, d, max_violins)
    ax.set_title(name)
    ax.set_xlabel("epoch")
  axes[0].set_ylabel("FOSC")
  ax = axes[-1]
  for name, d in data.items():
    q = d["quantiles"]
    ep = np.asarray(d["epochs"]) + 1
    line, = ax.plot(ep, q[quantile_key(0.5)], marker="o", ms=3, label=f"{name} median")
    ax.fill_between(ep, q[quantile_key(0.25)], q[quantile_key(0.75)], alpha=0.2,
                    color=line.get_color())
    if d.get("fosc_c"):
      ax.plot(ep, d["fosc_c"], ls=":", color=line.get_color(), label=f"{name} c_t")
  ax.set_xlabel("epoch")
  ax.set_title("median, 25-75%")
  ax.legend(fontsize=7)
  fig.suptitle(title)
  plots.save_figure(fig, out_png, data)
  return data


def _violins(ax, d, max_violins):
  edges = np.asarray(d["edges"], np.float64)
  counts = np.asarray(d["counts"], np.float64)
  epochs = np.asarray(d["epochs"])
  pick = np.linspace(0, len(epochs) - 1, min(max_violins, len(epochs)))
  pick = np.unique(pick.round().astype(int))
  spacing = max(1.0, (epochs[-1] - epochs[0] + 1) / max(len(pick), 1))
  for i in pick:
    c = counts[i]
    dens = c / max(c.max(), 1e-12)
    half = 0.45 * spacing * dens
    x0 = epochs[i] + 1
    y = np.repeat(edges, 2)[1:-1]
    w = np.repeat(half, 2)
    ax.fill_betweenx(y, x0 - w, x0 + w, alpha=0.6, linewidth=0.5)
    med = d["quantiles"][quantile_key(0.5)][i]
    ax.plot([x0 - 0.45 * spacing, x0 + 0.45 * spacing], [med, med], color="k", lw=0.8)
  ax.set_yscale("symlog", linthresh=float(edges[1]) if edges[1] > 0 else 1e-4)
  nonzero = np.nonzero(counts.sum(0))[0]
  if nonzero.size:
    ax.set_ylim(edges[nonzero[0]], edges[min(nonzero[-1] + 1, len(edges) - 1)])


def plot_fosc_distributions(values: Mapping[str, Any], out_png: str, *, edges=None,
                            title: str = "FOSC of PGD adversarial examples") -> Dict[str, Any]:
  """Histograms of FOSC values of several models (e.g. from :func:`fosc_distribution`) overlaid.

  Args:
    values: ``name -> float [N]`` FOSC values.
    out_png: the PNG to write; the numbers go to the ``.json`` next to it.
    edges: fixed bin edges; default :data:`DEFAULT_EDGES`.
    title: the figure title.

  Returns:
    The JSON data: ``{name: summarize_fosc(values)}``.
  """
  from robust_jax.analysis import plots  # pylint: disable=g-import-not-at-top (matplotlib: lazy)
  edges = DEFAULT_EDGES if edges is None else np.asarray(edges, np.float64)
  data = {name: summarize_fosc(v, edges) for name, v in values.items()}
  fig = plots.new_figure()
  ax = fig.axes[0]
  shown = np.concatenate([[edges[1] / 10 if edges[0] <= 0 else edges[0]], edges[1:]])
  for name, d in data.items():
    c = np.asarray(d[HIST_KEY])
    ax.stairs(c / max(c.sum(), 1), shown, label=f"{name} (median {d['fosc_q50']:.3g})")
  nonzero = np.nonzero(sum(np.asarray(d[HIST_KEY]) for d in data.values()))[0]
  if nonzero.size:
    ax.set_xlim(shown[max(nonzero[0] - 1, 0)], shown[min(nonzero[-1] + 2, len(shown) - 1)])
  ax.set_xscale("log")
  ax.set_xlabel("FOSC (first bin: < %.0e)" % edges[1])
  ax.set_ylabel("fraction of examples")
  ax.set_title(title)
  ax.legend(fontsize=8)
  plots.save_figure(fig, out_png, data)
  return data
