"""Tests of robust_jax.models.torch_bridge against RobustBench's own PyTorch classes.

The reference classes below are transcribed from ``RobustBench/robustbench`` at commit
78fcc9e48a07a861268f295a777b975f25155964:

* ``BasicBlock``, ``ResNet``, ``ResNet18``, ``PreActBlock``, ``PreActBlockV2``, ``PreActResNet``,
  ``PreActResNet18``: ``robustbench/model_zoo/architectures/resnet.py`` (the Bottleneck variants
  left out);
* ``WideBasicBlock`` (RobustBench's ``BasicBlock``), ``NetworkBlock``, ``WideResNet``:
  ``robustbench/model_zoo/architectures/wide_resnet.py``;
* ``ImageNormalizer``, ``normalize_model``: ``.../architectures/utils_architectures.py``; the
  ``mu``/``sigma`` buffer classes follow ``robustbench/model_zoo/cifar10.py``
  (``Rice2020OverfittingNetL2``, ``Chen2020EfficientNet``).

Each architecture is checked in both directions on random 32x32 inputs in eval mode, with BatchNorm
running statistics and affine parameters randomised so that eval-mode BN is exercised: a randomly
initialised PyTorch model -> ``from_torch_state_dict`` -> the Flax logits; a randomly initialised
Flax model -> ``to_torch_state_dict`` -> ``load_state_dict(strict=True)`` -> the PyTorch logits;
both equal to 1e-4 relative to the logit scale. The WideResNets run at reduced depth and width
through the same code (the key names do not depend on them); at full size (WRN-28-10, WRN-34-10)
only the key and shape mapping is checked, on a PyTorch model built on the ``meta`` device.
"""

import math
import subprocess
import sys
from collections import OrderedDict

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import models
from robust_jax.models import torch_bridge

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

_TOL = 1e-4
_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR10_STD = (0.2471, 0.2435, 0.2616)


# --------------------------------------------------------------------------------------------------
# RobustBench's classes (resnet.py, wide_resnet.py, utils_architectures.py @78fcc9e), verbatim up
# to formatting.


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, in_planes, planes, stride=1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.shortcut = nn.Sequential()
    if stride != 1 or in_planes != self.expansion * planes:
      self.shortcut = nn.Sequential(
          nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
          nn.BatchNorm2d(self.expansion * planes))

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    out += self.shortcut(x)
    out = F.relu(out)
    return out


class ResNet(nn.Module):

  def __init__(self, block, num_blocks, num_classes=10):
    super().__init__()
    self.in_planes = 64
    self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
    self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
    self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
    self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
    self.linear = nn.Linear(512 * block.expansion, num_classes)

  def _make_layer(self, block, planes, num_blocks, stride):
    strides = [stride] + [1] * (num_blocks - 1)
    layers = []
    for stride in strides:
      layers.append(block(self.in_planes, planes, stride))
      self.in_planes = planes * block.expansion
    return nn.Sequential(*layers)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.layer1(out)
    out = self.layer2(out)
    out = self.layer3(out)
    out = self.layer4(out)
    out = F.avg_pool2d(out, 4)
    out = out.view(out.size(0), -1)
    out = self.linear(out)
    return out


def ResNet18():  # pylint: disable=invalid-name
  return ResNet(BasicBlock, [2, 2, 2, 2])


class PreActBlock(nn.Module):
  """Pre-activation version of the BasicBlock."""
  expansion = 1

  def __init__(self, in_planes, planes, stride=1, out_shortcut=False):
    super().__init__()
    self.out_shortcut = out_shortcut
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
    if stride != 1 or in_planes != self.expansion * planes:
      self.shortcut = nn.Sequential(
          nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False))

  def forward(self, x):
    out = F.relu(self.bn1(x))
    shortcut = self.shortcut(out if self.out_shortcut else x) if hasattr(self, "shortcut") else x
    out = self.conv1(out)
    out = self.conv2(F.relu(self.bn2(out)))
    out += shortcut
    return out


class PreActBlockV2(nn.Module):
  """Pre-activation version of the BasicBlock (slightly different forward pass)."""
  expansion = 1

  def __init__(self, in_planes, planes, stride=1, out_shortcut=False):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
    if stride != 1 or in_planes != self.expansion * planes:
      self.shortcut = nn.Sequential(
          nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False))

  def forward(self, x):
    out = F.relu(self.bn1(x))
    shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
    out = self.conv1(out)
    out = self.conv2(F.relu(self.bn2(out)))
    out += shortcut
    return out


class PreActResNet(nn.Module):

  def __init__(self, block, num_blocks, num_classes=10, bn_before_fc=False, out_shortcut=False):
    super().__init__()
    self.in_planes = 64
    self.bn_before_fc = bn_before_fc
    self.out_shortcut = out_shortcut
    self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
    self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
    self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
    self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
    if bn_before_fc:
      self.bn = nn.BatchNorm2d(512 * block.expansion)
    self.linear = nn.Linear(512 * block.expansion, num_classes)

  def _make_layer(self, block, planes, num_blocks, stride):
    strides = [stride] + [1] * (num_blocks - 1)
    layers = []
    for stride in strides:
      layers.append(block(self.in_planes, planes, stride, out_shortcut=self.out_shortcut))
      self.in_planes = planes * block.expansion
    return nn.Sequential(*layers)

  def forward(self, x):
    out = self.conv1(x)
    out = self.layer1(out)
    out = self.layer2(out)
    out = self.layer3(out)
    out = self.layer4(out)
    if self.bn_before_fc:
      out = F.relu(self.bn(out))
    out = F.avg_pool2d(out, 4)
    out = out.view(out.size(0), -1)
    out = self.linear(out)
    return out


def PreActResNet18():  # pylint: disable=invalid-name
  return PreActResNet(PreActBlock, [2, 2, 2, 2])


class WideBasicBlock(nn.Module):
  """wide_resnet.py's ``BasicBlock`` (renamed here: resnet.py has one too)."""

  def __init__(self, in_planes, out_planes, stride, dropRate=0.0):  # pylint: disable=invalid-name
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.relu1 = nn.ReLU(inplace=True)
    self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1,
                           bias=False)
    self.bn2 = nn.BatchNorm2d(out_planes)
    self.relu2 = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
    self.droprate = dropRate
    self.equalInOut = (in_planes == out_planes)  # pylint: disable=invalid-name
    self.convShortcut = (not self.equalInOut) and nn.Conv2d(  # pylint: disable=invalid-name
        in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False) or None

  def forward(self, x):
    if not self.equalInOut:
      x = self.relu1(self.bn1(x))
    else:
      out = self.relu1(self.bn1(x))
    out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
    if self.droprate > 0:
      out = F.dropout(out, p=self.droprate, training=self.training)
    out = self.conv2(out)
    return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):

  def __init__(self, nb_layers, in_planes, out_planes, block, stride, dropRate=0.0):
    super().__init__()
    self.layer = self._make_layer(block, in_planes, out_planes, nb_layers, stride, dropRate)

  def _make_layer(self, block, in_planes, out_planes, nb_layers, stride, dropRate):
    layers = []
    for i in range(int(nb_layers)):
      layers.append(block(i == 0 and in_planes or out_planes, out_planes, i == 0 and stride or 1,
                          dropRate))
    return nn.Sequential(*layers)

  def forward(self, x):
    return self.layer(x)


class WideResNet(nn.Module):
  """Based on code from https://github.com/yaodongyu/TRADES."""

  def __init__(self, depth=28, num_classes=10, widen_factor=10, sub_block1=False, dropRate=0.0,
               bias_last=True):
    super().__init__()
    nChannels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
    assert (depth - 4) % 6 == 0
    n = (depth - 4) / 6
    block = WideBasicBlock
    self.conv1 = nn.Conv2d(3, nChannels[0], kernel_size=3, stride=1, padding=1, bias=False)
    self.block1 = NetworkBlock(n, nChannels[0], nChannels[1], block, 1, dropRate)
    if sub_block1:
      self.sub_block1 = NetworkBlock(n, nChannels[0], nChannels[1], block, 1, dropRate)
    self.block2 = NetworkBlock(n, nChannels[1], nChannels[2], block, 2, dropRate)
    self.block3 = NetworkBlock(n, nChannels[2], nChannels[3], block, 2, dropRate)
    self.bn1 = nn.BatchNorm2d(nChannels[3])
    self.relu = nn.ReLU(inplace=True)
    self.fc = nn.Linear(nChannels[3], num_classes, bias=bias_last)
    self.nChannels = nChannels[3]
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        m.weight.data.normal_(0, math.sqrt(2. / n))
      elif isinstance(m, nn.BatchNorm2d):
        m.weight.data.fill_(1)
        m.bias.data.zero_()
      elif isinstance(m, nn.Linear) and m.bias is not None:
        m.bias.data.zero_()

  def forward(self, x):
    out = self.conv1(x)
    out = self.block1(out)
    out = self.block2(out)
    out = self.block3(out)
    out = self.relu(self.bn1(out))
    out = F.avg_pool2d(out, 8)
    out = out.view(-1, self.nChannels)
    return self.fc(out)


class ImageNormalizer(nn.Module):

  def __init__(self, mean, std):
    super().__init__()
    self.register_buffer("mean", torch.as_tensor(mean).view(1, 3, 1, 1))
    self.register_buffer("std", torch.as_tensor(std).view(1, 3, 1, 1))

  def forward(self, x):
    return (x - self.mean) / self.std


def normalize_model(model, mean, std):
  layers = OrderedDict([("normalize", ImageNormalizer(mean, std)), ("model", model)])
  return nn.Sequential(layers)


class MuSigma(nn.Module):
  """The ``mu``/``sigma`` buffers of cifar10.py's ``*Net`` classes, as a wrapper of any base."""

  def __init__(self, base, mean, std):
    super().__init__()
    self.base = base
    self.register_buffer("mu", torch.tensor(mean).view(1, 3, 1, 1))
    self.register_buffer("sigma", torch.tensor(std).view(1, 3, 1, 1))

  def forward(self, x):
    return self.base((x - self.mu) / self.sigma)

  def state_dict(self, *args, **kwargs):  # the subclasses' keys: no "base." prefix
    sd = self.base.state_dict()
    sd["mu"], sd["sigma"] = self.mu, self.sigma
    return sd

  def load_state_dict(self, sd, strict=True):
    sd = dict(sd)
    self.mu.copy_(sd.pop("mu"))
    self.sigma.copy_(sd.pop("sigma"))
    return self.base.load_state_dict(sd, strict=strict)


# --------------------------------------------------------------------------------------------------
# Helpers.


def _randomise_torch_bn(model, seed):
  """Random BN affine parameters and running statistics: eval-mode BN is not the identity."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        c = m.num_features
        m.weight.copy_(0.5 + torch.rand(c, generator=g))
        m.bias.copy_(0.2 * torch.randn(c, generator=g))
        m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
        m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
  return model


def _random_flax_variables(model, seed):
  """Random variables of a Flax model, drawn with NumPy (JAX's init of 11M parameters is slow on
  CPU): kernels N(0, 1 / fan_in), the classifier's bias and every BatchNorm's scale, bias, running
  mean and variance random too, so that eval-mode BN is not the identity."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(seed)
  out = {}
  for path, s in flax.traverse_util.flatten_dict(shapes).items():
    if path[-1] == "kernel":
      value = rng.normal(size=s.shape) / math.sqrt(math.prod(s.shape[:-1]))
    elif path[-1] in ("bias", "mean"):
      value = 0.2 * rng.normal(size=s.shape)
    elif path[-1] == "var":
      value = 0.5 + 1.5 * rng.uniform(size=s.shape)
    else:  # BN scale
      value = 0.5 + rng.uniform(size=s.shape)
    out[path] = jnp.asarray(value, jnp.float32)
  return flax.traverse_util.unflatten_dict(out)


def _assert_logits_close(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape
  scale = max(1.0, float(np.max(np.abs(want))))
  err = float(np.max(np.abs(got - want)))
  assert err <= _TOL * scale, f"max |diff| {err:.3g} > {_TOL} * {scale:.3g}"


def _torch_logits(model, x_nchw):
  model.eval()
  with torch.no_grad():
    return model(torch.from_numpy(x_nchw)).numpy()


def _inputs(seed, batch=4):
  x = np.random.default_rng(seed).uniform(size=(batch, 3, 32, 32)).astype(np.float32)
  return x, jnp.asarray(x.transpose(0, 2, 3, 1))


# --------------------------------------------------------------------------------------------------
# Both directions, every architecture.

# (id, library name, Flax model keywords, RobustBench constructor, normalisation wrapping)
_CASES = [
    ("resnet18", "resnet18", {}, ResNet18, None),
    ("preact_default", "preact_resnet18_gradalign", {}, PreActResNet18, "normalize_model"),
    ("preact_v2_bn", "preact_resnet18", {},
     lambda: PreActResNet(PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True), "mu_sigma"),
    ("preact_raw_bn", "preact_resnet18_fast", {},
     lambda: PreActResNet(PreActBlock, [2, 2, 2, 2], bn_before_fc=True), None),
    ("preact_out_shortcut_nobn", "preact_resnet18", {"final_bn_relu": False},
     lambda: PreActResNet(PreActBlock, [2, 2, 2, 2], out_shortcut=True), None),
    ("wrn_16_2", "wrn28_10", {"depth": 16, "widen_factor": 2},
     lambda: WideResNet(depth=16, widen_factor=2), "mu_sigma"),
    ("wrn_10_1_sub_block1", "wrn34_10", {"depth": 10, "widen_factor": 1},
     lambda: WideResNet(depth=10, widen_factor=1, sub_block1=True), None),
]


def _wrap(base, normalization):
  if normalization == "normalize_model":
    return normalize_model(base, _CIFAR10_MEAN, _CIFAR10_STD)
  if normalization == "mu_sigma":
    return MuSigma(base, _CIFAR10_MEAN, _CIFAR10_STD)
  return base


@pytest.mark.parametrize("case", _CASES, ids=[c[0] for c in _CASES])
def test_logits_agree_both_directions(case):
  case_id, name, model_kwargs, make_torch, normalization = case
  seed = sum(map(ord, case_id))
  x_nchw, x_nhwc = _inputs(seed)

  # PyTorch -> Flax.
  torch.manual_seed(seed)
  torch_model = _wrap(_randomise_torch_bn(make_torch(), seed), normalization)
  want = _torch_logits(torch_model, x_nchw)
  sd = torch_model.state_dict()
  if case_id == "resnet18":  # a DataParallel checkpoint of NumPy arrays, wrapped
    sd = {"state_dict": {"module." + k: v.numpy() for k, v in sd.items()}, "epoch": 3}
  flax_model, variables = torch_bridge.load_torch_model(name, sd, **model_kwargs)
  if normalization is None:
    assert flax_model.mean is None and flax_model.std is None
  else:
    np.testing.assert_allclose(flax_model.mean, _CIFAR10_MEAN, atol=1e-7)
    np.testing.assert_allclose(flax_model.std, _CIFAR10_STD, atol=1e-7)
  apply = jax.jit(flax_model.apply)
  _assert_logits_close(apply(variables, x_nhwc), want)
  assert float(np.max(np.abs(want))) > 1e-2  # not a degenerate comparison

  # Flax -> PyTorch: a fresh random Flax model (random BN statistics too), loaded strictly.
  fresh = _random_flax_variables(flax_model, seed + 1)
  mean_std = {} if normalization is None else {"mean": _CIFAR10_MEAN, "std": _CIFAR10_STD,
                                                "normalization": normalization}
  sub_block1 = "sub_block1" in case_id
  out = torch_bridge.to_torch_state_dict(name, fresh, sub_block1=sub_block1, **mean_std,
                                         **model_kwargs)
  assert all(isinstance(v, np.ndarray) and v.flags.writeable for v in out.values())
  reference = _wrap(make_torch(), normalization)
  reference.load_state_dict({k: torch.from_numpy(v) for k, v in out.items()}, strict=True)
  _assert_logits_close(_torch_logits(reference, x_nchw), apply(fresh, x_nhwc))


# --------------------------------------------------------------------------------------------------
# Full-size WideResNets: the key and shape mapping only.


def _meta_state_dict(make):
  with torch.device("meta"):
    return {k: tuple(v.shape) for k, v in make().state_dict().items()}


@pytest.mark.parametrize("name,depth", [("wrn28_10", 28), ("wrn34_10", 34), ("wrn32_10", 34)])
@pytest.mark.parametrize("sub_block1", [False, True])
def test_full_size_wide_resnet_key_and_shape_mapping(name, depth, sub_block1):
  torch_shapes = _meta_state_dict(
      lambda: WideResNet(depth=depth, widen_factor=10, sub_block1=sub_block1))
  template = torch_bridge._template(name, 10, 3, {})  # pylint: disable=protected-access
  entries = torch_bridge._mapping("wrn", template)  # pylint: disable=protected-access
  mapped = {e.torch_key: e.torch_shape for e in entries}
  used = {k: s for k, s in torch_shapes.items()
          if not k.endswith("num_batches_tracked") and not k.startswith("sub_block1.")}
  assert mapped == used
  trainable = sum(math.prod(e.flax_shape) for e in entries if e.flax_path[0] == "params")
  assert trainable == {"wrn28_10": 36_479_194}.get(name, 46_160_474)  # test_models' counts


def test_full_size_resnets_key_and_shape_mapping():
  for name, make, family in [("resnet18", ResNet18, "resnet"),
                             ("preact_resnet18_gradalign", PreActResNet18, "preact"),
                             ("preact_resnet18",
                              lambda: PreActResNet(PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True),
                              "preact")]:
    torch_shapes = _meta_state_dict(make)
    entries = torch_bridge._mapping(  # pylint: disable=protected-access
        family, torch_bridge._template(name, 10, 3, {}))  # pylint: disable=protected-access
    assert {e.torch_key: e.torch_shape for e in entries} == {
        k: s for k, s in torch_shapes.items() if not k.endswith("num_batches_tracked")}, name


# --------------------------------------------------------------------------------------------------
# Errors.


@pytest.fixture(scope="module")
def small_wrn_state_dict():
  torch.manual_seed(0)
  return {k: v.clone() for k, v in WideResNet(depth=10, widen_factor=1).state_dict().items()}


_SMALL = {"depth": 10, "widen_factor": 1}


def test_error_lists_missing_unexpected_and_mismatched_keys(small_wrn_state_dict):
  sd = dict(small_wrn_state_dict)
  del sd["block2.layer.0.convShortcut.weight"]
  del sd["bn1.running_var"]
  sd["block4.layer.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
  sd["block1.layer.0.conv2.weight"] = torch.zeros(16, 16, 1, 1)
  with pytest.raises(ValueError) as info:
    torch_bridge.from_torch_state_dict("wrn28_10", sd, **_SMALL)
  msg = str(info.value)
  assert "missing keys (2)" in msg
  assert "block2.layer.0.convShortcut.weight" in msg and "bn1.running_var" in msg
  assert "unexpected keys (1): block4.layer.0.conv1.weight" in msg
  assert ("shape mismatch for 'block1.layer.0.conv2.weight': expected (16, 16, 3, 3), "
          "got (16, 16, 1, 1)") in msg


def test_wrong_architecture_is_reported(small_wrn_state_dict):
  with pytest.raises(ValueError, match="missing keys"):  # a WRN state dict is no ResNet-18
    torch_bridge.from_torch_state_dict("resnet18", dict(small_wrn_state_dict,
                                                        **{"linear.weight": torch.zeros(10, 512)}))
  with pytest.raises(ValueError, match="converts"):
    torch_bridge.from_torch_state_dict("cifs_resnet18", small_wrn_state_dict)
  with pytest.raises(ValueError, match="unexpected keys.*block4"):  # depth 16 into a depth-10 model
    torch_bridge.from_torch_state_dict(
        "wrn28_10", {k.replace("block3", "block4"): v for k, v in small_wrn_state_dict.items()},
        **_SMALL)


def test_normalisation_buffers_must_match(small_wrn_state_dict):
  sd = dict(small_wrn_state_dict, mu=torch.full((1, 3, 1, 1), 0.5),
            sigma=torch.full((1, 3, 1, 1), 0.25))
  with pytest.raises(ValueError, match="pass them as mean="):
    torch_bridge.from_torch_state_dict("wrn28_10", sd, **_SMALL)
  with pytest.raises(ValueError, match="normalises inputs with mean"):
    torch_bridge.from_torch_state_dict("wrn28_10", sd, mean=(0.5,) * 3, std=(0.5,) * 3, **_SMALL)
  torch_bridge.from_torch_state_dict("wrn28_10", sd, mean=(0.5,) * 3, std=(0.25,) * 3, **_SMALL)
  with pytest.raises(ValueError, match="both mean and std"):
    torch_bridge.load_torch_model("wrn28_10", small_wrn_state_dict, mean=(0.5,) * 3, **_SMALL)
  assert torch_bridge.input_normalization(sd) == ((0.5,) * 3, (0.25,) * 3)
  assert torch_bridge.input_normalization(small_wrn_state_dict) is None


def _small_wrn_variables():
  model = models.get_model("wrn28_10", **_SMALL)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def test_export_rejects_variables_of_another_model():
  shapes = jax.eval_shape(models.get_model("preact_resnet18_gradalign").init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  with pytest.raises(ValueError, match="missing keys.*params/bn/scale"):
    torch_bridge.to_torch_state_dict("preact_resnet18", variables)
  with pytest.raises(ValueError, match="pass its depth=") as info:  # WRN-10-1 is no WRN-28-10
    torch_bridge.to_torch_state_dict("wrn28_10", _small_wrn_variables())
  assert "missing keys (91)" in str(info.value) and ", ... and 71 more" in str(info.value)
  with pytest.raises(ValueError, match="normalization must be"):
    torch_bridge.to_torch_state_dict("preact_resnet18_gradalign", variables, normalization="x")


def test_importing_the_bridge_does_not_import_torch():
  code = ("import sys; import robust_jax.models.torch_bridge; "
          "assert 'torch' not in sys.modules, 'torch imported'")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
