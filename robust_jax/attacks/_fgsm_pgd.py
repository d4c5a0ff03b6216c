"""FGSM and PGD: thin configurations of the ascent loop (:func:`robust_jax.attacks.ascent`).

Both are pure functions, compiled with ``jax.jit`` on first use. The string options are static;
eps, step size, the number of steps, the stop rule's thresholds, kappa and the key are traced, so
sweeping them never recompiles. ``logits_fn`` is passed through :func:`as_pytree_fn`: a
``jax.tree_util.Partial(apply_fn, variables)`` (what :func:`robust_jax.load_classifier` returns) has
its variables traced, so a new checkpoint of the same model reuses the compiled attack; any other
callable is cached on its identity (keep one per model in a notebook). Inside another ``jax.jit`` (a
training step) they are inlined.

References:
  Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015 (FGSM).
  Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018 (PGD).
  Wong et al., "Fast is better than free", ICLR 2020 (FGSM with a uniform start, step 1.25 eps).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import losses
from robust_jax import validation
from robust_jax.attacks import _projections as projections
from robust_jax.attacks._loop import AttackResult, as_pytree_fn, ascent

NORMS = ("linf", "l2")
STARTS = ("none", "uniform", "radial", "normal")


@functools.partial(
    jax.jit,
    static_argnames=("norm", "loss", "start", "fosc_reference", "final_eval", "compaction"))
def _pgd(logits_fn, x, y, key, eps, step_size, num_steps, stop, target, kappa, start_std, *,
         norm, loss, start, fosc_reference, final_eval=True, compaction=0) -> AttackResult:
  loss_fn = losses.get_loss(loss, kappa=kappa)
  # fosc_reference="start": the official Dynamic AT code's start, unclipped (see ``ascent``).
  x_start = x if start == "none" else projections.random_start(
      key, x, eps, norm, start, std=start_std, project_start=fosc_reference != "start")
  clean_logits = logits_fn(x) if losses.needs_clean_logits(loss) else None
  return ascent(logits_fn, loss_fn, x, y, x_start, eps=eps, step_size=step_size,
                num_steps=num_steps, norm=norm, stop=stop, target=target,
                fosc_reference=fosc_reference, clean_logits=clean_logits, final_eval=final_eval,
                compaction=compaction)


def check_hyperparameters(*, eps, step_size, num_steps, norm="linf", loss="ce", start="none",
                          fosc_reference="natural", compaction=0, kappa=50.0, **_unchecked):
  """Raises ValueError naming the first bad hyperparameter of :func:`pgd` and its valid range.

  Needs no data, so :func:`robust_jax.attacks.make` runs it before the first call. The other
  hyperparameters of :func:`pgd` (``stop``, ``start_std``, ``final_eval``) are accepted and not
  checked here.
  """
  validation.check_choice("norm", norm, NORMS)
  validation.check_choice("loss", loss, losses.LOSSES)
  validation.check_choice("start", start, STARTS)
  if start == "radial" and norm != "l2":
    raise ValueError(f"start='radial' is an l2 start (robust_overfitting, torchattacks); "
                     f"norm={norm!r} has 'uniform'")
  validation.check_choice("fosc_reference", fosc_reference, ("natural", "start"))
  validation.check_eps(eps, norm)
  validation.check_scalar("step_size", step_size, low=0.0, low_open=True)
  validation.check_scalar("num_steps", num_steps, low=0, integer=True)
  validation.check_scalar("compaction", compaction, low=0, integer=True)
  validation.check_scalar("kappa", kappa, low=0.0)


def _check_fgsm_eps(eps):
  validation.check_scalar("eps", eps, low=0.0)
  if validation.is_concrete(eps) and float(eps) == 0:
    raise ValueError(f"eps must be > 0 for fgsm, whose step size defaults to eps (pass step_size "
                     f"for a start-only FGSM), got {eps}")


def check_fgsm_hyperparameters(*, eps, step_size=None, **hyperparameters):
  """:func:`check_hyperparameters` for :func:`fgsm`: one step of ``step_size`` (default eps)."""
  if step_size is None:  # the step is eps: name eps, not a step_size the user never passed
    _check_fgsm_eps(eps)
  check_hyperparameters(eps=eps, step_size=eps if step_size is None else step_size, num_steps=1,
                        **hyperparameters)


def pgd(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    step_size,
    num_steps,
    norm: str = "linf",
    loss: str = "ce",
    start: str = "none",
    key: Optional[jax.Array] = None,
    stop: Any = None,
    target: Optional[jax.Array] = None,
    kappa=50.0,
    start_std=1e-3,
    fosc_reference: str = "natural",
    final_eval: bool = True,
    compaction: int = 0,
) -> AttackResult:
  """Projected gradient ascent (Madry et al. 2018) with an optional per-example stop rule.

  Args:
    logits_fn: ``x -> logits`` [B, C], pure, closing over the model's parameters.
    x: float32 images [B, H, W, C] in [0, 1].
    y: int32 labels [B].
    eps: radius of the ball, >= 0 (linf: e.g. 8/255 on CIFAR-10, 0.3 on MNIST).
    step_size: > 0 (linf: e.g. 2/255).
    num_steps: K >= 0 (traced: changing it does not recompile).
    norm: ``"linf"`` or ``"l2"``.
    loss: an attack loss of :mod:`robust_jax.losses`: ``"ce"``, ``"cw"``, ``"margin"``,
      ``"kl"`` (TRADES) or ``"dlr"``.
    start: ``"none"`` (x), ``"uniform"`` in the ball (l2: uniform in volume), ``"radial"`` (l2
      only: radius eps U(0, 1), robust_overfitting's and torchattacks' start) or ``"normal"``
      (x + start_std * N(0, I)); see :func:`robust_jax.attacks.random_start`.
    key: PRNG key, needed for a random start.
    stop: None (plain PGD), :func:`fosc_stop` (Dynamic AT) or :func:`misclassified_stop` (FAT).
    target: int32 [B] target classes for a targeted attack (the loss then pulls towards them).
    kappa: confidence of the ``cw`` loss (50, as the seeds' CW-inf evaluation).
    start_std: std of the ``"normal"`` start (0.001 in TRADES and MART).
    fosc_reference: ``"natural"`` (paper) or ``"start"`` (official Dynamic AT code: FOSC measured
      from the random start as drawn, before the [0, 1] clip, and the first gradient taken there).
    final_eval: True (default) evaluates ``x_adv`` itself: K + 1 gradient evaluations for K steps.
      False takes the last step without evaluating it (K evaluations, the reference loops' work);
      ``fosc``, ``loss`` and ``misclassified`` then describe the iterate before the last step.
    compaction: with a stop rule, how many times the loop may halve its batch as examples stop, so
      that early stopping saves time (:func:`~robust_jax.attacks.ascent`); 0 never compacts. Each
      level compiles its own forward and backward pass. ``logits_fn`` must treat examples
      independently.

  Returns:
    An :class:`~robust_jax.attacks.AttackResult`: ``x_adv`` in the ball and in [0, 1], and per
    example ``num_steps``, ``fosc``, ``loss``, ``misclassified`` and ``kappa`` at ``x_adv``.

  Raises:
    ValueError: on a bad argument (named, with its valid range), when values are concrete; a random
      ``start`` without a ``key``; a ``target`` with the untargeted ``loss="kl"``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> w = jnp.eye(4)[:, :3]
    >>> logits_fn = lambda x: x.reshape(x.shape[0], -1) @ w
    >>> x = jnp.full((2, 2, 2, 1), 0.5); y = jnp.array([0, 1])
    >>> r = pgd(logits_fn, x, y, eps=0.1, step_size=0.05, num_steps=3)
    >>> bool(jnp.all(jnp.abs(r.x_adv - x) <= 0.1 + 1e-7)), r.num_steps.tolist()
    (True, [3, 3])
  """
  check_hyperparameters(eps=eps, step_size=step_size, num_steps=num_steps, norm=norm, loss=loss,
                        start=start, fosc_reference=fosc_reference, compaction=compaction,
                        kappa=kappa)
  validation.check_attack_inputs(logits_fn, x, y, target=target, key=key,
                                 key_needed_by=None if start == "none" else f"start={start!r}",
                                 eps=eps, norm=norm)
  if target is not None and loss == "kl":
    raise ValueError("loss='kl' is untargeted: pass target=None")
  if key is None:
    key = jax.random.key(0)  # unused: start == "none"
  return _pgd(as_pytree_fn(logits_fn), x, jnp.asarray(y, jnp.int32), key, jnp.asarray(eps, jnp.float32),
              jnp.asarray(step_size, jnp.float32), jnp.asarray(num_steps, jnp.int32), stop,
              None if target is None else jnp.asarray(target, jnp.int32),
              jnp.asarray(kappa, jnp.float32), jnp.asarray(start_std, jnp.float32),
              norm=norm, loss=loss, start=start, fosc_reference=fosc_reference,
              final_eval=bool(final_eval), compaction=compaction)


def fgsm(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = "linf",
    loss: str = "ce",
    key: Optional[jax.Array] = None,
    start: str = "none",
    step_size=None,
    target: Optional[jax.Array] = None,
    kappa=50.0,
) -> AttackResult:
  """The fast gradient sign method: one ascent step (Goodfellow et al. 2015).

  With ``start="none"`` and the default ``step_size=eps`` this is the classic FGSM (and GradAlign's
  zero-init FGSM); with ``start="uniform"`` and ``step_size=1.25 * eps`` it is the FGSM-RS of Wong et
  al. (2020). The result is projected onto the ball and the box like every iterate of :func:`pgd`.

  Args: as :func:`pgd`; ``step_size`` defaults to ``eps``, which must then be > 0.

  Returns:
    An :class:`~robust_jax.attacks.AttackResult` (``num_steps`` is 1 for every example).
  """
  if step_size is None:  # the step is eps: name eps, not a step_size the user never passed
    _check_fgsm_eps(eps)
    step_size = eps
  return pgd(logits_fn, x, y, eps=eps, step_size=step_size, num_steps=1, norm=norm, loss=loss,
             start=start, key=key, target=target, kappa=kappa)
