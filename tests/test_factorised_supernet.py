"""The factorised supernet (operations x activations, issue 16): alpha and beta, the shared
activation mixture, its gradients, derivation of (op, activation) pairs, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nas.cli.main import main
from search_spaces.derive import derive_cell
from search_spaces.space import get_space
from search_spaces.supernet import SourceEdges, SuperNet, activation_key, cell_edges
from search_spaces.supernet_ops import MIXED, BatchedDilConv, SourceCache

ACTS = ("relu", "silu", "elu")
OPS = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"]


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def tiny_search(capsys, out_dir, space: str, activations: str, layers: int) -> dict:
    """A one-epoch `nas search --activations` on 64 digits images; its JSON summary."""
    code, out, err = run_cli(
        ["search", "--space", space, "--activations", activations, "--epochs", "1",
         "--channels", "4", "--layers", str(layers), "--limit", "64", "--out", str(out_dir),
         "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def small_supernet(activations=ACTS, seed: int = 0) -> SuperNet:
    torch.manual_seed(seed)
    edges = len(cell_edges(4))
    ops = {c: [list(OPS)] * edges for c in ("normal", "reduce")}
    return SuperNet(4, 10, 3, ops, in_channels=3, activations=activations)


def test_beta_sits_beside_alpha_per_edge_and_cell_type() -> None:
    net = small_supernet()
    assert set(net.arch) == {"normal", "reduce", activation_key("normal"),
                             activation_key("reduce")}
    assert tuple(net.arch[activation_key("normal")].shape) == (14, len(ACTS))
    arch_ids = {id(p) for p in net.arch_parameters()}
    assert len(arch_ids) == 4
    assert not arch_ids & {id(p) for p in net.weight_parameters()}
    weights = net.arch_weights()
    for key in (activation_key("normal"), activation_key("reduce")):
        torch.testing.assert_close(weights[key].sum(dim=-1), torch.ones(14))
    out = net(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 10)
    out.sum().backward()
    for key in net.arch:
        assert net.arch[key].grad is not None and net.arch[key].grad.abs().sum() > 0, key


def test_plain_supernet_is_unchanged_by_the_feature() -> None:
    net = small_supernet(activations=())
    assert set(net.arch) == {"normal", "reduce"}


def test_unknown_or_repeated_activation_is_refused() -> None:
    with pytest.raises(Exception, match="unknown activation 'swishy'"):
        small_supernet(activations=("relu", "swishy"))
    with pytest.raises(ValueError, match="repeat"):
        small_supernet(activations=("relu", "relu"))


def _source(activations=ACTS, ops=OPS) -> SourceEdges:
    torch.manual_seed(1)
    edge_ops = [list(ops), list(ops)]
    return SourceEdges(4, 1, [0, 1], edge_ops, len(ops), activations=activations).double()


def test_alpha_and_beta_gradients_match_finite_differences() -> None:
    src = _source()
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    probe = torch.randn(3, 2, 4, 6, 6, dtype=torch.float64)
    alpha = torch.randn(2, len(OPS), dtype=torch.float64, requires_grad=True)
    beta = torch.randn(2, len(ACTS), dtype=torch.float64, requires_grad=True)

    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = src(x, torch.softmax(a, -1).reshape(-1), torch.softmax(b, -1))
        return (out * probe).sum()

    loss(alpha, beta).backward()
    eps = 1e-6
    for param, grad in ((alpha, alpha.grad), (beta, beta.grad)):
        assert grad is not None
        numeric = torch.zeros_like(param)
        for idx in np.ndindex(*param.shape):
            with torch.no_grad():
                param[idx] += eps
                up = loss(alpha, beta)
                param[idx] -= 2 * eps
                down = loss(alpha, beta)
                param[idx] += eps
            numeric[idx] = (up - down) / (2 * eps)
        torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-7)


def test_shared_mixture_equals_the_joint_sum_for_an_op_linear_after_its_activation() -> None:
    """dil_conv = activation -> depthwise -> pointwise -> BN: with BN in eval mode the part
    after the activation is affine, so conv(sum_n q_n a_n(x)) = sum_n q_n conv(a_n(x))
    exactly: the shared mixture computes the joint sum over (op, activation) pairs."""
    torch.manual_seed(2)
    n_edges = 2
    mixed = BatchedDilConv(4, 1, n_edges, 3, 2, 2, repeat=1, activation=MIXED).double().eval()
    with torch.no_grad():
        for m in mixed.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    q = torch.softmax(torch.randn(n_edges, len(ACTS), dtype=torch.float64), -1)
    shared = mixed(SourceCache(x, ACTS, q))
    joint = torch.zeros_like(shared)
    for k, name in enumerate(ACTS):
        single = BatchedDilConv(4, 1, n_edges, 3, 2, 2, repeat=1, activation=name)
        single = single.double().eval()
        single.load_state_dict(mixed.state_dict())
        joint += q[:, k].view(1, n_edges, 1, 1, 1) * single(SourceCache(x))
    torch.testing.assert_close(shared, joint, rtol=1e-10, atol=1e-12)


def test_separable_conv_mixes_its_second_activation_with_the_same_weights() -> None:
    """sep_conv's inner activation is nonlinear, so the mixture is not the joint sum; with
    a one-hot q it must be exactly the op with that activation."""
    torch.manual_seed(3)
    mixed = BatchedDilConv(4, 1, 2, 3, 1, 1, repeat=2, activation=MIXED).double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    for k, name in enumerate(ACTS):
        q = torch.zeros(2, len(ACTS), dtype=torch.float64)
        q[:, k] = 1.0
        single = BatchedDilConv(4, 1, 2, 3, 1, 1, repeat=2, activation=name).double()
        single.load_state_dict(mixed.state_dict())
        torch.testing.assert_close(mixed(SourceCache(x, ACTS, q)), single(SourceCache(x)))


def test_derivation_takes_the_argmax_of_the_joint_weight() -> None:
    ops = ["none", "skip_connect", "sep_conv_3x3"]
    edge_ops = [ops] * 5  # nodes 2 and 3 of a 2-step cell: edges 0-1 and 2-4
    p = np.array([
        [0.1, 0.2, 0.7],   # node 2, edge from 0: sep strongest (0.7)
        [0.1, 0.5, 0.4],   # node 2, edge from 1: skip (0.5)
        [0.1, 0.1, 0.8],   # node 3, edge from 0: sep (0.8) but low activation confidence
        [0.1, 0.6, 0.3],   # node 3, edge from 1: skip (0.6)
        [0.1, 0.3, 0.6],   # node 3, edge from 2: sep (0.6)
    ])
    q = np.array([
        [0.2, 0.7, 0.1],   # silu
        [0.9, 0.05, 0.05],
        [0.4, 0.3, 0.3],   # joint 0.8 * 0.4 = 0.32: weaker than the others
        [0.1, 0.1, 0.8],   # elu, but skip carries no activation
        [0.1, 0.1, 0.8],   # elu: joint 0.48
    ])
    gene = derive_cell(p, edge_ops, 2, (q, ACTS))
    assert gene == [("sep_conv_3x3/silu", 0), ("skip_connect", 1),
                    ("skip_connect", 1), ("sep_conv_3x3/elu", 2)]
    # without the activation factor, DARTS' own rule: edges 0 and 2 of node 3
    assert derive_cell(p, edge_ops, 2)[2:] == [("sep_conv_3x3", 0), ("skip_connect", 1)]


def test_space_derives_pairs_and_reads_them_back() -> None:
    space = get_space("darts")
    net = small_supernet()
    with torch.no_grad():
        net.arch[activation_key("normal")][:, 1] += 5.0  # silu everywhere in normal cells
    g = space.derive(net.arch_weights(), net.edge_ops, activations=ACTS)
    heavy = [op for op, _ in g.normal if op.startswith(("sep", "dil"))]
    assert all(op.endswith("/silu") for op in heavy)
    assert not any("/" in op for op, _ in g.normal if op.startswith(("skip", "max", "avg")))
    assert space.parse(g.to_dict()) == g
    with pytest.raises(Exception, match="activation weights"):
        space.derive({"normal": net.arch_weights()["normal"],
                      "reduce": net.arch_weights()["reduce"]}, net.edge_ops, activations=ACTS)


def test_search_cli_with_activations(tmp_path, capsys) -> None:
    out_dir = tmp_path / "r"
    summary = tiny_search(capsys, out_dir, "darts", "relu,silu", layers=3)
    config = json.loads((out_dir / "config.json").read_text())
    assert config["search"]["activations"] == ["relu", "silu"]
    arch = [json.loads(x) for x in (out_dir / "arch_weights.jsonl").read_text().splitlines()]
    assert activation_key("normal") in arch[-1]["weights"]
    assert len(arch[-1]["weights"][activation_key("normal")][0]) == 2
    assert arch[-1]["edge_ops"][activation_key("normal")][0] == ["relu", "silu"]
    get_space("darts").parse(summary["genotype"])
    # the report draws beta beside alpha
    code, _, err = run_cli(["report", str(out_dir)], capsys)
    assert code == 0, err
    pictures = {p.name for p in (out_dir / "report").glob("*.png")}
    assert {"alpha_normal.png", "beta_normal.png", "beta_reduce.png"} <= pictures


@pytest.mark.parametrize("args, message", [
    (["--activations", "relu,swishy"], "unknown activation 'swishy'"),
    (["--activations", "relu,relu"], "repeats"),
    (["--activations", "all", "--hardware", "h100", "--latency-weight", "0.1"],
     "h100.darts-act.predictor; run `nas profile --hardware h100 --space darts-act`"),
])
def test_search_cli_refuses_bad_activation_settings(tmp_path, capsys, args, message) -> None:
    base = ["search", "--epochs", "1", "--out", str(tmp_path / "r")]
    if "--space" not in args:
        base += ["--space", "darts"]
    code, _, err = run_cli(base + args, capsys)
    assert code != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_nb201_search_cli_with_activations(tmp_path, capsys) -> None:
    out_dir = tmp_path / "n"
    summary = tiny_search(capsys, out_dir, "nb201", "all", layers=1)
    arch = get_space("nb201").parse(summary["genotype"])
    assert arch is not None
    weights = [json.loads(x) for x in
               (out_dir / "arch_weights.jsonl").read_text().splitlines()][-1]["weights"]
    assert len(weights[activation_key("normal")][0]) == 5


def test_nb201_mixed_convolution_reads_each_edges_own_mixture() -> None:
    """NB201's conv for n edges is one conv with n*C outputs; in a factorised supernet each
    edge's C x C slice must see only its own activation mixture (a grouped conv)."""
    from search_spaces.supernet_ops import BatchedReLUConvBN

    torch.manual_seed(4)
    mixed = BatchedReLUConvBN(4, 1, 3, 3, activation=MIXED).double().eval()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    q = torch.softmax(torch.randn(3, len(ACTS), dtype=torch.float64), -1)
    out = mixed(SourceCache(x, ACTS, q))
    for e in range(3):
        single = BatchedReLUConvBN(4, 1, 1, 3, activation="relu").double().eval()
        with torch.no_grad():
            single.conv.weight.copy_(mixed.conv.weight[e * 4:(e + 1) * 4])
            single.bn.running_mean.copy_(mixed.bn.running_mean[e * 4:(e + 1) * 4])
            single.bn.running_var.copy_(mixed.bn.running_var[e * 4:(e + 1) * 4])
        mix = sum(q[e, k] * SourceCache(x).activated(a) for k, a in enumerate(ACTS))
        expected = single.bn(single.conv(mix))
        torch.testing.assert_close(out[:, e], expected)


def test_pdarts_final_derivation_names_pairs_and_limits_skips() -> None:
    space = get_space("darts")
    net = small_supernet()
    with torch.no_grad():
        net.arch["normal"][:, OPS.index("skip_connect")] += 3.0  # skips everywhere
        net.arch[activation_key("normal")][:, ACTS.index("elu")] += 4.0
        net.arch[activation_key("reduce")][:, ACTS.index("silu")] += 4.0
    g, by_limit = space.derive_limiting_skips(net.arch_weights(), net.edge_ops, 2,
                                              activations=ACTS)
    assert sum(op == "skip_connect" for op, _ in g.normal) <= 2
    convs = [op for op, _ in g.normal + g.reduce if op.startswith(("sep", "dil"))]
    assert convs and all(op.endswith(("/elu", "/silu")) for op in convs)
    assert all(op.endswith("/elu") for op, _ in g.normal if op.startswith(("sep", "dil")))
    assert str(2) in by_limit


def test_factorised_search_reports_latency_from_the_activation_aware_predictor(
        tmp_path, capsys) -> None:
    """p100 ships a darts-act predictor: the summary gives the derived pairs' latency;
    h100 has none: the summary says which predictor is missing."""
    base = ["search", "--space", "darts", "--activations", "relu,silu", "--epochs", "1",
            "--channels", "4", "--layers", "3", "--limit", "32"]
    code, out, err = run_cli(base + ["--hardware", "p100", "--out", str(tmp_path / "p"),
                                     "--json"], capsys)
    assert code == 0, err
    lat = json.loads(out)["latency"]
    assert lat["genotype_predicted_latency_ms"] > 0 and lat["latency_label"] == "simulated"
    code, out, err = run_cli(base + ["--hardware", "h100", "--out", str(tmp_path / "h")],
                             capsys)
    assert code == 0, err
    assert "no trained predictor for the darts-act encoding yet, so no latency figures" in out
    assert "nas profile --hardware h100 --space darts-act" in err
