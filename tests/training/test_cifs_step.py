"""The library's step trains CIFS with the official objective, and leaves other models alone.

The step's input adversary is replaced by one that returns a fixed x' (and records what it attacks),
so that the independent references below see the same adversarial batch as the step.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robust_jax import losses, models, objectives
from robust_jax.models import cifs, functional
from robust_jax.training import adversary as adversary_lib
from robust_jax.training import config as config_lib
from robust_jax.training import methods
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib

B = 8


def _batch():
  x = jax.random.uniform(jax.random.key(0), (B, 8, 8, 1))
  x_adv = jnp.clip(x + 0.2 * jax.random.rademacher(jax.random.key(1), x.shape, jnp.float32), 0, 1)
  return x, x_adv, jnp.arange(B, dtype=jnp.int32) % 10


class _AuxNet(nn.Module):
  """A small model with the training hook: an auxiliary head that sees the labels in training."""

  @nn.compact
  def __call__(self, x, train=False, labels=None, return_aux=False):
    h = nn.relu(nn.Dense(16, name="hidden")(x.reshape(x.shape[0], -1)))
    aux = nn.Dense(10, name="aux")(h)
    if train and labels is not None:
      aux = aux + jax.nn.one_hot(labels, 10)
    logits = nn.Dense(10, name="logits")(h)
    return (logits, [aux]) if return_aux else logits

  def training_logits(self, x, labels):
    return self(x, train=True, labels=labels, return_aux=True)


def _mlp_fn_with_training():
  """The MLP as a hand-built ModelFn whose own training forward adds one auxiliary head: the
  logits plus the labels' one-hot (no linen hook)."""
  fn = functional.as_model_fn(models.get_model("mlp"))

  def training(variables, x, y, *, rngs=None):
    logits, bs = fn.apply(variables, x, train=True, rngs=rngs)
    return logits, (logits + jax.nn.one_hot(y, 10),), bs

  return functional.ModelFn(init=fn.init, apply=fn.apply, training=training)


_MODELS = {"aux_net": _AuxNet, "mlp_fn_with_training": _mlp_fn_with_training}


def _model(name):
  return _MODELS[name]() if name in _MODELS else models.get_model(name)


@functools.lru_cache(maxsize=None)
def _initial_state(model_name):
  return state_lib.create(model=_model(model_name), tx=optax.identity(),
                          sample_input=jnp.zeros((1, 8, 8, 1)), seed=0)


def _setup(model_name, method="pgd_at", **overrides):
  """The step of ``method`` on ``model_name`` whose adversary returns the fixed ``x_adv`` of
  :func:`_batch` and reports the sum of the logits it was handed on x (metric ``attacked``)."""
  config = config_lib.base_config()
  config.update(dict(model=model_name if model_name in models.MODELS else "mlp", method=method,
                     eps=0.2, step_size=0.05, num_steps=2, batch_size=B, train_diagnostics=False,
                     **overrides))
  model = _model(model_name)
  tx, lr_fn = step_lib.make_optimizer(config, 10)
  state = _initial_state(model_name)
  state = state.replace(opt_state=tx.init(state.params))
  bundle = methods.build(config)
  _, x_adv, _ = _batch()

  def fixed(logits_fn, x, y, key, info):
    del y, key, info
    return adversary_lib.AdversaryOutput(x_adv=x_adv, result=None, num_steps=jnp.int32(2),
                                         metrics={"attacked": jnp.sum(logits_fn(x))})

  bundle = bundle._replace(input_adversary=bundle.input_adversary._replace(apply=fixed))
  state = state.replace(parts=bundle.init(state.params))
  step = jax.jit(step_lib.make_train_step(config, model, tx, lr_fn, 10, bundle=bundle))
  return model, tx, state, step


# Plain SGD with learning rate 1: the update is minus the gradient.
_SGD1 = dict(optimizer="sgd", momentum=0.0, weight_decay=0.0, lr_schedule="constant",
             learning_rate=1.0)


def _joint_loss(model, bs, x_adv, y, *, labels):
  def loss(params):
    (logits, probes), _ = model.apply({"params": params, "batch_stats": bs}, x_adv, train=True,
                                      labels=labels, return_probes=True, mutable=["batch_stats"])
    return cifs.joint_ce_loss(logits, probes, y, beta=2.0)
  return loss


def test_cifs_step_is_the_joint_loss_with_the_label_rule():
  model, _, state, step = _setup("cifs_cnn4", **_SGD1)
  x, x_adv, y = _batch()
  new_state, metrics = step(state, {"image": x, "label": y})

  @jax.jit
  def references(params, bs):
    v = {"params": params, "batch_stats": bs}
    loss, grads = jax.value_and_grad(_joint_loss(model, bs, x_adv, y, labels=y))(params)
    top1 = _joint_loss(model, bs, x_adv, y, labels=None)(params)
    (final, _), _ = model.apply(v, x_adv, train=True, labels=y, return_probes=True,
                                mutable=["batch_stats"])
    (_, top1_probes), _ = model.apply(v, x_adv, train=True, return_probes=True,
                                      mutable=["batch_stats"])
    return loss, grads, top1, final, top1_probes[0], model.apply(v, x), model.apply(v, x_adv)

  loss, grads, top1, final, probe1, eval_logits, eval_adv = references(state.params,
                                                                       state.batch_stats)
  np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-6)
  # new = params - grads (SGD, lr 1): the step's gradient is jax.grad of the independent loss.
  chex.assert_trees_all_close(new_state.params, jax.tree.map(jnp.subtract, state.params, grads),
                              atol=1e-6, rtol=1e-6)
  assert float(jnp.max(jnp.abs(grads["cifs1"]["w1"]))) > 0  # the probes get gradient
  # The label rule: some labels are not the first probe's top-1 logit, and the top-1 rule's joint
  # loss differs from the step's.
  assert np.any(np.asarray(jnp.argmax(probe1, -1)) != np.asarray(y))
  assert abs(float(top1) - float(metrics["loss"])) > 1e-4
  # The attack saw x -> final logits in eval mode (the top-1 rule), as before; the reported
  # adversarial loss is that of the final logits.
  np.testing.assert_allclose(float(metrics["attacked"]), float(jnp.sum(eval_logits)), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["adv_loss"]),
                             float(jnp.mean(losses.cross_entropy(final, y))), rtol=1e-6)
  # The reported adversarial accuracy is the model's own prediction on x' (the top-1 rule, as the
  # attack ran it), not the label rule's, which differs on this batch.
  top1_acc = float(jnp.mean(jnp.argmax(eval_adv, -1) == y))
  assert float(metrics["adv_acc"]) == top1_acc
  assert top1_acc != float(jnp.mean(jnp.argmax(final, -1) == y))


@pytest.mark.parametrize("method", ["trades", "mart"])
def test_other_objectives_add_the_auxiliary_ce_on_the_adversarial_batch(method):
  # TRADES and MART keep their own terms; the auxiliary logits of x' (with the label rule) add
  # beta / P * CE, and the whole is scaled by 3 / (beta + 1) = 1 (beta = 2).
  model, _, state, step = _setup("aux_net", method=method, beta=6.0, **_SGD1)
  x, x_adv, y = _batch()
  _, metrics = step(state, {"image": x, "label": y})

  def ref(params):
    v = {"params": params}
    clean = model.apply(v, x, train=True)
    adv, (aux,) = model.apply(v, x_adv, train=True, labels=y, return_aux=True)
    loss = getattr(objectives, method)(clean, adv, y, beta=6.0)
    return (loss + 2.0 * jnp.mean(losses.cross_entropy(aux, y))) * 3.0 / (2.0 + 1.0)

  np.testing.assert_allclose(float(metrics["loss"]), float(jax.jit(ref)(state.params)), rtol=1e-6)


def test_model_without_hook_gets_the_plain_step_update_bitwise():
  # The digits recipe's optimiser (SGD momentum 0.9, weight decay 5e-4) on cnn4 with PGD-AT: the
  # update is that of CE(f(x'), y) computed independently with optax, to the bit.
  model, tx, state, step = _setup("cnn4", momentum=0.9, weight_decay=5e-4, learning_rate=0.1)
  x, x_adv, y = _batch()
  new_state, metrics = step(state, {"image": x, "label": y})

  @jax.jit
  def expected(params, batch_stats, opt_state):
    def loss(p):
      logits, upd = model.apply({"params": p, "batch_stats": batch_stats}, x_adv, train=True,
                                mutable=["batch_stats"])
      return jnp.mean(losses.cross_entropy(logits, y)), upd["batch_stats"]
    (l, bs), g = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt = tx.update(g, opt_state, params)
    return l, optax.apply_updates(params, updates), bs, opt

  loss, params, bs, opt_state = expected(state.params, state.batch_stats, state.opt_state)
  assert float(metrics["loss"]) == float(loss)
  jax.tree.map(np.testing.assert_array_equal, new_state.params, params)
  jax.tree.map(np.testing.assert_array_equal, new_state.batch_stats, bs)
  jax.tree.map(np.testing.assert_array_equal, new_state.opt_state, opt_state)


def test_training_forward_without_hook_adds_nothing():
  mlp, state = models.get_model("mlp"), _initial_state("mlp")
  v = {"params": state.params, "batch_stats": state.batch_stats}
  x, _, y = _batch()
  logits, aux, bs = jax.jit(functional.training_forward(mlp))(v, x, y)
  assert aux == () and bs == {}
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(jax.jit(mlp.apply)(v, x)))
  loss = jnp.float32(1.5)
  assert objectives.with_auxiliary_logits(loss, (), y) is loss  # no operation added


def test_with_auxiliary_logits_is_joint_ce_loss_and_checks_beta():
  k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
  final, p1, p2 = (jax.random.normal(k, (5, 4)) for k in (k1, k2, k3))
  y = jnp.array([0, 1, 2, 3, 0])
  for beta in (2.0, 0.5):
    got = objectives.with_auxiliary_logits(jnp.mean(losses.cross_entropy(final, y)), [p1, p2], y,
                                           beta=beta)
    np.testing.assert_allclose(float(got), float(cifs.joint_ce_loss(final, [p1, p2], y, beta=beta)),
                               rtol=1e-6)
  with pytest.raises(ValueError, match="beta"):
    objectives.with_auxiliary_logits(jnp.float32(0.0), [p1], y, beta=-1.0)


def test_a_model_fn_declares_its_own_training_forward():
  # ModelFn.training is what the step trains on, without a linen module: the PGD-AT loss on x' plus
  # the joint loss's 2 * CE of the auxiliary logits (beta 2, scaled by 3 / (2 + 1) = 1).
  model, _, state, step = _setup("mlp_fn_with_training", **_SGD1)
  x, x_adv, y = _batch()
  _, metrics = step(state, {"image": x, "label": y})
  logits = jax.jit(lambda p: model.apply({"params": p, "batch_stats": {}}, x_adv, train=True)[0])(
      state.params)
  ce = lambda lg: jnp.mean(losses.cross_entropy(lg, y))
  np.testing.assert_allclose(float(metrics["loss"]),
                             float(ce(logits) + 2.0 * ce(logits + jax.nn.one_hot(y, 10))),
                             rtol=1e-6)
  assert float(metrics["adv_loss"]) == float(ce(logits))
  # A linen module's hook becomes its ModelFn's training forward; other modules have none.
  assert functional.as_model_fn(_AuxNet()).training is not None
  assert functional.as_model_fn(models.get_model("mlp")).training is None
