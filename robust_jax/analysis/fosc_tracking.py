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
from robust_jax import metrics as metrics_lib

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
HIST_KEY = "fosc_hist"
EDGES_KEY = "fosc_hist_edges"


def fosc_bin_edges(*, kind: str = "log", low: float = 1e-4, high: float = 1e2,
                   bins_per_decade: int = 10, num_bins: int = 30) -> np.ndarray:
  """Fixed bin edges for FOSC histograms (chosen once, independent of the data).

  Args:
    kind: ``"log"``: ``[0, low)`` then ``bins_per_decade`` log-spaced bins per decade from ``low``
      to ``high``; ``"linear"``: ``num_bins`` equal bins over ``[0, high]``.
    low: the first positive edge of ``"log"`` (> 0).
    high: the last edge (> low).
    bins_per_decade: resolution of ``"log"``.
    num_bins: number of bins of ``"linear"``.

  Returns:
    float64 [num_bins + 1], increasing, starting at 0.

  Raises:
    ValueError: on a bad kind or range.

  Example:
    >>> fosc_bin_edges(kind="linear", high=1.0, num_bins=4).tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
  """
  if kind == "linear":
    if not (high > 0 and num_bins >= 1):
      raise ValueError(f"linear bins need high > 0 and num_bins >= 1, got {high}, {num_bins}")
    return np.linspace(0.0, high, num_bins + 1)
  if kind == "log":
    if not (0 < low < high and bins_per_decade >= 1):
      raise ValueError(f"log bins need 0 < low < high and bins_per_decade >= 1, got low={low}, "
                       f"high={high}, bins_per_decade={bins_per_decade}")
    n = int(round(np.log10(high / low) * bins_per_decade))
    return np.concatenate([[0.0], np.logspace(np.log10(low), np.log10(high), n + 1)])
  raise ValueError(f"kind must be 'log' or 'linear', got {kind!r}")


DEFAULT_EDGES = fosc_bin_edges()
"""The training loop's bins: [0, 1e-4), then 10 per decade up to 1e2 (61 bins)."""


def fosc_histogram(fosc: jax.Array, edges: Optional[np.ndarray] = None, *,
                   mask: Optional[jax.Array] = None) -> jax.Array:
  """Counts per fixed bin of per-example FOSC values (pure, jittable, shape-static).

  Bin i holds ``edges[i] <= f < edges[i + 1]``; values below ``edges[1]`` (negative ones included)
  go to bin 0 and values at or above ``edges[-2]`` to the last bin, so nothing is dropped.

  Args:
    fosc: float [B], e.g. ``AttackResult.fosc``.
    edges: [num_bins + 1] increasing bin edges (a numpy constant); default :data:`DEFAULT_EDGES`.
    mask: optional bool [B]; only True examples are counted (padding of an evaluation batch).

  Returns:
    float32 [num_bins] counts; they sum to B (to ``sum(mask)`` with a mask).

  Example:
    >>> import jax.numpy as jnp
    >>> fosc_histogram(jnp.array([-1., 0.1, 0.6, 5.]), [0., 0.5, 1.]).tolist()
    [2.0, 2.0]
  """
  edges = DEFAULT_EDGES if edges is None else np.asarray(edges, np.float64)
  fosc = jnp.asarray(fosc, jnp.float32).reshape(-1)
  inner = jnp.asarray(edges[1:-1], jnp.float32)
  idx = jnp.sum(fosc[:, None] >= inner[None, :], axis=1)
  weights = jnp.ones_like(fosc) if mask is None else jnp.asarray(mask, jnp.float32).reshape(-1)
  return jnp.zeros((len(edges) - 1,), jnp.float32).at[idx].add(weights)


def fosc_quantiles(fosc: jax.Array, quantiles: Sequence[float] = QUANTILES) -> jax.Array:
  """Exact quantiles of FOSC values (linear interpolation, numpy's default method).

  Args:
    fosc: float [N].
    quantiles: levels in [0, 1].

  Returns:
    float32 [len(quantiles)], equal to ``np.quantile(fosc, quantiles)``.
  """
  return jnp.quantile(jnp.asarray(fosc, jnp.float32).reshape(-1), jnp.asarray(quantiles))


def quantiles_from_histogram(counts, edges=None,
                             quantiles: Sequence[float] = QUANTILES) -> np.ndarray:
  """Quantiles estimated from binned counts (the empirical CDF, linear inside each bin).

  Exact to within the width of the bin that holds the quantile; values clipped into the first or
  last bin are treated as lying inside it.

  Args:
    counts: [num_bins] non-negative counts (summed over steps, e.g.).
    edges: the [num_bins + 1] edges they were counted on; default :data:`DEFAULT_EDGES`.
    quantiles: levels in [0, 1].

  Returns:
    float64 [len(quantiles)]; NaN when the counts are all zero.
  """
  edges = DEFAULT_EDGES if edges is None else np.asarray(edges, np.float64)
  counts = np.asarray(counts, np.float64).reshape(-1)
  if counts.shape[0] != len(edges) - 1:
    raise ValueError(f"{counts.shape[0]} counts need {counts.shape[0] + 1} edges, got {len(edges)}")
  total = counts.sum()
  if total <= 0:
    return np.full(len(quantiles), np.nan)
  cdf = np.concatenate([[0.0], np.cumsum(counts) / total])
  out = []
  for q in quantiles:
    i = int(np.clip(np.searchsorted(cdf, q, side="left"), 1, len(counts)))
    lo, hi = cdf[i - 1], cdf[i]
    frac = 0.0 if hi <= lo else (q - lo) / (hi - lo)
    out.append(edges[i - 1] + np.clip(frac, 0.0, 1.0) * (edges[i] - edges[i - 1]))
  return np.asarray(out)


def quantile_key(q: float) -> str:
  """The metrics key of quantile ``q``: 0.1 -> ``"fosc_q10"``, 0.25 -> ``"fosc_q25"``."""
  return f"fosc_q{int(round(100 * q)):02d}"


def summarize_fosc(fosc, edges=None, quantiles: Sequence[float] = QUANTILES) -> Dict[str, Any]:
  """Everything about one batch (or epoch) of FOSC values, as plain Python numbers and lists.

  Returns:
    ``{"fosc_hist": counts, "fosc_hist_edges": edges, "fosc_q10": ..., "fosc_mean": ..., "n": N}``
    with exact quantiles.
  """
  edges = DEFAULT_EDGES if edges is None else np.asarray(edges, np.float64)
  values = np.asarray(fosc, np.float64).reshape(-1)
  out = {HIST_KEY: np.asarray(fosc_histogram(values, edges)).tolist(), EDGES_KEY: edges.tolist(),
         "fosc_mean": float(values.mean()) if values.size else float("nan"), "n": int(values.size)}
  qs = np.quantile(values, quantiles) if values.size else np.full(len(quantiles), np.nan)
  out.update({quantile_key(q): float(v) for q, v in zip(quantiles, qs)})
  return out


def epoch_summary(counts, edges=None, quantiles: Sequence[float] = QUANTILES) -> Dict[str, Any]:
  """The per-epoch entries of a ``"train"`` record from summed histogram counts.

  Args:
    counts: [num_bins] counts summed over the epoch's steps.
    edges: their edges; default :data:`DEFAULT_EDGES`.
    quantiles: levels to estimate (:func:`quantiles_from_histogram`).

  Returns:
    ``{"fosc_hist": [...], "fosc_hist_edges": [...], "fosc_q10": ..., ...}`` (JSON-ready).
  """
  edges = DEFAULT_EDGES if edges is None else np.asarray(edges, np.float64)
  counts = np.asarray(counts, np.float64).reshape(-1)
  out = {HIST_KEY: counts.tolist(), EDGES_KEY: edges.tolist()}
  qs = quantiles_from_histogram(counts, edges, quantiles)
  out.update({quantile_key(q): float(v) for q, v in zip(quantiles, qs)})
  return out


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
    logits_fn: ``x -> logits`` [B, C] (e.g. from :func:`robust_jax.training.loop.load_classifier`).
    batches: dicts ``{"image": float32 [B, H, W, C] in [0, 1], "label": int [B]}``, optionally with
      a bool ``"mask"`` of real examples (:func:`robust_jax.data.pipeline.eval_batches`).
    eps, step_size, num_steps, norm, loss, start, stop, fosc_reference: as
      :func:`robust_jax.attacks.pgd` (``stop=attacks.fosc_stop(c)`` gives Dynamic AT's attack).
    key: PRNG key of the random starts; batch i uses ``fold_in(key, i)``. Default ``key(0)``.

  Returns:
    float32 [N]: per-example FOSC at the returned adversarial examples, in batch order.
  """
  key = jax.random.key(0) if key is None else key
  out = []
  for i, batch in enumerate(batches):
    x = jnp.asarray(batch["image"], jnp.float32)
    y = jnp.asarray(batch["label"], jnp.int32)
    res = attacks.pgd(logits_fn, x, y, eps=eps, step_size=step_size, num_steps=num_steps,
                      norm=norm, loss=loss, start=start, key=jax.random.fold_in(key, i),
                      stop=stop, fosc_reference=fosc_reference)
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
