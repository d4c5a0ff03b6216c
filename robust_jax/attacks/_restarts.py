"""PGD with random restarts keeping the per-example worst case, and the CW-inf attack.

Madry et al. (2018) evaluate PGD with several random restarts and count an example as broken if any
restart breaks it. :func:`pgd_restarts` runs R restarts of the masked ascent loop
(:func:`robust_jax.attacks.ascent`) from independent random starts (restart r uses
``fold_in(key, r)``) inside one ``lax.fori_loop`` and keeps, per example, the worst case: a
misclassified result beats a correct one, and between two of the same kind the higher attack loss
wins. R = 1 is the plain randomly started PGD.

:func:`cw_inf` is the CW-inf column of the seeds' tables (CAT, FAT and GAIRAT code, the "DAT
protocol" of FAT.py): PGD on the Carlini-Wagner margin loss with confidence kappa = 50, 30 steps of
eps / 4 from a uniform random start.

eps, the step size, the number of steps and restarts and kappa are traced (no recompilation).
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from robust_jax import losses
from robust_jax import validation
from robust_jax.attacks import _projections as projections
from robust_jax.attacks._loop import AttackResult, as_pytree_fn, ascent
from robust_jax.attacks._projections import bcast

NORMS = ("linf", "l2")
STARTS = ("uniform", "radial", "normal", "none")


@functools.partial(jax.jit, static_argnames=("norm", "loss", "start"))
def _pgd_restarts(logits_fn, x, y, key, eps, step_size, num_steps, num_restarts, kappa, target, *,
                  norm, loss, start) -> AttackResult:
  loss_fn = losses.get_loss(loss, kappa=kappa)
  clean_logits = logits_fn(x) if losses.needs_clean_logits(loss) else None

  def one(r):
    x_start = projections.random_start(jax.random.fold_in(key, r), x, eps, norm, start)
    return ascent(logits_fn, loss_fn, x, y, x_start, eps=eps, step_size=step_size,
                  num_steps=num_steps, norm=norm, target=target, clean_logits=clean_logits)

  def body(r, best):
    new = one(r)
    take = (new.misclassified & ~best.misclassified) | (
        (new.misclassified == best.misclassified) & (new.loss > best.loss))
    merged = jax.tree.map(
        lambda n, o: jnp.where(bcast(take, n) if n.ndim > 1 else take, n, o), new, best)
    return merged.replace(num_steps=best.num_steps + new.num_steps)

  first = one(0)
  return jax.lax.fori_loop(1, num_restarts, body, first)


def check_hyperparameters(*, eps, step_size, num_steps, num_restarts=1, norm="linf", loss="ce",
                          start="uniform", kappa=50.0, **_unchecked):
  """Raises ValueError naming the first bad hyperparameter of :func:`pgd_restarts` (no data)."""
  validation.check_choice("norm", norm, NORMS)
  validation.check_choice("loss", loss, losses.LOSSES)
  validation.check_choice("start", start, STARTS)
  if start == "radial" and norm != "l2":
    raise ValueError(f"start='radial' is an l2 start (robust_overfitting, torchattacks); "
                     f"norm={norm!r} has 'uniform'")
  validation.check_eps(eps, norm)
  validation.check_scalar("step_size", step_size, low=0.0, low_open=True)
  validation.check_scalar("num_steps", num_steps, low=0, integer=True)
  validation.check_scalar("num_restarts", num_restarts, low=1, integer=True)
  validation.check_scalar("kappa", kappa, low=0.0)


def check_cw_hyperparameters(*, eps, step_size=None, num_steps=30, **hyperparameters):
  """:func:`check_hyperparameters` for :func:`cw_inf` (the CW loss; step eps / 4 by default)."""
  if step_size is None:
    validation.check_scalar("eps", eps, low=0.0, low_open=True)
    step_size = eps / 4.0
  check_hyperparameters(eps=eps, step_size=step_size, num_steps=num_steps,
                        **dict(hyperparameters, loss="cw"))


def pgd_restarts(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    step_size,
    num_steps,
    key: jax.Array,
    num_restarts=1,
    norm: str = "linf",
    loss: str = "ce",
    start: str = "uniform",
    kappa=50.0,
    target: Optional[jax.Array] = None,
) -> AttackResult:
  """PGD-K with R random restarts, keeping each example's worst case.

  Args:
    logits_fn: ``x -> logits`` [B, C], pure.
    x: float32 images [B, H, W, C] in [0, 1].
    y: int32 labels [B].
    eps: radius, >= 0.
    step_size: > 0.
    num_steps: K >= 0 per restart.
    key: PRNG key; restart r starts from ``random_start(fold_in(key, r), ...)``.
    num_restarts: R >= 1.
    norm: ``"linf"`` or ``"l2"``.
    loss: an attack loss of :mod:`robust_jax.losses` (``"ce"``, ``"cw"``, ``"margin"``,
      ``"kl"``, ``"dlr"``).
    start: ``"uniform"`` (default), ``"radial"`` (l2 only), ``"normal"`` or ``"none"`` (then every
      restart is the same); see :func:`robust_jax.attacks.random_start`.
    kappa: the confidence of the ``"cw"`` loss.
    target: optional int32 [B] targets for a targeted loss.

  Returns:
    An :class:`~robust_jax.attacks.AttackResult`: per example the fields of the worst restart
    (misclassified first, then the highest loss), except ``num_steps``, the steps summed over all
    restarts.

  Raises:
    ValueError: on a bad argument (named, with its valid range), when values are concrete, and
      without a ``key`` (every restart draws its own start).

  Example (two points 0.05 and 0.8 away from the boundary in linf; eps = 0.1 breaks the first):
    >>> import jax, jax.numpy as jnp
    >>> logits_fn = lambda x: x.reshape(x.shape[0], -1) @ jnp.eye(4)
    >>> x = jnp.array([[0.55, 0.5, 0.1, 0.1], [0.9, 0.1, 0.1, 0.1]]).reshape(2, 2, 2, 1)
    >>> r = pgd_restarts(logits_fn, x, jnp.array([0, 0]), eps=0.1, step_size=0.05, num_steps=3,
    ...                  num_restarts=2, key=jax.random.key(0))
    >>> r.num_steps.tolist(), r.misclassified.tolist()  # steps summed over the restarts
    ([6, 6], [True, False])
  """
  check_hyperparameters(eps=eps, step_size=step_size, num_steps=num_steps,
                        num_restarts=num_restarts, norm=norm, loss=loss, start=start, kappa=kappa)
  validation.check_attack_inputs(logits_fn, x, y, target=target, key=key,
                                 key_needed_by="the random starts", eps=eps, norm=norm)
  if target is not None:
    target = jnp.asarray(target, jnp.int32)
  return _pgd_restarts(as_pytree_fn(logits_fn), x, jnp.asarray(y, jnp.int32), key,
                       jnp.asarray(eps, jnp.float32), jnp.asarray(step_size, jnp.float32),
                       jnp.asarray(num_steps, jnp.int32), jnp.asarray(num_restarts, jnp.int32),
                       jnp.asarray(kappa, jnp.float32), target, norm=norm, loss=loss, start=start)


def cw_inf(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    key: jax.Array,
    step_size=None,
    num_steps=30,
    kappa=50.0,
    num_restarts=1,
    norm: str = "linf",
    start: str = "uniform",
) -> AttackResult:
  """CW-inf: PGD on the CW margin loss with confidence kappa (the seeds' "CW" column).

  FAT.py's protocol: 30 steps of eps / 4 (the default ``step_size``), kappa = 50, a uniform random
  start. Args and Returns as :func:`pgd_restarts` with ``loss="cw"``.
  """
  if step_size is None:
    validation.check_scalar("eps", eps, low=0.0, low_open=True)
    step_size = eps / 4.0
  return pgd_restarts(logits_fn, x, y, eps=eps, step_size=step_size, num_steps=num_steps, key=key,
                      num_restarts=num_restarts, norm=norm, loss="cw", start=start, kappa=kappa)
