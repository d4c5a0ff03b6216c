"""End-to-end analyses of trained checkpoints: load, compute, write a PNG and its JSON.

What ``python -m launch.analyze`` and the notebooks call. Each ``*_report`` takes one or several
trained models (``name -> TrainedModel``), a fixed set of batches and an output directory, writes
``<out_dir>/<analysis>.png`` and ``.json`` and returns the JSON data. The attack defaults to the
training attack of the model's config (eps, step size, steps, norm) with a uniform start. The
models come from :func:`load_trained` (:mod:`robust_jax.training.restore`, re-exported here).

Every artifact says what it shows: each JSON holds a ``"settings"`` entry (:func:`provenance`: the
split, the number of examples, the seed, the library version and, per model, the checkpoint's step
and epoch and the attack: eps, norm, step size, steps, start) and each PNG title a line with the
same (:func:`settings_line`). Pass ``split=`` (what :func:`analysis_batches` was given) so that it
is recorded; it is ``None`` otherwise.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import jax
import numpy as np

import robust_jax
from robust_jax import validation

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


def provenance(models_: Mapping[str, TrainedModel], batches: Sequence[Mapping[str, Any]], *,
               seed: Optional[int], split: Optional[str],
               attack: Optional[Mapping[str, Any]] = None, **extra) -> Dict[str, Any]:
  """What an analysis ran on, for its JSON (``"settings"``) and its PNG title.

  Args:
    models_: ``name -> TrainedModel``.
    batches: the data (their ``mask`` counts the examples).
    seed: the analysis seed.
    split: the data split, or None when not known.
    attack: the attack overrides (None: the training attack of each model, as the reports use).
    **extra: further settings of the analysis (grid size, topk, ...), recorded as given.

  Returns:
    ``{"split", "num_examples", "seed", "library_version", "models": {name: {"checkpoint_step",
    "epoch", "method", "workdir", "attack": {eps, norm, step_size, num_steps, start}}}, **extra}``.
  """
  n = 0
  for b in batches:
    n += int(np.sum(b["mask"])) if "mask" in b else len(b["label"])
  per_model = {}
  for name, tm in models_.items():
    entry = {"checkpoint_step": tm.step, "epoch": (tm.meta or {}).get("epoch"),
             "method": tm.config.get("method"), "workdir": tm.workdir}
    if attack is not False:
      entry["attack"] = {**attack_settings(tm.config, **dict(attack or {})), "start": "uniform"}
    per_model[name] = entry
  return {"split": split, "num_examples": n, "seed": seed,
          "library_version": robust_jax.__version__, "models": per_model, **extra}


def settings_line(prov: Mapping[str, Any]) -> str:
  """One line for a PNG title: split, examples, eps and attack, seed, checkpoint step, version."""
  parts = [f"{prov.get('split') or 'unknown'} split", f"{prov.get('num_examples')} examples"]
  models_ = prov.get("models") or {}
  attacks = {(a["norm"], a["eps"], a["step_size"], a["num_steps"])
             for m in models_.values() if "attack" in m for a in [m["attack"]]}
  for norm, eps, step, k in sorted(attacks):
    parts.append(f"PGD-{k} {norm} eps {eps:.4g} step {step:.3g}")
  if prov.get("seed") is not None:
    parts.append(f"seed {prov['seed']}")
  steps = sorted({str(m.get("checkpoint_step")) for m in models_.values()})
  if steps:
    parts.append("checkpoint step " + "/".join(steps))
  parts.append(f"robust_jax {prov.get('library_version')}")
  return ", ".join(parts)


def _titled(title: str, prov: Mapping[str, Any]) -> str:
  return f"{title}\n{settings_line(prov)}"


def _record(data: Dict[str, Any], out_png: str, prov: Mapping[str, Any]) -> Dict[str, Any]:
  """Adds ``"settings"`` to the JSON of ``out_png`` (rewritten) and to ``data``."""
  data = dict(data)
  data["settings"] = plots.to_jsonable(dict(prov))
  plots.save_json(data, plots.json_path(out_png))
  return data


def check_landscape_grid(*, dims: int, num_points: int, span: float) -> None:
  """Raises ValueError unless the landscape grid contains the model itself (alpha = 0).

  ``num_points`` must be odd and >= 3 (``linspace(-span, span, n)`` holds 0 only for odd n, and a
  single point is no curve) and ``span`` > 0 (a negative span would reverse the axis).
  """
  validation.check_choice("dims", dims, (1, 2))
  validation.check_scalar("num_points", num_points, integer=True)
  if int(num_points) < 3 or int(num_points) % 2 == 0:
    better = max(3, int(num_points) | 1)
    raise ValueError(f"num_points must be an odd integer >= 3, so that alpha = 0 (the trained "
                     f"model itself) is a grid point between others, got {num_points}; try "
                     f"{better}")
  validation.check_scalar("span", span)
  if not (0.0 < float(span) < math.inf):
    raise ValueError(f"span must be in (0, inf): alpha runs over [-span, span] (a negative span "
                     f"would reverse the axis), got {span}")


def _as_models(models_or_one) -> Dict[str, TrainedModel]:
  if isinstance(models_or_one, TrainedModel):
    return {models_or_one.config.get("method", "model"): models_or_one}
  return dict(models_or_one)


def landscape_report(models_or_one, batches: Sequence[Mapping[str, Any]], out_dir: str, *,
                     dims: int = 1, num_points: int = 21, span: float = 1.0,
                     one_dim: str = "zero", seed: int = 0, batch_size: Optional[int] = 1,
                     attack: Optional[Mapping[str, Any]] = None,
                     split: Optional[str] = None) -> Dict[str, Any]:
  """Weight landscapes of the adversarial loss (regenerated PGD) along filter-normalised directions.

  Every model gets its own direction(s) drawn from the same key (so models of one architecture share
  the Gaussian draw before normalisation). Writes ``landscape_1d.png`` (loss and robust accuracy
  against alpha, all models on one axis, as AWP's Figure 1) or ``landscape_2d_<name>.png``.

  Args:
    models_or_one: a :class:`TrainedModel` or ``name -> TrainedModel``.
    batches: the fixed data (e.g. :func:`analysis_batches`).
    out_dir: where the files go.
    dims: 1 or 2.
    num_points: points per axis in ``[-span, span]``, odd and >= 3 (alpha = 0 is on the grid).
    span: the range of alpha, > 0 (Li et al.: 1).
    one_dim: biases / BatchNorm handling of the direction (``"zero"`` or ``"elementwise"``).
    seed: directions and random starts.
    batch_size: grid points evaluated together (:func:`landscape.loss_landscape_1d`).
    attack: overrides of the PGD settings (default: each model's training attack).
    split: the split of ``batches``, for the record.

  Returns:
    The JSON data (1-D: alphas, curves, accuracies; 2-D: ``name -> grid data``), with
    ``"settings"`` (:func:`provenance`).

  Raises:
    ValueError: for ``dims`` other than 1 or 2, an even or too small ``num_points`` or a
      ``span`` <= 0 (:func:`check_landscape_grid`).
  """
  check_landscape_grid(dims=dims, num_points=num_points, span=span)
  models_ = _as_models(models_or_one)
  prov = provenance(models_, batches, seed=seed, split=split, attack=attack, dims=dims,
                    num_points=num_points, span=span, one_dim=one_dim)
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
      png = os.path.join(out_dir, f"landscape_2d_{name}.png")
      out[name] = _record(plots.plot_landscape_2d(
          alphas, alphas, res["loss"], png,
          title=_titled(f"{name}: adversarial loss, 2-D filter-normalised", prov)), png, prov)
  if dims == 1:
    png = os.path.join(out_dir, "landscape_1d.png")
    out = _record(plots.plot_landscape_1d(
        alphas, curves, png, accuracies=accs,
        title=_titled("Weight loss landscape (filter-normalised direction)", prov)), png, prov)
  return out


def hessian_report(models_or_one, batches, out_dir: str, *, topk: int = 5, seed: int = 0,
                   max_iters: int = 50, tol: float = 1e-3,
                   attack: Optional[Mapping[str, Any]] = None,
                   split: Optional[str] = None) -> Dict[str, Any]:
  """Top-k Hessian eigenvalues of the adversarial loss on examples generated once (Liu et al.).

  Writes ``hessian_spectrum.png`` and ``.json``: ``{"eigenvalues": {name: [k]}, "num_iters": ...,
  "settings": ...}`` (:func:`provenance`).
  """
  validation.check_scalar("topk", topk, low=1, integer=True)
  validation.check_scalar("max_iters", max_iters, low=1, integer=True)
  validation.check_scalar("tol", tol, low=0.0, low_open=True)
  models_ = _as_models(models_or_one)
  prov = provenance(models_, batches, seed=seed, split=split, attack=attack, topk=topk,
                    max_iters=max_iters, tol=tol)
  key = jax.random.key(seed)
  ka, kh = jax.random.split(key)
  eig, iters = {}, {}
  for name, tm in models_.items():
    res = _top_eigen(tm, batches, topk=topk, key_attack=ka, key_hessian=kh, max_iters=max_iters,
                     tol=tol, attack=attack)
    eig[name] = np.asarray(res.eigenvalues).tolist()
    iters[name] = np.asarray(res.num_iters).tolist()
  png = os.path.join(out_dir, "hessian_spectrum.png")
  data = plots.plot_hessian_spectrum(
      eig, png, title=_titled("Top Hessian eigenvalues of the adversarial loss", prov))
  data["num_iters"] = iters
  return _record(data, png, prov)


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
                      attack: Optional[Mapping[str, Any]] = None,
                      split: Optional[str] = None) -> Dict[str, Any]:
  """Cosine of perturbations at theta +- a v, v = top Hessian eigenvector or random (Liu et al.).

  Writes ``similarity.png`` / ``.json`` (one model) or ``similarity_<name>.png`` per model, each
  JSON with ``"settings"`` (:func:`provenance`).
  """
  for a in alphas:
    validation.check_scalar("alphas", a, low=0.0)
  models_ = _as_models(models_or_one)
  prov = provenance(models_, batches, seed=seed, split=split, attack=attack,
                    alphas=[float(a) for a in alphas], independent_starts=independent_starts,
                    max_iters=max_iters, tol=tol)
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
    png = os.path.join(out_dir, fname)
    out[name] = _record(plots.plot_similarity(
        res, png, title=_titled(f"{name}: cosine of perturbations at theta +- a v", prov)),
        png, prov)
  return out


def fosc_report(models_or_one, batches, out_dir: str, *, seed: int = 0,
                attack: Optional[Mapping[str, Any]] = None,
                split: Optional[str] = None) -> Dict[str, Any]:
  """FOSC of PGD examples against the trained models, and over the epochs when the runs logged it.

  Writes ``fosc_distribution.png`` (final models, overlaid) and, if the runs' ``metrics.jsonl`` hold
  per-epoch histograms, ``fosc_over_epochs.png``; each JSON with ``"settings"``
  (:func:`provenance`).
  """
  models_ = _as_models(models_or_one)
  prov = provenance(models_, batches, seed=seed, split=split, attack=attack)
  key = jax.random.key(seed)
  values = {}
  for name, tm in models_.items():
    kw = attack_settings(tm.config, **dict(attack or {}))
    values[name] = fosc_tracking.fosc_distribution(tm.logits_fn(), batches, key=key, **kw)
  png = os.path.join(out_dir, "fosc_distribution.png")
  # ``out["final"]`` and ``out["epochs"]`` stay ``method -> numbers``; the settings sit beside them
  # (and in each JSON).
  final = fosc_tracking.plot_fosc_distributions(
      values, png, title=_titled("FOSC of PGD adversarial examples", prov))
  _record(final, png, prov)
  out = {"final": final, "settings": plots.to_jsonable(dict(prov))}
  paths = {name: os.path.join(tm.workdir, "metrics.jsonl") for name, tm in models_.items()}
  if all(os.path.exists(p) and fosc_tracking.has_fosc_histograms(p) for p in paths.values()):
    png = os.path.join(out_dir, "fosc_over_epochs.png")
    epochs_prov = provenance(models_, [], seed=None, split="train", attack=False,
                             source="metrics.jsonl (the training attack's examples)")
    out["epochs"] = fosc_tracking.plot_fosc_over_epochs(
        paths, png, title=_titled("FOSC of the training adversarial examples", epochs_prov))
    _record(out["epochs"], png, epochs_prov)
    out["epochs_settings"] = plots.to_jsonable(dict(epochs_prov))
  return out


def gap_report(workdirs: Union[str, Mapping[str, str]], out_dir: str, *,
               split: str = "validation", train_source: str = "auto") -> Dict[str, Any]:
  """The robust generalisation gap per epoch of runs (``name -> workdir``): ``robust_gap.png``."""
  if isinstance(workdirs, (str, os.PathLike)):
    workdirs = {"run": workdirs}
  gaps = {name: gap.robust_generalization_gap(os.path.join(w, "metrics.jsonl"), split=split,
                                              train_source=train_source)
          for name, w in workdirs.items()}
  prov = {"split": split, "train_source": train_source, "source": "metrics.jsonl",
          "workdirs": {name: os.fspath(w) for name, w in workdirs.items()},
          "library_version": robust_jax.__version__}
  png = os.path.join(out_dir, "robust_gap.png")
  title = (f"Robust generalisation gap\ntrain vs {split} robust accuracy from metrics.jsonl "
           f"(the training run's own evaluation), robust_jax {robust_jax.__version__}")
  return _record(plots.plot_robust_gap(gaps, png, title=title), png, prov)
