r"""MART (Wang et al., ICLR 2020) on CIFAR-10 with WRN-34-10, beta = 6, eps = 0.031.

  python -m launch.train --config=launch/configs/cifar10_mart_wrn34.py --workdir=runs/cifar10_mart_wrn34

Numbers: "Improving Adversarial Robustness Requires Revisiting Misclassified Examples", WRN-34-10
without extra data: about 84.2 clean / 58.6 PGD-20 (from the paper; verify).
Official code: YisenWang/MART @2d83e17, train_wideresnet.py and mart.py (mart_loss): 90 epochs, lr
0.1, SGD momentum 0.9, wd 7e-4 (since commit 99b19ea; 2e-4 and 76 epochs before), batch 128, eps
0.031, 10 steps of 0.007 with the CE loss from x + 0.001 N(0, I) in eval mode, beta 6.

Conversions:
* The loop is ``for epoch in range(1, epochs + 1)`` and lr is x0.1 from the 1-based epoch >= 75,
  x0.01 from >= 90 (x0.001 from >= 100 is never reached): the 0-based epochs 74 and 89 here, so the
  last epoch runs at 0.001.

Deliberate differences from the official code:
* eps = 0.031 as the official code, not 8/255 = 0.0314.
* Model selection on a validation split (10% of the training set); the official script saves every
  epoch and reports the test set.
* The test attack's step is eps/4 (our evaluation); the official per-epoch PGD-20 uses eps/10.
"""

from launch.configs import cifar10_trades_wrn34 as base


def get_config():
  c = base.get_config()         # TRADES' attack (on the CE loss here, in eval mode) and beta
  c.method = "mart"
  c.num_epochs = 90
  c.weight_decay = 7e-4
  c.lr_decay_epochs = (74, 89)  # 1-based >= 75, >= 90
  c.lr_decay_factors = (0.1, 0.01)
  return c
