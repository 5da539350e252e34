"""The Lipschitz term in a search: per-edge constants of the supernet's batched operations
(nas/robust/supernet_lipschitz.py), the term and its gradient (nas/search/lipschitz_loss.py),
and `nas search --lipschitz-budget` end to end (logging, effect, resume, errors).

Batched constants are checked against the same operation built on its own with one edge's
weights (and, for FactorizedReduce, against its exact dense operator norm); the test
first checks that the standalone op computes what the batched one computes for that edge,
so a wrong slicing in the test itself cannot pass. Supernets are tiny (4 channels, 3
cells, 8x8 digits)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from nas.cli.main import main
from nas.robust.lipschitz import LipschitzEstimator, edge_lognormal
from nas.robust.supernet_lipschitz import (
    SupernetLipschitz,
    edge_constants,
    fold_activation,
)
from nas.run_dir import RunDir
from nas.search.lipschitz_loss import LOG_FIELDS, LipschitzTermFactory
from search_spaces.adder import AdderConv2d
from search_spaces.adder_ops import AdderDilConv, BatchedAdderDilConv
from search_spaces.arch_samplers import make_sampler
from search_spaces.binary_ops import BinaryConvBlock
from search_spaces.dsq import DSQConv2d, hard_quantize
from search_spaces.irnet import IRConv2d
from search_spaces.op_set_space import ops_space
from search_spaces.ops import DilConv, FactorizedReduce, SepConv, shift_one_pixel
from search_spaces.space import get_space
from search_spaces.supernet import cell_edges
from search_spaces.supernet_ops import (
    BatchedDilConv,
    BatchedFactorizedReduce,
    SourceCache,
)

F64 = torch.float64
torch.set_num_threads(1)


def converged() -> LipschitzEstimator:
    return LipschitzEstimator(iters=400, init_iters=400)


def randomise_bn(module: nn.Module, seed: int) -> None:
    """Running variances of their own per channel, so that a per-edge slice differs from
    the max over every edge's channels."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.copy_(0.05 + 3 * torch.rand(m.num_features, generator=g, dtype=F64))


def edge_output(op: nn.Module, x: torch.Tensor, e: int) -> torch.Tensor:
    return op(SourceCache(x))[:, e]


# ------------------------------------------------------------- batched op constants


@pytest.mark.parametrize(("kernel", "padding", "dilation", "repeat", "stride"), [
    (3, 1, 1, 2, 1),  # sep_conv_3x3
    (5, 4, 2, 1, 2),  # dil_conv_5x5 in a reduction cell
])
def test_batched_dil_conv_edges_equal_the_standalone_op(kernel, padding, dilation, repeat,
                                                        stride) -> None:
    C, n, shape = 3, 3, (3, 8, 8)
    torch.manual_seed(0)
    op = BatchedDilConv(C, stride, n, kernel, padding, dilation, repeat).double().eval()
    randomise_bn(op, 1)
    got = edge_constants(op, shape, converged())
    assert got.mixed == 0
    x = torch.randn(2, *shape, dtype=F64)
    for e in range(n):
        single: nn.Sequential = (SepConv(C, C, kernel, stride, padding, affine=False)
                                 if repeat == 2 else
                                 DilConv(C, C, kernel, stride, padding, dilation, affine=False))
        blocks = list(single) if repeat == 2 else [single]
        single = single.double().eval()
        with torch.no_grad():
            for r, block in enumerate(blocks):
                dw, pw, bn = op.blocks[r]["dw"], op.blocks[r]["pw"], op.blocks[r]["bn"]
                block[1].weight.copy_(dw.weight[e * C:(e + 1) * C])
                block[2].weight.copy_(pw.weight[e * C:(e + 1) * C])
                block[3].running_var.copy_(bn.running_var[e * C:(e + 1) * C])
            assert torch.allclose(single(x), edge_output(op, x, e))
        want = converged()(single, shape).constant
        # both are power iterations from different start vectors, converging from below
        assert got.constants[e].item() == pytest.approx(want.item(), rel=1e-4)
    assert len({round(v, 3) for v in got.constants.tolist()}) == n  # edges differ


def linear_part(fr: FactorizedReduce) -> nn.Module:
    """FactorizedReduce without its ReLU: the linear map (eval-mode BN) its rule bounds."""

    class Linear(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return fr.bn(torch.cat([fr.conv_1(x), fr.conv_2(shift_one_pixel(x))], dim=1))

    return Linear()


def dense_norm(op: nn.Module, shape: tuple[int, ...]) -> float:
    n = math.prod(shape)
    with torch.no_grad():
        out = op(torch.eye(n, dtype=F64).reshape(n, *shape)) - op(torch.zeros(1, *shape,
                                                                             dtype=F64))
    return float(torch.linalg.matrix_norm(out.reshape(n, -1), ord=2))


@pytest.mark.parametrize("size", [6, 5])
def test_factorized_reduce_edges_are_exact(size: int) -> None:
    """Per edge: the standalone FactorizedReduce's constant, and that is the exact norm of
    its linear part (the two shifted 1x1 convs read disjoint pixels), odd sizes included."""
    C, n, shape = 4, 3, (4, size, size)
    torch.manual_seed(2)
    op = BatchedFactorizedReduce(C, n).double().eval()
    randomise_bn(op, 3)
    got = edge_constants(op, shape, converged()).constants
    x = torch.randn(2, *shape, dtype=F64)
    for e in range(n):
        fr = FactorizedReduce(C, C, affine=False).double().eval()
        with torch.no_grad():
            fr.conv_1.weight.copy_(op.conv_1.weight[e * C // 2:(e + 1) * C // 2])
            fr.conv_2.weight.copy_(op.conv_2.weight[e * C // 2:(e + 1) * C // 2])
            fr.bn.running_var.copy_(op.bn.running_var[e * C:(e + 1) * C])
            assert torch.allclose(fr(x), edge_output(op, x, e))
        standalone = converged()(fr, shape).constant.item()
        assert got[e].item() == pytest.approx(standalone, rel=1e-12)
        assert standalone == pytest.approx(dense_norm(linear_part(fr), shape), rel=1e-9)


def test_batched_adder_edges_equal_the_standalone_op() -> None:
    C, n, shape = 2, 2, (2, 6, 6)
    torch.manual_seed(4)
    op = BatchedAdderDilConv(C, 1, n, 3, 1, 1, repeat=2).double().eval()
    randomise_bn(op, 5)
    got = edge_constants(op, shape, converged())
    assert got.mixed == 0
    x = torch.randn(2, *shape, dtype=F64)
    for e in range(n):
        blocks = [AdderDilConv(C, C, 3, 1, 1, 1, affine=False) for _ in range(2)]
        single = nn.Sequential(*blocks).double().eval()
        with torch.no_grad():
            for r, block in enumerate(blocks):
                batched = op.blocks[r]
                for i in (1, 3):  # the two adder layers
                    block[i].weight.copy_(batched[i - 1].weight[e * C:(e + 1) * C])
                for i in (2, 4):  # their batch norms
                    block[i].running_var.copy_(batched[i - 1].running_var[e * C:(e + 1) * C])
            assert torch.allclose(single(x), edge_output(op, x, e))
        want = converged()(single, shape).constant
        assert got.constants[e].item() == pytest.approx(want.item(), rel=1e-12)


# ------------------------------------------------------------- estimate rules


def test_adder_bound_is_reached_above_the_filters_and_holds_elsewhere() -> None:
    """1x1: inputs above every filter make each output -sum x + const, so a constant
    perturbation reaches sqrt(C_out * C_in) exactly; a dilated strided depthwise layer's
    random perturbations stay below its bound."""
    torch.manual_seed(6)
    pw = AdderConv2d(3, 5, 1).double()
    shape = (3, 4, 4)
    bound = converged()(pw, shape).constant.item()
    assert bound == pytest.approx(math.sqrt(5 * 3))
    x = 100 + torch.rand(1, *shape, dtype=F64)
    d = 1e-3 * torch.ones_like(x)
    with torch.no_grad():
        ratio = (pw(x + d) - pw(x)).norm() / d.norm()
    assert ratio.item() == pytest.approx(bound, rel=1e-9)
    dw = AdderConv2d(3, 3, 3, stride=2, padding=2, dilation=2, groups=3).double()
    shape = (3, 7, 7)
    bound = converged()(dw, shape).constant.item()
    with torch.no_grad():
        for _ in range(20):
            x = torch.randn(1, *shape, dtype=F64)
            d = torch.randn_like(x)
            assert ((dw(x + d) - dw(x)).norm() / d.norm()).item() <= bound


def test_dsq_binary_and_block_rules() -> None:
    torch.manual_seed(7)
    shape = (3, 6, 6)
    dsq = DSQConv2d(3, 4, 3, padding=1, bias=False, bits=2).double()
    plain = nn.Conv2d(3, 4, 3, padding=1, bias=False).double()
    with torch.no_grad():  # before the first forward: the raw weights stand in
        plain.weight.copy_(dsq.weight)
        assert converged()(dsq, shape).constant.item() == pytest.approx(
            converged()(plain, shape).constant.item(), rel=1e-9)
        dsq(torch.randn(2, *shape, dtype=F64))  # sets both quantizers' ranges
        lower, upper = dsq.weight_quantizer.clip_range()
        quantized = hard_quantize(dsq.weight.clone(), lower.double(), upper.double(),
                                  dsq.weight_quantizer.alpha, 2)
        assert len(quantized.unique()) <= 4
        plain.weight.copy_(quantized)
    assert converged()(dsq, shape).constant.item() == pytest.approx(
        converged()(plain, shape).constant.item(), rel=1e-9)

    ir = IRConv2d(3, 4, 3, padding=1, bias=False).double()
    ir.set_ede_values(2.0, 1.5)  # surrogate slope k t = 3
    with torch.no_grad():
        plain.weight.copy_(ir.binary_weight())
    assert converged()(ir, shape).constant.item() == pytest.approx(
        3.0 * converged()(plain, shape).constant.item(), rel=1e-9)

    block = BinaryConvBlock(3, 3, stride=2, affine=False).double()
    randomise_bn(block, 8)
    est = converged()
    conv = est(block.conv, shape)
    want = (est(block.bn_in, shape).constant * conv.constant
            * est(block.bn_out, conv.output_shape).constant
            + est(block.shortcut, shape).constant)
    assert converged()(block, shape).constant.item() == pytest.approx(want.item(), rel=1e-9)


# ------------------------------------------------------------- the supernet


def tiny_supernet(seed: int = 0, rank: int = 0, **options) -> nn.Module:
    torch.manual_seed(seed)
    net = get_space("darts").build_supernet(4, 3, 10, in_channels=1, **options)
    net.set_arch_sampler(make_sampler("lognormal", rank=rank))
    return net


def test_supernet_constants_follow_the_architecture_columns() -> None:
    net = tiny_supernet()
    consts = SupernetLipschitz(net, (1, 8, 8)).constants()
    assert [c.cell_type for c in consts.cells] == ["normal", "reduce", "reduce"]
    bn = 1 / math.sqrt(1 + 1e-5)  # a fresh affine-free BN
    for k, cell in enumerate(consts.cells):
        names = net.edge_ops[cell.cell_type]
        for e, row in enumerate(names):
            got = dict(zip(row, cell.edges[e].tolist(), strict=True))
            assert got["none"] == 0.0
            reduces = cell.cell_type == "reduce" and e in _input_edges()
            if k < 2:  # 8x8 inputs (the third cell's are 2x2: 4 windows at most)
                # max pooling 3x3: 9 windows per pixel at stride 1, 4 at stride 2
                assert got["max_pool_3x3"] == pytest.approx((2.0 if reduces else 3.0) * bn)
            if not reduces:
                assert got["skip_connect"] == 1.0
            assert all(v > 0 for name, v in got.items() if name != "none")
        assert (cell.mixed == 0).all()
    assert consts.fixed.item() > 0


def _input_edges() -> set[int]:
    """The edges of a 4-step DARTS cell that read the cell's two inputs (stride 2 in a
    reduction cell)."""
    return {k for k, (i, _) in enumerate(cell_edges(4)) if i < 2}


def test_factorised_supernet_counts_each_ops_activation_mixtures() -> None:
    torch.manual_seed(0)
    net = ops_space(get_space("darts"), "darts+dsq4+binary+adder").build_supernet(
        4, 3, 10, 1, None, activations=("relu", "silu"))
    net.set_arch_sampler(make_sampler("lognormal"))
    lip = SupernetLipschitz(net, (1, 8, 8), init_iters=2)
    cell = lip.constants().cells[0]
    mixed = dict(zip(net.edge_ops["normal"][0], cell.mixed[0].tolist(), strict=True))
    assert mixed["sep_conv_3x3"] == 2 and mixed["dil_conv_5x5"] == 1
    assert mixed["adder_sep_conv_3x3"] == 2 and mixed["dsq4_sep_conv_3x3"] == 2
    assert mixed["dsq4_dil_conv_3x3"] == 1
    assert mixed["max_pool_3x3"] == mixed["skip_connect"] == mixed["binary_conv_3x3"] == 0
    net_ln = lip.network_lognormal()
    net_ln.log_mean.backward()
    assert net.arch["normal_act"].grad.abs().sum() > 0  # the activation choice is bounded too


def test_an_edge_with_only_zero_ops_drops_out() -> None:
    """After P-DARTS pruning an edge can keep only `none`: it contributes a negligible
    constant, not an error or a NaN, and its mu gets no gradient."""
    net = tiny_supernet()
    assert net.training
    lip = SupernetLipschitz(net, (1, 8, 8))
    assert net.training  # the shape-recording pass restores the training flags
    consts = lip.constants()
    first = consts.cells[0]
    edges = first.edges.clone()
    edges[3] = 0.0
    cells = (replace(first, edges=edges), *consts.cells[1:])
    dropped = lip.network_lognormal(replace(consts, cells=cells))
    full = lip.network_lognormal(consts)
    assert torch.isfinite(dropped.log_mean) and dropped.log_mean < full.log_mean
    dropped.log_mean.backward()
    grad = net.arch["normal"].grad
    assert torch.isfinite(grad).all() and grad[3].abs().max() == 0 and grad[0].abs().max() > 0


def test_folded_activation_mixture_against_monte_carlo() -> None:
    """One edge of three ops passing its activation mixture 0, 1 and 2 times: the fold's
    mean is exact given the mixture's log-normal fit (E[A] and E[A^2] are matched), so it
    must agree with Monte Carlo of sum_o c_o exp(z_o) A^r_o within 4 standard errors."""
    g = torch.Generator().manual_seed(9)
    mu = torch.tensor([[0.1, -0.2, 0.3]], dtype=F64)
    cov = torch.tensor([[[0.09, 0.02, 0.0], [0.02, 0.16, 0.03], [0.0, 0.03, 0.04]]],
                       dtype=F64)
    c = torch.tensor([[1.0, 0.7, 1.3]], dtype=F64)
    r = torch.tensor([[0.0, 1.0, 2.0]], dtype=F64)
    mu_a = torch.tensor([[-0.5, -0.8]], dtype=F64)
    cov_a = torch.tensor([[[0.04, 0.0], [0.0, 0.09]]], dtype=F64)
    slopes = torch.tensor([[1.0, 1.0998]], dtype=F64)
    act = edge_lognormal(mu_a, cov_a, slopes)
    folded = edge_lognormal(*fold_activation(mu, cov, r, act), c)
    n = 400_000
    z = mu[0] + torch.randn(n, 3, generator=g, dtype=F64) @ torch.linalg.cholesky(cov[0]).T
    za = mu_a[0] + torch.randn(n, 2, generator=g, dtype=F64) @ torch.linalg.cholesky(
        cov_a[0]).T
    A = (slopes[0] * za.exp()).sum(dim=1, keepdim=True)
    S = (c[0] * z.exp() * A ** r[0]).sum(dim=1)
    se = S.std().item() / math.sqrt(n)
    assert abs(S.mean().item() - folded.mean().item()) < 4 * se
    # without the fold (activations ignored) the mean is far off
    assert abs(S.mean().item() - edge_lognormal(mu, cov, c).mean().item()) > 50 * se


def test_term_is_zero_under_a_huge_budget_and_its_gradient_reaches_the_distribution() -> None:
    net = tiny_supernet(rank=1)
    sampler = net.arch_sampler
    made = {}
    for budget in (1e300, 1.0):
        factory = LipschitzTermFactory(budget, (1, 8, 8), confidence=0.9, weight=2.0)
        term = factory.build(net.edge_ops, net)
        factory.start_epoch(0)
        net.zero_grad(set_to_none=True)
        value = term(net.sample_arch_weights())
        made[budget] = value.item()
        if budget == 1.0:
            value.backward()
    assert made[1e300] == 0.0 and made[1.0] > 0
    for grad in (net.arch["normal"].grad, net.arch["reduce"].grad,
                 sampler.rho["normal"].grad, sampler.rho["reduce"].grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert sampler.factor["normal"].grad is not None
    # the constants are detached: no operation weight receives a gradient from the term
    assert all(p.grad is None for p in net.weight_parameters())
    # the penalty is the weighted log-excess of the 0.9-quantile over the budget
    fields = factory.epoch_fields()
    z = torch.special.ndtri(torch.tensor(0.9, dtype=F64)).item()
    excess = fields["lipschitz_log_mean"] + z * fields["lipschitz_log_std"] - math.log(1.0)
    assert made[1.0] == pytest.approx(2.0 * excess, rel=1e-3)  # one more power iteration


# ------------------------------------------------------------- nas search


TINY = ["--epochs", "2", "--channels", "4", "--layers", "3", "--limit", "48",
        "--batch-size", "16", "--sampler", "lognormal"]


def search(tmp_path, name: str, *extra: str) -> list[dict]:
    assert main(["search", *TINY, *extra, "--out", str(tmp_path / name)]) == 0
    return RunDir(tmp_path / name).read_jsonl("log.jsonl")


def test_search_logs_the_bound_and_a_tight_budget_lowers_it(tmp_path, capsys) -> None:
    """The same seed three ways: no term; the term with weight 0 (logs only: it must not
    change the search at all, so it is the search without the term); a tight budget with
    weight 10, whose network log-mean must end lower."""
    plain = search(tmp_path, "plain")
    logged = search(tmp_path, "logged", "--lipschitz-budget", "1", "--lipschitz-weight", "0")
    tight = search(tmp_path, "tight", "--lipschitz-budget", "1", "--lipschitz-weight", "10")
    err = capsys.readouterr().err
    assert err.count("Lipschitz term after the first epoch") == 2
    for a, b in zip(plain, logged, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["genotype"] == b["genotype"]
    for record in logged + tight:
        assert all(math.isfinite(record[k]) for k in LOG_FIELDS)
        assert record["lipschitz_exceed_prob"] > 0.99  # budget 1 is far below the bound
    assert all(r["lipschitz_penalty"] == 0.0 for r in logged)
    assert all(r["lipschitz_penalty"] > 0 for r in tight)
    assert "lipschitz_log_mean" not in plain[-1]
    assert tight[-1]["lipschitz_log_mean"] < logged[-1]["lipschitz_log_mean"]


def test_killed_search_with_the_term_resumes_to_the_same_logs(
        tmp_path, capsys, monkeypatch, kill_at_checkpoint) -> None:
    """The term keeps only power-iteration vectors, reset at every epoch start: the
    resumed run re-runs the killed epoch and must log exactly what the full run did."""
    args = [*TINY, "--epochs", "3", "--lipschitz-budget", "5"]
    full = search(tmp_path, "full", *args)
    with monkeypatch.context() as mp:
        kill_at_checkpoint(mp, 3)  # epoch 2 logged, its checkpoint not written
        assert main(["search", *args, "--out", str(tmp_path / "run")]) == 130
    assert main(["search", "--resume", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    resumed = RunDir(tmp_path / "run").read_jsonl("log.jsonl")
    assert len(resumed) == len(full) == 3
    for a, b in zip(full, resumed, strict=True):
        for key in (*LOG_FIELDS, "lipschitz_penalty", "train_loss", "genotype"):
            assert a[key] == b[key], key


@pytest.mark.parametrize(("bad", "needle"), [
    (["--sampler", "softmax", "--lipschitz-budget", "5"], "needs --sampler lognormal"),
    (["--lipschitz-budget", "5", "--confidence", "1.5"], "strictly between 0 and 1"),
    (["--lipschitz-budget", "5", "--confidence", "0"], "strictly between 0 and 1"),
    (["--lipschitz-budget", "0"], "positive"),
    (["--lipschitz-budget", "5", "--lipschitz-weight", "-1"], ">= 0"),
    (["--confidence", "0.5"], "with --lipschitz-budget only"),
    (["--space", "nb201", "--lipschitz-budget", "5"], "DARTS cells"),
])
def test_bad_lipschitz_settings_are_one_line_errors(tmp_path, capsys, bad, needle) -> None:
    code = main(["search", *TINY, *bad, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err
    assert not (tmp_path / "r").exists()
