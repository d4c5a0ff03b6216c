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

from launch.configs import common


def get_config():
  c = common.cifar10_wrn32_fat("gairat")
  c.gairat_lambda = -1.0
  c.gairat_begin_epoch = 59     # official (epoch + 1) >= 60
  return c
