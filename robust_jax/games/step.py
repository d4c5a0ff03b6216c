"""The GAN state and its training step: n_critic critic updates in a ``lax.fori_loop``, then one
generator update, one compiled program.

The step is the lecture's "Stochastic training of Wasserstein GANs" (and Goodfellow et al.'s
Algorithm 1 with k = n_critic)::

  for m in 0 .. n_critic - 1:                       # lax.fori_loop, carry = the critic's state
    real = batch[:, m]; z ~ N(0, I); fake = stop_gradient(G(z))
    y <- optimiser step on  critic_loss(d(real), d(fake)) [+ lambda GP(x_hat)]
    y <- clip(y, [-c, c])                            # weight clipping only
  z ~ N(0, I); x <- optimiser step on generator_loss(d(G(z)))

Batches: ``{"image": float32 [B, n_critic, H, W, C]}``, a fresh real batch for every critic step
(the references draw one per critic iteration); axis 0 is the batch axis, so
:func:`robust_jax.parallel.jit_data_parallel` shards it over the mesh unchanged.

Randomness: ``fold_in(key, step)`` split into the critic's and the generator's keys, and
``fold_in(critic_key, m)`` inside the loop, so a resumed run draws what an uninterrupted one draws.
The critic sees real and fake in one forward (no BatchNorm in the critic, so this equals two
forwards and takes one spectral-norm power step per critic update); spectral-norm vectors are
updated in the critic steps only (the generator step applies the critic in eval mode). The
generator runs in train mode in both phases (batch statistics); its running averages are updated in
the generator step only.

Example:

>>> import jax, jax.numpy as jnp
>>> from robust_jax.games import config as config_lib, networks
>>> c = config_lib.for_kind("wgan", dataset="digits")
>>> c.dim, c.latent_dim, c.batch_size = 4, 8, 4
>>> g, d = networks.build(c, (8, 8, 1))
>>> state = create(c, g, d, (8, 8, 1))
>>> step = jax.jit(make_train_step(c, g, d))
>>> state, metrics = step(state, {"image": jnp.zeros((4, c.n_critic, 8, 8, 1))})
>>> int(state.step), int(state.critic_steps)
(1, 5)
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Sequence, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import optax

from robust_jax.games import constraints, losses


@flax.struct.dataclass
class GANState:
  """Everything a GAN run needs to continue bit-exactly (a registered dataclass pytree).

  Attributes:
    step: int32, generator updates so far.
    critic_steps: int32, critic updates so far (n_critic per step: the tests count them).
    generator, critic: the players' parameters.
    generator_stats: the generator's BatchNorm running averages (``{}`` without BatchNorm).
    critic_stats: the critic's spectral-norm vectors ``u`` (``{}`` without spectral norm).
    generator_opt, critic_opt: the optax states.
    key: uint32 raw key data of the run's base key (``jax.random.key_data``).
  """
  step: jax.Array
  critic_steps: jax.Array
  generator: Any
  generator_stats: Any
  critic: Any
  critic_stats: Any
  generator_opt: Any
  critic_opt: Any
  key: jax.Array


def make_optimizer(config: Any) -> optax.GradientTransformation:
  """The players' optimiser: Adam (``beta1``, ``beta2``) or PyTorch-style RMSprop.

  RMSprop as ``torch.optim.RMSprop`` defaults (WGAN's): smoothing ``rmsprop_decay`` = 0.99, eps 1e-8
  added outside the square root, zero initial scale.
  """
  if config.optimizer == "rmsprop":
    return optax.rmsprop(config.learning_rate, decay=config.rmsprop_decay, eps=1e-8,
                         eps_in_sqrt=False)
  return optax.adam(config.learning_rate, b1=config.beta1, b2=config.beta2)


@functools.lru_cache(maxsize=None)
def _jitted_init(module):
  """``jax.jit(module.init)``, one per (hashable) module definition."""
  return jax.jit(module.init)


def create(config: Any, generator, critic, image_shape: Sequence[int]) -> GANState:
  """Initialises both players and their optimisers from ``config.seed``."""
  base = jax.random.key(config.seed)
  kg, kd, kgu, kdu = jax.random.split(jax.random.fold_in(base, -1 & 0x7FFFFFFF), 4)
  z = jnp.zeros((1, config.latent_dim), jnp.float32)
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  gv = _jitted_init(generator)({"params": kg, "dropout": kgu}, z)
  dv = _jitted_init(critic)({"params": kd, "dropout": kdu}, x)
  tx = make_optimizer(config)
  return GANState(
      step=jnp.asarray(0, jnp.int32), critic_steps=jnp.asarray(0, jnp.int32),
      generator=gv["params"], generator_stats=gv.get("batch_stats", {}), critic=dv["params"],
      critic_stats=dv.get("batch_stats", {}), generator_opt=tx.init(gv["params"]),
      critic_opt=tx.init(dv["params"]), key=jax.random.key_data(base))


def _apply(module, params, stats, x, train: bool) -> Tuple[jax.Array, Any]:
  variables = {"params": params, "batch_stats": stats}
  if train:
    out, upd = module.apply(variables, x, train=True, mutable=["batch_stats"])
    return out, upd.get("batch_stats", stats)
  return module.apply(variables, x, train=False), stats


def critic_fn(critic, state: GANState) -> Callable[[jax.Array], jax.Array]:
  """``x -> d(x)`` of the state's critic in eval mode (what the evaluation and the tests probe)."""
  return lambda x: _apply(critic, state.critic, state.critic_stats, x, False)[0]


def sample(generator, state: GANState, z: jax.Array) -> jax.Array:
  """Images ``G(z)`` in eval mode (BatchNorm running averages)."""
  return _apply(generator, state.generator, state.generator_stats, z, False)[0]


def make_train_step(config: Any, generator, critic) -> Callable:
  """``step(state, batch) -> (state, metrics)`` for ``config`` (not jitted; see the module docstring).

  Metrics (float32 scalars): ``critic_loss`` and ``wasserstein_estimate`` (``E d(real) - E
  d(fake)`` on the training batches), means over the critic steps; ``gradient_penalty`` and
  ``grad_norm`` (mean ``||grad_x d||`` at the interpolates; GP only); ``generator_loss``;
  ``critic_steps``, the running count.
  """
  critic_loss = losses.CRITIC_LOSSES[config.critic_loss]
  generator_loss = losses.GENERATOR_LOSSES[config.generator_loss]
  tx = make_optimizer(config)
  n_critic, latent, gp = int(config.n_critic), int(config.latent_dim), config.constraint == "gp"
  clip = config.constraint == "clip"

  def critic_objective(cp, cs, real, fake, key):
    scores, new_cs = _apply(critic, cp, cs, jnp.concatenate([real, fake]), True)
    d_real, d_fake = scores[:real.shape[0]], scores[real.shape[0]:]
    loss = critic_loss(d_real, d_fake)
    aux = {"critic_loss": loss, "wasserstein_estimate": losses.wasserstein_estimate(d_real, d_fake)}
    if gp:
      pen = losses.gradient_penalty(lambda x: _apply(critic, cp, new_cs, x, False)[0],
                                    losses.interpolates(key, real, fake))
      loss = loss + config.gp_lambda * pen.value
      aux.update(gradient_penalty=pen.value, grad_norm=jnp.mean(pen.grad_norms))
    return loss, (new_cs, aux)

  def step(state: GANState, batch: Dict[str, jax.Array]):
    images = batch["image"]
    b = images.shape[0]
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    critic_key, gen_key = jax.random.split(key)

    def critic_step(m, carry):
      cp, cs, opt, count, sums = carry
      kz, kgp = jax.random.split(jax.random.fold_in(critic_key, m))
      real = images[:, m]
      z = jax.random.normal(kz, (b, latent), jnp.float32)
      fake = jax.lax.stop_gradient(
          _apply(generator, state.generator, state.generator_stats, z, True)[0])
      grads, (cs, aux) = jax.grad(critic_objective, has_aux=True)(cp, cs, real, fake, kgp)
      updates, opt = tx.update(grads, opt, cp)
      cp = optax.apply_updates(cp, updates)
      if clip:
        cp = constraints.clip_weights(cp, config.clip_value)
      sums = jax.tree.map(lambda s, v: s + v / n_critic, sums, aux)
      return cp, cs, opt, count + 1, sums

    zero = {"critic_loss": 0.0, "wasserstein_estimate": 0.0}
    if gp:
      zero.update(gradient_penalty=0.0, grad_norm=0.0)
    zero = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), zero)
    cp, cs, copt, count, metrics = jax.lax.fori_loop(
        0, n_critic, critic_step,
        (state.critic, state.critic_stats, state.critic_opt, state.critic_steps, zero),
        unroll=bool(config.critic_unroll))

    z = jax.random.normal(gen_key, (b, latent), jnp.float32)

    def generator_objective(gparams):
      fake, new_gs = _apply(generator, gparams, state.generator_stats, z, True)
      return generator_loss(_apply(critic, cp, cs, fake, False)[0]), new_gs

    (g_loss, gs), g_grads = jax.value_and_grad(generator_objective, has_aux=True)(state.generator)
    g_updates, gopt = tx.update(g_grads, state.generator_opt, state.generator)
    new_state = state.replace(
        step=state.step + 1, critic_steps=count, generator=optax.apply_updates(state.generator,
                                                                               g_updates),
        generator_stats=gs, critic=cp, critic_stats=cs, generator_opt=gopt, critic_opt=copt)
    metrics = dict(metrics, generator_loss=g_loss, critic_steps=count)
    return new_state, metrics

  return step


__all__ = ["GANState", "create", "critic_fn", "make_optimizer", "make_train_step", "sample"]
