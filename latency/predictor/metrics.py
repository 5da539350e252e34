"""Accuracy of a latency predictor, as fractions (0.97, not 97).

Relative error is what matters for latency (10 % off a 3 ms cell is as bad as 10 % off a
60 ms one), so the headline figures are the share of predictions within +/-5 % and
+/-10 % of the measurement and the mean absolute percentage error; Kendall's tau says
whether the predictor ranks architectures right, which is what a search uses it for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

from search_spaces.errors import InputError


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape or t.size == 0:
        raise InputError(f"need two non-empty arrays of one length, got {t.size} and {p.size}")
    if not (t > 0).all():
        raise InputError("true latencies must be positive for relative errors")
    return t, p


def relative_errors(y_true: Any, y_pred: Any) -> np.ndarray:
    t, p = _pair(y_true, y_pred)
    return np.abs(p - t) / t


def mape(y_true: Any, y_pred: Any) -> float:
    """Mean of |pred - y| / y (a fraction)."""
    return float(relative_errors(y_true, y_pred).mean())


def within(pct: float) -> Callable[[Any, Any], float]:
    """A metric: the share of predictions with |pred - y| / y <= pct (pct a fraction)."""

    def metric(y_true: Any, y_pred: Any) -> float:
        # a hair of tolerance so 10 % written in floating point still counts as 10 %
        return float((relative_errors(y_true, y_pred) <= pct + 1e-12).mean())

    metric.__name__ = f"within_{round(pct * 100)}"
    return metric


def kendall_tau(y_true: Any, y_pred: Any) -> float:
    t, p = _pair(y_true, y_pred)
    return float(kendalltau(t, p).statistic)


def spearman(y_true: Any, y_pred: Any) -> float:
    """Spearman's rank correlation: what the few-shot literature (HELP, NASFLAT) reports."""
    t, p = _pair(y_true, y_pred)
    return float(spearmanr(t, p).statistic)


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error in the units of y (ms)."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def report(y_true: Any, y_pred: Any) -> dict[str, float]:
    """mape, within_5, within_10, kendall_tau, spearman, rmse (fractions; rmse in ms)."""
    return {
        "mape": mape(y_true, y_pred),
        "within_5": within(0.05)(y_true, y_pred),
        "within_10": within(0.10)(y_true, y_pred),
        "kendall_tau": kendall_tau(y_true, y_pred),
        "spearman": spearman(y_true, y_pred),
        "rmse": rmse(y_true, y_pred),
    }
