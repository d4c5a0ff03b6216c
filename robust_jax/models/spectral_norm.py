"""Spectral normalisation (Miyato et al. 2018): layers whose kernel is divided by its top singular value.

A weight ``W`` is reshaped to the matrix ``W_mat`` [out, in * kh * kw] (rows = output units) and
divided by ``sigma``, an estimate of its largest singular value from power iteration with a vector
``u`` [out] that is carried across steps::

  v = normalise(W_mat^T u),   u' = normalise(W_mat v),   sigma = u'^T W_mat v,   W_bar = W / sigma

(``sngan_projection`` ``source/functions/max_sv.py``: ``Ip = 1`` power step per forward; ``u`` and
``v`` carry no gradient, ``sigma`` is differentiable in ``W``.) ``u`` lives in the ``batch_stats``
collection, the library's non-trainable model state, so the classifier training step
(:mod:`robust_jax.training.step`, which applies models with ``mutable=["batch_stats"]`` in train
mode) and the GAN critic step (:mod:`robust_jax.games.step`) both carry it without knowing about
it. ``u`` is updated only when ``update_stats`` is True (train mode); in eval mode the stored ``u``
gives ``v = normalise(W_mat^T u)`` and ``sigma = ||W_mat^T u||``, and nothing changes (PyTorch's
``spectral_norm`` likewise does no power step in eval mode).

What it bounds: the spectral norm of the reshaped kernel matrix, which for a dense layer is the
layer's Lipschitz constant in l2 and for a convolution is not its operator norm (that can be larger by
a factor up to about ``sqrt(kh * kw)`` for stride 1; Miyato et al. normalise the matrix anyway).
A network of spectrally normalised dense layers with 1-Lipschitz activations is 1-Lipschitz in l2
(product of the layers' bounds, the lecture's Lemma on ``||X_2|| ||X_1||``).

Layers: :class:`SNDense`, :class:`SNConv` (the library's CPU-friendly convolution with a normalised
kernel) and a classifier, :class:`SNMLP` (registered as ``"mlp_sn"`` in :mod:`robust_jax.models`).

References:
  Miyato, Kataoka, Koyama, Yoshida. Spectral Normalization for Generative Adversarial Networks.
  ICLR 2018 (arXiv 1802.05957), Section 2.1 and Algorithm 1.

Example:

>>> import jax, jax.numpy as jnp, numpy as np
>>> layer = SNDense(3)
>>> x = jnp.ones((2, 5))
>>> variables = layer.init(jax.random.key(0), x)
>>> jax.tree.map(jnp.shape, variables["batch_stats"])
{'sn_u': (3,)}
>>> for _ in range(50):  # power iteration converges across steps
...   _, upd = layer.apply(variables, x, update_stats=True, mutable=["batch_stats"])
...   variables = {"params": variables["params"], "batch_stats": upd["batch_stats"]}
>>> w_bar = normalized_kernel(variables)
>>> bool(abs(np.linalg.norm(np.asarray(w_bar), 2) - 1.0) < 1e-4)
True
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from robust_jax.models import kernels
from robust_jax.models.kernels import PaddingLike

Initializer = Callable[..., jax.Array]
STATS = "batch_stats"
U_NAME = "sn_u"


def _normalise(v: jax.Array, eps: float) -> jax.Array:
  return v / (jnp.linalg.norm(v) + eps)


def kernel_matrix(kernel: jax.Array) -> jax.Array:
  """The matrix that is normalised: [out, in * ...] from a dense [in, out] or HWIO [kh, kw, in, out]
  kernel (the output axis is last in flax, first in the matrix)."""
  return jnp.reshape(kernel, (-1, kernel.shape[-1])).T


def power_iteration(w_mat: jax.Array, u: jax.Array, *, num_iters: int = 1,
                    eps: float = 1e-12) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """``num_iters`` steps of power iteration on ``w_mat`` from ``u``; the estimate of ``sigma_max``.

  Args:
    w_mat: float [out, in].
    u: float [out], the carried left singular vector estimate (any nonzero vector at the start).
    num_iters: power steps, >= 1 (Miyato et al.: 1 per training step, the vector carried over).
    eps: added to norms before dividing.

  Returns:
    ``(u, v, sigma)``: the updated ``u`` [out] and ``v`` [in] (gradient-free, as in the reference
    code) and ``sigma = u^T w_mat v``, a scalar differentiable in ``w_mat``; ``sigma`` increases
    towards the largest singular value as the iterations accumulate.
  """
  if num_iters < 1:
    raise ValueError(f"num_iters must be >= 1, got {num_iters}")
  w_sg = jax.lax.stop_gradient(w_mat)
  u = jax.lax.stop_gradient(u)
  for _ in range(num_iters):
    v = _normalise(w_sg.T @ u, eps)
    u = _normalise(w_sg @ v, eps)
  u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
  return u, v, u @ w_mat @ v


def _eval_sigma(w_mat: jax.Array, u: jax.Array, eps: float) -> jax.Array:
  """The eval-mode estimate from the stored ``u``: ``u^T W v`` with ``v = normalise(W^T u)``."""
  v = _normalise(jax.lax.stop_gradient(w_mat).T @ u, eps)
  return u @ w_mat @ v


def _spectral_sigma(module: nn.Module, kernel: jax.Array, update_stats: bool, num_iters: int,
                    eps: float = 1e-12) -> jax.Array:
  """The estimate ``sigma`` of ``kernel`` inside ``module``, whose ``batch_stats`` hold ``u``.

  The layers divide their *output* (before the bias) by ``sigma``: ``x W / sigma = x (W / sigma)``
  for a linear map, and the convolution's kernel operand stays the plain parameter (XLA's CPU
  backend compiles a convolution whose kernel is computed in the same loop body, e.g. the critic's
  ``fori_loop``, as a slow naive loop nest).
  """
  w_mat = kernel_matrix(kernel)
  u_var = module.variable(
      STATS, U_NAME,
      lambda: _normalise(jax.random.normal(module.make_rng("params"), (w_mat.shape[0],),
                                           jnp.float32), eps))
  if update_stats:
    u, _, sigma = power_iteration(w_mat, u_var.value, num_iters=num_iters, eps=eps)
    if not module.is_initializing():
      u_var.value = u
    return sigma
  return _eval_sigma(w_mat, u_var.value, eps)


def normalized_kernel(variables: Any, name: Optional[str] = None) -> jax.Array:
  """The eval-mode normalised kernel ``W / sigma`` of an :class:`SNDense` or :class:`SNConv` layer.

  Args:
    variables: the layer's variables ``{"params": {"kernel", ...}, "batch_stats": {"sn_u"}}``, or a
      model's, with ``name`` the layer's name in it.
    name: the submodule name inside ``variables`` (None: ``variables`` are the layer's own).
  """
  params, stats = variables["params"], variables[STATS]
  if name is not None:
    params, stats = params[name], stats[name]
  kernel = params["kernel"]
  return kernel / _eval_sigma(kernel_matrix(kernel), stats[U_NAME], 1e-12)


class SNDense(nn.Module):
  """A dense layer ``x @ (W / sigma(W)) + b`` (parameters as ``flax.linen.Dense``'s, plus ``sn_u``).

  Attributes:
    features: output size.
    use_bias: whether to add a bias (not normalised).
    kernel_init: initializer of the [in, features] kernel (flax's default: LeCun normal).
    num_iters: power steps per train-mode call.
    dtype: the compute dtype (None: the input's).
  """
  features: int
  use_bias: bool = True
  kernel_init: Initializer = nn.initializers.lecun_normal()
  num_iters: int = 1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
    """x: [..., in]. ``update_stats``: take a power step and store ``u``. Returns [..., features]."""
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    sigma = _spectral_sigma(self, kernel, update_stats, self.num_iters)
    dtype = self.dtype or x.dtype
    y = (x.astype(dtype) @ kernel.astype(dtype)) / sigma.astype(dtype)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    return y


class SNConv(nn.Module):
  """:class:`robust_jax.models.layers.Conv` (CPU-friendly VJP) with a spectrally normalised kernel.

  Attributes:
    features: output channels.
    kernel_size: int or (kh, kw).
    strides: int or (sh, sw).
    padding: ``"SAME"``, ``"VALID"``, an int or explicit pads.
    use_bias: whether to add a bias (not normalised).
    kernel_init: initializer of the HWIO kernel.
    num_iters: power steps per train-mode call.
    vjp: ``"custom"`` or ``"jax"`` (see :func:`robust_jax.models.kernels.conv2d`).
  """
  features: int
  kernel_size: Union[int, Sequence[int]]
  strides: Union[int, Sequence[int]] = 1
  padding: PaddingLike = "SAME"
  use_bias: bool = True
  kernel_init: Initializer = nn.initializers.lecun_normal()
  num_iters: int = 1
  vjp: str = "custom"

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
    """x: [B, H, W, C_in]. Returns [B, H_out, W_out, features]."""
    kh, kw = kernels.to_pair(self.kernel_size, "kernel_size")
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                        jnp.float32)
    sigma = _spectral_sigma(self, kernel, update_stats, self.num_iters)
    y = kernels.conv2d(x, kernel.astype(x.dtype), self.strides, self.padding, vjp=self.vjp)
    y = y / sigma.astype(y.dtype)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    return y


class SNMLP(nn.Module):
  """A Lipschitz-constrained classifier: the digits MLP with spectrally normalised dense layers.

  Flatten, ``SNDense(h) -> ReLU`` per hidden width, then ``SNDense(num_classes)``: each layer has
  spectral norm about 1 once ``u`` has converged and ReLU is 1-Lipschitz, so the logits are about
  1-Lipschitz in l2 of the input (scale them with ``logit_scale`` to keep the softmax trainable).
  ``train=True`` takes a power step per layer (apply with ``mutable=["batch_stats"]``).

  Attributes:
    num_classes: number of logits.
    hidden_sizes: widths of the hidden layers.
    logit_scale: a constant factor on the logits (the network before it is ~1-Lipschitz).
    conv_vjp: accepted for the registry's uniform interface; unused (no convolution).
  """
  num_classes: int = 10
  hidden_sizes: Sequence[int] = (256, 256)
  logit_scale: float = 10.0
  conv_vjp: str = "custom"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, ...] in [0, 1]. Returns float32 logits [B, num_classes]."""
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden_sizes):
      x = nn.relu(SNDense(width, name=f"fc{i + 1}")(x, update_stats=train))
    x = SNDense(self.num_classes, name="logits")(x, update_stats=train)
    return (self.logit_scale * x).astype(jnp.float32)


__all__ = ["SNConv", "SNDense", "SNMLP", "kernel_matrix", "normalized_kernel", "power_iteration"]
