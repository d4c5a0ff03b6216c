r"""TRADES-AWP (Wu, Xia and Wang, NeurIPS 2020) on CIFAR-10 with WRN-34-10, eps = 8/255.

  python -m launch.train --config=launch/configs/cifar10_trades_awp_wrn34.py --workdir=runs/cifar10_trades_awp_wrn34

Numbers: "Adversarial Weight Perturbation Helps Robust Generalization"; csdongxian/AWP's
auto_attacks/logs and RobustBench ``Wu2020Adversarial``: 85.36 clean / 56.17 AutoAttack (eps 8/255).
Official code: csdongxian/AWP, trades_AWP/train_trades_cifar.py and utils_awp.py (TradesAWP): 200
epochs, lr 0.1 (x0.1 at epoch 100, x0.01 at 150), SGD momentum 0.9, wd 5e-4, batch 128, eps 8/255,
10 steps of 2/255 from x + 0.001 N(0, I) in eval mode, beta 6 (KL batchmean), ``--awp-gamma`` 0.005,
``--awp-warmup`` 10.

Conversions:
* The loop is ``for epoch in range(1, epochs + 1)``: the lr drops from the 1-based epochs >= 100 and
  >= 150, i.e. the 0-based epochs 99 and 149 here.
* AWP applies when the 1-based ``epoch >= awp_warmup = 10``: from the 0-based epoch 9 on, hence
  ``awp_warmup = 9`` (our epochs count from 0).

Deliberate differences from the official code:
* The weight ascent uses the perturbed parameters directly (no proxy network), with the ascent
  pass's BatchNorm updates discarded, which is what the proxy achieves.
* Model selection on a validation split (10% of the training set), never on the test set; the
  official script saves every epoch.
"""

from launch.configs import cifar10_trades_wrn34 as base


def get_config():
  c = base.get_config()         # TRADES: eval-mode attack (unlike AT-AWP) from x + 0.001 N(0, I)
  c.eps = 8 / 255
  c.step_size = 2 / 255
  c.weight_perturbation = "awp"
  c.awp_gamma = 0.005
  c.awp_warmup = 9              # official 1-based epoch >= 10
  c.num_epochs = 200
  c.weight_decay = 5e-4
  c.lr_decay_epochs = (99, 149)  # 1-based >= 100, >= 150
  c.lr_decay_factors = (0.1, 0.01)
  return c
