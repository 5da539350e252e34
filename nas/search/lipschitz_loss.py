"""The Lipschitz confidence term of the architecture step (`nas search --lipschitz-budget`;
docs/methods.md, "Using the Lipschitz term in a search").

lambda * max(0, q_p - ln B): q_p the `confidence`-quantile of the log of the network's
Lipschitz bound under the log-normal sampler's distribution
(`nas.robust.supernet_lipschitz`), B the budget. Zero while P(bound <= B) >= confidence;
otherwise its gradient moves the distribution (mu, sigma, U) towards smaller and less
spread mixtures.
The operation constants are measured on the live supernet and detached, so the term
steers the architecture only.

Only a stochastic, un-normalised sampler has such a distribution: `--sampler lognormal`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from nas.robust.lipschitz import NoLipschitzRuleError, confidence_penalty
from nas.robust.supernet_lipschitz import (
    LipschitzSummary,
    SupernetLipschitz,
    UnsupportedSupernetError,
)
from nas.search.architect import ArchLossTerm, ArchWeights
from nas.search.driver import EdgeOps, ModelTermFactory
from search_spaces.arch_samplers import make_sampler
from search_spaces.base import SearchSpace
from search_spaces.errors import InputError, first_line

#: the record fields a search with the term logs per epoch
LOG_FIELDS = ("lipschitz_log_mean", "lipschitz_log_std", "lipschitz_median",
              "lipschitz_exceed_prob")


class LipschitzTermFactory(ModelTermFactory):
    """Builds the term for each stage's supernet and reports the network log-normal.

    Between architecture steps the term keeps only power-iteration vectors (in its
    `SupernetLipschitz`); `start_epoch` drops them, so every epoch starts from the same
    seeded vectors whether the process ran the epochs before it or resumed from the
    checkpoint written after them, and a resumed search logs exactly the values an
    uninterrupted one does. The cost is `init_iters` iterations once per epoch.

    `log` receives one line after the first epoch of each stage: the network's median
    bound and the budget's exceed probability, the scale a budget is chosen on. Not at
    the start: a new supernet's batch norms have running variances of 1, so its bound is
    not yet that of the network being trained (it typically rises by orders of magnitude
    as they settle); after an epoch they have seen the data."""

    def __init__(self, budget: float, input_shape: Sequence[int], confidence: float = 0.9,
                 weight: float = 1.0, log: Callable[[str], None] | None = None) -> None:
        self.budget = float(budget)
        self.confidence = float(confidence)
        self.weight = float(weight)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.log = log
        self.lipschitz: SupernetLipschitz | None = None
        self._epoch = 0

    def build(self, edge_ops: EdgeOps, model: Any) -> ArchLossTerm:
        lipschitz = SupernetLipschitz(model, self.input_shape)
        self.lipschitz = lipschitz

        def fn(weights: ArchWeights) -> torch.Tensor:
            # the sampled (normalised) weights are not what is bounded: the distribution is
            net = lipschitz.network_lognormal()
            return self.weight * confidence_penalty(net, self.budget, self.confidence)

        return ArchLossTerm("lipschitz_penalty", fn)

    def _current(self) -> SupernetLipschitz:
        if self.lipschitz is None:
            raise RuntimeError("the Lipschitz term has not been built for a supernet yet")
        return self.lipschitz

    def start_epoch(self, epoch: int) -> None:
        self._current().reset()
        self._epoch = epoch

    def epoch_fields(self) -> dict[str, Any]:
        s = self._current().summary(self.budget, self.confidence)
        if self._epoch == 0 and self.log is not None:
            self.log(describe(s, self.budget, self.confidence))
        return dict(zip(LOG_FIELDS, (s.log_mean, s.log_std, s.median,
                                     s.exceed_probability), strict=True))


def describe(summary: LipschitzSummary, budget: float, confidence: float) -> str:
    """The line after a stage's first epoch: the scale of the bound, and where the budget
    sits on it."""
    return (f"Lipschitz term after the first epoch: the supernet's bound has median "
            f"{summary.median:.4g} and {confidence:.0%} quantile {summary.quantile:.4g} "
            f"(log-mean {summary.log_mean:.3f}, log-std {summary.log_std:.3f}); budget "
            f"{budget:.4g}, P(bound > budget) = {summary.exceed_probability:.3f}; every "
            "epoch's figures are in log.jsonl")


def check_lipschitz_space(space: SearchSpace[Any], activations: Sequence[str],
                          input_shape: Sequence[int]) -> None:
    """A one-line error unless every part of `space`'s supernet (over its op sets, with
    `activations`) has a Lipschitz rule: checked on a small supernet of it (2 channels,
    3 cells, one power iteration), so a search never stops at its first architecture
    step for want of one."""
    options = {"activations": tuple(activations)} if activations else {}
    try:
        with torch.random.fork_rng(devices=[]):  # building draws weights: not the search's
            model: Any = space.build_supernet(2, 3, 2, int(input_shape[0]), None, **options)
        model.set_arch_sampler(make_sampler("lognormal"))
        SupernetLipschitz(model, input_shape, init_iters=1).constants()
    except UnsupportedSupernetError as e:
        raise InputError(f"--lipschitz-budget on the {space.name} space: {first_line(e)}"
                         ) from None
    except NoLipschitzRuleError as e:
        raise InputError(f"--lipschitz-budget: {first_line(e)}") from None


def lipschitz_term_factory(budget: float, input_shape: Sequence[int], confidence: float = 0.9,
                           weight: float = 1.0, log: Callable[[str], None] | None = None
                           ) -> LipschitzTermFactory:
    """The factory `nas search` hands the driver (`Search(terms=...)`)."""
    return LipschitzTermFactory(budget, input_shape, confidence, weight, log)


__all__ = ["LOG_FIELDS", "LipschitzTermFactory", "check_lipschitz_space", "describe",
           "lipschitz_term_factory"]
