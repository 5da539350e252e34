"""Training helpers shared by the search and the retraining loops."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nas.data.batches import Batches
from nas.distributed.context import SINGLE, DataParallel

__all__ = ["cosine_lr", "evaluate", "to_layout"]


def cosine_lr(epoch: int, epochs: int, lr_max: float, lr_min: float) -> float:
    """The LR of epoch `epoch` under CosineAnnealingLR(T_max=epochs), stepped per epoch."""
    return lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def to_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x



@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Batches,
    channels_last: bool = False,
    batch_statistics: bool = False,
    dp: DataParallel = SINGLE,
) -> tuple[float, float]:
    """(loss, accuracy) over every batch, in eval mode (no dropout).

    `batch_statistics=True` normalises with each batch's own statistics and leaves the
    running statistics untouched. The supernet needs it: its running statistics lag far
    behind weights that change every step (after one epoch on digits: 0.10 accuracy with
    running statistics, 0.90 with batch statistics), so they measure the lag, not the
    architecture. Discrete networks are evaluated with running statistics as usual.

    Data parallel, each rank evaluates its slice of every batch and the sums are added
    over the ranks (with batch statistics the slices are normalised on their own).
    """
    was_training = model.training
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    if batch_statistics:
        for m in bns:
            m.train()
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    total_loss, correct, seen = 0.0, 0, 0
    try:
        for x_all, y_all in batches.epoch(0):
            x, y, _ = dp.shard(x_all, y_all)
            out = model(to_layout(x, channels_last))
            logits = out[0] if isinstance(out, tuple) else out
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            seen += y.shape[0]
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    loss_sum, right, images = dp.sum_floats([total_loss, correct, seen])
    return loss_sum / max(images, 1), right / max(images, 1)
