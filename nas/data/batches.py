"""Reproducible mini-batches over in-memory tensors.

Search and retraining checkpoint at epoch (or batch) boundaries. For a resumed run to
be bit-for-bit the same run, the batch order and the augmentation randomness of an
epoch must not depend on how many batches were drawn before it in this process. So
nothing here carries RNG state across epochs: epoch ``e``'s permutation and batch
``k``'s augmentation each come from a fresh generator seeded from ``(seed, e)`` /
``(seed, e, k)``.

Random numbers are drawn with CPU generators (then moved to the data's device), so the
batches are also the same whether the tensors live on the CPU or an accelerator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from nas.data.spec import DataError

__all__ = ["Augment", "BatchCycle", "Batches", "cycle", "derive_seed"]

#: An augmentation: ``(images, generator) -> images`` (see :mod:`nas.data.augment`).
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

_ORDER_STREAM = 0
_AUGMENT_STREAM = 1


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integer parts (numpy ``SeedSequence``), so nearby
    ``(seed, epoch)`` pairs give unrelated streams. Negative parts are taken mod 2**64."""
    entropy = [int(p) % (1 << 64) for p in parts]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


class Batches:
    """Iterate over ``(x, y)`` mini-batches of in-memory tensors, epoch by epoch.

    ``x``/``y`` are used as given (move them to the device once, beforehand); each batch
    is gathered by index on that device. With ``shuffle`` each epoch has its own
    permutation; ``augment(x_batch, generator)``, if given, is applied per batch.
    ``len(batches)`` is the number of batches per epoch.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int,
        augment: Augment | None = None,
        drop_last: bool = False,
    ) -> None:
        if x.shape[0] != y.shape[0]:
            raise DataError(f"batches: {x.shape[0]} images but {y.shape[0]} labels")
        if int(batch_size) < 1:
            raise DataError(f"batch size must be a positive integer, got {batch_size}")
        self.x = x
        self.y = y
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.augment = augment
        self.drop_last = bool(drop_last)

    @property
    def num_samples(self) -> int:
        return int(self.x.shape[0])

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self, epoch: int) -> torch.Tensor:
        """Sample indices of ``epoch`` in visiting order (on the data's device)."""
        n = self.num_samples
        if not self.shuffle:
            return torch.arange(n, device=self.x.device)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, _ORDER_STREAM))
        return torch.randperm(n, generator=gen).to(self.x.device)

    def epoch(
        self, epoch: int, start_batch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``epoch``, a pure function of ``(seed, epoch)``.

        ``start_batch`` skips the first batches without computing them, for resuming
        mid-epoch; batch ``k`` is identical either way.
        """
        if not 0 <= int(start_batch) <= len(self):
            raise DataError(f"start batch {start_batch} outside [0, {len(self)}] for this epoch")
        return self._iter(int(epoch), int(start_batch))

    def _iter(self, epoch: int, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(epoch)
        for k in range(start_batch, len(self)):
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]
            xb, yb = self.x[idx], self.y[idx]
            if self.augment is not None:
                gen = torch.Generator().manual_seed(
                    derive_seed(self.seed, epoch, _AUGMENT_STREAM, k)
                )
                xb = self.augment(xb, gen)
            yield xb, yb

    def __repr__(self) -> str:
        return (
            f"Batches(n={self.num_samples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, augment={self.augment!r}, "
            f"drop_last={self.drop_last})"
        )


class BatchCycle(Iterator[tuple[torch.Tensor, torch.Tensor]]):
    """Endless stream over :class:`Batches`: epoch ``start_epoch``, then the next, ...

    Used for the architecture step, which draws one validation batch per weight step:
    keeping one stream (as P-DARTS does) visits every validation sample, whereas
    ``next(iter(loader))`` every step would restart the epoch each time. ``epoch`` and
    ``batch`` give the position of the next batch, to save in a checkpoint and pass
    back to :func:`cycle` on resume.
    """

    def __init__(self, batches: Batches, start_epoch: int = 0, start_batch: int = 0) -> None:
        if len(batches) == 0:
            raise DataError(
                f"cannot cycle over zero batches ({batches.num_samples} samples, "
                f"batch size {batches.batch_size}, drop_last={batches.drop_last})"
            )
        self.batches = batches
        self.epoch = int(start_epoch)
        self.batch = int(start_batch)
        if self.batch == len(batches):
            self.epoch, self.batch = self.epoch + 1, 0
        self._it = batches.epoch(self.epoch, self.batch)

    def __iter__(self) -> BatchCycle:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        item = next(self._it)  # never exhausted: we roll over right after the last batch
        self.batch += 1
        if self.batch == len(self.batches):
            self.epoch, self.batch = self.epoch + 1, 0
            self._it = self.batches.epoch(self.epoch)
        return item

    def state(self) -> tuple[int, int]:
        """``(epoch, batch)`` of the next batch this stream will yield."""
        return self.epoch, self.batch


def cycle(batches: Batches, start_epoch: int = 0, start_batch: int = 0) -> BatchCycle:
    """Endless batch stream starting at ``(start_epoch, start_batch)``; see
    :class:`BatchCycle`."""
    return BatchCycle(batches, start_epoch, start_batch)
