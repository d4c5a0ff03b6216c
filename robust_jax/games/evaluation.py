"""Evaluating a generator without Inception: a classifier's Frechet distance, mode coverage, grids.

**Not Inception FID.** The Inception network is not available offline, so the feature network is a
classifier of this library trained on the same dataset (``mlp`` on the digits, ``cnn4`` on
MNIST-5k, plain cross-entropy through :func:`robust_jax.training.loop.train_and_evaluate`). The
features are the input of its last layer (the layer named ``"logits"``: 256 ReLU units of the MLP,
the 128 ReLU units of CNN4). The Frechet distance between Gaussians fitted to real and generated
features,

  FD = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2}),

is the "Frechet classifier distance" of the MNIST literature (``dfaroughy/FID-MNIST``). Its values
are comparable only for the same classifier, the same real set and the same sample size (the
estimate is biased upwards for small n); :class:`Evaluator` reports the real-train vs real-test
distance at the same n as the floor.

Mode coverage: the classifier's labels of generated samples, as a class histogram, the number of
classes that receive at least half their uniform share, and the KL divergence from the histogram
to the uniform distribution (0 when every class is equally frequent; log 10 = 2.30 when one class
takes everything).

Example:

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> a, b = rng.normal(size=(500, 3)), rng.normal(size=(500, 3)) + 1.0
>>> fd = frechet_distance(feature_statistics(a), feature_statistics(b))
>>> bool(2.5 < fd < 3.5)  # ||mu_a - mu_b||^2 = 3, same covariance
True
>>> coverage(np.array([0, 0, 1, 1]), num_classes=2)["modes"]
2
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robust_jax.games import losses
from robust_jax.training import restore as restore_lib

FEATURE_LAYER = "logits"
CLASSIFIERS = {"digits": "mlp", "mnist5k": "cnn4"}


class FeatureStats(NamedTuple):
  """Mean [k] and covariance [k, k] (float64) of a feature sample of size ``n``."""
  mu: np.ndarray
  sigma: np.ndarray
  n: int


def feature_statistics(features: np.ndarray) -> FeatureStats:
  """The mean and (unbiased) covariance of features [n, k]."""
  f = np.asarray(features, np.float64).reshape(len(features), -1)
  return FeatureStats(f.mean(0), np.cov(f, rowvar=False), len(f))


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((m + m.T) / 2)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
  """``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` between two fitted Gaussians.

  ``Tr (S_a S_b)^{1/2}`` is computed as ``Tr (S_a^{1/2} S_b S_a^{1/2})^{1/2}`` (symmetric, PSD:
  eigenvalues, no complex square roots), valid for singular covariances too.
  """
  ra = _sqrt_psd(a.sigma)
  cross = np.sqrt(np.clip(np.linalg.eigvalsh(ra @ b.sigma @ ra), 0, None)).sum()
  return float(np.sum((a.mu - b.mu) ** 2) + np.trace(a.sigma) + np.trace(b.sigma) - 2 * cross)


def coverage(labels: np.ndarray, *, num_classes: int) -> Dict[str, Any]:
  """The class histogram of predicted labels and two summaries (see the module docstring)."""
  counts = np.bincount(np.asarray(labels), minlength=num_classes)[:num_classes]
  p = counts / max(counts.sum(), 1)
  nz = p > 0
  kl = float(np.sum(p[nz] * np.log(p[nz] * num_classes)))
  return {"class_histogram": counts.tolist(), "modes": int(np.sum(p >= 0.5 / num_classes)),
          "kl_to_uniform": kl}


def feature_fn(trained: restore_lib.TrainedModel) -> Callable[[jax.Array], tuple]:
  """``x -> (features, logits)`` of a restored classifier (eval mode), jitted.

  The features are the input of its submodule named ``"logits"`` (captured with
  ``flax.linen.intercept_methods``).

  Raises:
    ValueError: if the model has no layer named ``"logits"``.
  """
  variables = {"params": trained.params, "batch_stats": trained.batch_stats}
  if FEATURE_LAYER not in trained.params:
    raise ValueError(f"the feature classifier needs a last layer named {FEATURE_LAYER!r}; "
                     f"{trained.config.model!r} has {sorted(trained.params)}")

  def apply(x):
    captured = []

    def interceptor(next_fun, args, kwargs, context):
      if context.module.name == FEATURE_LAYER and context.method_name == "__call__":
        captured.append(args[0])
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      logits = trained.model.apply(variables, x, train=False)
    return captured[0].reshape(x.shape[0], -1), logits

  return jax.jit(apply)


def train_feature_classifier(dataset: str, workdir: str, *, model: str = "", num_epochs: int = 5,
                             seed: int = 0) -> restore_lib.TrainedModel:
  """Trains (or, if ``workdir`` holds a finished run, loads) the feature classifier of ``dataset``.

  Plain cross-entropy training (method ``"standard"``, Adam 1e-3, batch 128) with the library's
  training loop; the attack evaluation of that loop is cut to one step. Deterministic in ``seed``.

  Args:
    dataset: a dataset name (``"digits"``, ``"mnist5k"``, ...).
    workdir: where the classifier's checkpoints and metrics go.
    model: a model of :data:`robust_jax.models.MODELS` with a ``"logits"`` layer; "" picks
      :data:`CLASSIFIERS` ``[dataset]``.
    num_epochs: training epochs.
    seed: the training seed.

  Returns:
    The restored :class:`robust_jax.training.restore.TrainedModel` (latest checkpoint). A
    ``workdir`` that already holds a run of the same model and dataset with at least
    ``num_epochs`` epochs is loaded as it is (several GAN runs share one classifier).
  """
  from robust_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  from robust_jax.training import loop  # pylint: disable=g-import-not-at-top

  c = config_lib.base_config()
  c.dataset, c.model, c.method, c.seed = dataset, model or CLASSIFIERS.get(dataset, "mlp"), \
      "standard", seed
  c.optimizer, c.learning_rate, c.weight_decay, c.lr_schedule = "adam", 1e-3, 0.0, "constant"
  c.num_epochs, c.batch_size, c.eps = num_epochs, 128, 0.1
  c.select_attack_steps = c.test_attack_steps = 1
  c.train_diagnostics = c.progress = False
  try:
    trained = restore_lib.load_trained(workdir, which="latest")
  except FileNotFoundError:
    trained = None
  if (trained is not None and trained.config.model == c.model and trained.config.dataset == dataset
      and trained.meta.get("epoch", 0) >= num_epochs):
    return trained
  loop.train_and_evaluate(c, workdir)
  return restore_lib.load_trained(workdir, which="latest")


def save_grid(images: np.ndarray, path: str, *, ncols: int = 8, title: Optional[str] = None) -> str:
  """Saves images [n, H, W, 1 or 3] in [0, 1] as one PNG grid (matplotlib, Agg); returns ``path``."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  images = np.clip(np.asarray(images, np.float32), 0, 1)
  n, h, w, c = images.shape
  nrows = -(-n // ncols)
  grid = np.ones((nrows * (h + 1) + 1, ncols * (w + 1) + 1, c), np.float32)
  for i, img in enumerate(images):
    r, q = divmod(i, ncols)
    grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = img
  fig, ax = plt.subplots(figsize=(ncols * 0.6 + 0.4, nrows * 0.6 + 0.6))
  ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
  ax.axis("off")
  if title:
    ax.set_title(title, fontsize=9)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)
  return path


def _batched(fn, x: np.ndarray, batch_size: int):
  outs = [jax.device_get(fn(jnp.asarray(x[i:i + batch_size])))
          for i in range(0, len(x), batch_size)]
  return jax.tree.map(lambda *a: np.concatenate(a), *outs)


class Evaluator:
  """FD, held-out Wasserstein estimate and mode coverage of generated samples, one call per eval.

  Args:
    trained: the feature classifier (:func:`train_feature_classifier`).
    real_train: real training images [n_train, H, W, C] (for the floor).
    real_test: held-out real images [n, H, W, C]; ``n`` fixes the sample size of every FD.
    num_classes: the dataset's class count.
    batch_size: the evaluation batch size.
  """

  def __init__(self, trained, real_train: np.ndarray, real_test: np.ndarray, *, num_classes: int,
               batch_size: int = 500):
    self.features = feature_fn(trained)
    self.batch_size = batch_size
    self.num_classes = num_classes
    self.real = np.asarray(real_test, np.float32)
    self.n = len(self.real)
    self.real_stats = feature_statistics(self._feats(self.real)[0])
    floor = feature_statistics(self._feats(np.asarray(real_train[:self.n], np.float32))[0])
    self.floor = frechet_distance(floor, self.real_stats)

  def _feats(self, x):
    return _batched(self.features, x, self.batch_size)

  def __call__(self, samples: np.ndarray,
               critic_fn: Optional[Callable[[jax.Array], jax.Array]] = None) -> Dict[str, Any]:
    """Evaluates ``samples`` [m, H, W, C] (m = ``self.n`` for comparable FDs).

    Returns:
      ``{"fd", "fd_floor", "n", "class_histogram", "modes", "kl_to_uniform"}``, plus
      ``"wasserstein_heldout"`` (``E d(real_test) - E d(samples)``) when ``critic_fn`` is given.
    """
    feats, logits = self._feats(np.asarray(samples, np.float32))
    out = {"fd": frechet_distance(self.real_stats, feature_statistics(feats)),
           "fd_floor": self.floor, "n": int(len(samples))}
    out.update(coverage(np.argmax(logits, -1), num_classes=self.num_classes))
    if critic_fn is not None:
      d_real = _batched(critic_fn, self.real, self.batch_size)
      d_fake = _batched(critic_fn, np.asarray(samples, np.float32), self.batch_size)
      out["wasserstein_heldout"] = float(losses.wasserstein_estimate(d_real, d_fake))
    return out


__all__ = ["CLASSIFIERS", "Evaluator", "FeatureStats", "coverage", "feature_fn",
           "feature_statistics", "frechet_distance", "save_grid", "train_feature_classifier"]
