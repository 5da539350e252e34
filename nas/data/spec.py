"""What a dataset is once loaded: a spec plus in-memory train/test tensors.

Every dataset in this project is small enough to live entirely in memory (and on the
accelerator) as normalised float32 images ``(N, C, H, W)`` with int64 labels. Keeping
them as plain tensors (no ``DataLoader`` workers) makes batching and augmentation
vectorised, cheap and exactly reproducible from a seed, which the resumable search
and retraining loops rely on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from search_spaces.errors import InputError

__all__ = [
    "DataError",
    "DatasetSpec",
    "DatasetSplits",
    "normalise",
    "validate_arrays",
]


class DataError(InputError):
    """A dataset that cannot be found, read or trusted; reported as one line."""


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about a dataset that model building and augmentation need.

    ``mean``/``std`` are per channel and describe the normalisation already applied
    to the stored tensors, so un-normalising (e.g. for inspection) is possible.
    ``class_names`` is optional metadata (CIFAR-10 reads it from ``batches.meta``).
    ``pixel_range`` is ``(low, high)`` of the pixel values BEFORE normalisation: what an
    adversarial attack must stay inside (an image outside it is not a valid input) and
    the scale its perturbation budget is measured in (`nas.robust.attacks`).
    """

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = field(default=(), compare=False)
    pixel_range: tuple[float, float] = (0.0, 1.0)


@dataclass
class DatasetSplits:
    """A loaded dataset: the train part (used by search and retraining) and a held-out
    test part (used only for the final report, never for search decisions)."""

    spec: DatasetSpec
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def num_train(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_x.shape[0])

    def to(self, device: torch.device | str) -> DatasetSplits:
        """Copy of the splits with every tensor moved to ``device`` (done once, up front,
        so batching never pays a host-to-device copy per step)."""
        return DatasetSplits(
            spec=self.spec,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
        )

    def search_split(
        self, train_portion: float = 0.5, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Split the TRAIN part into (weight-training, architecture-validation) halves.

        The bilevel search optimises weights on one half and architecture parameters on
        the other; the test part is never touched so the final test accuracy stays an
        unbiased estimate. Like DARTS, the first ``floor(train_portion * N)`` entries of
        a shuffled index go to the weight half; the shuffle is a pure function of
        ``seed`` so a resumed or repeated search sees exactly the same halves.

        Returns ``(x_a, y_a, x_b, y_b)`` on the device of ``train_x``.
        """
        if not (isinstance(train_portion, (int, float)) and 0.0 < train_portion < 1.0):
            raise DataError(
                f"train portion must be strictly between 0 and 1, got {train_portion!r}"
            )
        n = self.num_train
        split = int(math.floor(train_portion * n))
        if split == 0 or split == n:
            raise DataError(
                f"train portion {train_portion} of {n} training images leaves an empty "
                f"half for the search split of dataset '{self.spec.name}'"
            )
        gen = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(n, generator=gen).to(self.train_x.device)
        idx_a, idx_b = perm[:split], perm[split:]
        return (
            self.train_x[idx_a],
            self.train_y[idx_a],
            self.train_x[idx_b],
            self.train_y[idx_b],
        )


def normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` on a float ``(N, C, H, W)`` tensor, in float32.

    Shared by the loaders so every dataset is normalised the same way."""
    x = x.to(torch.float32)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def validate_arrays(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    num_classes: int,
    where: str,
) -> None:
    """Refuse images/labels that would silently poison training.

    Checks: images are ``(N, C, H, W)`` with N > 0, labels are a 1-D integer vector
    of the same length, every image value is finite (NaN/inf would turn the loss into
    NaN many steps later, far from the cause), and labels lie in ``[0, num_classes)``.
    ``where`` (usually a file path) is named in the one-line error.
    """
    xt = torch.as_tensor(x)
    yt = torch.as_tensor(y)
    if xt.dim() != 4:
        raise DataError(f"{where}: images must be (N, C, H, W), got shape {tuple(xt.shape)}")
    if yt.dim() != 1:
        raise DataError(f"{where}: labels must be 1-D, got shape {tuple(yt.shape)}")
    if xt.shape[0] != yt.shape[0]:
        raise DataError(f"{where}: {xt.shape[0]} images but {yt.shape[0]} labels")
    if xt.shape[0] == 0:
        raise DataError(f"{where}: no images")
    if yt.dtype.is_floating_point or yt.dtype.is_complex or yt.dtype == torch.bool:
        raise DataError(f"{where}: labels must be integers, got dtype {yt.dtype}")
    if xt.dtype.is_floating_point or xt.dtype.is_complex:
        bad = int((~torch.isfinite(xt)).sum().item())
        if bad:
            raise DataError(f"{where}: {bad} non-finite image values (NaN/inf) out of {xt.numel()}")
    lo, hi = int(yt.min().item()), int(yt.max().item())
    if lo < 0 or hi >= num_classes:
        bad = int(((yt < 0) | (yt >= num_classes)).sum().item())
        raise DataError(f"{where}: {bad} labels outside [0, {num_classes}) (min {lo}, max {hi})")
