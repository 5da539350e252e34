"""The differentiable latency term of the architecture step
(docs/methods.md#latency-aware-search, docs/architecture.md).

A frozen predictor maps the encoding of the current soft architecture to milliseconds;
its gradient flows through the encoding and the softmax into the architecture
parameters. Latency is divided by a reference (the mean latency of the predictor's
training samples) so the weight lambda does not depend on units or device.

Two forms:
- additive: lambda * LAT / ref  (trade accuracy against latency everywhere)
- budget:   lambda * max(0, LAT / target - 1)  (only architectures above the budget pay)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import torch

from nas.search.architect import ArchLossTerm, ArchWeights
from search_spaces.base import SearchSpace

EdgeOps = dict[str, Sequence[Sequence[str]]]


class LatencyModel(Protocol):
    """What the search needs of a predictor."""

    reference_ms: float

    def latency_ms(self, encoding: torch.Tensor) -> torch.Tensor:
        """Predicted latency (ms) of an encoding; differentiable."""
        ...


def latency_term(
    model: LatencyModel,
    space: SearchSpace[Any],
    edge_ops: EdgeOps,
    weight: float,
    target_ms: float | None = None,
) -> ArchLossTerm:
    def fn(w: ArchWeights) -> torch.Tensor:
        lat = model.latency_ms(space.encode_weights(w, edge_ops))
        if target_ms is None:
            return weight * lat / model.reference_ms
        return weight * torch.relu(lat / target_ms - 1.0)

    return ArchLossTerm("latency_loss", fn)


TermFactory = Callable[[EdgeOps], ArchLossTerm]


def latency_term_factory(
    model: LatencyModel, space: SearchSpace[Any], weight: float, target_ms: float | None = None
) -> TermFactory:
    """Terms are rebuilt per P-DARTS stage, because the encoding depends on each edge's ops."""
    return lambda edge_ops: latency_term(model, space, edge_ops, weight, target_ms)


def predicted_latency(model: LatencyModel, space: SearchSpace[Any], weights: ArchWeights,
                      edge_ops: EdgeOps) -> float:
    with torch.no_grad():
        return float(model.latency_ms(space.encode_weights(weights, edge_ops)))


class PredictorLatency:
    """A trained, frozen LatencyMLP seen as a LatencyModel (milliseconds in and out)."""

    def __init__(self, mlp: torch.nn.Module) -> None:
        self.mlp = mlp.eval()
        for p in self.mlp.parameters():
            p.requires_grad_(False)
        self.reference_ms = float(cast(torch.Tensor, mlp.scale_ms))  # LatencyMLP's buffer
        self.dtype = next(mlp.parameters()).dtype

    def latency_ms(self, encoding: torch.Tensor) -> torch.Tensor:
        return self.mlp(encoding.to(self.dtype)) * self.reference_ms


def latency_probe(model: LatencyModel, space: SearchSpace[Any], label: str
                  ) -> Callable[[ArchWeights, EdgeOps, object], dict[str, object]]:
    """Per-epoch log fields: predicted latency of the soft architecture and of the genotype
    derived from it (`label` says whether the predictor learned measured or simulated data)."""

    def probe(weights: ArchWeights, edge_ops: EdgeOps, genotype: object) -> dict[str, object]:
        with torch.no_grad():
            derived = model.latency_ms(torch.as_tensor(space.encode(genotype)))
        return {
            "predicted_latency_ms": predicted_latency(model, space, weights, edge_ops),
            "genotype_predicted_latency_ms": float(derived),
            "latency_label": label,
        }

    return probe
