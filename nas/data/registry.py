"""Dataset names -> loaders, and each dataset's default training augmentation.

The CLI and configs refer to datasets by name; this is the one place that maps a name
to a loader, so an unknown name or a missing ``--data-dir`` fails early with a
one-line message instead of deep inside a loader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.data.augment import cutout, random_crop_flip
from nas.data.cifar10 import load_cifar10
from nas.data.digits import load_digits
from nas.data.spec import DataError, DatasetSpec, DatasetSplits

__all__ = [
    "AUGMENT_DEFAULTS",
    "DATASETS",
    "TrainAugment",
    "dataset_names",
    "load_dataset",
    "train_augment",
]

#: name -> loader ``(data_dir, **kw) -> DatasetSplits``.
DATASETS: dict[str, Callable[..., DatasetSplits]] = {
    "digits": load_digits,
    "cifar10": load_cifar10,
}

#: name -> (crop padding, horizontal flip). Digits get a 1-pixel jitter (4 pixels is
#: half of an 8x8 image) and no flip, because a mirrored digit is a different symbol.
AUGMENT_DEFAULTS: dict[str, tuple[int, bool]] = {
    "digits": (1, False),
    "cifar10": (4, True),
}


def dataset_names() -> list[str]:
    """Registered dataset names, sorted (for help text and error messages)."""
    return sorted(DATASETS)


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid datasets: {', '.join(dataset_names())}")


def load_dataset(name: str, data_dir: str | Path | None = None, **kw: Any) -> DatasetSplits:
    """Load dataset ``name`` (``data_dir`` is required for on-disk datasets such as
    ``cifar10``; extra keywords, e.g. ``limit``, go to the loader)."""
    _check_name(name)
    return DATASETS[name](data_dir, **kw)


@dataclass(frozen=True)
class TrainAugment:
    """Random crop (+ optional flip) (+ optional cutout), as an ``Augment`` callable.

    A small frozen dataclass rather than a closure so it has a readable ``repr`` for
    logs and can be pickled with a run's configuration."""

    padding: int
    flip: bool
    cutout_length: int = 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = random_crop_flip(x, self.padding, generator, flip=self.flip)
        if self.cutout_length > 0:
            out = cutout(out, self.cutout_length, generator)
        return out


def train_augment(spec: DatasetSpec, cutout_length: int = 0) -> TrainAugment:
    """Default training augmentation for ``spec``'s dataset: CIFAR-10 gets the standard
    crop (padding 4) + flip, digits a 1-pixel crop without flip; cutout is added only
    when ``cutout_length > 0`` (DARTS retraining uses 16 on CIFAR-10)."""
    _check_name(spec.name)
    if int(cutout_length) < 0:
        raise DataError(f"cutout length must be >= 0, got {cutout_length}")
    if int(cutout_length) > spec.image_size:
        raise DataError(
            f"cutout length {cutout_length} is larger than the {spec.image_size}x"
            f"{spec.image_size} images of dataset '{spec.name}'"
        )
    padding, flip = AUGMENT_DEFAULTS[spec.name]
    return TrainAugment(padding=padding, flip=flip, cutout_length=int(cutout_length))
