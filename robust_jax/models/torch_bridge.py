"""A PyTorch bridge: RobustBench state dicts in, RobustBench state dicts out, for the CIFAR ResNets.

A published CIFAR checkpoint of one of the architectures RobustBench ranks at that scale
(PreActResNet-18, ResNet-18, WideResNet-28-10, WideResNet-34-10) loads into the library's Flax
model with the same logits, so that the JAX AutoAttack can evaluate it; and a model trained here
exports to a state dict that ``load_state_dict(strict=True)`` accepts in RobustBench's class, so
that it can be submitted. The conversion is pure NumPy: PyTorch is never imported, a state dict may
hold ``torch.Tensor``\\s (read through ``.detach().cpu().numpy()``) or NumPy arrays.

The architectures are RobustBench's (``RobustBench/robustbench`` @78fcc9e,
``robustbench/model_zoo/architectures/resnet.py`` and ``wide_resnet.py``). The library model with
the same wiring as each RobustBench constructor (and entries of its CIFAR-10 zoo that use it):

* ``ResNet18()`` (``Sehwag2021Proxy_R18``): ``resnet18``.
* ``PreActResNet(PreActBlock, [2, 2, 2, 2])``, i.e. ``PreActResNet18()``
  (``Andriushchenko2020Understanding``, ``Wong2020Fast``): the 1x1 shortcut sees the raw block
  input, no BN-ReLU before the pooling: ``preact_resnet18_gradalign``.
* ``PreActResNet(PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True)`` (``Rice2020OverfittingNetL2``,
  ``Kireev2021Effectiveness*``; the same as ``PreActBlock`` with ``out_shortcut=True``): the
  shortcut sees relu(bn1(x)), a final BN-ReLU: ``preact_resnet18``.
* ``PreActResNet(PreActBlock, [2, 2, 2, 2], bn_before_fc=True)``: raw-input shortcut and a final
  BN-ReLU: ``preact_resnet18_fast``.
* ``WideResNet(depth=28, widen_factor=10)``, with or without ``sub_block1``: ``wrn28_10``.
* ``WideResNet(depth=34, widen_factor=10)``, with or without ``sub_block1``: ``wrn34_10`` (the
  same network as ``wrn32_10``, Madry's depth convention).

The fourth PreAct combination (``PreActBlockV2`` without ``bn_before_fc``) is
``preact_resnet18`` with ``final_bn_relu=False`` (pass it as a model keyword). What the projection
shortcut sees (raw x or relu(bn1(x))) leaves no trace in a state dict: pick the model from the
class the checkpoint was trained with. Other depths and widths of the WideResNet go through the same
code (``wrn28_10`` with ``depth=16, widen_factor=2``).

Keys and layouts. Convolution kernels are HWIO here and OIHW in PyTorch, the linear kernel
[in, out] here and ``weight`` [out, in] there; BatchNorm ``scale``/``bias`` and the ``batch_stats``
``mean``/``var`` are ``weight``/``bias``/``running_mean``/``running_var`` (``num_batches_tracked``
is dropped on import and written as 0 on export). Module names: ``layer{s}_{b}`` is
``layer{s}.{b}``, ``block{g}_{b}`` is ``block{g}.layer.{b}``, a PreAct ``shortcut_conv`` is
``shortcut.0``, a ResNet ``shortcut_conv``/``shortcut_bn`` is ``shortcut.0``/``shortcut.1``, a
WideResNet ``shortcut_conv`` is ``convShortcut``. Both libraries' BatchNorm use eps 1e-5 and the
same momentum (0.1 in PyTorch's convention, 0.9 in flax's), so eval-mode logits agree to float
rounding (the tests check 1e-4 relative to the logit scale, in both directions).

Also accepted on import: a ``{"state_dict": ...}`` wrapper, the ``module.`` prefix of
``DataParallel``, RobustBench's ``normalize_model`` wrapping (``normalize.mean``/``normalize.std``
and the ``model.`` prefix), the ``mu``/``sigma`` (or ``mean``/``std``) buffers of RobustBench's
``*Net`` classes, and the ``sub_block1.*`` parameters of TRADES' WideResNet (built, never used in
``forward``; dropped). The input normalisation is an attribute of the Flax model (``mean``/``std``,
:func:`robust_jax.models.layers.normalize_input`), not a variable: :func:`load_torch_model` reads it
from the buffers when they are there; RobustBench's original checkpoint files often lack them, and
then it must be given.

Example:

>>> import jax, jax.numpy as jnp, numpy as np
>>> from robust_jax import models
>>> model = models.get_model("wrn28_10", depth=10, widen_factor=1)
>>> variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
>>> sd = to_torch_state_dict("wrn28_10", variables, mean=(0.5,) * 3, std=(0.25,) * 3,
...                          depth=10, widen_factor=1)
>>> sd["block2.layer.0.convShortcut.weight"].shape, sd["fc.weight"].shape, sd["mu"].shape
((32, 16, 1, 1), (10, 64), (1, 3, 1, 1))
>>> loaded, back = load_torch_model("wrn28_10", sd, depth=10, widen_factor=1)
>>> loaded.mean, loaded.std
((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
>>> x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
>>> bool(jnp.allclose(model.apply(variables, (x - 0.5) / 0.25), loaded.apply(back, x), atol=1e-5))
True
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

# The torch module name of each Flax submodule, per architecture family (a block's own submodules).
_BLOCK_NAMES = {
    "resnet": {"conv1": "conv1", "bn1": "bn1", "conv2": "conv2", "bn2": "bn2",
               "shortcut_conv": "shortcut.0", "shortcut_bn": "shortcut.1"},
    "preact": {"bn1": "bn1", "conv1": "conv1", "bn2": "bn2", "conv2": "conv2",
               "shortcut_conv": "shortcut.0"},
    "wrn": {"bn1": "bn1", "conv1": "conv1", "bn2": "bn2", "conv2": "conv2",
            "shortcut_conv": "convShortcut"},
}
_TOP_NAMES = {
    "resnet": ("conv1", "bn1", "linear"),
    "preact": ("conv1", "bn", "linear"),
    "wrn": ("conv1", "bn1", "fc"),
}
_BLOCK_RE = {
    "resnet": (re.compile(r"layer(\d+)_(\d+)"), r"layer\1.\2"),
    "preact": (re.compile(r"layer(\d+)_(\d+)"), r"layer\1.\2"),
    "wrn": (re.compile(r"block(\d+)_(\d+)"), r"block\1.layer.\2"),
}
FAMILIES: Dict[str, str] = {
    "resnet18": "resnet",
    "preact_resnet18": "preact",
    "preact_resnet18_fast": "preact",
    "preact_resnet18_gradalign": "preact",
    "wrn28_10": "wrn",
    "wrn32_10": "wrn",
    "wrn34_10": "wrn",
}
"""The registry names the bridge converts, and their key-naming family."""

_HEAD = {"resnet": "linear", "preact": "linear", "wrn": "fc"}
_LEAVES = {  # (collection, flax leaf) -> torch leaf
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
# Normalisation buffers: (mean key, std key), in the order they are looked for.
_NORM_BUFFERS = (("normalize.mean", "normalize.std"), ("mu", "sigma"), ("mean", "std"))
NORMALIZATIONS = ("mu_sigma", "normalize_model")


class _Entry(NamedTuple):
  """One tensor of the mapping: where it lives on each side, and its shape on each side."""
  torch_key: str
  flax_path: Tuple[str, ...]  # (collection, module..., leaf)
  flax_shape: Tuple[int, ...]
  torch_shape: Tuple[int, ...]


def _family(name: str) -> str:
  if name not in FAMILIES:
    raise ValueError(f"the PyTorch bridge converts {', '.join(sorted(FAMILIES))}; got {name!r}")
  return FAMILIES[name]


def _torch_shape(shape: Tuple[int, ...]) -> Tuple[int, ...]:
  if len(shape) == 4:  # HWIO -> OIHW
    return (shape[3], shape[2], shape[0], shape[1])
  if len(shape) == 2:  # [in, out] -> [out, in]
    return (shape[1], shape[0])
  return tuple(shape)


def _to_torch_layout(x: np.ndarray) -> np.ndarray:
  if x.ndim == 4:
    x = x.transpose(3, 2, 0, 1)
  elif x.ndim == 2:
    x = x.T
  return np.array(x, order="C", copy=True)  # a writable copy, as torch.from_numpy wants


def _to_flax_layout(x: np.ndarray) -> np.ndarray:
  if x.ndim == 4:
    return x.transpose(2, 3, 1, 0)
  if x.ndim == 2:
    return x.T
  return x


def _torch_module(family: str, modules: Tuple[str, ...]) -> str:
  """The torch module name of a Flax module path, e.g. ("block2_0", "shortcut_conv") ->
  "block2.layer.0.convShortcut"; ValueError if the path is not of the family's architecture."""
  pattern, repl = _BLOCK_RE[family]
  if len(modules) == 1 and modules[0] in _TOP_NAMES[family]:
    return modules[0]
  if (len(modules) == 2 and pattern.fullmatch(modules[0])
      and modules[1] in _BLOCK_NAMES[family]):
    return pattern.sub(repl, modules[0]) + "." + _BLOCK_NAMES[family][modules[1]]
  raise ValueError(f"the Flax module {'/'.join(modules)!r} has no counterpart in RobustBench's "
                   f"{family!r} architecture")


def _mapping(family: str, shapes: Mapping[Tuple[str, ...], Tuple[int, ...]]) -> List[_Entry]:
  """The torch key and shapes of every Flax leaf, from ``{(collection, ..., leaf): shape}``."""
  entries = []
  for path, shape in shapes.items():
    collection, modules, leaf = path[0], path[1:-1], path[-1]
    if (collection, leaf) not in _LEAVES:
      raise ValueError(f"the Flax variable {'/'.join(path)!r} has no PyTorch counterpart")
    key = _torch_module(family, modules) + "." + _LEAVES[(collection, leaf)]
    entries.append(_Entry(key, path, tuple(shape), _torch_shape(tuple(shape))))
  return entries


def _bn_modules(entries: Sequence[_Entry]) -> List[str]:
  """The torch names of the BatchNorm modules (those with running statistics), in order."""
  return list(dict.fromkeys(e.torch_key.rsplit(".", 1)[0] for e in entries
                            if e.flax_path[0] == "batch_stats"))


def _template(name: str, num_classes: int, in_channels: int,
              model_kwargs: Mapping[str, Any]) -> Dict[Tuple[str, ...], Tuple[int, ...]]:
  """The flattened variable shapes of ``get_model(name, ...)`` (traced, nothing materialised)."""
  from robust_jax import models  # pylint: disable=import-outside-toplevel  (models imports us)
  kwargs = {k: v for k, v in model_kwargs.items() if k not in ("mean", "std")}
  model = models.get_model(name, num_classes=num_classes, **kwargs)
  x = jax.ShapeDtypeStruct((1, 32, 32, in_channels), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  return {p: tuple(s.shape) for p, s in traverse_util.flatten_dict(shapes).items()}


def _as_numpy(value: Any) -> np.ndarray:
  """A NumPy view of a NumPy array, a JAX array or a torch tensor (duck-typed, no torch import)."""
  if hasattr(value, "detach"):  # a torch.Tensor
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def _canonical(state_dict: Mapping[str, Any]) -> Tuple[Dict[str, Any], Optional[Tuple[np.ndarray,
                                                                                    np.ndarray]]]:
  """Unwraps a checkpoint into plain keys; returns it and the normalisation buffers, if any."""
  if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
    state_dict = state_dict["state_dict"]
  sd = {}
  for key, value in state_dict.items():
    while key.startswith("module."):  # DataParallel
      key = key[len("module."):]
    sd[key] = value
  norm = None
  for mean_key, std_key in _NORM_BUFFERS:
    if mean_key in sd and std_key in sd:
      norm = (_as_numpy(sd.pop(mean_key)).reshape(-1), _as_numpy(sd.pop(std_key)).reshape(-1))
      if mean_key.startswith("normalize."):  # normalize_model: Sequential(normalize, model)
        sd = {k[len("model."):] if k.startswith("model.") else k: v for k, v in sd.items()}
      break
  return sd, norm


def _head_classes(sd: Mapping[str, Any], family: str) -> int:
  key = _HEAD[family] + ".weight"
  if key not in sd:
    raise ValueError(f"missing key {key!r} (the classifier), which gives the number of classes; "
                     f"keys start with {sorted(sd)[:5]}")
  return int(_as_numpy(sd[key]).shape[0])


def _problems(missing: Sequence[str], unexpected: Sequence[str],
              mismatched: Sequence[Tuple[str, Tuple[int, ...], Tuple[int, ...]]],
              most: int = 20) -> List[str]:
  """The lines of a mismatch report; each list cut after ``most`` items ("... and N more")."""

  def names(keys):
    more = f", ... and {len(keys) - most} more" if len(keys) > most else ""
    return ", ".join(keys[:most]) + more

  lines = []
  if missing:
    lines.append(f"missing keys ({len(missing)}): {names(missing)}")
  if unexpected:
    lines.append(f"unexpected keys ({len(unexpected)}): {names(unexpected)}")
  for key, expected, got in mismatched[:most]:
    lines.append(f"shape mismatch for {key!r}: expected {expected}, got {got}")
  if len(mismatched) > most:
    lines.append(f"... and {len(mismatched) - most} more shape mismatches")
  return lines


_HINT = ("(if the model is not the registry's, pass its depth=, widen_factor= or final_bn_relu= "
         "as keywords)")


def input_normalization(state_dict: Mapping[str, Any]
                        ) -> Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]:
  """The (mean, std) of the input normalisation buffers of a state dict, or None if it has none.

  Looks for RobustBench's ``normalize_model`` wrapping (``normalize.mean``/``normalize.std``), then
  the ``mu``/``sigma`` buffers of its ``*Net`` classes, then top-level ``mean``/``std``, each after
  stripping ``module.`` prefixes.

  Args:
    state_dict: a PyTorch state dict (tensors or arrays), or a ``{"state_dict": ...}`` checkpoint.

  Returns:
    Two tuples of floats (one per channel), or None.
  """
  _, norm = _canonical(state_dict)
  if norm is None:
    return None
  return tuple(float(m) for m in norm[0]), tuple(float(s) for s in norm[1])


def from_torch_state_dict(name: str, state_dict: Mapping[str, Any], *,
                          mean: Optional[Sequence[float]] = None,
                          std: Optional[Sequence[float]] = None,
                          **model_kwargs: Any) -> Dict[str, Any]:
  """Converts a RobustBench-architecture PyTorch state dict to the variables of a library model.

  The variables are those of ``models.get_model(name, num_classes=C, **model_kwargs)``, C the rows
  of the classifier's weight; build that model with the checkpoint's ``mean``/``std`` (or call
  :func:`load_torch_model`, which does both) and its eval-mode logits on images in [0, 1] equal the
  PyTorch model's in ``eval()`` mode on the same images (NHWC here, NCHW there).

  Args:
    name: a key of :data:`FAMILIES` (the module docstring says which RobustBench class is which).
    state_dict: ``model.state_dict()`` (torch tensors) or the same keys with NumPy arrays;
      ``module.`` prefixes, a ``{"state_dict": ...}`` wrapper, normalisation buffers,
      ``num_batches_tracked`` and a WideResNet's unused ``sub_block1.*`` are accepted and dropped.
    mean, std: the input normalisation the Flax model will be built with. When the state dict holds
      normalisation buffers, they must agree with it (to 1e-6), so that a normalised checkpoint is
      not silently loaded into an unnormalised model; without buffers they are not checked.
    **model_kwargs: further attributes of the model that change its variables (``depth``,
      ``widen_factor`` of the WideResNet, ``final_bn_relu`` of the PreAct ResNet-18).

  Returns:
    ``{"params": ..., "batch_stats": ...}``, float32 JAX arrays in the model's layout.

  Raises:
    ValueError: for a name the bridge does not convert; for missing keys, unexpected keys or shape
      mismatches (one message listing all, naming each key and both shapes); for normalisation
      buffers that disagree with ``mean``/``std`` or that they do not declare; for only one of
      ``mean`` and ``std``.
  """
  family = _family(name)
  if (mean is None) != (std is None):
    raise ValueError("give both mean and std, or neither")
  sd, norm = _canonical(state_dict)
  if norm is not None and mean is not None:
    if not (np.allclose(norm[0], mean, atol=1e-6) and np.allclose(norm[1], std, atol=1e-6)):
      raise ValueError(f"the state dict normalises inputs with mean {norm[0].tolist()} and std "
                       f"{norm[1].tolist()}, not mean {list(mean)} and std {list(std)}")
  elif norm is not None:
    raise ValueError(f"the state dict normalises inputs with mean {norm[0].tolist()} and std "
                     f"{norm[1].tolist()}: pass them as mean=, std= (and to the model), or use "
                     "load_torch_model")
  num_classes = model_kwargs.pop("num_classes", None) or _head_classes(sd, family)
  in_channels = _as_numpy(sd["conv1.weight"]).shape[1] if "conv1.weight" in sd else 3
  entries = _mapping(family, _template(name, num_classes, in_channels, model_kwargs))
  expected = {e.torch_key: e for e in entries}
  ignorable = {m + ".num_batches_tracked" for m in _bn_modules(entries)}
  given = [k for k in sd if k not in ignorable
           and not (family == "wrn" and k.startswith("sub_block1."))]
  missing = [k for k in expected if k not in sd]
  unexpected = [k for k in given if k not in expected]
  arrays, mismatched = {}, []
  for key, entry in expected.items():
    if key in sd:
      value = _as_numpy(sd[key])
      if tuple(value.shape) != entry.torch_shape:
        mismatched.append((key, entry.torch_shape, tuple(value.shape)))
      else:
        arrays[entry.flax_path] = jnp.asarray(_to_flax_layout(value), jnp.float32)
  problems = _problems(missing, unexpected, mismatched)
  if problems:
    raise ValueError(f"the state dict does not fit {name!r} (RobustBench's layout, "
                     f"{num_classes} classes) {_HINT}:\n  " + "\n  ".join(problems))
  return traverse_util.unflatten_dict(arrays)


def load_torch_model(name: str, state_dict: Mapping[str, Any], *,
                     mean: Optional[Sequence[float]] = None,
                     std: Optional[Sequence[float]] = None,
                     **model_kwargs: Any) -> Tuple[nn.Module, Dict[str, Any]]:
  """The library model and its variables for a RobustBench-architecture PyTorch state dict.

  Args:
    name: a key of :data:`FAMILIES`.
    state_dict: as for :func:`from_torch_state_dict`.
    mean, std: the input normalisation; by default the state dict's buffers
      (:func:`input_normalization`), or none when it has none.
    **model_kwargs: further model attributes (``depth``, ``widen_factor``, ``final_bn_relu``,
      ``dtype``, ``conv_vjp``, ...), passed to :func:`robust_jax.models.get_model`.

  Returns:
    ``(model, variables)``: ``model.apply(variables, x)`` on x [B, 32, 32, C] in [0, 1] gives the
    PyTorch model's eval-mode logits.

  Raises:
    ValueError: as :func:`from_torch_state_dict`, or for only one of ``mean`` and ``std``.
  """
  from robust_jax import models  # pylint: disable=import-outside-toplevel
  if (mean is None) != (std is None):
    raise ValueError("give both mean and std, or neither")
  if mean is None:
    norm = input_normalization(state_dict)
    if norm is not None:
      mean, std = norm
  variables = from_torch_state_dict(name, state_dict, mean=mean, std=std, **model_kwargs)
  head = variables["params"][_HEAD[_family(name)]]["kernel"]
  model_kwargs = dict(model_kwargs, num_classes=int(head.shape[-1]))
  if mean is not None:
    model_kwargs.update(mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))
  return models.get_model(name, **model_kwargs), variables


def to_torch_state_dict(name: str, variables: Mapping[str, Any], *,
                        mean: Optional[Sequence[float]] = None,
                        std: Optional[Sequence[float]] = None,
                        normalization: str = "mu_sigma", sub_block1: bool = False,
                        **model_kwargs: Any) -> Dict[str, np.ndarray]:
  """Converts a library model's variables to a state dict of RobustBench's PyTorch class.

  ``torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)``
  then gives the Flax model's eval-mode logits (the module docstring names the class per model).

  Args:
    name: a key of :data:`FAMILIES`.
    variables: ``{"params": ..., "batch_stats": ...}`` of ``models.get_model(name, ...)``.
    mean, std: the input normalisation of the Flax model, if any, written as buffers: with
      ``normalization="mu_sigma"`` as ``mu``/``sigma`` [1, C, 1, 1] (RobustBench's ``*Net``
      classes), with ``"normalize_model"`` as ``normalize.mean``/``normalize.std`` and every other
      key under ``model.`` (``utils_architectures.normalize_model``). Not written when None.
    normalization: ``"mu_sigma"`` or ``"normalize_model"``, see above.
    sub_block1: for a WideResNet, also write ``sub_block1.*`` (a copy of ``block1``), which the
      TRADES class builds with ``sub_block1=True`` and never uses.
    **model_kwargs: attributes that change the model's variables (``depth``, ``widen_factor``,
      ``final_bn_relu``), to check ``variables`` against.

  Returns:
    ``{torch key: NumPy array}`` (float32 OIHW kernels and [out, in] linear weights, int64
    ``num_batches_tracked`` of 0), writable and contiguous.

  Raises:
    ValueError: for a name the bridge does not convert, an unknown ``normalization``, or variables
      that are not the model's (missing, unexpected or mis-shaped entries, all listed).
  """
  family = _family(name)
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
  if (mean is None) != (std is None):
    raise ValueError("give both mean and std, or neither")
  flat = {p: v for p, v in traverse_util.flatten_dict(dict(variables)).items()}
  head = flat.get(("params", _HEAD[family], "kernel"))
  num_classes = model_kwargs.pop("num_classes", None) or (
      int(np.shape(head)[-1]) if head is not None else 10)
  stem = flat.get(("params", "conv1", "kernel"))
  in_channels = int(np.shape(stem)[2]) if stem is not None else 3
  template = _template(name, num_classes, in_channels, model_kwargs)
  missing = ["/".join(p) for p in template if p not in flat]
  unexpected = ["/".join(p) for p in flat if p not in template]
  mismatched = [("/".join(p), s, tuple(np.shape(flat[p]))) for p, s in template.items()
                if p in flat and tuple(np.shape(flat[p])) != s]
  problems = _problems(missing, unexpected, mismatched)
  if problems:
    raise ValueError(f"the variables are not those of {name!r} ({num_classes} classes) "
                     f"{_HINT}:\n  " + "\n  ".join(problems))
  entries = _mapping(family, template)
  bns = set(_bn_modules(entries))
  sd: Dict[str, np.ndarray] = {}
  for entry in entries:
    sd[entry.torch_key] = _to_torch_layout(np.asarray(flat[entry.flax_path], np.float32))
    module = entry.torch_key.rsplit(".", 1)[0]
    if module in bns and entry.torch_key.endswith(".running_var"):
      sd[module + ".num_batches_tracked"] = np.zeros((), np.int64)
  if family == "wrn" and sub_block1:
    sd.update({"sub_block1." + k[len("block1."):]: v.copy() for k, v in list(sd.items())
               if k.startswith("block1.")})
  if mean is not None:
    shape = (1, -1, 1, 1)
    mean_arr = np.asarray(mean, np.float32).reshape(shape)
    std_arr = np.asarray(std, np.float32).reshape(shape)
    if normalization == "mu_sigma":
      sd.update(mu=mean_arr, sigma=std_arr)
    else:
      sd = {"normalize.mean": mean_arr, "normalize.std": std_arr,
            **{"model." + k: v for k, v in sd.items()}}
  return sd


__all__ = [
    "FAMILIES", "NORMALIZATIONS", "from_torch_state_dict", "input_normalization",
    "load_torch_model", "to_torch_state_dict",
]
