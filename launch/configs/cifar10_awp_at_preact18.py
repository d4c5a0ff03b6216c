r"""AT-AWP (Wu, Xia and Wang, NeurIPS 2020) on CIFAR-10 with PreActResNet-18, eps = 8/255.

  python -m launch.train --config=launch/configs/cifar10_awp_at_preact18.py --workdir=runs/cifar10_awp_at_preact18

Numbers: "Adversarial Weight Perturbation Helps Robust Generalization"; csdongxian/AWP's AT_AWP/logs
(PreActResNet-18, CIFAR-10 L-inf, PGD-20 on the test set): best epoch (159) 81.18 clean / 55.39
robust, last epoch 81.65 / 54.30, against 52.79 / 43.75 for AT (cifar10_pgd_at_preact18.py).
Official code: csdongxian/AWP, AT_AWP/train_cifar10.py and utils_awp.py (AdvWeightPerturb): gamma
(``--awp-gamma``) 0.01, ``--awp-warmup`` 0, one AWP step; the rest is robust_overfitting's recipe:
200 epochs, lr 0.1 piecewise (x0.1 at 50%, x0.01 at 75%), SGD momentum 0.9, wd 5e-4, eps 8/255,
PGD-10 with step 2/255, uniform start.

Conversions:
* ``awp_warmup = 0``: AWP from the first epoch (the official ``epoch >= awp_warmup`` is true from
  the start in either epoch convention).
* The official lr is updated per iteration and drops from the last iteration of 0-based epoch 99
  (149); here at the start of epochs 100 and 150, one iteration later.

Deliberate differences from the official code:
* ``attack_bn_mode = "train"``, as the official code: its input attack runs with the model in train
  mode (batch statistics; inherited from robust_overfitting). Only the first batch of each epoch
  after epoch 0 is attacked in eval mode there (left over from the test loop); here every batch uses
  batch statistics, and the attack's forward passes do not update the running statistics.
* The weight ascent uses the perturbed copy of the parameters directly (no proxy network), with the
  BatchNorm updates of the ascent pass discarded, which is what the proxy achieves; the official
  code also runs a clean train-mode forward after the restore, for logging, that updates BN
  statistics.
* The official model normalises inputs with the CIFAR-10 mean/std; our models take [0, 1] images.
* Model selection on a validation split (10% of the training set); the official ``model_best.pth``
  is chosen by test-set PGD accuracy.
"""

from launch.configs import cifar10_pgd_at_preact18 as base


def get_config():
  # AT's attack and schedule. The official AT-AWP code attacks in train mode (robust_overfitting
  # lineage), as cifar10_pgd_at_preact18.py; TRADES-AWP does not.
  c = base.get_config()
  c.weight_perturbation = "awp"
  c.awp_gamma = 0.01            # relative size: ||v_l|| = gamma ||w_l|| per layer
  c.awp_warmup = 0
  return c
