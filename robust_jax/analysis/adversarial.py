"""The adversarial loss as a function of the weights: what the weight-space analyses evaluate.

Liu et al. (2020) and Wu et al. (2020, AWP) study

    rho(w) = 1/n sum_i max_{||x'_i - x_i|| <= eps} l(f_w(x'_i), y_i),

a function of the weights whose inner maximum moves with w. Two ways to evaluate it are provided:

* :func:`adversarial_loss_fn` regenerates the adversarial examples at every weight it is called at
  (PGD against ``f_w`` itself). This is the correct landscape: AWP's talk shows that a landscape
  drawn on adversarial examples pre-generated at the trained weights "fails to draw the conclusion"
  (the seeds, 000 "Weight loss landscape"); Liu et al.'s ``param_scanner`` with ``adv_calc_freq=1``
  and AWP's ``adv_evaluation.py`` do the same.
* :func:`fixed_examples_loss_fn` holds examples generated once (:func:`adversarial_examples`) fixed,
  which is what the Hessian of Liu et al. (``util/hessian.py``) differentiates: the Hessian of the
  loss on fixed inputs, the second-order term of rho near w (Danskin: the gradient of rho is the
  gradient at the fixed maximiser).

Data are a list of equally sized batches (:func:`robust_jax.data.pipeline.eval_batches` pads the
last one and adds a ``mask``); they are stacked into ``[num_batches, B, ...]`` arrays once and
scanned with ``lax.map``, so one evaluation is one compiled program. Batch ``i``'s random start uses
the key ``fold_in(key, i)`` at every weight (common random numbers): curves are smooth in w and at w
itself the value equals a plain :func:`robust_jax.attacks.pgd` evaluation with the same keys.

The model is seen as ``apply_fn(variables, x, train=False)`` (a linen ``model.apply``) in eval mode:
BatchNorm uses the running statistics ``batch_stats``, which are never perturbed.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import attacks
from robust_jax import losses

Batches = Iterable[Mapping[str, Any]]


def stack_batches(batches: Batches) -> Dict[str, jax.Array]:
  """Stacks equal batches into ``{"image": [nb, B, ...], "label": [nb, B], "mask": [nb, B]}``.

  Args:
    batches: dicts with ``"image"`` (float [B, H, W, C] in [0, 1]), ``"label"`` (int [B]) and
      optionally ``"mask"`` (bool [B], real examples); or one such dict already stacked (with a
      leading batch-of-batches axis and a ``"mask"``), returned as is.

  Returns:
    The stacked arrays (``mask`` all True where the batches had none).

  Raises:
    ValueError: if there are no batches or their sizes differ.
  """
  if isinstance(batches, Mapping) and "mask" in batches and np.ndim(batches["label"]) == 2:
    return dict(batches)
  batches = list(batches)
  if not batches:
    raise ValueError("batches is empty")
  sizes = {len(b["label"]) for b in batches}
  if len(sizes) != 1:
    raise ValueError(f"batches must have one size (pad the last one, e.g. with "
                     f"pipeline.eval_batches), got sizes {sorted(sizes)}")
  return {
      "image": jnp.stack([jnp.asarray(b["image"], jnp.float32) for b in batches]),
      "label": jnp.stack([jnp.asarray(b["label"], jnp.int32) for b in batches]),
      "mask": jnp.stack([jnp.asarray(b.get("mask", np.ones(len(b["label"]), bool)), bool)
                         for b in batches]),
  }


def make_logits_fn(apply_fn: Callable, params: Any, batch_stats: Any = None):
  """``x -> apply_fn({"params": params, "batch_stats": batch_stats}, x, train=False)``."""
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  return lambda x: apply_fn(variables, x, train=False)


def pgd_attack(*, eps, step_size, num_steps, norm="linf", loss="ce", start="uniform"):
  """The PGD attack of these analyses, ``attack(logits_fn, x, y, key)`` (:func:`attacks.make`).

  Its hyperparameters are validated here, once, before any weight is evaluated.
  """
  return attacks.make("pgd", eps=eps, step_size=step_size, num_steps=num_steps, norm=norm,
                      loss=loss, start=start)


def adversarial_metrics_fn(
    apply_fn: Callable,
    batch_stats: Any,
    batches: Batches,
    *,
    eps,
    step_size,
    num_steps,
    key: jax.Array,
    norm: str = "linf",
    loss: str = "ce",
    start: str = "uniform",
) -> Callable[[Any], Dict[str, jax.Array]]:
  """Builds ``params -> {"loss", "robust_acc"}``, attacking the model at ``params`` afresh.

  Args:
    apply_fn: ``apply_fn(variables, x, train=False) -> logits`` (a linen ``model.apply``).
    batch_stats: BatchNorm running statistics (``{}`` or None without BatchNorm); held fixed.
    batches: equally sized batches (see :func:`stack_batches`).
    eps, step_size, num_steps, norm, loss, start: the PGD attack (:func:`robust_jax.attacks.pgd`).
    key: PRNG key; batch i starts from ``fold_in(key, i)`` at every ``params``.

  Returns:
    A pure, jittable function of a parameter pytree: the mask-weighted mean cross-entropy at the
    adversarial examples (float32 scalar) and the fraction of them classified correctly.
  """
  data = stack_batches(batches)
  attack = pgd_attack(eps=eps, step_size=step_size, num_steps=num_steps, norm=norm, loss=loss,
                      start=start)
  idx = jnp.arange(data["label"].shape[0])

  def metrics_at(params):
    logits_fn = make_logits_fn(apply_fn, params, batch_stats)

    def one(args):
      i, x, y, m = args
      res = attack(logits_fn, x, y, jax.random.fold_in(key, i))
      logits = logits_fn(res.x_adv)
      m = m.astype(jnp.float32)
      ce = losses.cross_entropy(logits, y)
      correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
      return jnp.sum(ce * m), jnp.sum(correct * m), jnp.sum(m)

    ce, correct, n = jax.lax.map(one, (idx, data["image"], data["label"], data["mask"]))
    n = jnp.maximum(jnp.sum(n), 1.0)
    return {"loss": jnp.sum(ce) / n, "robust_acc": jnp.sum(correct) / n}

  return metrics_at


def adversarial_loss_fn(
    apply_fn: Callable,
    batch_stats: Any,
    batches: Batches,
    *,
    eps,
    step_size,
    num_steps,
    key: jax.Array,
    norm: str = "linf",
    loss: str = "ce",
    start: str = "uniform",
) -> Callable[[Any], jax.Array]:
  """Builds ``loss_at_params(params)``: the adversarial loss rho(params), examples regenerated.

  The scalar of :func:`adversarial_metrics_fn` (same arguments): mean cross-entropy of PGD
  adversarial examples generated against the model at ``params`` itself.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> apply_fn = lambda v, x, train=False: x.reshape(x.shape[0], -1) @ v["params"]["w"]
    >>> batches = [{"image": jnp.full((4, 2, 2, 1), 0.5), "label": jnp.arange(4) % 3}]
    >>> f = adversarial_loss_fn(apply_fn, {}, batches, eps=0.1, step_size=0.05, num_steps=2,
    ...                         key=jax.random.key(0))
    >>> round(float(f({"w": jnp.zeros((4, 3))})), 4)  # a constant classifier: log 3 anywhere
    1.0986
  """
  metrics_at = adversarial_metrics_fn(apply_fn, batch_stats, batches, eps=eps, step_size=step_size,
                                      num_steps=num_steps, key=key, norm=norm, loss=loss,
                                      start=start)
  return lambda params: metrics_at(params)["loss"]


def adversarial_examples(
    apply_fn: Callable,
    params: Any,
    batch_stats: Any,
    batches: Batches,
    *,
    eps,
    step_size,
    num_steps,
    key: jax.Array,
    norm: str = "linf",
    loss: str = "ce",
    start: str = "uniform",
) -> Dict[str, jax.Array]:
  """PGD adversarial examples of the model at ``params``, stacked like :func:`stack_batches`.

  Returns:
    ``{"image": x_adv [nb, B, ...], "label": [nb, B], "mask": [nb, B]}``; batch i attacked from
    ``fold_in(key, i)``.
  """
  data = stack_batches(batches)
  attack = pgd_attack(eps=eps, step_size=step_size, num_steps=num_steps, norm=norm, loss=loss,
                      start=start)
  logits_fn = make_logits_fn(apply_fn, params, batch_stats)

  @jax.jit
  def run(data):
    def one(args):
      i, x, y = args
      return attack(logits_fn, x, y, jax.random.fold_in(key, i)).x_adv
    idx = jnp.arange(data["label"].shape[0])
    return jax.lax.map(one, (idx, data["image"], data["label"]))

  return dict(data, image=run(data))


def fixed_examples_loss_fn(apply_fn: Callable, batch_stats: Any,
                           data: Batches) -> Callable[[Any], jax.Array]:
  """Builds ``params -> mean cross-entropy`` on fixed (e.g. pre-generated adversarial) examples.

  Args:
    apply_fn: ``apply_fn(variables, x, train=False) -> logits``.
    batch_stats: BatchNorm running statistics, held fixed.
    data: batches or the stacked output of :func:`adversarial_examples`.

  Returns:
    A pure, twice-differentiable function of the parameters (the mask-weighted mean CE).
  """
  data = stack_batches(data)

  def loss_at(params):
    logits_fn = make_logits_fn(apply_fn, params, batch_stats)

    def one(args):
      x, y, m = args
      m = m.astype(jnp.float32)
      return jnp.sum(losses.cross_entropy(logits_fn(x), y) * m), jnp.sum(m)

    ce, n = jax.lax.map(one, (data["image"], data["label"], data["mask"]))
    return jnp.sum(ce) / jnp.maximum(jnp.sum(n), 1.0)

  return loss_at
