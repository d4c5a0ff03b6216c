r"""FAT (Zhang et al., ICML 2020) on CIFAR-10 with WRN-32-10 (Madry's), eps = 0.031.

  python -m launch.train --config=launch/configs/cifar10_fat_wrn32.py --workdir=runs/cifar10_fat_wrn32

Numbers: "Attacks Which Do Not Kill Training Make Adversarial Learning Stronger", Table 1 / README
(WRN-32-10, DAT protocol): eps_train = 8/255: 89.34 clean / 65.52 FGSM / 46.13 PGD-20 / 46.82 CW;
eps_train = 16/255 (``--config.eps=0.062``): 87.00 / 65.94 / 49.86 / 48.65.
Official code: zjfheart/Friendly-Adversarial-Training @80a0640, FAT.py and earlystop.py: WRN_madry
depth 32 width 10, 120 epochs, lr 0.1, SGD momentum 0.9, wd 2e-4, batch 128, eps 0.031, K = 10 steps
of 0.007 (CE) from a uniform start in eval mode, dynamic tau.

Conversions (the loop calls ``adjust_learning_rate(epoch + 1)`` and ``adjust_tau(epoch + 1)`` with
0-based ``epoch``, i.e. 1-based arguments):
* lr x0.1 / x0.01 / x0.005 from the 1-based epochs >= 60 / >= 90 / >= 110: 0-based 59, 89, 109.
* tau = 0 while the 1-based epoch <= 50, 1 while <= 90, then 2: tau 1 starts at the 0-based epoch 50
  and tau 2 at 90, hence ``fat_tau_boundaries = (50, 90)``, ``fat_tau_values = (0, 1, 2)``.

Deliberate differences from the official code:
* ``--omega 0.001`` (Gaussian noise added to every FAT step) is not available and is left out.
* eps = 0.031 as the official code, not 8/255 = 0.0314.
* Model selection on a validation split (10% of the training set); the official script logs the test
  set every epoch.
"""

from launch.configs import common


def get_config():
  c = common.cifar10_wrn32_fat("fat")
  c.fat_tau_boundaries = (50, 90)  # 1-based: <= 50 -> 0, <= 90 -> 1, else 2
  c.fat_tau_values = (0, 1, 2)
  return c
