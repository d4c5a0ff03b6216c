r"""TRADES (Zhang et al., ICML 2019) on CIFAR-10 with WRN-34-10, beta = 6, eps = 0.031.

  python -m launch.train --config=launch/configs/cifar10_trades_wrn34.py --workdir=runs/cifar10_trades_wrn34

Numbers: "Theoretically Principled Trade-off between Robustness and Accuracy", Table 5 (1/lambda =
6) and the README leaderboard of the released ``model_cifar_wrn.pt``: 84.92 natural / 56.61 under
FGSM-20 (= PGD-20, step 0.003); AutoAttack 53.08.
Official code: yaodongyu/TRADES @6e8e11b, train_trades_cifar10.py and trades.py (trades_loss): 76
epochs, lr 0.1, SGD momentum 0.9, wd 2e-4, batch 128, eps 0.031, 10 steps of 0.007, beta 6, start x
+ 0.001 N(0, I), attack in eval mode, pad-4 crop + flip.

Conversions:
* ``adjust_learning_rate`` multiplies lr by 0.1 from the 1-based epoch >= 75 (further decays at 90
  and 100 are never reached in 76 epochs): the 0-based epoch 74 here, so the last two epochs run at
  0.01. The 76 epochs are the maintainer's "early stopping after the first learning rate decay"
  (issue #11), which was chosen on the test set.

Deliberate differences from the official code:
* eps = 0.031 as the official code, not 8/255 = 0.0314 (RobustBench footnotes TRADES for this).
* Model selection on a validation split (10% of the training set), never on the test set.
* The test attack's step is eps/4 (our evaluation), not 0.003.
"""

from launch.configs import common


def get_config():
  c = common.cifar10("wrn34_10", "trades")  # start x + 0.001 N(0, I), not clipped
  c.eps = 0.031
  c.step_size = 0.007
  c.num_steps = 10
  c.attack_bn_mode = "eval"     # trades_loss calls model.eval() before generation
  c.beta = 6.0
  c.num_epochs = 76
  c.learning_rate = 0.1
  c.weight_decay = 2e-4
  c.lr_schedule = "piecewise"
  c.lr_decay_epochs = (74,)     # 1-based >= 75
  c.lr_decay_factors = (0.1,)
  return c
