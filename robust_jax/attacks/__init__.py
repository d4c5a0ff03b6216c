"""The inner maximisation: attacks as pure functions of ``logits_fn``.

Conventions: images float32 NHWC in [0, 1]; labels int32 [B]; a model is only ``logits_fn(x)``;
eps, step sizes, step counts and stop-rule thresholds are traced (no recompilation).

Every attack is a public function here, and every attack can be made by name with validated
hyperparameters, ``make(name, **hyperparameters) -> attack(logits_fn, x, y, key)`` (the names are
:data:`NAMES`). The modules behind this namespace are private (``_fgsm_pgd``, ``_apgd``, ...), as in
optax; this ``__init__`` is the API:

* the ascent loop and its parts: :func:`ascent`, :class:`AttackResult`, :func:`as_pytree_fn`, the
  stop rules :func:`fosc_stop` and :func:`misclassified_stop`, the projections :func:`project`,
  :func:`project_linf`, :func:`project_l2`, :func:`ascent_direction` and :func:`random_start`;
* attacks: :func:`fgsm`, :func:`pgd`, :func:`pgd_restarts`, :func:`cw_inf`, :func:`beta_attack`,
  :func:`apgd`, :func:`apgd_targeted` (linf, l2 and l1; with :func:`checkpoints` and
  :func:`largereps_schedule`), :func:`fab` and :func:`square` (linf, l2 and l1) and
  :func:`autoattack` (standard, plus, rand and custom, linf, l2 and l1; with
  :func:`autoattack_settings`, every hyperparameter of its stages, and
  :func:`autoattack_version_attacks`, the attacks of each version);
* minimum-norm attacks, each returning the smallest perturbation found per example
  (:class:`MinNormResult`, and so the robust accuracy at every eps, :func:`robust_accuracy_at`):
  :func:`fmn` (L0, L1, L2, Linf), :func:`ddn` (L2), :func:`cw_l2`, :func:`deepfool` (L2, Linf), with
  the L1 projection :func:`project_l1`;
* the factory: :func:`make`, :data:`NAMES`, :func:`hyperparameter_defaults`, :func:`call_inputs`.

The per-example attack losses live in :mod:`robust_jax.losses` (shared with the objectives);
:data:`LOSSES` and :func:`get_loss` are re-exported here.
"""

from robust_jax.attacks._apgd import apgd, apgd_targeted, checkpoints, largereps_schedule
from robust_jax.attacks._autoattack import ATTACKS as AUTOATTACK_ATTACKS
from robust_jax.attacks._autoattack import AutoAttackResult, autoattack
from robust_jax.attacks._autoattack import version_attacks as autoattack_version_attacks
from robust_jax.attacks._autoattack import stage_settings as autoattack_settings
from robust_jax.attacks._beta import beta_attack
from robust_jax.attacks._cw_l2 import cw_l2
from robust_jax.attacks._ddn import ddn
from robust_jax.attacks._deepfool import deepfool
from robust_jax.attacks._fab import FabResult, fab
from robust_jax.attacks._factory import NAMES, call_inputs, hyperparameter_defaults, make
from robust_jax.attacks._fgsm_pgd import fgsm, pgd
from robust_jax.attacks._fmn import fmn
from robust_jax.attacks._loop import AttackResult, as_pytree_fn, ascent
from robust_jax.attacks._minimum_norm import MinNormResult, project_l1, robust_accuracy_at
from robust_jax.attacks._projections import (ascent_direction, l1_box_correction, project,
                                             project_l2, project_linf, random_start)
from robust_jax.attacks._restarts import cw_inf, pgd_restarts
from robust_jax.attacks._square import SquareResult, square
from robust_jax.attacks._stop_rules import (FoscStop, IterateInfo, MisclassifiedStop, NeverStop,
                                            fosc_stop, misclassified_stop)
from robust_jax.losses import LOSSES, get_loss

__all__ = [
    # the loop and its parts
    "AttackResult", "ascent", "as_pytree_fn", "fosc_stop", "misclassified_stop", "FoscStop",
    "MisclassifiedStop", "NeverStop", "IterateInfo", "project", "project_linf", "project_l2",
    "ascent_direction", "random_start", "l1_box_correction", "LOSSES", "get_loss",
    # attacks
    "fgsm", "pgd", "pgd_restarts", "cw_inf", "beta_attack", "apgd", "apgd_targeted", "checkpoints",
    "largereps_schedule", "autoattack_version_attacks",
    "fab", "FabResult", "square", "SquareResult", "autoattack", "AutoAttackResult",
    "AUTOATTACK_ATTACKS", "autoattack_settings",
    "fmn", "ddn", "cw_l2", "deepfool", "MinNormResult", "robust_accuracy_at", "project_l1",
    # the factory
    "make", "NAMES", "hyperparameter_defaults", "call_inputs",
]
