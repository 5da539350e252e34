"""How noisy are the NB201 latency labels? Measured without any model.

Many NB201 strings name the same computation (`search_spaces.nb201.computation_key`):
e.g. when edge 0->1 is `skip_connect`, swapping the ops of 0->2 and 1->2 changes nothing
a device runs. Such *twins* were measured separately in the published data, so how far
their latencies disagree is the measurement noise itself, with no model in between:

* `twins`: every pair of strict twins: the median |log ratio|, the share of pairs more
  than 10 % apart, and the test-retest Kendall tau (first twin against second, over all
  twin groups): how well one re-measurement of the very same network ranks cells.
* `op_multiset_oracles`: in a PyTorch deployment every op runs on a tensor of the
  cell's one shape, so the cost of a cell is fixed by its multiset of ops; if the twin
  statistics above equal those of cells that share only the op multiset, the wiring
  does not matter on that device (true of the GPU data, not of the CPUs). Then
  each cell's latency can be "predicted" by the other ~74 measurements of its multiset,
  leaving it out: by their median (the best a predictor of the typical latency can do)
  and by the value that puts most of them within +/-10 % (the best any prediction can
  do on this metric; it sits above the typical latency, because the noise is
  one-sided: whole windows of cells were measured slow).

Scored with the product's own metrics (`latency.predictor.metrics`).
Run alone: ``python bench/nb201_label_noise.py`` (seconds).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np

from latency.predictor.metrics import kendall_tau, within
from search_spaces.nb201 import computation_key, parse_arch

DEFAULT_DATA = Path("/work/shared/data/nb201-latency/nb201_latency.csv")
WITHIN_10 = within(0.10)


def groups_by(archs: Sequence[str], key: Callable[[str], Hashable]) -> list[np.ndarray]:
    """Indices of cells sharing a key, for every key held by two cells or more."""
    found: dict[Hashable, list[int]] = defaultdict(list)
    for i, a in enumerate(archs):
        found[key(a)].append(i)
    return [np.array(g) for g in found.values() if len(g) > 1]


def twin_statistics(groups: list[np.ndarray], y: np.ndarray) -> dict[str, float | int]:
    logs = [np.log(y[g]) for g in groups]
    diffs = np.concatenate([np.abs(v[:, None] - v[None, :])[np.triu_indices(len(v), 1)]
                            for v in logs])
    first = np.array([y[g[0]] for g in groups])
    second = np.array([y[g[1]] for g in groups])
    return {
        "groups": len(groups),
        "cells": int(sum(len(g) for g in groups)),
        "pairs": int(diffs.size),
        "median_abs_log_ratio": float(np.median(diffs)),
        "share_of_pairs_over_10pct_apart": float((diffs > np.log(1.1)).mean()),
        "test_retest_kendall_tau": kendall_tau(first, second),
    }


def best_window(others: np.ndarray) -> float:
    """The prediction p that puts the most of `others` within +/-10 % (|p - y| <= 0.1 y).

    y is within 10 % of p exactly when p lies in [0.9 y, 1.1 y]; the count is a step
    function of p, so its maximum is reached at one of those interval ends."""
    candidates = np.concatenate([0.9 * others, 1.1 * others])
    lo, hi = 0.9 * others, 1.1 * others
    counts = ((candidates[:, None] >= lo[None, :] - 1e-12)
              & (candidates[:, None] <= hi[None, :] + 1e-12)).sum(axis=1)
    return float(candidates[int(np.argmax(counts))])


def leave_one_out_oracles(groups: list[np.ndarray], y: np.ndarray) -> dict[str, float | int]:
    truth, median, window = [], [], []
    for g in groups:
        if len(g) < 3:
            continue
        v = y[g]
        for k in range(len(v)):
            others = np.delete(v, k)
            truth.append(v[k])
            median.append(float(np.median(others)))
            window.append(best_window(others))
    t = np.array(truth)
    return {
        "cells": len(t),
        "median_of_others_within_10": WITHIN_10(t, np.array(median)),
        "best_window_of_others_within_10": WITHIN_10(t, np.array(window)),
        "best_window_over_median": float(np.median(np.array(window) / np.array(median))),
    }


def label_noise(archs: Sequence[str], y: np.ndarray, keep: np.ndarray | None = None) -> dict:
    """Both analyses for one device; `keep` masks out cells excluded from evaluation."""
    idx = np.arange(len(archs)) if keep is None else np.flatnonzero(keep)
    sub = [archs[i] for i in idx]
    yy = np.asarray(y, dtype=np.float64)[idx]
    strict = groups_by(sub, computation_key)
    multiset = groups_by(sub, lambda a: tuple(sorted(parse_arch(a).ops)))
    return {
        "twins": twin_statistics(strict, yy),
        "same_op_multiset": twin_statistics(multiset, yy),
        "op_multiset_oracles": leave_one_out_oracles(multiset, yy),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(f"data file {args.data} not found", file=sys.stderr)
        return 2
    with args.data.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    archs = [r["arch"] for r in rows]
    out = {}
    for col in ("titan_rtx_bs1_ms", "gold_6226_bs1_ms", "raspi4_bs1_ms"):
        y = np.array([float(r[col]) for r in rows])
        out[col] = label_noise(archs, y, keep=y >= 1.0)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
