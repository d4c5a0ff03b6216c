r"""The embedded default: PGD-AT (Madry et al. 2018) on scikit-learn's 8x8 digits, a few minutes on CPU.

  python -m launch.train --config=launch/configs/digits.py --workdir=runs/digits_pgd_at
  python -m launch.eval --workdir=runs/digits_pgd_at

Any method is one flag away: ``--config.method=trades``, ``dart``, ``fat``, ``gairat``, ``mart``, ...
eps = 0.2 on [0, 1] pixels (the 8x8 digits are coarse: 0.3, MNIST's budget, leaves little robust
accuracy to learn at this resolution), PGD-10 with step eps/4 and a uniform start; about 65% PGD-20
accuracy at 98% clean accuracy after 60 epochs (a few seconds per epoch on a 2-core CPU).
"""

from robust_jax.training.config import base_config


def get_config():
  c = base_config()
  c.dataset = "digits"
  c.model = "mlp"
  c.method = "pgd_at"
  c.eps = 0.2
  c.step_size = 0.05
  c.num_steps = 10
  c.batch_size = 64
  c.num_epochs = 60
  c.learning_rate = 0.1
  c.weight_decay = 5e-4
  c.lr_schedule = "piecewise"
  c.lr_decay_epochs = (40, 55)
  c.lr_decay_factors = (0.1, 0.01)
  c.select_attack_steps = 10
  c.test_attack_steps = 20
  # Schedules of the other methods scaled to 60 epochs (FAT's tau, GAIRAT's start, CAT's K).
  c.fat_tau_boundaries = (20, 40)
  c.fat_tau_values = (0, 1, 2)
  c.gairat_begin_epoch = 30
  c.cat_steps_boundaries = (10, 20, 30, 40)
  c.cat_steps_values = (1, 3, 5, 7, 10)
  return c
