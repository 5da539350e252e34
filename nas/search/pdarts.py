"""P-DARTS specifics: operation pruning between stages, skip dropout schedule
(docs/methods.md#p-darts)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ZERO = "none"


def skip_dropout_rate(p0: float, epoch: int, epochs: int, arch_start: int, decay: float) -> float:
    """Linear decay while only weights train; reset to p0 and decay exponentially after.

    p = p0 * (E - e - 1) / E for e < arch_start, else p0 * exp(-decay * (e - arch_start)).
    """
    if epoch < arch_start:
        return p0 * (epochs - epoch - 1) / epochs
    return p0 * math.exp(-decay * (epoch - arch_start))


def prune_edge_ops(
    probs: np.ndarray, edge_ops: Sequence[Sequence[str]], keep: int, last_stage: bool
) -> list[list[str]]:
    """Keep the `keep` strongest ops on every edge (by this stage's softmax weights).

    After the last stage `none` is removed first if present (P-DARTS
    `get_min_k_no_zero`), so the surviving op is the strongest real operation.
    Survivors keep their order in the op list.
    """
    pruned = []
    for e, names in enumerate(edge_ops):
        p = np.asarray(probs[e], dtype=np.float64)
        candidates = list(range(len(names)))
        if last_stage and ZERO in names:
            candidates.remove(list(names).index(ZERO))
        # among equal weights the earlier op is dropped, as P-DARTS' repeated argmin does
        ranked = sorted(candidates, key=lambda k: (-p[k], -k))[:keep]
        pruned.append([names[k] for k in sorted(ranked)])
    return pruned
