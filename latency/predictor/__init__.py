"""Latency predictors: features of an encoding, the MLP ensemble, baselines, metrics,
and the on-disk artifact.

The public entry points, so callers need not know the module layout::

    layout = layout_for_space(space)
    model = LatencyMLP(layout).fit(X, y_ms)          # X: encodings (n, D)
    mean_ms, std_ms = model.predict(X)
    lat = model(space.encode_weights(w))            # differentiable, units of scale_ms
    save_predictor(model, "dir", space=..., op_names=..., hardware=..., dataset=...)
    model, meta = load_predictor("dir", op_names=..., encoding_size=...)
"""

from latency.predictor.artifact import load_predictor, read_metadata, save_predictor
from latency.predictor.baselines import BASELINES, make_baseline
from latency.predictor.features import FeatureLayout, FeatureMap, layout_for_space
from latency.predictor.metrics import kendall_tau, mape, report, rmse, within
from latency.predictor.mlp import LatencyMLP, MLPConfig

__all__ = [
    "BASELINES",
    "FeatureLayout",
    "FeatureMap",
    "LatencyMLP",
    "MLPConfig",
    "kendall_tau",
    "layout_for_space",
    "load_predictor",
    "make_baseline",
    "mape",
    "read_metadata",
    "report",
    "rmse",
    "save_predictor",
    "within",
]
