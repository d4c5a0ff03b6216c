r"""CAT, curriculum adversarial training with batch mixing (Cai et al., IJCAI 2018), on CIFAR-10.

  python -m launch.train --config=launch/configs/cifar10_cat_resnet18.py --workdir=runs/cifar10_cat_resnet18

Numbers: we know of no published CIFAR-10 result for this exact setting. For a rough comparison,
the Dynamic AT paper (Wang et al. 2019, Table 2, quoted in the FAT README) reports CAT on a
WideResNet at 77.43 clean / 46.06 PGD-20 accuracy.
Official code: sunblaze-ucb/curriculum-adversarial-training-CAT, ``advtrain_all.py --data cifar10
--method cat`` (``--net resnet50``): eps 0.032 and base step 0.064 = 2 eps (lines 201-205), batch
200 (``config.json``), Adam lr 1e-4 without weight decay (line 198; ``--sgd`` switches to SGD 0.1),
pad-4 crop + flip, 299 epochs (lines 543-544), k from 0 (line 166) up to ``max_k = 7``. Every batch
is split into k + 1 chunks, and chunk j is attacked with PGD-j with steps of (2 eps / j) U(1, 10 / j)
from a uniform start (``regularLoss``, lines 284-310; ``PGDAttack.perturb_true``, lines 44-81).

Conversions:
* ``method = "cat"``: the ``cat`` budget (k and the base step ``cat_step_factor * eps``) with the
  ``chunks`` core (the batch mixing).
* ``cat_steps_values = (0, 1, ..., 7)``: k rises by one at a time, as in the official code, up to
  ``max_k = 7``.

Deliberate differences from the official code:
* k follows a fixed schedule: one stage per 299 / 8 epochs (``cat_steps_boundaries``), a choice of
  ours. The official code raises k when its validation accuracy (PGD-k on 16-level quantised
  inputs) has not improved for 10 epochs while the training accuracy is above 0.9, and then reloads
  the best checkpoint (``validnSaveModel``, lines 337-387). That rule depends on the run, so no
  fixed schedule reproduces it. (Its ``k < max_k`` cap sits only on the branch without
  validation.)
* The attack runs with eval-mode BatchNorm. The official code attacks in train mode, and each chunk
  is its own batch there: PGD-j sees only chunk j's batch statistics, and the running statistics
  are updated at every attack step. A whole-batch attack in train mode would put the clean and the
  finished chunks into every chunk's statistics, so the library refuses that combination.
* The start is clamped to [0, 1] before the first gradient (the official start is not).
* ``resnet18`` (kuangliu's ``pytorch-cifar`` ResNet-18, as in MART, FAT and GAIRAT) stands in for
  the official ``ResNet50`` of the same family, which the model registry does not have.
* Model selection by PGD-10 accuracy on the 2% validation split (stratified by class, as the
  official one); the official code uses its split for the k rule and keeps a checkpoint per epoch.
"""

from launch.configs import common


def get_config():
  c = common.cifar10("resnet18", "cat")
  c.eps = 0.032
  c.step_size = 0.032 / 4       # not used by CAT's chunks (their steps come from cat_step_factor)
  c.cat_step_factor = 2.0       # base step 2 eps = 0.064 (advtrain_all.py line 203)
  c.cat_steps_values = (0, 1, 2, 3, 4, 5, 6, 7)
  c.cat_steps_boundaries = (37, 75, 112, 150, 187, 224, 262)  # ours: one stage per 299 / 8 epochs
  c.attack_bn_mode = "eval"     # see the docstring (official: per-chunk train mode)
  c.batch_size = 200
  c.num_epochs = 299
  c.optimizer = "adam"
  c.learning_rate = 1e-4
  c.weight_decay = 0.0
  c.lr_schedule = "constant"
  c.lr_decay_epochs = ()
  c.lr_decay_factors = ()
  c.validation_fraction = 0.02
  return c
