"""`nas latency`: predicted latency with uncertainty, measurement where the device is here."""

from __future__ import annotations

import json
import math

import pytest

from nas.cli.main import main


def run_json(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_predicted_latency_from_the_shipped_p100_predictor(capsys) -> None:
    code, r, _ = run_json(["latency", "PDARTS", "--hardware", "p100", "--json"], capsys)
    assert code == 0 and r["label"] == "simulated" and r["measured_ms"] is None
    assert r["predicted_ms"] > 0 and r["predicted_std_ms"] >= 0
    # the figure is the shipped predictor's own, on the genotype's one-hot encoding
    from latency.hardware import profiles_dir
    from latency.predictor.artifact import load_predictor
    from search_spaces.genotype_library import PDARTS
    from search_spaces.space import get_space

    space = get_space("darts")
    mlp, _ = load_predictor(profiles_dir() / "p100.predictor", op_names=space.op_names,
                            encoding_size=space.encoding_size)
    mean, std = mlp.predict(space.encode(PDARTS)[None].astype("float32"))
    assert r["predicted_ms"] == pytest.approx(float(mean[0]), rel=1e-6)
    assert r["predicted_std_ms"] == pytest.approx(float(std[0]), rel=1e-5, abs=1e-9)


def test_measure_on_this_machine_and_refusal_for_a_simulated_device(capsys) -> None:
    code, r, _ = run_json(["latency", "DARTS_V2", "--hardware", "cpu", "--measure", "--json"],
                          capsys)
    assert code == 0 and "torch-cpu" in r["measured_with"]
    # a wall-clock time: positive, finite, and far under 10 s for the 8-cell digits network
    assert 0 < r["measured_ms"] < 10_000 and math.isfinite(r["measured_ms"])
    code, _, err = run_json(["latency", "DARTS_V2", "--hardware", "p100", "--measure"], capsys)
    assert code == 2 and "simulated" in err and err.count("\n") == 1


def test_onnx_file_is_timed_with_onnx_runtime(tmp_path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    from latency.measure import export_onnx
    from search_spaces.genotype_library import DARTS_V2
    from search_spaces.networks import NetworkCIFAR

    net = NetworkCIFAR(DARTS_V2, 8, 5, 10, auxiliary=False, in_channels=1).eval()
    path = export_onnx(net, (1, 8, 8), tmp_path / "net.onnx")
    code, r, _ = run_json(["latency", str(path), "--hardware", "cpu", "--json"], capsys)
    assert code == 0 and "onnxruntime" in r["measured_with"]
    assert 0 < r["measured_ms"] < 10_000 and math.isfinite(r["measured_ms"])


def test_bad_inputs(tmp_path, capsys) -> None:
    for args, needle in [(["latency", "NOPE", "--hardware", "p100"], "unknown genotype"),
                         (["latency", "DARTS_V2", "--hardware", "cpu", "--predictor",
                           str(tmp_path)], "no latency predictor"),
                         (["latency", str(tmp_path / "x.onnx"), "--hardware", "cpu"],
                          "does not exist")]:
        code, _, err = run_json(args, capsys)
        assert code == 2 and needle in err and err.count("\n") == 1


def test_search_on_a_measured_profile_measures_the_derived_genotype(tmp_path, capsys) -> None:
    code = main(["search", "--hardware", "cpu", "--epochs", "1", "--channels", "4", "--layers",
                 "3", "--limit", "64", "--out", str(tmp_path / "r"), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    measured = summary["latency"]["genotype_measured_latency_ms"]
    assert 0 < measured < 10_000 and math.isfinite(measured)
    assert "torch-cpu" in summary["latency"]["measured_with"]
