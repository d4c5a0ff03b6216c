r"""FGSM-AT + GradAlign (Andriushchenko and Flammarion, NeurIPS 2020) on CIFAR-10, PreActResNet-18.

  python -m launch.train --config=launch/configs/cifar10_gradalign_preact18.py --workdir=runs/cifar10_gradalign_preact18

Numbers: "Understanding and Improving Fast Adversarial Training", Figure 1 /
sh/exps_diff_eps_cifar10.sh (eps = 8/255, lambda = 0.2, 30 epochs; PGD-50-10 on 1,000 test points).
RobustBench ``Andriushchenko2020Understanding``: 79.84 clean / 43.93 AutoAttack.
Official code: tml-epfl/understanding-fast-adv-training, train.py with ``--attack=fgsm --eps=8
--attack_init=zero --epochs=30 --grad_align_cos_lambda=0.200 --lr_max=0.30``: batch 128, SGD
momentum 0.9, wd 5e-4, ``cyclic`` lr 0 -> 0.3 at 2/5 of training -> 0, FGSM from zero init with
``fgsm_alpha`` 1.25, clipped to the eps-ball (i.e. a step of exactly eps).
Model: ``preact_resnet18_gradalign``, the PreActResNet18 of models.py (@ceed494): the 1x1
projection shortcut on the raw block input (line 115), no BN-ReLU after the last block (lines
175-194), and train.py's ``model.apply(utils.initialize_weights)``: He-normal conv kernels with the
fan-out, N(0, 2 / (k * k * out_channels)), the linear layer N(0, 2 / in_features) with a zero bias;
no input standardisation (mean 0, std 1, lines 131-132), like the [0, 1] inputs here.

Conversions:
* The per-iteration ``np.interp(t, [0, 2/5 * epochs, epochs], [0, lr_max, 0])`` is our ``cyclic``
  schedule with ``lr_peak_fraction = 0.4``.
* With zero init, ``clamp(1.25 eps sign(g), -eps, eps) = eps sign(g)``: ``fgsm_step_factor = 1.0``.
* ``gradalign_lambda = 0`` selects the published lambda(eps) = 0.02 * 10^(eps / 8) (eps in 1/255),
  0.2 at 8/255.
* ``gradalign_detach_first = True``: train.py detaches the FGSM gradient at x (double backprop only
  through the gradient at x + eta), as the maintainer confirmed in issue #3.

Deliberate differences from the official code:
* ``attack_bn_mode = "train"`` as the official code (train mode throughout), but the attack's
  forward passes do not update the running BatchNorm statistics here.
* Training in float32 (the scripts use ``--half_prec``, apex amp O1); the official run also keeps
  the weights with the best training-set PGD accuracy (checked every 200 iterations), which is not
  done here.
* Model selection on a validation split (10% of the training set); the test attack is PGD-50 without
  the official 10 restarts, on the full test set.
"""

from launch.configs import common


def get_config():
  c = common.cifar10_preact18_fast_at("gradalign")
  c.model = "preact_resnet18_gradalign"  # raw-input shortcut, no final BN-ReLU, He-normal init
  c.fgsm_step_factor = 1.0      # zero init: the clipped 1.25 eps step is exactly eps
  c.gradalign_lambda = 0.0      # published lambda(eps): 0.2 at 8/255
  c.gradalign_detach_first = True
  c.num_epochs = 30
  c.learning_rate = 0.3         # the peak of the cyclic schedule
  c.lr_peak_fraction = 0.4
  return c
