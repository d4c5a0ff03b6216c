"""robust_jax: adversarial robustness research in JAX/Flax.

The min-max problem as pure functions: attacks (the inner maximisation over inputs), weight
perturbations (the inner maximisation over weights), objectives (the outer minimisation), a compiled
data-parallel training step, evaluation (PGD, CW, AutoAttack) and analysis (FOSC, landscapes, Hessians).
"""

from robust_jax import attacks, fosc

__version__ = "0.1.0"
__all__ = ["attacks", "fosc"]
