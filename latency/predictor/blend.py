"""Which model ships: the MLP ensemble, a linear per-edge model, or a blend of them,
chosen per device by out-of-fold validation on that device's own training rows.

Why: judged leave-one-device-out over the 15 NAS-Bench-201 devices in ``../shared``
(`bench/bench_lodo_predictor.py`), no one family wins everywhere. The MLP wins where
latency has interactions (ARM boards and phones that prune dead operations); a ridge on
the per-edge one-hot is level with it or slightly ahead where latency is additive (GPUs)
or where labels are coarse and noisy (an x86 server CPU, a phone published in whole
milliseconds), and the ridge fitted by least *relative* squares is the one to beat on
within-10 % on some of those. Each of these is a linear map of the one-hot, so any convex
combination of them and the MLP is again an ensemble of members (`LatencyMLP.add_linear`)
and stays differentiable for the search. Candidates are the points of a simplex grid over
the three weights; each is scored on out-of-fold predictions (5 folds of whole groups of
equivalent cells) by what the benchmark judges, within 10 % plus Kendall tau, and the best
ships. Trees (gradient boosting, random forest) are reported beside it but cannot ship:
the search needs a gradient.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from latency.predictor.baselines import SklearnBaseline, make_baseline
from latency.predictor.features import FeatureLayout
from latency.predictor.metrics import report
from latency.predictor.mlp import LatencyMLP
from search_spaces.errors import InputError

#: linear families a blend may hold beside the MLP (each a ridge on the one-hot)
LINEAR_FAMILIES: tuple[str, ...] = ("ridge_onehot", "ridge_onehot_relative")
FOLDS = 5
GRID_STEP = 0.1


@dataclass(frozen=True)
class Blend:
    """Weights of the MLP and of each linear family; they sum to 1."""

    mlp: float
    linear: tuple[tuple[str, float], ...]

    @property
    def name(self) -> str:
        parts = [f"{self.mlp:g} mlp"] if self.mlp else []
        parts += [f"{w:g} {fam}" for fam, w in self.linear if w]
        return " + ".join(parts)

    def to_dict(self) -> dict[str, float]:
        return {"mlp": self.mlp, **{fam: w for fam, w in self.linear}}


def candidates(step: float = GRID_STEP,
               families: Sequence[str] = LINEAR_FAMILIES) -> list[Blend]:
    """Every point of the simplex grid over (mlp, *families) at `step`, pure MLP first."""
    n = int(round(1 / step))
    out = []
    for counts in itertools.product(range(n + 1), repeat=len(families)):
        rest = n - sum(counts)
        if rest >= 0:
            out.append(Blend(rest / n, tuple((f, c / n) for f, c in zip(families, counts,
                                                                          strict=True))))
    return sorted(out, key=lambda b: -b.mlp)


def score(metrics: Mapping[str, float]) -> float:
    """What the choice maximises: the two figures the benchmark judges, summed."""
    return float(metrics["within_10"]) + float(metrics["kendall_tau"])


def _mix(blend: Blend, preds: Mapping[str, np.ndarray]) -> np.ndarray:
    out = blend.mlp * preds["mlp"]
    for fam, w in blend.linear:
        out = out + w * preds[fam]
    return np.asarray(out)


def choose(y: np.ndarray, oof: Mapping[str, np.ndarray],
           step: float = GRID_STEP) -> tuple[Blend, list[dict[str, Any]]]:
    """The best candidate on out-of-fold predictions `oof` (family -> ms per row) of
    latencies `y`, and every candidate's scores. Ties go to the larger MLP weight (the
    candidates' order), so a blend must earn its place."""
    families = tuple(k for k in oof if k != "mlp")
    table = []
    best: tuple[float, Blend] | None = None
    for blend in candidates(step, families):
        metrics = report(y, _mix(blend, oof))
        table.append({"blend": blend.to_dict(), **metrics})
        s = score(metrics)
        if best is None or s > best[0] + 1e-12:
            best = (s, blend)
    assert best is not None
    return best[1], table


def fit_linear(layout: FeatureLayout, X: np.ndarray, y: np.ndarray, seed: int,
               families: Sequence[str] = LINEAR_FAMILIES) -> dict[str, SklearnBaseline]:
    return {fam: make_baseline(fam, layout, seed).fit(X, y) for fam in families}


def linear_out_of_fold(layout: FeatureLayout, X: np.ndarray, y: np.ndarray,
                       fold_of_row: np.ndarray, seed: int,
                       families: Sequence[str] = LINEAR_FAMILIES) -> dict[str, np.ndarray]:
    out = {fam: np.empty(len(y)) for fam in families}
    for f in np.unique(fold_of_row):
        held = fold_of_row == f
        for fam, model in fit_linear(layout, X[~held], y[~held], seed, families).items():
            out[fam][held] = model.predict(X[held])
    return out


def ship(mlp: LatencyMLP, blend: Blend, linear: Mapping[str, SklearnBaseline]) -> LatencyMLP:
    """Fold `blend` into `mlp` (in place): its members then compute the blend."""
    coef = np.zeros(mlp.layout.onehot[1] - mlp.layout.onehot[0])
    intercept = 0.0
    for fam, w in blend.linear:
        if not w:
            continue
        model = linear[fam].model
        if linear[fam].inputs != "onehot" or linear[fam].target == "log":
            raise InputError(f"{fam} is not a linear model of the one-hot in ms")
        coef = coef + w * np.asarray(model.coef_, dtype=np.float64)
        intercept += w * float(model.intercept_)
    if blend.mlp != 1.0:
        mlp.add_linear(blend.mlp, coef, intercept)
    return mlp


def choose_and_ship(mlp: LatencyMLP, X_fit: np.ndarray, y_fit: np.ndarray,
                    groups: np.ndarray, n_rows: int, seed: int, folds: int = FOLDS,
                    log: Callable[[str], None] | None = None
                    ) -> tuple[Blend, list[dict[str, Any]], dict[str, SklearnBaseline]]:
    """Score the fitted `mlp` and the linear families out of fold on the fitting rows
    (`groups` ties equivalent cells; the first `n_rows` rows are the measured ones, and
    only they are scored), choose the blend, fold it into `mlp`. Returns the blend, every
    candidate's out-of-fold scores, and the linear models fitted on every row."""
    layout = mlp.layout
    g = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
    fold_of_group = np.random.default_rng(mlp.config.seed + 7919).permutation(
        int(g.max()) + 1) % folds
    fold = fold_of_group[g]
    oof = {"mlp": mlp.out_of_fold(X_fit, y_fit, fold, log=log)}
    oof.update(linear_out_of_fold(layout, X_fit, y_fit, fold, seed))
    measured = {k: v[:n_rows] for k, v in oof.items()}
    blend, table = choose(np.asarray(y_fit[:n_rows], dtype=np.float64), measured)
    linear = fit_linear(layout, X_fit, y_fit, seed)
    ship(mlp, blend, linear)
    return blend, table, linear
