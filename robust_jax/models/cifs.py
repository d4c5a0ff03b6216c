"""CIFS: channel-wise importance-based feature selection, as a module and as CNN / ResNet models.

Yan, Zhang, Niu, Feng, Tan and Sugiyama, "CIFS: Improving adversarial robustness of CNNs via
channel-wise importance-based feature selection", ICML 2021; official code ``HanshuYAN/CIFS``
(read at 2d8217c: ``models/nets/resnet_CIFS.py`` ``CSAFR.forward``, ``CSAFR._get_mask_with_graph``,
``CSAFRBlock``, ``ResNet_L4``, ``nlBlock``; ``CIFAR10_Res18_CIFS.py`` ``joint_CE_loss``).

The module (:class:`CIFS`, the paper's IMGF) sits on an intermediate feature map ``feat``
[B, H, W, C]:

1. a *probe* maps the feature map to logits: global average pooling then a linear layer
   (``probe="linear"``), or GAP -> Dense(128) -> Softplus(beta=5) -> Dense (``"nonlinear"``,
   ``nlBlock``);
2. the channel relevance is the gradient of a top-k logit sum with respect to a *detached* copy of
   the features, summed over space (``adaptive_avg_pool2d * H * W``):
   ``r[b, c] = sum_{h, w} d s / d feat~[b, h, w, c]`` with
   ``s = sum_b (logit[b, first_b] + logit[b, second_b])``, ``second_b`` the probe's second-largest
   logit and ``first_b`` the label ``y_b`` in training (labels given) or the probe's top-1 logit
   otherwise (eval mode, and every attack) -- :func:`channel_relevance`;
3. the mask is ``mask_scale * softmax_c(r)`` (the official code multiplies the softmax by 2; the
   reference notes of commit 2e68025 describe it without the factor: ``mask_scale=1.0``), and the
   module returns ``feat * mask`` and the probe's logits on the (undetached) ``feat``.

The relevance is computed with ``jax.grad`` inside the forward pass, so the outer gradient reaches
the probe's parameters through it (second order, as ``create_graph=True``), while the backbone
gets no gradient through the mask (the features are detached there); the probe's own logits keep
the graph, so the auxiliary loss trains the backbone too, as the official ``Probe(feat)``.

Models (registered in :data:`robust_jax.models.MODELS`):

* ``cifs_resnet18`` (:class:`CIFSResNet18`): the official ``ResNet18_L4``: kuangliu's ResNet-18 whose
  two layer4 blocks are each followed by CIFS (probes nonlinear then linear);
* ``cifs_cnn4`` (:class:`CIFSCNN4`): Dynamic AT's MNIST CNN (:class:`~robust_jax.models.cnn.CNN4`)
  with CIFS after each of its two convolution stages (nonlinear, then linear probe), for the digits
  and MNIST (no official counterpart; the placement follows ``ResNet_L4``'s two probes).

Both take ``__call__(x, train=False, labels=None, return_probes=False)``; by default they return
the final logits only, the interface every attack and the training step use. ``return_probes=True``
returns ``(logits, [probe logits...])`` for :func:`joint_ce_loss`, the official training loss
``[CE(final) + beta / P * sum_p CE(probe_p)] * 3 / (beta + 1)`` with beta = 2.

Training (``launch.train --config.model=cifs_cnn4``, or any method of the library): both models
declare their training forward, ``training_logits(x, labels)`` (train mode, the label rule,
``(logits, probes)``), which the training step calls for the outer loss
(:func:`robust_jax.models.functional.training_forward`); the objective adds the probes' CE with the
weights of :func:`joint_ce_loss` (:func:`robust_jax.objectives.with_auxiliary_logits`, beta = 2).
With PGD-AT (``ce_adv``) the step's loss is the official ``joint_CE_loss`` of the final and probe
logits on the adversarial batch, with the label rule; with TRADES, MART and the other objectives
that read x' the probes are trained with CE on x' (an extension: the official code has PGD-AT
only); with ``ce_clean`` on x. Attacks (training and evaluation), regularisers and the eval step
see ``x -> logits``: eval mode and the top-1 rule. The digits recipe::

  python -m launch.train --config=launch/configs/digits.py --config.model=cifs_cnn4 \
      --config.learning_rate=0.05 --workdir=runs/digits_cifs_cnn4

and the comparison with ``cnn4`` (:func:`robust_jax.experiments.new_systems.cifs_experiment`,
which trains both with the library's step)::

  python -m robust_jax.experiments.new_systems --what=cifs --out=runs/new_systems

Official settings (CIFAR-10): PGD-10 AT, eps 8/255, step 2/255, attack in eval mode maximising the
joint loss (``beta_atk = 2``); SGD lr 0.1, momentum 0.9, wd 2e-4, 120 epochs, milestones 75, 90;
the AT run resumed from a clean-trained CIFS network. Here the attacks maximise the CE of the final
logits (the library's attacks see ``x -> logits``), not the joint loss.

Tests (``tests/models/test_cifs.py``): shapes; the relevance of the linear and the nonlinear probe
against closed forms written in NumPy (the top-2 rule in both modes); the mask sums to
``mask_scale``; the gradient reaching the features through the module is ``v * mask`` (detached
relevance); the joint loss against its formula. ``tests/training/test_cifs_step.py``: the step's
loss and gradient for ``cifs_cnn4`` equal :func:`joint_ce_loss` of a direct ``apply`` with the
labels on the same adversarial batch (and differ from the top-1 rule's); a model without the hook
gets the update of the plain CE step.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from robust_jax import losses
from robust_jax.models import layers
from robust_jax.models.layers import Conv, Dense
from robust_jax.models.resnet import _STAGES, _BLOCKS_PER_STAGE, BasicBlock, _conv, _linear

PROBES = ("linear", "nonlinear")
SOFTPLUS_BETA = 5.0  # nlBlock: nn.Softplus(beta=5)


def softplus_beta(x: jax.Array, beta: float = SOFTPLUS_BETA) -> jax.Array:
  """PyTorch's ``Softplus(beta)``: log(1 + exp(beta x)) / beta."""
  return jax.nn.softplus(beta * x) / beta


def probe_logits(params: dict, feat: jax.Array) -> jax.Array:
  """The probe on ``feat`` [B, H, W, C]: GAP, then linear (``w``, ``b``) or nonlinear (``w1``, ``b1``,
  Softplus(5), ``w2``, ``b2``); [B, K] logits. ``params`` decides which (its keys)."""
  z = jnp.mean(feat, axis=(1, 2))
  if "w1" in params:
    z = softplus_beta(z @ params["w1"] + params["b1"])
    return z @ params["w2"] + params["b2"]
  return z @ params["w"] + params["b"]


def channel_relevance(probe: Callable[[jax.Array], jax.Array], feat: jax.Array,
                      labels: Optional[jax.Array] = None) -> jax.Array:
  """The CIFS channel relevance of ``feat`` from the probe's top-2 logits (``_get_mask_with_graph``).

  Args:
    probe: ``feat -> logits`` [B, K] (closing over the probe's parameters: the outer gradient
      reaches them through the result).
    feat: [B, H, W, C]; it is detached (``stop_gradient``) before the probe sees it.
    labels: int [B] in training (the first logit is the label's), None otherwise (the probe's
      top-1).

  Returns:
    ``r`` [B, C]: ``sum_{h,w} d s / d feat[b, h, w, c]``, ``s = sum_b logit[b, first_b] +
    logit[b, second_b]``, ``second_b`` the probe's second-largest logit.
  """
  def score(f):
    logits = probe(f)
    top2 = jax.lax.top_k(logits, 2)[1]
    first = top2[:, 0] if labels is None else jnp.asarray(labels, jnp.int32)
    rows = jnp.arange(logits.shape[0])
    return jnp.sum(logits[rows, first]) + jnp.sum(logits[rows, top2[:, 1]])

  grad = jax.grad(score)(jax.lax.stop_gradient(feat))
  return jnp.sum(grad, axis=(1, 2))


def _torch_uniform(bound: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class CIFS(nn.Module):
  """The CIFS module (``CSAFR``): ``feat -> (feat * mask, probe logits)``; see the module docstring.

  Attributes:
    num_classes: K, the probe's logits.
    probe: ``"linear"`` or ``"nonlinear"`` (hidden width ``hidden``).
    hidden: the nonlinear probe's width (128 in the official ``nlBlock``).
    mask_scale: the mask is ``mask_scale * softmax(relevance)`` (2.0 in the official file).

  Parameters ``w``/``b`` or ``w1``/``b1``/``w2``/``b2`` with PyTorch's ``nn.Linear`` initialisation.
  """
  num_classes: int = 10
  probe: str = "linear"
  hidden: int = 128
  mask_scale: float = 2.0

  @nn.compact
  def __call__(self, feat: jax.Array, labels: Optional[jax.Array] = None
               ) -> Tuple[jax.Array, jax.Array]:
    """feat: [B, H, W, C]; labels: int [B] (training rule) or None (top-1 rule).

    Returns:
      ``(masked feat [B, H, W, C], probe logits [B, num_classes] float32)``.
    """
    if self.probe not in PROBES:
      raise ValueError(f"probe must be one of {PROBES}, got {self.probe!r}")
    c = feat.shape[-1]
    dims = [(c, self.num_classes)] if self.probe == "linear" else [(c, self.hidden),
                                                                    (self.hidden, self.num_classes)]
    names = [("w", "b")] if self.probe == "linear" else [("w1", "b1"), ("w2", "b2")]
    params = {}
    for (fan_in, fan_out), (wn, bn) in zip(dims, names):
      bound = 1.0 / fan_in ** 0.5
      params[wn] = self.param(wn, _torch_uniform(bound), (fan_in, fan_out))
      params[bn] = self.param(bn, _torch_uniform(bound), (fan_out,))
    f32 = feat.astype(jnp.float32)
    probe = functools.partial(probe_logits, params)
    relevance = channel_relevance(probe, f32, labels)
    mask = self.mask_scale * jax.nn.softmax(relevance, axis=-1)
    masked = feat * mask[:, None, None, :].astype(feat.dtype)
    return masked, probe(f32)


def joint_ce_loss(logits: jax.Array, probe_logits_list: Sequence[jax.Array], y: jax.Array, *,
                  beta: float = 2.0) -> jax.Array:
  """The official ``joint_CE_loss``: ``[CE(final) + beta / P * sum_p CE(probe_p)] * 3 / (beta + 1)``.

  Args:
    logits: the final logits [B, K].
    probe_logits_list: the P probes' logits, each [B, K] (P = 0 gives ``3 / (beta + 1) * CE``).
    y: int labels [B].
    beta: the probes' weight (2 in every official run).

  Returns:
    The scalar loss (CE averaged over the batch, as ``F.cross_entropy``).
  """
  y = jnp.asarray(y, jnp.int32)
  loss = jnp.mean(losses.cross_entropy(logits, y))
  if probe_logits_list:
    probes = sum(jnp.mean(losses.cross_entropy(p, y)) for p in probe_logits_list)
    loss = loss + beta / len(probe_logits_list) * probes
  return loss * 3.0 / (beta + 1.0)


class CIFSCNN4(nn.Module):
  """Dynamic AT's MNIST CNN (:class:`~robust_jax.models.cnn.CNN4`) with CIFS after each conv stage.

  ``[conv32 -> BN -> ReLU -> maxpool2] -> CIFS(nonlinear) -> [conv64 -> BN -> ReLU -> maxpool2] ->
  CIFS(linear) -> dense128 -> ReLU -> dense(num_classes)``. The backbone's parameters are named as
  CNN4's (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``features``, ``logits``), the modules ``cifs1``,
  ``cifs2``. Inputs with H and W divisible by 4 (8x8 digits, 28x28 MNIST).

  Attributes:
    num_classes: number of logits.
    mask_scale: see :class:`CIFS`.
    dtype: compute dtype.
    mean, std: optional per-channel input standardisation.
    conv_vjp: see :class:`~robust_jax.models.layers.Conv`.
  """
  num_classes: int = 10
  mask_scale: float = 2.0
  dtype: Any = jnp.float32
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None
  conv_vjp: str = "custom"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, labels: Optional[jax.Array] = None,
               return_probes: bool = False):
    """x: [B, H, W, C] in [0, 1]. Returns float32 logits, or ``(logits, [probe logits x 2])``.

    ``labels`` (int [B]) switch the masks to the training rule; they are used only with
    ``train=True`` (eval mode always uses the probes' top-1, as the official ``not self.training``).
    """
    x = layers.normalize_input(x, self.mean, self.std)
    rule_labels = labels if train else None
    glorot = nn.initializers.glorot_uniform()
    probes = []
    for i, (width, probe) in enumerate(((32, "nonlinear"), (64, "linear"))):
      x = Conv(width, 3, padding="SAME", kernel_init=glorot, dtype=self.dtype, vjp=self.conv_vjp,
               name=f"conv{i + 1}")(x)
      x = layers.relu_max_pool_2x2(layers.batch_norm(train, self.dtype, name=f"bn{i + 1}")(x))
      x, p = CIFS(self.num_classes, probe, mask_scale=self.mask_scale, name=f"cifs{i + 1}")(
          x, rule_labels)
      probes.append(p)
    x = Dense(128, kernel_init=nn.initializers.he_normal(), dtype=self.dtype,
              name="features")(x.reshape(x.shape[0], -1))
    x = Dense(self.num_classes, kernel_init=glorot, dtype=self.dtype, name="logits")(nn.relu(x))
    logits = x.astype(jnp.float32)
    return (logits, probes) if return_probes else logits

  def training_logits(self, x: jax.Array, labels: jax.Array):
    """The training forward (:func:`robust_jax.models.functional.training_forward`'s hook): train mode,
    the masks' label rule, ``(logits, [probe logits x 2])`` for the joint loss."""
    return self(x, train=True, labels=labels, return_probes=True)


class CIFSResNet18(nn.Module):
  """The official ``ResNet18_L4``: kuangliu's ResNet-18 with CIFS after both layer4 blocks.

  Stages 1-3 and the stem are :class:`~robust_jax.models.resnet.ResNet18`'s (same submodule names);
  each layer4 block (``layer4_0``, ``layer4_1``) is followed by ``cifs4_0`` (nonlinear probe) and
  ``cifs4_1`` (linear probe) on its 512-channel output.

  Attributes:
    num_classes: number of logits.
    mask_scale: see :class:`CIFS`.
    dtype: compute dtype.
    mean, std: optional per-channel input standardisation.
    conv_vjp: see :class:`~robust_jax.models.layers.Conv`.
  """
  num_classes: int = 10
  mask_scale: float = 2.0
  dtype: Any = jnp.float32
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None
  conv_vjp: str = "custom"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, labels: Optional[jax.Array] = None,
               return_probes: bool = False):
    """x: [B, H, W, C] in [0, 1]. Returns float32 logits, or ``(logits, [probe logits x 2])``."""
    rule_labels = labels if train else None
    x = layers.normalize_input(x, self.mean, self.std)
    x = _conv(64, 3, 1, self.dtype, "conv1", vjp=self.conv_vjp)(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(x))
    block = functools.partial(BasicBlock, dtype=self.dtype, conv_vjp=self.conv_vjp)
    probes = []
    for s, (planes, stride) in enumerate(_STAGES):
      for b in range(_BLOCKS_PER_STAGE):
        x = block(planes, stride if b == 0 else 1, name=f"layer{s + 1}_{b}")(x, train)
        if s == len(_STAGES) - 1:
          x, p = CIFS(self.num_classes, "nonlinear" if b == 0 else "linear",
                      mask_scale=self.mask_scale, name=f"cifs4_{b}")(x, rule_labels)
          probes.append(p)
    x = layers.global_avg_pool(x)
    logits = _linear(self.num_classes, x, self.dtype)(x).astype(jnp.float32)
    return (logits, probes) if return_probes else logits

  def training_logits(self, x: jax.Array, labels: jax.Array):
    """The training forward (:func:`robust_jax.models.functional.training_forward`'s hook): train mode,
    the masks' label rule, ``(logits, [probe logits x 2])`` for the joint loss."""
    return self(x, train=True, labels=labels, return_probes=True)


__all__ = ["CIFS", "CIFSCNN4", "CIFSResNet18", "PROBES", "channel_relevance", "joint_ce_loss",
           "probe_logits", "softplus_beta"]
