"""GAN configs as data: every field with its default, the four kinds' published settings, checks.

A kind is a row of :data:`KINDS`: losses, constraint, optimiser and ``n_critic`` as published.

========== ============================ ========== ====================================== ========
kind       losses (critic / generator)  constraint optimiser (both players)                n_critic
========== ============================ ========== ====================================== ========
vanilla    vanilla / non_saturating     none       Adam 2e-4, betas (0.5, 0.999)          1
wgan       wasserstein / wasserstein    clip 0.01  RMSprop 5e-5                           5
wgan_gp    wasserstein / wasserstein    gp, 10     Adam 1e-4, betas (0, 0.9)              5
sngan      hinge / hinge                sn         Adam 2e-4, betas (0, 0.9)              5
========== ============================ ========== ====================================== ========

Sources: vanilla, Goodfellow et al. 2014 (k = 1 discriminator step, the non-saturating generator
loss of its Section 3) with the DCGAN optimiser of Radford et al. 2016 (Adam 2e-4, beta1 0.5; also
``gan_mnist.py``'s ``dcgan`` mode); WGAN, Arjovsky et al. 2017, Algorithm 1 and ``main.py`` of
``martinarjovsky/WassersteinGAN`` (RMSprop, lrD = lrG = 5e-5, clamp 0.01, Diters 5; PyTorch's
RMSprop, i.e. smoothing 0.99 and eps outside the square root; its extra 100 critic steps during
the first 25 and every 500th generator iteration, a code-only addition, are not reproduced);
WGAN-GP, Gulrajani et al. 2017, Algorithm 1 (lambda 10, n_critic 5, Adam 1e-4, betas (0, 0.9)
as in ``gan_64x64.py`` and ``gan_cifar_resnet.py``; ``gan_mnist.py`` uses (0.5, 0.9)); SN-GAN,
Miyato et al. 2018 with the official ``sngan_projection`` CIFAR config (hinge loss, Adam 2e-4,
betas (0, 0.9), n_dis 5, one power step per update). Generator BatchNorm: on for vanilla (DCGAN),
wgan (``DCGAN_G``) and sngan (its generators have BN), off for wgan_gp (``gan_mnist.py``).

``cpu`` shrinks a kind to the CPU budget of the reproduction (narrower networks, fewer steps) and
changes nothing else: the optimiser, losses and constraint stay the published ones.
"""

from __future__ import annotations

import ml_collections

from robust_jax.games import constraints, losses

KINDS = {
    "vanilla": dict(critic_loss="vanilla", generator_loss="non_saturating", constraint="none",
                    optimizer="adam", learning_rate=2e-4, beta1=0.5, beta2=0.999, n_critic=1,
                    generator_batch_norm=True),
    "wgan": dict(critic_loss="wasserstein", generator_loss="wasserstein", constraint="clip",
                 optimizer="rmsprop", learning_rate=5e-5, n_critic=5, generator_batch_norm=True),
    "wgan_gp": dict(critic_loss="wasserstein", generator_loss="wasserstein", constraint="gp",
                    optimizer="adam", learning_rate=1e-4, beta1=0.0, beta2=0.9, n_critic=5,
                    generator_batch_norm=False),
    "sngan": dict(critic_loss="hinge", generator_loss="hinge", constraint="sn", optimizer="adam",
                  learning_rate=2e-4, beta1=0.0, beta2=0.9, n_critic=5,
                  generator_batch_norm=True),
}
OPTIMIZERS = ("adam", "rmsprop")
FIELDS_THAT_MUST_MATCH_ON_RESUME = ("kind", "dataset", "dim", "latent_dim", "batch_size",
                                    "n_critic", "constraint", "optimizer", "seed")


def base_config() -> ml_collections.ConfigDict:
  """All fields with defaults (WGAN-GP on MNIST-5k at the published width)."""
  c = ml_collections.ConfigDict()
  c.kind = "wgan_gp"
  c.dataset = "mnist5k"         # mnist5k (28x28) | digits (8x8)
  c.validation_fraction = 0.1
  c.seed = 0
  # Networks (robust_jax.games.networks).
  c.latent_dim = 128
  c.dim = 64
  c.generator_batch_norm = False
  # The game.
  c.critic_loss = "wasserstein"
  c.generator_loss = "wasserstein"
  c.constraint = "gp"           # none | clip | gp | sn
  c.clip_value = 0.01
  c.gp_lambda = 10.0
  c.n_critic = 5
  c.critic_unroll = False       # unroll the fori_loop: n_critic copies compiled, no faster on CPU
  # Optimisation (the same optimiser for both players, as in every reference).
  c.optimizer = "adam"          # adam | rmsprop
  c.learning_rate = 1e-4
  c.beta1 = 0.0
  c.beta2 = 0.9
  c.rmsprop_decay = 0.99        # PyTorch's RMSprop alpha
  c.batch_size = 64
  c.num_steps = 2000            # generator steps
  # Evaluation and bookkeeping.
  c.evaluate = True             # False: no feature classifier, no FD (tests of the mechanics)
  c.eval_every_steps = 200
  c.eval_samples = 0            # 0 = the size of the test split
  c.grid_samples = 64
  c.classifier_model = ""       # "" = robust_jax.games.evaluation.CLASSIFIERS[dataset]
  c.classifier_epochs = 5
  c.classifier_workdir = ""     # "" = <workdir>/classifier
  c.log_every_steps = 50
  c.checkpoint_every_steps = 200
  c.keep_checkpoints = 2
  c.progress = True
  return c


def for_kind(kind: str, *, dataset: str = "mnist5k", cpu: bool = False) -> ml_collections.ConfigDict:
  """The config of ``kind`` on ``dataset``; ``cpu`` shrinks it to the reproduction's CPU budget.

  Raises:
    ValueError: for an unknown kind.
  """
  if kind not in KINDS:
    raise ValueError(f"unknown GAN kind {kind!r}; valid kinds: {', '.join(KINDS)}")
  c = base_config()
  c.kind, c.dataset = kind, dataset
  c.update(KINDS[kind])
  if dataset == "digits":
    c.dim, c.latent_dim = 32, 32
  if cpu:
    c.dim = 16
    c.latent_dim = 64 if dataset == "mnist5k" else 32
    c.batch_size = 64
    # About equal compute per kind (n_critic + 1 network updates per generator step).
    c.num_steps = 800 if c.n_critic > 1 else 2400
    c.eval_every_steps = c.num_steps // 16
    c.checkpoint_every_steps = c.eval_every_steps
    c.log_every_steps = c.eval_every_steps // 2
  return c


def _check(ok: bool, msg: str) -> None:
  if not ok:
    raise ValueError(msg)


def validate(c: ml_collections.ConfigDict) -> None:
  """Checks every field's range; the message names the field.

  Raises:
    ValueError: on the first bad field.
  """
  _check(c.kind in KINDS or c.kind == "custom",
         f"config.kind must be one of {list(KINDS)} or 'custom', got {c.kind!r}")
  _check(c.critic_loss in losses.CRITIC_LOSSES,
         f"config.critic_loss must be one of {list(losses.CRITIC_LOSSES)}, got {c.critic_loss!r}")
  _check(c.generator_loss in losses.GENERATOR_LOSSES,
         f"config.generator_loss must be one of {list(losses.GENERATOR_LOSSES)}, got "
         f"{c.generator_loss!r}")
  _check(c.constraint in constraints.CONSTRAINTS,
         f"config.constraint must be one of {list(constraints.CONSTRAINTS)}, got {c.constraint!r}")
  _check(c.optimizer in OPTIMIZERS, f"config.optimizer must be one of {OPTIMIZERS}, got "
         f"{c.optimizer!r}")
  for name in ("n_critic", "batch_size", "num_steps", "dim", "latent_dim", "eval_every_steps",
               "log_every_steps", "checkpoint_every_steps", "grid_samples", "classifier_epochs"):
    _check(isinstance(c[name], int) and c[name] >= 1, f"config.{name} must be an int >= 1, got "
           f"{c[name]!r}")
  for name in ("learning_rate", "clip_value"):
    _check(c[name] > 0, f"config.{name} must be > 0, got {c[name]}")
  _check(c.gp_lambda >= 0, f"config.gp_lambda must be >= 0, got {c.gp_lambda}")
  _check(0 <= c.beta1 < 1 and 0 <= c.beta2 < 1, "config.beta1 and beta2 must be in [0, 1)")
  _check(c.eval_samples >= 0, f"config.eval_samples must be >= 0, got {c.eval_samples}")


__all__ = ["FIELDS_THAT_MUST_MATCH_ON_RESUME", "KINDS", "OPTIMIZERS", "base_config", "for_kind",
           "validate"]
