"""Prediction and measurement at one machine state (issue 15, item 7).

A measured profile's predictor predicts latency at the machine state where its reference
network took `reference_ms` (the median over its samples). `nas latency --measure` and a
search on a measured profile time the network interleaved with that reference network, and
give the prediction moved to the measurement's state beside the raw one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

import latency.profiling as profiling
from latency.predictor.locate import default_predictor_path
from latency.predictor.mlp import MLPConfig
from latency.predictor.train import train_predictor
from latency.profiling import prediction_at_state
from nas.cli.main import main
from search_spaces.space import get_space

FAST = MLPConfig(members=2, steps=60, weight_decay=1.0, huber_delta=0.1, encoding_l2=0.0)


@dataclass
class FakeMeasurement:
    median_ms: float
    spread: float = 0.01
    noisy: bool = False
    runs: int = 10
    backend: str = "torch-cpu"
    batch_size: int = 1
    threads: int = 1


def test_prediction_at_state_scales_by_the_reference() -> None:
    assert prediction_at_state(10.0, 20.0, 30.0) == pytest.approx(15.0)
    assert prediction_at_state(10.0, None, 30.0) is None  # not reference-normalised


@pytest.fixture
def cpu_predictor() -> float:
    """A `cpu` predictor trained on measured rows whose reference network took 20-24 ms;
    returns the reference it was normalised to."""
    space = get_space("darts")
    rng = np.random.default_rng(0)
    rows = []
    for k in range(40):
        arch = space.sample(np.random.default_rng([0, k]))
        ref = 20.0 + 4.0 * rng.random()
        rows.append({"id": k, "seed": 0, "space": "darts", "arch": space.row_form(arch),
                     "latency_ms": 5.0 + rng.random(), "hardware": "cpu",
                     "source": "measured", "backend": "torch-cpu", "batch_size": 1,
                     "timestamp": "2026-11-30T00:00:00+00:00", "reference_ms": ref})
    summary = train_predictor(rows, default_predictor_path("cpu", for_writing=True), "cpu",
                              "synthetic", config=FAST)
    assert summary["reference_normalised"]
    return float(summary["reference_ms"])


def test_nas_latency_measure_gives_the_prediction_at_the_measured_state(
        cpu_predictor, monkeypatch, capsys) -> None:
    calls = []

    def fake(profile, model, shape, backend=None, timing=None):
        calls.append(profile.name)
        return FakeMeasurement(6.0), FakeMeasurement(30.0)

    monkeypatch.setattr(profiling, "measure_at_state", fake)
    assert main(["latency", "DARTS_V2", "--hardware", "cpu", "--measure", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert calls == ["cpu"] and r["measured_ms"] == 6.0 and r["reference_now_ms"] == 30.0
    assert r["reference_trained_ms"] == pytest.approx(cpu_predictor)
    assert r["predicted_at_state_ms"] == pytest.approx(
        r["predicted_ms"] * 30.0 / cpu_predictor, rel=1e-9)
    assert main(["latency", "DARTS_V2", "--hardware", "cpu", "--measure"]) == 0
    text = capsys.readouterr().out
    assert "predicted at this machine state" in text and "30.000 ms now" in text


def test_a_search_on_a_measured_profile_reports_both(cpu_predictor, monkeypatch, tmp_path,
                                                     capsys) -> None:
    monkeypatch.setattr(profiling, "measure_at_state",
                        lambda *a, **k: (FakeMeasurement(6.0), FakeMeasurement(12.0)))
    code = main(["search", "--hardware", "cpu", "--epochs", "1", "--channels", "4",
                 "--layers", "3", "--limit", "64", "--out", str(tmp_path / "r"), "--json"])
    assert code == 0
    lat = json.loads(capsys.readouterr().out)["latency"]
    assert lat["genotype_measured_latency_ms"] == 6.0 and lat["reference_now_ms"] == 12.0
    assert lat["genotype_predicted_at_state_ms"] == pytest.approx(
        lat["genotype_predicted_latency_ms"] * 12.0 / cpu_predictor, rel=1e-9)
