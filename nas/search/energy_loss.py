"""The modelled-energy term of the architecture step (`nas search --energy-weight`).

lambda * E(soft architecture) / E_ref, with E the linear energy model of the search's
encoding (`latency.energy_model`: exact for discrete architectures, the expected energy
of the supernet's distribution for soft ones) and E_ref the energy of the uniform
distribution over the search's ops (and activations), so lambda does not depend on units,
device or network size. Like the latency term it is rebuilt per P-DARTS stage, because
the encoding of the weights depends on each edge's remaining ops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from latency.energy_model import EnergyModel
from nas.search.architect import ArchLossTerm, ArchWeights
from search_spaces.base import SearchSpace
from search_spaces.supernet import activation_key

EdgeOps = dict[str, Sequence[Sequence[str]]]


def uniform_weights(space: SearchSpace[Any], activations: Sequence[str] = ()
                    ) -> dict[str, torch.Tensor]:
    """Uniform probabilities over every op of every edge (and every searched activation)."""
    k = len(space.op_names)
    out = {c: torch.full((space.num_edges, k), 1.0 / k, dtype=torch.float64)
           for c in space.cell_types}
    if activations:
        n = len(activations)
        out.update({activation_key(c): torch.full((space.num_edges, n), 1.0 / n,
                                                  dtype=torch.float64)
                    for c in space.cell_types})
    return out


def energy_term_factory(model: EnergyModel, space: SearchSpace[Any], weight: float,
                        activations: Sequence[str] = ()
                        ) -> Callable[[EdgeOps], ArchLossTerm]:
    reference = float(model.energy_pj(space.encode_weights(uniform_weights(space,
                                                                           activations))))

    def make(edge_ops: EdgeOps) -> ArchLossTerm:
        def fn(w: ArchWeights) -> torch.Tensor:
            return weight * model.energy_pj(space.encode_weights(w, edge_ops)) / reference

        return ArchLossTerm("energy_loss", fn)

    return make


__all__ = ["energy_term_factory", "uniform_weights"]
