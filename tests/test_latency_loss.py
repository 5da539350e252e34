"""The latency term: gradients through the frozen predictor, and the search wired to it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latency.hardware import load_profile
from latency.predictor.artifact import load_predictor
from latency.predictor.features import layout_for_space
from latency.predictor.mlp import LatencyMLP, MLPConfig
from latency.predictor.train import train_predictor
from latency.profiling import profile_hardware
from latency.samples import load_samples
from nas.cli.main import main
from nas.search.latency_loss import PredictorLatency, latency_term
from search_spaces.space import get_space

SPACE = get_space("darts")
FAST = MLPConfig(members=2, steps=150, weight_decay=1.0, huber_delta=0.1, refit_on_all=False)


@pytest.fixture(scope="module")
def mlp() -> LatencyMLP:
    rng = np.random.default_rng(0)
    X = np.stack([SPACE.encode(SPACE.sample(rng)) for _ in range(60)]).astype(np.float32)
    cost = rng.uniform(0.1, 1.0, X.shape[1])
    y = 1.0 + X @ cost
    return LatencyMLP(layout_for_space(SPACE), FAST).fit(X, y)


@pytest.mark.parametrize("target", [None, 1.0])
def test_latency_term_gradient_matches_finite_differences(mlp, target) -> None:
    model = PredictorLatency(mlp.double())
    edge_ops = SPACE.full_edge_ops()
    torch.manual_seed(0)
    alpha = {k: torch.randn(14, 8, dtype=torch.float64, requires_grad=True) for k in edge_ops}
    # a budget below every prediction keeps the hinge active for the check
    term = latency_term(model, SPACE, edge_ops, weight=0.7,
                        target_ms=None if target is None else 0.5 * model.reference_ms)

    def loss() -> torch.Tensor:
        return term({k: torch.softmax(a, -1) for k, a in alpha.items()})

    grads = torch.autograd.grad(loss(), list(alpha.values()))
    assert grads[0].abs().sum() > 0
    eps = 1e-6
    for (cell, g), (e, k) in zip(zip(alpha, grads), [(0, 4), (9, 2)]):
        with torch.no_grad():
            alpha[cell][e, k] += eps
            up = float(loss())
            alpha[cell][e, k] -= 2 * eps
            down = float(loss())
            alpha[cell][e, k] += eps
        assert g[e, k].item() == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-10)


def test_predictor_is_frozen_and_one_hot_matches_genotype_prediction(mlp) -> None:
    model = PredictorLatency(mlp.float())
    assert all(not p.requires_grad for p in model.mlp.parameters())
    g = SPACE.sample(np.random.default_rng(3))
    enc = torch.tensor(SPACE.encode(g))
    one_hot = {"normal": enc.view(2, 14, 8)[0], "reduce": enc.view(2, 14, 8)[1]}
    a = model.latency_ms(SPACE.encode_weights(one_hot))
    b = torch.as_tensor(mlp.predict(enc[None].numpy())[0][0], dtype=a.dtype)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_search_with_latency_weight_logs_predicted_latency(tmp_path, capsys) -> None:
    samples = tmp_path / "p100.jsonl"
    profile_hardware(load_profile("p100"), SPACE, samples, samples=12, log=lambda m: None)
    pred = tmp_path / "pred"
    train_predictor(load_samples(samples), pred, "p100", str(samples), config=FAST,
                    baselines=("ridge_onehot",))
    load_predictor(pred, op_names=SPACE.op_names, encoding_size=SPACE.encoding_size)
    code = main(["search", "--space", "darts", "--hardware", "p100", "--predictor", str(pred),
                 "--latency-weight", "0.5", "--epochs", "1", "--channels", "4", "--layers",
                 "3", "--limit", "64", "--out", str(tmp_path / "run"), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["latency"]["latency_label"] == "simulated"
    # a predictor trained on 12 samples: the summary says to take its figures with care
    assert "trained on only" in summary["latency"]["caution"]
    run_summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert run_summary["latency"]["caution"] == summary["latency"]["caution"]
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["predicted_latency_ms"] > 0 and log[0]["latency_loss"] > 0


@pytest.mark.parametrize("weight", [["--latency-weight", "1"], []])
def test_a_named_predictor_that_is_not_there_is_a_one_line_error(tmp_path, capsys,
                                                                 weight) -> None:
    """With or without a latency weight: a typo in --predictor never means "no latency"."""
    code = main(["search", "--hardware", "p100", "--predictor", str(tmp_path / "none"),
                 *weight, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "no latency predictor" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_space_without_a_predictor_says_how_to_make_one(tmp_path, capsys) -> None:
    code = main(["search", "--space", "nb201", "--hardware", "p100", "--latency-weight", "1",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "nas profile --hardware p100 --space nb201" in err
    assert "p100.nb201.samples.jsonl" in err


def test_predictor_cli_train_and_eval(tmp_path, capsys, monkeypatch) -> None:
    import latency.predictor.train as train_mod

    monkeypatch.setattr(train_mod, "MLPConfig", lambda seed=0: FAST)
    samples = tmp_path / "s.jsonl"
    profile_hardware(load_profile("p100"), SPACE, samples, samples=15, log=lambda m: None)
    out = tmp_path / "pred"
    assert main(["predictor", "train", "--hardware", "p100", "--samples", str(samples),
                 "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_test"] == 3 and {"mlp", "gradient_boosting"} <= set(report["metrics"])
    assert (out / "calibration.png").stat().st_size > 1000
    assert main(["predictor", "eval", "--predictor", str(out), "--samples", str(samples),
                 "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    # fractions, not percents
    assert 0.0 <= ev["within_5"] <= ev["within_10"] <= 1.0 and -1.0 <= ev["kendall_tau"] <= 1.0
    assert ev["mape"] >= 0.0 and ev["n"] == 15
    for args, needle in [(["predictor", "eval", "--predictor", str(out)], "--samples"),
                         (["predictor", "train", "--hardware", "p100", "--samples",
                           str(tmp_path / "missing.jsonl")], "does not exist"),
                         (["predictor", "eval", "--predictor", str(tmp_path), "--samples",
                           str(samples)], str(tmp_path))]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
