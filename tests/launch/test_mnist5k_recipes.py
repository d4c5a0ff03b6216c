"""``launch/configs/mnist5k.py``: every argument validates, trains on MNIST-5k, has its cited values.

Each row's values are compared with a table written here from the official scripts (the source
next to each value), independently of the recipe's own table; every argument (each row, and each
row with ``,cpu``) also passes the invariants every recipe passes (``tests/launch/test_configs.py``).
"""

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from launch.configs import mnist5k
from robust_jax import models
from robust_jax.data import pipeline
from robust_jax.training import config as config_lib
from robust_jax.training import methods
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib
from tests.launch import test_configs

PATH = pathlib.Path(mnist5k.__file__)
ARGS = [name + suffix for name in mnist5k.RECIPES for suffix in ("", ",cpu")]

TRADES = "yaodongyu/TRADES train_trades_mnist.py"
MADRY = "MadryLab/mnist_challenge config.json"
WONG = "locuslab/fast_adversarial MNIST/train_mnist.py"
WONG_README = "locuslab/fast_adversarial MNIST/README.md (PGD command)"
DART = "launch/configs/mnist_dart_cnn4.py (Dynamic AT paper, Section 5)"

# The protocols: (field, value, source).
SMALL_CNN = [
    ("model", "small_cnn", TRADES + ": SmallCNN()"),
    ("eps", 0.3, TRADES + " --epsilon"),
    ("batch_size", 128, TRADES + " --batch-size"),
    ("num_epochs", 100, TRADES + " --epochs"),
    ("optimizer", "sgd", TRADES + ": optim.SGD"),
    ("learning_rate", 0.01, TRADES + " --lr"),
    ("momentum", 0.9, TRADES + " --momentum"),
    ("weight_decay", 0.0, TRADES + ": no weight_decay"),
    ("lr_decay_epochs", (54, 74, 89), TRADES + " adjust_learning_rate: 1-based >= 55, 75, 90"),
    ("lr_decay_factors", (0.1, 0.01, 0.001), TRADES + " adjust_learning_rate"),
    ("num_steps", 40, TRADES + " --num-steps"),
    ("step_size", 0.01, TRADES + " --step-size"),
    ("attack_bn_mode", "eval", "trades.py: model.eval() before the attack"),
    ("augment", "none", TRADES + ": transforms.ToTensor() only"),
    ("test_attack_steps", 40, "yaodongyu/TRADES README: FGSM-40 (= PGD-40)"),
]
MNIST_NET = [
    ("model", "mnist_net", WONG + ": mnist_net()"),
    ("eps", 0.3, WONG + " --epsilon"),
    ("batch_size", 100, WONG + " --batch-size"),
    ("num_epochs", 10, WONG + " --epochs"),
    ("optimizer", "adam", WONG + ": torch.optim.Adam"),
    ("learning_rate", 5e-3, WONG + " --lr-max"),
    ("lr_schedule", "cyclic", WONG + " --lr-type cyclic"),
    ("lr_peak_fraction", 0.4, WONG + ": np.interp(t, [0, epochs * 2 // 5, epochs], ...)"),
    ("weight_decay", 0.0, WONG + ": Adam without weight_decay"),
    ("co_guard", "off", WONG + ": no early stop"),
    ("test_attack_steps", 50, "locuslab/fast_adversarial MNIST/evaluate_mnist.py --attack-iters"),
]
CNN4 = [
    ("model", "cnn4", DART + ": the 4-layer CNN"),
    ("eps", 0.3, DART),
    ("num_epochs", 50, DART + ": 50 epochs"),
    ("learning_rate", 0.01, DART),
    ("lr_decay_epochs", (19, 39), DART + ": lr / 10 at the 20th and 40th epoch"),
    ("num_steps", 10, "YisenWang/dynamic_adv_training pgd_attack.py nb_iter"),
    ("step_size", 0.075, "YisenWang/dynamic_adv_training: eps_iter = eps / 4"),
    ("fosc_c_max", 0.5, DART + ": c_max = 0.5"),
    ("fosc_t_prime_fraction", 0.8, DART + ": T' = 0.8 T"),
]
PROTOCOLS = {"small_cnn": SMALL_CNN, "mnist_net": MNIST_NET, "cnn4": CNN4}

# The rows: (protocol, [(field, value, source)]).
CITED = {
    "standard": ("small_cnn", [("method", "standard", "clean training")]),
    "pgd_at": ("small_cnn", [
        ("method", "pgd_at", "Madry et al. 2018"),
        ("attack_start", "uniform", MADRY + " random_start (pgd_attack.py: U(-eps, eps), clipped)"),
        ("num_steps", 40, MADRY + " k"),
        ("step_size", 0.01, MADRY + " a"),
        ("eps", 0.3, MADRY + " epsilon"),
    ]),
    "trades": ("small_cnn", [("method", "trades", TRADES), ("beta", 1.0, TRADES + " --beta")]),
    "trades_beta6": ("small_cnn", [
        ("method", "trades", TRADES),
        ("beta", 6.0, "TRADES paper, MNIST table: beta = 6 (unverified)"),
    ]),
    "dart": ("cnn4", [("method", "dart", DART)]),
    "fat": ("small_cnn", [
        ("method", "fat", "zjfheart/Friendly-Adversarial-Training FAT.py"),
        ("fat_tau_boundaries", (42, 75), "FAT.py adjust_tau: 50 and 90 of 120 epochs, x 100/120"),
        ("fat_tau_values", (0, 1, 2), "FAT.py adjust_tau"),
    ]),
    "gairat": ("small_cnn", [
        ("method", "gairat", "GAIRAT.py"),
        ("gairat_lambda", -1.0, "GAIRAT.py --Lambda -1.0"),
        ("gairat_begin_epoch", 54, "GAIRAT.py --begin_epoch 60: at the first lr decay (54 here)"),
    ]),
    "mart": ("small_cnn", [
        ("method", "mart", "YisenWang/MART mart.py"),
        ("beta", 6.0, "YisenWang/MART train_wideresnet.py --beta"),
    ]),
    "awp_at": ("small_cnn", [
        ("method", "pgd_at", "csdongxian/AWP AT_AWP"),
        ("weight_perturbation", "awp", "csdongxian/AWP AT_AWP"),
        ("awp_gamma", 0.01, "csdongxian/AWP AT_AWP/train_cifar10.py --awp-gamma"),
        ("awp_warmup", 0, "csdongxian/AWP AT_AWP/train_cifar10.py --awp-warmup"),
        ("attack_start", "uniform", "csdongxian/AWP AT_AWP: uniform start"),
    ]),
    "pgd_at_mnist_net": ("mnist_net", [
        ("method", "pgd_at", WONG_README + ": --attack pgd"),
        ("step_size", 0.01, WONG_README + ": --alpha 0.01"),
        ("num_steps", 40, WONG + " --attack-iters"),
        ("lr_schedule", "constant", WONG_README + ": --lr-type flat"),
        ("learning_rate", 1e-4, WONG_README + ": --lr-max 0.0001"),
        ("num_epochs", 100, WONG_README + ": --epochs 100"),
        ("batch_size", 50, WONG_README + ": --batch-size 50"),
        ("attack_start", "uniform", WONG + ": U(-eps, eps) clamped to [0, 1] - x"),
    ]),
    "fgsm_at": ("mnist_net", [
        ("method", "fgsm_at", WONG + " --attack fgsm"),
        ("fgsm_step_factor", 1.25, WONG + " --alpha 0.375 = 1.25 * 0.3"),
    ]),
    "gradalign": ("mnist_net", [
        ("method", "gradalign", "tml-epfl/understanding-fast-adv-training train.py"),
        ("fgsm_step_factor", 1.0, "sh/exps_diff_eps_cifar10.sh: zero init, step clipped to eps"),
        ("gradalign_detach_first", True, "train.py: grad at x detached (issue #3)"),
        ("gradalign_lambda", 0.0, "the library's published lambda(eps)"),
    ]),
    "elle": ("mnist_net", [
        ("method", "elle", "LIONS-EPFL/ELLE"),
        ("fgsm_step_factor", 1.0, "scripts/run_elle_cifar10.sh: --attack-step = --attack-eps"),
        ("elle_lambda", 0.0, "the library's lambda(eps) for non-CIFAR inputs"),
    ]),
    "fgsm_at_co": ("mnist_net", [
        ("method", "fgsm_at", WONG),
        ("eps", 0.4, "catastrophic overfitting on MNIST at larger eps (unverified)"),
        ("fgsm_step_factor", 1.25, WONG + ": alpha = 1.25 eps"),
    ]),
    "gradalign_co": ("mnist_net", [
        ("method", "gradalign", "tml-epfl/understanding-fast-adv-training"),
        ("eps", 0.4, "as fgsm_at_co"),
        ("fgsm_step_factor", 1.0, "GradAlign: step eps"),
    ]),
    "elle_co": ("mnist_net", [
        ("method", "elle", "LIONS-EPFL/ELLE"),
        ("eps", 0.4, "as fgsm_at_co"),
        ("fgsm_step_factor", 1.0, "ELLE: step eps"),
    ]),
}


def _cited(name):
  protocol, row = CITED[name]
  values = {field: (value, source) for field, value, source in PROTOCOLS[protocol]}
  values.update({field: (value, source) for field, value, source in row})  # a row overrides
  return protocol, values


def test_the_table_here_covers_every_row():
  assert set(CITED) == set(mnist5k.RECIPES)
  for name, (protocol, _) in CITED.items():
    assert mnist5k.RECIPES[name][0] == protocol, name


@pytest.mark.parametrize("name", sorted(CITED))
def test_row_has_its_cited_values(name):
  c = mnist5k.get_config(name)
  _, values = _cited(name)
  for field, (want, source) in values.items():
    got = c[field]
    ok = (math.isclose(got, want, rel_tol=1e-12) if isinstance(want, float)
          else tuple(got) == want if isinstance(want, tuple) else got == want)
    assert ok, f"{name}: {field} = {got!r}, cited {want!r} ({source})"


@pytest.mark.parametrize("arg", ARGS)
def test_every_argument_validates_on_mnist5k(arg):
  c = mnist5k.get_config(arg)
  config_lib.validate(c)
  assert c.dataset == "mnist5k"
  # The invariants every recipe passes (tests/launch/test_configs.py), for this argument.
  recipe = (PATH, mnist5k, c)
  for check in (test_configs.test_has_exactly_the_base_fields_with_their_types,
                test_configs.test_names_are_registered, test_configs.test_budget,
                test_configs.test_learning_rate_schedule, test_configs.test_epoch_indexed_fields,
                test_configs.test_method_specific_fields,
                test_configs.test_learning_rate_at_epoch_boundaries,
                test_configs.test_docstring_gives_its_launch_command):
    check(recipe)


def test_default_argument_is_pgd_at():
  assert mnist5k.get_config().to_dict() == mnist5k.get_config("pgd_at").to_dict()


@pytest.mark.parametrize("bad", ["nope", "trades,gpu", "trades,cpu,fast"])
def test_unknown_argument_names_the_valid_ones(bad):
  with pytest.raises(ValueError, match="valid"):
    mnist5k.get_config(bad)


@pytest.mark.parametrize("name", sorted(CITED))
def test_cpu_variant_cuts_only_what_the_docstring_says(name):
  full, cpu = mnist5k.get_config(name), mnist5k.get_config(name + ",cpu")
  protocol = mnist5k.RECIPES[name][0]
  if protocol == "mnist_net" and full.method != "pgd_at":
    assert cpu.to_dict() == full.to_dict()  # the fast-AT rows fit the CPU as they are
    return
  changed = {k for k in full.keys() if full[k] != cpu[k]}
  assert cpu.num_epochs == 15 and cpu.eps_warmup_epochs == 5
  assert cpu.eps == full.eps and cpu.method == full.method and cpu.model == full.model
  scaled = {"num_epochs", "eps_warmup_epochs", "lr_decay_epochs", "fat_tau_boundaries",
            "gairat_begin_epoch"}
  if protocol == "mnist_net":
    assert changed <= scaled, changed
    assert (cpu.num_steps, cpu.step_size, cpu.batch_size) == (40, 0.01, 50)
    return
  # AT+AWP: the weight perturbation starts once eps is reached (the SVHN script's awp_warmup).
  assert cpu.awp_warmup == (cpu.eps_warmup_epochs if cpu.weight_perturbation == "awp" else 0)
  scaled |= {"awp_warmup"}
  assert changed <= scaled | {"batch_size", "num_steps", "step_size", "test_attack_steps"}, changed
  assert (cpu.batch_size, cpu.num_steps) == (32, 10)
  assert cpu.step_size == pytest.approx(cpu.eps / 4)
  assert cpu.test_attack_steps == (20 if protocol == "small_cnn" else full.test_attack_steps)
  # Every epoch-indexed field scaled by 15 / num_epochs (lr decays stay distinct and inside).
  ratio = 15 / full.num_epochs
  assert cpu.lr_decay_epochs == tuple(round(e * ratio) for e in full.lr_decay_epochs)
  assert cpu.fat_tau_boundaries == tuple(round(e * ratio) for e in full.fat_tau_boundaries)
  assert cpu.gairat_begin_epoch == round(full.gairat_begin_epoch * ratio)


def test_config_flag_passes_the_argument_after_the_colon():
  """``--config=launch/configs/mnist5k.py:trades,cpu`` as launch/train.py defines its flag."""
  argv = ["prog", f"--config={PATH}:trades,cpu", "--config.beta=6"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "recipe", flag_values=fv, lock_config=True,
                                  sys_argv=argv)  # the overrides are read from sys.argv
  fv(argv)
  want = mnist5k.get_config("trades,cpu")
  want.beta = 6.0
  assert fv.config.to_dict() == want.to_dict()


def test_cpu_variant_trains_one_step_on_mnist5k_batches():
  """One step of ``trades,cpu`` (SmallCNN, TRADES-KL PGD-10) through the library's step."""
  c = mnist5k.get_config("trades,cpu")
  config_lib.validate(c)
  ds = pipeline.load_dataset(c.dataset, validation_fraction=c.validation_fraction)
  assert ds.image_shape == (28, 28, 1) and len(ds.train["label"]) == 3600
  spe = pipeline.steps_per_epoch(len(ds.train["label"]), c.batch_size)
  model = models.get_model(c.model, num_classes=ds.num_classes)
  tx, lr_fn = step_lib.make_optimizer(c, spe)
  state = state_lib.create(model=model, tx=tx, sample_input=jnp.zeros((1, 28, 28, 1)),
                           seed=c.seed)
  bundle = methods.build(c)
  state = state.replace(parts=bundle.init(state.params))
  params0 = jax.device_get(state.params)
  step = jax.jit(step_lib.make_train_step(c, model, tx, lr_fn, spe, bundle=bundle))
  batch = next(iter(pipeline.train_batches(ds.train, batch_size=c.batch_size, seed=c.seed,
                                           epoch=0)))
  assert batch["image"].shape == (32, 28, 28, 1)
  state, metrics = step(state, batch)
  loss = float(metrics["loss"])
  assert np.isfinite(loss) and 0.0 < loss < 10.0, loss
  assert int(state.step) == 1
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()),
                       jax.device_get(state.params), params0)
  assert max(jax.tree.leaves(moved)) > 0.0
