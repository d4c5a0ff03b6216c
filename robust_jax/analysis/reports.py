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

import dataclasses
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


def _stacked_images(batches: Sequence[Mapping[str, Any]]):
  """The unmasked images and labels of ``batches``, concatenated: ``(x [N, ...], y [N])``."""
  xs, ys = [], []
  for b in batches:
    m = np.asarray(b["mask"], bool) if "mask" in b else np.ones(len(b["label"]), bool)
    xs.append(np.asarray(b["image"])[m])
    ys.append(np.asarray(b["label"])[m])
  return np.concatenate(xs), np.concatenate(ys).astype(np.int32)


def _plot_bars(values: Mapping[str, float], out_png: str, *, ylabel: str, title: str,
               hline: Optional[float] = None, data: Any = None) -> None:
  fig = plots.new_figure(width=max(4.0, 1.2 * len(values)))
  ax = fig.axes[0]
  ax.bar(range(len(values)), list(values.values()), color="tab:blue")
  ax.set_xticks(range(len(values)), list(values), rotation=20, ha="right", fontsize=8)
  if hline is not None:
    ax.axhline(hline, color="k", lw=0.8, ls="--")
  ax.set_ylim(0, 1)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=8)
  plots.save_figure(fig, out_png, data)


def check_sgm_gamma(model, gamma: float) -> None:
  """Raises ValueError unless ``gamma`` is in (0, 1] and ``model`` has residual branches to scale."""
  validation.check_scalar("sgm_gamma", gamma, low=0.0, high=1.0, low_open=True)
  if "sgm_gamma" not in {f.name for f in dataclasses.fields(model)}:
    raise ValueError(f"sgm_gamma: the Skip Gradient Method needs a model with residual branches "
                     f"(the ResNet and WideResNet families); {type(model).__name__} has none")


def transfer_report(source: TrainedModel, targets: Mapping[str, TrainedModel],
                    batches: Sequence[Mapping[str, Any]], out_dir: str, *, seed: int = 0,
                    attack: Optional[Mapping[str, Any]] = None, start: str = "none",
                    sgm_gamma: Optional[float] = None,
                    split: Optional[str] = None) -> Dict[str, Any]:
  """Transfer of PGD examples crafted on ``source`` to ``targets`` (Wu et al. 2020 with SGM).

  The attack is the source's training attack (``attack`` overrides eps, step size, steps, norm)
  from ``start`` (``"none"``: no random start, as the official ``attack_sgm.py``); with
  ``sgm_gamma`` the source is rebuilt with that backward scale of its residual branches (the Skip
  Gradient Method: the same weights and logits, gradients through the skips favoured), and the
  report also gives the plain (gamma = 1) transfer, so the two are compared on the same examples'
  starts. Runs :func:`robust_jax.evaluation.transfer` per target. Writes ``transfer.png`` (each
  target's accuracy on the transferred examples; lower = better transfer) and ``transfer.json``.

  Args:
    source: the surrogate the attack sees.
    targets: ``name -> TrainedModel`` evaluated on the source's adversarial examples.
    batches: the data (:func:`analysis_batches`).
    out_dir: where the files go.
    seed: the attack's key.
    attack: overrides of the PGD settings.
    start: ``"none"`` or ``"uniform"``.
    sgm_gamma: None (plain transfer) or the SGM gamma in (0, 1].
    split: the split of ``batches``, for the record.

  Returns:
    ``{"rows": [{"gamma", "target", "target_clean_acc", "target_acc_on_transferred",
    "source_whitebox_acc"}], "settings"}``.

  Raises:
    ValueError: for an empty ``targets``, a bad ``start`` or ``sgm_gamma``, or a source without
      residual branches given ``sgm_gamma``.
  """
  from robust_jax import evaluation  # pylint: disable=import-outside-toplevel
  if not targets:
    raise ValueError("targets is empty: pass at least one model to transfer to")
  if start not in ("none", "uniform"):
    raise ValueError(f"start must be 'none' or 'uniform', got {start!r}")
  gammas = [1.0]
  if sgm_gamma is not None:
    check_sgm_gamma(source.model, sgm_gamma)
    gammas.append(float(sgm_gamma))
  kw = attack_settings(source.config, **dict(attack or {}))
  prov = provenance({"source": source, **targets}, batches, seed=seed, split=split, attack=attack,
                    start=start, sgm_gamma=sgm_gamma)
  x, y = _stacked_images(batches)
  data = {"image": x, "label": y}
  variables = source.variables
  target_fns = {name: tm.logits_fn() for name, tm in targets.items()}
  rows = []
  for gamma in gammas:
    model = source.model if gamma == 1.0 else source.model.clone(sgm_gamma=gamma)
    source_fn = lambda xx, m=model: m.apply(variables, xx, train=False)  # noqa: E731
    spec = ("pgd", dict(eps=kw["eps"], step_size=kw["step_size"], num_steps=kw["num_steps"],
                        norm=kw["norm"], start=start))
    for name, target_fn in target_fns.items():
      rep = evaluation.transfer(source_fn, target_fn, data, spec, batch_size=len(y),
                                key=jax.random.key(seed))
      rows.append({"gamma": gamma, "target": name, "target_clean_acc": rep.clean_accuracy,
                   "target_acc_on_transferred": rep.transfer_accuracy,
                   "source_whitebox_acc": rep.source_accuracy})
  png = os.path.join(out_dir, "transfer.png")
  bars = {f"{r['target']} (gamma {r['gamma']:g})": r["target_acc_on_transferred"] for r in rows}
  out = {"rows": rows}
  _plot_bars(bars, png, ylabel="target accuracy on transferred examples",
             title=_titled("Transfer from the source (lower = stronger transfer)", prov), data=out)
  return _record(out, png, prov)


def sammd_report(tm: TrainedModel, train_batches: Sequence[Mapping[str, Any]],
                 test_batches: Sequence[Mapping[str, Any]], out_dir: str, *, layer: str,
                 n: int = 50, num_tests: int = 100, kernel_steps: int = 1000,
                 learning_rate: float = 2e-4, num_permutations: int = 100, alpha: float = 0.05,
                 seed: int = 0, attack: Optional[Mapping[str, Any]] = None,
                 split: Optional[str] = None) -> Dict[str, Any]:
  """SAMMD (Gao et al. 2021): does a two-sample test tell natural batches from PGD batches?

  phi = ReLU of the output of the submodule ``layer`` of the trained classifier
  (:func:`robust_jax.analysis.sammd.classifier_features`). The kernel is trained
  (:func:`~robust_jax.analysis.sammd.train_kernel`) on the training batches: their first half
  natural, the PGD examples (the model's training attack, uniform start) of their second half. The
  held-out batches are split in halves A and B; the test power is the rejection rate of A against
  PGD(B), the type-I error that of A against B (:func:`~robust_jax.analysis.sammd.test_power`,
  permutation test, n points per sample). Writes ``sammd.png`` and ``sammd.json``.

  Args:
    tm: the classifier.
    train_batches: data for the kernel (at least 2 examples).
    test_batches: held-out data; each half needs at least ``n`` examples.
    out_dir: where the files go.
    layer: the submodule whose output gives phi (e.g. ``"fc2"`` of the digits MLP).
    n, num_tests, num_permutations, alpha: the tests (:func:`~robust_jax.analysis.sammd.test_power`).
    kernel_steps, learning_rate: the kernel's Adam training (official: 1000, 2e-4).
    seed: attack and test keys.
    attack: overrides of the PGD settings.
    split: the split of ``test_batches``, for the record.

  Returns:
    ``{"power", "type_i_error", "classifier_acc_on_adversarial", "kernel": [sigma_phi, sigma_q,
    eps], "n", "num_tests", "alpha", "layer", "settings"}``.

  Raises:
    ValueError: for an unknown ``layer`` (the message lists the submodules) or too little data.
  """
  from robust_jax.analysis import sammd  # pylint: disable=import-outside-toplevel
  validation.check_scalar("n", n, low=2, integer=True)
  validation.check_scalar("num_tests", num_tests, low=1, integer=True)
  validation.check_scalar("kernel_steps", kernel_steps, low=0, integer=True)
  x_train, y_train = _stacked_images(train_batches)
  x_test, y_test = _stacked_images(test_batches)
  if len(y_train) < 2:
    raise ValueError(f"train_batches hold {len(y_train)} examples; the kernel needs at least 2")
  if len(y_test) // 2 < n:
    raise ValueError(f"n={n} needs at least {2 * n} held-out examples, got {len(y_test)}")
  variables = tm.variables
  _, state = jax.eval_shape(lambda xx: tm.model.apply(variables, xx, train=False,
                                                      capture_intermediates=True,
                                                      mutable=["intermediates"]), x_test[:1])
  names = sorted(k for k in state["intermediates"] if k != "__call__")
  if layer not in names:
    raise ValueError(f"layer must be a submodule of {type(tm.model).__name__}: one of {names}, "
                     f"got {layer!r}")
  kw = attack_settings(tm.config, **dict(attack or {}))
  prov = provenance({tm.config.get("method", "model"): tm}, test_batches, seed=seed, split=split,
                    attack=attack, layer=layer, n=n, num_tests=num_tests,
                    kernel_steps=kernel_steps, learning_rate=learning_rate)
  logits_fn = tm.logits_fn()
  attack_fn = adversarial.pgd_attack(eps=kw["eps"], step_size=kw["step_size"],
                                     num_steps=kw["num_steps"], norm=kw["norm"])
  pgd = jax.jit(lambda xx, yy, k: attack_fn(logits_fn, xx, yy, k).x_adv)
  phi = jax.jit(sammd.classifier_features(tm.model, variables, layer))
  key = jax.random.key(seed)
  half = len(y_train) // 2
  nat, adv = x_train[:half], pgd(x_train[half:2 * half], y_train[half:2 * half],
                                 jax.random.fold_in(key, 0))
  params = sammd.train_kernel(phi(nat), phi(adv), nat, adv, steps=kernel_steps,
                              learning_rate=learning_rate)
  perm = np.random.default_rng(seed).permutation(len(y_test))
  a, b = perm[:len(perm) // 2], perm[len(perm) // 2:]
  x_a, x_b = x_test[a], x_test[b]
  adv_b = pgd(x_b, y_test[b], jax.random.fold_in(key, 1))
  adv_acc = float(np.mean(np.argmax(np.asarray(logits_fn(adv_b)), -1) == y_test[b]))
  rates = {}
  for what, (fy, yy) in {"power": (phi(adv_b), adv_b), "type_i_error": (phi(x_b), x_b)}.items():
    rates[what] = sammd.test_power(phi(x_a), x_a, fy, yy, params, n=n, num_tests=num_tests,
                                   key=jax.random.fold_in(key, 2), num_permutations=num_permutations,
                                   alpha=alpha)
  out = {**rates, "classifier_acc_on_adversarial": adv_acc,
         "kernel": [float(v) for v in params.constrained()], "n": n, "num_tests": num_tests,
         "alpha": alpha, "layer": layer}
  png = os.path.join(out_dir, "sammd.png")
  _plot_bars({"power (clean vs PGD)": rates["power"],
              "type-I error (clean vs clean)": rates["type_i_error"]}, png,
             ylabel="rejection rate", hline=alpha, data=out,
             title=_titled(f"SAMMD two-sample test, phi = {layer}, n = {n}", prov))
  return _record(out, png, prov)
