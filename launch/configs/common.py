"""Shared starting points of the recipes; not a recipe itself (it has no ``get_config``).

A recipe either derives from the recipe it varies (``from launch.configs import
cifar10_trades_wrn34 as base`` and ``c = base.get_config()``) or starts from one of the bases below,
and sets only what differs; its docstring keeps the launch command, the paper and table, the
official code and the deliberate differences. ``launch.configs`` resolves because ``python -m
launch.train`` runs from the repository root, which puts it on ``sys.path``.
"""

from robust_jax.training.config import base_config

# Paper recipes run without the per-step diagnostics (``train_diagnostics=False``: PGD-K costs K
# gradient evaluations, not K + 1, and no clean-batch forward; the updates are identical), as the
# official codes do: 10-20% of a step on CPU. Dynamic AT's recipes keep them (FOSC per epoch is what
# that paper measures); any run can turn them on with --config.train_diagnostics=True.


def cifar10(model, method):
  """CIFAR-10 with pad-4 crop + flip, batch 128, SGD momentum 0.9, the method's own attack start,
  model selection by PGD-10 and a PGD-20 test attack (every CIFAR-10 recipe shares these)."""
  c = base_config()
  c.dataset = "cifar10"
  c.model = model
  c.augment = "crop_flip"
  c.method = method
  c.attack_start = "default"    # the method's own start (see each recipe's docstring)
  c.batch_size = 128
  c.optimizer = "sgd"
  c.momentum = 0.9
  c.select_attack_steps = 10    # PGD-10, step eps/4
  c.test_attack_steps = 20
  c.train_diagnostics = False   # the official codes' work per step (no FOSC at x_adv; see below)
  return c


def mnist(model, method):
  """MNIST at eps = 0.3 without augmentation, batch 128, SGD lr 0.01 momentum 0.9 without weight
  decay on a piecewise schedule, eval-mode attacks, model selection by PGD-10."""
  c = base_config()
  c.dataset = "mnist"
  c.model = model
  c.augment = "none"
  c.method = method
  c.eps = 0.3
  c.attack_start = "default"    # the method's own start (see each recipe's docstring)
  c.attack_bn_mode = "eval"
  c.batch_size = 128
  c.optimizer = "sgd"
  c.learning_rate = 0.01
  c.momentum = 0.9
  c.weight_decay = 0.0
  c.lr_schedule = "piecewise"
  c.select_attack_steps = 10
  c.train_diagnostics = False   # the official codes' work per step (no FOSC at x_adv; see below)
  return c


def dynamic_at(c):
  """Dynamic AT as YisenWang/dynamic_adv_training attacks (LinfPGDAttack: 10 steps of eps/4 from a
  uniform start; Keras learning phase not fed: inference-mode BatchNorm), with the paper's FOSC
  (c_max = 0.5 from the natural image) and the official reweighting off; logger.py's PGD-20 test
  attack. ``c.eps`` must be set; the recipe sets ``fosc_t_prime_fraction``."""
  c.step_size = c.eps / 4       # eps_iter = eps / 4
  c.num_steps = 10
  c.attack_bn_mode = "eval"
  c.fosc_c_max = 0.5
  c.fosc_reference = "natural"
  c.train_diagnostics = True    # FOSC distributions per epoch: the paper's measurement
  c.dart_official_reweight = False
  c.test_attack_steps = 20      # logger.py: PGD-20, step eps/4, random start
  return c


def cifar10_preact18_fast_at(method):
  """The one-step fast-AT setting on PreActResNet-18 (FGSM-AT, GradAlign, ELLE, ELLE-A): eps 8/255,
  the model in train mode throughout, SGD wd 5e-4 on a per-iteration cyclic schedule, no
  catastrophic-overfitting guard, PGD-50 test attack. The recipe sets the FGSM step, the epochs,
  the peak learning rate and where it peaks."""
  c = cifar10("preact_resnet18", method)
  c.eps = 8 / 255
  c.num_steps = 1
  c.step_size = 2 / 255         # not used by the one-step attack (step: fgsm_step_factor * eps)
  c.attack_bn_mode = "train"    # the official models are in train mode throughout training
  c.nesterov = False
  c.weight_decay = 5e-4
  c.lr_schedule = "cyclic"
  c.lr_decay_epochs = ()
  c.lr_decay_factors = ()
  c.co_guard = "off"
  c.test_attack_steps = 50
  return c


def cifar10_wrn32_fat(method):
  """The WRN-32-10 (Madry's) protocol of zjfheart's FAT.py, GAIRAT.py and GAIR_FAT.py: eps 0.031,
  10 steps of 0.007 in eval mode, 120 epochs, lr 0.1 x0.1 / x0.01 / x0.005 from the 0-based epochs
  59 / 89 / 109 (1-based >= 60 / >= 90 / >= 110), wd 2e-4."""
  c = cifar10("wrn32_10", method)
  c.eps = 0.031
  c.step_size = 0.007
  c.num_steps = 10
  c.attack_bn_mode = "eval"     # earlystop / GA_PGD call model.eval()
  c.num_epochs = 120
  c.learning_rate = 0.1
  c.weight_decay = 2e-4
  c.lr_schedule = "piecewise"
  c.lr_decay_epochs = (59, 89, 109)  # 1-based >= 60, >= 90, >= 110
  c.lr_decay_factors = (0.1, 0.01, 0.005)
  return c
