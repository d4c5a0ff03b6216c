r"""GAIRAT (Zhang et al., ICLR 2021) on CIFAR-10 with WRN-32-10 (Madry's), eps = 0.031.

  python -m launch.train --config=launch/configs/cifar10_gairat_wrn32.py --workdir=runs/cifar10_gairat_wrn32

Numbers: "Geometry-aware Instance-reweighted Adversarial Training", Table 1 / README (WRN-32-10,
natural / PGD-20 / PGD+): best checkpoint 85.75 / 57.81 / 55.61, last 85.49 / 53.76 / 50.32 (against
86.92 / 51.96 / 51.28 for AT). No AutoAttack number without extra data is published (issue #1).
Official code: zjfheart/Geometry-aware-Instance-reweighted-Adversarial-Training @16813b5, GAIRAT.py,
GAIR.py (Tanh weights, normalised to sum to the batch size), attack_generator.py (GA_PGD): 120
epochs, lr 0.1 piecewise, SGD momentum 0.9, wd 2e-4, batch 128, eps 0.031, 10 steps of 0.007 from a
uniform start in eval mode, ``--Lambda -1.0``, ``--Lambda_schedule fixed``, ``--begin_epoch 60``.

Conversions (the loop calls ``lr_schedule(epoch + 1)``, ``adjust_Lambda(epoch + 1)`` and tests
``(epoch + 1) >= begin_epoch`` with 0-based ``epoch``):
* lr 0.1 while (e + 1) / 120 < 0.5, 0.01 while < 0.75, 0.001 while < 11/12, then 0.0005: decays at
  the 0-based epochs 59, 89 and 109 (absolute factors 0.1, 0.01, 0.005).
* Reweighting with lambda = -1 from the 1-based epoch 60: ``gairat_begin_epoch = 59``; before it the
  loss is plain CE (lambda = +inf).

Deliberate differences from the official code:
* eps = 0.031 as the official code, not 8/255 = 0.0314.
* Model selection on a validation split (10% of the training set); the official
  ``bestpoint.pth.tar`` is chosen by test-set PGD-20 accuracy.
"""

from robust_jax.training.config import base_config


def get_config():
  c = base_config()
  c.dataset = "cifar10"
  c.model = "wrn32_10"
  c.augment = "crop_flip"
  c.method = "gairat"
  c.eps = 0.031
  c.step_size = 0.007
  c.num_steps = 10
  c.attack_start = "default"    # uniform in the eps-ball, clipped to [0, 1]
  c.attack_bn_mode = "eval"     # GA_PGD calls model.eval()
  c.gairat_lambda = -1.0
  c.gairat_begin_epoch = 59     # official (epoch + 1) >= 60
  c.batch_size = 128
  c.num_epochs = 120
  c.optimizer = "sgd"
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.weight_decay = 2e-4
  c.lr_schedule = "piecewise"
  c.lr_decay_epochs = (59, 89, 109)  # 50%, 75%, 11/12 of 120 on the 1-based epoch
  c.lr_decay_factors = (0.1, 0.01, 0.005)
  c.select_attack_steps = 10
  c.test_attack_steps = 20      # PGD-20, step eps/4 (the official per-epoch evaluation)
  return c
