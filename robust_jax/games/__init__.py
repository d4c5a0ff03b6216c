"""The other min-max of lecture 003: generative adversarial networks as pure functions.

A generator ``h_x`` minimises, a critic ``d_y`` maximises; the Wasserstein critic's 1-Lipschitz
constraint is imposed by weight clipping, a gradient penalty or spectral normalisation.

Module map:

* :mod:`~robust_jax.games.losses`: vanilla (minimax, non-saturating), Wasserstein and hinge losses;
  the gradient penalty on interpolates.
* :mod:`~robust_jax.games.constraints`: weight clipping, the empirical Lipschitz constant.
* :mod:`~robust_jax.games.networks`: the DCGAN-style generator and critic (28x28, 8x8); spectral
  normalisation itself is :mod:`robust_jax.models.spectral_norm` (the classifiers use it too).
* :mod:`~robust_jax.games.config`: the four kinds (vanilla, wgan, wgan_gp, sngan) with their
  published settings, as config data.
* :mod:`~robust_jax.games.step`: the state pytree and the compiled step (n_critic critic updates in
  a ``lax.fori_loop``, then one generator update).
* :mod:`~robust_jax.games.evaluation`: Frechet distance in a library classifier's feature space
  (not Inception FID), mode coverage, sample grids.
* :mod:`~robust_jax.games.loop`: ``train_and_evaluate(config, workdir)``: resumable training with
  orbax checkpoints, ``metrics.jsonl`` and TensorBoard.
* :mod:`~robust_jax.games.reproduce`: the four kinds on MNIST-5k and the lecture's claims judged.
"""

from robust_jax.games import config, constraints, evaluation, losses, networks, step
from robust_jax.games.config import KINDS, for_kind
from robust_jax.games.constraints import clip_weights, empirical_lipschitz
from robust_jax.games.losses import gradient_penalty, interpolates
from robust_jax.games.networks import Critic, Generator
from robust_jax.games.step import GANState, make_train_step

__all__ = [
    "Critic", "GANState", "Generator", "KINDS", "clip_weights", "config", "constraints",
    "empirical_lipschitz", "evaluation", "for_kind", "gradient_penalty", "interpolates", "losses",
    "make_train_step", "networks", "step",
]
