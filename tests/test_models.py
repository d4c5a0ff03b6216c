"""Tests of robust_jax.models: parameter counts, shapes, BatchNorm modes, the custom-VJP convolution.

The expected parameter counts are those of the PyTorch reference classes (``sum(p.numel() for p in
model.parameters())``, measured once with PyTorch 2.13), minus the parameters that a reference builds
but never uses (``sub_block1`` of the TRADES WideResNet); :func:`_wrn_params` re-derives the
WideResNet numbers by arithmetic. Big models are only traced (``jax.eval_shape``), never materialised.
"""

import doctest

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import models
from robust_jax.models import layers
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


def test_docstring_examples():
  failures, _ = doctest.testmod(models, verbose=False)
  assert failures == 0


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
      return jnp.sum(jnp.tanh(layers.conv2d(xx, w, 2, ((1, 1), (1, 1)), custom_vjp=custom)))

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
  assert 3 * 3 * 4 > layers.PATCHES_MAX_DEPTH

  def loss(ww, xx, custom):
    return jnp.sum(jnp.tanh(layers.conv2d(xx, ww, stride, 1, custom_vjp=custom)))

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
    jax.jvp(lambda ww: layers.conv2d(x, ww), (w,), (v,))


def test_second_derivative_graph_has_only_forward_convolutions():
  """GradAlign's double backprop reaches XLA as plain forward convolutions (no batch-contracting or
  ``01oi`` forms, which XLA's CPU backend compiles as naive loops)."""
  x = jnp.zeros((2, 6, 6, 4))
  w = jnp.zeros((3, 3, 4, 4))

  def labels(custom):
    def input_grad_norm(ww):
      gx = jax.grad(lambda xx: jnp.sum(jnp.tanh(
          layers.conv2d(xx, ww, 1, "VALID", custom_vjp=custom))))(x)
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
  pads = layers.resolve_padding(padding, x.shape[1:3], (3, 3), (stride, stride))
  ref = lambda xx, ww: jax.lax.conv_general_dilated(
      xx, ww, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ours = lambda xx, ww: layers.patches_conv2d(xx, ww, (stride, stride), pads)
  y_ref, vjp_ref = jax.vjp(ref, x, w)
  y, vjp = jax.vjp(ours, x, w)
  cot = jax.random.normal(jax.random.key(2), y_ref.shape)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for g, g_ref in zip(vjp(cot), vjp_ref(cot)):
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-5)
  # conv2d takes this path for shallow kernels only, and then forward mode works as well.
  assert (3 * 3 * c_in <= layers.PATCHES_MAX_DEPTH) == (c_in < 4)
  if c_in < 4:
    v = jax.random.normal(jax.random.key(3), w.shape)
    tangent = jax.jvp(lambda ww: layers.conv2d(x, ww, stride, padding), (w,), (v,))[1]
    np.testing.assert_allclose(tangent, ref(x, v), rtol=1e-5, atol=1e-5)


def test_conv_rejects_bad_inputs():
  with pytest.raises(ValueError):
    layers.conv2d(jnp.zeros((4, 4, 3)), jnp.zeros((3, 3, 3, 2)))
  with pytest.raises(ValueError):
    layers.conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 2)))
  with pytest.raises(ValueError):
    layers.conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 3, 2)), padding="CIRCULAR")


def test_input_grad_pads_keep_the_input_size():
  for n, k, s, pads in [(32, 3, 2, (1, 1)), (32, 1, 2, (0, 0)), (7, 3, 2, (1, 1)), (8, 4, 1, (0, 0))]:
    m = (n + sum(pads) - k) // s + 1
    lo, hi = layers.input_grad_pads((n, n), (k, k), (s, s), (pads, pads))[0]
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
    ours = jax.vjp(layers.max_pool_2x2, xx)
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
  y, vjp = jax.vjp(layers.relu_max_pool_2x2, x)
  y_ref, vjp_ref = jax.vjp(ref, x)
  np.testing.assert_array_equal(y, y_ref)
  np.testing.assert_array_equal(vjp(cot)[0], vjp_ref(cot)[0])


def test_max_pool_2x2_rejects_odd_maps():
  with pytest.raises(ValueError, match="even"):
    layers.max_pool_2x2(jnp.zeros((1, 7, 8, 2)))


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
    loss = lambda xx: jnp.sum(jnp.tanh(layers.conv2d(xx, kernel, 1, "VALID")))
    body = lambda c: (c[0] + 1, c[1] + jnp.sign(jax.grad(loss)(c[1])))
    return jax.lax.while_loop(lambda c: c[0] < 3, body, (0, x0))[1]

  hlo = jax.jit(run).lower(w, x).compile().as_text()
  labels = [line.split("dim_labels=")[1].split(",")[0] for line in hlo.splitlines()
            if " convolution(" in line]
  assert len(labels) == 2 and all(lab == "b01f_01io->b01f" for lab in labels), labels
