"""The official-AutoAttack comparison runs the same network on both sides: the small_cnn weights,
converted to TRADES' PyTorch SmallCNN (launch/benchmark_torch.py), give the same logits."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import models
from robust_jax.benchmarking import autoattack_official

torch = pytest.importorskip("torch")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _torch_smallcnn():
  spec = importlib.util.spec_from_file_location(
      "benchmark_torch", os.path.join(ROOT, "launch", "benchmark_torch.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.SmallCNN()


def test_smallcnn_state_dict_gives_the_same_logits():
  model = models.get_model("small_cnn")
  x = jax.random.uniform(jax.random.key(0), (5, 28, 28, 1))
  params = jax.jit(model.init)(jax.random.key(1), x)["params"]
  # The last layer is zero-initialised: give it weights so that the logits are informative.
  params = jax.tree.map(lambda a: a, params)
  params["fc3"]["kernel"] = jax.random.normal(jax.random.key(2), params["fc3"]["kernel"].shape)
  params["fc3"]["bias"] = jax.random.normal(jax.random.key(3), params["fc3"]["bias"].shape)
  ours = np.asarray(model.apply({"params": params}, x))
  net = _torch_smallcnn()
  net.load_state_dict({k: torch.from_numpy(v) for k, v in
                       autoattack_official.smallcnn_state_dict(params).items()})
  net.eval()
  with torch.no_grad():
    theirs = net(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())).numpy()
  assert np.abs(ours).max() > 0.1
  np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)
