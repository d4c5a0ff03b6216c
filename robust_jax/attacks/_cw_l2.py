"""CW-L2: the Carlini-Wagner l2 attack with its binary search over the constant c.

Carlini and Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017; the
official ``carlini/nn_robust_attacks`` ``l2_attack.py`` (``CarliniL2.attack_batch``), untargeted,
for images in [0, 1], per example.

* Change of variables: x' = (tanh(w + w_x) + 1) / 2 with w_x = arctanh((x - 0.5) 1.999999) (the
  code's [-0.5, 0.5] box shifted to [0, 1]); the optimisation variable w starts at 0.
* Loss per example: ||x' - x'_0||_2^2 + c max(0, z_y - max_{j != y} z_j + kappa), x'_0 the tanh
  image of x (w = 0).
* Adam (lr 1e-2, beta 0.9 / 0.999, TF1's epsilon 1e-8 added to sqrt(v) after the bias-corrected
  step size), re-initialised at every binary-search step, up to ``max_iterations`` iterations.
  With ``abort_early`` an example stops when, at an iteration that is a multiple of
  max(max_iterations // 10, 1), its loss exceeds 0.9999 times its loss at the previous such check
  (initially 1e6, as the code).
* Every evaluated iterate x' with argmax(z + kappa e_y) != y and a smaller distance than the record
  becomes the record (the record is taken on the distance to x itself, ||x' - x||_2, which is what
  the result reports; the code compares the distance to x'_0, at most about 1e-6 away).
* Binary search, ``binary_search_steps`` (9) steps from c = ``initial_const`` (1e-3): after a step
  with a success, upper = min(upper, c) and c = (lower + upper) / 2; after a failure,
  lower = max(lower, c) and c = (lower + upper) / 2 if upper < 1e9 else 10 c (upper starts at
  1e10); with 10 or more steps the last one uses c = upper.

Departure from the code: its early abort compares the loss summed over the batch, which couples
the examples; here each example aborts on its own loss. Untargeted only.

Loops: the binary search is a ``lax.fori_loop`` over a traced step count, each step one masked
``lax.while_loop`` of Adam iterations that exits when every example has aborted or the budget is
spent; all per-example state (w, Adam's moments, c, the bounds, the record) is in the carry.
Defaults are the code's (9 x 10000 iterations, an upper budget; most examples abort early).
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

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8


@jax.jit
def _cw_l2(logits_fn, x, y, binary_search_steps, max_iterations, learning_rate, confidence,
           initial_const, abort_early):
  batch = x.shape[0]
  dt = x.dtype
  clean_logits = logits_fn(x)
  clean_mis = jnp.argmax(clean_logits, axis=-1) != y
  w_x = jnp.arctanh((x - 0.5) * 1.999999)
  x0_img = (jnp.tanh(w_x) + 1.0) / 2.0
  onehot = jax.nn.one_hot(y, clean_logits.shape[-1], dtype=dt)
  period = jnp.maximum(max_iterations // 10, 1)

  def image(w):
    return (jnp.tanh(w + w_x) + 1.0) / 2.0

  def loss_fn(w, c):
    img = image(w)
    logits = logits_fn(img)
    l2 = jnp.sum(((img - x0_img) ** 2).reshape(batch, -1), axis=1)
    real = jnp.sum(onehot * logits, axis=1)
    other = jnp.max((1.0 - onehot) * logits - onehot * 10000.0, axis=1)
    per_example = l2 + c * jnp.maximum(0.0, real - other + confidence)
    return jnp.sum(per_example), (per_example, logits, img)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def one_search_step(s, outer):
    c, lower, upper, best_x, best_d2, steps = outer
    last_repeat = (binary_search_steps >= 10) & (s == binary_search_steps - 1)
    c = jnp.where(last_repeat, upper, c)

    def cond(inner):
      it, _, _, _, active, *_ = inner
      return (it < max_iterations) & jnp.any(active)

    def body(inner):
      it, w, m, v, active, prev, success, best_x, best_d2, steps = inner
      (_, (loss, logits, img)), g = grad_fn(w, c)
      check = abort_early & (it % period == 0)
      abort = check & (loss > prev * 0.9999)
      prev = jnp.where(check & ~abort, loss, prev)
      active = active & ~abort
      is_adv = jnp.argmax(logits + confidence * onehot, axis=-1) != y
      d2 = jnp.sum(((img - x) ** 2).reshape(batch, -1), axis=1)
      hit = active & is_adv
      success = success | hit
      better = hit & (d2 < best_d2)
      best_x = jnp.where(bcast(better, x), img, best_x)
      best_d2 = jnp.where(better, d2, best_d2)
      t = (it + 1).astype(dt)
      m_new = _BETA1 * m + (1.0 - _BETA1) * g
      v_new = _BETA2 * v + (1.0 - _BETA2) * g * g
      lr_t = learning_rate * jnp.sqrt(1.0 - _BETA2 ** t) / (1.0 - _BETA1 ** t)
      w_new = w - lr_t * m_new / (jnp.sqrt(v_new) + _ADAM_EPS)
      a = bcast(active, w)
      steps = steps + active.astype(jnp.int32)
      return (it + 1, jnp.where(a, w_new, w), jnp.where(a, m_new, m), jnp.where(a, v_new, v),
              active, prev, success, best_x, best_d2, steps)

    zeros = jnp.zeros_like(x)
    inner0 = (jnp.asarray(0, jnp.int32), zeros, zeros, zeros, ~clean_mis,
              jnp.full((batch,), 1e6, dt), jnp.zeros((batch,), bool), best_x, best_d2, steps)
    _, _, _, _, _, _, success, best_x, best_d2, steps = jax.lax.while_loop(cond, body, inner0)
    upper = jnp.where(success, jnp.minimum(upper, c), upper)
    lower = jnp.where(success, lower, jnp.maximum(lower, c))
    c = jnp.where(upper < 1e9, (lower + upper) / 2.0, jnp.where(success, c, c * 10.0))
    return c, lower, upper, best_x, best_d2, steps

  outer0 = (jnp.full((batch,), initial_const, dt), jnp.zeros((batch,), dt),
            jnp.full((batch,), 1e10, dt), x, jnp.full((batch,), jnp.inf, dt),
            jnp.zeros((batch,), jnp.int32))
  *_, best_x, best_d2, steps = jax.lax.fori_loop(0, binary_search_steps, one_search_step, outer0)
  return mn.finish(logits_fn, x, y, best_x, jnp.isfinite(best_d2), steps, "l2", clean_mis)


def check_hyperparameters(*, binary_search_steps=9, max_iterations=10000, learning_rate=1e-2,
                          confidence=0.0, initial_const=1e-3, abort_early=True, **_unchecked):
  """Raises ValueError naming the first bad hyperparameter of :func:`cw_l2` and its valid range
  (data-free: :func:`robust_jax.attacks.make` runs it before the first call)."""
  validation.check_scalar("binary_search_steps", binary_search_steps, low=1, integer=True)
  validation.check_scalar("max_iterations", max_iterations, low=0, integer=True)
  validation.check_scalar("learning_rate", learning_rate, low=0.0, low_open=True)
  validation.check_scalar("confidence", confidence, low=0.0)
  validation.check_scalar("initial_const", initial_const, low=0.0, low_open=True)
  if not isinstance(abort_early, bool) and validation.is_concrete(abort_early):
    raise ValueError(f"abort_early must be a bool, got {abort_early!r}")


def cw_l2(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    binary_search_steps=9,
    max_iterations=10000,
    learning_rate=1e-2,
    confidence=0.0,
    initial_const=1e-3,
    abort_early=True,
    key: Optional[jax.Array] = None,
) -> mn.MinNormResult:
  """The Carlini-Wagner l2 attack (2017), untargeted, with its binary search over c.

  Args:
    logits_fn: ``x -> logits`` [B, C], pure (raw logits: the code refuses probabilities).
    x: float images [B, ...] in [0, 1].
    y: int32 labels [B].
    binary_search_steps: steps of the search over c, >= 1 (9; traced).
    max_iterations: Adam iterations per search step, >= 0 (10000; the code's test script uses
      1000; traced).
    learning_rate: Adam's step, > 0 (1e-2).
    confidence: kappa >= 0 (0): the margin the attack asks for; success is
      argmax(z + kappa e_y) != y.
    initial_const: the first c, > 0 (1e-3).
    abort_early: stop an example when its loss stalls (module docstring).
    key: unused (the attack is deterministic); accepted for the common attack signature.

  Returns:
    A :class:`~robust_jax.attacks._minimum_norm.MinNormResult` (l2 distances); ``num_steps``
    counts the Adam iterations over all search steps.

  Raises:
    ValueError: on a bad argument (named, with its valid range), when values are concrete.

  Example:
    >>> import jax.numpy as jnp
    >>> logits_fn = lambda x: x.reshape(x.shape[0], -1) @ jnp.array([[10., 0.], [0., 10.]])
    >>> x = jnp.array([[0.6, 0.4]]); y = jnp.array([0])  # the boundary is 0.2 / sqrt(2) away
    >>> r = cw_l2(logits_fn, x, y, binary_search_steps=9, max_iterations=200)
    >>> round(float(r.distance[0]), 2), bool(r.misclassified[0])
    (0.14, True)
  """
  check_hyperparameters(binary_search_steps=binary_search_steps, max_iterations=max_iterations,
                        learning_rate=learning_rate, confidence=confidence,
                        initial_const=initial_const, abort_early=abort_early)
  validation.check_attack_inputs(logits_fn, x, y, key=key)
  f = lambda v: jnp.asarray(v, x.dtype)  # noqa: E731
  i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
  return _cw_l2(as_pytree_fn(logits_fn), x, jnp.asarray(y, jnp.int32), i32(binary_search_steps),
                i32(max_iterations), f(learning_rate), f(confidence), f(initial_const),
                jnp.asarray(abort_early, bool))
