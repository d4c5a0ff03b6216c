"""Weight loss landscapes along filter-normalised random directions (Li et al. 2018; AWP 2020).

A landscape is ``g(alpha) = L(w + alpha d)`` (1-D) or ``g(alpha, beta) = L(w + alpha d1 + beta d2)``
(2-D) for random directions d that are *filter-normalised*: every filter of d is rescaled to the
norm of the matching filter of w, which removes the scale invariance of ReLU networks and makes
landscapes of different models comparable (Li et al. 2018, Section 4).

For adversarial training, L must be the adversarial loss with adversarial examples regenerated at
every ``w + alpha d`` (:func:`robust_jax.analysis.adversarial.adversarial_loss_fn`); examples
pre-generated at w give the wrong picture (the seeds: AWP's talk, "Weight loss landscape").

Filters in Flax: a kernel's output channel is its *last* axis (``Conv`` kernels are HWIO, ``Dense``
kernels (in, out)), so filter j of a leaf with ``ndim >= 2`` is ``leaf[..., j]``. PyTorch's filter
is the first axis, which is the same set of weights. Leaves with ``ndim <= 1`` (biases, BatchNorm
scale and bias) are handled by ``one_dim``:

* ``"zero"`` (default): d = 0 there, Li et al.'s ``--xignore biasbn``, used for their published
  plots and by AWP's landscapes;
* ``"elementwise"``: every scalar is its own filter, |d_i| = |w_i| (Liu et al.'s
  ``AdversaryLossLandscape`` ``generate_vec(mode='normalized')``, which perturbs every tensor).

BatchNorm running statistics are not parameters and are never perturbed (Li et al.'s ``states``
direction type, which also moves them, is not offered).

References:
  Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018.
  Wu, Xia, Wang, "Adversarial Weight Perturbation Helps Robust Generalization", NeurIPS 2020.
  Liu, Salzmann, Lin, Tomioka, Süsstrunk, "On the Loss Landscape of Adversarial Training:
  Identifying Challenges and How to Overcome Them", NeurIPS 2020.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax.analysis.adversarial import (adversarial_loss_fn,  # noqa: F401 (re-exported)
                                             adversarial_metrics_fn)

ONE_DIM = ("zero", "elementwise")
PyTree = Any


def filter_normalize(direction: PyTree, params: PyTree, *, one_dim: str = "zero",
                     eps: float = 1e-10) -> PyTree:
  """Rescales each filter of ``direction`` to the norm of the matching filter of ``params``.

  Args:
    direction: a pytree shaped like ``params``.
    params: the weights w.
    one_dim: ``"zero"`` or ``"elementwise"``, for leaves with ``ndim <= 1`` (see the module doc).
    eps: added to a filter's norm of d before dividing (Li et al.'s 1e-10).

  Returns:
    d with ``||d[..., j]|| = ||w[..., j]||`` for every leaf with ``ndim >= 2`` and every j (up to
    eps).

  Raises:
    ValueError: for an unknown ``one_dim`` or mismatched shapes.
  """
  if one_dim not in ONE_DIM:
    raise ValueError(f"one_dim must be one of {ONE_DIM}, got {one_dim!r}")

  def leaf(d, w):
    if d.shape != w.shape:
      raise ValueError(f"direction leaf of shape {d.shape} does not match parameter {w.shape}")
    if w.ndim >= 2:
      axes = tuple(range(w.ndim - 1))
      dn = jnp.sqrt(jnp.sum(d * d, axis=axes, keepdims=True))
      wn = jnp.sqrt(jnp.sum(w * w, axis=axes, keepdims=True))
      return d * wn / (dn + eps)
    if one_dim == "zero":
      return jnp.zeros_like(d)
    return d * jnp.abs(w) / (jnp.abs(d) + eps)

  return jax.tree.map(leaf, direction, params)


def filter_normalized_direction(key: jax.Array, params: PyTree, *,
                                one_dim: str = "zero") -> PyTree:
  """A Gaussian direction shaped like ``params``, filter-normalised (Li et al. 2018).

  Args:
    key: PRNG key; leaf i (in ``jax.tree.leaves`` order) draws from ``split(key, n)[i]``.
    params: the weights w (a pytree of float arrays).
    one_dim: ``"zero"`` (Li et al.'s ignore-biasbn) or ``"elementwise"`` (Liu et al.).

  Returns:
    A pytree d shaped like ``params`` (see :func:`filter_normalize`).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> w = {"kernel": jnp.arange(6.).reshape(3, 2), "bias": jnp.ones(2)}
    >>> d = filter_normalized_direction(jax.random.key(0), w)
    >>> jnp.allclose(jnp.linalg.norm(d["kernel"], axis=0), jnp.linalg.norm(w["kernel"], axis=0))
    Array(True, dtype=bool)
    >>> d["bias"].tolist()
    [0.0, 0.0]
  """
  if one_dim not in ONE_DIM:
    raise ValueError(f"one_dim must be one of {ONE_DIM}, got {one_dim!r}")
  return _filter_normalized_direction(key, params, one_dim=one_dim)


@functools.partial(jax.jit, static_argnames=("one_dim",))
def _filter_normalized_direction(key, params, *, one_dim):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, max(len(leaves), 1))
  noise = [jax.random.normal(k, jnp.shape(w), jnp.result_type(w)) for k, w in zip(keys, leaves)]
  return filter_normalize(treedef.unflatten(noise), params, one_dim=one_dim)


def _axpy(params, directions, coeffs):
  out = params
  for c, d in zip(coeffs, directions):
    out = jax.tree.map(lambda w, v, c=c: w + c.astype(w.dtype) * v, out, d)
  return out


@functools.partial(jax.jit, static_argnames=("loss_at_params", "batch_size"))
def _scan(loss_at_params, params, directions, coeffs, batch_size):
  def at(c):
    return loss_at_params(_axpy(params, directions, c))
  if batch_size is None:
    return jax.vmap(at)(coeffs)
  return jax.lax.map(at, coeffs, batch_size=batch_size if batch_size > 1 else None)


def _coeffs(*axes):
  grids = np.meshgrid(*[np.asarray(a, np.float32).reshape(-1) for a in axes], indexing="ij")
  return jnp.asarray(np.stack([g.reshape(-1) for g in grids], axis=1))


def loss_landscape_1d(loss_at_params: Callable[[PyTree], Any], params: PyTree, direction: PyTree,
                      alphas, *, batch_size: Optional[int] = 1) -> Any:
  """``g(alpha) = loss_at_params(params + alpha * direction)`` for every alpha, in one program.

  Args:
    loss_at_params: a pure function of a parameter pytree returning a scalar or a pytree of scalars
      (e.g. :func:`adversarial_loss_fn` or :func:`adversarial_metrics_fn`); keep one object per
      analysis (it is a static argument: a new object compiles again).
    params: the weights w.
    direction: d, shaped like ``params`` (e.g. :func:`filter_normalized_direction`).
    alphas: [A] coefficients (Li et al.: 51 points in [-1, 1]).
    batch_size: alphas evaluated together with ``vmap`` inside ``lax.map`` (memory grows with it;
      None vmaps all of them at once, 1 evaluates them one after the other).

  Returns:
    The outputs stacked over alphas (numpy): [A] for a scalar loss, else a pytree of [A] arrays.
  """
  out = _scan(loss_at_params, params, (direction,), _coeffs(alphas), batch_size)
  return jax.device_get(out)


def loss_landscape_2d(loss_at_params: Callable[[PyTree], Any], params: PyTree, direction1: PyTree,
                      direction2: PyTree, alphas, betas, *,
                      batch_size: Optional[int] = 1) -> Any:
  """``g(alpha, beta) = loss_at_params(params + alpha * d1 + beta * d2)`` on a grid.

  Args:
    loss_at_params: as :func:`loss_landscape_1d`.
    params: the weights w.
    direction1: d1, shaped like ``params``.
    direction2: d2, shaped like ``params`` (an independent draw).
    alphas: [A] coefficients of d1.
    betas: [B] coefficients of d2.
    batch_size: grid points evaluated together (see :func:`loss_landscape_1d`).

  Returns:
    The outputs on the grid: [A, B] (``[i, j]`` at ``alphas[i]``, ``betas[j]``), or a pytree of
    them.
  """
  alphas, betas = np.asarray(alphas).reshape(-1), np.asarray(betas).reshape(-1)
  out = _scan(loss_at_params, params, (direction1, direction2), _coeffs(alphas, betas), batch_size)
  return jax.tree.map(lambda v: np.asarray(v).reshape((len(alphas), len(betas)) + v.shape[1:]),
                      jax.device_get(out))
