r"""Dynamic AT (Wang et al., ICML 2019) on CIFAR-10 with WRN-32-10, eps = 0.031.

  python -m launch.train --config=launch/configs/cifar10_dart_wrn32.py --workdir=runs/cifar10_dart_wrn32

Numbers: "On the Convergence and Robustness of Adversarial Training", Table 3 (WRN, Madry's
setting): Dynamic 85.03 clean / 63.53 FGSM / 48.70 PGD-20 / 47.27 CW (also quoted in the FAT
README).
Official code: YisenWang/dynamic_adv_training @470210e, train_models.py (hard-coded ``-e 120 -t 100
-b 128 -fm 0.5 -p 0.031``), pgd_attack.py (LinfPGDAttack: eps_iter = eps/4, nb_iter = 10, uniform
start), models.py / resnet.py (``WideResNet(depth=5)`` = 32 layers, width 10).

Conversions:
* ``if (ep + 1) == 60`` / ``== 100`` (0-based ``ep``) divides lr by 10 before the 0-based epochs 59
  and 99: ``lr_decay_epochs = (59, 99)``.
* c_t = max(c_max - c_max * t / T', 0) with T' = ``dynamic_epoch`` = 100 of 120 epochs:
  ``fosc_t_prime_fraction = 100 / 120`` (the paper's T' = 0.8 T would be 96).
* Keras ``kernel_regularizer=l2(2e-3)`` adds 2e-3 * sum(w^2) to the loss, i.e. 4e-3 * w to the
  gradient: ``weight_decay = 4e-3`` (coupled, as torch SGD).

Deliberate differences from the official code:
* Keras ``SGD(decay=1e-4)`` is a per-iteration learning-rate decay lr / (1 + 1e-4 t) on top of the
  step decays, not weight decay (the paper calls it "weight decay 1e-4"); it has no equivalent here.
* The L2 regulariser covers conv/dense kernels only there; our weight decay covers every parameter.
* Augmentation: Keras ``ImageDataGenerator(rotation_range=10, width/height_shift_range=0.2,
  horizontal_flip=True)`` there; pad-4 random crop + flip here.
* eps = 0.031 as the official code, not the paper's 8/255 = 0.0314.
* FOSC is measured from the natural image (paper, ``fosc_reference="natural"``); the code measures
  it from the random start before its [0, 1] clip, where it also takes its first gradient
  (``--config.fosc_reference=start``; tests/training/test_dynamic_at.py transcribes ``LinfPGDAttack``). The
  code's undocumented reweighting of the loss by CE(x_adv) from epoch 1 on, reduced as Keras
  reduces a ``sample_weight`` (not renormalised to mean 1), is off
  (``--config.dart_official_reweight=True`` turns it on).
* The official WRN is the repository's own Keras network; ours is the registry's ``wrn32_10``.
* Model selection on a validation split (10% of the training set); the official code logs the test
  set every epoch.
"""

from launch.configs import common


def get_config():
  c = common.cifar10("wrn32_10", "dart")
  c.eps = 0.031
  common.dynamic_at(c)          # PGD-10 of eps/4 from a uniform start, c_max = 0.5
  c.fosc_t_prime_fraction = 100 / 120  # dynamic_epoch = 100 of 120
  c.num_epochs = 120
  c.learning_rate = 0.01
  c.weight_decay = 4e-3         # Keras l2(2e-3) on the kernels
  c.lr_schedule = "piecewise"
  c.lr_decay_epochs = (59, 99)  # (ep + 1) == 60, == 100
  c.lr_decay_factors = (0.1, 0.01)
  return c
