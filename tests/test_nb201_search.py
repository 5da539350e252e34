"""NAS-Bench-201 with DARTS: supernet, derivation, search and profiling wired for nb201."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latency.predictor.artifact import save_predictor
from latency.predictor.features import layout_for_space
from latency.predictor.mlp import LatencyMLP, MLPConfig
from latency.predictor.train import encode_rows
from latency.profiling import sample_genotype
from latency.samples import load_samples
from latency.simulate import deployed_network, simulate_genotype
from nas.cli.main import main
from nas.run_dir import RunDir
from nas.search.architect import Architect
from nas.search.config import preset_config, validate_config
from nas.search.driver import run_search
from nas.search.latency_loss import PredictorLatency, predicted_latency
from search_spaces.errors import InputError
from search_spaces.nb201 import NB201_OPS, Nb201Arch, encode, one_hot, parse_arch
from search_spaces.nb201_space import NB201_SPACE
from search_spaces.nb201_supernet import Nb201SuperNet
from search_spaces.supernet_ops import SharedIdentity

torch.set_num_threads(1)

# Several convolutions leave node 0 (one batched conv serves them), every op appears.
CONVS = ("|nor_conv_1x1~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
         "+|nor_conv_3x3~0|avg_pool_3x3~1|nor_conv_1x1~2|")
LIGHT = "|skip_connect~0|+|none~0|avg_pool_3x3~1|+|nor_conv_3x3~0|none~1|skip_connect~2|"
PRUNED = [  # three ops per edge, different ones per edge (P-DARTS-style pruning)
    ["nor_conv_1x1", "skip_connect", "none"],
    ["nor_conv_3x3", "none", "avg_pool_3x3"],
    ["avg_pool_3x3", "nor_conv_3x3", "skip_connect"],
    ["nor_conv_3x3", "skip_connect", "nor_conv_1x1"],
    ["none", "avg_pool_3x3", "nor_conv_3x3"],
    ["skip_connect", "nor_conv_1x1", "none"],
]


def supernet(edge_ops=None, C: int = 4, N: int = 1, seed: int = 0) -> Nb201SuperNet:
    torch.manual_seed(seed)
    return NB201_SPACE.build_supernet(C, N, 10, in_channels=1, edge_ops=edge_ops).double()


def images(seed: int, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 10, (n,), generator=g)


def one_hot_on(arch: Nb201Arch, edge_ops) -> torch.Tensor:
    w = torch.zeros(6, len(edge_ops[0]), dtype=torch.float64)
    for e, op in enumerate(arch.ops):
        w[e, list(edge_ops[e]).index(op)] = 1.0
    return w


def test_supernet_interface_and_output_shape() -> None:
    net = supernet(C=4, N=2)
    assert set(net.arch) == {"normal"} and net.arch["normal"].shape == (6, 5)
    assert float(net.arch["normal"].detach().abs().max()) < 0.01  # 1e-3 * randn
    w = net.arch_weights()["normal"]
    torch.testing.assert_close(w.sum(-1), torch.ones(6, dtype=w.dtype))
    ids = {id(p) for p in net.weight_parameters()}
    assert id(net.arch["normal"]) not in ids
    assert len(ids) + 1 == len(list(net.parameters()))
    assert net(images(0)[0]).shape == (6, 10)
    assert len(net.cells) == 3 * 2 + 2  # 3 stages of N cells, 2 reduction blocks
    net.set_skip_dropout(0.3)
    skips = [m for m in net.modules() if isinstance(m, SharedIdentity)]
    assert skips and all(m.p == 0.3 for m in skips)
    assert NB201_SPACE.cell_types == ("normal",)
    assert NB201_SPACE.full_edge_ops() == {"normal": [list(NB201_OPS)] * 6}


@pytest.mark.parametrize(("arch_text", "pruned"), [(CONVS, False), (LIGHT, False),
                                                   ("|nor_conv_1x1~0|+|nor_conv_3x3~0|"
                                                    "avg_pool_3x3~1|+|nor_conv_1x1~0|"
                                                    "nor_conv_3x3~1|nor_conv_1x1~2|", True)])
def test_one_hot_supernet_computes_the_discrete_network(arch_text, pruned) -> None:
    arch = parse_arch(arch_text)
    edge_ops = {"normal": PRUNED} if pruned else None
    net = supernet(edge_ops, C=4, N=2, seed=1)
    ops = net.edge_ops["normal"]
    weights = {"normal": one_hot_on(arch, ops)}
    x, _ = images(1)
    net.train()
    net(x, weights)  # moves the BN running statistics away from their initial values
    discrete = net.discrete_network(arch).double()
    for mode in ("eval", "train"):
        net.train(mode == "train")
        discrete.train(mode == "train")
        out = net(x, weights)
        ref = discrete(x)
        assert float(ref.detach().abs().max()) > 1e-3
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    # and a different architecture computes something else
    other = {"normal": torch.roll(weights["normal"], 1, dims=1)}
    assert not torch.allclose(net(x, other), net(x, weights))


def test_arch_gradient_matches_finite_differences() -> None:
    net = supernet(C=4, N=1, seed=2)
    net.eval()  # running statistics: the loss is a smooth function of alpha
    x, y = images(2)
    arch = Architect(net, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3,
                     weight_momentum=0.9, weight_weight_decay=3e-4)
    arch._first_order_grads(x, y)
    alpha = net.arch["normal"]
    g = alpha.grad.clone()
    eps = 1e-6
    for e, k in [(0, 3), (5, 2)]:
        with torch.no_grad():
            alpha[e, k] += eps
            up = float(F.cross_entropy(net(x), y))
            alpha[e, k] -= 2 * eps
            down = float(F.cross_entropy(net(x), y))
            alpha[e, k] += eps
        assert abs(g[e, k].item()) > 1e-8
        assert g[e, k].item() == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-9)


def test_derive_takes_the_argmax_per_edge_none_included() -> None:
    w = torch.full((6, 5), 0.1)
    picks = [0, 3, 1, 4, 2, 0]  # none twice: NB201 keeps every edge
    for e, k in enumerate(picks):
        w[e, k] = 0.6
    expected = Nb201Arch(tuple(NB201_OPS[k] for k in picks))
    assert NB201_SPACE.derive({"normal": w}) == expected == NB201_SPACE.derive(w.numpy())
    edge_ops = {"normal": PRUNED}
    wp = torch.zeros(6, 3)
    wp[torch.arange(6), torch.tensor([2, 0, 1, 2, 0, 1])] = 1.0
    got = NB201_SPACE.derive({"normal": wp}, edge_ops)
    assert got.ops == ("none", "nor_conv_3x3", "nor_conv_3x3", "nor_conv_1x1", "none",
                       "nor_conv_1x1")
    with pytest.raises(InputError, match="shape"):
        NB201_SPACE.derive({"normal": wp})


def test_encode_weights_takes_the_driver_dict_and_pruned_op_sets() -> None:
    arch = parse_arch(CONVS)
    soft = NB201_SPACE.encode_weights({"normal": torch.from_numpy(one_hot(arch))},
                                      NB201_SPACE.full_edge_ops())
    assert torch.equal(soft, torch.from_numpy(encode(arch)))
    edge_ops = {"normal": PRUNED}
    pruned_arch = Nb201Arch(tuple(ops[0] for ops in PRUNED))
    w = torch.zeros(6, 3, dtype=torch.float64)
    w[:, 0] = 1.0
    enc = NB201_SPACE.encode_weights({"normal": w}, edge_ops)
    np.testing.assert_array_equal(enc.numpy(), encode(pruned_arch))
    torch.manual_seed(0)
    alpha = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    # soft weights over pruned sets: the same as the (6, 5) weights scattered by hand
    soft = alpha.detach().softmax(-1)
    full = torch.zeros(6, 5, dtype=torch.float64)
    for e, ops in enumerate(PRUNED):
        for j, op in enumerate(ops):
            full[e, NB201_OPS.index(op)] = soft[e, j]
    torch.testing.assert_close(NB201_SPACE.encode_weights({"normal": soft}, edge_ops),
                               NB201_SPACE.encode_weights(full))
    # and differentiable: the gradient of a random projection matches finite differences
    probe = torch.randn(48, dtype=torch.float64)

    def f(a: torch.Tensor) -> torch.Tensor:
        return (NB201_SPACE.encode_weights({"normal": a.softmax(-1)}, edge_ops) * probe).sum()

    f(alpha).backward()
    eps = 1e-6
    for e, k in [(0, 0), (2, 1), (5, 2)]:
        d = torch.zeros_like(alpha)
        d[e, k] = eps
        with torch.no_grad():
            fd = ((f(alpha + d) - f(alpha - d)) / (2 * eps)).item()
        assert alpha.grad[e, k].item() == pytest.approx(fd, rel=1e-5, abs=1e-9)
    assert alpha.grad.abs().max() > 1e-3


def test_arch_json_round_trip() -> None:
    arch = parse_arch(LIGHT)
    assert arch.to_dict() == {"space": "nb201", "arch": LIGHT}
    assert NB201_SPACE.parse(json.loads(json.dumps(arch.to_dict()))) == arch
    with pytest.raises(InputError, match="'space'"):
        NB201_SPACE.parse({"normal": []})


def test_config_presets_and_validation() -> None:
    small = preset_config("darts", "small", "nb201")
    assert (small.space, small.layers, small.init_channels) == ("nb201", 1, 8)
    validate_config(small)
    assert preset_config("darts", "paper", "nb201").layers == 5
    assert preset_config("darts", "small") == preset_config("darts", "small", "darts")
    with pytest.raises(InputError, match="P-DARTS"):
        validate_config(preset_config("pdarts", "small").with_overrides(space="nb201"))
    with pytest.raises(InputError, match="at least 3"):
        validate_config(preset_config("darts", "small").with_overrides(layers=1))


def test_cli_search_nb201_writes_a_parsable_arch(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["search", "--space", "nb201", "--hardware", "p100", "--epochs", "1",
                 "--channels", "4", "--batch-size", "32", "--limit", "64", "--out", str(out),
                 "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "genotype.json").read_text())
    arch = parse_arch(saved["arch"])
    assert saved == {"space": "nb201", "arch": str(arch)} == summary["genotype"]
    assert summary["genotype_literal"] == str(arch)
    assert "latency" not in summary  # no nb201 predictor for p100: the hardware is recorded
    config = json.loads((out / "config.json").read_text())
    assert config["search"]["space"] == "nb201" and config["search"]["hardware"] == "p100"
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and NB201_SPACE.parse(log[0]["genotype"]) == arch
    weights = json.loads((out / "arch_weights.jsonl").read_text().splitlines()[0])
    assert np.array(weights["weights"]["normal"]).shape == (6, 5)


def test_resumed_nb201_search_ends_with_the_same_arch(tmp_path) -> None:
    cfg = preset_config("darts", "small", "nb201").with_overrides(
        epochs=3, init_channels=4, batch_size=32, data_limit=128, seed=1)
    full = run_search(cfg, RunDir.create(tmp_path / "full", {"search": cfg.to_dict()}),
                      log=lambda m: None)
    run = RunDir.create(tmp_path / "killed", {"search": cfg.to_dict()})
    calls = []

    def kill_after_second_epoch(msg: str) -> None:
        calls.append(msg)
        if len(calls) == 2:  # log line written, that epoch's checkpoint not yet
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, run, log=kill_after_second_epoch)
    resumed = run_search(cfg, RunDir.open(run.path), resume=True, log=lambda m: None)
    assert resumed.genotype == full.genotype
    a, b = (r.run_dir.read_jsonl("log.jsonl") for r in (full, resumed))
    assert [x["genotype"] for x in a] == [x["genotype"] for x in b] and len(a) == 3
    assert a[-1]["train_loss"] == pytest.approx(b[-1]["train_loss"], rel=1e-6)


def test_cli_search_nb201_with_a_latency_predictor(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    X = np.stack([encode(NB201_SPACE.sample(rng)) for _ in range(40)]).astype(np.float32)
    y = 1.0 + X[:, :30] @ rng.uniform(0.1, 1.0, 30)
    fast = MLPConfig(members=1, steps=50, refit_on_all=False)
    mlp = LatencyMLP(layout_for_space(NB201_SPACE), fast).fit(X, y)
    pred = save_predictor(mlp, tmp_path / "pred", space="nb201", op_names=NB201_OPS,
                          hardware="p100", dataset="synthetic")
    code = main(["search", "--space", "nb201", "--hardware", "p100", "--predictor", str(pred),
                 "--latency-weight", "0.5", "--epochs", "1", "--channels", "4",
                 "--batch-size", "32", "--limit", "64", "--out", str(tmp_path / "run"),
                 "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    # the derived cell's latency is the predictor's on its one-hot encoding
    arch = parse_arch(summary["genotype"]["arch"])
    derived = float(mlp.predict(encode(arch)[None])[0][0])
    assert summary["latency"]["genotype_predicted_latency_ms"] == pytest.approx(derived,
                                                                                rel=1e-5)
    # the logged soft latency is the predictor's on the epoch's logged soft weights
    log = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    weights = json.loads((tmp_path / "run" / "arch_weights.jsonl").read_text().splitlines()[0])
    model = PredictorLatency(mlp)
    expected = predicted_latency(model, NB201_SPACE,
                                 {k: torch.tensor(v) for k, v in weights["weights"].items()},
                                 weights["edge_ops"])
    assert log["predicted_latency_ms"] == pytest.approx(expected, rel=1e-5)
    assert log["genotype_predicted_latency_ms"] == pytest.approx(derived, rel=1e-5)
    # the epoch's average term is lambda * LAT / ref at weights that moved little
    assert log["latency_loss"] == pytest.approx(0.5 * expected / model.reference_ms, rel=0.05)


def test_cli_profile_nb201_rows_resume_and_encode(tmp_path, capsys) -> None:
    out = tmp_path / "nb201.jsonl"
    args = ["profile", "--hardware", "p100", "--space", "nb201", "--samples", "3",
            "--out", str(out), "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["written"] == 3
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["written"], again["already_present"]) == (0, 3)
    rows = load_samples(out)
    assert [r["id"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert r["space"] == "nb201" and r["source"] == "simulated"
        arch = parse_arch(r["arch"])  # the benchmark string, as imported NB201 rows store it
        assert r["arch"] == str(arch) == str(sample_genotype(NB201_SPACE, 0, r["id"]))
        # the roofline latency of the cell's deployed network on p100
        assert r["latency_ms"] == pytest.approx(simulate_genotype(arch, "p100").ms, rel=1e-12)
    space, X, y = encode_rows(rows)  # what `nas predictor train --samples` reads
    assert space is NB201_SPACE and X.shape == (3, 48)
    np.testing.assert_array_equal(X, np.stack([encode(r["arch"]) for r in rows]))
    assert y.tolist() == [r["latency_ms"] for r in rows]
    # a file of another space is refused rather than silently skipped by id
    assert main(["profile", "--hardware", "p100", "--samples", "3", "--out", str(out)]) == 2
    assert "holds samples of space nb201, not darts" in capsys.readouterr().err


def test_deployed_nb201_network_uses_benchmark_shape_and_profile_input() -> None:
    arch = parse_arch(CONVS)
    model, shape = deployed_network(arch, "cpu")  # cpu: digits, 1 x 8 x 8, DARTS 8 cells
    assert shape == (1, 8, 8)
    cells = [m for m in model.cells if type(m).__name__ == "InferCell"]
    assert len(cells) == 15 and model.stem[0].out_channels == 16
    with torch.no_grad():
        assert model(torch.randn(1, *shape)).shape == (1, 10)
