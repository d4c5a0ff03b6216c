"""Seeing the min-max: FOSC distributions, weight loss landscapes, Hessian spectra, perturbation
similarity and the robust generalisation gap.

Modules:
  fosc_tracking  per-example FOSC: fixed-bin histograms, quantiles, distributions over epochs
                 (Wang et al. 2019); used by the training step, so it does not import matplotlib.
  adversarial    the adversarial loss as a function of the weights (examples regenerated, or fixed).
  landscape      filter-normalised directions and 1-D / 2-D weight landscapes (Li et al. 2018; AWP).
  hessian        top-k Hessian eigenpairs by power iteration with deflation (Liu et al. 2020).
  similarity     cosine of perturbations at theta +- a v (Liu et al. 2020, Tables 1-2).
  gap            train vs held-out robust accuracy per epoch from metrics.jsonl.
  label_noise    clean vs noisy-label fit per epoch under ST and AT; kappa as a noise detector (AUC).
  sammd          SAMMD: the semantic-aware MMD two-sample test of adversarial batches, its power.
  plots          every figure writes a PNG and the JSON of its numbers.
  reports        checkpoint in, PNG + JSON out: what ``launch/analyze.py`` and the notebooks call.

Submodules and the names below are imported on first use (PEP 562), so ``import
robust_jax.analysis.fosc_tracking`` from the training step pulls in neither matplotlib nor orbax.
"""

import importlib

_SUBMODULES = ("adversarial", "fosc_tracking", "gap", "hessian", "label_noise", "landscape", "plots",
               "reports", "sammd", "similarity")
_NAMES = {
    "adversarial_examples": "adversarial", "adversarial_loss_fn": "adversarial",
    "adversarial_metrics_fn": "adversarial", "fixed_examples_loss_fn": "adversarial",
    "epoch_summary": "fosc_tracking", "fosc_bin_edges": "fosc_tracking",
    "fosc_distribution": "fosc_tracking", "fosc_histogram": "fosc_tracking",
    "fosc_quantiles": "fosc_tracking", "plot_fosc_over_epochs": "fosc_tracking",
    "quantiles_from_histogram": "fosc_tracking", "summarize_fosc": "fosc_tracking",
    "robust_generalization_gap": "gap",
    "HessianEigen": "hessian", "hvp": "hessian", "top_hessian_eigenpairs": "hessian",
    "filter_normalize": "landscape", "filter_normalized_direction": "landscape",
    "loss_landscape_1d": "landscape", "loss_landscape_2d": "landscape",
    "TrainedModel": "reports", "load_trained": "reports",
    "perturbation_similarity": "similarity", "random_unit_direction": "similarity",
}

__all__ = list(_SUBMODULES) + list(_NAMES)


def __getattr__(name):
  if name in _SUBMODULES:
    return importlib.import_module(f"{__name__}.{name}")
  if name in _NAMES:
    return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + __all__)
