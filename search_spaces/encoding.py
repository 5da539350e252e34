"""The architecture encoding shared by profiling, predictor training and the latency loss.

One function with two entry points, so what the predictor learned is exactly what the
search asks it: a discrete genotype (one-hot per edge; edges the genotype drops are coded
as `none`) and soft architecture weights (softmax per edge, differentiable). For one-hot
weights that describe a genotype the two agree exactly (tests check it).

Layout for the DARTS space: for each cell type (normal, reduce), for each of the 14
edges in DARTS order, one entry per operation of the full op set in its published order:
2 x 14 x 8 = 224 numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from search_spaces.activations import DEFAULT_ACTIVATION, split_pair
from search_spaces.errors import GenotypeError, InputError
from search_spaces.genotype import Genotype

ZERO = "none"


def encodable_name(name: str) -> str:
    """The op column `name` is encoded in: its own, or its base op's for a pair naming
    the default activation ("sep_conv_3x3/relu" is "sep_conv_3x3"). The plain encodings
    have no column for another activation (`activation_encoding` has), so such a pair is
    a one-line InputError."""
    base, act = split_pair(name)
    if act is None or act == DEFAULT_ACTIVATION:
        return base
    raise InputError(f"the plain latency encoding has no column for {name}; the "
                     "activation-aware one has (space darts-act / nb201-act)")


def edge_index(steps: int) -> dict[tuple[int, int], int]:
    """(input node, intermediate node index j>=2) -> edge row, in DARTS order."""
    index, k = {}, 0
    for j in range(steps):
        for i in range(j + 2):
            index[(i, j + 2)] = k
            k += 1
    return index


def encode_cell(edges: Sequence[tuple[str, int]], op_names: Sequence[str], steps: int
                ) -> np.ndarray:
    """One-hot (edges, ops) of one cell; edges not in the genotype are `none`."""
    rows = edge_index(steps)
    out = np.zeros((len(rows), len(op_names)), dtype=np.float32)
    out[:, list(op_names).index(ZERO)] = 1.0
    for k, (name, i) in enumerate(edges):
        j = k // 2 + 2
        if (i, j) not in rows:
            raise GenotypeError(f"edge from node {i} into node {j} is not in the space")
        name = encodable_name(name)
        if name not in op_names:
            raise GenotypeError(f"operation {name!r} is not in the op set of this space")
        row = rows[(i, j)]
        out[row] = 0.0
        out[row, list(op_names).index(name)] = 1.0
    return out


def encode_genotype(genotype: Genotype, op_names: Sequence[str], steps: int) -> np.ndarray:
    return np.concatenate([
        encode_cell(genotype.normal, op_names, steps).ravel(),
        encode_cell(genotype.reduce, op_names, steps).ravel(),
    ])


def encode_weights(
    weights: dict[str, torch.Tensor],
    op_names: Sequence[str],
    edge_ops: Mapping[str, Sequence[Sequence[str]]] | None = None,
) -> torch.Tensor:
    """Soft encoding from per-edge op weights (differentiable).

    `weights[cell]` is (edges, K); with P-DARTS' pruned op sets column k of edge e is
    the op `edge_ops[cell][e][k]`, scattered to its place in the full op set (ops an edge
    no longer has get weight 0).
    """
    parts = []
    for cell in ("normal", "reduce"):
        w = weights[cell]
        if edge_ops is None or all(list(o) == list(op_names) for o in edge_ops[cell]):
            parts.append(w.reshape(-1))
            continue
        select = torch.zeros(w.shape[0], w.shape[1], len(op_names), dtype=w.dtype,
                             device=w.device)
        for e, names in enumerate(edge_ops[cell]):
            for k, name in enumerate(names):
                select[e, k, list(op_names).index(name)] = 1.0
        parts.append(torch.einsum("ek,eko->eo", w, select).reshape(-1))
    return torch.cat(parts)
