"""DeepFool in l2 and linf (Moosavi-Dezfooli et al. 2016), batched with per-example masks.

Moosavi-Dezfooli, Fawzi and Frossard, "DeepFool: a simple and accurate method to fool deep neural
networks", CVPR 2016; the official ``LTS4/DeepFool`` ``Python/deepfool.py`` (``deepfool``, one
image), here for a batch with a per-example mask.

For each example, the candidate classes are the label y and the ``candidates - 1`` other classes
with the largest clean logits (the code: the top ``num_classes`` = 10 classes of the clean logits,
with the predicted class as the label; for a correctly classified example the two are the same).
At the current point x_i (x_0 = x), with w_k = grad f_k - grad f_y and f_k = z_k - z_y for each
candidate k != y (one backward pass per candidate class):

* the closest linearised boundary: l = argmin_k |f_k| / ||w_k||_q, q the dual norm (l2 for l2,
  l1 for linf), and r_i = (|f_l| / ||w_l||_q + 1e-4) times ``w_l / ||w_l||_2`` (l2) or
  ``sign(w_l)`` (linf), so that x + r_i lies just past the linearised boundary;
* r_tot += r_i and x_{i+1} = clip(x + (1 + overshoot) r_tot, 0, 1) (the code does not clip; the
  box is kept here, as foolbox's DeepFool does);
* the example stops when x_{i+1} is misclassified or after ``max_iter`` iterations.

DeepFool stops at its first adversarial point, which is then the record: ``x_adv`` is x_{i+1}
where the prediction changed (``distance`` its l2 or linf norm), x where it did not (``inf``).
On an affine classifier the first step lands on the boundary of the closest class region (up to
the overshoot and the 1e-4): the exact minimal distance, when that point is inside the box.

The loop is one masked ``lax.while_loop`` that exits when every example has stopped; the per-class
gradients are one ``vmap`` of the VJP over the candidates (the code loops over the classes).
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from robust_jax import validation
from robust_jax.attacks import _minimum_norm as mn
from robust_jax.attacks._loop import as_pytree_fn
from robust_jax.attacks._projections import bcast

NORMS = ("l2", "linf")


@functools.partial(jax.jit, static_argnames=("norm", "candidates"))
def _deepfool(logits_fn, x, y, overshoot, max_iter, *, norm, candidates):
  batch = x.shape[0]
  clean_logits = logits_fn(x)
  num_classes = clean_logits.shape[-1]
  k = min(candidates, num_classes)
  clean_mis = jnp.argmax(clean_logits, axis=-1) != y
  others = jnp.where(jax.nn.one_hot(y, num_classes, dtype=bool), -jnp.inf, clean_logits)
  cand = jnp.concatenate([y[:, None], jnp.argsort(-others, axis=1)[:, :k - 1]], axis=1)
  cotangents = jnp.moveaxis(jax.nn.one_hot(cand, num_classes, dtype=clean_logits.dtype), 1, 0)

  def step(x_k, r_tot):
    z, vjp = jax.vjp(logits_fn, x_k)
    jac = jax.vmap(lambda ct: vjp(ct)[0])(cotangents)  # [K, B, ...]
    jac = jnp.moveaxis(jac.reshape(k, batch, -1), 0, 1)  # [B, K, D]
    zc = jnp.take_along_axis(z, cand, axis=1)
    w = jac[:, 1:] - jac[:, :1]
    f = zc[:, 1:] - zc[:, :1]
    if norm == "l2":
      dual = jnp.sqrt(jnp.sum(w * w, axis=-1))
    else:
      dual = jnp.sum(jnp.abs(w), axis=-1)
    pert = jnp.where(dual > 0, jnp.abs(f) / jnp.where(dual > 0, dual, 1.0), jnp.inf)
    best = jnp.argmin(pert, axis=1)
    pert_l = jnp.take_along_axis(pert, best[:, None], axis=1)[:, 0]
    w_l = jnp.take_along_axis(w, best[:, None, None], axis=1)[:, 0]
    if norm == "l2":
      unit = w_l / jnp.maximum(jnp.sqrt(jnp.sum(w_l * w_l, axis=1, keepdims=True)), 1e-30)
    else:
      unit = jnp.sign(w_l)
    r_i = jnp.where(jnp.isfinite(pert_l)[:, None], (pert_l + 1e-4)[:, None] * unit, 0.0)
    return r_tot + r_i.reshape(x.shape)

  def cond(c):
    i, _, _, active, _ = c
    return (i < max_iter) & jnp.any(active)

  def body(c):
    i, x_k, r_tot, active, steps = c
    r_new = step(x_k, r_tot)
    x_new = jnp.clip(x + (1.0 + overshoot) * r_new, 0.0, 1.0)
    a = bcast(active, x)
    x_k = jnp.where(a, x_new, x_k)
    r_tot = jnp.where(a, r_new, r_tot)
    steps = steps + active.astype(jnp.int32)
    active = active & (jnp.argmax(logits_fn(x_k), axis=-1) == y)
    return i + 1, x_k, r_tot, active, steps

  carry0 = (jnp.asarray(0, jnp.int32), x, jnp.zeros_like(x), ~clean_mis,
            jnp.zeros((batch,), jnp.int32))
  _, x_k, _, active, steps = jax.lax.while_loop(cond, body, carry0)
  found = ~active & ~clean_mis & (steps > 0)
  return mn.finish(logits_fn, x, y, x_k, found, steps, norm, clean_mis)


def check_hyperparameters(*, norm="l2", candidates=10, overshoot=0.02, max_iter=50, **_unchecked):
  """Raises ValueError naming the first bad hyperparameter of :func:`deepfool` and its valid
  range (data-free: :func:`robust_jax.attacks.make` runs it before the first call)."""
  validation.check_choice("norm", norm, NORMS)
  validation.check_scalar("candidates", candidates, low=2, integer=True)
  validation.check_scalar("overshoot", overshoot, low=0.0)
  validation.check_scalar("max_iter", max_iter, low=0, integer=True)


def deepfool(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    norm: str = "l2",
    candidates: int = 10,
    overshoot=0.02,
    max_iter=50,
    key: Optional[jax.Array] = None,
) -> mn.MinNormResult:
  """DeepFool (Moosavi-Dezfooli et al. 2016), untargeted, l2 or linf, batched.

  Args:
    logits_fn: ``x -> logits`` [B, C], pure (raw logits, model in eval mode).
    x: float images [B, ...] in [0, 1].
    y: int32 labels [B].
    norm: ``"l2"`` or ``"linf"``.
    candidates: how many classes are linearised, the label included, >= 2 (10, the code's
      ``num_classes``; capped at C). Static: each value compiles once; it costs one backward pass
      per class and iteration.
    overshoot: >= 0 (0.02): the point taken is x + (1 + overshoot) r_tot.
    max_iter: iterations, >= 0 (50; traced).
    key: unused (the attack is deterministic); accepted for the common attack signature.

  Returns:
    A :class:`~robust_jax.attacks._minimum_norm.MinNormResult` (``norm`` distances).

  Raises:
    ValueError: on a bad argument (named, with its valid range), when values are concrete.

  Example:
    >>> import jax.numpy as jnp
    >>> logits_fn = lambda x: x.reshape(x.shape[0], -1) @ jnp.array([[1., 0.], [0., 1.]])
    >>> x = jnp.array([[0.6, 0.4]]); y = jnp.array([0])  # the boundary is 0.2 / sqrt(2) away
    >>> r = deepfool(logits_fn, x, y)
    >>> round(float(r.distance[0]), 3), int(r.num_steps[0])  # 1.02 (0.1414 + 1e-4)
    (0.144, 1)
  """
  check_hyperparameters(norm=norm, candidates=candidates, overshoot=overshoot, max_iter=max_iter)
  validation.check_attack_inputs(logits_fn, x, y, key=key)
  return _deepfool(as_pytree_fn(logits_fn), x, jnp.asarray(y, jnp.int32),
                   jnp.asarray(overshoot, x.dtype), jnp.asarray(max_iter, jnp.int32), norm=norm,
                   candidates=int(candidates))
