"""The inner maximisation: attacks as pure functions of ``logits_fn``.

Conventions: images float32 NHWC in [0, 1]; labels int32 [B]; a model is only ``logits_fn(x)``;
eps, step sizes, step counts and stop-rule thresholds are traced (no recompilation).
"""

from robust_jax.attacks.apgd import apgd, apgd_targeted, checkpoints
from robust_jax.attacks.autoattack import ATTACKS as AUTOATTACK_ATTACKS
from robust_jax.attacks.autoattack import AutoAttackResult, autoattack
from robust_jax.attacks.beta import beta_attack
from robust_jax.attacks.fab import FabResult, fab
from robust_jax.attacks.fgsm_pgd import fgsm, pgd
from robust_jax.attacks.restarts import cw_inf, pgd_restarts
from robust_jax.attacks.square import SquareResult, square
from robust_jax.attacks.loop import AttackResult, ascent
from robust_jax.attacks.losses import LOSSES, get_loss
from robust_jax.attacks.projections import project, random_start
from robust_jax.attacks.stop_rules import fosc_stop, misclassified_stop

__all__ = [
    "AttackResult", "ascent", "fgsm", "pgd", "fosc_stop", "misclassified_stop", "LOSSES",
    "get_loss", "project", "random_start", "apgd", "apgd_targeted", "checkpoints", "autoattack",
    "AutoAttackResult", "AUTOATTACK_ATTACKS", "beta_attack", "fab", "FabResult", "square",
    "SquareResult", "cw_inf", "pgd_restarts",
]
