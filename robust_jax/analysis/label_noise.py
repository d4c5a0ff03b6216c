"""Noisy labels under standard and adversarial training, and kappa as a noise detector.

Zhu, Zhang, Han, Liu, Niu, Yang, Kankanhalli and Sugiyama, "Understanding the interaction of
adversarial training with noisy labels", arXiv 2102.03482 (2021); no official code (the reference
notes, section 4). kappa is GAIRAT's geometry value (Zhang et al. 2021, ``GA_PGD`` of
``zjfheart/Geometry-aware-Instance-reweighted-Adversarial-Training``): the number of PGD iterates,
the random start included and the last excluded, that are still classified as the *given* label;
:func:`robust_jax.attacks.pgd` returns it per example.

The paper's findings measured here:

1. AT fits the mislabeled training points less than standard training (ST): per epoch, the accuracy
   on the clean subset and the *fit* of the noisy subset (prediction == the noisy label), and how
   often a noisy point is predicted as its true label (:func:`subset_accuracies`,
   :func:`track_training`);
2. kappa, computed with the noisy labels as training sees them and in eval mode, is small for
   mislabeled points: the distribution of kappa on clean vs noisy points
   (:func:`kappa_histograms`) and the AUC of ``-kappa`` as a score for "this label is noisy"
   (:func:`kappa_auc`, ``sklearn.metrics.roc_auc_score``; 0.5 = no separation, 1 = perfect).

Data: ``robust_jax.data.label_noise`` (symmetric or pair noise, exact rate, recorded indices),
switched on by the training config (``config.label_noise``, ``label_noise_rate``,
``label_noise_seed``). Recipe: :func:`robust_jax.experiments.new_systems.label_noise_experiment`
(the digits with 20% symmetric noise, ST and PGD-AT, 30 epochs each)::

  python -m robust_jax.experiments.new_systems --what=label_noise --out=runs/new_systems

Tests (``tests/analysis/test_label_noise.py``): the AUC against a direct Mann-Whitney count, the
subset accuracies against a direct count, the histograms against ``np.bincount``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from robust_jax import attacks
from robust_jax.data import pipeline
from robust_jax.models import functional


def _predict_all(logits_fn, images, batch_size):
  fn = jax.jit(lambda xx: jnp.argmax(logits_fn(xx), -1))
  out = []
  for i in range(0, len(images), batch_size):
    out.append(np.asarray(fn(jnp.asarray(pipeline.to_float(images[i:i + batch_size])))))
  return np.concatenate(out) if out else np.zeros(0, np.int64)


def subset_accuracies(predictions: np.ndarray, arrays: Mapping[str, np.ndarray]) -> Dict[str, float]:
  """Accuracy on the clean subset and fit of the noisy subset of a noisy training split.

  Args:
    predictions: int [n], the model's predicted classes on the split's images.
    arrays: a split from :func:`robust_jax.data.label_noise.apply_to_split` (``"label"`` noisy,
      ``"clean_label"``, ``"noisy"``).

  Returns:
    ``clean_acc``: mean(pred == label) over the clean subset; ``noisy_fit``: mean(pred == noisy
    label) over the noisy subset (memorisation of the wrong labels); ``noisy_true``: mean(pred ==
    true label) over the noisy subset; ``n_clean``, ``n_noisy``. NaN for an empty subset.
  """
  pred = np.asarray(predictions)
  noisy = np.asarray(arrays["noisy"], bool)
  label, clean_label = np.asarray(arrays["label"]), np.asarray(arrays["clean_label"])
  mean = lambda v: float(np.mean(v)) if v.size else float("nan")
  return {"clean_acc": mean(pred[~noisy] == label[~noisy]),
          "noisy_fit": mean(pred[noisy] == label[noisy]),
          "noisy_true": mean(pred[noisy] == clean_label[noisy]),
          "n_clean": int((~noisy).sum()), "n_noisy": int(noisy.sum())}


def kappa_values(logits_fn: Callable[[jax.Array], jax.Array], images: np.ndarray,
                 labels: np.ndarray, *, eps: float, step_size: float, num_steps: int,
                 key: jax.Array, batch_size: int = 256) -> np.ndarray:
  """GAIRAT's kappa for every example: PGD-K (uniform start) iterates still predicted as ``labels``.

  Args:
    logits_fn: the model in eval mode.
    images: [n, H, W, C] (uint8 or float in [0, 1]).
    labels: int [n], the labels kappa is measured against (the *noisy* ones for the detector).
    eps, step_size, num_steps: the linf PGD of GAIRAT (K = 10, step eps / 4 in the recipes).
    key: PRNG key of the random starts (batch b uses ``fold_in(key, b)``).
    batch_size: examples per attack call (the last batch is padded).

  Returns:
    int32 [n] in [0, num_steps].
  """
  images, labels = np.asarray(images), np.asarray(labels, np.int32)
  n = len(labels)
  attack = jax.jit(lambda xx, yy, k: attacks.pgd(
      logits_fn, xx, yy, eps=eps, step_size=step_size, num_steps=num_steps, start="uniform",
      key=k).kappa)
  out = []
  for b, i in enumerate(range(0, n, batch_size)):
    x = pipeline.to_float(images[i:i + batch_size])
    y = labels[i:i + batch_size]
    real = len(y)
    if real < batch_size and n > batch_size:  # pad to one compiled shape
      x = np.concatenate([x, np.repeat(x[:1], batch_size - real, 0)])
      y = np.concatenate([y, np.repeat(y[:1], batch_size - real, 0)])
    out.append(np.asarray(attack(jnp.asarray(x), jnp.asarray(y), jax.random.fold_in(key, b)))[:real])
  return np.concatenate(out).astype(np.int32)


def kappa_auc(kappa: np.ndarray, noisy: np.ndarray) -> float:
  """AUC of ``-kappa`` as a detector of noisy labels (``sklearn.metrics.roc_auc_score``).

  Small kappa (quickly attacked w.r.t. its label) predicts "noisy"; ties count one half.

  Args:
    kappa: [n] geometry values.
    noisy: bool [n], the recorded corruption mask.

  Returns:
    The AUC in [0, 1]: the probability that a random noisy example has a smaller kappa than a random
    clean one (plus half the probability of a tie).

  Raises:
    ValueError: if one of the two groups is empty.
  """
  from sklearn.metrics import roc_auc_score  # pylint: disable=import-outside-toplevel
  noisy = np.asarray(noisy, bool)
  if noisy.all() or not noisy.any():
    raise ValueError("kappa_auc needs both clean and noisy examples")
  return float(roc_auc_score(noisy.astype(np.int32), -np.asarray(kappa, np.float64)))


def kappa_histograms(kappa: np.ndarray, noisy: np.ndarray, num_steps: int) -> Dict[str, List[int]]:
  """Counts of kappa = 0 .. num_steps on the clean and on the noisy examples."""
  kappa, noisy = np.asarray(kappa, np.int64), np.asarray(noisy, bool)
  hist = lambda k: np.bincount(k, minlength=num_steps + 1)[:num_steps + 1].astype(int).tolist()
  return {"clean": hist(kappa[~noisy]), "noisy": hist(kappa[noisy])}


def track_training(config: ml_collections.ConfigDict, *, kappa_eps: Optional[float] = None,
                   kappa_steps: int = 10, log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Trains ``config`` on its noisy training split, measuring the subsets after every epoch.

  The library's training step (:func:`robust_jax.training.step.make_train_step`, the method's
  parts) run by a small single-device epoch loop, because the measurements need the whole noisy
  training split after every epoch (``train_and_evaluate`` evaluates on the validation split).
  No checkpoints are written.

  Args:
    config: a training config with ``label_noise != "none"`` (``method="standard"`` for ST,
      ``"pgd_at"`` for AT, ...).
    kappa_eps: the radius of the kappa PGD after training (default ``config.eps``); its step is
      ``kappa_eps / 4``.
    kappa_steps: K of the kappa PGD.
    log: where the per-epoch line goes.

  Returns:
    ``{"epochs": [{epoch, clean_acc, noisy_fit, noisy_true, test_acc, seconds}], "kappa_auc",
    "kappa_hist": {"clean", "noisy"}, "kappa_mean": {"clean", "noisy"}, "noise": {...}}``.
  """
  from robust_jax.training import loop, methods  # pylint: disable=import-outside-toplevel
  from robust_jax.training import restore as restore_lib  # pylint: disable=import-outside-toplevel
  from robust_jax.training import state as state_lib  # pylint: disable=import-outside-toplevel
  from robust_jax.training import step as step_lib  # pylint: disable=import-outside-toplevel

  if config.label_noise == "none":
    raise ValueError("track_training needs config.label_noise != 'none'")
  ds = loop.load_dataset(config)
  model = restore_lib.build_model(config, ds.num_classes)
  spe = pipeline.steps_per_epoch(len(ds.train["label"]), config.batch_size)
  tx, lr_fn = step_lib.make_optimizer(config, spe)
  sample = jnp.zeros((1,) + tuple(ds.image_shape), jnp.float32)
  state = state_lib.create(model=model, tx=tx, sample_input=sample, seed=config.seed)
  bundle = methods.build(config)
  state = state.replace(parts=bundle.init(state.params))
  step = jax.jit(step_lib.make_train_step(config, model, tx, lr_fn, spe, bundle=bundle))
  apply = functional.as_model_fn(model).apply

  def logits_fn_of(st):
    return lambda xx: apply({"params": st.params, "batch_stats": st.batch_stats}, xx,
                            train=False)[0]

  records = []
  for epoch in range(config.num_epochs):
    t0 = time.time()
    for batch in pipeline.train_batches(ds.train, batch_size=config.batch_size, seed=config.seed,
                                        epoch=epoch, augment=config.augment):
      state, _ = step(state, {"image": jnp.asarray(batch["image"]),
                              "label": jnp.asarray(batch["label"])})
    fn = logits_fn_of(state)
    rec = subset_accuracies(_predict_all(fn, ds.train["image"], config.eval_batch_size), ds.train)
    rec["test_acc"] = float(np.mean(_predict_all(fn, ds.test["image"], config.eval_batch_size)
                                    == ds.test["label"]))
    rec.update(epoch=epoch, seconds=time.time() - t0)
    records.append(rec)
    log(f"[{config.method}] epoch {epoch + 1}/{config.num_epochs}: clean-subset acc "
        f"{rec['clean_acc']:.3f}, noisy-subset fit {rec['noisy_fit']:.3f} (true label "
        f"{rec['noisy_true']:.3f}), test {rec['test_acc']:.3f}")
  eps = config.eps if kappa_eps is None else kappa_eps
  kappa = kappa_values(logits_fn_of(state), ds.train["image"], ds.train["label"], eps=eps,
                       step_size=eps / 4, num_steps=kappa_steps,
                       key=jax.random.key(config.seed + 1))
  noisy = ds.train["noisy"]
  return {"method": config.method, "epochs": records, "kappa_auc": kappa_auc(kappa, noisy),
          "kappa_hist": kappa_histograms(kappa, noisy, kappa_steps),
          "kappa_mean": {"clean": float(kappa[~noisy].mean()), "noisy": float(kappa[noisy].mean())},
          "kappa_eps": eps, "kappa_steps": kappa_steps,
          "noise": {"kind": config.label_noise, "rate": config.label_noise_rate,
                    "seed": config.label_noise_seed, "n_noisy": int(noisy.sum()),
                    "n_train": int(len(noisy))}}


def plot(results: List[Dict[str, Any]], path: str) -> str:
  """Per-epoch clean-subset accuracy (solid) and noisy-subset fit (dashed) of each run, and the
  kappa histograms of the last run's clean vs noisy examples; writes a PNG, returns its path."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
  for res in results:
    ep = [r["epoch"] + 1 for r in res["epochs"]]
    line, = ax1.plot(ep, [r["clean_acc"] for r in res["epochs"]], label=f"{res['method']} clean")
    ax1.plot(ep, [r["noisy_fit"] for r in res["epochs"]], "--", color=line.get_color(),
             label=f"{res['method']} noisy (fit)")
  ax1.set_xlabel("epoch")
  ax1.set_ylabel("training accuracy w.r.t. the given label")
  ax1.legend(fontsize=7)
  width = 0.8 / max(len(results), 1)
  for i, res in enumerate(results):
    for group, hatch in (("clean", ""), ("noisy", "//")):
      h = np.asarray(res["kappa_hist"][group], float)
      ax2.bar(np.arange(len(h)) + (i - 0.5) * width / 2 + (0.5 * width if group == "noisy" else 0),
              h / max(h.sum(), 1), width / 2, hatch=hatch,
              label=f"{res['method']} {group} (AUC {res['kappa_auc']:.2f})")
  ax2.set_xlabel("kappa")
  ax2.set_ylabel("fraction")
  ax2.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


__all__ = ["kappa_auc", "kappa_histograms", "kappa_values", "plot", "subset_accuracies",
           "track_training"]
