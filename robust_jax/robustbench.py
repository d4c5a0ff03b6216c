"""RobustBench's conventions: its AutoAttack evaluation and its leaderboard JSON, for any classifier.

RobustBench (Croce et al., "RobustBench: a standardized adversarial robustness benchmark", NeurIPS
2021 Datasets and Benchmarks; ``RobustBench/robustbench`` read at 78fcc9e) ranks a model by
``robustbench/eval.py: benchmark``: the clean accuracy and the accuracy under AutoAttack
``version='standard'`` on the first ``n_examples`` test points (10,000 for CIFAR-10/100, 5,000 for
ImageNet) at eps 8/255 (Linf) or 0.5 (L2), and records them with ``utils.py: update_json`` in
``model_info/<dataset>/<threat_model>/<model_name>.json``, whose fields are those of
``utils.py: ModelInfo`` (``link``, ``name``, ``authors``, ``additional_data``,
``number_forward_passes``, ``dataset``, ``venue``, ``architecture``, ``eps``, ``clean_acc``,
``reported``, ``autoattack_acc``, ``footnote``; accuracies as percent strings rounded to 2
decimals, eps a float). :func:`benchmark` runs the same evaluation with this library's AutoAttack
(fra31's official algorithm, :func:`robust_jax.attacks.autoattack`) and :func:`write_model_info`
writes or updates that file, as ``update_json`` does (only the fields given replace existing ones).

The JSON also carries, beside ModelInfo's fields, what RobustBench passes to ``benchmark`` but does
not store: ``threat_model``, ``n_examples`` and the AutoAttack ``version``, and a ``robust_jax``
entry (library version, key, per-stage accuracies and seconds), so the file says how it was made.
The corruptions threat models are not supported (they need the CIFAR-10-C data).

Example:

>>> import jax, jax.numpy as jnp
>>> w = jnp.eye(4)
>>> logits_fn = lambda x: 10.0 * x.reshape(x.shape[0], -1) @ w
>>> x = jnp.array([[0.9, 0.1, 0.1, 0.1], [0.9, 0.8, 0.1, 0.1]]).reshape(2, 2, 2, 1)
>>> info = benchmark(logits_fn, x, jnp.array([0, 0]), dataset="cifar10", threat_model="Linf",
...                 eps=0.1, n_examples=2, key=jax.random.key(0), version="custom",
...                 attacks=("apgd-ce",), n_iter=10)
>>> info["clean_acc"], info["autoattack_acc"], info["n_examples"]
('100.0', '50.0', 2)
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import numpy as np

import robust_jax
from robust_jax import validation

THREAT_MODELS = {"Linf": "linf", "L2": "l2"}
DATASETS = ("cifar10", "cifar100", "imagenet", "mnist", "digits", "mnist5k", "svhn")
# RobustBench's n_examples per dataset (robustbench/eval.py and its leaderboards).
N_EXAMPLES = {"cifar10": 10_000, "cifar100": 10_000, "imagenet": 5_000}
MODEL_INFO_FIELDS = ("link", "name", "authors", "additional_data", "number_forward_passes",
                     "dataset", "venue", "architecture", "eps", "clean_acc", "reported",
                     "autoattack_acc", "footnote")


def _percent(acc: float) -> str:
  """``update_json``'s rendering: ``str(round(acc * 100, 2))``."""
  return str(round(float(acc) * 100, 2))


def check_arguments(*, dataset: str, threat_model: str, eps: float, n_examples: int,
                    available: Optional[int] = None) -> None:
  """Raises ValueError unless the arguments are valid (names the argument and its valid range)."""
  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
  if threat_model not in THREAT_MODELS:
    raise ValueError(f"threat_model must be one of {list(THREAT_MODELS)} (the corruptions threat "
                     f"models need the corrupted data and are not supported), got {threat_model!r}")
  validation.check_eps(eps, THREAT_MODELS[threat_model], low_open=True)
  validation.check_scalar("n_examples", n_examples, low=1, integer=True,
                          high=available if available is not None else None)


def benchmark(logits_fn: Callable[[jax.Array], jax.Array], x, y, *, dataset: str,
              threat_model: str, eps: float, key: jax.Array, n_examples: Optional[int] = None,
              version: str = "standard", batch_size: Optional[int] = None,
              model_name: Optional[str] = None, architecture: Optional[str] = None,
              **autoattack_kwargs: Any) -> Dict[str, Any]:
  """RobustBench's ``benchmark``: clean and AutoAttack accuracy on the first ``n_examples`` points.

  Args:
    logits_fn: ``x -> logits`` of a deterministic model in eval mode, inputs in [0, 1]
      (normalisation inside the model, as RobustBench's models).
    x: float32 images [N, H, W, C] in [0, 1], in the test split's order (RobustBench takes the
      first ``n_examples``).
    y: int32 labels [N].
    dataset: the dataset's name (RobustBench's ``cifar10``, ``cifar100``, ``imagenet``; or this
      library's).
    threat_model: ``"Linf"`` or ``"L2"``.
    eps: the radius (RobustBench: 8/255 Linf, 0.5 L2 on CIFAR).
    key: PRNG key of AutoAttack.
    n_examples: points evaluated; default RobustBench's for the dataset (10,000 CIFAR, 5,000
      ImageNet), else all of ``x``.
    version: AutoAttack's version (``"standard"`` is RobustBench's).
    batch_size: AutoAttack's batch size (default: one batch).
    model_name, architecture: recorded as ``name`` and ``architecture``.
    **autoattack_kwargs: further arguments of :func:`robust_jax.attacks.autoattack`
      (``attacks=`` for ``version="custom"``, ``n_iter``, ...).

  Returns:
    The model-info dict (:data:`MODEL_INFO_FIELDS` that are known, plus ``threat_model``,
    ``n_examples``, ``version`` and ``robust_jax``).

  Raises:
    ValueError: for an unknown dataset or threat model, a bad eps, or ``n_examples`` outside
      [1, N].
  """
  from robust_jax import attacks  # pylint: disable=import-outside-toplevel
  x = np.asarray(x, np.float32)
  y = np.asarray(y, np.int32)
  n = N_EXAMPLES.get(dataset, len(y)) if n_examples is None else n_examples
  n = min(n, len(y)) if n_examples is None else n
  check_arguments(dataset=dataset, threat_model=threat_model, eps=eps, n_examples=n,
                  available=len(y))
  r = attacks.autoattack(logits_fn, x[:n], y[:n], eps=eps, key=key,
                         norm=THREAT_MODELS[threat_model], version=version, batch_size=batch_size,
                         **autoattack_kwargs)
  acc = np.asarray(r.robust_accuracy)
  info = {"name": model_name, "dataset": dataset, "architecture": architecture,
          "number_forward_passes": 1, "eps": float(eps),
          "clean_acc": _percent(np.mean(np.asarray(r.clean_correct))),
          "autoattack_acc": _percent(np.mean(np.asarray(r.robust))),
          "threat_model": threat_model, "n_examples": int(n), "version": version,
          "robust_jax": {"library_version": robust_jax.__version__,
                         "key": np.asarray(jax.random.key_data(key)).tolist(),
                         "stages": list(r.attack_names),
                         "accuracy_after_stage": [round(float(a), 6) for a in acc],
                         "seconds": [round(float(s), 3) for s in np.asarray(r.seconds)]}}
  return {k: v for k, v in info.items() if v is not None}


def write_model_info(path: str, info: Dict[str, Any]) -> Dict[str, Any]:
  """Writes ``info`` to ``path`` as ``update_json`` does: into an existing file, only the fields
  that are not None replace the old ones; returns what was written."""
  data: Dict[str, Any] = {}
  if os.path.exists(path):
    with open(path) as f:
      data = json.load(f)
  data.update({k: v for k, v in info.items() if v is not None})
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=2)
  os.replace(tmp, path)
  return data


def model_info_path(out_dir: str, *, dataset: str, threat_model: str, model_name: str) -> str:
  """RobustBench's layout: ``OUT/model_info/<dataset>/<threat_model>/<model_name>.json``."""
  return os.path.join(out_dir, "model_info", dataset, threat_model, f"{model_name}.json")


__all__ = ["DATASETS", "MODEL_INFO_FIELDS", "N_EXAMPLES", "THREAT_MODELS", "benchmark",
           "check_arguments", "model_info_path", "write_model_info"]
