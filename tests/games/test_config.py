"""The GAN configs: every kind validates, carries its published settings, and the recipe parses."""

import importlib.util
import pathlib

import pytest

from robust_jax.games import config as gan_config
from robust_jax.games import reproduce

RECIPE = pathlib.Path(__file__).resolve().parents[2] / "launch" / "configs" / "gan.py"


def _recipe():
  spec = importlib.util.spec_from_file_location("gan_recipe", RECIPE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("arg", ["vanilla", "wgan", "wgan_gp", "sngan", "wgan,cpu", "sngan,cpu,digits"])
def test_recipe_parses_and_validates(arg):
  c = _recipe().get_config(arg)
  gan_config.validate(c)
  kind = arg.split(",")[0]
  assert c.kind == kind and c.dataset == ("digits" if "digits" in arg else "mnist5k")
  for key, value in gan_config.KINDS[kind].items():  # cpu shrinks sizes, never the published row
    assert c[key] == value, key
  assert f"--config=launch/configs/gan.py:{'wgan_gp'}" in _recipe().__doc__


def test_published_defaults():
  """WGAN (Arjovsky et al. 2017) and WGAN-GP (Gulrajani et al. 2017) as the issue states them."""
  wgan, gp = gan_config.for_kind("wgan"), gan_config.for_kind("wgan_gp")
  assert (wgan.optimizer, wgan.learning_rate, wgan.clip_value, wgan.n_critic) == (
      "rmsprop", 5e-5, 0.01, 5)
  assert (gp.optimizer, gp.learning_rate, gp.beta1, gp.beta2, gp.n_critic, gp.gp_lambda) == (
      "adam", 1e-4, 0.0, 0.9, 5, 10.0)
  assert gan_config.for_kind("sngan").constraint == "sn"


def test_bad_fields_are_named():
  with pytest.raises(ValueError, match="unknown GAN kind"):
    gan_config.for_kind("lsgan")
  with pytest.raises(ValueError, match="kind"):
    _recipe().get_config("wgan,gpu")
  c = gan_config.for_kind("wgan")
  c.n_critic = 0
  with pytest.raises(ValueError, match="n_critic"):
    gan_config.validate(c)


def test_setback_and_verdicts_read_the_curves():
  falling, bumpy = [10.0, 8.0, 4.0], [10.0, 6.0, 9.0, 5.0]
  assert reproduce.setback(falling) == 0.0 < reproduce.setback(bumpy)
  curves = {"vanilla": {"fd": bumpy}, "wgan": {"fd": [10.0, 9.0]},
            "wgan_gp": {"fd": falling}, "sngan": {"fd": [10.0, 5.0]}}
  v = reproduce.verdicts(curves)
  assert v["clipping_worse_than_gp"].startswith("holds")
  assert v["gp_and_sn_stabilise"].startswith("holds")
  flat = {k: {"fd": falling} for k in curves}
  assert reproduce.verdicts(flat)["gp_and_sn_stabilise"].startswith("not decided")
  curves["wgan_gp"]["fd"] = [10.0, 11.0]
  v = reproduce.verdicts(curves)
  assert v["clipping_worse_than_gp"].startswith("does not hold")
  assert v["gp_and_sn_stabilise"].startswith("does not hold")
