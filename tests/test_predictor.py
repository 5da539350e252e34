"""Latency predictor: metrics, MLP ensemble, differentiable forward, baselines, artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from latency.predictor import (
    BASELINES,
    LatencyMLP,
    MLPConfig,
    kendall_tau,
    layout_for_space,
    load_predictor,
    make_baseline,
    mape,
    report,
    rmse,
    save_predictor,
    within,
)
from search_spaces.errors import InputError
from search_spaces.nb201 import NB201_OPS, NB201_SPACE, encode, encode_weights, one_hot

LAYOUT = layout_for_space(NB201_SPACE)
FAST = dict(members=3, steps=400, weight_decay=1.0, huber_delta=0.05)
DATA = Path(__file__).resolve().parents[2] / "shared/data/nb201-latency/nb201_latency.csv"

torch.set_num_threads(1)


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Additive latency: a base plus a per-(edge, op) cost, with 1 % noise."""
    rng = np.random.default_rng(seed)
    cost = rng.uniform(0.0, 2.0, size=(6, 5))
    cost[:, 0] = 0.1  # `none` is cheap
    archs = [NB201_SPACE.sample(rng) for _ in range(n)]
    X = np.stack([encode(a) for a in archs])
    y = np.array([3.0 + (one_hot(a) * cost).sum() for a in archs])
    return X, y * (1 + 0.01 * rng.standard_normal(n))


@pytest.fixture(scope="module")
def fitted() -> tuple[LatencyMLP, np.ndarray, np.ndarray]:
    X, y = synthetic(400)
    return LatencyMLP(LAYOUT, MLPConfig(**FAST)).fit(X[:300], y[:300]), X, y


def test_metrics_on_hand_computed_values():
    y = np.array([1.0, 2.0, 4.0, 10.0])
    p = np.array([1.1, 1.8, 4.0, 9.0])  # relative errors 0.1, 0.1, 0, 0.1
    assert mape(y, p) == pytest.approx(0.075)
    assert within(0.10)(y, p) == 1.0
    assert within(0.05)(y, p) == 0.25
    assert rmse(y, p) == pytest.approx(np.sqrt((0.01 + 0.04 + 0 + 1.0) / 4))
    assert kendall_tau(y, p) == pytest.approx(1.0)
    assert kendall_tau(y, p[::-1]) < 0
    r = report(y, p)
    assert set(r) == {"mape", "within_5", "within_10", "kendall_tau", "rmse"}
    with pytest.raises(InputError):
        mape([1.0, 2.0], [1.0])


def test_mlp_fits_additive_latency(fitted):
    model, X, y = fitted
    mean, std = model.predict(X[300:])
    assert mape(y[300:], mean) < 0.05
    assert (std > 0).all()
    assert model.scale_ms.item() == pytest.approx(y[:300].mean())


def test_fit_is_deterministic():
    X, y = synthetic(120, seed=3)
    cfg = dict(members=2, steps=100, weight_decay=1.0, huber_delta=0.05)
    a = LatencyMLP(LAYOUT, MLPConfig(**cfg)).fit(X, y).predict(X)[0]
    b = LatencyMLP(LAYOUT, MLPConfig(**cfg)).fit(X, y).predict(X)[0]
    np.testing.assert_array_equal(a, b)


def test_forward_is_normalised_and_differentiable(fitted):
    model, X, _ = fitted
    enc = torch.from_numpy(X[:4])
    np.testing.assert_allclose(
        model(enc).detach().double().numpy() * model.scale_ms.item(), model.predict(X[:4])[0],
        rtol=1e-5,
    )
    torch.manual_seed(0)
    alpha = torch.randn(6, 5, dtype=torch.float64)
    m64 = model.double()
    try:
        def f(a: torch.Tensor) -> torch.Tensor:
            return m64(encode_weights(torch.softmax(a, dim=-1)))

        a = alpha.clone().requires_grad_(True)
        f(a).backward()
        eps = 1e-6
        for e, o in [(0, 0), (1, 3), (5, 2)]:
            d = torch.zeros_like(alpha)
            d[e, o] = eps
            fd = ((f(alpha + d) - f(alpha - d)) / (2 * eps)).item()
            assert fd == pytest.approx(a.grad[e, o].item(), rel=1e-4, abs=1e-8)
        assert a.grad.abs().sum() > 0
    finally:
        model.float()


def test_wrong_encoding_size_is_refused(fitted):
    model, _, _ = fitted
    with pytest.raises(InputError, match="48"):
        model.predict(np.zeros((2, 30)))
    with pytest.raises(InputError, match="positive"):
        LatencyMLP(LAYOUT, MLPConfig(**FAST)).fit(np.zeros((20, 48)), -np.ones(20))


def test_baselines_registry():
    X, y = synthetic(200, seed=1)
    for name in BASELINES:
        pred = make_baseline(name, LAYOUT, seed=0).fit(X[:150], y[:150]).predict(X[150:])
        assert pred.shape == (50,) and np.isfinite(pred).all()
    assert mape(y[150:], make_baseline("ridge_onehot", LAYOUT).fit(X[:150], y[:150])
                .predict(X[150:])) < 0.03  # the data are additive: the linear model fits
    with pytest.raises(InputError, match="unknown baseline"):
        make_baseline("svm", LAYOUT)


def _save(model: LatencyMLP, path: Path) -> Path:
    return save_predictor(
        model, path, space="nb201", op_names=NB201_OPS, hardware="test-device",
        dataset="synthetic", metrics={"mape": 0.01},
    )


def test_artifact_round_trip(fitted, tmp_path):
    model, X, _ = fitted
    d = _save(model, tmp_path / "pred")
    loaded, meta = load_predictor(d, op_names=NB201_OPS, encoding_size=48)
    for a, b in zip(model.predict(X), loaded.predict(X)):
        np.testing.assert_array_equal(a, b)
    assert meta["space"] == "nb201" and meta["hardware"] == "test-device"
    assert meta["target_normalisation"]["scale_ms"] == pytest.approx(model.scale_ms.item())
    assert meta["heldout_metrics"] == {"mape": 0.01}


def test_artifact_refuses_other_op_set_or_size(fitted, tmp_path):
    model, _, _ = fitted
    d = _save(model, tmp_path / "pred")
    darts_like = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3")
    with pytest.raises(InputError, match="op set") as info:
        load_predictor(d, op_names=darts_like)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="size 48"):
        load_predictor(d, encoding_size=224)


@pytest.mark.parametrize("damage", ["weights", "weights_swapped", "json", "json_shape", "missing"])
def test_corrupt_artifact_is_one_line_input_error(fitted, tmp_path, damage):
    model, _, _ = fitted
    d = _save(model, tmp_path / "pred")
    weights, meta = d / "weights.pt", d / "predictor.json"
    if damage == "weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "weights_swapped":  # a valid torch file, but with a matching checksum
        torch.save({"x": torch.zeros(1)}, weights)
        m = json.loads(meta.read_text())
        import hashlib

        m["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        meta.write_text(json.dumps(m))
    elif damage == "json":
        meta.write_text(meta.read_text()[:50])
    elif damage == "json_shape":
        meta.write_text("[1, 2, 3]")
    else:
        weights.unlink()
    with pytest.raises(InputError) as info:
        load_predictor(d, op_names=NB201_OPS, encoding_size=48)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not DATA.exists(), reason="shared NB201 latency data not present")
def test_quick_training_on_measured_gpu_latencies():
    import csv

    with DATA.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(rows))[:700]
    X = np.stack([encode(rows[i]["arch"]) for i in pick])
    y = np.array([float(rows[i]["titan_rtx_bs1_ms"]) for i in pick])
    model = LatencyMLP(LAYOUT, MLPConfig(**FAST)).fit(X[:400], y[:400])
    r = report(y[400:], model.predict(X[400:])[0])
    assert r["within_10"] > 0.9 and r["kendall_tau"] > 0.8


def test_frozen_predictor_passes_gradient_to_weights_only(fitted):
    model, _, _ = fitted
    model.zero_grad(set_to_none=True)
    model.freeze()
    try:
        w = torch.full((6, 5), 0.2, requires_grad=True)
        model(encode_weights(w)).backward()
        assert w.grad is not None and w.grad.abs().sum() > 0
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.requires_grad_(True)
