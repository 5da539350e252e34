"""Our latency term on NNI's DARTS alphas: weight x predicted latency, differentiable.

`LatencyPenalty` reads an NNI DARTS supernet's edge alphas (`mapping.find_cell_alphas`),
turns them into our encoding's soft weights (`mapping.soft_weights`) and applies the very
term `nas search --latency-weight` adds to its architecture loss
(`nas.search.latency_loss.latency_term`): ``weight * LAT / ref`` with ``ref`` the mean
latency of the predictor's training samples, or with `target_ms` the budget form
``weight * max(0, LAT / target - 1)``. The predictor is frozen; gradients reach NNI's
alphas through our encoding and NNI's softmax. Nothing here imports NNI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from nas.nni_bridge.mapping import (
    NNI_DARTS_OPS,
    AlphaMapping,
    alpha_mapping,
    find_cell_alphas,
    soft_weights,
)
from nas.search.latency_loss import EdgeOps, LatencyModel, PredictorLatency, latency_term
from search_spaces.base import SearchSpace
from search_spaces.errors import InputError
from search_spaces.genotype import Genotype


@lru_cache(maxsize=8)
def load_latency_model(hardware: str, predictor: str | None = None
                       ) -> tuple[PredictorLatency, str]:
    """The frozen predictor of `hardware` for the DARTS encoding (shipped or the user's,
    found as `nas search` finds it; `predictor` names a directory instead) and its label
    (`simulated` / `measured-model`)."""
    from latency.hardware import load_profile
    from latency.predictor.locate import load_for_space, require_predictor
    from search_spaces.space import get_space

    space = get_space("darts")
    path = require_predictor(hardware, space.name, predictor)
    mlp, _meta = load_for_space(Path(path), space)
    return PredictorLatency(mlp), load_profile(hardware).prediction_label


class LatencyPenalty:
    """The latency term of an NNI DARTS supernet's current architecture.

    Call it with a dict of NNI edge alphas (``{"normal/2_0": logits, ...}``), the
    supernet NNI's DARTS strategy mutated, its one-shot Lightning module or the strategy
    itself; it returns a scalar tensor with gradients to those alphas."""

    def __init__(self, model: LatencyModel, weight: float, target_ms: float | None = None,
                 *, space: SearchSpace[Any] | None = None, label: str = "") -> None:
        if not math.isfinite(weight) or weight < 0:
            raise InputError(f"latency weight must be a finite number >= 0, got {weight}")
        if target_ms is not None and not (math.isfinite(target_ms) and target_ms > 0):
            raise InputError(f"latency target must be a positive number of ms, got {target_ms}")
        from search_spaces.space import get_space

        self.model = model
        self.weight = float(weight)
        self.target_ms = target_ms
        self.space = space if space is not None else get_space("darts")
        self.label = label
        self._edge_ops: EdgeOps = {k: v for k, v in self.space.full_edge_ops().items()}
        self._term = latency_term(model, self.space, self._edge_ops, self.weight, target_ms)
        self._mappings: dict[tuple[str, ...], AlphaMapping] = {}

    @classmethod
    def for_hardware(cls, hardware: str, weight: float, target_ms: float | None = None,
                     predictor: str | Path | None = None) -> LatencyPenalty:
        model, label = load_latency_model(hardware, None if predictor is None
                                          else str(predictor))
        return cls(model, weight, target_ms, label=label)

    # -- what it reads ---------------------------------------------------------------

    def mapping(self, nni_ops: tuple[str, ...] = NNI_DARTS_OPS) -> AlphaMapping:
        if nni_ops not in self._mappings:
            self._mappings[nni_ops] = alpha_mapping(nni_ops, self.space)
        return self._mappings[nni_ops]

    def soft_weights(self, source: Any, *, strict: bool = True) -> dict[str, torch.Tensor]:
        """Our encoding's soft weights of `source` (see the class doc). `strict`: refuse a
        model that also searches choices the predictor does not price (width, depth)."""
        if isinstance(source, torch.nn.ParameterDict):
            source = dict(source.items())
        if isinstance(source, Mapping):
            return soft_weights(source, self.mapping())
        found = find_cell_alphas(source)
        if strict and found.other:
            raise InputError(
                f"the NNI model also searches {', '.join(found.other)}; the predictor "
                "prices the hardware profile's deployed network by its cell operations "
                "only: build the space with a fixed width and depth, e.g. "
                "nni.nas.hub.pytorch.DARTS(width=16, num_cells=8, dataset='cifar')")
        return soft_weights(found.alphas, self.mapping(found.op_names))

    def _on_device(self, weights: Mapping[str, torch.Tensor]) -> None:
        mlp = getattr(self.model, "mlp", None)
        if isinstance(mlp, torch.nn.Module):
            device = next(iter(weights.values())).device
            if next(mlp.parameters()).device != device:
                mlp.to(device)

    # -- the term --------------------------------------------------------------------

    def __call__(self, source: Any) -> torch.Tensor:
        w = self.soft_weights(source)
        self._on_device(w)
        return self._term(w)

    def evaluate(self, source: Any) -> tuple[torch.Tensor, float]:
        """(the term, the predicted latency in ms of the soft architecture), computing the
        encoding once."""
        w = self.soft_weights(source)
        self._on_device(w)
        term = self._term(w)
        with torch.no_grad():
            ms = float(self.model.latency_ms(self.space.encode_weights(w, self._edge_ops)))
        return term, ms

    def predicted_ms(self, source: Any) -> float:
        """Predicted latency (ms) of the soft architecture, without gradients."""
        with torch.no_grad():
            w = self.soft_weights(source)
            self._on_device(w)
            return float(self.model.latency_ms(self.space.encode_weights(w, self._edge_ops)))

    def genotype_ms(self, genotype: Genotype) -> float:
        """Predicted latency (ms) of a discrete genotype (e.g. NNI's export, converted by
        `mapping.genotype_from_export`): the one-hot encoding the predictor trained on."""
        enc = torch.as_tensor(self.space.encode(genotype))
        mlp = getattr(self.model, "mlp", None)
        if isinstance(mlp, torch.nn.Module):
            enc = enc.to(next(mlp.parameters()).device)
        with torch.no_grad():
            return float(self.model.latency_ms(enc))


def latency_penalty(source: Any, *, hardware: str, weight: float,
                    target_ms: float | None = None,
                    predictor: str | Path | None = None) -> torch.Tensor:
    """``weight x predicted latency / reference`` (or the budget form with `target_ms`)
    of an NNI DARTS supernet's current alphas, with gradients to them: add it to NNI's
    architecture loss. `source`: a dict of NNI edge alphas, the mutated model space, the
    one-shot Lightning module or the strategy. The predictor is loaded once per
    (hardware, predictor) and kept."""
    return LatencyPenalty.for_hardware(hardware, weight, target_ms, predictor)(source)


__all__ = ["LatencyPenalty", "latency_penalty", "load_latency_model"]
