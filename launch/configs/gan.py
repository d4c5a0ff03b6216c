r"""The four GANs of lecture 003, one per argument: ``vanilla``, ``wgan``, ``wgan_gp``, ``sngan``.

  python -m launch.train_gan --config=launch/configs/gan.py:wgan_gp --workdir=runs/gan_wgan_gp
  python -m launch.train_gan --config=launch/configs/gan.py:wgan,cpu --workdir=runs/gan_wgan_cpu
  python -m launch.train_gan --config=launch/configs/gan.py:sngan,cpu,digits --workdir=runs/sn8

The argument after the colon is ``<kind>[,cpu][,digits]``: the kind is a row of
:data:`robust_jax.games.config.KINDS` (its published losses, constraint, optimiser and n_critic,
with the papers and code cited there), ``cpu`` shrinks the networks and the number of steps to the
CPU budget of ``launch/reproduce_gans.py`` (the optimiser settings stay the published ones), and
``digits`` trains on the embedded 8x8 digits instead of MNIST-5k (28x28). Every field stays
overridable (``--config.num_steps=5000 --config.dim=64``). Not a classifier recipe: it is read by
``launch.train_gan`` only.
"""

from robust_jax.games import config as gan_config


def get_config(arg: str = "wgan_gp"):
  parts = [p.strip() for p in arg.split(",") if p.strip()]
  unknown = set(parts[1:]) - {"cpu", "digits"}
  if not parts or unknown:
    raise ValueError(f"expected '<kind>[,cpu][,digits]', got {arg!r}")
  return gan_config.for_kind(parts[0], dataset="digits" if "digits" in parts else "mnist5k",
                             cpu="cpu" in parts)
