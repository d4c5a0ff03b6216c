r"""GAIR-FAT (Zhang et al., ICLR 2021) on CIFAR-10 with WRN-32-10 (Madry's), eps = 0.031.

  python -m launch.train --config=launch/configs/cifar10_gair_fat_wrn32.py --workdir=runs/cifar10_gair_fat_wrn32

Numbers: "Geometry-aware Instance-reweighted Adversarial Training", Table 1 / README (WRN-32-10,
natural / PGD-20 / PGD+): best checkpoint 88.59 / 56.21 / 53.50, last 88.44 / 50.64 / 47.51.
Official code: zjfheart/Geometry-aware-Instance-reweighted-Adversarial-Training @16813b5,
GAIR_FAT.py and earlystop.py (GA_earlystop): 120 epochs, lr 0.1 piecewise, SGD momentum 0.9, wd
2e-4, batch 128, eps 0.031, K = 10 steps of 0.007 from a uniform start in eval mode, omega 0,
``--Lambda 0.0``, ``--begin_epoch 60``, dynamic tau.

Conversions (``lr_schedule(epoch + 1)``, ``adjust_tau(epoch + 1)``, ``adjust_Lambda(epoch + 1)``,
``(epoch + 1) >= begin_epoch``, with 0-based ``epoch``):
* lr decays at the 0-based epochs 59, 89 and 109 (absolute factors 0.1, 0.01, 0.005), as GAIRAT.
* tau = 0 while the 1-based epoch <= 40, 3 while <= 70, then 6: ``fat_tau_boundaries = (40, 70)``.
* Reweighting with lambda = 0 from the 1-based epoch 60: ``gairat_begin_epoch = 59``.

Deliberate differences from the official code (bugs in the released GAIR_FAT.py not reproduced):
* GA_earlystop still compares predictions with the original, not the shrinking, target order (the
  pre-fix FAT bug of FAT issue #2), and after ``begin_epoch`` the reweighted CE uses the original
  ``target`` against the re-ordered ``output_adv``; here labels always stay aligned.
* eps = 0.031 as the official code, not 8/255 = 0.0314.
* Model selection on a validation split (10% of the training set); the official
  ``bestpoint.pth.tar`` is chosen by test-set PGD-20 accuracy.
"""

from launch.configs import common


def get_config():
  c = common.cifar10_wrn32_fat("gair_fat")
  c.fat_tau_boundaries = (40, 70)  # 1-based: <= 40 -> 0, <= 70 -> 3, else 6
  c.fat_tau_values = (0, 3, 6)
  c.gairat_lambda = 0.0
  c.gairat_begin_epoch = 59     # official (epoch + 1) >= 60
  return c
