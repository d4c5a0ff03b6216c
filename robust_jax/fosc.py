"""First-order stationary condition (FOSC), in closed form.

Wang et al., "On the Convergence and Robustness of Adversarial Training", ICML 2019, eq. (3):

    c(x^k) = max_{x in X} <x - x^k, g>   with X = {x : ||x - x^0|| <= eps},  g = grad_x f(x^k)
           = eps * ||g||_*  -  <x^k - x^0, g>

where ||.||_* is the dual norm: the l1 norm for the linf ball, the l2 norm for the l2 ball. FOSC is
>= 0 whenever x^k lies in the ball around x^0, and 0 exactly when x^k is a first-order stationary
point of the linearised inner maximisation (for linf: every coordinate sits at x^0 + eps * sign(g)).

Conventions (all of robust_jax): images are float32 NHWC in [0, 1]; FOSC is per example.

Paper versus official code: the paper measures from the natural example x^0. The official Keras code
(``YisenWang/dynamic_adv_training``, ``pgd_attack.py``) measures from the point after the random start
while still projecting around x^0, so its FOSC can be negative (||x^k - x_start|| can reach 2 eps).
The attacks offer both through ``fosc_reference="natural"`` (default, the paper) or ``"start"``
(the official code). Like the paper and the code, the closed form ignores the [0, 1] box.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

NORMS = ("linf", "l2")


def _flat(a: jax.Array) -> jax.Array:
  return a.reshape(a.shape[0], -1)


def fosc(x_k: jax.Array, x_0: jax.Array, grad: jax.Array, *, eps, norm: str = "linf") -> jax.Array:
  """Closed-form FOSC of Wang et al. (2019), per example.

  Args:
    x_k: the current iterate, shape [B, ...].
    x_0: the centre of the ball (the natural example in the paper), shape [B, ...].
    grad: the gradient of each example's own loss at ``x_k`` (not averaged over the batch),
      shape [B, ...].
    eps: the radius of the ball, a scalar >= 0 (may be traced).
    norm: ``"linf"`` (dual norm l1) or ``"l2"`` (dual norm l2).

  Returns:
    float32 [B]: ``eps * ||g||_* - <x_k - x_0, g>``.

  Raises:
    ValueError: for an unknown ``norm`` or mismatching shapes.

  Example:
    >>> import jax.numpy as jnp
    >>> x0 = jnp.zeros((1, 2)); g = jnp.array([[1., -2.]])
    >>> float(fosc(x0 + jnp.array([[0.1, -0.1]]), x0, g, eps=0.1)[0])  # a vertex: converged
    0.0
  """
  if norm not in NORMS:
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
  if not (x_k.shape == x_0.shape == grad.shape):
    raise ValueError(
        f"x_k, x_0 and grad must have one shape, got {x_k.shape}, {x_0.shape}, {grad.shape}")
  g = _flat(grad)
  if norm == "linf":
    dual = jnp.sum(jnp.abs(g), axis=1)
  else:
    dual = jnp.sqrt(jnp.sum(g * g, axis=1))
  return eps * dual - jnp.sum(_flat(x_k - x_0) * g, axis=1)


# Distributions on fixed bins (Wang et al. 2019, Figures 2 and 5): the per-step histogram of the
# training step and the per-epoch summary of the loop live here, next to FOSC, so that training/
# needs nothing from analysis/. Plots and distributions over datasets: analysis.fosc_tracking.

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
