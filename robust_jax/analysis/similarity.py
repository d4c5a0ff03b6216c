"""How much adversarial perturbations change when the weights move: Liu et al. (2020), Tables 1-2.

To explain why the adversarial loss gets sharper as eps grows, Liu et al. compare the perturbations
``delta(theta') = x'(theta') - x`` that PGD finds against two nearby models, ``theta + a v`` and
``theta - a v``, by their average cosine similarity over the (training) examples, for v the top
eigenvector of the Hessian of the adversarial loss and for v a random unit vector. Along the top
eigenvector the perturbations decorrelate quickly as a grows (0.976 at a = 0 to 0.471 at a = 0.1 for
ResNet-18 at eps = 2/255), along a random direction they hardly change (0.975): the adversarial
examples, hence the loss being minimised, jump with the weights along sharp directions.

Both directions are unit vectors over all parameters (``||v|| = 1``), so ``a`` is a Euclidean
distance in weight space (the seed's MNIST table uses a in {0, 0.01, 0.03, 0.05, 0.1}, CIFAR-10 {0,
0.1, 0.3, 0.5, 1}).

Random starts: by default both models attack batch i from the same start (``fold_in(key, i)``:
common random numbers), so a = 0 gives exactly 1 and every decrease is due to the weights. The
seed's a = 0 entries (0.976, 0.861, ...) are below 1 because its two attacks started independently;
``independent_starts=True`` reproduces that baseline.

A perturbation of norm 0 (e.g. eps = 0) has no direction: two zero perturbations count as cosine 1,
one zero and one non-zero as 0.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax.analysis.adversarial import Batches, make_logits_fn, pgd_attack, stack_batches

PyTree = Any


@jax.jit
def random_unit_direction(key: jax.Array, params: PyTree) -> PyTree:
  """A Gaussian direction shaped like ``params``, scaled to unit norm over all leaves together."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, max(len(leaves), 1))
  d = [jax.random.normal(k, jnp.shape(w), jnp.result_type(w)) for k, w in zip(keys, leaves)]
  norm = jnp.sqrt(sum(jnp.sum(x * x) for x in d))
  return treedef.unflatten([x / norm for x in d])


def cosine_per_example(a: jax.Array, b: jax.Array) -> jax.Array:
  """Cosine similarity of ``a[i]`` and ``b[i]`` flattened, [B] (1 if both are 0, 0 if one is)."""
  a = a.reshape(a.shape[0], -1)
  b = b.reshape(b.shape[0], -1)
  na = jnp.linalg.norm(a, axis=1)
  nb = jnp.linalg.norm(b, axis=1)
  cos = jnp.sum(a * b, axis=1) / jnp.maximum(na * nb, 1e-30)
  both_zero = (na == 0) & (nb == 0)
  return jnp.where(both_zero, 1.0, jnp.where((na == 0) | (nb == 0), 0.0, cos))


@functools.partial(jax.jit, static_argnames=("apply_fn", "kw_items", "independent_starts"))
def _similarity(apply_fn, params, batch_stats, direction, data, alphas, key, *, kw_items,
                independent_starts):
  attack = pgd_attack(**dict(kw_items))
  idx = jnp.arange(data["label"].shape[0])

  def at(a):
    plus = jax.tree.map(lambda w, v: w + a.astype(w.dtype) * v, params, direction)
    minus = jax.tree.map(lambda w, v: w - a.astype(w.dtype) * v, params, direction)
    fp = make_logits_fn(apply_fn, plus, batch_stats)
    fm = make_logits_fn(apply_fn, minus, batch_stats)

    def one(args):
      i, x, y, m = args
      k = jax.random.fold_in(key, i)
      kp, km = (k, k)
      if independent_starts:
        kp, km = jax.random.fold_in(k, 1), jax.random.fold_in(k, 2)
      rp = attack(fp, x, y, kp)
      rm = attack(fm, x, y, km)
      m = m.astype(jnp.float32)
      cos = cosine_per_example(rp.x_adv - x, rm.x_adv - x)
      return (jnp.sum(cos * m), jnp.sum(rp.misclassified * m), jnp.sum(rm.misclassified * m),
              jnp.sum(m))

    cos, ep, em, n = jax.lax.map(one, (idx, data["image"], data["label"], data["mask"]))
    n = jnp.maximum(jnp.sum(n), 1.0)
    return jnp.sum(cos) / n, jnp.sum(ep) / n, jnp.sum(em) / n

  return jax.lax.map(at, alphas)


def perturbation_similarity(
    apply_fn: Callable,
    params: PyTree,
    batch_stats: Any,
    batches: Batches,
    direction: PyTree,
    alphas,
    *,
    eps,
    step_size,
    num_steps,
    key: jax.Array,
    norm: str = "linf",
    loss: str = "ce",
    start: str = "uniform",
    independent_starts: bool = False,
) -> Dict[str, Any]:
  """Average cosine between PGD perturbations at ``params + a v`` and ``params - a v``, per a.

  Args:
    apply_fn: ``apply_fn(variables, x, train=False) -> logits`` (a linen ``model.apply``; static,
      keep one object).
    params: the weights theta.
    batch_stats: BatchNorm running statistics (held fixed; ``{}`` without BatchNorm).
    batches: equally sized batches (see :func:`robust_jax.analysis.adversarial.stack_batches`).
    direction: v, shaped like ``params``; a unit vector (the top Hessian eigenvector,
      :func:`robust_jax.analysis.hessian.eigenvector`, or :func:`random_unit_direction`).
    alphas: [A] distances a >= 0.
    eps, step_size, num_steps, norm, loss, start: the PGD attack.
    key: PRNG key; batch i starts from ``fold_in(key, i)``.
    independent_starts: give the two attacks independent random starts (the seed's a = 0 baseline).

  Returns:
    ``{"alphas": [A], "cosine": [A], "robust_error": [A] (at theta + a v),
    "robust_error_minus": [A] (at theta - a v)}`` as lists. ``cosine`` is 1 at a = 0 unless
    ``independent_starts``.
  """
  data = stack_batches(batches)
  kw = dict(eps=eps, step_size=step_size, num_steps=num_steps, norm=norm, loss=loss, start=start)
  pgd_attack(**kw)  # validates the hyperparameters before anything is compiled
  alphas_arr = jnp.asarray(np.asarray(alphas, np.float32).reshape(-1))
  cos, err_p, err_m = _similarity(apply_fn, params, batch_stats or {}, direction, data, alphas_arr,
                                  key, kw_items=tuple(sorted(kw.items())),
                                  independent_starts=independent_starts)
  return {"alphas": np.asarray(alphas_arr).tolist(), "cosine": np.asarray(cos).tolist(),
          "robust_error": np.asarray(err_p).tolist(),
          "robust_error_minus": np.asarray(err_m).tolist()}
