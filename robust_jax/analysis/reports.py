"""End-to-end analyses of trained checkpoints: load, compute, write a PNG and its JSON.

What ``python -m launch.analyze`` and the notebooks call. Each ``*_report`` takes one or several
trained models (``name -> TrainedModel``), a fixed set of batches and an output directory, writes
``<out_dir>/<analysis>.png`` and ``.json`` and returns the JSON data. The attack defaults to the
training attack of the model's config (eps, step size, steps, norm) with a uniform start. The
models come from :func:`load_trained` (:mod:`robust_jax.training.restore`, re-exported here).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import jax
import numpy as np

from robust_jax.analysis import adversarial, fosc_tracking, gap, hessian, landscape, plots
from robust_jax.analysis import similarity
from robust_jax.data import pipeline
# The one restore path (re-exported: ``reports.load_trained`` and ``reports.TrainedModel`` are what
# the notebooks and launch.analyze have always called).
from robust_jax.training.restore import TrainedModel, load_trained  # noqa: F401


def analysis_batches(config, *, split: str = "test", num_examples: int = 512,
                     batch_size: int = 256, offset: int = 0) -> List[Dict[str, np.ndarray]]:
  """A fixed subset of a split of the config's dataset, in padded batches with a ``mask``.

  Args:
    config: a training config (``dataset``, ``data_dir``, ``validation_fraction``).
    split: ``"train"``, ``"validation"`` or ``"test"``.
    num_examples: how many examples, from ``offset`` on, in the split's stored order (<= 0: all).
    batch_size: examples per batch (the last batch is padded and masked).
    offset: the first example.

  Returns:
    A list of ``{"image", "label", "mask"}`` batches.
  """
  ds = pipeline.load_dataset(config.dataset, data_dir=config.get("data_dir") or None,
                             validation_fraction=config.get("validation_fraction", 0.1))
  arrays = ds.split(split)
  n = len(arrays["label"])
  stop = n if num_examples <= 0 else min(n, offset + num_examples)
  subset = {k: v[offset:stop] for k, v in arrays.items()}
  return list(pipeline.eval_batches(subset, batch_size=min(batch_size, max(stop - offset, 1))))


def attack_settings(config, **overrides) -> Dict[str, Any]:
  """The training attack of ``config`` (eps, step_size, num_steps, norm) with overrides (None kept
  out)."""
  out = {"eps": float(config.eps), "step_size": float(config.step_size),
         "num_steps": int(config.num_steps), "norm": str(config.norm)}
  out.update({k: v for k, v in overrides.items() if v is not None})
  return out


def _as_models(models_or_one) -> Dict[str, TrainedModel]:
  if isinstance(models_or_one, TrainedModel):
    return {models_or_one.config.get("method", "model"): models_or_one}
  return dict(models_or_one)


def landscape_report(models_or_one, batches: Sequence[Mapping[str, Any]], out_dir: str, *,
                     dims: int = 1, num_points: int = 21, span: float = 1.0,
                     one_dim: str = "zero", seed: int = 0, batch_size: Optional[int] = 1,
                     attack: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
  """Weight landscapes of the adversarial loss (regenerated PGD) along filter-normalised directions.

  Every model gets its own direction(s) drawn from the same key (so models of one architecture share
  the Gaussian draw before normalisation). Writes ``landscape_1d.png`` (loss and robust accuracy
  against alpha, all models on one axis, as AWP's Figure 1) or ``landscape_2d_<name>.png``.

  Args:
    models_or_one: a :class:`TrainedModel` or ``name -> TrainedModel``.
    batches: the fixed data (e.g. :func:`analysis_batches`).
    out_dir: where the files go.
    dims: 1 or 2.
    num_points: points per axis in ``[-span, span]``.
    span: the range of alpha (Li et al.: 1).
    one_dim: biases / BatchNorm handling of the direction (``"zero"`` or ``"elementwise"``).
    seed: directions and random starts.
    batch_size: grid points evaluated together (:func:`landscape.loss_landscape_1d`).
    attack: overrides of the PGD settings (default: each model's training attack).

  Returns:
    The JSON data (1-D: alphas, curves, accuracies; 2-D: ``name -> grid data``).
  """
  models_ = _as_models(models_or_one)
  alphas = np.linspace(-span, span, num_points).astype(np.float32)
  key = jax.random.key(seed)
  kd1, kd2, ka = jax.random.split(key, 3)
  curves, accs, out = {}, {}, {}
  for name, tm in models_.items():
    kw = attack_settings(tm.config, **dict(attack or {}))
    metrics_at = adversarial.adversarial_metrics_fn(tm.apply_fn, tm.batch_stats, batches, key=ka,
                                                    **kw)
    d1 = landscape.filter_normalized_direction(kd1, tm.params, one_dim=one_dim)
    if dims == 1:
      res = landscape.loss_landscape_1d(metrics_at, tm.params, d1, alphas, batch_size=batch_size)
      curves[name], accs[name] = res["loss"], res["robust_acc"]
    elif dims == 2:
      d2 = landscape.filter_normalized_direction(kd2, tm.params, one_dim=one_dim)
      res = landscape.loss_landscape_2d(metrics_at, tm.params, d1, d2, alphas, alphas,
                                        batch_size=batch_size)
      out[name] = plots.plot_landscape_2d(
          alphas, alphas, res["loss"], os.path.join(out_dir, f"landscape_2d_{name}.png"),
          title=f"{name}: adversarial loss, 2-D filter-normalised")
    else:
      raise ValueError(f"dims must be 1 or 2, got {dims}")
  if dims == 1:
    out = plots.plot_landscape_1d(alphas, curves, os.path.join(out_dir, "landscape_1d.png"),
                                  accuracies=accs)
  return out


def hessian_report(models_or_one, batches, out_dir: str, *, topk: int = 5, seed: int = 0,
                   max_iters: int = 50, tol: float = 1e-3,
                   attack: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
  """Top-k Hessian eigenvalues of the adversarial loss on examples generated once (Liu et al.).

  Writes ``hessian_spectrum.png`` and ``.json``: ``{"eigenvalues": {name: [k]}, "num_iters": ...}``.
  """
  models_ = _as_models(models_or_one)
  key = jax.random.key(seed)
  ka, kh = jax.random.split(key)
  eig, iters = {}, {}
  for name, tm in models_.items():
    res = _top_eigen(tm, batches, topk=topk, key_attack=ka, key_hessian=kh, max_iters=max_iters,
                     tol=tol, attack=attack)
    eig[name] = np.asarray(res.eigenvalues).tolist()
    iters[name] = np.asarray(res.num_iters).tolist()
  data = plots.plot_hessian_spectrum(eig, os.path.join(out_dir, "hessian_spectrum.png"))
  data["num_iters"] = iters
  plots.save_json(data, os.path.join(out_dir, "hessian_spectrum.json"))
  return data


def _top_eigen(tm, batches, *, topk, key_attack, key_hessian, max_iters, tol, attack):
  kw = attack_settings(tm.config, **dict(attack or {}))
  adv = adversarial.adversarial_examples(tm.apply_fn, tm.params, tm.batch_stats, batches,
                                         key=key_attack, **kw)
  loss_fn = adversarial.fixed_examples_loss_fn(tm.apply_fn, tm.batch_stats, adv)
  return hessian.top_hessian_eigenpairs(loss_fn, tm.params, k=topk, key=key_hessian,
                                        max_iters=max_iters, tol=tol)


def similarity_report(models_or_one, batches, out_dir: str, *,
                      alphas: Sequence[float] = (0.0, 0.01, 0.03, 0.05, 0.1), seed: int = 0,
                      max_iters: int = 50, tol: float = 1e-3, independent_starts: bool = False,
                      attack: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
  """Cosine of perturbations at theta +- a v, v = top Hessian eigenvector or random (Liu et al.).

  Writes ``similarity.png`` / ``.json`` (one model) or ``similarity_<name>.png`` per model.
  """
  models_ = _as_models(models_or_one)
  key = jax.random.key(seed)
  ka, kh, kr = jax.random.split(key, 3)
  out = {}
  for name, tm in models_.items():
    kw = attack_settings(tm.config, **dict(attack or {}))
    eig = _top_eigen(tm, batches, topk=1, key_attack=ka, key_hessian=kh, max_iters=max_iters,
                     tol=tol, attack=attack)
    dirs = {"eigenvector": hessian.eigenvector(eig, 0),
            "random": similarity.random_unit_direction(kr, tm.params)}
    res = {}
    for dname, v in dirs.items():
      res[dname] = similarity.perturbation_similarity(
          tm.apply_fn, tm.params, tm.batch_stats, batches, v, alphas, key=ka,
          independent_starts=independent_starts, **kw)
    res["eigenvector"]["eigenvalue"] = float(eig.eigenvalues[0])
    fname = "similarity.png" if len(models_) == 1 else f"similarity_{name}.png"
    out[name] = plots.plot_similarity(res, os.path.join(out_dir, fname),
                                      title=f"{name}: cosine of perturbations at theta +- a v")
  return out


def fosc_report(models_or_one, batches, out_dir: str, *, seed: int = 0,
                attack: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
  """FOSC of PGD examples against the trained models, and over the epochs when the runs logged it.

  Writes ``fosc_distribution.png`` (final models, overlaid) and, if the runs' ``metrics.jsonl`` hold
  per-epoch histograms, ``fosc_over_epochs.png``.
  """
  models_ = _as_models(models_or_one)
  key = jax.random.key(seed)
  values = {}
  for name, tm in models_.items():
    kw = attack_settings(tm.config, **dict(attack or {}))
    values[name] = fosc_tracking.fosc_distribution(tm.logits_fn(), batches, key=key, **kw)
  out = {"final": fosc_tracking.plot_fosc_distributions(
      values, os.path.join(out_dir, "fosc_distribution.png"))}
  paths = {name: os.path.join(tm.workdir, "metrics.jsonl") for name, tm in models_.items()}
  if all(os.path.exists(p) and fosc_tracking.has_fosc_histograms(p) for p in paths.values()):
    out["epochs"] = fosc_tracking.plot_fosc_over_epochs(
        paths, os.path.join(out_dir, "fosc_over_epochs.png"))
  return out


def gap_report(workdirs: Union[str, Mapping[str, str]], out_dir: str, *,
               split: str = "validation", train_source: str = "auto") -> Dict[str, Any]:
  """The robust generalisation gap per epoch of runs (``name -> workdir``): ``robust_gap.png``."""
  if isinstance(workdirs, (str, os.PathLike)):
    workdirs = {"run": workdirs}
  gaps = {name: gap.robust_generalization_gap(os.path.join(w, "metrics.jsonl"), split=split,
                                              train_source=train_source)
          for name, w in workdirs.items()}
  return plots.plot_robust_gap(gaps, os.path.join(out_dir, "robust_gap.png"))
