"""Datasets, splits, the resumable and host-sharded batch iterators, and CIFAR augmentation."""

import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds

from robust_jax import data
from robust_jax.data import augment, digits, pipeline, splits, tfds_source


@pytest.fixture(scope="module")
def digits_ds():
  return data.load_dataset("digits")


def _mock(num_examples):
  return tfds.testing.mock_data(
      num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE)


def _toy(n=50, shape=(6, 5, 3), dtype=np.uint8, seed=0):
  rng = np.random.default_rng(seed)
  if dtype == np.uint8:
    image = rng.integers(0, 256, (n,) + shape, dtype=np.uint8)
  else:
    image = rng.random((n,) + shape, dtype=np.float32)
  return {"image": image, "label": np.arange(n, dtype=np.int32)}   # label = index: easy to trace


# ----------------------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_ranges(digits_ds):
  ds = digits_ds
  assert ds.name == "digits" and ds.num_classes == 10 and ds.image_shape == (8, 8, 1)
  for part in (ds.train, ds.validation, ds.test):
    assert part["image"].dtype == np.float32 and part["image"].shape[1:] == (8, 8, 1)
    assert part["label"].dtype == np.int32 and part["label"].shape == part["image"].shape[:1]
    assert part["image"].min() >= 0.0 and part["image"].max() <= 1.0
    assert set(np.unique(part["label"])) == set(range(10))
  assert part["image"].max() == 1.0   # values / 16 reach 1


def test_digits_split_sizes_disjoint_and_complete():
  images, labels = digits.load_digits_arrays()
  assert images.shape == (1797, 8, 8, 1)
  parts = digits.load_digits_splits()
  sizes = {k: len(v["label"]) for k, v in parts.items()}
  assert sizes == {"train": 1294, "validation": 144, "test": 359}
  # Identify examples by their pixels: the parts are disjoint and together make the whole set
  # (the digits have a few exact duplicate images, so compare multisets).
  def keys(x):
    return sorted(map(bytes, (x * 16).astype(np.uint8).reshape(len(x), -1)))
  together = keys(np.concatenate([p["image"] for p in parts.values()]))
  assert together == keys(images)


def test_digits_split_is_stratified_and_deterministic():
  a = digits.load_digits_splits(split_seed=0)
  b = digits.load_digits_splits(split_seed=0)
  c = digits.load_digits_splits(split_seed=1)
  for k in a:
    np.testing.assert_array_equal(a[k]["image"], b[k]["image"])
    np.testing.assert_array_equal(a[k]["label"], b[k]["label"])
  assert not np.array_equal(a["test"]["image"], c["test"]["image"])
  _, labels = digits.load_digits_arrays()
  overall = np.bincount(labels, minlength=10) / len(labels)
  for part in a.values():
    frac = np.bincount(part["label"], minlength=10) / len(part["label"])
    assert np.abs(frac - overall).max() < 0.01


def test_stratified_split_exact_size_and_bad_input():
  labels = np.repeat(np.arange(3), [10, 7, 4])
  kept, held = splits.stratified_split(labels, 0.3, seed=5)
  assert len(held) == round(0.3 * 21) and len(kept) + len(held) == 21
  assert not set(kept) & set(held)
  for c, n in zip(range(3), [10, 7, 4]):
    assert abs(np.sum(labels[held] == c) - 0.3 * n) < 1
  assert len(splits.stratified_split(labels, 0.0, seed=0)[1]) == 0
  with pytest.raises(ValueError, match="fraction must be in"):
    splits.stratified_split(labels, 1.0, seed=0)
  with pytest.raises(ValueError, match="seed"):
    splits.stratified_split(labels, 0.1, seed=-1)


def test_load_dataset_bad_input():
  with pytest.raises(ValueError, match=r"dataset name must be one of .*cifar10.*digits"):
    data.load_dataset("imagenet")
  with pytest.raises(ValueError, match="validation_fraction"):
    data.load_dataset("digits", validation_fraction=1.5)
  with pytest.raises(ValueError, match="split_seed"):
    data.load_dataset("digits", split_seed=-3)
  assert set(data.DATASETS) == {"digits", "mnist5k", "mnist", "cifar10", "cifar100",
                                "svhn_cropped"}


# ------------------------------------------------------------------------------------------- tfds


@pytest.mark.parametrize("name,shape,classes", [
    ("mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10), ("cifar100", (32, 32, 3), 100)])
def test_tfds_mock(tmp_path, name, shape, classes):
  with _mock(40):
    ds = data.load_dataset(name, data_dir=str(tmp_path), validation_fraction=0.25, split_seed=3)
  assert ds.name == name and ds.image_shape == shape and ds.num_classes == classes
  assert len(ds.train["label"]) == 30 and len(ds.validation["label"]) == 10
  assert len(ds.test["label"]) == 40   # the test split is untouched
  for part in (ds.train, ds.validation, ds.test):
    assert part["image"].dtype == np.uint8 and part["image"].shape[1:] == shape
    assert part["label"].dtype == np.int32
    assert part["label"].min() >= 0 and part["label"].max() < classes
  # The validation split is carved out of the training split, deterministically.
  with _mock(40):
    full = tfds_source.read_source(tfds.data_source(name, split="train"), shape)
  pixels = lambda x: {bytes(v) for v in x.reshape(len(x), -1)}
  assert pixels(ds.train["image"]) | pixels(ds.validation["image"]) == pixels(full["image"])
  assert not pixels(ds.train["image"]) & pixels(ds.validation["image"])
  with _mock(40):
    again = data.load_dataset(name, data_dir=str(tmp_path), validation_fraction=0.25, split_seed=3)
  np.testing.assert_array_equal(again.validation["image"], ds.validation["image"])
  # Batches are float32 in [0, 1].
  batch = next(data.train_batches(ds.train, batch_size=8, seed=0, epoch=0, augment="crop_flip"))
  assert batch["image"].dtype == np.float32 and batch["image"].shape == (8,) + shape
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0


def test_tfds_missing_dataset_error(tmp_path):
  with pytest.raises(tfds_source.DatasetNotFoundError) as info:
    data.load_dataset("cifar10", data_dir=str(tmp_path))
  msg = str(info.value)
  assert "'cifar10'" in msg and str(tmp_path) in msg
  assert "download_and_prepare" in msg and "array_record" in msg and "--config.data_dir" in msg
  assert isinstance(info.value, FileNotFoundError)


# ---------------------------------------------------------------------------------------- batches


def test_steps_per_epoch():
  assert data.steps_per_epoch(100, 32) == 3
  assert data.steps_per_epoch(96, 32) == 3
  with pytest.raises(ValueError, match=r"batch_size \(64\) must be <="):
    data.steps_per_epoch(10, 64)
  with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
    data.steps_per_epoch(10, 0)


@pytest.mark.parametrize("augment_name", ["none", "crop_flip"])
def test_train_order_is_a_pure_function_of_seed_and_epoch(augment_name):
  arrays = _toy()
  run = lambda **kw: list(data.train_batches(arrays, batch_size=8, augment=augment_name, **kw))
  a, b = run(seed=1, epoch=2), run(seed=1, epoch=2)
  assert len(a) == 50 // 8
  chex.assert_trees_all_equal(a, b)
  labels = lambda bs: np.concatenate([x["label"] for x in bs])
  seen = labels(a)
  assert len(set(seen)) == len(seen) == 48           # no repeats, the remainder (2) dropped
  assert not np.array_equal(seen, labels(run(seed=1, epoch=3)))
  assert not np.array_equal(seen, labels(run(seed=2, epoch=2)))
  for x in a:
    assert x["image"].dtype == np.float32 and x["label"].dtype == np.int32
    assert x["image"].shape == (8, 6, 5, 3) and 0 <= x["image"].min() and x["image"].max() <= 1
  if augment_name == "none":   # the images are those of the labels
    for x in a:
      np.testing.assert_array_equal(x["image"], arrays["image"][x["label"]] / np.float32(255))


@pytest.mark.parametrize("start_step", [0, 1, 3, 6])
def test_resume_equals_tail_of_the_full_epoch(start_step):
  arrays = _toy()
  kw = dict(batch_size=8, seed=4, epoch=1, augment="crop_flip")
  full = list(data.train_batches(arrays, **kw))
  tail = list(data.train_batches(arrays, start_step=start_step, **kw))
  assert len(tail) == len(full) - start_step
  chex.assert_trees_all_equal(full[start_step:], tail)


@pytest.mark.parametrize("augment_name", ["none", "crop_flip"])
@pytest.mark.parametrize("process_count", [2, 4])
def test_host_sharding_concatenates_to_the_global_batch(augment_name, process_count):
  arrays = _toy(dtype=np.float32)
  kw = dict(batch_size=8, seed=0, epoch=5, augment=augment_name, start_step=2)
  whole = list(data.train_batches(arrays, **kw))
  shards = [list(data.train_batches(arrays, process_index=p, process_count=process_count, **kw))
            for p in range(process_count)]
  for step, global_batch in enumerate(whole):
    parts = [s[step] for s in shards]
    assert all(p["label"].shape == (8 // process_count,) for p in parts)
    for k in ("image", "label"):
      np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), global_batch[k])


def test_eval_batches_pad_and_mask():
  arrays = _toy(n=21, dtype=np.float32)
  batches = list(data.eval_batches(arrays, batch_size=8))
  assert [int(b["mask"].sum()) for b in batches] == [8, 8, 5]
  for b in batches:
    assert b["image"].shape == (8, 6, 5, 3) and b["mask"].dtype == bool
  last = batches[-1]
  np.testing.assert_array_equal(last["mask"], np.arange(8) < 5)
  assert not last["image"][5:].any() and not last["label"][5:].any()
  real = np.concatenate([b["label"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(real, np.arange(21))     # in order, every example once
  np.testing.assert_array_equal(
      np.concatenate([b["image"][b["mask"]] for b in batches]), arrays["image"])
  # Across hosts: the slices of each global batch concatenate to it, padding included.
  shards = [list(data.eval_batches(arrays, batch_size=8, process_index=p, process_count=2))
            for p in range(2)]
  for i, b in enumerate(batches):
    for k in ("image", "label", "mask"):
      np.testing.assert_array_equal(np.concatenate([s[i][k] for s in shards]), b[k])


def test_eval_batches_uint8_become_float():
  arrays = _toy(n=4)
  (b,) = data.eval_batches(arrays, batch_size=4)
  np.testing.assert_allclose(b["image"], arrays["image"] / 255.0, rtol=1e-6)


def test_batch_bad_input():
  arrays = _toy()
  kw = dict(batch_size=8, seed=0, epoch=0)
  bad = [
      (dict(augment="mixup"), r"augment must be one of \['none', 'crop_flip'\]"),
      (dict(start_step=7), r"start_step must be in \[0, 6\]"),
      (dict(seed=-1), "seed must be an int >= 0"),
      (dict(epoch=1.5), "epoch must be an int >= 0"),
      (dict(process_count=3), r"batch_size \(8\) must be divisible by process_count \(3\)"),
      (dict(process_index=2, process_count=2), r"process_index must be in \[0, 2\)"),
  ]
  for extra, match in bad:
    with pytest.raises(ValueError, match=match):
      data.train_batches(arrays, **{**kw, **extra})
  with pytest.raises(ValueError, match="split_arrays must be a mapping"):
    data.train_batches(arrays["image"], **kw)
  with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
    data.eval_batches(arrays, batch_size=0)


# ----------------------------------------------------------------------------------- augmentation


def test_crop_flip_identity_flip_and_shift():
  rng = np.random.default_rng(0)
  x = rng.integers(1, 256, (3, 6, 5, 2), dtype=np.uint8)   # no zeros: padding is recognisable
  pad = 4
  ident = augment.CropFlipParams(np.full((3, 2), pad), np.zeros(3, bool))
  np.testing.assert_array_equal(augment.apply_crop_flip(x, ident, pad=pad), x)
  flip = augment.CropFlipParams(np.full((3, 2), pad), np.ones(3, bool))
  np.testing.assert_array_equal(augment.apply_crop_flip(x, flip, pad=pad), x[:, :, ::-1])
  # Offset (pad + 1, pad - 2): the window moves down 1 and left 2; zeros enter at the left.
  shift = augment.CropFlipParams(np.tile([pad + 1, pad - 2], (3, 1)), np.zeros(3, bool))
  out = augment.apply_crop_flip(x, shift, pad=pad)
  np.testing.assert_array_equal(out[:, :-1, 2:], x[:, 1:, :-2])
  assert not out[:, -1].any() and not out[:, :, :2].any()
  # Crop then flip: the flipped shifted window is the mirrored shifted window.
  both = augment.CropFlipParams(shift.offsets, np.ones(3, bool))
  np.testing.assert_array_equal(augment.apply_crop_flip(x, both, pad=pad), out[:, :, ::-1])
  # Corner offset (0, 0): only the bottom-right (h - pad) x (w - pad) block of the image survives.
  corner = augment.CropFlipParams(np.zeros((3, 2), int), np.zeros(3, bool))
  out = augment.apply_crop_flip(x, corner, pad=pad)
  np.testing.assert_array_equal(out[:, pad:, pad:], x[:, :6 - pad, :5 - pad])
  assert not out[:, :pad].any() and not out[:, :, :pad].any()


def test_random_crop_flip_per_example_shape_range_and_distribution():
  rng = np.random.default_rng(1)
  x = rng.random((400, 8, 8, 3), dtype=np.float32)
  out = augment.random_crop_flip(x, np.random.default_rng(2))
  assert out.shape == x.shape and out.dtype == x.dtype
  assert out.min() >= 0.0 and out.max() <= 1.0
  params = augment.sample_crop_flip(np.random.default_rng(2), 400)
  np.testing.assert_array_equal(augment.apply_crop_flip(x, params), out)   # same generator state
  assert params.offsets.min() == 0 and params.offsets.max() == 8
  assert 0.4 < params.flips.mean() < 0.6
  assert len({tuple(o) for o in params.offsets}) > 40            # per example, not per batch
  unchanged = np.array([np.array_equal(a, b) for a, b in zip(out, x)])
  identity = np.all(params.offsets == 4, axis=1) & ~params.flips   # probability 1/162 each
  np.testing.assert_array_equal(unchanged, identity)


def test_augment_bad_input():
  x = np.zeros((2, 4, 4, 1), np.float32)
  with pytest.raises(ValueError, match="pad must be an int >= 0"):
    augment.random_crop_flip(x, np.random.default_rng(0), pad=-1)
  with pytest.raises(ValueError, match=r"offsets must be in \[0, 8\]"):
    augment.apply_crop_flip(x, augment.CropFlipParams(np.full((2, 2), 9), np.zeros(2, bool)))
  with pytest.raises(ValueError, match=r"images must be \[N, H, W, C\]"):
    augment.random_crop_flip(x[0], np.random.default_rng(0))


def test_pipeline_to_float():
  np.testing.assert_array_equal(pipeline.to_float(np.array([0, 255], np.uint8)), [0.0, 1.0])
  assert pipeline.to_float(np.array([0.5])).dtype == np.float32
