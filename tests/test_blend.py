"""The shipped model: a blend of the MLP ensemble and linear per-edge models, chosen out of
fold and folded into the ensemble (latency/predictor/blend.py, LatencyMLP.add_linear)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latency.predictor.blend import Blend, candidates, choose, linear_out_of_fold, ship
from latency.predictor.features import layout_for_space
from latency.predictor.mlp import LatencyMLP, MLPConfig
from search_spaces.errors import InputError
from search_spaces.nb201_space import NB201_SPACE

TINY = dict(hidden=8, depth=1, members=3, steps=60, batch_size=32, weight_decay=1.0,
            huber_delta=0.1, encoding_l2=0.0)


def _data(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.zeros((n, NB201_SPACE.encoding_size), dtype=np.float32)
    cells = rng.integers(0, 5, size=(n, 6))
    for i, ops in enumerate(cells):
        arch = "|" + "|+|".join(
            "|".join(f"{NB201_SPACE.op_names[ops[k]]}~{j}" for j, k in
                     zip(range(node), range(sum(range(node)), sum(range(node)) + node),
                         strict=True))
            for node in (1, 2, 3)) + "|"
        X[i] = NB201_SPACE.encode(NB201_SPACE.parse(arch))
    y = 2.0 + cells.sum(axis=1) * 0.3 + rng.normal(0, 0.05, n)
    return X, y


def test_candidates_cover_the_simplex_with_pure_mlp_first() -> None:
    c = candidates(0.25, ("a", "b"))
    assert len(c) == 15  # (4 + 2 choose 2)
    assert c[0] == Blend(1.0, (("a", 0.0), ("b", 0.0)))
    for b in c:
        assert b.mlp + sum(w for _, w in b.linear) == pytest.approx(1.0)
    assert len({b.to_dict().values().__repr__() for b in c}) == 15


def test_choose_picks_the_family_that_is_right_and_ties_go_to_the_mlp() -> None:
    rng = np.random.default_rng(1)
    y = rng.uniform(1, 3, 200)
    noisy = y * np.exp(rng.normal(0, 0.2, 200))
    blend, table = choose(y, {"mlp": noisy, "ridge": y.copy()})
    assert blend.to_dict() == {"mlp": 0.0, "ridge": 1.0}
    assert len(table) == 11  # step 0.1 on one family
    blend, _ = choose(y, {"mlp": y.copy(), "ridge": y.copy()})  # a tie: the MLP
    assert blend.mlp == 1.0


@pytest.mark.parametrize("standardize", [False, True])
def test_add_linear_computes_the_blend_and_keeps_the_gradient(standardize: bool) -> None:
    X, y = _data()
    layout = layout_for_space(NB201_SPACE)
    mlp = LatencyMLP(layout, MLPConfig(**TINY, standardize=standardize)).fit(X, y)
    before, spread = mlp.predict(X)
    a, b = layout.onehot
    coef = np.random.default_rng(2).normal(0, 0.1, b - a)
    intercept = 0.7
    mlp.add_linear(0.25, coef, intercept)
    after, spread_after = mlp.predict(X)
    expected = 0.25 * before + X[:, a:b].astype(np.float64) @ coef + intercept
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(spread_after, 0.25 * spread, rtol=1e-4, atol=1e-6)
    # the folded model stays differentiable in the (soft) encoding: d/d onehot includes coef
    enc = torch.tensor(X[:1], requires_grad=True)
    (mlp(enc).sum() * float(mlp.scale_ms)).backward()
    assert enc.grad is not None and torch.isfinite(enc.grad).all()
    with pytest.raises(InputError, match="coefficients"):
        mlp.add_linear(1.0, coef[:-1], 0.0)


def test_ship_folds_the_chosen_ridges_into_the_ensemble() -> None:
    X, y = _data()
    layout = layout_for_space(NB201_SPACE)
    mlp = LatencyMLP(layout, MLPConfig(**TINY)).fit(X, y)
    from latency.predictor.blend import fit_linear

    linear = fit_linear(layout, X, y, 0)
    alone = mlp.predict(X)[0]
    blend = Blend(0.5, (("ridge_onehot", 0.25), ("ridge_onehot_relative", 0.25)))
    ship(mlp, blend, linear)
    expected = (0.5 * alone + 0.25 * linear["ridge_onehot"].predict(X)
                + 0.25 * linear["ridge_onehot_relative"].predict(X))
    np.testing.assert_allclose(mlp.predict(X)[0], expected, rtol=1e-4)


def test_out_of_fold_predictions_never_see_their_own_label() -> None:
    X, y = _data()
    layout = layout_for_space(NB201_SPACE)
    mlp = LatencyMLP(layout, MLPConfig(**TINY)).fit(X, y)
    fold = np.arange(len(y)) % 4
    first = mlp.out_of_fold(X, y, fold)
    y2 = y.copy()
    y2[fold == 0] *= 3.0  # fold 0's labels change: its own predictions must not
    second = mlp.out_of_fold(X, y2, fold)
    np.testing.assert_array_equal(first[fold == 0], second[fold == 0])
    assert not np.allclose(first[fold == 1], second[fold == 1])
    lin = linear_out_of_fold(layout, X, y, fold, 0)
    lin2 = linear_out_of_fold(layout, X, y2, fold, 0)
    np.testing.assert_array_equal(lin["ridge_onehot"][fold == 0], lin2["ridge_onehot"][fold == 0])
    with pytest.raises(InputError, match="fold"):
        mlp.out_of_fold(X, y, fold[:-1])


def test_train_ships_the_chosen_blend_and_reports_it(tmp_path) -> None:
    """`nas predictor train`'s library call: the artifact is the blend, its held-out
    figures are the report's `shipped` row, and the MLP alone is reported beside it."""
    import json

    from latency.predictor.train import evaluate_predictor, split, train_predictor

    X, y = _data(150, seed=3)
    space = NB201_SPACE
    rows = []
    for x, v in zip(X, y, strict=True):
        ops = [space.op_names[int(np.argmax(x[k * 5:(k + 1) * 5]))] for k in range(6)]
        arch = (f"|{ops[0]}~0|+|{ops[1]}~0|{ops[2]}~1|+|{ops[3]}~0|{ops[4]}~1|{ops[5]}~2|")
        assert np.array_equal(space.encode(space.parse(arch)), x)
        rows.append({"space": "nb201", "arch": arch, "latency_ms": float(v),
                     "source": "simulated"})
    out = tmp_path / "pred"
    summary = train_predictor(rows, out, "dev", "rows", config=MLPConfig(**TINY),
                              baselines=("ridge_onehot",))
    assert list(summary["metrics"]) == ["shipped", "mlp", "ridge_onehot"]
    weights = summary["shipped_model"]
    assert set(weights) == {"mlp", "ridge_onehot", "ridge_onehot_relative"}
    assert sum(weights.values()) == pytest.approx(1.0)
    assert len(summary["model_choice"]["candidates"]) == 66
    meta = json.loads((out / "predictor.json").read_text())
    assert meta["heldout_metrics"] == summary["metrics"]["shipped"]
    assert meta["extra"]["shipped_model"] == weights
    _, test = split(len(rows), 0.2, 0)
    scored = evaluate_predictor(out, [rows[i] for i in test])
    for metric in ("mape", "within_10", "kendall_tau"):
        assert scored[metric] == pytest.approx(summary["metrics"]["shipped"][metric], rel=1e-6)


def test_baselines_flag_parses_all_none_and_lists() -> None:
    from latency.predictor.baselines import BASELINES
    from nas.cli.predictor import parse_baselines

    assert parse_baselines("all") == tuple(BASELINES)
    assert parse_baselines("none") == ()
    assert parse_baselines("ridge_onehot, random_forest") == ("ridge_onehot", "random_forest")
    with pytest.raises(InputError, match="unknown forest"):
        parse_baselines("ridge_onehot,forest")
