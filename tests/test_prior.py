"""The device prior (`latency.predictor.prior`): few-sample adaptation to a new device.

Synthetic devices with a known structure (log-latency linear in the prior's features,
weights on a low-rank subspace) check that adaptation recovers a held-out device's
latencies from few samples; the rest checks files, the torch path and bad input. Only
the last test reads the measured NB201 data, and it is skipped when that is absent (the
product never reads it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from latency.predictor.features import layout_for_space
from latency.predictor.prior import (
    MIN_SAMPLES,
    AdaptedPredictor,
    DevicePrior,
    PriorConfig,
    PriorFeatures,
    shipped_prior_path,
)
from search_spaces.errors import InputError, first_line
from search_spaces.nb201 import NB201_OPS, format_arch
from search_spaces.nb201_space import NB201_SPACE

LAYOUT = layout_for_space(NB201_SPACE)
FEATS = PriorFeatures(LAYOUT)
#: one candidate each, no selection: fast and exactly known
FIXED = PriorConfig(rho=0.0, jitter=1e-6, min_ms=None)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201-latency"


def _cells(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    archs = [format_arch(tuple(NB201_OPS[i] for i in rng.integers(5, size=6)))
             for _ in range(n)]
    return archs, np.stack([NB201_SPACE.encode(a) for a in archs]).astype(np.float64)


@pytest.fixture(scope="module")
def world() -> dict:
    """Eight prior devices + one new one, log-latency = phi . (m + B a_d), B of rank 3
    (one direction is the bias: devices differ in overall speed), noise sd 1 %."""
    rng = np.random.default_rng(0)
    F = FEATS.num_features
    archs, X = _cells(1500, 1)
    phi = FEATS.numpy(X)
    m = rng.normal(0.0, 0.05, F)
    m[0] = np.log(10.0)
    B = rng.normal(0.0, 0.03, (F, 3))
    B[:, 0] = 0.0
    B[0, 0] = 0.7
    A = rng.normal(0.0, 1.0, (9, 3))
    W = m + A @ B.T
    clean = np.exp(phi @ W.T)  # (cells, devices)
    noisy = clean * np.exp(rng.normal(0.0, 0.01, clean.shape))
    names = [f"dev{i}" for i in range(8)]
    return {"archs": archs, "X": X, "clean": clean, "noisy": noisy, "names": names, "W": W}


@pytest.fixture(scope="module")
def prior(world: dict) -> DevicePrior:
    return DevicePrior.from_matrix(world["X"], world["noisy"][:, :8], world["names"], LAYOUT,
                                   config=PriorConfig.from_dict(FIXED.to_dict()),
                                   space="nb201", op_names=list(NB201_OPS))


# ------------------------------------------------------------------ recovery


def test_low_rank_device_recovered_from_ten_samples(world: dict, prior: DevicePrior) -> None:
    X, clean, noisy = world["X"], world["clean"][:, 8], world["noisy"][:, 8]
    idx = np.arange(10)
    model = prior.adapt(X[idx], noisy[idx])
    mean, std = model.predict(X[100:])
    rel = np.abs(mean / clean[100:] - 1.0)
    assert np.median(rel) < 0.01 and rel.max() < 0.04
    # the reported spread is of the size of the error, not wildly off either way
    assert 0.003 < np.median(std / mean) < 0.05


def test_without_the_prior_ten_samples_are_not_enough(world: dict, prior: DevicePrior) -> None:
    """The same ten samples under a prior that knows nothing of the devices (one device
    repeated: zero covariance, only the isotropic jitter) miss by far more: the recovery
    above is the prior's doing."""
    X, clean, noisy = world["X"], world["clean"][:, 8], world["noisy"][:, 8]
    flat = DevicePrior(LAYOUT, PriorConfig(rho=0.0, jitter=1e-2, min_ms=None), ["a", "b"],
                       np.repeat(prior.weights.mean(0, keepdims=True), 2, axis=0),
                       prior.noise_vars[:2])
    mean, _ = flat.adapt(X[:10], noisy[:10]).predict(X[100:])
    assert np.median(np.abs(mean / clean[100:] - 1.0)) > 0.03


def test_a_known_device_is_identified_from_five_samples(world: dict,
                                                       prior: DevicePrior) -> None:
    """Linear structure: the new device is prior device 3 measured again (fresh noise);
    the mixture's per-device components pick it out from five samples."""
    X = world["X"]
    truth = world["clean"][:, 3]
    model = prior.with_settings(rho=0.1).adapt(X[:5], truth[:5])
    mean, _ = model.predict(X[100:])
    rel = np.abs(mean / truth[100:] - 1.0)
    assert np.median(rel) < 0.01 and rel.max() < 0.03
    weights = model.info["closest_components"]
    assert max(weights, key=weights.get) == "dev3" and weights["dev3"] > 0.9


def test_an_outlier_sample_is_down_weighted(world: dict, prior: DevicePrior) -> None:
    """One of twelve samples measured 3x too slow (the device was busy): the Student-t
    likelihood keeps the fit on the other eleven; a Gaussian one is pulled away."""
    X, clean = world["X"], world["clean"][:, 8]
    y = clean[:12].copy()
    y[4] *= 3.0
    rel = {}
    for nu in (4.0, None):
        cfg = PriorConfig.from_dict({**prior.config.to_dict(), "robust_nu": nu})
        p = DevicePrior(LAYOUT, cfg, prior.devices, prior.weights, prior.noise_vars)
        model = p.adapt(X[:12], y)
        mean, _ = model.predict(X[100:])
        rel[nu] = np.median(np.abs(mean / clean[100:] - 1.0))
        if nu is not None:
            assert model.info["downweighted_samples"] == 1
    assert rel[4.0] < 0.015 and rel[None] > 2 * rel[4.0]


def test_selection_runs_and_records_its_choice(world: dict) -> None:
    cfg = PriorConfig(rho=(0.0, 0.3), jitter=(1e-6,), select_k=(5,), select_draws=1,
                      select_cells=200, min_ms=None)
    p = DevicePrior.from_matrix(world["X"][:400], world["noisy"][:400, :5], world["names"][:5],
                                LAYOUT, config=cfg)
    assert p.selection["adaptations"] == 5
    assert len(p.selection["mean_spearman"]) == 2
    assert [p.rho, p.jitter] == p.selection["chosen"]


def test_fit_from_sample_rows_equals_fit_from_encodings(world: dict) -> None:
    n = 200
    rows = {d: [{"arch": a, "latency_ms": float(v)}
                for a, v in zip(world["archs"][:n], world["noisy"][:n, i], strict=True)]
            for i, d in enumerate(["a", "b", "c"])}
    by_rows = DevicePrior.fit(rows, LAYOUT, config=PriorConfig.from_dict(FIXED.to_dict()),
                              space="nb201")
    by_enc = DevicePrior.fit({d: (world["X"][:n], world["noisy"][:n, i])
                              for i, d in enumerate(["a", "b", "c"])}, LAYOUT,
                             config=PriorConfig.from_dict(FIXED.to_dict()))
    np.testing.assert_allclose(by_rows.weights, by_enc.weights, rtol=1e-10, atol=1e-12)
    with pytest.raises(InputError, match="latency_ms"):
        DevicePrior.fit({"a": [{"arch": world["archs"][0]}] * 20, "b": rows["b"]}, LAYOUT,
                        space="nb201")


def test_fit_drops_missing_and_near_zero_rows(world: dict) -> None:
    Y = world["noisy"][:300, :3].copy()
    Y[:10, 0] = np.nan
    Y[10:20, 1] = 0.01
    p = DevicePrior.from_matrix(world["X"][:300], Y, ["a", "b", "c"], LAYOUT,
                                config=PriorConfig(rho=0.0, jitter=1e-6, min_ms=1.0))
    assert p.samples_per_device == [290, 290, 300]


# --------------------------------------------------------------------- files


def test_save_load_round_trip_predicts_identically(tmp_path: Path, world: dict,
                                                   prior: DevicePrior) -> None:
    X, y = world["X"], world["noisy"][:, 8]
    meta = prior.save(tmp_path / "p")
    assert meta.name == "p.json" and (tmp_path / "p.pt").is_file()
    back = DevicePrior.load(tmp_path / "p.json", op_names=NB201_OPS, encoding_size=48)
    a = prior.adapt(X[:20], y[:20]).predict(X[50:300])
    b = back.adapt(X[:20], y[:20]).predict(X[50:300])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert back.devices == prior.devices and back.rho == prior.rho


def test_load_refuses_corrupt_or_foreign_priors(tmp_path: Path, prior: DevicePrior) -> None:
    meta = prior.save(tmp_path / "p")
    with pytest.raises(InputError, match="op set"):
        DevicePrior.load(meta, op_names=NB201_OPS[::-1])
    with pytest.raises(InputError, match="size"):
        DevicePrior.load(meta, encoding_size=47)
    pt = tmp_path / "p.pt"
    pt.write_bytes(pt.read_bytes()[:-3])
    with pytest.raises(InputError, match="checksum"):
        DevicePrior.load(meta)
    with pytest.raises(InputError, match="not found"):
        DevicePrior.load(tmp_path / "absent")
    data = json.loads(meta.read_text())
    data["format"] = "something else"
    meta.write_text(json.dumps(data))
    with pytest.raises(InputError, match="not a"):
        DevicePrior.load(meta)


def test_adapted_model_state_round_trip(world: dict, prior: DevicePrior) -> None:
    model = prior.adapt(world["X"][:20], world["noisy"][:20, 8])
    back = AdaptedPredictor.from_state(model.metadata(), model.state_dict())
    a, b = model.predict(world["X"][:200]), back.predict(world["X"][:200])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# ----------------------------------------------------------------- torch path


def test_torch_path_equals_predict_on_one_hot(world: dict, prior: DevicePrior) -> None:
    model = prior.adapt(world["X"][:20], world["noisy"][:20, 8])
    X = world["X"][200:400]
    mean, _ = model.predict(X)
    out32 = model(torch.tensor(X, dtype=torch.float32)) * float(model.scale_ms)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.detach().numpy(), mean, rtol=2e-5)
    np.testing.assert_allclose(model.latency_ms(torch.tensor(X)).detach().numpy(), mean,
                               rtol=1e-6)
    # as the search's latency term uses it
    from nas.search.latency_loss import PredictorLatency

    lat = PredictorLatency(model).latency_ms(torch.tensor(X[:3], dtype=torch.float32))
    np.testing.assert_allclose(lat.numpy(), mean[:3], rtol=2e-5)


def test_gradients_on_soft_encodings_match_finite_differences(world: dict,
                                                              prior: DevicePrior) -> None:
    model = prior.adapt(world["X"][:20], world["noisy"][:20, 8])
    model = AdaptedPredictor.from_state(model.metadata(), model.state_dict()).double()
    logits = torch.randn(2, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                         requires_grad=True)

    def latency(z: torch.Tensor) -> torch.Tensor:
        return model(NB201_SPACE.encode_weights(torch.softmax(z, dim=-1)))

    assert torch.autograd.gradcheck(latency, (logits,), eps=1e-6, atol=1e-7, rtol=1e-5)
    enc = torch.rand(3, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                     requires_grad=True)
    assert torch.autograd.gradcheck(model, (enc,), eps=1e-6, atol=1e-7, rtol=1e-5)
    grad = torch.autograd.grad(latency(logits).sum(), logits)[0]
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---------------------------------------------------------------- bad input


def _one_line(exc: pytest.ExceptionInfo[InputError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and first_line(exc.value) == text
    return text


def test_bad_input_is_one_line(world: dict, prior: DevicePrior) -> None:
    X, y = world["X"], world["noisy"][:, 8].copy()
    with pytest.raises(InputError) as e:
        prior.adapt(X[:MIN_SAMPLES - 1], y[:MIN_SAMPLES - 1])
    assert "at least" in _one_line(e)
    with pytest.raises(InputError) as e:
        prior.adapt(X[:10, :47], y[:10])
    assert "shape" in _one_line(e)
    bad = y[:10].copy()
    bad[3] = np.nan
    with pytest.raises(InputError) as e:
        prior.adapt(X[:10], bad)
    assert "finite" in _one_line(e)
    bad[3] = -1.0
    with pytest.raises(InputError):
        prior.adapt(X[:10], bad)
    with pytest.raises(InputError) as e:
        prior.adapt([{"arch": world["archs"][0]}] * 5)
    assert "latency_ms" in _one_line(e)
    with pytest.raises(InputError) as e:
        prior.adapt(X[:10], y[:10], min_ms=1e9)
    _one_line(e)
    model = prior.adapt(X[:10], y[:10])
    with pytest.raises(InputError) as e:
        model.predict(X[:5, :40])
    _one_line(e)
    with pytest.raises(InputError) as e:
        model(torch.zeros(2, 40))
    _one_line(e)
    with pytest.raises(InputError):
        DevicePrior.from_matrix(X[:50], world["noisy"][:50, :1], ["one"], LAYOUT)
    with pytest.raises(InputError):
        DevicePrior.from_matrix(X[:50], -world["noisy"][:50, :2], ["a", "b"], LAYOUT)


def test_rows_and_archs_are_accepted(world: dict, prior: DevicePrior) -> None:
    archs, y = world["archs"][:12], world["noisy"][:12, 8]
    rows = [{"arch": a, "latency_ms": float(v)} for a, v in zip(archs, y, strict=True)]
    by_rows = prior.adapt(rows).predict(world["archs"][20:40])
    by_pair = prior.adapt((archs, y)).predict(world["X"][20:40])
    by_enc = prior.adapt(world["X"][:12], y).predict(world["X"][20:40])
    np.testing.assert_allclose(by_rows[0], by_enc[0], rtol=1e-12)
    np.testing.assert_allclose(by_pair[0], by_enc[0], rtol=1e-12)


# ----------------------------------------------------------- shipped / real data


def test_shipped_nb201_prior_loads_and_adapts() -> None:
    path = shipped_prior_path("nb201")
    if not path.is_file():
        pytest.skip("no shipped NB201 prior (bench/build_nb201_prior.py builds it)")
    assert (path.parent / "NOTICE").is_file()
    p = DevicePrior.load(path, op_names=NB201_SPACE.op_names,
                         encoding_size=NB201_SPACE.encoding_size)
    assert "MIT" in (p.notice or "") and len(p.devices) == 15
    assert path.stat().st_size + path.with_suffix(".pt").stat().st_size < 2_000_000
    archs, X = _cells(30, 7)
    conv3 = X[:, :30].reshape(-1, 6, 5)[:, :, NB201_OPS.index("nor_conv_3x3")].sum(1)
    y = 5.0 + 2.0 * conv3  # a device where a 3x3 conv costs 2 ms
    model = p.adapt([{"arch": a, "latency_ms": float(v)} for a, v in zip(archs, y, strict=True)])
    mean, std = model.predict(archs)
    assert np.isfinite(mean).all() and (std > 0).all()
    assert np.corrcoef(mean, y)[0, 1] > 0.95


@pytest.mark.skipif(not SHARED.is_dir(), reason="measured NB201 data not available")
def test_real_device_left_out_ranks_well_from_twenty_samples() -> None:
    import csv

    rows = list(csv.DictReader((SHARED / "nb201_latency.csv").open()))
    more = list(csv.DictReader((SHARED / "nb201_latency_more_devices.csv").open()))
    rng = np.random.default_rng(0)
    pick = rng.choice(len(rows), 2500, replace=False)
    X = np.stack([NB201_SPACE.encode(rows[i]["arch"]) for i in pick]).astype(np.float64)
    cols = ["titan_rtx_bs1_ms", "gold_6226_bs1_ms", "raspi4_bs1_ms"]
    more_cols = [c for c in more[0] if c.endswith("_ms")]
    Y = np.array([[float(rows[i][c]) for c in cols] + [float(more[i][c]) for c in more_cols]
                  for i in pick])
    names = cols + more_cols
    out = names.index("raspi4_bs1_ms")
    keep = [i for i in range(len(names)) if i != out]
    p = DevicePrior.from_matrix(X, np.where(Y[:, keep] >= 1, Y[:, keep], np.nan),
                                [names[i] for i in keep], LAYOUT,
                                config=PriorConfig(rho=0.1, jitter=1e-5))
    y = Y[:, out]
    usable = np.where(y >= 1)[0]
    model = p.adapt(X[usable[:20]], y[usable[:20]])
    from scipy.stats import spearmanr

    mean, _ = model.predict(X[usable[20:]])
    assert spearmanr(mean, y[usable[20:]]).statistic > 0.93
