"""scikit-learn baselines on the same encodings, to show what the MLP has to beat.

* `ridge_onehot`: the additive model: latency in ms as a linear function of the
  per-edge one-hot only (each op on each edge has a cost), plain least squares.
* `ridge_onehot_relative`: the same fitted by least *relative* squares (sample weight
  1/y^2), since relative error is what is judged; better where latency is additive
  (GPU), far worse where it is not (ARM: the fast cells take over the fit).
* `gradient_boosting`, `random_forest`: trees on the predictor's full feature map
  (encoding + derived features), trained on log latency. Sized for the time a user
  waits: histogram gradient boosting (400 rounds of depth-3 trees) and a forest of 100
  trees that each split on a third of the features. On the p100 samples (800 training
  rows plus their equivalent cells, one thread) they fit in 3.7 s and 3.6 s where the
  previous exact gradient boosting and 300-tree forest took 11.7 s and 25.4 s; held-out
  Kendall tau 0.940 and 0.898 against 0.943 and 0.876 (`bench_lodo_predictor.py` keeps
  the previous two beside them as extra bars).

`BASELINES` maps a name to a factory ``(layout, seed) -> model``; each model has
``fit(X, y_ms)`` and ``predict(X) -> ms`` on encodings, like the MLP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Ridge

from latency.predictor.features import FeatureLayout, FeatureMap
from search_spaces.errors import InputError


class SklearnBaseline:
    """A scikit-learn regressor behind the predictor's fit/predict interface."""

    def __init__(
        self, name: str, layout: FeatureLayout, model: Any, inputs: str, target: str
    ) -> None:
        self.name = name
        self.layout = layout
        self.model = model
        self.inputs = inputs  # "onehot" | "features"
        self.target = target  # "log" | "ms" | "relative"
        self._map = FeatureMap(layout)

    def _x(self, X: Any) -> np.ndarray:
        enc = torch.as_tensor(np.asarray(X, dtype=np.float32))
        if enc.ndim != 2 or enc.shape[1] != self.layout.encoding_size:
            raise InputError(
                f"encodings must have shape (n, {self.layout.encoding_size}), "
                f"got {tuple(enc.shape)}"
            )
        if self.inputs == "onehot":
            a, b = self.layout.onehot
            return enc[:, a:b].numpy()
        with torch.no_grad():
            return self._map(enc).numpy()

    def fit(self, X: Any, y: Any) -> SklearnBaseline:
        y = np.asarray(y, dtype=np.float64)
        if not (np.isfinite(y).all() and (y > 0).all()):
            raise InputError("latencies must be finite and positive")
        x = self._x(X)
        if self.target == "log":
            self.model.fit(x, np.log(y))
        elif self.target == "ms":
            self.model.fit(x, y)
        else:
            self.model.fit(x, y, sample_weight=1.0 / y**2)
        return self

    def predict(self, X: Any) -> np.ndarray:
        out = self.model.predict(self._x(X))
        return np.exp(out) if self.target == "log" else out


Factory = Callable[[FeatureLayout, int], SklearnBaseline]

BASELINES: dict[str, Factory] = {
    "ridge_onehot": lambda layout, seed: SklearnBaseline(
        "ridge_onehot", layout, Ridge(alpha=1e-2), "onehot", "ms"
    ),
    "ridge_onehot_relative": lambda layout, seed: SklearnBaseline(
        "ridge_onehot_relative", layout, Ridge(alpha=1e-2), "onehot", "relative"
    ),
    "gradient_boosting": lambda layout, seed: SklearnBaseline(
        "gradient_boosting",
        layout,
        HistGradientBoostingRegressor(
            max_iter=400, learning_rate=0.05, max_depth=3, early_stopping=False,
            random_state=seed,
        ),
        "features",
        "log",
    ),
    "random_forest": lambda layout, seed: SklearnBaseline(
        "random_forest",
        layout,
        RandomForestRegressor(n_estimators=100, min_samples_leaf=2, max_features=1 / 3,
                              random_state=seed, n_jobs=1),
        "features",
        "log",
    ),
}


def make_baseline(name: str, layout: FeatureLayout, seed: int = 0) -> SklearnBaseline:
    if name not in BASELINES:
        raise InputError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return BASELINES[name](layout, seed)
