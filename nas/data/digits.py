"""The embedded default dataset: scikit-learn's 8x8 handwritten digits.

It ships inside scikit-learn (no download, no data directory), is tiny (1797 images)
and still a real 10-class image task, so every command works out of the box and
tests/smoke runs finish in seconds. Images stay 8x8: upscaling would only cost compute
without adding information.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from nas.data.spec import DataError, DatasetSpec, DatasetSplits, normalise, validate_arrays

__all__ = ["DIGITS_TEST_FRACTION", "DIGITS_SPLIT_SEED", "load_digits"]

#: Fraction of the images held out as the fixed test split.
DIGITS_TEST_FRACTION = 0.2
#: Seed of the held-out split; deliberately independent of any user seed so that the
#: test images never depend on (and never leak into) a search or training run.
DIGITS_SPLIT_SEED = 0

_WHERE = "sklearn.datasets.load_digits"


@functools.lru_cache(maxsize=1)
def _raw_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels scaled to [0, 1] and the fixed stratified train/test split (cached: the
    arrays are read-only and callers get fresh tensors)."""
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    x = (np.asarray(bunch.data, dtype=np.float64) / 16.0).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    arrays = (x_tr, y_tr, x_te, y_te)
    for a in arrays:
        a.setflags(write=False)
    return arrays


def load_digits(data_dir: str | None = None, limit: int | None = None) -> DatasetSplits:
    """Load the digits dataset as normalised ``(N, 1, 8, 8)`` float32 tensors.

    ``data_dir`` is accepted (and ignored) so every loader has the same signature.
    ``limit`` keeps only the first ``limit`` train images (for smoke runs); the test
    split is always the full fixed 20%. Normalisation uses the mean/std of the full
    train part, so the constants do not change with ``limit``.
    """
    del data_dir  # embedded dataset
    x_tr, y_tr, x_te, y_te = _raw_split()
    mean = float(x_tr.mean())
    std = float(x_tr.std())
    if limit is not None:
        if int(limit) <= 0:
            raise DataError(f"{_WHERE}: limit must be a positive number of images, got {limit}")
        x_tr, y_tr = x_tr[: int(limit)], y_tr[: int(limit)]
    spec = DatasetSpec(
        name="digits",
        in_channels=1,
        image_size=8,
        num_classes=10,
        mean=(mean,),
        std=(std,),
        class_names=tuple(str(i) for i in range(10)),
        pixel_range=(0.0, 1.0),  # sklearn's 0..16 values divided by 16 in _raw_split
    )
    train_x = normalise(torch.tensor(x_tr), spec.mean, spec.std)
    test_x = normalise(torch.tensor(x_te), spec.mean, spec.std)
    train_y = torch.tensor(y_tr, dtype=torch.int64)
    test_y = torch.tensor(y_te, dtype=torch.int64)
    validate_arrays(train_x, train_y, spec.num_classes, f"{_WHERE} (train part)")
    validate_arrays(test_x, test_y, spec.num_classes, f"{_WHERE} (test part)")
    return DatasetSplits(spec, train_x, train_y, test_x, test_y)
