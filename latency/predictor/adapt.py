"""`nas predictor adapt`: a predictor for a new device from a handful of its samples.

The device prior of the samples' space (`prior.py`: what the latency functions of devices
already measured have in common) is adapted to the new device's samples by Bayesian
linear regression, and written as a predictor artifact like any other (`artifact.py`,
model kind ``prior_adapted_linear``), so `nas search --latency-weight`, `nas latency` and
`nas predictor eval` use it unchanged. Measured samples are first moved to one machine
state with their reference network (`train.reference_normalised`), as for training.

There is no held-out split of 20 samples worth the name, so the artifact's metrics are
leave-one-out: each sample predicted by the prior adapted to the others. They say how
well the adaptation generalises across this device's cells; `nas predictor eval` on more
samples says it better.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latency.predictor.artifact import save_predictor
from latency.predictor.metrics import report
from latency.predictor.prior import DevicePrior, shipped_prior_path
from latency.predictor.train import reference_normalised
from latency.samples import SampleError
from search_spaces.errors import InputError
from search_spaces.fileio import atomic_write_bytes
from search_spaces.space import get_space

#: leave-one-out needs this many samples to say anything
MIN_LOO = 5


def prior_path(space: str, prior: str | os.PathLike[str] | None = None) -> Path:
    """The prior to adapt: a path the user gave, else the one shipped for `space`."""
    if prior is None:
        path = shipped_prior_path(space)
        if not path.is_file():
            raise InputError(f"no device prior ships for the {space} space; give --prior "
                             "PATH, or profile more samples and `nas predictor train`")
        return path
    return Path(prior)


def has_prior(space: str) -> bool:
    """Whether a prior ships for `space` (`nas profile` then suggests the few-sample
    route)."""
    return shipped_prior_path(space).is_file()


def _leave_one_out(prior: DevicePrior, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    pred = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        pred[i] = prior.adapt(X[keep], y[keep]).predict(X[i:i + 1])[0][0]
    return pred


def adapt_predictor(rows: Sequence[dict[str, Any]], out: str | os.PathLike[str],
                    hardware: str, dataset: str,
                    prior: str | os.PathLike[str] | None = None,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Adapt the space's prior to `rows` (one hardware, one space) and save the result
    at `out`; returns the summary also written to `out/report.json`."""
    say = log or (lambda message: None)
    spaces = sorted({str(r["space"]) for r in rows})
    if len(spaces) != 1:
        raise SampleError(f"samples of one space are needed, got {', '.join(spaces) or 'none'}")
    space = get_space(spaces[0])
    path = prior_path(space.name, prior)
    device_prior = DevicePrior.load(path, op_names=space.encoding_ops,
                                    encoding_size=space.encoding_size)
    X = np.stack([space.encode(space.parse(r["arch"])) for r in rows]).astype(np.float64)
    y = np.array([float(r["latency_ms"]) for r in rows])
    y, reference_ms = reference_normalised(rows, y)
    say(f"adapting the {space.name} prior ({len(device_prior.devices)} devices, {path}) to "
        f"{len(rows)} samples of {hardware}")
    model = device_prior.adapt(X, y)
    metrics: dict[str, float] = {}
    if len(rows) >= MIN_LOO:
        metrics = report(y, _leave_one_out(device_prior, X, y))
    sources = sorted({str(r["source"]) for r in rows})
    extra: dict[str, Any] = {"sources": sources, "n_train": len(rows), "n_test": 0,
                             "prior": str(path), "prior_devices": device_prior.devices,
                             "metrics_kind": "leave-one-out over the adaptation samples",
                             "reference_ms": reference_ms, "adaptation": model.info}
    save_predictor(model, out, space=space.name, op_names=space.encoding_ops, hardware=hardware,
                   dataset=dataset, metrics=metrics, extra=extra)
    summary = {"hardware": hardware, "space": space.name, "samples": dataset,
               "sources": sources, "n_train": len(rows), "prior": str(path),
               "reference_normalised": reference_ms is not None, "reference_ms": reference_ms,
               "leave_one_out": metrics, "predictor": str(out)}
    atomic_write_bytes(Path(out) / "report.json",
                       (json.dumps(summary, indent=2) + "\n").encode())
    return summary
