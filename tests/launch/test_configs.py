"""Every recipe in launch/configs loads, validates, names registered parts, converts epochs right.

The recipes copy hyperparameters out of official code that counts epochs from 1 and decays on
``epoch >= k``; ours count from 0. The invariants below catch the usual slips of that conversion
(decay epochs past the end, unsorted schedules, a tau boundary after training, a step larger than
eps) and any field a recipe invents by a typo (a ConfigDict accepts new keys silently).
"""

import importlib
import importlib.util
import math
import pathlib

import pytest

from robust_jax.training import config as config_lib
from robust_jax.training import schedules
from robust_jax.training.methods import METHODS

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "launch" / "configs"
# common.py holds the bases the recipes start from (no get_config of its own).
RECIPES = sorted(p for p in CONFIG_DIR.glob("*.py")
                 if p.name not in ("__init__.py", "common.py", "gan.py"))  # gan.py: GAN configs

_MODEL_NAMES = {"mlp", "cnn4", "cnn8", "small_cnn", "preact_resnet18", "preact_resnet18_fast",
                "preact_resnet18_gradalign", "resnet18", "wrn28_10", "wrn32_10", "wrn34_10"}
_DATASET_NAMES = {"digits", "mnist", "cifar10", "cifar100", "svhn_cropped"}


def _registry(module_name, attr, fallback):
  """The registry's names once the module exists; the agreed names until then."""
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name is not None and module_name.startswith(e.name):
      return set(fallback)
    raise
  names = getattr(module, attr, None)
  return set(names) if names is not None else set(fallback)


def _load(path):
  spec = importlib.util.spec_from_file_location(f"recipe_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module", params=RECIPES, ids=[p.stem for p in RECIPES])
def recipe(request):
  module = _load(request.param)
  return request.param, module, module.get_config()


def test_there_are_recipes():
  assert len(RECIPES) >= 2, RECIPES


def test_validates(recipe):
  _, _, cfg = recipe
  config_lib.validate(cfg)


def test_has_exactly_the_base_fields_with_their_types(recipe):
  _, _, cfg = recipe
  base = config_lib.base_config()
  assert set(cfg.keys()) == set(base.keys()), (
      f"unknown fields {sorted(set(cfg.keys()) - set(base.keys()))}, "
      f"missing {sorted(set(base.keys()) - set(cfg.keys()))}")
  for key in base.keys():
    want, got = base[key], cfg[key]
    if isinstance(want, (tuple, list)):
      assert isinstance(got, tuple), f"{key} should be a tuple, got {type(got).__name__}"
    elif isinstance(want, bool):
      assert isinstance(got, bool), f"{key} should be a bool, got {got!r}"
    elif isinstance(want, int):
      assert isinstance(got, int) and not isinstance(got, bool), f"{key} should be an int: {got!r}"
    elif isinstance(want, float):
      assert isinstance(got, (int, float)) and not isinstance(got, bool), f"{key}: {got!r}"
    elif isinstance(want, str):
      assert isinstance(got, str), f"{key} should be a str, got {got!r}"


def test_names_are_registered(recipe):
  path, _, cfg = recipe
  assert cfg.method in METHODS
  assert cfg.model in _registry("robust_jax.models", "MODELS", _MODEL_NAMES), cfg.model
  assert cfg.dataset in _registry("robust_jax.data.pipeline", "DATASETS", _DATASET_NAMES)
  assert path.stem.startswith(cfg.dataset), (path.stem, cfg.dataset)


def test_docstring_gives_its_launch_command(recipe):
  path, module, _ = recipe
  assert module.__doc__, path
  assert f"--config=launch/configs/{path.name}" in module.__doc__


def test_budget(recipe):
  _, _, cfg = recipe
  assert 0.0 < cfg.eps <= 1.0
  assert 0.0 < cfg.step_size <= cfg.eps + 1e-12, (cfg.step_size, cfg.eps)
  if METHODS[cfg.method].single_step:
    assert 0.0 < cfg.fgsm_step_factor * cfg.eps <= 2 * cfg.eps


def test_learning_rate_schedule(recipe):
  _, _, cfg = recipe
  epochs, decays, factors = cfg.num_epochs, cfg.lr_decay_epochs, cfg.lr_decay_factors
  assert len(decays) == len(factors)
  assert all(isinstance(e, int) for e in decays), decays
  assert list(decays) == sorted(set(decays)), f"lr_decay_epochs must increase: {decays}"
  assert all(0 < e < epochs for e in decays), f"lr_decay_epochs {decays} not in (0, {epochs})"
  assert all(0 < f < 1 for f in factors), factors
  assert list(factors) == sorted(factors, reverse=True), f"absolute factors must fall: {factors}"
  if cfg.lr_schedule == "piecewise":
    assert decays, "a piecewise schedule without decays is a constant one"
  else:
    assert not decays, f"lr_decay_epochs are ignored by lr_schedule={cfg.lr_schedule!r}"
  if cfg.lr_schedule == "cyclic":
    assert 0.0 < cfg.lr_peak_fraction < 1.0


def test_epoch_indexed_fields(recipe):
  _, _, cfg = recipe
  epochs = cfg.num_epochs
  tau_b = cfg.fat_tau_boundaries
  assert list(tau_b) == sorted(set(tau_b)), f"fat_tau_boundaries must increase: {tau_b}"
  assert all(isinstance(b, int) and 0 <= b < epochs for b in tau_b), (tau_b, epochs)
  assert all(0 <= t <= cfg.num_steps for t in cfg.fat_tau_values), cfg.fat_tau_values
  cat_b = cfg.cat_steps_boundaries
  assert list(cat_b) == sorted(set(cat_b)) and all(0 <= b < epochs for b in cat_b), cat_b
  assert isinstance(cfg.gairat_begin_epoch, int) and 0 <= cfg.gairat_begin_epoch < epochs
  assert isinstance(cfg.awp_warmup, int) and 0 <= cfg.awp_warmup < epochs
  assert 0.0 < cfg.fosc_t_prime_fraction <= 1.0
  assert 0 <= cfg.eps_warmup_epochs < epochs


def test_periodic_schedule(recipe):
  _, _, cfg = recipe
  if not cfg.periodic_eps:
    assert cfg.lr_schedule != "periodic_cosine", "periodic_cosine restarts at periodic_bounds"
    return
  bounds = cfg.periodic_bounds
  assert bounds[0] == 0 and bounds[-1] == cfg.num_epochs, bounds
  assert list(bounds) == sorted(set(bounds)), bounds
  assert cfg.periodic_eps_max == 0 or cfg.periodic_eps_max >= cfg.eps


def test_method_specific_fields(recipe):
  _, _, cfg = recipe
  method = METHODS[cfg.method]
  if method.stop == "fat":
    assert len(cfg.fat_tau_boundaries) >= 1 and max(cfg.fat_tau_values) > 0, (
        "FAT recipes grow tau with the epoch")
  if method.gairat:
    assert math.isfinite(cfg.gairat_lambda)
  if cfg.weight_perturbation in ("awp", "rwp"):
    assert 0 < cfg.awp_gamma < 0.1, cfg.awp_gamma


def test_learning_rate_at_epoch_boundaries(recipe):
  """The compiled schedule drops exactly at the start of each 0-based decay epoch."""
  _, _, cfg = recipe
  spe = 3
  lr_fn = schedules.learning_rate(
      kind=cfg.lr_schedule, base_lr=cfg.learning_rate, num_epochs=cfg.num_epochs,
      steps_per_epoch=spe, decay_epochs=tuple(cfg.lr_decay_epochs),
      decay_factors=tuple(cfg.lr_decay_factors), peak_epoch_fraction=cfg.lr_peak_fraction,
      restart_epochs=tuple(cfg.periodic_bounds[1:-1]) if cfg.periodic_eps else ())
  lr_at = lambda epoch: float(lr_fn(epoch * spe))
  last = lr_at(cfg.num_epochs - 1)
  assert math.isfinite(last) and 0.0 <= last <= cfg.learning_rate
  if cfg.lr_schedule == "piecewise":
    factors = (1.0,) + tuple(cfg.lr_decay_factors)
    for i, e in enumerate(cfg.lr_decay_epochs):
      assert lr_at(e - 1) == pytest.approx(cfg.learning_rate * factors[i], rel=1e-6)
      assert lr_at(e) == pytest.approx(cfg.learning_rate * factors[i + 1], rel=1e-6)
  if cfg.lr_schedule == "periodic_cosine":
    for e in cfg.periodic_bounds[:-1]:
      assert lr_at(e) == pytest.approx(cfg.learning_rate, rel=1e-6)
      assert lr_at(e + 1) < cfg.learning_rate


# Each fast-AT recipe trains its paper's own PreActResNet-18 (robust_jax/models/resnet.py): Wong et
# al.'s shortcut sees the raw block input (fast_adversarial CIFAR10/preact_resnet.py line 24);
# GradAlign's also drops the final BN-ReLU and uses He-normal init (understanding-fast-adv-training
# models.py, utils.initialize_weights); ELLE's --model preact-resnet18 is robust_overfitting's
# (LIONS-EPFL/ELLE core/models/preact_resnet.py).
_FAST_AT_MODELS = {
    "cifar10_fgsm_at_preact18": "preact_resnet18_fast",
    "cifar10_gradalign_preact18": "preact_resnet18_gradalign",
    "cifar10_elle_preact18": "preact_resnet18",
    "cifar10_elle_a_preact18": "preact_resnet18",
}


@pytest.mark.parametrize("stem", sorted(_FAST_AT_MODELS))
def test_fast_at_recipes_train_their_papers_network(stem):
  cfg = _load(CONFIG_DIR / f"{stem}.py").get_config()
  assert cfg.model == _FAST_AT_MODELS[stem]
