"""The search driver: stages of epochs over a supernet, checkpointed every epoch.

DARTS is one stage over the full op set. P-DARTS is several stages; each builds a new,
deeper supernet (fresh weights and architecture parameters) over the ops that survived
the previous stage's pruning. What differs between strategies is in
`nas.search.strategy`; what differs between spaces is behind `SearchSpace`. A checkpoint
after every epoch holds everything the next epoch needs (weights, both optimisers, RNG,
position of the validation stream, surviving ops), so a resumed run continues exactly
where an uninterrupted one would be.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nas.data.batches import Batches, cycle
from nas.data.registry import load_dataset, train_augment
from nas.data.spec import DatasetSplits
from nas.distributed.context import SINGLE, DataParallel
from nas.layer_state import advance_schedules, weight_decay_groups
from nas.robust.adversarial_training import AdversarialBatches, Perturb, training_attack
from nas.run_dir import ARCH_LOG, LOG, RunDir
from nas.search.architect import Architect, ArchLossTerm
from nas.search.config import (
    SearchConfig,
    activation_options,
    sampler_options,
    searched_space,
)
from nas.search.loop import arch_entropy, train_epoch
from nas.search.pdarts import prune_edge_ops
from nas.search.strategy import get_strategy
from nas.training import cosine_lr, evaluate
from search_spaces.arch_samplers import make_sampler
from search_spaces.errors import InputError, first_line
from search_spaces.supernet import ARCH_PREFIXES

Log = Callable[[str], None]
EdgeOps = dict[str, Any]
#: builds a stage's extra architecture-loss term from that stage's op sets
TermFactory = Callable[[EdgeOps], ArchLossTerm]
#: extra per-epoch log fields from (soft weights, op sets, derived genotype)
Probe = Callable[[dict[str, torch.Tensor], EdgeOps, Any], dict[str, Any]]


#: random stream of a search's adversarial starts (`Batches` uses 0 and 1 with the seed)
SEARCH_ADVERSARIAL_STREAM = 2


class ModelTermFactory(ABC):
    """A term factory that needs the stage's supernet itself, not only its op sets (the
    Lipschitz term reads the sampler's distribution and every operation's weights).

    P-DARTS builds a new supernet per stage, so `build` is called with each stage's model
    (and again on resume, before the checkpoint's state is loaded into it). The driver
    also tells it when an epoch starts and asks for fields for the epoch's log record:
    checkpoints are written at epoch boundaries, so whatever the factory keeps between
    steps (kept power-iteration vectors) and resets in `start_epoch` cannot make a resumed
    search differ from an uninterrupted one."""

    @abstractmethod
    def build(self, edge_ops: EdgeOps, model: Any) -> ArchLossTerm:
        """The term for this stage's supernet."""

    def start_epoch(self, epoch: int) -> None:  # noqa: B027 - optional, nothing by default
        """Epoch `epoch` (0-based, within the stage) is about to run."""

    def epoch_fields(self) -> dict[str, Any]:
        """Fields for the record of the epoch that just ran."""
        return {}


Terms = Sequence[TermFactory | ModelTermFactory]


@dataclass
class SearchResult:
    genotype: Any  # an architecture of the run's space
    run_dir: RunDir
    summary: dict[str, Any]



def _stage_shape(cfg: SearchConfig, stage: int) -> tuple[int, int]:
    return cfg.init_channels + cfg.add_width[stage], cfg.layers + cfg.add_layers[stage]


def _probs(model: Any) -> dict[str, list[list[float]]]:
    return {k: w.detach().cpu().tolist() for k, w in model.arch_weights().items()}


class Search:
    """Holds the state of one search run between epochs."""

    def __init__(
        self,
        cfg: SearchConfig,
        run: RunDir,
        terms: Terms = (),
        log: Log = print,
        channels_last: bool = True,
        data: DatasetSplits | None = None,
        probe: Probe | None = None,
        dp: DataParallel = SINGLE,
    ) -> None:
        self.cfg = cfg
        self.dp = dp
        self.run = run
        self.terms = list(terms)
        self.probe = probe
        self.log = log
        self.channels_last = channels_last
        self.space = searched_space(cfg)
        self.strategy = get_strategy(cfg.strategy)
        if data is None:
            data = load_search_data(cfg)
        self.spec = data.spec
        self.attack = training_attack(cfg, data.spec.pixel_range, eval_mode=False)
        x_a, y_a, x_b, y_b = data.search_split(cfg.train_portion, seed=cfg.seed)
        self.train_batches = Batches(
            x_a, y_a, cfg.batch_size, shuffle=True, seed=cfg.seed,
            augment=train_augment(data.spec),
        )
        self.val_batches = Batches(x_b, y_b, cfg.batch_size, shuffle=True, seed=cfg.seed + 1)
        self.eval_batches = Batches(x_b, y_b, cfg.batch_size, shuffle=False, seed=0)
        self.stage = 0
        self.epoch = 0  # next epoch to run within the stage
        self.edge_ops = self.space.full_edge_ops()
        self.val_stream = cycle(self.val_batches)
        self.stage_genotypes: list[dict[str, Any]] = []
        self.model: Any = None
        self.net: torch.nn.Module | None = None  # the model in the weight step (DDP or it)

    # ------------------------------------------------------------------ building

    def _build_stage(self) -> None:
        cfg = self.cfg
        C, layers = _stage_shape(cfg, self.stage)
        # Any: every space's supernet has the methods the loop and Architect use
        # (weight_parameters, arch_parameters, arch_weights, set_skip_dropout)
        model: Any = self.space.build_supernet(
            C, layers, self.spec.num_classes, self.spec.in_channels, self.edge_ops,
            **activation_options(cfg),
        )
        if cfg.sampler != "softmax":
            model.set_arch_sampler(make_sampler(cfg.sampler, **sampler_options(cfg)))
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        arch_names = [n for n, _ in model.named_parameters()
                      if n.startswith(ARCH_PREFIXES)]
        self.net = self.dp.wrap(model, ignore=arch_names)
        # layers that keep their own parameters out of weight decay (DSQ's quantizers)
        # are on the weight side of the bilevel split, in a group without it
        self.weight_optimizer = torch.optim.SGD(
            weight_decay_groups(model, model.weight_parameters(), cfg.weight_decay),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
        self.architect = Architect(
            model,
            lr=cfg.arch_lr,
            betas=tuple(cfg.arch_betas),  # type: ignore[arg-type]
            weight_decay=cfg.arch_weight_decay,
            weight_momentum=cfg.momentum,
            weight_weight_decay=cfg.weight_decay,
            second_order=cfg.second_order,
            grad_clip=cfg.arch_grad_clip,
            terms=[make.build(self.edge_ops, model) if isinstance(make, ModelTermFactory)
                   else make(self.edge_ops) for make in self.terms],
            average=self.dp.average,
        )

    # ------------------------------------------------------------------ checkpoints

    def _state(self) -> dict[str, Any]:
        assert self.model is not None
        return {
            "stage": self.stage,
            "epoch": self.epoch,
            "edge_ops": self.edge_ops,
            "model": self.model.state_dict(),
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "arch_optimizer": self.architect.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "val_stream": list(self.val_stream.state()),
            "stage_genotypes": self.stage_genotypes,
        }

    def restore(self, state: dict[str, Any] | None = None) -> None:
        """Continue from the checkpoint (`state`, when the caller already loaded it)."""
        if state is None:
            state = self.run.load_checkpoint()
        try:
            self.stage = int(state["stage"])
            self.epoch = int(state["epoch"])
            self.edge_ops = state["edge_ops"]
            self.stage_genotypes = state["stage_genotypes"]
            self._build_stage()
            assert self.model is not None
            self.model.load_state_dict(state["model"])
            self.weight_optimizer.load_state_dict(state["weight_optimizer"])
            self.architect.optimizer.load_state_dict(state["arch_optimizer"])
            torch.set_rng_state(state["rng"])
            self.val_stream = cycle(self.val_batches, *state["val_stream"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            first = first_line(e)
            raise InputError(
                f"checkpoint {self.run.path} does not match this search: {first}"
            ) from None
        self.run.reconcile(state)
        if self.stage >= self.cfg.num_stages - 1 and self.epoch >= self.cfg.epochs:
            self.log(f"resuming {self.run.path}: all epochs trained; deriving the genotype")
        else:
            self.log(f"resuming {self.run.path} at stage {self.stage + 1}, epoch "
                     f"{self.epoch + 1}/{self.cfg.epochs}")

    # ------------------------------------------------------------------ running

    def run_all(self) -> SearchResult:
        cfg = self.cfg
        started = time.perf_counter()
        if self.model is None:
            torch.manual_seed(cfg.seed)
            self._build_stage()
            # a checkpoint before the first epoch: a kill during it resumes exactly, and
            # logs without any checkpoint can only mean a lost file (RunDir.reconcile)
            self.run.save_checkpoint(self._state())
        while self.stage < cfg.num_stages:
            while self.epoch < cfg.epochs:
                self._run_epoch()
                self.epoch += 1
                self.run.save_checkpoint(self._state())
            if self.stage == cfg.num_stages - 1:
                break
            self._end_stage()
        result = self._finish(time.perf_counter() - started)
        return result

    def _run_epoch(self) -> None:
        cfg, model = self.cfg, self.model
        assert model is not None
        t0 = time.perf_counter()
        lr = cosine_lr(self.epoch, cfg.epochs, cfg.lr, cfg.lr_min)
        # per-epoch layer schedules (IR-Net's EDE) over the whole run, stages included
        advance_schedules(model, self._global_epoch(), cfg.num_stages * cfg.epochs)
        rate = self.strategy.skip_dropout(cfg, self.stage, self.epoch)
        if rate is not None:
            model.set_skip_dropout(rate)
        p = rate or 0.0
        model_terms = [t for t in self.terms if isinstance(t, ModelTermFactory)]
        for term in model_terms:
            term.start_epoch(self.epoch)
        train_arch = self.epoch >= cfg.arch_start_epoch
        stage_tag = f"stage {self.stage + 1}/{cfg.num_stages} " if cfg.num_stages > 1 else ""
        stats = train_epoch(
            model, self.train_batches, self._global_epoch(), self.val_stream,
            self.weight_optimizer, self.architect, lr, train_arch, cfg.grad_clip,
            self.channels_last, desc=f"{stage_tag}epoch {self.epoch + 1}/{cfg.epochs}",
            perturb=self._perturb(model), dp=self.dp, net=self.net,
        )
        record: dict[str, Any] = {
            "stage": self.stage,
            "epoch": self.epoch,
            "lr": lr,
            "skip_dropout": p,
            "arch_updates": train_arch,
            **stats.as_dict(),
        }
        if self.attack is not None:  # losses and accuracy are on attacked batches
            record["adv_train"] = self.attack.name
        last = self.epoch == cfg.epochs - 1
        if cfg.eval_every and ((self.epoch + 1) % cfg.eval_every == 0 or last):
            record["val_loss"], record["val_acc"] = evaluate(
                model, self.eval_batches, self.channels_last, batch_statistics=True,
                dp=self.dp,
            )
        weights = model.arch_weights()
        record["entropy"] = arch_entropy(weights)
        genotype = self.space.derive(weights, self.edge_ops, **activation_options(cfg))
        record["genotype"] = self.space.to_json(genotype)
        if self.dp.active:
            record["data_parallel"] = self.dp.epoch_record(
                self.model, {"weight_optimizer": self.weight_optimizer,
                             "arch_optimizer": self.architect.optimizer},
                extra=json.dumps(record["genotype"], sort_keys=True))
        for term in model_terms:
            record.update(term.epoch_fields())
        if self.probe is not None:
            record.update(self.probe(weights, self.edge_ops, genotype))
        record["seconds"] = time.perf_counter() - t0
        self.run.append(LOG, record)
        self.run.append(
            ARCH_LOG,
            {"stage": self.stage, "epoch": self.epoch, "edge_ops": self._logged_choices(),
             "weights": _probs(model)},
        )
        acc = f" val_acc {record['val_acc']:.3f}" if "val_acc" in record else ""
        self.log(
            f"{stage_tag}epoch {self.epoch + 1}/{cfg.epochs}: train_loss "
            f"{record['train_loss']:.3f} train_acc {record['train_acc']:.3f}{acc} "
            f"entropy {record['entropy']['normal']:.3f} ({record['seconds']:.1f}s)"
        )

    def _logged_choices(self) -> dict[str, Any]:
        """What each column of the logged weights is: the ops of every edge and, in a
        factorised search, the activations under the activation keys (so the report's
        heat maps show beta like alpha)."""
        choices: dict[str, Any] = dict(self.edge_ops)
        if self.cfg.activations:
            from search_spaces.supernet import activation_key

            for cell, edges in self.edge_ops.items():
                choices[activation_key(cell)] = [list(self.cfg.activations)] * len(edges)
        return choices

    def _perturb(self, model: Any) -> Perturb | None:
        """This epoch's adversarial batches against the current supernet, or None.

        The attack runs the supernet in the mode it is in (train: batch statistics), not
        in eval mode as retraining does: a supernet's running statistics are not what it
        is evaluated with (`evaluate(..., batch_statistics=True)`), so an eval-mode attack
        would attack a network the search never uses. Its forward passes use the expected
        architecture weights (`expected_arch_weights`): the attack is on the mean network,
        not on each step's sample."""
        if self.attack is None:
            return None
        batches = AdversarialBatches(self.attack, model, self.spec.mean, self.spec.std,
                                     self.cfg.seed, self.channels_last)
        epoch = self._global_epoch()
        return lambda x, y, k: batches(x, y, epoch, SEARCH_ADVERSARIAL_STREAM, k)

    def _global_epoch(self) -> int:
        """A distinct data epoch per (stage, epoch), so stages do not replay batches."""
        return self.stage * self.cfg.epochs + self.epoch

    def _end_stage(self) -> None:
        """P-DARTS: prune each edge to the next stage's size and build a deeper supernet."""
        cfg, model = self.cfg, self.model
        assert model is not None
        keep = cfg.num_to_keep[self.stage]
        probs = model.arch_weights()
        self.stage_genotypes.append(
            {"stage": self.stage,
             "genotype": self.space.to_json(self.space.derive(
                 probs, self.edge_ops, **activation_options(cfg)))}
        )
        self.edge_ops = {
            k: prune_edge_ops(probs[k].detach().cpu().numpy(), self.edge_ops[k], keep, False)
            for k in self.space.cell_types
        }
        self.log(f"stage {self.stage + 1} done: kept {keep} ops per edge")
        self.stage += 1
        self.epoch = 0
        self._build_stage()
        self.run.save_checkpoint(self._state())

    def _finish(self, seconds: float) -> SearchResult:
        cfg, model = self.cfg, self.model
        assert model is not None
        weights = model.arch_weights()
        summary: dict[str, Any] = {"strategy": cfg.strategy, "seconds_this_session": seconds}
        genotype, extra = self.strategy.final(self.space, weights, self.edge_ops, cfg)
        if not self.dp.is_main:  # rank 0 writes the results; the genotype is the same
            return SearchResult(genotype, self.run, summary)
        if self.dp.active:
            summary["data_parallel"] = {"ranks": self.dp.world}
        summary.update(extra)
        self.space.save(genotype, self.run.path / "genotype.json")
        records = self.run.read_jsonl(LOG)
        final = records[-1] if records else {}
        if self.probe is not None:
            summary["latency"] = self.probe(weights, self.edge_ops, genotype)
        summary.update(
            {
                "genotype": self.space.to_json(genotype),
                "genotype_literal": self.space.format(genotype),
                "final_val_acc": final.get("val_acc"),
                "final_train_acc": final.get("train_acc"),
                "epochs_logged": len(records),
                "hardware": cfg.hardware,
                "stage_genotypes": self.stage_genotypes,
            }
        )
        self.run.write_json("summary.json", summary)
        return SearchResult(genotype, self.run, summary)


def load_search_data(cfg: SearchConfig) -> DatasetSplits:
    """The dataset of a search; load it before writing anything, so bad data fails early."""
    return load_dataset(cfg.dataset, cfg.data_dir, limit=cfg.data_limit)


def run_search(
    cfg: SearchConfig,
    run: RunDir,
    terms: Terms = (),
    resume: bool = False,
    log: Log = print,
    data: DatasetSplits | None = None,
    probe: Probe | None = None,
    state: dict[str, Any] | None = None,
    dp: DataParallel = SINGLE,
) -> SearchResult:
    search = Search(cfg, run, terms, log, data=data, probe=probe, dp=dp)
    if resume:
        search.restore(state)
    return search.run_all()
