"""Training rows plus the cells a space knows compute the same thing.

A space may publish `equivalents(arch, limit)`: other architectures whose networks run
the same kernels on tensors of the same shapes (NB201: `search_spaces.nb201.
equivalent_archs`; DARTS: `search_spaces.darts_symmetry`). A latency
measured on one of them is a measurement of all of them, so each training row also
teaches the predictor the latency of its equivalents, labelled with the row's own
measurement. This is a symmetry of the space, not a guess: on the NB201 data it lifted
the MLP on every device (`bench/bench_nb201_predictor.py`). Held-out rows are never
augmented, and the returned `groups` keep a row and its copies together, so a validation
split inside the trainer cannot see a copy of one of its own training rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from search_spaces.base import SearchSpace

#: equivalents added per row at most: a DARTS genotype can have thousands (48 renamings
#: per cell, squared); a few already carry the symmetry, and the training set stays small
MAX_PER_ROW = 8


def with_equivalents(
    space: SearchSpace[Any], archs: Sequence[Any], X: np.ndarray, y: np.ndarray,
    limit: int = MAX_PER_ROW,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(encodings, latencies, group of each row): the rows first, then their equivalents.

    `archs` are the rows' architectures (parsed). A space that knows no equivalents
    (`SearchSpace.equivalents`) gets its rows back unchanged, one group each."""
    n = len(y)
    groups = np.arange(n)
    extra_x, extra_y, extra_g = [], [], []
    for i, arch in enumerate(archs):
        for other in space.equivalents(arch, limit):
            extra_x.append(space.encode(other))
            extra_y.append(y[i])
            extra_g.append(i)
    if not extra_x:
        return X, y, groups
    return (np.concatenate([X, np.stack(extra_x).astype(X.dtype)]),
            np.concatenate([y, np.asarray(extra_y, dtype=y.dtype)]),
            np.concatenate([groups, np.asarray(extra_g)]))
