"""CIFAR ResNet-18 and the PreAct ResNet-18s of the adversarial-training papers' PyTorch code.

* :class:`ResNet18`: kuangliu's ``pytorch-cifar`` ``ResNet(BasicBlock, [2, 2, 2, 2])``, the one copied
  into MART (``YisenWang/MART`` ``resnet.py``), FAT and GAIRAT: a 3x3 stem (no max pool), four stages
  of two post-activation basic blocks (64, 128, 256, 512 channels, strides 1, 2, 2, 2), projection
  shortcuts (1x1 conv + BN) where the shape changes, global average pooling, a linear layer.
  He et al. 2016, "Deep Residual Learning for Image Recognition". 11,173,962 parameters (10 classes).
* :class:`PreActResNet18`: the pre-activation network (He et al. 2016, "Identity Mappings in Deep
  Residual Networks"): a 3x3 stem, the same four stages of blocks ``BN -> ReLU -> conv -> BN -> ReLU
  -> conv`` (plus a 1x1 projection shortcut where the shape changes), global average pooling, a
  linear layer. The papers' copies differ in three details, each an attribute here:

  ============================= ================ ============= ============= ==========
  registry name                 shortcut sees    final BN-ReLU initialisation params*
  ============================= ================ ============= ============= ==========
  ``preact_resnet18``           relu(bn1(x))     yes           PyTorch's     11,172,170
  ``preact_resnet18_fast``      x (raw input)    yes           PyTorch's     11,172,170
  ``preact_resnet18_gradalign`` x (raw input)    no            He normal     11,171,146
  ============================= ================ ============= ============= ==========

  \\* trainable, 10 classes. The 1,024 missing from GradAlign's are the final BN's scale and bias.

  - ``preact_resnet18`` (``shortcut_input="activated"``, ``final_bn_relu=True``,
    ``initialization="torch"``): ``locuslab/robust_overfitting`` ``preactresnet.py`` (@c47a25c:
    ``shortcut = self.shortcut(out)`` line 30, ``F.relu(self.bn(out))`` line 92), copied by AT-AWP
    (``csdongxian/AWP`` ``AT_AWP/preactresnet.py``, the same lines) and by ELLE
    (``LIONS-EPFL/ELLE`` ``core/models/preact_resnet.py`` @0f16c0e, lines 30 and 101), which every
    CIFAR-10 script of ELLE selects with ``--model 'preact-resnet18'``. kuangliu's ``pytorch-cifar``
    ``models/preact_resnet.py`` has the same blocks but no final BN-ReLU (11,171,146 parameters).
  - ``preact_resnet18_fast`` (``shortcut_input="raw"``): Wong, Rice and Kolter's
    ``locuslab/fast_adversarial`` ``CIFAR10/preact_resnet.py`` (@54f7287), whose ``PreActBlock``
    applies the 1x1 shortcut to the block's input (line 24, ``self.shortcut(x)``), not to
    ``relu(bn1(x))``; otherwise robust_overfitting's network (``F.relu(self.bn(out))``, line 85;
    PyTorch's default initialisation: ``train_fgsm.py`` applies none).
  - ``preact_resnet18_gradalign`` (``shortcut_input="raw"``, ``final_bn_relu=False``,
    ``initialization="he_normal"``): Andriushchenko and Flammarion's
    ``tml-epfl/understanding-fast-adv-training`` ``models.py`` (@ceed494): the raw-input shortcut
    (line 115), no BN-ReLU between the last block and the pooling (``forward``, lines 175-194), and
    ``train.py`` line 90, ``model.apply(utils.initialize_weights)`` (``utils.py`` lines 317-330):
    conv kernels N(0, 2 / (k * k * out_channels)) (He normal with the *fan-out*), the linear kernel
    N(0, 2 / in_features), the linear bias 0, BN scale 1 and bias 0.

  Input normalisation is not part of the architecture here (``mean``/``std``, default none):
  robust_overfitting (``train_cifar.py`` lines 20-24) and fast_adversarial (in its data loader,
  ``CIFAR10/utils.py`` lines 8-9, 27, 31) standardise CIFAR-10 with mean (0.4914, 0.4822, 0.4465)
  and std (0.2471, 0.2435, 0.2616); GradAlign's model does not (``models.py`` lines 131-132: mean 0,
  std 1), nor does ELLE (``parser.py`` line 51: ``--normalize`` defaults to False, which its
  scripts keep).

All take float NHWC images in [0, 1] and return float32 logits [B, num_classes] (see
:mod:`robust_jax.models.cnn` for ``train``, ``dtype``, ``mean``/``std``). Convolutions have no biases
and use PyTorch's ``padding=1`` (not SAME, which pads a stride-2 layer only at the bottom/right), so
the feature maps are the reference's. The reference's ``F.avg_pool2d(out, 4)`` on the 4x4 map of a
32x32 input is the global average pool used here, which also accepts other input sizes (28x28, 8x8,
any channel count). Unless ``initialization="he_normal"``, PyTorch's default initialisation is kept
(Kaiming-uniform with a = sqrt(5) for convolutions and the linear layer, BatchNorm 1 and 0). No
dropout (the references have none).

The tests (``tests/models/test_models.py``) check the parameter counts, that every variant's block equals a
hand computation from its parameters with BN statistics for which relu(bn1(x)) differs from x, that
GradAlign's tree has no final ``bn`` and its logits are the linear map of the pooled last block, and
the standard deviation of the He-normal kernels.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from robust_jax.models import layers, sgm
from robust_jax.models.layers import Conv, Dense

_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, stride of the first block)
_BLOCKS_PER_STAGE = 2
SHORTCUT_INPUTS = ("activated", "raw")
INITS = ("torch", "he_normal")


def _check_choice(what: str, value: str, choices: Tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"{what} must be one of {choices}, got {value!r}")


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str, init: str = "torch",
          vjp: str = "custom") -> Conv:
  """A bias-free convolution with PyTorch's padding (k // 2).

  ``init="torch"``: PyTorch's default, U(+-1/sqrt(fan_in)); ``init="he_normal"``: N(0, 2 / fan_out)
  with fan_out = k * k * features, GradAlign's ``utils.initialize_weights``. ``vjp``: see
  :class:`~robust_jax.models.layers.Conv`.
  """
  kernel_init = (layers.kaiming_normal_fan_out() if init == "he_normal"
                 else layers.torch_default_kernel_init())
  return Conv(features, kernel, strides=stride, padding=kernel // 2, use_bias=False,
              kernel_init=kernel_init, dtype=dtype, vjp=vjp, name=name)


def _linear(num_classes: int, x: jax.Array, dtype: Any, init: str = "torch") -> nn.Dense:
  """The final layer: PyTorch's default init, or N(0, 2 / in_features) and a zero bias (he_normal)."""
  if init == "he_normal":
    return Dense(num_classes, kernel_init=layers.kaiming_normal_fan_in(),
                 bias_init=nn.initializers.zeros_init(), dtype=dtype, name="linear")
  return Dense(num_classes, kernel_init=layers.torch_default_kernel_init(),
               bias_init=layers.torch_default_bias_init(x.shape[-1]), dtype=dtype, name="linear")


class BasicBlock(nn.Module):
  """Post-activation basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

  kuangliu's ``pytorch-cifar`` ``models/resnet.py`` ``BasicBlock``; the projection shortcut is
  1x1 conv + BN on x where the shape changes.

  Attributes:
    planes: output channels.
    stride: stride of conv1 and of the projection shortcut.
    dtype: compute dtype.
    conv_vjp: how the convolutions are differentiated (:class:`~robust_jax.models.layers.Conv`).
    sgm_gamma: the Skip Gradient Method's backward scale of the residual branch
      (:mod:`robust_jax.models.sgm`; 1.0 = plain autodiff, the forward never changes).
  """
  planes: int
  stride: int = 1
  dtype: Any = jnp.float32
  conv_vjp: str = "custom"
  sgm_gamma: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, H, W, C_in] -> [B, H / stride, W / stride, planes]."""
    conv = functools.partial(_conv, dtype=self.dtype, vjp=self.conv_vjp)
    out = conv(self.planes, 3, self.stride, name="conv1")(x)
    out = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(out))
    out = conv(self.planes, 3, 1, name="conv2")(out)
    out = layers.batch_norm(train, self.dtype, "bn2")(out)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.planes:
      shortcut = conv(self.planes, 1, self.stride, name="shortcut_conv")(x)
      shortcut = layers.batch_norm(train, self.dtype, "shortcut_bn")(shortcut)
    return nn.relu(sgm.skip_gradient(out, self.sgm_gamma) + shortcut)


class PreActBlock(nn.Module):
  """Pre-activation basic block: a = relu(bn1(x)); conv2(relu(bn2(conv1(a)))) + shortcut.

  The shortcut is x itself when the shape is kept, else a bias-free 1x1 convolution of stride
  ``stride`` (no BN) applied to

  * ``a`` (``shortcut_input="activated"``): robust_overfitting's, AT-AWP's, ELLE's and kuangliu's
    ``PreActBlock`` (``shortcut = self.shortcut(out)``, ``preactresnet.py`` line 30);
  * x (``shortcut_input="raw"``): fast_adversarial's (``CIFAR10/preact_resnet.py`` line 24) and
    GradAlign's (``models.py`` line 115) ``shortcut = self.shortcut(x)``.

  The two variants have the same parameters (names and shapes); they differ only when the block
  projects (the first block of stages 2-4) and bn1 is not the identity on x.

  Attributes:
    planes: output channels.
    stride: stride of conv1 and of the projection shortcut.
    dtype: compute dtype.
    shortcut_input: ``"activated"`` or ``"raw"``, see above.
    initialization: ``"torch"`` (PyTorch's default conv init) or ``"he_normal"``
      (N(0, 2 / fan_out), fan_out = k * k * planes).
    conv_vjp: how the convolutions are differentiated (:class:`~robust_jax.models.layers.Conv`).
    sgm_gamma: the Skip Gradient Method's backward scale of the residual branch
      (:mod:`robust_jax.models.sgm`; 1.0 = plain autodiff, the forward never changes).

  Raises:
    ValueError: (when called) for an unknown ``shortcut_input`` or ``initialization``.
  """
  planes: int
  stride: int = 1
  dtype: Any = jnp.float32
  shortcut_input: str = "activated"
  initialization: str = "torch"
  conv_vjp: str = "custom"
  sgm_gamma: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, H, W, C_in] -> [B, ceil(H / stride), ceil(W / stride), planes]."""
    _check_choice("shortcut_input", self.shortcut_input, SHORTCUT_INPUTS)
    _check_choice("initialization", self.initialization, INITS)
    conv = functools.partial(_conv, dtype=self.dtype, init=self.initialization, vjp=self.conv_vjp)
    a = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(x))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.planes:
      projected = a if self.shortcut_input == "activated" else x
      shortcut = conv(self.planes, 1, self.stride, name="shortcut_conv")(projected)
    out = conv(self.planes, 3, self.stride, name="conv1")(a)
    out = nn.relu(layers.batch_norm(train, self.dtype, "bn2")(out))
    out = conv(self.planes, 3, 1, name="conv2")(out)
    return sgm.skip_gradient(out, self.sgm_gamma) + shortcut


def _stages(block_cls, x: jax.Array, train: bool) -> jax.Array:
  """The four stages of two blocks each; submodules named ``layer{stage}_{block}`` (1-based stage).

  ``block_cls(planes, stride, name=...)`` builds a block (a partial binding the other attributes).
  """
  for s, (planes, stride) in enumerate(_STAGES):
    for b in range(_BLOCKS_PER_STAGE):
      x = block_cls(planes, stride if b == 0 else 1, name=f"layer{s + 1}_{b}")(x, train)
  return x


class ResNet18(nn.Module):
  """kuangliu's CIFAR ResNet-18 (as in MART, FAT, GAIRAT); see the module docstring.

  Matches ``kuangliu/pytorch-cifar`` ``models/resnet.py`` ``ResNet18()``: 11,173,962 parameters
  with 10 classes.

  Attributes:
    num_classes: number of logits.
    dtype: compute dtype.
    mean, std: optional per-channel input standardisation.
    conv_vjp: how the convolutions are differentiated, ``"custom"`` or ``"jax"`` (see
      :class:`~robust_jax.models.layers.Conv`); the parameters do not depend on it.
    sgm_gamma: the Skip Gradient Method's backward scale of every residual branch
      (:mod:`robust_jax.models.sgm`); the forward and the parameters do not depend on it.
    remat: rematerialise every residual block in the backward pass (``nn.remat``: only the block
      inputs are kept, the rest recomputed), trading compute for memory; the logits, the
      gradients and the parameters do not depend on it.
  """
  num_classes: int = 10
  dtype: Any = jnp.float32
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None
  conv_vjp: str = "custom"
  sgm_gamma: float = 1.0
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, H, W, 3] in [0, 1] (32x32 for CIFAR). Returns float32 logits [B, num_classes]."""
    x = layers.normalize_input(x, self.mean, self.std)
    x = _conv(64, 3, 1, self.dtype, "conv1", vjp=self.conv_vjp)(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(x))
    block = functools.partial(layers.remat_block(BasicBlock, self.remat), dtype=self.dtype,
                              conv_vjp=self.conv_vjp, sgm_gamma=self.sgm_gamma)
    x = layers.global_avg_pool(_stages(block, x, train))
    return _linear(self.num_classes, x, self.dtype)(x).astype(jnp.float32)


class PreActResNet18(nn.Module):
  """The PreAct ResNet-18s of robust_overfitting, fast_adversarial and GradAlign.

  The defaults are ``locuslab/robust_overfitting`` ``preactresnet.py`` (also AT-AWP's and ELLE's
  ``preact-resnet18``); ``shortcut_input="raw"`` is ``locuslab/fast_adversarial``
  ``CIFAR10/preact_resnet.py``; ``shortcut_input="raw", final_bn_relu=False,
  initialization="he_normal"`` is ``tml-epfl/understanding-fast-adv-training`` ``models.py`` with
  ``utils.initialize_weights``.
  The registry names them ``preact_resnet18``, ``preact_resnet18_fast`` and
  ``preact_resnet18_gradalign`` (module docstring: the official lines and parameter counts).

  Submodules: ``conv1`` (stem), ``layer{1..4}_{0,1}`` (:class:`PreActBlock`), ``bn`` (the final
  BatchNorm, absent when ``final_bn_relu=False``), ``linear`` (with a bias in every variant).

  Attributes:
    num_classes: number of logits.
    dtype: compute dtype.
    mean, std: optional per-channel input standardisation (robust_overfitting and fast_adversarial
      train on CIFAR-10 standardised with mean (0.4914, 0.4822, 0.4465) and std (0.2471, 0.2435,
      0.2616); GradAlign and ELLE do not standardise).
    shortcut_input: what the blocks' 1x1 projection shortcuts see: ``"activated"`` (relu(bn1(x)),
      robust_overfitting) or ``"raw"`` (the block input x, fast_adversarial and GradAlign).
    final_bn_relu: whether a BN-ReLU follows the last block (all but GradAlign's).
    initialization: ``"torch"`` (PyTorch's default initialisation) or ``"he_normal"``
      (GradAlign's: conv kernels N(0, 2 / (k * k * out_channels)), the linear kernel
      N(0, 2 / in_features), the linear bias 0; BatchNorm 1 and 0 in both).
    conv_vjp: how the convolutions are differentiated, ``"custom"`` or ``"jax"`` (see
      :class:`~robust_jax.models.layers.Conv`); the parameters do not depend on it.
    sgm_gamma: the Skip Gradient Method's backward scale of every residual branch
      (:mod:`robust_jax.models.sgm`); the forward and the parameters do not depend on it.
    remat: rematerialise every residual block in the backward pass (see :class:`ResNet18`).

  Raises:
    ValueError: (when called) for an unknown ``shortcut_input`` or ``initialization``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from robust_jax.models import count_params
    >>> model = PreActResNet18(shortcut_input="raw", final_bn_relu=False, initialization="he_normal")
    >>> shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    >>> count_params(shapes), "bn" in shapes["params"]
    (11171146, False)
  """
  num_classes: int = 10
  dtype: Any = jnp.float32
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None
  shortcut_input: str = "activated"
  final_bn_relu: bool = True
  initialization: str = "torch"
  conv_vjp: str = "custom"
  sgm_gamma: float = 1.0
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [B, H, W, C] in [0, 1] (32x32x3 for CIFAR). Returns float32 logits [B, num_classes]."""
    _check_choice("shortcut_input", self.shortcut_input, SHORTCUT_INPUTS)
    _check_choice("initialization", self.initialization, INITS)
    x = layers.normalize_input(x, self.mean, self.std)
    x = _conv(64, 3, 1, self.dtype, "conv1", self.initialization, self.conv_vjp)(x)
    block = functools.partial(layers.remat_block(PreActBlock, self.remat), dtype=self.dtype,
                              shortcut_input=self.shortcut_input,
                              initialization=self.initialization, conv_vjp=self.conv_vjp,
                              sgm_gamma=self.sgm_gamma)
    x = _stages(block, x, train)
    if self.final_bn_relu:
      x = nn.relu(layers.batch_norm(train, self.dtype, "bn")(x))
    x = layers.global_avg_pool(x)
    return _linear(self.num_classes, x, self.dtype, self.initialization)(x).astype(jnp.float32)
