"""Data parallelism on torch.distributed: who this process is, and what ranks share.

`torchrun --nproc_per_node N -m nas search ...` starts N copies of the same command;
each finds its rank in the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) and joins one process group (`from_environment`). From then on
every rank runs the same loop over the same global batches; `DataParallel` is what
differs between one process and many (docs/distributed.md):

- `shard`: each rank keeps its slice of the global batch, and a loss scale that makes
  the mean of the ranks' gradients the gradient of the global batch's mean loss (slices
  may differ by one image on the last batch of an epoch);
- `wrap`: the weight step runs through PyTorch's `DistributedDataParallel`, which
  averages weight gradients in buckets while the backward pass runs and keeps buffers
  (batch-norm running statistics) equal to rank 0's;
- `average`: gradients DDP cannot see (the architecture step takes them with
  `torch.autograd.grad`, which runs no DDP hook) are averaged with one all-reduce;
- `sync_rng`: every rank continues from rank 0's RNG state, so stochastic samplers draw
  the same architecture sample on every rank (the RNG is consumed by the local batch's
  shape, which differs across ranks on an epoch's last batch);
- `from_main`: what touches the file system (creating or reading the run directory, the
  checkpoint) happens on rank 0, whose result, or one-line error, every rank receives;
- `digest` / `check_replicas`: a hash of the replicated state, compared across ranks
  every epoch, so a divergence stops the run instead of corrupting it silently.

One process is the same object with `world == 1`, where every method is a no-op.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from search_spaces.errors import InputError

T = TypeVar("T")

#: environment variables torchrun sets for every worker
RANK_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class ReplicasDiverged(InputError):
    """Ranks hold different model states: data parallelism is broken for this run."""


class DataParallel:
    """This process's place among the ranks of one data-parallel run."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0) -> None:
        self.rank, self.world, self.local_rank = rank, world, local_rank

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes files and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def describe(self) -> str:
        return (f"{self.world} data-parallel processes ({dist.get_backend()})"
                if self.active else "one process")

    # ------------------------------------------------------------------ batches

    def shard(self, x: torch.Tensor, y: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(this rank's contiguous slice of the global batch, its labels, loss scale).

        With each rank's loss the mean over its slice times `scale` = n_rank * world / n,
        the all-reduce mean of the ranks' gradients is exactly the gradient of the mean
        loss over the global batch of n images, whatever the slice sizes."""
        if not self.active:
            return x, y, 1.0
        n = int(y.shape[0])
        if n < self.world:
            raise InputError(f"a batch of {n} image(s) cannot be split over {self.world} "
                             "processes; use a larger --batch-size or fewer processes")
        xs, ys = x.tensor_split(self.world)[self.rank], y.tensor_split(self.world)[self.rank]
        return xs, ys, ys.shape[0] * self.world / n

    def batch_index(self, k: int) -> int:
        """A per-rank index for batch k's seeded randomness (adversarial starts), so the
        ranks' slices do not share one noise pattern; k itself in one process."""
        return k * self.world + self.rank

    # ------------------------------------------------------------------ gradients

    def wrap(self, model: nn.Module, ignore: Sequence[str] = ()) -> nn.Module:
        """`model` inside DistributedDataParallel (the module itself in one process).

        Parameters named in `ignore` (the architecture parameters) take no part in the
        weight step, so DDP must neither wait for their gradients nor broadcast them: the
        architecture step averages those itself (`average`)."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        if ignore:
            DDP._set_params_and_buffers_to_ignore_for_model(model, list(ignore))
        return DDP(model, forward_sync_buffers=True)

    def average(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The mean of each tensor over the ranks (one all-reduce of their concatenation;
        the tensors themselves are unchanged)."""
        if not self.active or not tensors:
            return list(tensors)
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world
        out, start = [], 0
        for t in tensors:
            out.append(flat[start:start + t.numel()].view_as(t))
            start += t.numel()
        return out

    def sum_floats(self, values: Sequence[float]) -> list[float]:
        """Each value summed over the ranks (epoch statistics: loss sums, counts)."""
        if not self.active:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    # ------------------------------------------------------------------ shared state

    def sync_rng(self) -> None:
        """Every rank continues from rank 0's CPU RNG state."""
        if not self.active:
            return
        state = torch.get_rng_state()
        dist.broadcast(state, src=0)
        torch.set_rng_state(state)

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank (pickled between our own processes only)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def from_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 and give every rank its result; a one-line error raised
        there is raised on every rank, so no rank waits for a peer that stopped."""
        if not self.active:
            return fn()
        result: tuple[str, Any] = ("ok", None)
        if self.is_main:
            try:
                result = ("ok", fn())
            except InputError as e:
                result = ("error", str(e))
        kind, value = self.broadcast(result)
        if kind == "error":
            raise InputError(value)
        return value

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (batch-norm running statistics) on every rank.

        DDP copies them before each of its forward passes, but that pass (and the
        architecture step's and the attacks' passes, which run outside DDP) update them
        from the rank's own slice; before the state is compared or saved, rank 0's are
        the run's, as DDP would make them at the next step."""
        if not self.active:
            return
        for b in model.buffers():
            dist.broadcast(b.data, src=0)

    def check_replicas(self, tensors: Iterable[tuple[str, torch.Tensor]], extra: str = ""
                       ) -> str:
        """The digest of the replicated state, after checking that every rank has the
        same one (raises `ReplicasDiverged` naming the ranks and the first tensor that
        differ)."""
        named = [(name, digest([(name, t)])) for name, t in tensors]
        mine = digest([], "".join(d for _, d in named) + extra)
        if not self.active:
            return mine
        every: list[Any] = [None] * self.world
        dist.all_gather_object(every, (mine, named))
        differ = [r for r, (d, _) in enumerate(every) if d != mine]
        if differ:
            theirs = dict(every[differ[0]][1])
            first = next((n for n, d in named if theirs.get(n) != d), "the derived genotype")
            raise ReplicasDiverged(f"data-parallel ranks {differ} hold a different model "
                                   f"from rank {self.rank} (first difference: {first}); "
                                   "stopping rather than continuing with diverged replicas")
        return mine

    def epoch_record(self, model: nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                     extra: str = "") -> dict[str, Any]:
        """End of an epoch: buffers set to rank 0's (`sync_buffers`), then the model's
        state, every optimiser's state and `extra` (a derived genotype) checked to be
        bit-identical on every rank (`check_replicas`); the log record's field."""
        self.sync_buffers(model)
        tensors = [*model.state_dict().items(),
                   *(t for name, opt in optimizers.items() for t in optimizer_tensors(name, opt))]
        digest = self.check_replicas(tensors, extra)
        return {"ranks": self.world, "replicas_identical": True, "digest": digest[:16]}

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def digest(tensors: Iterable[tuple[str, torch.Tensor]], extra: str = "") -> str:
    """SHA-256 of named tensors' exact bytes (and `extra`): equal only if bit-identical."""
    h = hashlib.sha256()
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(extra.encode())
    return h.hexdigest()


def optimizer_tensors(name: str, optimizer: torch.optim.Optimizer
                      ) -> list[tuple[str, torch.Tensor]]:
    """An optimiser's state tensors (momentum, Adam moments, step counts), named, for
    `DataParallel.check_replicas`."""
    out = []
    for i, state in optimizer.state_dict()["state"].items():
        for key, value in sorted(state.items()):
            if isinstance(value, torch.Tensor):
                out.append((f"{name}.{i}.{key}", value))
    return out


#: the single-process context: every method a no-op
SINGLE = DataParallel()


def launched_ranks() -> int:
    """WORLD_SIZE when torchrun (or another launcher with its environment) started us."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InputError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def from_environment(backend: str = "gloo", timeout_s: float = 1800.0) -> DataParallel:
    """Join the process group torchrun described in the environment; `SINGLE` when this
    process was not started as one of several ranks."""
    world = launched_ranks()
    if world <= 1:
        return SINGLE
    missing = [k for k in RANK_ENV if k not in os.environ]
    if missing:
        raise InputError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: start data-"
                         "parallel runs with torchrun (or nas ... --nproc N)")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return DataParallel(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", "0")))


__all__ = ["SINGLE", "DataParallel", "ReplicasDiverged", "digest", "from_environment",
           "launched_ranks", "optimizer_tensors"]
