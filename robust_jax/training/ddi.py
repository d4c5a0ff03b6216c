"""K maximisers per example: the input adversary restarted K times, for DDi's descent direction.

DDi (Latorre et al., ICLR 2023; :func:`robust_jax.weight_adversaries.ddi`) needs K points of the
inner maximisation per example. As the official ``JaxDanskinAttack.get_attacks``
(LIONS-EPFL/ddi_at @87353fb, ``acat/jax_danskinattack.py``), the batch is tiled K times and the
method's attack runs once on the K B examples with one key, so every copy draws its own random
start; the result is reshaped to [K, B, ...]. With eval-mode BatchNorm (the default, and the
official path) every example is attacked independently, so this equals K independent restarts.

:func:`robust_jax.training.methods.build` applies :func:`restarts` when the weight adversary asks
for more than one maximiser (``WeightAdversary.num_maximisers``).
"""

from __future__ import annotations

import jax.numpy as jnp

from robust_jax.training.adversary import AdversaryOutput, InputAdversary


def restarts(adversary: InputAdversary, num_maximisers: int) -> InputAdversary:
  """The input adversary run on the batch tiled ``num_maximisers`` (K) times.

  Args:
    adversary: an active :class:`~robust_jax.training.adversary.InputAdversary`.
    num_maximisers: K >= 1.

  Returns:
    An input adversary whose ``x_adv`` is [K, B, ...] (copy k of example i at ``[k, i]``); its
    ``result`` and metrics are those of the attack on the K B tiled examples (copy-major order).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from robust_jax.parts import StepInfo
    >>> from robust_jax.training import adversary
    >>> adv = adversary.input_adversary(loss="ce", default_start="uniform",
    ...                                 stop=adversary.never(), budget=adversary.fixed())
    >>> logits_fn = lambda x: x.reshape(len(x), -1)
    >>> x, y = jnp.full((4, 1, 1, 2), 0.5), jnp.zeros(4, jnp.int32)
    >>> out = restarts(adv, 3).apply(logits_fn, x, y, jax.random.key(0), StepInfo(0, 0, 0.1, 0.1))
    >>> out.x_adv.shape
    (3, 4, 1, 1, 2)
  """
  k = int(num_maximisers)

  def apply(logits_fn, x, y, key, info):
    tiled_x = jnp.tile(x, (k,) + (1,) * (x.ndim - 1))
    tiled_y = jnp.tile(y, k)
    out = adversary.apply(logits_fn, tiled_x, tiled_y, key, info)
    x_adv = out.x_adv.reshape((k,) + x.shape)
    return AdversaryOutput(x_adv=x_adv, result=out.result, num_steps=out.num_steps,
                           metrics=out.metrics)

  return adversary._replace(apply=apply)
