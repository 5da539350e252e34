"""DARTS genotypes that deploy as the same network up to renaming: latency twins.

Why: a measured latency is a measurement of every genotype whose network runs the same
kernels on tensors of the same shapes, and a latency predictor learns that for free if it
is shown those genotypes (`latency/predictor/augment.py`). In a DARTS cell
(docs/methods.md#darts) two renamings keep the network's cost:

* **the two cell inputs** are both preprocessed to C channels at one resolution before any
  edge reads them (both preprocessings always run), so swapping which of the two every
  edge reads swaps nothing a device does;
* **the intermediate nodes** can be numbered in any order that keeps every edge pointing
  from an earlier node to a later one; with the cell's output the concatenation of all
  intermediate nodes, a renumbering only permutes channels of that concatenation, which
  the next cell's 1x1 preprocessing reads whole.

The networks are not numerically equal (weights sit on other edges), only equally costly:
a test checks parameter counts, multiply-accumulates and the simulated latency of every
equivalent. Cells whose concat is not all intermediate nodes get no renumbering.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from search_spaces.genotype import Edge, Genotype


def _canonical(edges: Sequence[Edge]) -> tuple[Edge, ...]:
    """Each node's two edges in a fixed order (their order carries no meaning)."""
    out: list[Edge] = []
    for k in range(0, len(edges), 2):
        out.extend(sorted(edges[k:k + 2], key=lambda e: (e[1], e[0])))
    return tuple(out)


def cell_variants(edges: Sequence[Edge], concat: Sequence[int], steps: int
                  ) -> set[tuple[Edge, ...]]:
    """Every renaming of one cell (itself included), in canonical form."""
    inter = list(range(2, steps + 2))
    renumber = tuple(concat) == tuple(inter)
    variants = set()
    for swap in (False, True):
        perms = itertools.permutations(inter) if renumber else [tuple(inter)]
        for perm in perms:
            new = {0: 1 if swap else 0, 1: 0 if swap else 1, **dict(zip(inter, perm, strict=True))}
            nodes: dict[int, list[Edge]] = {}
            for k, old in enumerate(inter):
                target = new[old]
                pair = [(op, new[i]) for op, i in edges[2 * k:2 * k + 2]]
                if any(i >= target for _, i in pair):
                    break  # an edge would point backwards: not a valid numbering
                nodes[target] = pair
            else:
                variants.add(_canonical([e for j in inter for e in nodes[j]]))
    return variants


def equivalent_genotypes(genotype: Genotype, limit: int | None = None
                         ) -> tuple[Genotype, ...]:
    """Other genotypes whose deployed network costs the same as `genotype`'s.

    There can be thousands (up to 48 per cell, squared); `limit` keeps that many, spread
    evenly over the sorted list so the choice is deterministic."""
    steps = genotype.steps
    normal = sorted(cell_variants(genotype.normal, genotype.normal_concat, steps))
    reduce = sorted(cell_variants(genotype.reduce, genotype.reduce_concat, steps))
    own = (_canonical(genotype.normal), _canonical(genotype.reduce))
    pairs = [p for p in itertools.product(normal, reduce) if p != own]
    if limit is not None and len(pairs) > limit:
        pick = np.linspace(0, len(pairs) - 1, limit).round().astype(int)
        pairs = [pairs[i] for i in sorted(set(pick.tolist()))]
    return tuple(
        Genotype(normal=n, normal_concat=genotype.normal_concat, reduce=r,
                 reduce_concat=genotype.reduce_concat)
        for n, r in pairs
    )
