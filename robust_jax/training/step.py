"""The min-max training step: one pure function, compiled into one XLA program per step.

``train_step(state, batch) -> (state, metrics)`` calls the five parts of the method's bundle
(:func:`robust_jax.training.methods.build`; the vocabulary is :mod:`robust_jax.parts`) and nothing
else; it contains no method name and no kind string:

1. the input adversary (:mod:`robust_jax.training.adversary`) attacks the model in eval mode (running
   BatchNorm statistics, nothing updated; batch statistics with ``attack_bn_mode="train"``, as the
   AT-AWP code);
2. the weighting (:mod:`robust_jax.weighting`) turns the attack's diagnostics into per-example
   weights (GAIRAT's kappa, Dynamic AT's official reweighting) or none;
3. the objective (:mod:`robust_jax.objectives`) plus the regulariser (:mod:`robust_jax.regularizers`)
   is the loss at parameters p, with BatchNorm in train mode; the model runs through its training
   forward (:func:`robust_jax.models.functional.training_forward`): a model that declares one (CIFS: the masks' label rule) gets
   the labels and returns auxiliary logits, whose CE the objective adds (CIFS's joint loss); any
   other model is called as before, and the loss is the objective's;
4. the weight adversary (:mod:`robust_jax.weight_adversaries`: AWP, RWP, SAM, SAMPa) takes the
   update gradient of that loss at w + v (per group of examples for SAM's m-sharpness; SAMPa mixes
   in its second gradient), says which pass's BatchNorm statistics are kept and at which parameters
   the optimizer (its weight decay) is applied; the update is applied to w, so w is restored exactly
   by construction;
5. the optax update, and each part's state update (ELLE-A's lambda, SAMPa's gradient).

The model is seen only through :class:`robust_jax.models.functional.ModelFn` (linen and NNX
modules are adapted). Every schedule (learning rate, eps warm-up, Dynamic AT's c_t, FAT's tau, CAT's
K, GAIRAT's start epoch, AWP's warm-up) is a function of the traced step, so the step compiles once
for the whole run. The randomness of step t is ``fold_in(key, t)``. There is no Python loop over
attack steps and no host callback.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import chex
import jax
import jax.numpy as jnp
import ml_collections
import optax

from robust_jax import attacks, losses
from robust_jax import weight_adversaries as wa_lib
from robust_jax.models import functional
from robust_jax.parts import StepInfo
from robust_jax.training import methods, schedules
from robust_jax.training.state import TrainState


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
  """SGD (momentum, PyTorch-style coupled weight decay) or Adam, with the config's lr schedule.

  Returns:
    ``(tx, lr_fn)``. Weight decay is added to the gradient before momentum, as ``torch.optim.SGD``'s
    ``weight_decay`` in every official repository, on every parameter.
  """
  lr_fn = schedules.learning_rate(
      kind=config.lr_schedule, base_lr=config.learning_rate, num_epochs=config.num_epochs,
      steps_per_epoch=steps_per_epoch, decay_epochs=tuple(config.lr_decay_epochs),
      decay_factors=tuple(config.lr_decay_factors), peak_epoch_fraction=config.lr_peak_fraction,
      restart_epochs=tuple(config.periodic_bounds[1:-1]) if config.periodic_eps else ())
  parts = []
  if config.weight_decay:
    parts.append(optax.add_decayed_weights(config.weight_decay))
  if config.optimizer == "sgd":
    parts.append(optax.sgd(lr_fn, momentum=config.momentum or None, nesterov=config.nesterov))
  else:
    parts.append(optax.adam(lr_fn))
  return optax.chain(*parts), lr_fn


def current_eps(step, config, steps_per_epoch: int):
  """The training eps at ``step``: constant, warmed up linearly, or periodic (Liu et al. 2020)."""
  if config.periodic_eps:
    return schedules.periodic_eps(
        step / steps_per_epoch, kind=config.periodic_eps, eps_min=0.0,
        eps_max=config.periodic_eps_max or config.eps, eps_cap=config.eps,
        period_bounds=tuple(config.periodic_bounds))
  return schedules.eps_warmup(step, eps=config.eps,
                              warmup_steps=config.eps_warmup_epochs * steps_per_epoch)


def make_train_step(config: ml_collections.ConfigDict, model, tx: optax.GradientTransformation,
                    lr_fn: Callable, steps_per_epoch: int, *,
                    bundle: Optional[methods.Bundle] = None) -> Callable:
  """Builds the pure ``train_step(state, batch) -> (state, metrics)`` (not yet jitted).

  The step only calls the method's parts (:func:`robust_jax.training.methods.build`); it names no
  method and no kind.

  Args:
    config: a validated config (:mod:`robust_jax.training.config`).
    model: a :class:`robust_jax.models.functional.ModelFn`, or a linen / NNX module (adapted).
    tx: the optax transformation of :func:`make_optimizer`.
    lr_fn: its learning-rate schedule (for the metrics and SAMPa's look-ahead).
    steps_per_epoch: optimizer steps per epoch (static).
    bundle: the method's parts; default ``methods.build(config)``.

  Returns:
    The step. ``batch`` is ``{"image": float32 [B, H, W, C] in [0, 1], "label": int32 [B]}``; the
    metrics are float32 scalars (and the FOSC histogram with ``config.train_diagnostics``).
    ``adv_loss`` is the CE of the logits the objective trained on x'; ``adv_acc`` the accuracy of
    the model's own prediction there: for a model with a training hook (CIFS), whose training
    logits follow the labels, that is one more forward of x' as the attack ran it (the top-1 rule),
    since the label rule's accuracy overstates robustness (a CIFS run logged 0.97 in training
    against 0.52 under the test PGD-20).
  """
  parts = bundle or methods.build(config)
  adversary, objective, regularizer = parts.input_adversary, parts.objective, parts.regularizer
  model_fn = functional.as_model_fn(model)
  apply, forward = model_fn.apply, functional.training_forward(model_fn)
  hooked = model_fn.training is not None
  diagnostics = config.train_diagnostics

  def train_step(state: TrainState, batch: Dict[str, jax.Array]):
    x, y = batch["image"], batch["label"].astype(jnp.int32)
    chex.assert_rank(x, 4)  # NHWC
    chex.assert_shape(y, (x.shape[0],))
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    k_attack, k_drop, k_wp, k_reg = jax.random.split(key, 4)
    info = StepInfo(step=state.step, epoch=schedules.epoch_of(state.step, steps_per_epoch),
                    eps=current_eps(state.step, config, steps_per_epoch), lr=lr_fn(state.step))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    attacked = lambda xx: apply(variables, xx, train=adversary.train_mode, rngs=None)[0]

    # 1. The input adversary; 2. the per-example weights from its diagnostics.
    adv = adversary.apply(attacked, x, y, k_attack, info)
    weights = parts.weighting.apply(adv, attacked, y, info)

    # 3. The outer objective plus the regulariser, at parameters p on examples ex (the batch or, for
    # SAM's m-sharpness, a group of it), BatchNorm in train mode.
    reg_state = state.parts.regularizer

    def loss_fn(params, ex: wa_lib.Examples):
      (drop_key, reg_key), bs = ex.keys, state.batch_stats
      logits_clean, logits_adv, aux = None, None, ()
      if objective.needs_clean:
        logits_clean, aux, bs = forward({"params": params, "batch_stats": bs}, ex.x, ex.y,
                                        rngs={"dropout": drop_key})
      if objective.needs_adv:  # the auxiliary logits of x' replace those of x
        logits_adv, aux, bs = forward({"params": params, "batch_stats": bs}, ex.x_adv, ex.y,
                                      rngs={"dropout": jax.random.fold_in(drop_key, 1)})
      loss = objective.auxiliary(objective.loss(logits_clean, logits_adv, ex.y, weights=ex.weights),
                                 aux, ex.y, ex.weights)
      reg_logits = lambda xx: apply({"params": params, "batch_stats": state.batch_stats}, xx,
                                    train=True, rngs={"dropout": drop_key})[0]
      loss, reg_metrics = regularizer.apply(loss, reg_logits, ex.x, ex.y, reg_key, reg_state, info)
      return loss, wa_lib.LossAux(batch_stats=bs, metrics=reg_metrics,
                                  logits=logits_adv if objective.needs_adv else logits_clean)

    # 4. The weight adversary: the update gradient at w + v, the BatchNorm statistics to keep, and
    # the parameters the optimizer sees (weight decay: w + v for AWP and SAM, x_t for SAMPa).
    examples = wa_lib.Examples(x=x, x_adv=adv.x_adv, y=y, weights=weights, keys=(k_drop, k_reg))
    out, wa_state = parts.weight_adversary.gradient(loss_fn, examples, state.params,
                                                    state.parts.weight_adversary, k_wp, info)
    loss, grads, (new_bs, out_logits, reg_metrics) = out.loss, out.grads, out.aux
    updates, opt_state = tx.update(grads, state.opt_state, out.optimizer_params)
    new_parts = state.parts._replace(weight_adversary=wa_state,
                                     regularizer=regularizer.update(reg_state, reg_metrics))
    if parts.weighting.stateful:  # CFOL's class distribution, from the logits before the update
      new_parts = new_parts._replace(
          weighting=parts.weighting.update(state.parts.weighting, out_logits, y))

    metrics = dict(lr=info.lr, eps=info.eps, loss=loss, wp_norm=out.v_norm,
                   grad_norm=optax.tree.norm(grads), **adv.metrics, **reg_metrics)
    if diagnostics:
      clean_eval_logits = apply(variables, x, train=False)[0]
      metrics.update(clean_loss=jnp.mean(losses.cross_entropy(clean_eval_logits, y)),
                     clean_acc=jnp.mean(jnp.argmax(clean_eval_logits, -1) == y))
    if objective.needs_adv:
      acc_logits = attacked(adv.x_adv) if hooked else out_logits
      metrics.update(adv_loss=jnp.mean(losses.cross_entropy(out_logits, y)),
                     adv_acc=jnp.mean(jnp.argmax(acc_logits, -1) == y))
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              batch_stats=new_bs, opt_state=opt_state, parts=new_parts)
    return new_state, jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), metrics)

  return train_step


def make_eval_step(model, *, eps, step_size, num_steps, norm: str = "linf") -> Callable:
  """``eval_step(params, batch_stats, batch) -> dict of per-batch sums``: clean and PGD accuracy in
  eval mode (PGD with a uniform start from a fixed key, CE loss). ``batch`` may carry a boolean
  ``mask`` of real examples (padding of the last batch). ``model``: a ``ModelFn`` or a linen / NNX
  module."""
  apply = functional.as_model_fn(model).apply

  def eval_step(params, batch_stats, batch):
    x, y = batch["image"], batch["label"].astype(jnp.int32)
    mask = batch.get("mask", jnp.ones(y.shape, bool)).astype(jnp.float32)
    logits_fn = lambda xx: apply({"params": params, "batch_stats": batch_stats}, xx,
                                 train=False)[0]
    clean = jnp.argmax(logits_fn(x), -1) == y
    res = attacks.pgd(logits_fn, x, y, eps=eps, step_size=step_size, num_steps=num_steps,
                      norm=norm, start="uniform", key=jax.random.key(0))
    robust = clean & ~res.misclassified
    return {"n": jnp.sum(mask), "clean_correct": jnp.sum(clean * mask),
            "robust_correct": jnp.sum(robust * mask)}

  return eval_step
