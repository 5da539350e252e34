"""Search strategies: what a strategy adds to the shared loop of stages and epochs.

The driver (`nas.search.driver.Search`) runs stages of epochs on any space; a strategy
says what happens per epoch (P-DARTS' skip dropout), between stages (op pruning is the
same for every strategy with more than one stage) and at the end (how the final
architecture is derived). A space lists the strategies it supports
(`SearchSpace.strategies`), so `--space darts --strategy pdarts` is checked against it
rather than branched on (docs/methods.md#p-darts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from nas.search.config import activation_options
from nas.search.pdarts import skip_dropout_rate
from search_spaces.base import EdgeOps, SearchSpace
from search_spaces.errors import InputError
from search_spaces.space import DEFAULT_SPACE

if TYPE_CHECKING:
    from nas.search.config import SearchConfig


@dataclass(frozen=True)
class Strategy:
    """DARTS: one stage, the derived architecture is the argmax of the final weights."""

    name: str = "darts"
    title: str = "DARTS"
    #: several stages with op pruning between them (their sizes are checked)
    staged: bool = False
    #: whether --second-order (the unrolled architecture gradient) applies
    second_order: bool = True

    def run_name(self, space: str) -> str:
        """The name default run directories carry."""
        return space

    def skip_dropout(self, cfg: SearchConfig, stage: int, epoch: int) -> float | None:
        """The dropout rate on skip-connects this epoch, or None for no dropout."""
        return None

    def final(self, space: SearchSpace[Any], weights: dict[str, torch.Tensor],
              edge_ops: EdgeOps, cfg: SearchConfig) -> tuple[Any, dict[str, Any]]:
        """(final architecture, extra summary fields)."""
        return space.derive(weights, edge_ops, **activation_options(cfg)), {}


@dataclass(frozen=True)
class PdartsStrategy(Strategy):
    """P-DARTS: stages with skip dropout; the final cell keeps at most `max_skips`
    skip-connects (the space derives under that limit)."""

    name: str = "pdarts"
    title: str = "P-DARTS"
    staged: bool = True
    second_order: bool = False

    def run_name(self, space: str) -> str:
        # the README's `--space pdarts` runs keep their short name
        return self.name if space == DEFAULT_SPACE else f"{space}-{self.name}"

    def skip_dropout(self, cfg: SearchConfig, stage: int, epoch: int) -> float | None:
        return skip_dropout_rate(cfg.skip_dropout[stage], epoch, cfg.epochs,
                                 cfg.arch_start_epoch, cfg.skip_dropout_decay)

    def final(self, space: SearchSpace[Any], weights: dict[str, torch.Tensor],
              edge_ops: EdgeOps, cfg: SearchConfig) -> tuple[Any, dict[str, Any]]:
        arch, by_limit = space.derive_limiting_skips(weights, edge_ops, cfg.max_skips,
                                                     **activation_options(cfg))
        return arch, {"genotypes_by_max_skips": by_limit}


STRATEGIES: dict[str, Strategy] = {"darts": Strategy(), "pdarts": PdartsStrategy()}


def register_strategy(strategy: Strategy) -> Strategy:
    if strategy.name in STRATEGIES:
        raise ValueError(f"search strategy {strategy.name!r} is already registered")
    STRATEGIES[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise InputError(f"unknown search strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
