"""One measured result per new system on the embedded digits: SGM, label noise and kappa, CIFS, SAMMD.

Each function trains what it needs on scikit-learn's 8x8 digits (CPU minutes), measures the
system's claim, and returns (and with ``out`` writes as JSON) its numbers:

=================================  ==============================================================
:func:`sgm_transfer`               Wu et al. 2020 (SGM): PGD from a standard-trained WRN-10-2
                                   surrogate with gamma = 1 (plain), 0.5 and 0.2 to a standard MLP
                                   and CNN; the targets' accuracy on the transferred examples
                                   (lower = better transfer). Claim: gamma < 1 transfers better.
:func:`label_noise_experiment`     Zhu et al. 2021: 20% symmetric noise, ST vs PGD-AT; per epoch the
                                   clean-subset accuracy and the noisy-subset fit; the AUC of kappa
                                   as a noise detector. Claims: AT fits the noisy labels less; kappa
                                   separates noisy from clean points.
:func:`cifs_experiment`            Yan et al. 2021 (CIFS): PGD-AT of ``cifs_cnn4`` with the joint
                                   probe loss vs ``cnn4`` with CE; clean and PGD-20 test accuracy.
                                   Claim: CIFS improves robustness.
:func:`sammd_experiment`           Gao et al. 2021 (SAMMD): test power on clean vs PGD batches and
                                   the type-I error on clean vs clean, for SAMMD and for a
                                   Gaussian kernel on the inputs only. Claim: SAMMD detects the
                                   adversarial batches.
=================================  ==============================================================

Command (all four, or one with ``--what``; JSON files under ``--out``)::

  python -m robust_jax.experiments.new_systems --what=all --out=runs/new_systems

The numbers are single-seed (``--seed``) and small-scale; the digits are not the papers' datasets.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import attacks, evaluation, models
from robust_jax.analysis import label_noise as label_noise_analysis
from robust_jax.analysis import sammd
from robust_jax.data import pipeline
from robust_jax.models import functional
from robust_jax.training import config as config_lib
from robust_jax.training import methods
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib

EPS = 0.2  # the digits recipe's budget (launch/configs/digits.py)


def digits_config(*, method: str = "standard", model: str = "mlp", num_epochs: int = 30,
                  seed: int = 0, **overrides: Any):
  """The digits recipe (``launch/configs/digits.py``) shortened to ``num_epochs`` epochs."""
  c = config_lib.base_config()
  c.update(dict(dataset="digits", model=model, method=method, eps=EPS, step_size=EPS / 4,
                num_steps=10, batch_size=64, num_epochs=num_epochs, learning_rate=0.1,
                weight_decay=5e-4, lr_schedule="piecewise",
                lr_decay_epochs=(int(num_epochs * 2 / 3), int(num_epochs * 0.9)),
                lr_decay_factors=(0.1, 0.01), seed=seed, progress=False,
                train_diagnostics=False))
  c.update(overrides)
  return c


def fit(config, *, model=None, log: Callable[[str], None] = print):
  """Trains ``config`` with the library's step (single device, no checkpoints).

  Returns:
    ``(model, variables, dataset)``; ``variables = {"params", "batch_stats"}``.
  """
  from robust_jax.training import restore as restore_lib  # pylint: disable=import-outside-toplevel
  ds = pipeline.load_dataset(config.dataset, validation_fraction=config.validation_fraction,
                             label_noise=config.label_noise,
                             label_noise_rate=config.label_noise_rate,
                             label_noise_seed=config.label_noise_seed)
  model = model or restore_lib.build_model(config, ds.num_classes)
  spe = pipeline.steps_per_epoch(len(ds.train["label"]), config.batch_size)
  tx, lr_fn = step_lib.make_optimizer(config, spe)
  state = state_lib.create(model=model, tx=tx, seed=config.seed,
                           sample_input=jnp.zeros((1,) + tuple(ds.image_shape), jnp.float32))
  bundle = methods.build(config)
  state = state.replace(parts=bundle.init(state.params))
  step = jax.jit(step_lib.make_train_step(config, model, tx, lr_fn, spe, bundle=bundle))
  t0 = time.time()
  for epoch in range(config.num_epochs):
    for batch in pipeline.train_batches(ds.train, batch_size=config.batch_size, seed=config.seed,
                                        epoch=epoch, augment=config.augment):
      state, metrics = step(state, {k: jnp.asarray(v) for k, v in batch.items()})
  log(f"trained {config.model} ({config.method}, {config.num_epochs} epochs) in "
      f"{time.time() - t0:.0f}s, last loss {float(metrics['loss']):.3f}")
  return model, {"params": state.params, "batch_stats": state.batch_stats}, ds


def _logits_fn(model, variables):
  apply = functional.as_model_fn(model).apply
  return lambda x: apply(variables, x, train=False)[0]


def _clean_and_pgd(model, variables, arrays, *, eps=EPS, steps=20):
  """Clean and PGD-``steps`` (step eps/4, uniform start, CE on the logits) test accuracy."""
  eval_step = jax.jit(step_lib.make_eval_step(model, eps=eps, step_size=eps / 4, num_steps=steps))
  tot = {"n": 0.0, "clean_correct": 0.0, "robust_correct": 0.0}
  for batch in pipeline.eval_batches(arrays, batch_size=500):
    out = eval_step(variables["params"], variables["batch_stats"], batch)
    for k in tot:
      tot[k] += float(out[k])
  return {"clean_acc": tot["clean_correct"] / tot["n"], "pgd_acc": tot["robust_correct"] / tot["n"]}


def _write(out: Optional[str], name: str, result: Dict[str, Any]) -> Dict[str, Any]:
  if out:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
      json.dump(result, f, indent=1)
  return result


# --------------------------------------------------------------------------------------------------
# SGM.


SURROGATE = dict(depth=10, widen_factor=2)  # WRN-10-2: 3 pre-activation blocks, 16/32/64 x 2 ch.


def sgm_transfer(*, out: Optional[str] = None, seed: int = 0, gammas=(1.0, 0.5, 0.2),
                 eps_values=(0.05, 0.1, 0.2), surrogate_epochs: int = 30, target_epochs: int = 30,
                 surrogate: Optional[Dict[str, int]] = None, name: str = "sgm_transfer",
                 log: Callable[[str], None] = print) -> Dict[str, Any]:
  """SGM transfer on the digits: a small ResNet surrogate -> standard MLP and CNN (``cnn4``).

  The surrogate is the TRADES WideResNet at depth 10, width 2 by default (``get_model("wrn28_10",
  depth=10, widen_factor=2)``, 3 residual blocks, all with 1x1 projection shortcuts; ``surrogate``
  overrides depth and width, e.g. ``dict(depth=16, widen_factor=1)`` has 4 identity-skip blocks of
  6; a ResNet-18 does not train in CPU minutes here), trained normally. The attack follows the official ``attack_sgm.py`` scaled to the digits: linf PGD, 10
  sign steps of eps / 8, no random start, CE on the surrogate's logits in eval mode, at each eps of
  ``eps_values`` (0.2 is the digits recipe's budget, at which transfer to undefended targets may
  saturate); it is run through :func:`robust_jax.evaluation.transfer` on the 359 test digits, once
  per gamma (the same trained weights, rebuilt with ``sgm_gamma``).
  """
  arch = dict(SURROGATE if surrogate is None else surrogate)
  make = lambda gamma: models.get_model("wrn28_10", sgm_gamma=gamma, **arch)
  _, surrogate_vars, ds = fit(digits_config(model="wrn28_10", num_epochs=surrogate_epochs,
                                            seed=seed), model=make(1.0), log=log)
  targets = {}
  for target_name in ("mlp", "cnn4"):
    m, v, _ = fit(digits_config(model=target_name, num_epochs=target_epochs, seed=seed), log=log)
    targets[target_name] = _logits_fn(m, v)
  rows = []
  for eps in eps_values:
    attack = ("pgd", dict(eps=eps, step_size=eps / 8, num_steps=10))
    for gamma in gammas:
      source = _logits_fn(make(gamma), surrogate_vars)
      for target_name, target in targets.items():
        rep = evaluation.transfer(source, target, ds.test, attack, batch_size=359,
                                  key=jax.random.key(seed))
        rows.append({"eps": eps, "gamma": gamma, "target": target_name,
                     "target_clean_acc": rep.clean_accuracy,
                     "target_acc_on_transferred": rep.transfer_accuracy,
                     "source_whitebox_acc": rep.source_accuracy})
        log(f"SGM eps={eps} gamma={gamma}: {target_name} accuracy {rep.clean_accuracy:.3f} clean -> "
            f"{rep.transfer_accuracy:.3f} transferred (surrogate white-box "
            f"{rep.source_accuracy:.3f})")
  return _write(out, name, {"attack": "linf PGD-10, step eps/8, no random start",
                            "surrogate": arch, "seed": seed, "rows": rows})


# --------------------------------------------------------------------------------------------------
# Label noise.


def label_noise_experiment(*, out: Optional[str] = None, seed: int = 0, rate: float = 0.2,
                           kind: str = "symmetric", num_epochs: int = 30,
                           log: Callable[[str], None] = print) -> Dict[str, Any]:
  """ST and PGD-AT of the digits MLP with ``rate`` label noise: fits per epoch and kappa's AUC."""
  results = []
  for method in ("standard", "pgd_at"):
    cfg = digits_config(method=method, num_epochs=num_epochs, seed=seed, label_noise=kind,
                        label_noise_rate=rate, label_noise_seed=seed)
    res = label_noise_analysis.track_training(cfg, kappa_steps=10, log=log)
    log(f"[{method}] kappa AUC {res['kappa_auc']:.3f}; mean kappa clean "
        f"{res['kappa_mean']['clean']:.2f}, noisy {res['kappa_mean']['noisy']:.2f}")
    results.append(res)
  if out:
    os.makedirs(out, exist_ok=True)
    label_noise_analysis.plot(results, os.path.join(out, "label_noise.png"))
  return _write(out, "label_noise", {"runs": results})


# --------------------------------------------------------------------------------------------------
# CIFS.


def train_cifs(model_name: str, *, num_epochs: int = 60, seed: int = 0,
               learning_rate: float = 0.05, log: Callable[[str], None] = print):
  """PGD-AT on the digits with the official CIFS objective (``joint_CE_loss``, label rule in training).

  The library's step (:func:`fit`, what ``launch.train --config=launch/configs/digits.py
  --config.model=cifs_cnn4 --config.learning_rate=0.05`` runs): ``model_name`` a CIFS model
  (``cifs_cnn4``: its training forward gives the masks the labels and returns the probes' logits,
  and the loss is the joint CE over the final and probe logits, beta = 2,
  :func:`robust_jax.objectives.with_auxiliary_logits`) or a plain one (``cnn4``: CE). PGD-10 (eps
  0.2, step eps / 4, uniform start, CE of the final logits, eval mode), then one SGD step on the
  adversarial batch in train mode (the digits recipe's optimiser and schedule: momentum 0.9, weight
  decay 5e-4, piecewise; learning rate 0.05 for 60 epochs: at the digits recipe's 0.1 the plain
  ``cnn4`` stays at chance under PGD-AT; at 0.01 for 30 epochs both train, CIFS less well: clean
  0.75, PGD-20 0.21 against 0.98, 0.59, numbers of the earlier hand-written loop).

  Returns:
    ``(model, variables, dataset)``.
  """
  return fit(digits_config(method="pgd_at", model=model_name, num_epochs=num_epochs, seed=seed,
                           learning_rate=learning_rate), log=log)


def cifs_experiment(*, out: Optional[str] = None, seed: int = 0, num_epochs: int = 60,
                    learning_rate: float = 0.05,
                    log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Clean and PGD-20 test accuracy (eps 0.2) of PGD-AT ``cifs_cnn4`` (joint loss) vs ``cnn4``."""
  rows = {}
  for name in ("cnn4", "cifs_cnn4"):
    model, variables, ds = train_cifs(name, num_epochs=num_epochs, seed=seed,
                                      learning_rate=learning_rate, log=log)
    rows[name] = _clean_and_pgd(model, variables, ds.test)
    log(f"{name}: test clean {rows[name]['clean_acc']:.3f}, PGD-20 {rows[name]['pgd_acc']:.3f}")
  return _write(out, "cifs", {"eps": EPS, "seed": seed, "num_epochs": num_epochs,
                              "learning_rate": learning_rate, "results": rows})


# --------------------------------------------------------------------------------------------------
# SAMMD.


def sammd_experiment(*, out: Optional[str] = None, seed: int = 0, n: int = 50,
                     num_tests: int = 100, eps_values=(0.2, 0.1, 0.05), kernel_steps: int = 1000,
                     kernel_lrs=(2e-4, 1e-2), name: str = "sammd",
                     log: Callable[[str], None] = print) -> Dict[str, Any]:
  """SAMMD's power on the digits, and its type-I error, against an input-only Gaussian kernel.

  A standard-trained MLP (30 epochs) is the classifier; phi = its last hidden layer (ReLU of
  ``fc2``). Adversarial examples: PGD-20 (step eps / 10, uniform start; the official
  ``adv_generator.py`` settings scaled) at each eps of ``eps_values``. The kernel is trained on 400
  training digits (200 natural, 200 adversarial of the other 200), once per learning rate of
  ``kernel_lrs`` (2e-4 is the official rate, which barely moves the kernel at these scales). The
  tests draw n natural digits from one half of the held-out digits (validation + test) and n
  adversarial (power) or natural (type-I error) digits from the other half; alpha = 0.05.
  "input_gaussian" is the same test with eps = 1 in the kernel (the Gaussian kernel on the inputs
  alone, sigma_q = 2 d as SAMMD's initialisation: the paper's MMD-G baseline up to its bandwidth);
  "input_gaussian_trained" trains that kernel's bandwidth like SAMMD's (the largest learning rate
  of ``kernel_lrs``; MMD-O-like), which separates what the semantic features add from what a tuned
  bandwidth adds.
  """
  model, variables, ds = fit(digits_config(num_epochs=30, seed=seed), log=log)
  logits_fn = _logits_fn(model, variables)
  phi = jax.jit(sammd.classifier_features(model, variables, "fc2"))
  pgd = jax.jit(lambda xx, yy, k, eps: attacks.pgd(logits_fn, xx, yy, eps=eps, step_size=eps / 10,
                                                   num_steps=20, start="uniform", key=k).x_adv)
  train_x, train_y = jnp.asarray(ds.train["image"][:400]), jnp.asarray(ds.train["label"][:400])
  held_x = jnp.asarray(np.concatenate([ds.validation["image"], ds.test["image"]]))
  held_y = jnp.asarray(np.concatenate([ds.validation["label"], ds.test["label"]]))
  perm = np.random.default_rng(seed).permutation(len(held_y))
  half_a, half_b = perm[:len(perm) // 2], perm[len(perm) // 2:]
  x_a, x_b = held_x[half_a], held_x[half_b]
  tr_nat = train_x[:200]
  rows, adv_acc, kernels_out = {}, {}, {}
  for eps in eps_values:
    tr_adv = pgd(train_x[200:], train_y[200:], jax.random.key(seed), eps)
    held_adv_b = pgd(x_b, held_y[half_b], jax.random.key(seed + 1), eps)
    adv_acc[str(eps)] = float(jnp.mean(jnp.argmax(logits_fn(held_adv_b), -1) == held_y[half_b]))
    init = sammd.init_params(jnp.concatenate([phi(tr_nat), phi(tr_adv)]), 64)
    input_only = sammd.KernelParams(a=init.a, s=init.s, e=jnp.float32(30.0))
    kernels = {"input_gaussian": input_only,
               # eps = sigmoid(30) = 1 in float32: only sigma_q receives a gradient.
               "input_gaussian_trained": sammd.train_kernel(
                   phi(tr_nat), phi(tr_adv), tr_nat, tr_adv, steps=kernel_steps,
                   learning_rate=max(kernel_lrs), params=input_only)}
    for lr in kernel_lrs:
      kernels[f"sammd_lr{lr:g}"] = sammd.train_kernel(phi(tr_nat), phi(tr_adv), tr_nat, tr_adv,
                                                      steps=kernel_steps, learning_rate=lr)
    pools = {"power": (phi(x_a), x_a, phi(held_adv_b), held_adv_b),
             "type_i_error": (phi(x_a), x_a, phi(x_b), x_b)}
    for kname, kp in kernels.items():
      kernels_out[f"{eps}/{kname}"] = [float(v) for v in kp.constrained()]
      for what, pool in pools.items():
        for test in ("permutation", "wild_bootstrap"):
          rate = sammd.test_power(*pool, kp, n=n, num_tests=num_tests,
                                  key=jax.random.key(seed + 7), test=test, num_permutations=100,
                                  alpha=0.05)
          rows[f"eps{eps}/{kname}/{test}/{what}"] = rate
          log(f"eps {eps} {kname} {test}: {what} = {rate:.2f}")
  return _write(out, name, {"n": n, "num_tests": num_tests, "alpha": 0.05,
                               "classifier_acc_on_adversarial": adv_acc,
                               "kernels (sigma_phi, sigma_q, eps)": kernels_out, "rates": rows})


EXPERIMENTS = {"sgm": sgm_transfer, "label_noise": label_noise_experiment,
               "cifs": cifs_experiment, "sammd": sammd_experiment}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--what", default="all", choices=["all", *EXPERIMENTS])
  parser.add_argument("--out", default="runs/new_systems")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  from robust_jax import xla_flags  # pylint: disable=import-outside-toplevel
  xla_flags.configure_cpu()
  names = list(EXPERIMENTS) if args.what == "all" else [args.what]
  for name in names:
    print(json.dumps(EXPERIMENTS[name](out=args.out, seed=args.seed), indent=1)[:4000], flush=True)


if __name__ == "__main__":
  main()
