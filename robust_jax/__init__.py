"""robust_jax: adversarial robustness research in JAX/Flax.

The min-max problem as pure functions: attacks (the inner maximisation over inputs), weight
perturbations (the inner maximisation over weights), objectives (the outer minimisation), a compiled
data-parallel training step, evaluation (PGD, CW, AutoAttack) and analysis (FOSC, landscapes, Hessians).

Conventions: images are float32 NHWC in [0, 1]; labels int32 class indices; a model is seen by an
attack only as ``logits_fn(x) -> logits``.
"""

from robust_jax import attacks, fosc

__version__ = "0.1.0"


def load_classifier(checkpoint_dir: str, *, which: str = "best"):
  """``(logits_fn, info)`` of a trained checkpoint; see
  :func:`robust_jax.training.restore.load_classifier`."""
  from robust_jax.training import restore  # pylint: disable=g-import-not-at-top
  return restore.load_classifier(checkpoint_dir, which=which)


__all__ = ["attacks", "fosc", "load_classifier"]
