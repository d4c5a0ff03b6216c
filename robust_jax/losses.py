"""Per-example losses on logits, shared by the attacks (what the inner maximisation ascends) and the
objectives (CE, KL).

Every loss maps logits [B, C] to a per-example value [B] that the attacker *maximises*. The ascent
loop differentiates the *sum* over the batch, never the mean, so each example's gradient is the
gradient of its own loss (FOSC thresholds such as Dynamic AT's c_max = 0.5 assume this).

Signature of every loss: ``loss(logits, y, *, target=None, clean_logits=None) -> [B]``, with ``y`` the
true int32 labels [B], ``target`` int32 target labels [B] for targeted attacks, and ``clean_logits``
the logits of the natural input (used by ``kl``).

Losses (untargeted / targeted):

* ``ce``: cross-entropy CE(z, y) / -CE(z, t).
* ``cw``: the Carlini-Wagner margin with confidence kappa, as in the CW-inf column of the seeds (CAT,
  FAT and GAIRAT code, kappa = 50): -max(z_y - max_{j != y} z_j + kappa, 0) /
  -max(max_{j != t} z_j - z_t + kappa, 0).
* ``margin``: the plain margin max_{j != y} z_j - z_y / z_t - z_y (BETA's M_theta(x, y)_t).
* ``kl``: TRADES' KL(p(x) || p(x')) = sum_c p_c(x) (log p_c(x) - log p_c(x')), untargeted only.
* ``dlr``: Croce and Hein (2020): -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12) /
  -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12), with pi the descending order of z.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

LossFn = Callable[..., jax.Array]


def _take(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=1)[:, 0]


def _max_other(logits: jax.Array, labels: jax.Array) -> jax.Array:
  mask = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  return jnp.max(jnp.where(mask, -jnp.inf, logits), axis=1)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy [B] of integer ``labels``."""
  return -_take(jax.nn.log_softmax(logits), labels)


def ce(logits, y, *, target=None, clean_logits=None):
  del clean_logits
  if target is None:
    return cross_entropy(logits, y)
  return -cross_entropy(logits, target)


def make_cw(kappa: float = 50.0) -> LossFn:
  """The CW-inf margin loss with confidence ``kappa`` (FAT's ``cwloss``)."""

  def cw(logits, y, *, target=None, clean_logits=None):
    del clean_logits
    if target is None:
      return -jax.nn.relu(_take(logits, y) - _max_other(logits, y) + kappa)
    return -jax.nn.relu(_max_other(logits, target) - _take(logits, target) + kappa)

  return cw


def margin(logits, y, *, target=None, clean_logits=None):
  del clean_logits
  if target is None:
    return _max_other(logits, y) - _take(logits, y)
  return _take(logits, target) - _take(logits, y)


def kl_divergence(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
  """Per-example KL(softmax(p_logits) || softmax(q_logits)), summed over classes, [B]."""
  log_p = jax.nn.log_softmax(p_logits)
  log_q = jax.nn.log_softmax(q_logits)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def kl(logits, y, *, target=None, clean_logits=None):
  del y
  if target is not None:
    raise ValueError("loss='kl' is untargeted; pass target=None")
  if clean_logits is None:
    raise ValueError("loss='kl' needs the clean logits")
  return kl_divergence(jax.lax.stop_gradient(clean_logits), logits)


def dlr(logits, y, *, target=None, clean_logits=None):
  del clean_logits
  z_sorted = -jnp.sort(-logits, axis=1)  # descending
  z_y = _take(logits, y)
  if target is None:
    denom = z_sorted[:, 0] - z_sorted[:, 2] + 1e-12
    return -(z_y - _max_other(logits, y)) / denom
  denom = z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3]) + 1e-12
  return -(z_y - _take(logits, target)) / denom


LOSSES = ("ce", "cw", "margin", "kl", "dlr")


def get_loss(name: str, *, kappa: float = 50.0) -> LossFn:
  """Returns the per-example attack loss called ``name`` (one of :data:`LOSSES`)."""
  table = {"ce": ce, "cw": make_cw(kappa), "margin": margin, "kl": kl, "dlr": dlr}
  if name not in table:
    raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")
  return table[name]


def needs_clean_logits(name: str) -> bool:
  return name == "kl"
