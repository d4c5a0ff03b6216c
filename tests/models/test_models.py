"""Tests of robust_jax.models: parameter counts, shapes, BatchNorm modes, the custom-VJP convolution.

The expected parameter counts are those of the PyTorch reference classes (``sum(p.numel() for p in
model.parameters())``, measured once with PyTorch 2.13), minus the parameters that a reference builds
but never uses (``sub_block1`` of the TRADES WideResNet); :func:`_wrn_params` re-derives the
WideResNet numbers by arithmetic. Big models are only traced (``jax.eval_shape``), never materialised.
"""

import math
import re

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import models
from robust_jax.models import kernels, layers
from robust_jax.models.wide_resnet import WideResNet, blocks_per_group

_INPUT = {"mlp": (8, 8, 1), "cnn4": (28, 28, 1), "small_cnn": (28, 28, 1)}

# PyTorch reference counts (10 classes). preact_resnet18: robust_overfitting's class (final BN);
# wrn*: TRADES' class without its unused sub_block1 (PyTorch reports 38,119,866 and 48,262,586).
_EXPECTED_PARAMS = {
    "mlp": 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10,
    "cnn4": 421_834,
    "cnn8": 1_639_282,
    "small_cnn": 312_202,
    "preact_resnet18": 11_172_170,
    "resnet18": 11_173_962,
    "wrn28_10": 36_479_194,
    "wrn32_10": 46_160_474,
    "wrn34_10": 46_160_474,
    "wrn70_16": 266_796_506,
}


def _input_shape(name, batch=2):
  return (batch,) + _INPUT.get(name, (32, 32, 3))


def _abstract_variables(model, shape):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))


def _wrn_group_params(n, c_in, c_out):
  """Parameters of one group of n WideResNet blocks (BN scale and bias count 2 per channel)."""
  total = 0
  for b in range(n):
    cin = c_in if b == 0 else c_out
    total += 2 * cin + 9 * cin * c_out + 2 * c_out + 9 * c_out * c_out  # bn1, conv1, bn2, conv2
    if cin != c_out:
      total += cin * c_out  # 1x1 shortcut
  return total


def _wrn_params(n, k, num_classes=10):
  """Trainable parameters of a TRADES WideResNet with n blocks per group and width k (no sub_block1)."""
  widths = [16, 16 * k, 32 * k, 64 * k]
  total = 3 * 3 * 3 * 16  # stem
  total += sum(_wrn_group_params(n, widths[g], widths[g + 1]) for g in range(3))
  return total + 2 * widths[3] + widths[3] * num_classes + num_classes  # final bn, fc


@pytest.fixture(scope="module")
def cnn4():
  """CNN4 with real parameters, a batch of 4 MNIST-shaped inputs and a jitted train-mode apply."""
  model = models.get_model("cnn4")
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  train_apply = jax.jit(lambda v, xx: model.apply(v, xx, train=True, mutable=["batch_stats"]))
  return model, x, variables, train_apply


@pytest.fixture(scope="module")
def small_cnn():
  """SmallCNN, a batch of 2 inputs, its initial variables and variables with a non-zero last layer."""
  model = models.get_model("small_cnn")
  x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  return model, x, variables, jax.tree.map(lambda p: p + 0.01, variables)


# --------------------------------------------------------------------------------------------------
# Parameter counts and shapes.


@pytest.mark.parametrize("name", sorted(_EXPECTED_PARAMS))
def test_param_count_matches_reference(name):
  model = models.get_model(name)
  variables = _abstract_variables(model, _input_shape(name))
  assert models.count_params(variables["params"]) == _EXPECTED_PARAMS[name]
  assert models.count_params(variables) == _EXPECTED_PARAMS[name]  # batch_stats not counted


def test_wrn_counts_follow_from_the_block_arithmetic():
  assert _wrn_params(4, 10) == _EXPECTED_PARAMS["wrn28_10"]
  assert _wrn_params(5, 10) == _EXPECTED_PARAMS["wrn34_10"]
  assert _wrn_params(11, 16) == _EXPECTED_PARAMS["wrn70_16"]
  # PyTorch's count of the TRADES class adds its unused sub_block1 (one more first group).
  assert _wrn_params(5, 10) + _wrn_group_params(5, 16, 160) == 48_262_586
  assert _wrn_params(4, 10) + _wrn_group_params(4, 16, 160) == 38_119_866


@pytest.mark.parametrize("depth,convention,n", [(34, "trades", 5), (28, "trades", 4),
                                                (32, "madry", 5), (16, "trades", 2)])
def test_blocks_per_group(depth, convention, n):
  assert blocks_per_group(depth, convention) == n


@pytest.mark.parametrize("depth,convention", [(32, "trades"), (34, "madry"), (4, "trades"),
                                              (34, "resnet")])
def test_blocks_per_group_rejects_bad_depths(depth, convention):
  with pytest.raises(ValueError):
    blocks_per_group(depth, convention)


def test_num_classes_changes_only_the_last_layer():
  model = models.get_model("preact_resnet18", num_classes=100)
  variables = _abstract_variables(model, (1, 32, 32, 3))
  assert models.count_params(variables) == _EXPECTED_PARAMS["preact_resnet18"] + 90 * 513


@pytest.mark.parametrize("name", sorted(_EXPECTED_PARAMS))
def test_output_shape_and_dtype(name):
  model = models.get_model(name, num_classes=7)
  shape = _input_shape(name, batch=3)
  variables = _abstract_variables(model, shape)
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(shape)), variables)
  assert out.shape == (3, 7) and out.dtype == jnp.float32
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


def _assert_runs_and_is_finite(model, variables, x):
  @jax.jit
  def logits_and_input_grad(v, xx):
    return model.apply(v, xx), jax.grad(lambda z: jnp.sum(model.apply(v, z)[:, 0]))(xx)

  logits, grad = logits_and_input_grad(variables, x)
  assert logits.shape == (x.shape[0], 10) and grad.shape == x.shape
  assert np.all(np.isfinite(logits)) and np.all(np.isfinite(grad))


def test_small_models_run_and_are_finite(cnn4, small_cnn):
  mlp = models.get_model("mlp")
  x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
  _assert_runs_and_is_finite(mlp, jax.jit(mlp.init)(jax.random.key(0), x), x)
  model, x, variables, _ = cnn4
  _assert_runs_and_is_finite(model, variables, x)
  model, x, _, variables = small_cnn
  _assert_runs_and_is_finite(model, variables, x)


def test_small_wide_resnet_traces_in_both_modes():
  model = WideResNet(depth=10, widen_factor=1)
  x = jnp.zeros((2, 32, 32, 3))
  variables = _abstract_variables(model, x.shape)
  assert models.count_params(variables) == _wrn_params(1, 1)
  logits, updates = jax.eval_shape(
      lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), variables)
  assert logits.shape == (2, 10)
  assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(variables["batch_stats"])


def test_bfloat16_compute_keeps_float32_params_and_logits(cnn4):
  _, x, variables, train_apply = cnn4
  model = models.get_model("cnn4", dtype=jnp.bfloat16)
  logits, updates = jax.jit(
      lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables)
  assert logits.dtype == jnp.float32
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves((variables, updates)))
  np.testing.assert_allclose(logits, train_apply(variables, x)[0], atol=0.05)


def test_unknown_model_name_lists_the_valid_names():
  with pytest.raises(ValueError) as err:
    models.get_model("resnet1000")
  for name in models.MODELS:
    assert name in str(err.value)


# --------------------------------------------------------------------------------------------------
# BatchNorm modes, dropout, input checks.


def test_eval_mode_needs_and_changes_no_batch_stats(cnn4):
  model, x, variables, _ = cnn4
  eval_apply = jax.jit(lambda v, xx: model.apply(v, xx, train=False, mutable=False))
  out = eval_apply(variables, x)
  assert out.shape == (4, 10)  # a bare array: no collection was returned or changed
  # Eval mode is per-example: a row does not depend on the rest of the batch.
  np.testing.assert_allclose(eval_apply(variables, x[::-1]), out[::-1], rtol=1e-5, atol=1e-6)
  with pytest.raises(flax.errors.ModifyScopeVariableError):
    jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=False), variables)


def test_train_mode_updates_batch_stats_with_momentum_0_1(cnn4):
  _, x, variables, train_apply = cnn4
  _, updates = train_apply(variables, x)
  # The first BatchNorm sees conv1's output; its running mean moves 0.1 of the way to the batch mean.
  h = jax.jit(layers.Conv(32, 3).apply)({"params": variables["params"]["conv1"]}, x)
  old, new = variables["batch_stats"]["bn1"], updates["batch_stats"]["bn1"]
  np.testing.assert_array_equal(old["mean"], 0.0)
  np.testing.assert_allclose(new["mean"], 0.1 * np.mean(h, axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(variables["batch_stats"])


def test_small_cnn_dropout_needs_a_key_in_train_mode_only(small_cnn):
  model, x, variables, params = small_cnn
  assert model.dropout_rate == 0.5
  no_drop = models.get_model("small_cnn", dropout_rate=0.0)
  train = lambda p, seed: model.apply(p, x, train=True, rngs={"dropout": jax.random.key(seed)})
  zero_logits, a, b, no_drop_train, no_drop_eval = jax.jit(lambda v, p: (
      model.apply(v, x), train(p, 2), train(p, 3), no_drop.apply(p, x, train=True),
      no_drop.apply(p, x)))(variables, params)
  np.testing.assert_array_equal(zero_logits, 0.0)  # last layer initialised to zero
  assert not np.allclose(a, b)
  np.testing.assert_allclose(no_drop_train, no_drop_eval)
  with pytest.raises(flax.errors.InvalidRngError):
    jax.eval_shape(lambda v: model.apply(v, x, train=True), variables)


@pytest.mark.parametrize("size", [30, 8])
def test_small_cnn_rejects_input_sizes_that_do_not_fit(size):
  model = models.get_model("small_cnn")
  with pytest.raises(ValueError, match="SmallCNN|even feature map"):
    _abstract_variables(model, (1, size, size, 1))


def test_mean_std_standardise_inside_the_model(small_cnn):
  plain, x, _, params = small_cnn
  normed = models.get_model("small_cnn", mean=(0.5,), std=(0.25,))
  got, want = jax.jit(lambda v: (normed.apply(v, x), plain.apply(v, (x - 0.5) / 0.25)))(params)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError):
    layers.normalize_input(x, (0.5,), None)


# --------------------------------------------------------------------------------------------------
# The custom-VJP convolution and the pooling.

# Odd and even sizes, strides 1 and 2, SAME / VALID / PyTorch's padding=1 for 3x3 kernels, plus the
# 1x1 stride-2 shortcut, an even kernel and asymmetric explicit pads.
_CONV_CASES = [(size, stride, padding, 3) for size in (7, 8) for stride in (1, 2)
               for padding in ("SAME", "VALID", 1)] + [
                   (8, 2, "VALID", 1), (7, 2, "SAME", 4), (8, 2, ((0, 2), (1, 0)), 3)]


@pytest.mark.parametrize("size,stride,padding,kernel", _CONV_CASES)
def test_conv_matches_flax_conv_and_its_gradients(size, stride, padding, kernel):
  x = jax.random.normal(jax.random.key(0), (2, size, size + 1, 3))
  ours = layers.Conv(4, kernel, strides=stride, padding=padding)
  ref = nn.Conv(4, (kernel, kernel), strides=stride, padding=padding)
  variables = {"params": {"kernel": jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 4)),
                          "bias": jax.random.normal(jax.random.key(2), (4,))}}
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
      jnp.shape, jax.eval_shape(ours.init, jax.random.key(0), x))
  out_shape = jax.eval_shape(ref.apply, variables, x).shape
  cot = jax.random.normal(jax.random.key(3), out_shape)

  @jax.jit
  def outputs_and_vjps(v, xx):
    y_ref, vjp_ref = jax.vjp(ref.apply, v, xx)
    y, vjp = jax.vjp(ours.apply, v, xx)
    return (y, vjp(cot)), (y_ref, vjp_ref(cot))

  got, want = outputs_and_vjps(variables, x)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_conv_gradient_inside_while_loop_and_jit_matches_default():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))

  def run(custom):
    def loss(xx):
      return jnp.sum(jnp.tanh(kernels.conv2d(xx, w, 2, ((1, 1), (1, 1)), custom_vjp=custom)))

    def body(carry):
      k, xx = carry
      return k + 1, xx + 0.1 * jax.grad(loss)(xx)

    return jax.jit(lambda xx: jax.lax.while_loop(lambda c: c[0] < 3, body, (0, xx))[1])(x)

  np.testing.assert_allclose(run(True), run(False), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_derivatives_of_every_order_match_the_default_rule_but_not_forward_mode(stride):
  # 4 input channels: deeper than PATCHES_MAX_DEPTH, so the custom-VJP convolution is used.
  x = jax.random.normal(jax.random.key(0), (2, 7, 6, 4))
  w = jax.random.normal(jax.random.key(1), (3, 3, 4, 3))
  v = jax.random.normal(jax.random.key(2), w.shape)
  assert 3 * 3 * 4 > kernels.PATCHES_MAX_DEPTH

  def loss(ww, xx, custom):
    return jnp.sum(jnp.tanh(kernels.conv2d(xx, ww, stride, 1, custom_vjp=custom)))

  def hvp(custom):  # reverse-over-reverse, through the convolution and both adjoints
    return jax.grad(lambda ww: jnp.vdot(jax.grad(loss)(ww, x, custom), v))(w)

  def gradalign_like(custom):  # weight gradient of a function of the input gradient
    def input_grad_norm(ww):
      gx = jax.grad(loss, argnums=1)(ww, x, custom)
      return jnp.sum(gx ** 2)
    return jax.grad(input_grad_norm)(w)

  def third_order(custom):  # input gradient of the weight-gradient's norm, differentiated again
    def f(xx):
      gw = jax.grad(loss)(w, xx, custom)
      return jnp.sum(jnp.sin(jax.grad(lambda z: jnp.sum(jax.grad(loss)(w, z, custom) * gw))(xx)))
    return jax.grad(f)(x)

  for fn in (hvp, gradalign_like, third_order):
    np.testing.assert_allclose(fn(True), fn(False), rtol=1e-4, atol=1e-4)
  with pytest.raises(TypeError):
    jax.jvp(lambda ww: kernels.conv2d(x, ww), (w,), (v,))


def test_second_derivative_graph_has_only_forward_convolutions():
  """GradAlign's double backprop reaches XLA as plain forward convolutions (no batch-contracting or
  ``01oi`` forms, which XLA's CPU backend compiles as naive loops)."""
  x = jnp.zeros((2, 6, 6, 4))
  w = jnp.zeros((3, 3, 4, 4))

  def labels(custom):
    def input_grad_norm(ww):
      gx = jax.grad(lambda xx: jnp.sum(jnp.tanh(
          kernels.conv2d(xx, ww, 1, "VALID", custom_vjp=custom))))(x)
      return jnp.sum(gx ** 2)

    hlo = jax.jit(jax.grad(input_grad_norm)).lower(w).compile().as_text()
    return {line.split("dim_labels=")[1].split(",")[0] for line in hlo.splitlines()
            if " convolution(" in line}

  assert labels(True) == {"b01f_01io->b01f"}
  assert labels(False) != {"b01f_01io->b01f"}  # JAX's own rules: the check can fail


@pytest.mark.parametrize("c_in,stride,padding", [
    (1, 1, "VALID"), (3, 1, 1), (3, 2, "SAME"), (2, 2, ((2, -1), (0, 1))), (4, 1, 1)])
def test_patches_convolution_equals_lax_conv_in_value_and_both_gradients(c_in, stride, padding):
  """The shallow-layer path (patches @ kernel) against XLA's convolution and its autodiff."""
  x = jax.random.normal(jax.random.key(0), (2, 9, 8, c_in))
  w = jax.random.normal(jax.random.key(1), (3, 3, c_in, 5))
  pads = kernels.resolve_padding(padding, x.shape[1:3], (3, 3), (stride, stride))
  ref = lambda xx, ww: jax.lax.conv_general_dilated(
      xx, ww, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ours = lambda xx, ww: kernels.patches_conv2d(xx, ww, (stride, stride), pads)
  y_ref, vjp_ref = jax.vjp(ref, x, w)
  y, vjp = jax.vjp(ours, x, w)
  cot = jax.random.normal(jax.random.key(2), y_ref.shape)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for g, g_ref in zip(vjp(cot), vjp_ref(cot)):
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-5)
  # conv2d takes this path for shallow kernels only, and then forward mode works as well.
  assert (3 * 3 * c_in <= kernels.PATCHES_MAX_DEPTH) == (c_in < 4)
  if c_in < 4:
    v = jax.random.normal(jax.random.key(3), w.shape)
    tangent = jax.jvp(lambda ww: kernels.conv2d(x, ww, stride, padding), (w,), (v,))[1]
    np.testing.assert_allclose(tangent, ref(x, v), rtol=1e-5, atol=1e-5)


def test_conv_rejects_bad_inputs():
  with pytest.raises(ValueError):
    kernels.conv2d(jnp.zeros((4, 4, 3)), jnp.zeros((3, 3, 3, 2)))
  with pytest.raises(ValueError):
    kernels.conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 2)))
  with pytest.raises(ValueError):
    kernels.conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 3, 2)), padding="CIRCULAR")


def test_input_grad_pads_keep_the_input_size():
  for n, k, s, pads in [(32, 3, 2, (1, 1)), (32, 1, 2, (0, 0)), (7, 3, 2, (1, 1)), (8, 4, 1, (0, 0))]:
    m = (n + sum(pads) - k) // s + 1
    lo, hi = kernels.input_grad_pads((n, n), (k, k), (s, s), (pads, pads))[0]
    assert (m - 1) * s + 1 + lo + hi - k + 1 == n


@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_2x2_matches_nn_max_pool_ties_included(ties):
  x = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))
  if ties:  # few distinct values: most windows hold tied maxima, in every position
    x = jnp.round(x)
  cot = jax.random.normal(jax.random.key(1), (2, 4, 3, 3))
  ref = lambda xx: nn.max_pool(xx, (2, 2), strides=(2, 2))

  @jax.jit
  def value_and_grad(xx):
    ours = jax.vjp(kernels.max_pool_2x2, xx)
    theirs = jax.vjp(ref, xx)
    return (ours[0], ours[1](cot)), (theirs[0], theirs[1](cot))

  got, want = value_and_grad(x)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(g, w)
  # The gradient of each window sums to its cotangent (no splitting, no duplication on ties).
  grad = np.asarray(got[1][0]).reshape(2, 4, 2, 3, 2, 3).sum(axis=(2, 4))
  np.testing.assert_allclose(grad, cot, rtol=1e-6)
  if ties:
    windows = np.asarray(x).reshape(2, 4, 2, 3, 2, 3)
    assert ((windows == windows.max(axis=(2, 4), keepdims=True)).sum(axis=(2, 4)) > 1).mean() > 0.3


@pytest.mark.parametrize("ties", [False, True])
def test_relu_max_pool_equals_pooling_after_relu_in_value_and_gradient(ties):
  x = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))
  if ties:
    x = jnp.round(x)
  cot = jax.random.normal(jax.random.key(1), (2, 4, 3, 3))
  ref = lambda xx: nn.max_pool(nn.relu(xx), (2, 2), strides=(2, 2))
  y, vjp = jax.vjp(kernels.relu_max_pool_2x2, x)
  y_ref, vjp_ref = jax.vjp(ref, x)
  np.testing.assert_array_equal(y, y_ref)
  np.testing.assert_array_equal(vjp(cot)[0], vjp_ref(cot)[0])


def test_max_pool_2x2_rejects_odd_maps():
  with pytest.raises(ValueError, match="even"):
    kernels.max_pool_2x2(jnp.zeros((1, 7, 8, 2)))


def test_global_avg_pool_is_the_spatial_mean():
  x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32)
  np.testing.assert_allclose(layers.global_avg_pool(x), x.mean(axis=(1, 2)), rtol=1e-6)


def test_torch_default_initialisers_have_the_reference_ranges():
  w = np.abs(layers.torch_default_kernel_init()(jax.random.key(0), (3, 3, 16, 32)))
  b = np.abs(layers.torch_default_bias_init(144)(jax.random.key(1), (1000,)))
  bound = 1 / 12.0  # 1 / sqrt(3 * 3 * 16)
  assert w.max() <= bound and b.max() <= bound
  assert w.max() > 0.9 * bound and b.max() > 0.9 * bound


def test_conv_input_gradient_in_while_loop_is_a_forward_convolution():
  """The point of the custom VJP: inside a while body XLA sees only HWIO ("01io") kernels."""
  x = jnp.zeros((2, 6, 6, 4))
  w = jnp.zeros((3, 3, 4, 4))

  def run(kernel, x0):
    loss = lambda xx: jnp.sum(jnp.tanh(kernels.conv2d(xx, kernel, 1, "VALID")))
    body = lambda c: (c[0] + 1, c[1] + jnp.sign(jax.grad(loss)(c[1])))
    return jax.lax.while_loop(lambda c: c[0] < 3, body, (0, x0))[1]

  hlo = jax.jit(run).lower(w, x).compile().as_text()
  labels = [line.split("dim_labels=")[1].split(",")[0] for line in hlo.splitlines()
            if " convolution(" in line]
  assert len(labels) == 2 and all(lab == "b01f_01io->b01f" for lab in labels), labels


# The models' conv_vjp option: the custom VJP (default) or JAX's own rules, same parameters.
# One model per module: cnn.py (pooling, VALID), resnet.py and wide_resnet.py (strides, shortcuts).
_CONV_VJP_MODELS = {
    "small_cnn": (lambda **kw: models.get_model("small_cnn", **kw), (2, 28, 28, 1)),
    "preact_resnet18": (lambda **kw: models.get_model("preact_resnet18", **kw), (2, 8, 8, 3)),
    "wrn10_1": (lambda **kw: WideResNet(depth=10, widen_factor=1, **kw), (2, 8, 8, 3)),
}


def _custom_convs(model, variables, x) -> int:
  """How many convolutions of ``model.apply`` are the custom-VJP kernel (traced, not compiled)."""
  jaxpr = str(jax.make_jaxpr(lambda v, xx: model.apply(v, xx))(variables, x))
  return len(re.findall(r"name=_conv2d\b", jaxpr))


@pytest.mark.parametrize("name", sorted(_CONV_VJP_MODELS))
def test_conv_vjp_is_threaded_to_every_deep_convolution_and_keeps_the_parameters(name):
  make, shape = _CONV_VJP_MODELS[name]
  custom, plain = make(), make(conv_vjp="jax")
  x = jnp.zeros(shape)
  variables = jax.eval_shape(custom.init, jax.random.key(1), x)
  # The same parameter tree (names, shapes, dtypes) whichever gradient rule.
  assert jax.tree.map(lambda a: (a.shape, a.dtype), variables) == jax.tree.map(
      lambda a: (a.shape, a.dtype), jax.eval_shape(plain.init, jax.random.key(1), x))
  # Every deep convolution (patches deeper than PATCHES_MAX_DEPTH; shallow ones are patches @
  # kernel either way) is the custom-VJP kernel by default, none is with conv_vjp="jax".
  deep = sum(1 for path, k in jax.tree_util.tree_flatten_with_path(variables["params"])[0]
             if jax.tree_util.keystr(path).endswith("['kernel']") and k.ndim == 4
             and math.prod(k.shape[:3]) > kernels.PATCHES_MAX_DEPTH)
  assert deep > 0
  assert _custom_convs(custom, variables, x) == deep and _custom_convs(plain, variables, x) == 0


@pytest.mark.parametrize("name", ["small_cnn", "wrn10_1"])
def test_conv_vjp_jax_gives_the_same_logits_and_input_gradients(name):
  make, shape = _CONV_VJP_MODELS[name]
  custom, plain = make(), make(conv_vjp="jax")
  x = jax.random.uniform(jax.random.key(0), shape)
  variables = jax.jit(custom.init)(jax.random.key(1), x)
  # Random weights (SmallCNN's last layer starts at zero, which would make every gradient zero).
  leaves, tree = jax.tree.flatten(variables["params"])
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = jax.tree.unflatten(tree, [p + 0.1 * jax.random.normal(k, p.shape, p.dtype)
                                     for p, k in zip(leaves, keys)])
  variables = dict(variables, params=params)
  cot = jax.random.normal(jax.random.key(3), (shape[0], 10))

  def logits_and_input_grad(model):  # eval mode, as the attacks see the model
    loss = lambda v, xx: jnp.vdot(model.apply(v, xx), cot)  # noqa: E731
    return jax.jit(lambda v, xx: (model.apply(v, xx), jax.grad(loss, argnums=1)(v, xx)))(
        variables, x)

  (y_c, gx_c), (y_j, gx_j) = logits_and_input_grad(custom), logits_and_input_grad(plain)
  assert float(jnp.max(jnp.abs(gx_c))) > 0  # a gradient worth comparing
  np.testing.assert_allclose(y_c, y_j, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gx_c, gx_j, rtol=1e-4, atol=1e-5)


def test_conv_vjp_rejects_unknown_values():
  with pytest.raises(ValueError, match="vjp must be one of"):
    models.get_model("small_cnn", conv_vjp="pytorch")
  with pytest.raises(ValueError, match="vjp must be one of"):
    kernels.conv2d(jnp.zeros((1, 4, 4, 8)), jnp.zeros((3, 3, 8, 2)), vjp="fast")


# --------------------------------------------------------------------------------------------------
# The three PreAct ResNet-18s: robust_overfitting / AT-AWP / ELLE (``preact_resnet18``),
# fast_adversarial (``preact_resnet18_fast``), GradAlign (``preact_resnet18_gradalign``).

_PREACT_VARIANTS = {  # name -> (shortcut input, final BN-ReLU, initialisation)
    "preact_resnet18": ("activated", True, "torch"),
    "preact_resnet18_fast": ("raw", True, "torch"),
    "preact_resnet18_gradalign": ("raw", False, "he_normal"),
}
_BN_EPS = 1e-5


def _preact18_params(final_bn, num_classes=10):
  """Trainable parameters of a CIFAR PreAct ResNet-18 by arithmetic (BN: scale and bias)."""
  total, c_in = 3 * 3 * 3 * 64, 64  # stem
  for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
    for b in range(2):
      total += 2 * c_in + 9 * c_in * planes + 2 * planes + 9 * planes * planes  # bn1 conv1 bn2 conv2
      if (stride if b == 0 else 1) != 1 or c_in != planes:
        total += c_in * planes  # the 1x1 projection shortcut (no BN, no bias)
      c_in = planes
  return total + (2 * 512 if final_bn else 0) + 512 * num_classes + num_classes


def _randomise_batch_norms(variables, key):
  """Every BN gets scale U(0.5, 1.5), bias N(0, 0.3), running mean N(0, 0.3), var U(0.5, 1.5).

  With these relu(bn1(x)) differs from x everywhere a block projects, so the two shortcut inputs
  give different outputs.
  """
  params = flax.core.unfreeze(variables["params"])
  stats = flax.core.unfreeze(variables["batch_stats"])
  counter = iter(range(10_000))

  def walk(p, s, path):
    for k in sorted(s):
      if "mean" in s[k]:  # a BatchNorm: params {scale, bias}, stats {mean, var}
        keys = jax.random.split(jax.random.fold_in(key, next(counter)), 4)
        n = s[k]["mean"].shape
        p[k]["scale"] = jax.random.uniform(keys[0], n, minval=0.5, maxval=1.5)
        p[k]["bias"] = 0.3 * jax.random.normal(keys[1], n)
        s[k]["mean"] = 0.3 * jax.random.normal(keys[2], n)
        s[k]["var"] = jax.random.uniform(keys[3], n, minval=0.5, maxval=1.5)
      else:
        walk(p[k], s[k], path + (k,))

  walk(params, stats, ())
  return {"params": params, "batch_stats": stats}


def _hand_bn(z, p, s, train):
  if train:  # batch statistics, the biased variance (as PyTorch normalises)
    mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
  else:
    mean, var = s["mean"], s["var"]
  return (z - mean) / jnp.sqrt(var + _BN_EPS) * p["scale"] + p["bias"]


def _hand_conv(z, w, stride, pad):
  return jax.lax.conv_general_dilated(z, w, (stride, stride), ((pad, pad), (pad, pad)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      precision=jax.lax.Precision.HIGHEST)


def _hand_preact_block(p, s, x, stride, shortcut_input, train=False):
  """The official PreActBlock.forward written out from its parameters (no flax)."""
  a = jax.nn.relu(_hand_bn(x, p["bn1"], s["bn1"], train))
  shortcut = x
  if "shortcut_conv" in p:
    shortcut = _hand_conv(a if shortcut_input == "activated" else x, p["shortcut_conv"]["kernel"],
                          stride, 0)
  out = _hand_conv(a, p["conv1"]["kernel"], stride, 1)
  out = jax.nn.relu(_hand_bn(out, p["bn2"], s["bn2"], train))
  return _hand_conv(out, p["conv2"]["kernel"], 1, 1) + shortcut


@pytest.fixture(scope="module")
def preact_variants():
  """Each variant materialised on a batch of 2 8x8x3 inputs, its BatchNorms randomised."""
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  out = {}
  for i, name in enumerate(sorted(_PREACT_VARIANTS)):
    model = models.get_model(name)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    out[name] = (model, variables, _randomise_batch_norms(variables, jax.random.key(10 + i)))
  return x, out


def test_preact_variant_param_counts_and_trees():
  # Arithmetic check of the PyTorch counts: robust_overfitting's / fast_adversarial's /
  # ELLE's PreActResNet18 11,172,170; kuangliu's (pytorch-cifar models/preact_resnet.py) and
  # GradAlign's, without the final BN, 11,171,146. (11,173,962 is kuangliu's post-activation
  # ResNet18.)
  assert _preact18_params(final_bn=True) == 11_172_170 == _EXPECTED_PARAMS["preact_resnet18"]
  assert _preact18_params(final_bn=False) == 11_171_146
  trees = {n: _abstract_variables(models.get_model(n), (1, 32, 32, 3)) for n in _PREACT_VARIANTS}
  counts = {n: models.count_params(v) for n, v in trees.items()}
  assert counts == {"preact_resnet18": 11_172_170, "preact_resnet18_fast": 11_172_170,
                    "preact_resnet18_gradalign": 11_171_146}
  shapes = {n: jax.tree.map(lambda a: a.shape, v) for n, v in trees.items()}
  assert shapes["preact_resnet18_fast"] == shapes["preact_resnet18"]  # same names and shapes
  without_bn = {c: {k: v for k, v in shapes["preact_resnet18"][c].items() if k != "bn"}
                for c in ("params", "batch_stats")}
  assert shapes["preact_resnet18_gradalign"] == without_bn
  assert shapes["preact_resnet18"]["params"]["bn"] == {"scale": (512,), "bias": (512,)}
  for tree in shapes.values():
    assert tree["params"]["linear"] == {"kernel": (512, 10), "bias": (10,)}  # nn.Linear's bias


@pytest.mark.parametrize("name", sorted(_PREACT_VARIANTS))
@pytest.mark.parametrize("shape", [(2, 28, 28, 1), (2, 8, 8, 3), (2, 32, 32, 3)])
def test_preact_variants_take_small_and_cifar_images(name, shape):
  model = models.get_model(name, num_classes=7)
  variables = _abstract_variables(model, shape)
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(shape)), variables)
  assert out.shape == (2, 7) and out.dtype == jnp.float32


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("shortcut_input", ["activated", "raw"])
def test_preact_block_shortcut_sees_the_variants_input(shortcut_input, train):
  """A projecting block equals the hand-written block of its variant and not of the other."""
  block = models.resnet.PreActBlock(planes=8, stride=2, shortcut_input=shortcut_input)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 4))
  variables = _randomise_batch_norms(block.init(jax.random.key(0), x), jax.random.key(2))
  p, s = variables["params"], variables["batch_stats"]
  a = jax.nn.relu(_hand_bn(x, p["bn1"], s["bn1"], train))
  assert float(jnp.abs(a - x).mean()) > 0.3  # relu(bn1(x)) is far from x
  if train:
    out, _ = block.apply(variables, x, train=True, mutable=["batch_stats"])
  else:
    out = block.apply(variables, x)
  other = {"activated": "raw", "raw": "activated"}[shortcut_input]
  want = _hand_preact_block(p, s, x, 2, shortcut_input, train)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(out - _hand_preact_block(p, s, x, 2, other, train)).max()) > 1e-2


def test_fast_shortcut_depends_on_the_raw_input_where_relu_hides_it():
  """Two inputs with the same relu(bn1(x)): only the raw-input shortcut tells them apart."""
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 4))
  x2 = jnp.where(x < 0, 3.0 * x - 1.0, x)  # other negatives: relu(x2) == relu(x)
  outs = {}
  for shortcut_input in ("activated", "raw"):
    block = models.resnet.PreActBlock(planes=8, stride=2, shortcut_input=shortcut_input)
    variables = block.init(jax.random.key(0), x)  # BN at init, eval mode: bn1(x) = x / sqrt(1 + eps)
    outs[shortcut_input] = (block.apply(variables, x), block.apply(variables, x2), variables)
  out1, out2, _ = outs["activated"]
  np.testing.assert_allclose(out1, out2, rtol=1e-6, atol=1e-6)
  out1, out2, variables = outs["raw"]
  shortcut_change = _hand_conv(x - x2, variables["params"]["shortcut_conv"]["kernel"], 2, 0)
  np.testing.assert_allclose(out1 - out2, shortcut_change, rtol=1e-4, atol=1e-5)
  assert float(jnp.abs(shortcut_change).max()) > 0.1


@pytest.mark.parametrize("name", sorted(_PREACT_VARIANTS))
def test_preact_network_wires_its_variant(preact_variants, name):
  """In the network: each projecting block uses the variant's shortcut; the logits are the linear
  map of the pooled last block, after a BN-ReLU except in GradAlign's (whose tree has no ``bn``)."""
  x, variants = preact_variants
  model, _, variables = variants[name]
  shortcut_input, final_bn, _ = _PREACT_VARIANTS[name]
  logits, state = model.apply(variables, x, capture_intermediates=True)
  inter = state["intermediates"]
  p, s = variables["params"], variables["batch_stats"]
  for stage in (2, 3, 4):
    h_in = inter[f"layer{stage - 1}_1"]["__call__"][0]
    h_out = inter[f"layer{stage}_0"]["__call__"][0]
    blk_p, blk_s = p[f"layer{stage}_0"], s[f"layer{stage}_0"]
    assert "shortcut_conv" in blk_p
    np.testing.assert_allclose(h_out, _hand_preact_block(blk_p, blk_s, h_in, 2, shortcut_input),
                               rtol=1e-4, atol=1e-4)
  assert ("bn" in p) == final_bn and ("bn" in s) == final_bn
  h = inter["layer4_1"]["__call__"][0]
  if final_bn:
    h = jax.nn.relu(_hand_bn(h, p["bn"], s["bn"], train=False))
  want = h.mean(axis=(1, 2)) @ p["linear"]["kernel"] + p["linear"]["bias"]
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
  assert np.all(np.isfinite(logits))


def test_gradalign_variant_has_he_normal_fan_out_init(preact_variants):
  """GradAlign's utils.initialize_weights: conv N(0, 2 / (k k out)), linear N(0, 2 / in), bias 0."""
  _, variants = preact_variants
  _, variables, _ = variants["preact_resnet18_gradalign"]
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]), sep="/")
  kernels_checked = fan_in_rejected = 0
  for path, w in flat.items():
    w = np.asarray(w, np.float64)
    if path.endswith("kernel") and w.ndim == 4:
      kh, kw, c_in, c_out = w.shape
      tol = 5.0 / np.sqrt(2 * w.size)  # 5 standard errors of a sample std (relative)
      std = np.sqrt(np.mean(w ** 2))
      assert abs(std / np.sqrt(2.0 / (kh * kw * c_out)) - 1) < tol, (path, std)
      if c_out != c_in:  # the fans differ (stem, shortcuts, first conv of stages 2-4)
        assert abs(std / np.sqrt(2.0 / (kh * kw * c_in)) - 1) > tol, path
        fan_in_rejected += 1
      kernels_checked += 1
  assert kernels_checked == 1 + 8 * 2 + 3 and fan_in_rejected == 1 + 3 + 3
  big = np.asarray(flat["layer4_1/conv2/kernel"])  # 2.4M draws: not a truncated normal
  assert np.abs(big).max() > 4.0 * big.std()
  w = np.asarray(flat["linear/kernel"], np.float64)
  assert abs(np.sqrt(np.mean(w ** 2)) / np.sqrt(2.0 / 512) - 1) < 5.0 / np.sqrt(2 * w.size)
  assert np.all(np.asarray(flat["linear/bias"]) == 0)
  for path, v in flat.items():
    if path.endswith("scale"):
      assert np.all(np.asarray(v) == 1), path
    elif path.endswith("bias"):
      assert np.all(np.asarray(v) == 0), path
  # The others keep PyTorch's default: U(+-1/sqrt(fan_in)), linear bias U(+-1/sqrt(512)).
  for name in ("preact_resnet18", "preact_resnet18_fast"):
    p = variants[name][1]["params"]
    assert float(jnp.abs(p["conv1"]["kernel"]).max()) <= 1 / np.sqrt(27)
    assert 0 < float(jnp.abs(p["linear"]["bias"]).max()) <= 1 / np.sqrt(512)


def test_preact_rejects_unknown_variant_names():
  x = jnp.zeros((1, 8, 8, 4))
  with pytest.raises(ValueError, match="shortcut_input"):
    jax.eval_shape(models.resnet.PreActBlock(8, 2, shortcut_input="pre").init, jax.random.key(0), x)
  with pytest.raises(ValueError, match="initialization"):
    jax.eval_shape(models.resnet.PreActResNet18(initialization="kaiming").init, jax.random.key(0),
                   jnp.zeros((1, 8, 8, 3)))
