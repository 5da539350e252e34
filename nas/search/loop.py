"""One epoch of bilevel search and the evaluation pass: shared by DARTS and P-DARTS."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from nas.data.batches import Batches
from nas.distributed.context import SINGLE, DataParallel
from nas.robust.adversarial_training import Perturb
from nas.search.architect import Architect
from nas.training import to_layout
from search_spaces.supernet import SuperNet


@dataclass
class EpochStats:
    loss: float = 0.0
    correct: int = 0
    seen: int = 0
    arch_loss: float = 0.0
    arch_steps: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.seen, 1)

    def as_dict(self) -> dict[str, float]:
        out = {"train_loss": self.loss / max(self.seen, 1), "train_acc": self.accuracy}
        if self.arch_steps:
            out["arch_loss"] = self.arch_loss / self.arch_steps
            out.update({k: v / self.arch_steps for k, v in self.extra.items()})
        return out


def train_epoch(
    model: SuperNet,
    batches: Batches,
    epoch: int,
    val_stream: Iterator[tuple[torch.Tensor, torch.Tensor]],
    weight_optimizer: torch.optim.Optimizer,
    architect: Architect,
    lr: float,
    train_arch: bool,
    grad_clip: float,
    channels_last: bool,
    desc: str = "",
    perturb: Perturb | None = None,
    dp: DataParallel = SINGLE,
    net: torch.nn.Module | None = None,
) -> EpochStats:
    """Alternate an architecture step on a validation batch and a weight step (DARTS order).

    With `perturb` (adversarial training) both steps see attacked batches: the weights
    train on adversarial examples and the architecture is chosen by its adversarial
    validation loss (`perturb(x, y, 2k)` for the k-th training batch, `(xv, yv, 2k + 1)`
    for its validation batch, so every attack has its own seeded random start).

    Data parallel (`dp` over several ranks, `net` the supernet inside
    DistributedDataParallel): every rank draws the same global batches and keeps its
    slice (`DataParallel.shard`), weight gradients are averaged by `net`'s backward and
    architecture gradients by the architect, and each step starts from rank 0's RNG state,
    so a stochastic sampler draws one architecture sample for all ranks. The statistics
    returned are over the global batches."""
    model.train()
    net = model if net is None else net
    for group in weight_optimizer.param_groups:
        group["lr"] = lr
    weight_params = model.weight_parameters()
    stats = EpochStats()
    bar = tqdm(batches.epoch(epoch), total=len(batches), desc=desc, leave=False,
               disable=None if dp.is_main else True)
    for step, (x, y) in enumerate(bar):
        dp.sync_rng()
        x, y, scale = dp.shard(x, y)
        index = dp.batch_index(step)
        if perturb is not None:
            x = perturb(x, y, 2 * index)
        x = to_layout(x, channels_last)
        if train_arch:
            xv, yv, val_scale = dp.shard(*next(val_stream))
            if perturb is not None:
                xv = perturb(xv, yv, 2 * index + 1)
            arch = architect.step(x, y, to_layout(xv, channels_last), yv, lr, weight_optimizer,
                                  scales=(scale, val_scale))
            stats.arch_loss += arch.pop("arch_loss")
            stats.arch_steps += 1
            for k, v in arch.items():
                stats.extra[k] = stats.extra.get(k, 0.0) + v
        weight_optimizer.zero_grad(set_to_none=True)
        # Architecture weights are constants in the weight step: no alpha gradients.
        arch_weights = {k: w.detach() for k, w in model.sample_arch_weights().items()}
        logits = net(x, arch_weights)
        loss = F.cross_entropy(logits, y)
        (loss if scale == 1.0 else loss * scale).backward()
        torch.nn.utils.clip_grad_norm_(weight_params, grad_clip)
        weight_optimizer.step()
        stats.loss += float(loss.detach()) * y.shape[0]
        stats.correct += int((logits.argmax(1) == y).sum())
        stats.seen += y.shape[0]
        bar.set_postfix(loss=f"{stats.loss / stats.seen:.3f}", acc=f"{stats.accuracy:.3f}")
    return _global_stats(stats, dp)


def _global_stats(stats: EpochStats, dp: DataParallel) -> EpochStats:
    """The ranks' statistics combined: sums over the global batches; the architecture
    losses (means over each rank's slice) averaged over the ranks."""
    if not dp.active:
        return stats
    keys = sorted(stats.extra)
    summed = dp.sum_floats([stats.loss, stats.correct, stats.seen, stats.arch_loss,
                            *(stats.extra[k] for k in keys)])
    loss, correct, seen, arch_loss, *extra = summed
    return EpochStats(loss, int(correct), int(seen), arch_loss / dp.world, stats.arch_steps,
                      {k: v / dp.world for k, v in zip(keys, extra, strict=True)})


def arch_entropy(weights: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean per-edge entropy of the op distribution, per cell type (nats)."""
    out = {}
    for k, w in weights.items():
        p = w.detach().clamp_min(1e-12)
        out[k] = float(-(p * p.log()).sum(-1).mean())
    return out
