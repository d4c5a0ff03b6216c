r"""FAT for TRADES (Zhang et al., ICML 2020) on CIFAR-10 with WRN-34-10, beta = 6, eps = 0.031.

  python -m launch.train --config=launch/configs/cifar10_fat_trades_wrn34.py --workdir=runs/cifar10_fat_trades_wrn34

Numbers: "Attacks Which Do Not Kill Training Make Adversarial Learning Stronger", Table 2 / README
(WRN-34-10, TRADES protocol): beta = 6, eps_train = 8/255: 86.60 clean / 61.79 FGSM / 55.98 PGD-20 /
54.29 CW; eps_train = 16/255 (``--config.eps=0.062``): 84.39 / 61.73 / 57.12 / 54.36 (RobustBench
``Zhang2020Attacks``: 84.52 clean / 53.51 AutoAttack).
Official code: zjfheart/Friendly-Adversarial-Training @80a0640, FAT_for_TRADES.py and earlystop.py:
WRN-34-10, 85 epochs, lr 0.1, SGD momentum 0.9, wd 2e-4, batch 128, eps 0.031, K = 10 steps of 0.007
on the KL loss from x + 0.001 N(0, I) in eval mode, omega 0, beta 6, dynamic tau.

Conversions (``adjust_learning_rate(epoch + 1)`` and ``adjust_tau(epoch + 1)``, 1-based arguments):
* lr x0.1 from the 1-based epoch >= 75 (x0.01 at >= 90 is never reached in 85 epochs): 0-based 74.
* tau = 0 while the 1-based epoch <= 30, 1 while <= 50, 2 while <= 70, then 3: the next tau starts
  at the 0-based epochs 30, 50 and 70.

Deliberate differences from the official code:
* eps = 0.031 as the official code, not 8/255 = 0.0314.
* Model selection on a validation split (10% of the training set); the official script logs the test
  set every epoch. The test attack's step is eps/4 (the official TRADES protocol uses 0.003).
"""

from launch.configs import cifar10_trades_wrn34 as base


def get_config():
  c = base.get_config()         # TRADES' attack, beta, optimiser and lr decay at 1-based 75
  c.method = "fat_trades"
  c.fat_tau_boundaries = (30, 50, 70)  # 1-based: <= 30 -> 0, <= 50 -> 1, <= 70 -> 2, else 3
  c.fat_tau_values = (0, 1, 2, 3)
  c.num_epochs = 85
  return c
