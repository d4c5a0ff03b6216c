r"""FGSM-AT + ELLE-A (Abad Rocamora et al., ICLR 2024) on CIFAR-10, PreActResNet-18, eps = 8/255.

  python -m launch.train --config=launch/configs/cifar10_elle_a_preact18.py --workdir=runs/cifar10_elle_a_preact18

Numbers: "Efficient local linearity regularization to overcome catastrophic overfitting" (ICLR
2024), CIFAR-10 PRN-18 30-epoch experiments (scripts/run_elle-a_cifar10.sh).
Official code: LIONS-EPFL/ELLE, train.py / core/utils/train.py with ``--batch-size 128 --epochs 30
--lr 0.2 --scheduler GradAlign --reg ELLE --model preact-resnet18 --lin_reg 4000 --lambda_schedule
onoff --attack-iter 1 --attack-step 8/255 --attack-eps 8/255`` and the parser defaults
``--sensitivity 2 --decay_rate 0.99``, wd 5e-4, SGD momentum 0.9: lambda starts at 0, jumps to
lambda_max = 4000 when the linearity error exceeds mean + 2 std of its history, else decays by 0.99.
Model: ``preact_resnet18`` (set by cifar10_elle_preact18.py): ELLE's ``--model preact-resnet18``,
core/models/preact_resnet.py, robust_overfitting's network (shortcut on relu(bn1(x)), final
BN-ReLU, PyTorch's default initialisation, no input standardisation).

Conversions:
* The ``GradAlign`` scheduler on CIFAR is ``CyclicLR(0, 0.2, step_size_up = step_size_down =
  iterations / 2)``: our ``cyclic`` schedule with ``lr_peak_fraction = 0.5``.
* ``elle_lambda`` is ELLE-A's lambda_max (4000 for every eps in the scripts).

Deliberate differences from the official code:
* core/utils/train.py calls ``optimizer.step()`` twice per iteration with the same gradient; here
  each iteration is one SGD step.
* The official FGSM step is neither projected nor clipped to [0, 1]; ours clips x + delta to [0, 1].
* ``attack_bn_mode = "train"`` as the official code (train mode throughout), but the attack's
  forward passes do not update the running BatchNorm statistics here.
* Model selection on a validation split (10% of the training set); the test attack is PGD-50 without
  the official 10 restarts.
"""

from launch.configs import cifar10_elle_preact18 as base


def get_config():
  c = base.get_config()         # ELLE's run with --lambda_schedule onoff
  c.method = "elle_a"
  c.elle_lambda = 4000.0        # lambda_max (--lin_reg 4000)
  c.elle_a_sensitivity = 2.0
  c.elle_a_decay = 0.99
  return c
