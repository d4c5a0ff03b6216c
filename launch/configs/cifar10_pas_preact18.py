r"""PGD-AT with periodic adversarial scheduling (Liu et al., NeurIPS 2020) on CIFAR-10, eps = 8/255.

  python -m launch.train --config=launch/configs/cifar10_pas_preact18.py --workdir=runs/cifar10_pas_preact18

Numbers: "On the Loss Landscape of Adversarial Training: Identifying Challenges and How to Overcome
Them", Table 1 (CIFAR-10 ResNet18, eps = 8/255, periodic learning rate, cosine eps scheduler): clean
error 19.90 / PGD robust error 48.57, i.e. 80.10 clean / 51.43 PGD accuracy.
Official code: liuchen11/AdversaryLossLandscape, run/train_normal.py and util/seq_parser.py:
``--attack name=pgd,step_size=2,threshold=8,iter_num=10,order=-1``, ``--attack_threshold_schedule
name=cycle_cos,eps_min=0,eps_max=16,ckpt_list=0:100:150:200,max=8`` (the checkpoints
``..._eps8_..._max16_{100,150,200}.ckpt``), 200 epochs, batch 128, SGD lr 0.1, momentum 0.9, wd 1e-4
(the script's defaults), pad-4 crop + flip, attack in eval mode.

Conversions:
* ``cycle_cos`` with eps_max = 16/255 capped by ``max`` = 8/255: ``periodic_eps = "cycle_cos"``,
  ``periodic_eps_max = 16/255``, ``eps = 8/255`` (the cap); the eps ramps from 0 at the start of
  each period and saturates at 8/255 half-way through it.
* ``ckpt_list = 0:100:150:200`` are 0-based epoch boundaries of the periods (``x`` is the 0-based
  epoch index): ``periodic_bounds = (0, 100, 150, 200)``; the learning rate restarts with the eps at
  epochs 100 and 150 (``lr_schedule = "periodic_cosine"``).
* The attack follows eps_t as ``PGD.adjust_threshold`` (util/attack.py lines 73-80) and
  ``PGD.attack`` (lines 82-127) do: the step is ``2/255 * eps_t / (8/255 + 1e-6)``
  (``attack_step_follows_eps = True``; 8/255 is the constructor's threshold, ``eps`` here) and the
  start is ``x + U(-step_t, step_t)``, clipped to the eps_t-ball and to [0, 1]
  (``attack_start = "uniform_step"``), then 10 sign steps projected onto the eps_t-ball and the
  box. At eps_t = 0 the step and the start are 0 and the attack returns x, as the official
  ``threshold < 1e-6`` early return.

Deliberate differences from the official code:
* The periodic learning rate is a cosine decay restarted each period; the official runs use the
  ``cycle_jump`` / ``cos_cycle_jump`` sequences of util/seq_parser.py.
* The official eps is updated once per epoch (``--schedule_update_mode epoch``); ours per step.
* ``adjust_threshold`` reads a threshold below 1 as already in [0, 1] units and one of 1 or more as
  255ths. If the schedule is given in 255ths (``eps_max=16,max=8``, as the checkpoint names
  suggest), the values in (0, 1) at the start of each period (the first ~16% of it) are read as
  eps of up to 1 instead of up to 1/255. We do not reproduce that.
* The official model is ``CIFAR10_ResNet`` at width 8 (a post-activation ResNet-18 with half the
  standard channels); this recipe uses the registry's ``preact_resnet18``
  (``--config.model=resnet18`` for the post-activation variant).
* Model selection on a validation split (10% of the training set); the official code saves the end
  of each period (and ensembles them in run/test_ensemble.py).
"""

from launch.configs import cifar10_pgd_at_preact18 as base


def get_config():
  c = base.get_config()         # PGD-AT; eps = 8/255 is the cap ("max=8") of the periodic schedule
  c.attack_bn_mode = "eval"     # vanilla_train calls model.eval() around the attack
  c.attack_step_follows_eps = True  # PGD.adjust_threshold: step 2/255 * eps_t / (8/255 + 1e-6)
  c.attack_start = "uniform_step"   # PGD.attack: start x + U(-step_t, step_t) in the ball and box
  c.periodic_eps = "cycle_cos"
  c.periodic_eps_max = 16 / 255
  c.periodic_bounds = (0, 100, 150, 200)
  c.weight_decay = 1e-4
  c.lr_schedule = "periodic_cosine"  # restarted at periodic_bounds[1:-1] = (100, 150)
  c.lr_decay_epochs = ()
  c.lr_decay_factors = ()
  return c
