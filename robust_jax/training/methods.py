"""The method registry: each adversarial-training method of the seeds as a combination of shared parts.

A method names (1) its input adversary — the attack loss, the random start and the stop rule plugged
into the one ascent loop —, (2) its outer objective (:mod:`robust_jax.objectives`), and (3) whether
GAIRAT's per-example weights apply. Hyperparameters (eps, steps, beta, c_max, tau, lambda, ...) live in
the config; schedules in :mod:`robust_jax.training.schedules`. The weight adversary (AWP, RWP, SAM,
SAMPa) is orthogonal and chosen by ``config.weight_perturbation``.

| method      | attack loss | start   | stop rule            | objective | weights | paper |
|-------------|-------------|---------|----------------------|-----------|---------|-------|
| standard    | none        |         |                      | ce_clean  |         | |
| pgd_at      | ce          | uniform | never                | ce_adv    |         | Madry et al. 2018 |
| dart        | ce          | uniform | FOSC <= c_t          | ce_adv    |         | Wang et al. 2019 (Dynamic AT) |
| cat         | ce          | uniform | curriculum K(epoch)  | ce_adv    |         | Cai et al. 2018 |
| fat         | ce          | uniform | PGD-K-tau            | ce_adv    |         | Zhang et al. 2020 |
| gairat      | ce          | uniform | never                | ce_adv    | GAIRAT  | Zhang et al. 2021 |
| gair_fat    | ce          | uniform | PGD-K-tau            | ce_adv    | GAIRAT  | Zhang et al. 2021 |
| trades      | kl          | normal  | never                | trades    |         | Zhang et al. 2019 |
| mart        | ce          | normal  | never                | mart      |         | Wang et al. 2020 |
| alp         | ce          | uniform | never                | alp       |         | Kannan et al. 2018 |
| clp         | ce          | uniform | never                | clp       |         | Kannan et al. 2018 |
| mma         | ce          | uniform | never                | mma       |         | Ding et al. 2020 |
| fat_trades  | kl          | normal  | PGD-K-tau            | trades    |         | Zhang et al. 2020 |
| fat_mart    | ce          | normal  | PGD-K-tau            | mart      |         | Zhang et al. 2020 |
| fgsm_at     | ce          | uniform | one step             | ce_adv    |         | Wong et al. 2020 |
| gradalign   | ce          | none    | one step             | ce_adv + GradAlign | | Andriushchenko & Flammarion 2020 |
| elle        | ce          | none    | one step             | ce_adv + ELLE | | Abad Rocamora et al. 2024 |
| elle_a      | ce          | none    | one step             | ce_adv + ELLE-A | | Abad Rocamora et al. 2024 |
| beta_at     | margin (targeted, every class) | uniform | never | ce_adv | | Robey et al. 2023 |

The starts are those of the official code (TRADES, MART and their FAT variants start at
x + 0.001 N(0, I); the others uniformly in the ball). ``config.attack_start`` overrides them.
"""

from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class Method:
  """How one training method is assembled.

  Attributes:
    name: the config value.
    attack_loss: the attack loss of :mod:`robust_jax.attacks.losses`, or None for no attack.
    start: the default random start (``"uniform"``, ``"normal"`` or ``"none"``).
    stop: ``"never"``, ``"fosc"`` (Dynamic AT), ``"fat"`` (early-stopped PGD-K-tau) or
      ``"curriculum"`` (CAT: the number of steps grows with the epoch).
    objective: the outer objective's name in :mod:`robust_jax.objectives`.
    gairat: whether GAIRAT's kappa-based per-example weights multiply the loss.
    single_step: FGSM-based methods: one step, size ``config.fgsm_step_factor * eps``.
    regularizer: ``"gradalign"``, ``"elle"``, ``"elle_a"`` or None.
    beta_attack: BETA's per-class targeted margin attack.
  """
  name: str
  attack_loss: Optional[str]
  start: str = "uniform"
  stop: str = "never"
  objective: str = "ce_adv"
  gairat: bool = False
  single_step: bool = False
  regularizer: Optional[str] = None
  beta_attack: bool = False


_METHODS = (
    Method("standard", None, objective="ce_clean"),
    Method("pgd_at", "ce"),
    Method("dart", "ce", stop="fosc"),
    Method("cat", "ce", stop="curriculum"),
    Method("fat", "ce", stop="fat"),
    Method("gairat", "ce", gairat=True),
    Method("gair_fat", "ce", stop="fat", gairat=True),
    Method("trades", "kl", start="normal", objective="trades"),
    Method("mart", "ce", start="normal", objective="mart"),
    Method("alp", "ce", objective="alp"),
    Method("clp", "ce", objective="clp"),
    Method("mma", "ce", objective="mma"),
    Method("fat_trades", "kl", start="normal", stop="fat", objective="trades"),
    Method("fat_mart", "ce", start="normal", stop="fat", objective="mart"),
    Method("fgsm_at", "ce", single_step=True),
    Method("gradalign", "ce", start="none", single_step=True, regularizer="gradalign"),
    Method("elle", "ce", start="none", single_step=True, regularizer="elle"),
    Method("elle_a", "ce", start="none", single_step=True, regularizer="elle_a"),
    Method("beta_at", "margin", beta_attack=True),
)

METHODS = {m.name: m for m in _METHODS}


def get_method(name: str) -> Method:
  """The :class:`Method` called ``name``; an unknown name lists the valid ones."""
  if name not in METHODS:
    raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
  return METHODS[name]
