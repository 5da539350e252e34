"""The modelled energy of soft architecture weights: the search's `--energy-weight` term.

The modelled energy of a network (`latency.energy`) counts the arithmetic of its layers,
and an operation on a cell edge does the same arithmetic whatever the other edges hold.
So the energy of a deployed DARTS network is exactly linear in the space's encoding: a
constant (stem, preprocessing, classifier) plus, per (cell type, edge, op column), the
energy of that op at that edge's input shape, summed over the network's cells of that
type. `energy_model` computes these coefficients from the shapes the profile's deployed
network gives each cell (`SearchSpace.cell_inputs`), counting each op once per distinct
(shape, stride); an (op, activation) column costs what its op costs (activations are not
counted arithmetic). The constant is fixed by one architecture's full count, and tests
check the linear form against `architecture_energy` on random architectures.

Being linear, the soft entry (a probability, or a product p_op q_act) gives the expected
energy of the supernet's distribution, and its gradient reaches alpha (and beta).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch

from latency.energy import ENERGY_LABEL, architecture_energy, network_energy
from latency.hardware import HardwareProfile
from search_spaces.activations import split_pair
from search_spaces.base import SearchSpace
from search_spaces.errors import InputError
from search_spaces.op_spec import op_spec


@dataclass(frozen=True)
class EnergyModel:
    """energy_pj(encoding) = constant_pj + encoding . coefficients_pj (modelled)."""

    coefficients_pj: torch.Tensor
    constant_pj: float
    label: str = ENERGY_LABEL

    def energy_pj(self, encoding: torch.Tensor) -> torch.Tensor:
        coef = self.coefficients_pj.to(dtype=encoding.dtype, device=encoding.device)
        return self.constant_pj + encoding @ coef

    def energy_mj(self, encoding: torch.Tensor) -> torch.Tensor:
        return self.energy_pj(encoding) * 1e-9


@cache
def _op_energy_pj(op: str, namespace: str, C: int, H: int, W: int, stride: int,
                  precision: str) -> float:
    """The modelled energy of one op of a deployed network at one input shape."""
    module = op_spec(op, namespace).build(C, stride, True).eval()
    return network_energy(module, (C, H, W), precision).pj


def _edge_input(H: int, W: int, reduction: bool, source: int) -> tuple[int, int, int]:
    """(height, width, stride) of an edge from node `source`: in a reduction cell the
    edges from the two cell inputs subsample, and intermediate nodes are already half
    size (stride-2 ops give ceil(H / 2))."""
    if not reduction:
        return H, W, 1
    if source < 2:
        return H, W, 2
    return (H + 1) // 2, (W + 1) // 2, 1


def energy_model(space: SearchSpace[Any], profile: HardwareProfile) -> EnergyModel:
    """The linear energy model of `space`'s encoding for `profile`'s deployed network."""
    check_energy_space(space)
    cells = space.cell_inputs(profile)
    columns = space.encoding_ops
    block = space.num_edges * len(columns)
    coef = np.zeros(space.encoding_size, dtype=np.float64)
    for c, cell_type in enumerate(space.cell_types):
        shapes = [(C, H, W, reduction) for t, C, H, W, reduction in cells if t == cell_type]
        for r, (i, _) in enumerate(space.edge_ends(cell_type)):
            for k, column in enumerate(columns):
                base, _ = split_pair(column)
                if op_spec(base, space.op_namespace).zero:
                    continue
                coef[c * block + r * len(columns) + k] = sum(
                    _op_energy_pj(base, space.op_namespace, C, *_edge_input(H, W, reduction,
                                                                            i),
                                  profile.precision)
                    for C, H, W, reduction in shapes)
    anchor = space.sample(np.random.default_rng(0))
    constant = architecture_energy(anchor, profile).pj - float(space.encode(anchor) @ coef)
    return EnergyModel(torch.as_tensor(coef), constant)


def check_energy_space(space: SearchSpace[Any]) -> None:
    """A one-line error for a space the energy model cannot cost: it must report its
    cells' input shapes, and its encoding must be the per-edge one-hot block alone."""
    reports_shapes = type(space).cell_inputs is not SearchSpace.cell_inputs
    if not reports_shapes or space.encoding_layout.get("onehot") != (0, space.encoding_size):
        raise InputError(f"--energy-weight needs DARTS cells; the {space.name} space has no "
                         "per-edge energy form")


__all__ = ["EnergyModel", "check_energy_space", "energy_model"]
