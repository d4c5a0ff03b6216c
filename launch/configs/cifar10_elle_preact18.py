r"""FGSM-AT + ELLE (Abad Rocamora et al., ICLR 2024) on CIFAR-10 with PreActResNet-18, eps = 8/255.

  python -m launch.train --config=launch/configs/cifar10_elle_preact18.py --workdir=runs/cifar10_elle_preact18

Numbers: "Efficient local linearity regularization to overcome catastrophic overfitting" (ICLR
2024), CIFAR-10 PRN-18 30-epoch experiments (scripts/run_elle_cifar10.sh; eval_pgd50-10.py,
eval_aa.py).
Official code: LIONS-EPFL/ELLE, train.py / core/utils/train.py with ``--batch-size 128 --epochs 30
--lr 0.2 --scheduler GradAlign --reg ELLE --model preact-resnet18 --lin_reg 1000 --lambda_schedule
constant --attack-iter 1 --attack-step 8/255 --attack-eps 8/255``: SGD momentum 0.9, wd 5e-4 (parser
default), no Nesterov, FGSM from the clean x with step eps.
Model: ``preact_resnet18``. ``--model preact-resnet18`` is core/models/preact_resnet.py
(@0f16c0e), robust_overfitting's network: the 1x1 projection shortcut on relu(bn1(x)) (line 30),
the final BN-ReLU (line 101), PyTorch's default initialisation; ``--normalize`` is False
(parser.py line 51), so no input standardisation, like the [0, 1] inputs here. ELLE's own
GradAlign baseline (scripts/run_GradAlign_cifar10.sh) runs on this network too, not on GradAlign's
(``preact_resnet18_gradalign``).

Conversions:
* The ``GradAlign`` scheduler on CIFAR is ``CyclicLR(0, 0.2, step_size_up = step_size_down =
  iterations / 2)``: our ``cyclic`` schedule with ``lr_peak_fraction = 0.5``.
* ``elle_lambda = 0`` selects the published lambda(eps): 1000 for eps <= 8/255.

Deliberate differences from the official code:
* core/utils/train.py calls ``optimizer.step()`` twice per iteration with the same gradient (once
  before and once after ``scheduler.step()``); here each iteration is one SGD step.
* The official FGSM step is neither projected (``--clamp False``) nor clipped to [0, 1]; ours clips
  x + delta to [0, 1].
* ``attack_bn_mode = "train"`` as the official code (train mode throughout), but the attack's
  forward passes do not update the running BatchNorm statistics here.
* Model selection on a validation split (10% of the training set); the test attack is PGD-50 without
  the official 10 restarts.
"""

from launch.configs import common


def get_config():
  c = common.cifar10_preact18_fast_at("elle")
  c.model = "preact_resnet18"   # ELLE's core/models/preact_resnet.py (robust_overfitting's)
  c.fgsm_step_factor = 1.0      # --attack-step 8/255 = eps, from the clean x
  c.elle_lambda = 0.0           # published lambda(eps): 1000 at 8/255
  c.num_epochs = 30
  c.learning_rate = 0.2         # the peak of the cyclic schedule
  c.lr_peak_fraction = 0.5
  return c
