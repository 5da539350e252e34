"""Training a discrete network from scratch, checkpointed every epoch.

The loop is DARTS `train.py`: per epoch the cosine learning rate and a drop-path
probability that rises linearly from 0 (`drop_path * epoch / epochs`), cross-entropy on
the logits plus `auxiliary_weight` times the auxiliary head's, gradient clipping, SGD.
The same loop runs NAS-Bench-201's recipe with the switches its config sets: Nesterov
momentum, no clipping, no auxiliary head, no drop-path.
The held-out test split is touched once, after the last epoch; nothing during training
looks at it, so the reported test accuracy is not selected on.

A checkpoint after every epoch holds the weights, the optimiser, the RNG (drop-path
masks come from it) and the genotype; batches are a pure function of (seed, epoch), so a
resumed run continues exactly as an uninterrupted one would.

With `adv_train` set (Madry et al., arXiv 1706.06083) every training batch is replaced
by an attack on it against the current weights (`nas.robust.attacks`); its random start
comes from a generator seeded from (seed, epoch, batch), so it too is the same after a
resume, without any state in the checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from nas.data.batches import Batches
from nas.data.registry import train_augment
from nas.data.spec import DatasetSplits
from nas.distributed.context import SINGLE, DataParallel
from nas.layer_state import advance_schedules, weight_decay_groups
from nas.retrain.config import RetrainConfig
from nas.retrain.networks import Arch, build_network
from nas.robust.adversarial_training import AdversarialBatches, training_attack
from nas.run_dir import LOG, RunDir
from nas.training import cosine_lr, evaluate, to_layout
from search_spaces.errors import InputError, first_line

Log = Callable[[str], None]
#: images per batch when evaluating (no gradients, so larger than training batches)
EVAL_BATCH = 256
#: seed of the shuffle that picks the --holdout images: fixed, not the run's seed, so
#: every run that holds out N images is scored on the same ones
HOLDOUT_SEED = 0
#: random stream of the adversarial starts; `Batches` uses 0 (order) and 1 (augmentation)
#: with the same seed, so the perturbations are independent of both
ADVERSARIAL_STREAM = 2


def drop_path_probability(cfg: RetrainConfig, epoch: int) -> float:
    """DARTS `train.py`: `drop_path_prob * epoch / epochs`, set at the start of each epoch."""
    return cfg.drop_path * epoch / cfg.epochs


def check_checkpoint(state: dict[str, Any], genotype: Arch, run: RunDir) -> None:
    """Refuse a checkpoint that is not a retrain of `genotype` (copied in from another run)."""
    where = run.path / "checkpoint.pt"
    if state.get("kind") != "retrain":
        raise InputError(f"checkpoint {where} is not a retrain checkpoint")
    if state.get("genotype") != genotype.to_dict():
        raise InputError(f"checkpoint {where} was trained for a different genotype than "
                         f"{run.path / 'genotype.json'}")


@dataclass
class TrainResult:
    test_loss: float
    test_acc: float
    test_images: int
    seconds_this_session: float
    #: (loss, accuracy, images) on the --holdout split; None without one
    holdout: tuple[float, float, int] | None = None


def check_holdout(n: int, num_train: int) -> None:
    """Refuse a holdout that leaves nothing to train on."""
    if n >= num_train:
        raise InputError(f"--holdout {n} leaves no training images ({num_train} in the "
                         "training split)")


def holdout_split(data: DatasetSplits, n: int) -> tuple[DatasetSplits, DatasetSplits | None]:
    """(training part, held-out part) of the TRAIN split: `n` images picked by a fixed
    shuffle (`HOLDOUT_SEED`) are taken out of training and scored after it, so a choice
    made on their accuracy (a sweep's objective) never looks at the test split."""
    if n == 0:
        return data, None
    check_holdout(n, data.num_train)
    perm = torch.randperm(data.num_train, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    keep, held = perm[:-n].to(data.train_x.device), perm[-n:].to(data.train_x.device)
    train = DatasetSplits(data.spec, data.train_x[keep], data.train_y[keep],
                          data.test_x, data.test_y)
    val = DatasetSplits(data.spec, data.train_x[held], data.train_y[held],
                        data.test_x, data.test_y)
    return train, val


class Retrainer:
    """One retraining run: a network, its optimiser, and where it is in the schedule."""

    def __init__(
        self,
        cfg: RetrainConfig,
        genotype: Arch,
        run: RunDir,
        data: DatasetSplits,
        log: Log = print,
        channels_last: bool = True,
        dp: DataParallel = SINGLE,
    ) -> None:
        self.cfg = cfg
        self.dp = dp
        self.genotype = genotype
        self.run = run
        self.log = log
        self.channels_last = channels_last
        self.spec = data.spec
        data, held = holdout_split(data, cfg.holdout)
        self.holdout_batches = (None if held is None else Batches(
            held.train_x, held.train_y, EVAL_BATCH, shuffle=False, seed=0))
        torch.manual_seed(cfg.seed)
        net = build_network(genotype, cfg, data.spec.in_channels, data.spec.num_classes)
        # torch's stubs for Module.to omit the memory_format keyword it accepts at runtime
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net  # type: ignore[call-overload]
        self.ddp = dp.wrap(self.net)  # the net in the training step (DDP across ranks, or it)
        self.optimizer = torch.optim.SGD(
            weight_decay_groups(self.net, self.net.parameters(), cfg.weight_decay),
            lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov,
        )
        self.train_batches = Batches(
            data.train_x, data.train_y, cfg.batch_size, shuffle=True, seed=cfg.seed,
            augment=train_augment(data.spec, cfg.cutout),
        )
        self.test_batches = Batches(data.test_x, data.test_y, EVAL_BATCH, shuffle=False, seed=0)
        self.num_test = data.num_test
        self.attack = training_attack(cfg, data.spec.pixel_range)
        self.adversarial = (None if self.attack is None else AdversarialBatches(
            self.attack, self.net, data.spec.mean, data.spec.std, cfg.seed, channels_last))
        self.epoch = 0  # next epoch to run

    # ------------------------------------------------------------------ checkpoints

    def _state(self) -> dict[str, Any]:
        return {
            "kind": "retrain",
            "epoch": self.epoch,
            "genotype": self.genotype.to_dict(),
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
        }

    def restore(self, state: dict[str, Any] | None = None) -> None:
        """Continue from the run's checkpoint (`state`, when the caller already loaded it);
        one-line errors for a foreign or bad one."""
        if state is None:
            state = self.run.load_checkpoint()
        where = self.run.path / "checkpoint.pt"
        check_checkpoint(state, self.genotype, self.run)
        try:
            self.net.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
            self.epoch = int(state["epoch"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            first = first_line(e)
            raise InputError(f"checkpoint {where} does not match this network: {first}") from None
        self.run.reconcile(state)
        if self.epoch >= self.cfg.epochs:
            self.log(f"resuming {self.run.path}: all {self.cfg.epochs} epochs trained; "
                     "evaluating and writing the report")
        else:
            self.log(f"resuming {self.run.path} at epoch {self.epoch + 1}/{self.cfg.epochs}")

    # ------------------------------------------------------------------ running

    def run_all(self, stop_after: int | None = None) -> TrainResult | None:
        """Train the remaining epochs, then evaluate on the test split once.

        `stop_after` ends the session after that many epochs without evaluating (as a
        kill would); it exists so tests can check that resuming changes nothing.
        """
        started = time.perf_counter()
        done = 0
        if self.epoch == 0 and not self.run.has_checkpoint():
            # a checkpoint before the first epoch: a kill during it resumes exactly, and
            # logs without any checkpoint can only mean a lost file (RunDir.reconcile)
            self.run.save_checkpoint(self._state())
        while self.epoch < self.cfg.epochs:
            if stop_after is not None and done >= stop_after:
                return None
            self._run_epoch()
            self.epoch += 1
            done += 1
            self.run.save_checkpoint(self._state())
        holdout = None
        if self.holdout_batches is not None:
            loss, acc = evaluate(self.net, self.holdout_batches, self.channels_last, dp=self.dp)
            holdout = (loss, acc, self.holdout_batches.num_samples)
        test_loss, test_acc = evaluate(self.net, self.test_batches, self.channels_last,
                                       dp=self.dp)
        return TrainResult(test_loss, test_acc, self.num_test, time.perf_counter() - started,
                           holdout)

    def _run_epoch(self) -> None:
        cfg, net = self.cfg, self.net
        t0 = time.perf_counter()
        lr = cosine_lr(self.epoch, cfg.epochs, cfg.lr, cfg.lr_min)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        drop_prob = drop_path_probability(cfg, self.epoch)
        net.drop_path_prob = drop_prob
        advance_schedules(net, self.epoch, cfg.epochs)  # per-epoch layer schedules (EDE)
        net.train()
        loss_sum, correct, seen = 0.0, 0, 0
        params = [p for p in net.parameters() if p.requires_grad]
        desc = f"epoch {self.epoch + 1}/{cfg.epochs}"
        bar = tqdm(self.train_batches.epoch(self.epoch), total=len(self.train_batches),
                   desc=desc, leave=False, disable=None if self.dp.is_main else True)
        for k, (x_all, y_all) in enumerate(bar):
            # data parallel: this rank's slice of the global batch (docs/distributed.md)
            x, y, scale = self.dp.shard(x_all, y_all)
            if self.attack is not None:
                x = self._adversarial(x, y, self.dp.batch_index(k))
            logits, logits_aux = self.ddp(to_layout(x, self.channels_last))
            loss = F.cross_entropy(logits, y)
            total = loss
            if logits_aux is not None:
                total = loss + cfg.auxiliary_weight * F.cross_entropy(logits_aux, y)
            self.optimizer.zero_grad(set_to_none=True)
            (total if scale == 1.0 else total * scale).backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            self.optimizer.step()
            loss_sum += float(loss.detach()) * y.shape[0]
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += y.shape[0]
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        loss_sum, right, images = self.dp.sum_floats([loss_sum, correct, seen])
        correct, seen = int(right), int(images)
        if not torch.isfinite(torch.tensor(loss_sum)):
            raise InputError(
                f"training diverged at epoch {self.epoch + 1} (loss is not finite); "
                "try a lower --lr"
            )
        record: dict[str, Any] = {
            "epoch": self.epoch,
            "lr": lr,
            "drop_path_prob": drop_prob,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "seconds": time.perf_counter() - t0,
        }
        if self.attack is not None:  # train loss / accuracy are on the attacked batches
            record["adv_train"] = self.attack.name
        if self.dp.active:
            record["data_parallel"] = self.dp.epoch_record(self.net,
                                                           {"optimizer": self.optimizer})
        self.run.append(LOG, record)
        self.log(
            f"epoch {self.epoch + 1}/{cfg.epochs}: lr {lr:.4f} drop_path {drop_prob:.3f} "
            f"train_loss {record['train_loss']:.3f} train_acc {record['train_acc']:.3f} "
            f"({record['seconds']:.1f}s)"
        )

    def _adversarial(self, x: torch.Tensor, y: torch.Tensor, batch: int) -> torch.Tensor:
        """Batch `batch` of this epoch replaced by the attack on it (normalised in and out).

        The attack runs the network in eval mode (the attack's default), then the network
        is back in train mode for the update. Eval mode because the attack's forward
        passes are not training steps: in train mode each would move the BatchNorm running
        statistics towards the attack's intermediate images and draw drop-path masks from
        the global RNG (changing every later mask), and the perturbation would chase the
        random drop-path noise instead of the network being trained. The price is running
        statistics that lag the weights early on; Madry et al. attack in train mode, many
        PyTorch reproductions (e.g. TRADES) in eval mode.
        """
        assert self.adversarial is not None
        return self.adversarial(x, y, self.epoch, ADVERSARIAL_STREAM, batch)
