"""From architecture weights to a discrete genotype.

`derive_genotype` is DARTS' rule: per node keep the two incoming edges whose strongest
non-`none` operation is strongest, and on each the strongest non-`none` operation.
`restrict_skip_connects` is P-DARTS' final step: while the normal cell has more than M
skip-connects, drop the weakest one and re-derive.

A factorised search (operations x activations) adds per edge the softmax q over
activations. The joint weight of (op m, activation n) is p_m * q_n, so its argmax is
(argmax p, argmax q) and an edge's strength is its strongest op's p times max q: both
rules above run on p scaled by max q per edge, and a kept op that carries an activation
is named with the edge's strongest one (`sep_conv_3x3/silu`; ReLU keeps the plain name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from search_spaces.activations import pair_name
from search_spaces.genotype import Genotype
from search_spaces.op_spec import op_spec

ZERO = "none"

#: (per-edge activation weights (edges, K), the K activation names)
ActivationChoice = tuple[np.ndarray, Sequence[str]]


def _joint(probs: np.ndarray, act: ActivationChoice | None) -> np.ndarray:
    """Per-edge op weights scaled by the edge's largest activation weight: the joint
    weight of each op with its best activation."""
    p = np.asarray(probs, dtype=np.float64)
    if act is None:
        return p
    return p * np.asarray(act[0], dtype=np.float64).max(axis=1, keepdims=True)


def _named(name: str, e: int, act: ActivationChoice | None) -> str:
    """`name` on edge e with the edge's strongest activation, if the op carries one."""
    if act is None or not op_spec(name).takes_activation:
        return name
    q, names = act
    return pair_name(name, names[int(np.argmax(q[e]))])


def _edge_ranges(steps: int) -> list[tuple[int, int]]:
    """[start, end) rows of each intermediate node's incoming edges."""
    ranges, start = [], 0
    for j in range(steps):
        n = j + 2
        ranges.append((start, start + n))
        start += n
    return ranges


def derive_cell(
    probs: np.ndarray, edge_ops: Sequence[Sequence[str]], steps: int,
    act: ActivationChoice | None = None,
) -> list[tuple[str, int]]:
    """DARTS `genotype()` for one cell type; `probs` is (edges, ops), softmax per edge;
    `act`, in a factorised search, the activation weights and names.

    Ties resolve as in the reference (stable sort, first maximum wins).
    """
    probs = _joint(probs, act)
    gene: list[tuple[str, int]] = []
    for start, end in _edge_ranges(steps):
        def strength(e: int) -> float:
            vals = [probs[e][k] for k, n in enumerate(edge_ops[e]) if n != ZERO]
            return max(vals) if vals else -np.inf

        inputs = sorted(range(end - start), key=lambda i: -strength(start + i))[:2]
        for i in inputs:
            e = start + i
            best = None
            for k, name in enumerate(edge_ops[e]):
                if name != ZERO and (best is None or probs[e][k] > probs[e][best]):
                    best = k
            if best is None:
                raise ValueError(f"edge {e} has no operation other than '{ZERO}'")
            gene.append((_named(edge_ops[e][best], e, act), i))
    return gene


def derive_genotype(
    probs: Mapping[str, np.ndarray],
    edge_ops: Mapping[str, Sequence[Sequence[str]]],
    steps: int = 4,
    multiplier: int = 4,
    activations: Mapping[str, ActivationChoice] | None = None,
) -> Genotype:
    """`activations`: per cell type, (activation weights, names) of a factorised search."""
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    acts = activations or {}
    return Genotype(
        normal=tuple(derive_cell(np.asarray(probs["normal"]), edge_ops["normal"], steps,
                                 acts.get("normal"))),
        normal_concat=concat,
        reduce=tuple(derive_cell(np.asarray(probs["reduce"]), edge_ops["reduce"], steps,
                                 acts.get("reduce"))),
        reduce_concat=concat,
    )


def _pick(
    probs: np.ndarray, edge_ops: Sequence[Sequence[str]], steps: int
) -> list[tuple[int, int]]:
    """P-DARTS `keep_1_on` + `keep_2_branches`: (edge, op column) kept per node."""
    kept: list[tuple[int, int]] = []
    for start, end in _edge_ranges(steps):
        best = {e: int(np.argmax(probs[e])) for e in range(start, end)}
        ranked = sorted(range(start, end), key=lambda e: probs[e][best[e]])
        for e in sorted(ranked[-2:]):
            kept.append((e, best[e]))
    return kept


def restrict_skip_connects(
    probs: np.ndarray,
    edge_ops: Sequence[Sequence[str]],
    steps: int,
    max_skips: int,
    skip: str = "skip_connect",
    act: ActivationChoice | None = None,
) -> list[tuple[str, int]]:
    """P-DARTS: the normal cell with at most `max_skips` skip-connects.

    `probs` are the final stage's softmax weights over each edge's remaining candidates.
    `none` is never chosen. While too many kept edges choose skip, the kept skip with the
    lowest probability is zeroed and the choice of op and of edges is redone. `act`: as
    in `derive_cell`.
    """
    p = np.array(_joint(probs, act), dtype=np.float64, copy=True)
    for e, names in enumerate(edge_ops):
        for k, name in enumerate(names):
            if name == ZERO:
                p[e][k] = 0.0
    while True:
        kept = _pick(p, edge_ops, steps)
        skips = [(e, k) for e, k in kept if edge_ops[e][k] == skip]
        if len(skips) <= max_skips:
            break
        e, k = min(skips, key=lambda ek: p[ek[0]][ek[1]])
        p[e][k] = 0.0
    starts = [s for s, _ in _edge_ranges(steps)]
    gene = []
    for e, k in kept:
        node = max(j for j, s in enumerate(starts) if s <= e)
        gene.append((_named(edge_ops[e][k], e, act), e - starts[node]))
    return gene


def skip_count(edges: Sequence[tuple[str, int]], skip: str = "skip_connect") -> int:
    return sum(1 for name, _ in edges if name == skip)
