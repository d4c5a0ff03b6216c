r"""PGD-AT (Madry et al. 2018) on CIFAR-10 with PreActResNet-18: the AT baseline of AT-AWP.

  python -m launch.train --config=launch/configs/cifar10_pgd_at_preact18.py --workdir=runs/cifar10_pgd_at_preact18

Numbers: the AT baseline of Wu, Xia and Wang, "Adversarial Weight Perturbation Helps Robust
Generalization" (NeurIPS 2020), from csdongxian/AWP's AT_AWP/logs (PreActResNet-18, CIFAR-10 L-inf,
PGD-20 on the test set): best epoch 81.70 clean / 52.79 robust, last epoch 84.60 / 43.75 (robust
overfitting). Compare with cifar10_awp_at_preact18.py, which differs only in the weight adversary.
Official code: csdongxian/AWP, AT_AWP/train_cifar10.py with the AWP off, itself
locuslab/robust_overfitting's train_cifar.py: 200 epochs, lr 0.1 piecewise (x0.1 at 50%, x0.01 at
75% of training), SGD momentum 0.9, wd 5e-4, eps 8/255, PGD-10 with step 2/255, uniform start.

Conversions:
* The official lr is updated per iteration as lr(t) with t = epoch + (i + 1) / n (0-based epochs)
  and drops when t / 200 >= 0.5, 0.75: i.e. from the last iteration of epoch 99 (149) on. Here it
  drops at the start of 0-based epochs 100 and 150, one iteration later.

Deliberate differences from the official code:
* ``attack_bn_mode = "train"``: the robust_overfitting lineage attacks with the model in train mode
  (batch statistics), so this recipe does too, to keep AT and AT-AWP comparable; unlike the official
  code, the attack's forward passes do not update the running BatchNorm statistics.
* The official model normalises inputs with the CIFAR-10 mean/std inside the training loop; our
  models take [0, 1] images (eps and step are in [0, 1] units either way).
* Model selection on a validation split (10% of the training set); the official ``model_best.pth``
  is chosen by test-set PGD accuracy.
"""

from launch.configs import common


def get_config():
  c = common.cifar10("preact_resnet18", "pgd_at")
  c.eps = 8 / 255
  c.step_size = 2 / 255
  c.num_steps = 10
  c.attack_bn_mode = "train"    # official: the attack runs in train mode (see the docstring)
  c.weight_perturbation = "none"
  c.num_epochs = 200
  c.learning_rate = 0.1
  c.weight_decay = 5e-4
  c.lr_schedule = "piecewise"
  c.lr_decay_epochs = (100, 150)  # 50% and 75% of 200
  c.lr_decay_factors = (0.1, 0.01)
  return c
