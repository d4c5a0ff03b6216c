r"""Dynamic AT (Wang et al., ICML 2019) on MNIST with the 4-layer CNN, eps = 0.3.

  python -m launch.train --config=launch/configs/mnist_dart_cnn4.py --workdir=runs/mnist_dart_cnn4

Numbers: "On the Convergence and Robustness of Adversarial Training", Table 1 (white-box, MNIST,
4-layer CNN): Dynamic 97.96 clean / 91.27 PGD-20. Setup from Section 5 of the paper: SGD momentum
0.9, lr 0.01 divided by 10 at the 20th and 40th of 50 epochs, c_max = 0.5, T' = 0.8 T.
Official code: YisenWang/dynamic_adv_training, train_models.py (model: models.py, dataset 'mnist';
attack: pgd_attack.py LinfPGDAttack with eps_iter = eps/4, nb_iter = 10, uniform start).

Conversions:
* The paper's 1-based "20th and 40th epoch" (the code's ``(ep + 1) == 60`` convention) are the
  0-based epochs 19 and 39 here (``lr_decay_epochs`` counts from 0).
* T' = 0.8 * 50 = 40 epochs: c_t = max(0.5 - 0.5 t / 40, 0) at 0-based epoch t.

Deliberate differences from the official code:
* The released code cannot train MNIST (its FOSC mask is hard-coded to 3x32x32 inputs and its
  hard-coded arguments are CIFAR-10's: 120 epochs, T' = 100), so the schedule is the paper's.
* Keras ``SGD(decay=1e-4)`` is a per-iteration learning-rate decay lr / (1 + 1e-4 t), not weight
  decay (the paper calls it "weight decay 1e-4"); it has no equivalent here and is left out. The
  MNIST model has no L2 regulariser, hence ``weight_decay = 0``.
* FOSC is measured from the natural image (paper, ``fosc_reference="natural"``); the code measures
  it from the random start before its [0, 1] clip, where it also takes its first gradient
  (``--config.fosc_reference=start``; tests/training/test_dynamic_at.py transcribes ``LinfPGDAttack``). The
  code's undocumented reweighting of the loss by CE(x_adv) from epoch 1 on, reduced as Keras
  reduces a ``sample_weight`` (not renormalised to mean 1), is off
  (``--config.dart_official_reweight=True`` turns it on).
* Model selection on a validation split (10% of the training set), never on the test set; the
  official code trains on all 60k images and logs test accuracy every epoch.
"""

from launch.configs import common


def get_config():
  c = common.dynamic_at(common.mnist("cnn4", "dart"))  # step eps/4 = 0.075, c_max = 0.5
  c.fosc_t_prime_fraction = 0.8  # T' = 0.8 T = 40 epochs
  c.num_epochs = 50
  c.lr_decay_epochs = (19, 39)  # 1-based 20th and 40th
  c.lr_decay_factors = (0.1, 0.01)
  return c
