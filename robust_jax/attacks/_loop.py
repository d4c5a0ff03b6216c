"""THE ascent loop of the inner maximisation: one masked ``lax.while_loop`` for PGD, FGSM, Dynamic AT,
FAT, GAIRAT's kappa, CW-inf, BETA and the training attacks.

Conventions of robust_jax (every attack follows them):

* Images are float32 NHWC in [0, 1]; labels are int32 class indices [B].
* A model is seen only as ``logits_fn(x) -> logits [B, C]``, a pure function closing over its
  parameters. Attacks know nothing about Flax.
* eps, step size, the number of steps, FOSC's c and FAT's tau are traced: new values never recompile.

The carry holds, per example: the iterate x^k, the gradient of that example's own loss at x^k (the
*sum* over the batch is differentiated, never the mean), its loss and logits, the active mask, the
number of steps taken, GAIRAT's kappa and the stop rule's state. Each iteration moves the active
examples one step, projects onto the ball and the box, evaluates the new iterate (one forward and
backward pass) and lets the stop rule switch examples off. The loop runs while some example is active
and k < K, so it exits as soon as every example has stopped: with every example stopping after two
steps, the body runs twice, not K times. Inactive examples do not move.

By default the gradient at the returned iterate is computed too, so FOSC, loss and correctness at the
returned point come with the result; the price is K + 1 gradient evaluations for K steps. With
``final_eval=False`` the last step is taken after the loop without evaluating its result: K
evaluations for K steps, the work of the reference PyTorch loops (a training step that needs only
``x_adv`` and ``kappa`` saves one pass in eleven). ``x_adv``, ``num_steps`` and ``kappa`` are then
unchanged; ``fosc``, ``loss`` and ``misclassified`` are those of the last *evaluated* iterate, which for
an example that took the final step is the one before ``x_adv``.

Compaction (``compaction=L``, for early stopping). A masked loop runs max-over-the-batch
iterations on the whole batch, so stopped examples save no time. With L > 0, as soon as no more than
half of the batch is still active, the loop hands over to a second loop on a batch half the size
(the active examples gathered, with their state and constants), and so on up to L times; the results
are scattered back. Each level is a separate while loop with its own compiled forward and backward
pass (L + 1 programs' worth of compile time). The examples' trajectories are unchanged (up to the
last bits of float summation, which may depend on the batch size), provided ``logits_fn`` treats
examples independently: with BatchNorm in train mode (batch statistics) compaction would change the
function being attacked.

GAIRAT's geometry value kappa (Zhang et al. 2021, ``GA_PGD``): the number of iterates, the start
included and the final one excluded, that were still classified correctly while the example was
being attacked.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp

from robust_jax import fosc as fosc_lib
from robust_jax import validation
from robust_jax.attacks import _projections as projections
from robust_jax.attacks._projections import bcast
from robust_jax.attacks._stop_rules import IterateInfo, NeverStop


@flax.struct.dataclass
class AttackResult:
  """What every attack returns (a pytree; all per-example fields have leading size B).

  Attributes:
    x_adv: the adversarial examples [B, ...], in the eps-ball around x and in [0, 1].
    num_steps: int32 [B], the ascent steps each example actually took.
    fosc: float32 [B], FOSC of each example's attack loss at ``x_adv`` (see :mod:`robust_jax.fosc`).
    loss: float32 [B], the attack loss at ``x_adv``.
    misclassified: bool [B], argmax f(x_adv) != y.
    kappa: int32 [B], GAIRAT's geometry value (iterates that were still correct).
  """
  x_adv: jax.Array
  num_steps: jax.Array
  fosc: jax.Array
  loss: jax.Array
  misclassified: jax.Array
  kappa: jax.Array


def as_pytree_fn(logits_fn: Callable) -> jax.tree_util.Partial:
  """Wraps ``logits_fn`` so that it can be an ordinary (non-static) argument of ``jax.jit``.

  A ``jax.tree_util.Partial(apply_fn, params)`` is returned as is: its parameters are traced leaves,
  so evaluating a new checkpoint with the same ``apply_fn`` reuses the compiled attack. Any other
  callable becomes a leafless ``Partial``, which ``jit`` caches on the function's identity, exactly
  like a static argument.
  """
  if isinstance(logits_fn, jax.tree_util.Partial):
    return logits_fn
  return jax.tree_util.Partial(logits_fn)


# Compaction never makes a batch smaller than this.
_MIN_COMPACTED_BATCH = 4


def ascent(
    logits_fn: Callable[[jax.Array], jax.Array],
    loss_fn: Callable[..., jax.Array],
    x: jax.Array,
    y: jax.Array,
    x_start: jax.Array,
    *,
    eps,
    step_size,
    num_steps,
    norm: str = "linf",
    stop: Any = None,
    target: Optional[jax.Array] = None,
    fosc_reference: str = "natural",
    clean_logits: Optional[jax.Array] = None,
    final_eval: bool = True,
    compaction: int = 0,
) -> AttackResult:
  """Runs the masked projected-gradient ascent from ``x_start`` (pure and jittable).

  Args:
    logits_fn: ``x -> logits`` [B, C].
    loss_fn: a per-example loss of :mod:`robust_jax.losses`.
    x: the natural images [B, ...] in [0, 1] (the centre of the ball).
    y: int32 labels [B].
    x_start: the starting point, in the ball and the box; with ``fosc_reference="start"`` it may
      lie outside the box (the official Dynamic AT code's unclipped start, see below).
    eps: radius, scalar >= 0.
    step_size: scalar > 0.
    num_steps: the step budget K >= 0 (may be traced).
    norm: ``"linf"`` (sign steps) or ``"l2"`` (normalised-gradient steps).
    stop: a stop rule (:func:`~robust_jax.attacks.fosc_stop`,
      :func:`~robust_jax.attacks.misclassified_stop`); None never stops early.
    target: int32 target labels [B] for a targeted attack, else None.
    fosc_reference: ``"natural"`` measures FOSC from x (the paper, the default); ``"start"`` from
      ``x_start`` as given, the official Dynamic AT code (``LinfPGDAttack.perturb``, which keeps
      ``original_batch_x``, the random start x + U(-eps, eps) *before* any clipping, and takes its
      first gradient there, clipping to the ball and [0, 1] only after the first step; so its FOSC
      can be negative). :func:`~robust_jax.attacks.pgd` then passes the unclipped start. An example
      that takes no step (K = 0) returns the projection of ``x_start``.
    clean_logits: logits of the natural input [B, C], for losses that need them (``kl``).
    final_eval: evaluate the returned iterate (K + 1 gradients for K steps; see the module
      docstring). False saves one forward and backward pass; the diagnostics then lag one step.
    compaction: how many times the batch may be halved as examples stop (0: never; see the module
      docstring). Needs a ``logits_fn`` that treats examples independently (eval-mode BatchNorm).

  Returns:
    An :class:`AttackResult`.
  """
  stop = NeverStop() if stop is None else stop
  if fosc_reference not in ("natural", "start"):
    raise ValueError(f"fosc_reference must be 'natural' or 'start', got {fosc_reference!r}")
  validation.check_scalar("compaction", compaction, low=0, integer=True)
  batch = x.shape[0]
  if clean_logits is not None:
    clean_logits = jax.lax.stop_gradient(clean_logits)
  # Per-example constants, gathered with the state when the batch is compacted.
  consts = {"x": x, "y": y, "ref": x if fosc_reference == "natural" else x_start}
  if target is not None:
    consts["target"] = target
  if clean_logits is not None:
    consts["clean_logits"] = clean_logits

  def evaluate(x_k, c):
    def total(xx):
      logits = logits_fn(xx)
      per_example = loss_fn(logits, c["y"], target=c.get("target"),
                            clean_logits=c.get("clean_logits"))
      return jnp.sum(per_example), (per_example, logits)

    (_, (loss, logits)), grad = jax.value_and_grad(total, has_aux=True)(x_k)
    mis = jnp.argmax(logits, axis=-1) != c["y"]
    f = fosc_lib.fosc(x_k, c["ref"], grad, eps=eps, norm=norm)
    return grad, IterateInfo(fosc=f, misclassified=mis, loss=loss)

  grad0, info0 = evaluate(x_start, consts)
  active0 = jnp.ones((batch,), bool) & (num_steps > 0)
  active0, rule_state0 = stop.update(0, active0, info0, stop.init(batch))
  zeros = jnp.zeros((batch,), jnp.int32)
  state0 = {"x": x_start, "grad": grad0, "info": info0, "active": active0, "steps": zeros,
            "kappa": zeros, "rule": rule_state0}

  # Without the final evaluation the loop stops one step short and the last step follows it.
  loop_steps = num_steps if final_eval else num_steps - 1

  def step(st, c):
    active = st["active"]
    kappa = st["kappa"] + (active & ~st["info"].misclassified).astype(jnp.int32)
    moved = projections.project(
        st["x"] + step_size * projections.ascent_direction(st["grad"], norm), c["x"], eps, norm)
    x_new = jnp.where(bcast(active, st["x"]), moved, st["x"])
    return dict(st, x=x_new, steps=st["steps"] + active.astype(jnp.int32), kappa=kappa)

  def body(k, st, c):
    active, grad, info = st["active"], st["grad"], st["info"]
    st = step(st, c)
    grad_new, info_new = evaluate(st["x"], c)
    # A stopped example's point did not move, so its gradient and diagnostics are those of x_k; keep
    # them bit-exact rather than trusting the forward pass to be deterministic.
    grad_new = jnp.where(bcast(active, grad), grad_new, grad)
    info_new = jax.tree.map(lambda n, o: jnp.where(active, n, o), info_new, info)
    k = k + 1
    active_new, rule_state = stop.update(k, active, info_new, st["rule"])
    active_new = active_new & (k < num_steps)
    return k, dict(st, grad=grad_new, info=info_new, active=active_new, rule=rule_state)

  def run(k, st, c, level):
    """The loop on a batch of n examples; with levels left, it hands over to a loop on the
    ceil(n / 2) first active examples as soon as no more than that many are active."""
    n = st["active"].shape[0]
    half = (n + 1) // 2
    last = level >= compaction or half < _MIN_COMPACTED_BATCH

    def cond(carry):
      k, st = carry
      go = jnp.any(st["active"]) & (k < loop_steps)
      return go if last else go & (jnp.sum(st["active"]) > half)

    k, st = jax.lax.while_loop(cond, lambda carry: body(*carry, c), (k, st))
    if last:
      return k, st
    idx = jnp.argsort(~st["active"], stable=True)[:half]  # every active example, then inactive
    take = lambda a: a[idx]
    k, sub = run(k, jax.tree.map(take, st), jax.tree.map(take, c), level + 1)
    return k, jax.tree.map(lambda a, b: a.at[idx].set(b), st, sub)

  _, st = run(jnp.asarray(0, jnp.int32), state0, consts, 0)
  if not final_eval:
    st = step(st, consts)
  x_adv, steps, kappa, info = st["x"], st["steps"], st["kappa"], st["info"]
  if fosc_reference == "start":  # an unclipped start that never moved: back into the ball and box
    x_adv = jnp.where(bcast(steps == 0, x_adv), projections.project(x_adv, x, eps, norm), x_adv)
  return AttackResult(
      x_adv=jax.lax.stop_gradient(x_adv), num_steps=steps, fosc=info.fosc, loss=info.loss,
      misclassified=info.misclassified, kappa=kappa)
