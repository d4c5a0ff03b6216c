r"""FGSM-AT with a random start (Wong, Rice and Kolter, ICLR 2020) on CIFAR-10 with PreActResNet-18.

  python -m launch.train --config=launch/configs/cifar10_fgsm_at_preact18.py --workdir=runs/cifar10_fgsm_at_preact18

Numbers: "Fast is better than free: revisiting adversarial training" (FGSM, alpha = 10/255, 15
epochs): 83.8 clean / 46.06 PGD-50-10 (RobustBench ``Wong2020Fast``: 83.34 clean / 43.21
AutoAttack).
Official code: locuslab/fast_adversarial, CIFAR10/train_fgsm.py: 15 epochs, batch 128, SGD momentum
0.9, wd 5e-4, ``CyclicLR`` 0 -> 0.2 -> 0 with the peak at half of the iterations, eps 8/255, one
step of alpha = 10/255 = 1.25 eps from a uniform start, ``--early-stop``: after each epoch PGD-5
(step 2/255) on that epoch's first training batch; training stops, keeping the previous epoch's
weights, when its robust accuracy falls by more than 0.2.
Model: ``preact_resnet18_fast``, the PreActResNet18 of CIFAR10/preact_resnet.py (@54f7287), whose
blocks apply the 1x1 projection shortcut to the raw block input (line 24, ``self.shortcut(x)``, not
robust_overfitting's ``self.shortcut(out)``), with the final BN-ReLU and PyTorch's default
initialisation (robust_jax/models/resnet.py).

Conversions:
* The per-iteration ``CyclicLR(step_size_up = step_size_down = iterations / 2)`` is our ``cyclic``
  schedule with ``lr_peak_fraction = 0.5``.
* ``--early-stop`` is ``co_guard = "rollback"`` with ``co_guard_steps = 5``, ``co_guard_drop =
  0.2``.

Deliberate differences from the official code:
* ``attack_bn_mode = "train"`` as the official code (the model stays in train mode while it
  attacks), but the attack's forward passes do not update the running BatchNorm statistics here.
* The catastrophic-overfitting check uses a fixed set of 256 training images in eval mode (the
  official check uses each epoch's first batch, in train mode).
* Training in float32 (the official code uses apex amp O2) on [0, 1] inputs (the official code
  normalises with the CIFAR-10 mean/std and divides eps and alpha by std).
* Model selection on a validation split (10% of the training set); the test attack is PGD-50 without
  the official 10 restarts.
"""

from launch.configs import common


def get_config():
  c = common.cifar10_preact18_fast_at("fgsm_at")
  c.model = "preact_resnet18_fast"  # fast_adversarial's: the shortcut sees the raw block input
  c.fgsm_step_factor = 1.25     # alpha = 10/255, from a uniform start clipped to [0, 1]
  c.num_epochs = 15
  c.learning_rate = 0.2         # the peak of the cyclic schedule
  c.lr_peak_fraction = 0.5
  c.co_guard = "rollback"       # --early-stop
  c.co_guard_steps = 5
  c.co_guard_drop = 0.2
  return c
