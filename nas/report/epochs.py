"""One epoch axis for every per-epoch picture, across P-DARTS stages.

P-DARTS restarts its epoch counter in every stage, so plotting against ``epoch`` would
stack the stages on top of each other. Every picture instead uses the position of the
record in its log (1, 2, ...), with a boundary wherever the stage changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EpochAxis:
    """Global epoch numbers (1-based) and where stages start and end on that axis."""

    x: np.ndarray
    #: x positions of the lines between stages (half-way between two epochs)
    boundaries: list[float]
    #: (first x, last x, stage number as logged) of each stage, in order
    stages: list[tuple[int, int, int]]

    @property
    def multi_stage(self) -> bool:
        return len(self.stages) > 1


def epoch_axis(records: Sequence[dict[str, Any]]) -> EpochAxis:
    """The axis of `records` (log lines in order); a missing ``stage`` counts as stage 0."""
    x = np.arange(1, len(records) + 1, dtype=float)
    stages: list[tuple[int, int, int]] = []
    boundaries: list[float] = []
    for i, record in enumerate(records, start=1):
        stage = record.get("stage", 0)
        stage = stage if isinstance(stage, int) and not isinstance(stage, bool) else 0
        if stages and stages[-1][2] == stage:
            first, _, s = stages[-1]
            stages[-1] = (first, i, s)
        else:
            if stages:
                boundaries.append(i - 0.5)
            stages.append((i, i, stage))
    return EpochAxis(x, boundaries, stages)


def series(records: Sequence[dict[str, Any]], key: str, sub: str | None = None) -> np.ndarray:
    """Float values of `key` (or ``record[key][sub]``) per record; NaN where absent.

    NaN rather than dropping the record keeps every series aligned with the epoch axis,
    and matplotlib leaves NaN points out of a line.
    """
    out = np.full(len(records), np.nan)
    for i, record in enumerate(records):
        value = record.get(key)
        if sub is not None:
            value = value.get(sub) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[i] = float(value)
    return out
