r"""FAT for MART (Zhang et al., ICML 2020) on CIFAR-10 with WRN-34-10, beta = 6, eps = 0.031.

  python -m launch.train --config=launch/configs/cifar10_fat_mart_wrn34.py --workdir=runs/cifar10_fat_mart_wrn34

Numbers: "Attacks Which Do Not Kill Training Make Adversarial Learning Stronger" (WRN-34-10, TRADES
protocol); the README tables list no FAT-for-MART row, so this recipe has no headline number to
match.
Official code: zjfheart/Friendly-Adversarial-Training @80a0640, FAT_for_MART.py and earlystop.py:
WRN-34-10, 90 epochs (older revisions: 85), lr 0.1, SGD momentum 0.9, wd 2e-4, batch 128, eps 0.031,
K = 10 steps of 0.007 on the CE loss from x + 0.001 N(0, I) in eval mode, omega 0, beta 6, dynamic
tau.

Conversions (``adjust_learning_rate(epoch + 1)`` and ``adjust_tau(epoch + 1)``, 1-based arguments):
* lr x0.1 from the 1-based epoch >= 60 and x0.01 from >= 90: the 0-based epochs 59 and 89 (with 90
  epochs only the last one runs at lr 0.001).
* tau = 0 while the 1-based epoch <= 20, 1 while <= 40, 2 while <= 60, 3 while <= 80, then 4: the
  next tau starts at the 0-based epochs 20, 40, 60 and 80.

Deliberate differences from the official code:
* eps = 0.031 as the official code, not 8/255 = 0.0314.
* Model selection on a validation split (10% of the training set); the official script logs the test
  set every epoch. The test attack's step is eps/4 (the official TRADES protocol uses 0.003).
"""

from launch.configs import cifar10_fat_trades_wrn34 as base


def get_config():
  c = base.get_config()         # FAT for TRADES' attack (on the CE loss here), beta and wd
  c.method = "fat_mart"
  c.fat_tau_boundaries = (20, 40, 60, 80)  # 1-based: <= 20, <= 40, <= 60, <= 80, else
  c.fat_tau_values = (0, 1, 2, 3, 4)
  c.num_epochs = 90
  c.lr_decay_epochs = (59, 89)  # 1-based >= 60, >= 90
  c.lr_decay_factors = (0.1, 0.01)
  return c
