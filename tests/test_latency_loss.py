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
from nas.search.architect import Architect
from nas.search.latency_loss import PredictorLatency, latency_term, predicted_latency
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
    # the logged latency is the predictor's on the epoch's soft weights, as logged beside it
    arch = json.loads((tmp_path / "run" / "arch_weights.jsonl").read_text().splitlines()[0])
    mlp_loaded, _ = load_predictor(pred, op_names=SPACE.op_names,
                                   encoding_size=SPACE.encoding_size)
    model = PredictorLatency(mlp_loaded)
    weights = {k: torch.tensor(v) for k, v in arch["weights"].items()}
    expected = predicted_latency(model, SPACE, weights, arch["edge_ops"])
    assert log[0]["predicted_latency_ms"] == pytest.approx(expected, rel=1e-4)
    # the term averaged over the epoch's steps is lambda * LAT / ref at weights that moved
    # little in one epoch
    assert log[0]["latency_loss"] == pytest.approx(0.5 * expected / model.reference_ms,
                                                   rel=0.05)


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
    assert "nas predictor train --hardware p100 --space nb201" in err


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
    assert ev["n"] == 15 and ev["reference_normalised"] is False  # simulated rows
    # the metrics recomputed here from the saved predictor's predictions on every row
    from search_spaces.genotype import Genotype

    rows = load_samples(samples)
    mlp_loaded, _ = load_predictor(out, op_names=SPACE.op_names,
                                   encoding_size=SPACE.encoding_size)
    X = np.stack([SPACE.encode(Genotype.from_dict(r["arch"])) for r in rows])
    pred = mlp_loaded.predict(X.astype(np.float32))[0]
    y = np.array([r["latency_ms"] for r in rows])
    rel = np.abs(pred - y) / y
    assert ev["mape"] == pytest.approx(rel.mean(), rel=1e-6)
    assert ev["within_5"] == pytest.approx((rel <= 0.05).mean())
    assert ev["within_10"] == pytest.approx((rel <= 0.10).mean())
    # Kendall tau by pairs (no ties among continuous latencies): (concordant - discordant)
    # over all pairs
    pairs = [(i, j) for i in range(len(y)) for j in range(i + 1, len(y))]
    signs = [np.sign(y[i] - y[j]) * np.sign(pred[i] - pred[j]) for i, j in pairs]
    assert ev["kendall_tau"] == pytest.approx(sum(signs) / len(pairs), abs=1e-9)
    for args, needle in [(["predictor", "eval", "--predictor", str(out)], "--samples"),
                         (["predictor", "train", "--hardware", "p100", "--samples",
                           str(tmp_path / "missing.jsonl")], "does not exist"),
                         (["predictor", "eval", "--predictor", str(tmp_path), "--samples",
                           str(samples)], str(tmp_path))]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err


# ------------------------------------------------------------------ the term inside the search


@pytest.fixture
def one_thread():
    """Bit-reproducible CPU kernels for the architecture-step tests; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _arch(net, terms, second_order=False, lr=3e-4):
    return Architect(net, lr=lr, betas=(0.5, 0.999), weight_decay=1e-3, weight_momentum=0.9,
                     weight_weight_decay=3e-4, second_order=second_order, terms=terms)


def _batch(g: torch.Generator, dtype=torch.float32, n: int = 8):
    return torch.randn(n, 1, 8, 8, generator=g, dtype=dtype), torch.randint(0, 10, (n,),
                                                                            generator=g)


def _latency_after_arch_steps(model, weight: float, seed: int, steps: int = 8
                              ) -> tuple[list[float], list[dict[str, float]]]:
    """Predicted latency of the soft architecture before and after each first-order step."""
    edge_ops = SPACE.full_edge_ops()
    torch.manual_seed(seed)
    net = SPACE.build_supernet(C=4, layers=3, num_classes=10, in_channels=1)
    # a larger arch LR than the search default so a few Adam steps move alpha visibly
    arch = _arch(net, [latency_term(model, SPACE, edge_ops, weight)], lr=0.05)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9)
    g = torch.Generator().manual_seed(seed + 100)
    lats = [predicted_latency(model, SPACE, net.arch_weights(), edge_ops)]
    stats = []
    for _ in range(steps):
        xt, yt = _batch(g)
        xv, yv = _batch(g)
        stats.append(arch.step(xt, yt, xv, yv, 0.025, opt))
        lats.append(predicted_latency(model, SPACE, net.arch_weights(), edge_ops))
    return lats, stats


@pytest.mark.parametrize("seed", [0, 1])
def test_a_positive_latency_weight_lowers_the_predicted_latency(mlp, one_thread, seed) -> None:
    model = PredictorLatency(mlp.float())
    heavy, heavy_stats = _latency_after_arch_steps(model, weight=10.0, seed=seed)
    free, free_stats = _latency_after_arch_steps(model, weight=0.0, seed=seed)
    # same seed, same supernet: the two runs start from the same soft architecture
    assert heavy[0] == free[0]
    margin = 0.03 * heavy[0]
    # the term dominates the step: latency falls clearly, and at every step
    assert heavy[-1] < heavy[0] - margin, heavy
    assert all(b < a for a, b in zip(heavy, heavy[1:])), heavy
    # without the term the validation loss alone does not buy that drop
    assert free[-1] > free[0] - margin, free
    assert heavy[-1] < free[-1] - margin
    # the logged value is the term itself: lambda * LAT / ref at the step's alpha
    assert heavy_stats[0]["latency_loss"] == pytest.approx(
        10.0 * heavy[0] / model.reference_ms, rel=1e-5)
    assert all(s["latency_loss"] == 0.0 for s in free_stats)


def _soft_alpha(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(14, 8, generator=g, dtype=torch.float64).requires_grad_()
            for k in SPACE.cell_types}


def test_budget_hinge_below_target_is_exactly_zero_with_zero_gradient(mlp) -> None:
    model = PredictorLatency(mlp.double())
    edge_ops = SPACE.full_edge_ops()
    alpha = _soft_alpha(5)
    w = {k: torch.softmax(a, -1) for k, a in alpha.items()}
    lat = predicted_latency(model, SPACE, w, edge_ops)
    for target in (1.5 * lat, lat):  # well below the budget, and exactly on it
        term = latency_term(model, SPACE, edge_ops, weight=3.0, target_ms=target)
        value = term({k: torch.softmax(a, -1) for k, a in alpha.items()})
        assert value.item() == 0.0
        for a in alpha.values():
            a.grad = None
        value.backward()
        for a in alpha.values():
            assert a.grad is None or torch.count_nonzero(a.grad) == 0
    # the additive form at the same alpha is not flat: the zero above is the hinge's
    additive = latency_term(model, SPACE, edge_ops, weight=3.0)
    grads = torch.autograd.grad(additive({k: torch.softmax(a, -1) for k, a in alpha.items()}),
                                list(alpha.values()))
    assert all(g.abs().sum() > 0 for g in grads)


def test_budget_hinge_below_target_leaves_the_architect_step_unchanged(mlp, one_thread) -> None:
    """Inside the architect: a budget that is met adds nothing to the alpha gradient."""
    model = PredictorLatency(mlp.float())
    edge_ops = SPACE.full_edge_ops()
    torch.manual_seed(2)
    net = SPACE.build_supernet(C=4, layers=3, num_classes=10, in_channels=1)
    net.eval()
    x, y = _batch(torch.Generator().manual_seed(7))
    lat = predicted_latency(model, SPACE, net.arch_weights(), edge_ops)
    grads = {}
    for name, terms in [("none", []),
                        ("met", [latency_term(model, SPACE, edge_ops, 5.0, 1.2 * lat)]),
                        ("missed", [latency_term(model, SPACE, edge_ops, 5.0, 0.8 * lat)])]:
        stats = _arch(net, terms)._first_order_grads(x, y)
        grads[name] = [a.grad.clone() for a in net.arch_parameters()]
        if name == "met":
            assert stats["latency_loss"] == 0.0
        if name == "missed":
            assert stats["latency_loss"] == pytest.approx(5.0 * (1 / 0.8 - 1), rel=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(grads["none"], grads["met"]))
    assert not all(torch.equal(a, b) for a, b in zip(grads["none"], grads["missed"]))


def test_budget_hinge_above_target_is_positive_and_matches_finite_differences(mlp) -> None:
    model = PredictorLatency(mlp.double())
    edge_ops = SPACE.full_edge_ops()
    alpha = _soft_alpha(6)

    def soft() -> dict[str, torch.Tensor]:
        return {k: torch.softmax(a, -1) for k, a in alpha.items()}

    lat = predicted_latency(model, SPACE, soft(), edge_ops)
    target, weight = 0.8 * lat, 2.0
    term = latency_term(model, SPACE, edge_ops, weight=weight, target_ms=target)
    value = term(soft())
    assert value.item() > 0
    assert value.item() == pytest.approx(weight * (lat / target - 1.0), rel=1e-12)
    grads = torch.autograd.grad(value, list(alpha.values()))
    assert all(g.abs().sum() > 0 for g in grads)
    # above the budget the hinge is linear in LAT: its gradient is the additive term's
    # scaled by reference / target
    additive = latency_term(model, SPACE, edge_ops, weight=weight)
    add_grads = torch.autograd.grad(additive(soft()), list(alpha.values()))
    for g, ga in zip(grads, add_grads):
        torch.testing.assert_close(g, ga * model.reference_ms / target, rtol=1e-10, atol=1e-14)
    eps = 1e-6
    for (cell, g), (e, k) in zip(zip(alpha, grads), [(3, 5), (12, 1)]):
        with torch.no_grad():
            alpha[cell][e, k] += eps
            up = float(term(soft()))
            alpha[cell][e, k] -= 2 * eps
            down = float(term(soft()))
            alpha[cell][e, k] += eps
        # the whole +-eps interval stays above the budget (no kink inside)
        assert up > 0 and down > 0
        assert g[e, k].item() == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-10)


@pytest.mark.parametrize("target_factor", [None, 0.8])
def test_second_order_step_adds_exactly_the_latency_term_gradient(mlp, one_thread,
                                                                   target_factor) -> None:
    """The unrolled part acts on the validation loss only; the latency term, which does not
    depend on the network weights, adds its own alpha gradient and nothing else."""
    model = PredictorLatency(mlp.double())
    edge_ops = SPACE.full_edge_ops()
    torch.manual_seed(4)
    net = SPACE.build_supernet(C=4, layers=3, num_classes=10, in_channels=1).double()
    g = torch.Generator().manual_seed(11)
    xt, yt = _batch(g, torch.float64)
    xv, yv = _batch(g, torch.float64)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(xt), yt).backward()
    opt.step()  # a momentum buffer for the virtual step
    opt.zero_grad(set_to_none=True)
    saved = {k: v.detach().clone() for k, v in net.state_dict().items()}
    alphas = net.arch_parameters()
    lat = predicted_latency(model, SPACE, net.arch_weights(), edge_ops)
    target = None if target_factor is None else target_factor * lat
    eta, weight = 0.05, 0.5

    def second_order_grads(w: float) -> tuple[list[torch.Tensor], dict[str, float]]:
        net.load_state_dict(saved)  # same weights, alpha and BN buffers for every run
        arch = _arch(net, [latency_term(model, SPACE, edge_ops, w, target)],
                     second_order=True)
        stats = arch.step(xt, yt, xv, yv, eta, opt)
        grads = [a.grad.detach().clone() for a in alphas]
        assert all(torch.isfinite(gr).all() for gr in grads)
        assert not any(torch.equal(a, saved[f"arch.{k}"]) for k, a in net.arch.items())
        return grads, stats

    base, base_stats = second_order_grads(0.0)
    with_term, stats = second_order_grads(weight)
    assert base_stats["arch_loss"] == stats["arch_loss"]
    assert stats["latency_loss"] > 0

    # the term's gradient on its own, at the same alpha
    net.load_state_dict(saved)
    term = latency_term(model, SPACE, edge_ops, weight, target)
    direct = torch.autograd.grad(term(net.arch_weights()), alphas)
    assert stats["latency_loss"] == pytest.approx(
        float(term(net.arch_weights()).detach()), rel=1e-12)
    for b, t, d in zip(base, with_term, direct):
        # not a vacuous check: the term moves the gradient by a visible fraction
        assert d.norm() > 1e-3 * b.norm()
        torch.testing.assert_close(t - b, d, rtol=1e-7, atol=1e-12)

    # and the unrolled correction is really there: the lambda = 0 second-order gradient
    # differs from the first-order one at the same state
    net.load_state_dict(saved)
    arch = _arch(net, [])
    arch._first_order_grads(xv, yv)
    first = [a.grad.detach().clone() for a in alphas]
    assert any((f - b).abs().max() > 1e-8 for f, b in zip(first, base))
