"""The min-max training step: one pure function, compiled into one XLA program per step.

``train_step(state, batch) -> (state, metrics)`` is assembled from parts:

1. the input adversary: the ascent loop of :mod:`robust_jax.attacks` with the method's loss, start and
   stop rule, against ``logits_fn`` = the model in eval mode (running BatchNorm statistics, nothing
   updated; ``config.attack_bn_mode="train"`` uses batch statistics instead, as the AT-AWP code);
2. optional per-example weights from the attack's diagnostics (GAIRAT's kappa);
3. an optional weight adversary (AWP, RWP, SAM, SAMPa; :mod:`robust_jax.weight_perturbation`): the
   update gradient is taken at w + v and applied to w, so w is restored exactly by construction; the
   ascent pass does not update BatchNorm statistics;
4. the outer objective (:mod:`robust_jax.objectives`), differentiated with respect to the
   parameters, and the optax update.

Every schedule (learning rate, eps warm-up, Dynamic AT's c_t, FAT's tau, CAT's K, GAIRAT's start
epoch, AWP's warm-up) is a function of the traced step, so the step compiles once for the whole run.
The randomness of step t is ``fold_in(key, t)``. There is no Python loop over attack steps and no host
callback.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from robust_jax import attacks, objectives, regularizers
from robust_jax import weight_perturbation as wp
from robust_jax.analysis import fosc_tracking
from robust_jax.attacks import losses
from robust_jax.attacks.beta import beta_attack
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


def gairat_lambda(epoch, config):
  """GAIRAT's lambda: +inf (uniform weights, plain AT) before the start epoch, then the constant
  ``config.gairat_lambda`` (the official ``fixed`` schedule; its ``piecewise`` schedule is identical
  because of an if/elif bug)."""
  return jnp.where(epoch >= config.gairat_begin_epoch, config.gairat_lambda, jnp.inf)


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
                    lr_fn: Callable, steps_per_epoch: int) -> Callable:
  """Builds the pure ``train_step(state, batch) -> (state, metrics)`` (not yet jitted).

  Args:
    config: a validated config (:mod:`robust_jax.training.config`).
    model: a Flax module with ``__call__(x, train)``.
    tx: the optax transformation of :func:`make_optimizer`.
    lr_fn: its learning-rate schedule (for the metrics and SAMPa's look-ahead).
    steps_per_epoch: optimizer steps per epoch (static).

  Returns:
    The step. ``batch`` is ``{"image": float32 [B, H, W, C] in [0, 1], "label": int32 [B]}``; the
    metrics are float32 scalars.
  """
  method = methods.get_method(config.method)
  objective = objectives.get_objective(method.objective, beta=config.beta,
                                       alp_weight=config.alp_weight, mma_margin=config.mma_margin)
  start = method.start if config.attack_start == "default" else config.attack_start
  K = config.num_steps
  wp_kind = config.weight_perturbation
  has_dropout = _uses_dropout(model)

  def apply(params, batch_stats, x, *, train, rng=None):
    variables = {"params": params, "batch_stats": batch_stats}
    rngs = {"dropout": rng} if (train and has_dropout and rng is not None) else None
    if train:
      logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
      return logits, updates.get("batch_stats", batch_stats)
    return model.apply(variables, x, train=False), batch_stats

  def train_step(state: TrainState, batch: Dict[str, jax.Array]):
    x, y = batch["image"], batch["label"].astype(jnp.int32)
    step = state.step
    epoch = schedules.epoch_of(step, steps_per_epoch)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), step)
    k_attack, k_drop, k_wp, k_reg = jax.random.split(key, 4)
    eps = current_eps(step, config, steps_per_epoch)
    metrics = {"lr": lr_fn(step), "eps": eps}

    # 1. The input adversary, against the model in eval (or batch-statistics) mode.
    if config.attack_bn_mode == "eval":
      logits_fn = lambda xx: apply(state.params, state.batch_stats, xx, train=False)[0]
    else:
      logits_fn = lambda xx: apply(state.params, state.batch_stats, xx, train=True)[0]
    diagnostics = config.train_diagnostics
    x_adv, adv, num_steps_max = None, None, K
    if method.attack_loss is not None:
      x_adv, adv, num_steps_max, attack_metrics = _input_adversary(
          method, config, logits_fn, x, y, k_attack, eps=eps, epoch=epoch, start=start,
          diagnostics=diagnostics)
      metrics.update(attack_metrics)

    # 2. Per-example weights.
    weights = None
    if method.gairat:
      weights = objectives.gairat_weights(adv.kappa, num_steps_max, gairat_lambda(epoch, config))
    if config.method == "dart" and config.dart_official_reweight:
      ce_adv = losses.cross_entropy(logits_fn(x_adv), y)
      w = jnp.where(epoch >= 1, ce_adv, 1.0)
      weights = jax.lax.stop_gradient(w * w.shape[0] / jnp.sum(w))

    # 4. The outer objective (defined before 3, which differentiates it too).
    def loss_fn(params, batch_stats, extra):
      bs = batch_stats
      logits_clean = logits_adv = None
      if method.objective in objectives.NEEDS_CLEAN_LOGITS:
        logits_clean, bs = apply(params, bs, x, train=True, rng=k_drop)
      if x_adv is not None:
        logits_adv, bs = apply(params, bs, x_adv, train=True, rng=jax.random.fold_in(k_drop, 1))
      loss = objective(logits_clean, logits_adv, y, weights=weights)
      reg_metrics = {}
      if method.regularizer is not None:
        reg_logits_fn = lambda xx: apply(params, batch_stats, xx, train=True, rng=k_drop)[0]
        reg, reg_metrics = regularizers.apply(method.regularizer, reg_logits_fn, x, y, k_reg,
                                              eps=eps, config=config, state=extra)
        loss = loss + reg
      out_logits = logits_adv if logits_adv is not None else logits_clean
      return loss, (bs, out_logits, reg_metrics)

    # 3. The weight adversary.
    extra = state.extra
    params_at = state.params
    wp_norm = jnp.zeros((), jnp.float32)
    if wp_kind != "none":
      ascent_loss = lambda p: loss_fn(p, state.batch_stats, extra)[0]  # BN updates discarded
      v, extra = _weight_adversary(wp_kind, config, ascent_loss, state.params, extra, k_wp,
                                   epoch=epoch, lr=lr_fn(step))
      params_at = jax.tree.map(jnp.add, state.params, v)
      wp_norm = optax.tree.norm(v)

    (loss, (new_bs, out_logits, reg_metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params_at, state.batch_stats, extra)
    if wp_kind == "sampa":
      # SAMPa: the gradient at the auxiliary point y_{t+1} = x_t - lr grad f(y_t) is independent of
      # the one at x~_t, so XLA schedules both in this one program (the paper runs them on 2 GPUs).
      y_next = wp.sampa_lookahead(state.params, extra["sampa"], lr=lr_fn(step))
      grad_y = jax.grad(lambda p: loss_fn(p, state.batch_stats, extra)[0])(y_next)
      grads, sampa_state = wp.sampa_combine(grads, grad_y, lam=config.sampa_lambda)
      extra = dict(extra, sampa=sampa_state)
    if method.regularizer == "elle_a":
      extra = regularizers.elle_a_update(extra, reg_metrics, config=config)
    # Weight decay and momentum see the point where the gradient was taken (the official AWP code
    # steps its optimizer while the model holds w + v, then subtracts v).
    updates, opt_state = tx.update(grads, state.opt_state, params_at)
    params = optax.apply_updates(state.params, updates)

    metrics.update(reg_metrics)
    metrics.update(loss=loss, wp_norm=wp_norm, grad_norm=optax.tree.norm(grads))
    if diagnostics:
      clean_eval_logits = apply(state.params, state.batch_stats, x, train=False)[0]
      metrics.update(clean_loss=jnp.mean(losses.cross_entropy(clean_eval_logits, y)),
                     clean_acc=jnp.mean(jnp.argmax(clean_eval_logits, -1) == y))
    if x_adv is not None:
      metrics.update(adv_loss=jnp.mean(losses.cross_entropy(out_logits, y)),
                     adv_acc=jnp.mean(jnp.argmax(out_logits, -1) == y))
    new_state = state.replace(step=step + 1, params=params, batch_stats=new_bs,
                              opt_state=opt_state, extra=extra)
    return new_state, jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), metrics)

  return train_step


def _uses_dropout(model) -> bool:
  return bool(getattr(model, "dropout_rate", 0.0))


def _input_adversary(method, config, logits_fn, x, y, key, *, eps, epoch, start, diagnostics):
  """Runs the method's attack; returns (x_adv, result, K of this epoch, metrics).

  Without ``diagnostics`` the attack skips the evaluation of x_adv (K gradients for K steps) and the
  metrics leave out FOSC at x_adv; kappa and the steps taken are exact either way.
  """
  K = config.num_steps
  step_size = config.step_size
  stop = None
  if method.stop == "fosc":
    c_t = schedules.dynamic_c(epoch, c_max=config.fosc_c_max,
                              t_prime=config.fosc_t_prime_fraction * config.num_epochs)
    stop = attacks.fosc_stop(c_t)
  elif method.stop == "fat":
    tau = schedules.piecewise_by_epoch(epoch, boundaries=tuple(config.fat_tau_boundaries),
                                       values=tuple(config.fat_tau_values), dtype=jnp.int32)
    stop = attacks.misclassified_stop(tau)
  elif method.stop == "curriculum":
    K = schedules.piecewise_by_epoch(epoch, boundaries=tuple(config.cat_steps_boundaries),
                                     values=tuple(config.cat_steps_values), dtype=jnp.int32)
  if method.single_step:
    K, step_size = 1, config.fgsm_step_factor * eps
  # Compaction gathers the still-active examples into smaller batches: it needs examples that are
  # attacked independently (eval-mode BatchNorm) and, across devices, would gather the global batch.
  compaction = (config.attack_compaction
                if stop is not None and config.attack_bn_mode == "eval" and jax.device_count() == 1
                else 0)
  if method.beta_attack:
    res = beta_attack(logits_fn, x, y, eps=eps, step_size=step_size, num_steps=K, norm=config.norm,
                      start=start, key=key)
  else:
    res = attacks.pgd(logits_fn, x, y, eps=eps, step_size=step_size, num_steps=K, norm=config.norm,
                      loss=method.attack_loss, start=start, key=key, stop=stop,
                      fosc_reference=config.fosc_reference, final_eval=diagnostics,
                      compaction=compaction)
  metrics = {
      "attack_steps": jnp.mean(res.num_steps),
      "kappa": jnp.mean(res.kappa),
      "stopped_early": jnp.mean(res.num_steps < K),
  }
  if diagnostics:
    metrics["fosc"] = jnp.mean(res.fosc)
    # Counts of the per-example FOSC on fixed bins (an array metric; the loop sums it per epoch).
    metrics[fosc_tracking.HIST_KEY] = fosc_tracking.fosc_histogram(res.fosc)
  if method.stop == "fosc":
    metrics["fosc_c"] = c_t
  if method.stop == "fat":
    metrics["fat_tau"] = tau
  return res.x_adv, res, K, metrics


def _weight_adversary(kind, config, ascent_loss, params, extra, key, *, epoch, lr):
  """The weight perturbation v (zero during AWP's warm-up) and the updated extra state."""
  if kind in ("awp", "rwp"):
    size = config.awp_gamma
    def compute(p):
      g = jax.grad(ascent_loss)(p) if kind == "awp" else None
      return wp.perturbation(kind, p, g, size=size, key=key)
    zeros = lambda p: jax.tree.map(jnp.zeros_like, p)
    v = jax.lax.cond(epoch >= config.awp_warmup, compute, zeros, params)
    return v, extra
  if kind == "sam":
    return wp.perturbation("sam", params, jax.grad(ascent_loss)(params), size=config.sam_rho), extra
  if kind == "sampa":
    return wp.sampa_perturbation(params, extra["sampa"], rho=config.sam_rho), extra
  raise ValueError(f"unknown weight_perturbation {kind!r}")


def make_eval_step(model, *, eps, step_size, num_steps, norm: str = "linf") -> Callable:
  """``eval_step(params, batch_stats, batch) -> dict of per-batch sums``: clean and PGD accuracy in
  eval mode (PGD with a uniform start from a fixed key, CE loss). ``batch`` may carry a boolean
  ``mask`` of real examples (padding of the last batch)."""

  def eval_step(params, batch_stats, batch):
    x, y = batch["image"], batch["label"].astype(jnp.int32)
    mask = batch.get("mask", jnp.ones(y.shape, bool)).astype(jnp.float32)
    logits_fn = lambda xx: model.apply({"params": params, "batch_stats": batch_stats}, xx,
                                       train=False)
    clean = jnp.argmax(logits_fn(x), -1) == y
    res = attacks.pgd(logits_fn, x, y, eps=eps, step_size=step_size, num_steps=num_steps,
                      norm=norm, start="uniform", key=jax.random.key(0))
    robust = clean & ~res.misclassified
    return {"n": jnp.sum(mask), "clean_correct": jnp.sum(clean * mask),
            "robust_correct": jnp.sum(robust * mask)}

  return eval_step
