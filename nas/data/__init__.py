"""In-memory datasets, reproducible batching and vectorised augmentation.

Datasets are loaded whole as normalised float32 ``(N, C, H, W)`` tensors with int64
labels (see :class:`DatasetSplits`); the embedded default is scikit-learn's 8x8 digits,
CIFAR-10 is read from its standard python-version directory with a restricted
unpickler.
"""

from nas.data.augment import crop_flip, cutout, cutout_at, random_crop_flip
from nas.data.batches import Augment, BatchCycle, Batches, cycle, derive_seed
from nas.data.cifar10 import load_cifar10
from nas.data.digits import load_digits
from nas.data.registry import (
    DATASETS,
    TrainAugment,
    dataset_names,
    load_dataset,
    train_augment,
)
from nas.data.spec import DataError, DatasetSpec, DatasetSplits, normalise, validate_arrays

__all__ = [
    "DATASETS",
    "Augment",
    "BatchCycle",
    "Batches",
    "DataError",
    "DatasetSpec",
    "DatasetSplits",
    "TrainAugment",
    "crop_flip",
    "cutout",
    "cutout_at",
    "cycle",
    "dataset_names",
    "derive_seed",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "normalise",
    "random_crop_flip",
    "train_augment",
    "validate_arrays",
]
