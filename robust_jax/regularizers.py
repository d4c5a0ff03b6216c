"""Regularisers of fast (single-step) adversarial training against catastrophic overfitting.

* GradAlign (Andriushchenko and Flammarion, NeurIPS 2020):
  Omega = E_{eta ~ U([-eps, eps]^d)} [1 - cos(grad_x l(x), grad_x l(x + eta))], averaged over the
  batch, examples with a zero gradient dropped, x + eta not clipped (as the official ``train.py``).
  The regulariser is differentiated through the input gradients (double backprop). Paper versus
  official code: the paper's Omega depends on theta through both gradients, the official code detaches
  the first (the FGSM gradient at x); ``config.gradalign_detach_first`` picks the official behaviour
  (issue #3 of the repository: it "doesn't make a substantial difference"). Default lambda(eps), eps
  in 1/255 units: 0.02 * 10^(eps/8) (the CIFAR-10 scripts), capped at 2.0 as the ELLE
  re-implementation does for eps >= 16/255.
* ELLE (Abad Rocamora et al., ICLR 2024): the local linearity error of the loss,
  mean_i [l(x_c) - ((1 - a) l(x_a) + a l(x_b))]^2 with x_a, x_b ~ x + U(-eps, eps) (not clipped),
  a ~ U[0, 1] and x_c = (1 - a) x_a + a x_b: three forward passes on one 3B batch and an ordinary
  backward, no double backprop. Default lambda: 1000 for eps <= 8/255, 5000 up to 20/255, 10000 above.
* ELLE-A: lambda starts at 0; after each step, with mu and sigma the mean and standard deviation of all
  earlier linearity errors, lambda <- lambda_max (4000) if there are more than 2 of them and the new
  error exceeds mu + s * sigma (s = 2), else lambda <- 0.99 * lambda.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robust_jax.attacks import losses

ELLE_A_LAMBDA_MAX = 4000.0


def gradalign_lambda(eps) -> jax.Array:
  """The published lambda(eps) of GradAlign's CIFAR-10 scripts (eps in [0, 1] units)."""
  return jnp.minimum(0.02 * 10.0 ** (eps * 255.0 / 8.0), 2.0)


def elle_lambda(eps) -> jax.Array:
  """The published ELLE lambda for eps (in [0, 1] units)."""
  e = eps * 255.0
  return jnp.where(e <= 8.0 + 1e-6, 1000.0, jnp.where(e <= 20.0 + 1e-6, 5000.0, 10000.0))


def _input_grad(logits_fn, x, y):
  return jax.grad(lambda xx: jnp.sum(losses.cross_entropy(logits_fn(xx), y)))(x)


def gradalign(logits_fn, x, y, key, *, eps, detach_first: bool = False) -> jax.Array:
  """GradAlign's Omega (batch mean of 1 - cos), differentiable w.r.t. whatever logits_fn closes over.

  Args:
    logits_fn: ``x -> logits`` [B, C].
    x: images [B, ...]; y: int32 labels [B].
    key: PRNG key for eta.
    eps: the linf radius of eta.
    detach_first: stop the gradient through grad_x l(x) (the official code).

  Returns:
    Scalar 1 - mean_i cos_i over examples whose two gradients are both non-zero.
  """
  eta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
  g1 = _input_grad(logits_fn, x, y)
  if detach_first:
    g1 = jax.lax.stop_gradient(g1)
  g2 = _input_grad(logits_fn, x + eta, y)
  g1, g2 = g1.reshape(g1.shape[0], -1), g2.reshape(g2.shape[0], -1)
  sq1, sq2 = jnp.sum(g1 * g1, axis=1), jnp.sum(g2 * g2, axis=1)
  valid = (sq1 > 0) & (sq2 > 0)
  # The square roots see 1 for dropped examples: the gradient of a norm at 0 is NaN, and a NaN in
  # the unused branch of a where still poisons the backward pass.
  n1, n2 = jnp.sqrt(jnp.where(valid, sq1, 1.0)), jnp.sqrt(jnp.where(valid, sq2, 1.0))
  cos = jnp.sum(g1 * g2, axis=1) / (n1 * n2)
  count = jnp.maximum(jnp.sum(valid), 1)
  return 1.0 - jnp.sum(jnp.where(valid, cos, 0.0)) / count


def local_linearity_error(logits_fn, x, y, key, *, eps) -> jax.Array:
  """ELLE's linearity error: mean_i [l(x_c) - ((1 - a) l(x_a) + a l(x_b))]^2 (one 3B forward)."""
  ka, kb, kalpha = jax.random.split(key, 3)
  b = x.shape[0]
  x_a = x + jax.random.uniform(ka, x.shape, x.dtype, -1.0, 1.0) * eps
  x_b = x + jax.random.uniform(kb, x.shape, x.dtype, -1.0, 1.0) * eps
  a = jax.random.uniform(kalpha, (b,) + (1,) * (x.ndim - 1), x.dtype)
  x_c = (1 - a) * x_a + a * x_b
  l = losses.cross_entropy(logits_fn(jnp.concatenate([x_a, x_b, x_c])), jnp.tile(y, 3))
  l_a, l_b, l_c = l[:b], l[b:2 * b], l[2 * b:]
  a = a.reshape(b)
  return jnp.mean((l_c - ((1 - a) * l_a + a * l_b)) ** 2)


def elle_a_init():
  """ELLE-A's state: current lambda and Welford statistics of past linearity errors."""
  z = jnp.zeros((), jnp.float32)
  return {"elle_lambda": z, "elle_count": z, "elle_mean": z, "elle_m2": z}


def elle_a_update(extra, reg_metrics, *, config):
  """ELLE-A's adaptive rule, applied after a step with that step's linearity error."""
  err = jax.lax.stop_gradient(reg_metrics["lin_err"])
  n, mean, m2, lam = extra["elle_count"], extra["elle_mean"], extra["elle_m2"], extra["elle_lambda"]
  std = jnp.sqrt(jnp.where(n > 1, m2 / jnp.maximum(n, 1), 0.0))
  spike = (n > 2) & (err > mean + config.elle_a_sensitivity * std)
  lam_max = config.elle_lambda or ELLE_A_LAMBDA_MAX
  lam = jnp.where(spike, lam_max, config.elle_a_decay * lam)
  n1 = n + 1
  delta = err - mean
  mean1 = mean + delta / n1
  m2 = m2 + delta * (err - mean1)
  return dict(extra, elle_lambda=lam, elle_count=n1, elle_mean=mean1, elle_m2=m2)


def apply(name, logits_fn, x, y, key, *, eps, config, state):
  """The regulariser ``name`` times its lambda, and its metrics (used by the training step)."""
  if name == "gradalign":
    lam = config.gradalign_lambda or gradalign_lambda(eps)
    omega = gradalign(logits_fn, x, y, key, eps=eps,
                      detach_first=config.get("gradalign_detach_first", False))
    return lam * omega, {"gradalign": omega, "reg_lambda": jnp.asarray(lam, jnp.float32)}
  if name in ("elle", "elle_a"):
    err = local_linearity_error(logits_fn, x, y, key, eps=eps)
    if name == "elle":
      lam = config.elle_lambda or elle_lambda(eps)
    else:
      lam = state["elle_lambda"]
    return lam * err, {"lin_err": err, "reg_lambda": jnp.asarray(lam, jnp.float32)}
  raise ValueError(f"unknown regularizer {name!r}; valid: ('gradalign', 'elle', 'elle_a')")
