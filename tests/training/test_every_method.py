"""Every method of the registry trains on the embedded default with a finite loss at every step.

"A method one config value away has to run on the default dataset" (issue 13): each method of
:data:`robust_jax.training.methods.METHODS`, and each weight adversary (AWP and RWP with ``pgd_at``,
SAM and SAMPa with ``standard``), is trained with ``launch/configs/digits.py`` as
``python -m launch.train --config=launch/configs/digits.py --config.method=<name>`` would, through
the same compiled, data-parallel step with the donated state as
:func:`robust_jax.training.loop.train_and_evaluate`, on the first 64 training examples: one batch
per epoch, so the recipe's 60 epochs take 60 steps and every schedule of the recipe (the learning
rate decays at epochs 40 and 55, FAT's tau from epoch 20, GAIRAT's weights from epoch 30, CAT's
curriculum, AWP's warm-up) is reached. With the library's former lambdas (the CIFAR-10 values:
10,000 for ELLE, extrapolated to eps 0.2, and 4,000 for ELLE-A) this test fails for ELLE from step
9 (the full run: step 11) and for ELLE-A from step 28; before that, ELLE-A failed at its first step
(its four state scalars shared one buffer, which the donated state cannot hold twice).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from launch.configs import digits
from robust_jax import models, parallel, weight_adversaries
from robust_jax.data import pipeline
from robust_jax.training import config as config_lib
from robust_jax.training import methods
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib

SUBSET = 64  # = the recipe's batch size: one step per epoch


def _runs():
  """Every method without a weight adversary; every weight adversary with ``pgd_at`` if it perturbs
  the weights against the adversarial loss (AWP, RWP), else with ``standard`` (SAM, SAMPa)."""
  runs = [(name, "none") for name in methods.METHODS]
  base = digits.get_config()
  for wp in weight_adversaries.WEIGHT_ADVERSARIES.names():
    if wp != "none":
      adversarial = weight_adversaries.WEIGHT_ADVERSARIES.build(wp, base).needs_input_adversary
      runs.append(("pgd_at" if adversarial else "standard", wp))
  return runs


@pytest.fixture(scope="module")
def digits_run():
  """The dataset, its first 64 training examples and the recipe's initial train state (the model
  and the optimizer do not depend on the method; created once, copied by each test)."""
  ds = pipeline.load_dataset("digits")
  train = {k: v[:SUBSET] for k, v in ds.train.items()}
  c = digits.get_config()
  spe = pipeline.steps_per_epoch(SUBSET, c.batch_size)
  model = models.get_model(c.model, num_classes=ds.num_classes)
  tx, lr_fn = step_lib.make_optimizer(c, spe)
  state = state_lib.create(model=model, tx=tx, sample_input=jnp.zeros((1,) + tuple(ds.image_shape)),
                           seed=c.seed)
  return dict(train=train, spe=spe, model=model, tx=tx, lr_fn=lr_fn, state=state)


def train_losses(config, run):
  """The loss of every step and the final parameters of ``config`` (the loop's step, jit and
  donation; ``run`` from the ``digits_run`` fixture)."""
  mesh = parallel.make_mesh()
  config_lib.validate(config, num_devices=mesh.devices.size)
  bundle = methods.build(config)
  state = jax.tree.map(jnp.copy, run["state"])  # fresh buffers: the step donates its state
  state = parallel.replicate(state.replace(parts=bundle.init(state.params)), mesh)
  train_step = parallel.jit_data_parallel(
      step_lib.make_train_step(config, run["model"], run["tx"], run["lr_fn"], run["spe"],
                               bundle=bundle), mesh)
  losses = []
  for epoch in range(config.num_epochs):
    for batch in pipeline.train_batches(run["train"], batch_size=config.batch_size,
                                        seed=config.seed, epoch=epoch):
      state, m = train_step(state, parallel.shard_batch(batch, mesh))
      losses.append(m["loss"])
  return np.asarray(jax.device_get(jnp.stack(losses))), jax.device_get(state.params)


@pytest.mark.parametrize("method,weight_perturbation", _runs())
def test_trains_on_the_digits_default_with_a_finite_loss_at_every_step(
    method, weight_perturbation, digits_run):
  c = digits.get_config()
  c.method = method
  c.weight_perturbation = weight_perturbation
  losses, params = train_losses(c, digits_run)
  assert losses.shape == (c.num_epochs,)  # every epoch of the recipe, one step each
  bad = np.flatnonzero(~np.isfinite(losses))
  assert bad.size == 0, f"non-finite loss from step {bad[0]}: {losses[bad[0]:bad[0] + 3]}"
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))
