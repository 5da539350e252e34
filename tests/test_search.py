"""Bilevel search: gradients, P-DARTS rules, run directory, resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas.run_dir import RunDir
from nas.search.architect import Architect, ArchLossTerm
from nas.search.config import preset_config
from nas.search.driver import Search, run_search
from nas.search.pdarts import prune_edge_ops, skip_dropout_rate
from nas.training import cosine_lr
from search_spaces.derive import derive_cell, restrict_skip_connects
from search_spaces.errors import InputError
from search_spaces.ops import DARTS_PRIMITIVES
from search_spaces.space import get_space

torch.set_num_threads(1)


def tiny_net(seed: int = 0):
    torch.manual_seed(seed)
    return get_space("darts").build_supernet(4, 3, 10, in_channels=1).double()


def batch(seed: int, n: int = 8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(
        0, 10, (n,), generator=g
    )


def make_architect(net, second_order=False, terms=()):
    return Architect(net, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3,
                     weight_momentum=0.9, weight_weight_decay=3e-4,
                     second_order=second_order, terms=terms)


def loss_at(net, x, y):
    return F.cross_entropy(net(x, net.arch_weights()), y)


def test_first_order_arch_gradient_matches_finite_differences() -> None:
    net = tiny_net()
    net.eval()  # deterministic BN (running stats) so the loss is a smooth function of alpha
    x, y = batch(1)
    arch = make_architect(net)
    stats = arch._first_order_grads(x, y)
    # the reported loss is the validation loss at the current alpha
    assert stats["arch_loss"] == pytest.approx(loss_at(net, x, y).item(), rel=1e-12)
    alpha = net.arch["normal"]
    g = alpha.grad.clone()
    eps = 1e-6
    for e, k in [(0, 4), (5, 3), (13, 7)]:
        with torch.no_grad():
            alpha[e, k] += eps
            up = float(loss_at(net, x, y))
            alpha[e, k] -= 2 * eps
            down = float(loss_at(net, x, y))
            alpha[e, k] += eps
        assert g[e, k].item() == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-9)


def test_extra_term_gradient_is_added_to_the_arch_step() -> None:
    net = tiny_net()
    net.eval()
    x, y = batch(2)
    arch = make_architect(net)
    arch._first_order_grads(x, y)
    base = net.arch["normal"].grad.clone()
    net.arch["normal"].grad = None
    cost = torch.arange(8, dtype=torch.float64)
    term = ArchLossTerm("expected_cost", lambda w: 0.5 * (w["normal"] * cost).sum())
    arch = make_architect(net, terms=[term])
    stats = arch._first_order_grads(x, y)
    assert "expected_cost" in stats
    p = torch.softmax(net.arch["normal"].detach(), -1)
    # d/d alpha of 0.5 * sum_k p_k c_k = 0.5 * p * (c - sum p c)
    expected = 0.5 * p * (cost - (p * cost).sum(-1, keepdim=True))
    torch.testing.assert_close(net.arch["normal"].grad - base, expected)


def test_second_order_gradient_matches_explicit_unrolled_computation() -> None:
    net = tiny_net(3)
    net.eval()
    xt, yt = batch(3)
    xv, yv = batch(4)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    # one real step so the optimiser has a momentum buffer
    opt.zero_grad()
    F.cross_entropy(net(xt), yt).backward()
    opt.step()
    eta = 0.05
    arch = make_architect(net, second_order=True)
    # the reference's radius (0.01 / |v|) crosses ReLU / max-pool kinks on a network this
    # small; a small radius makes the central difference agree with the exact product
    arch.fd_radius = 1e-5
    arch.optimizer.zero_grad()
    arch._second_order_grads(xt, yt, xv, yv, eta, opt)
    got = [a.grad.clone() for a in net.arch_parameters()]

    # Explicit: w' = w - eta (mu m + g + wd w); grad = dLv/da(w') - eta * d2Lt/da dw . dLv/dw'
    params = net.weight_parameters()
    alphas = net.arch_parameters()
    g = torch.autograd.grad(F.cross_entropy(net(xt), yt), params)
    with torch.no_grad():
        saved = [p.clone() for p in params]
        for p, gi in zip(params, g):
            m = opt.state[p]["momentum_buffer"]
            p.sub_(eta * (0.9 * m + gi + 3e-4 * p))
    lv = F.cross_entropy(net(xv), yv)
    out = torch.autograd.grad(lv, alphas + params)
    d_alpha, v = out[:2], out[2:]
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
    # exact Hessian-vector product by double backward at w
    lt = F.cross_entropy(net(xt), yt)
    gw = torch.autograd.grad(lt, params, create_graph=True)
    dot = sum((gi * vi).sum() for gi, vi in zip(gw, v))
    hvp = torch.autograd.grad(dot, alphas)
    for got_i, da, h in zip(got, d_alpha, hvp):
        torch.testing.assert_close(got_i, da - eta * h, rtol=1e-5, atol=1e-9)


def test_second_order_step_leaves_weights_unchanged() -> None:
    net = tiny_net(5)
    xt, yt = batch(5)
    xv, yv = batch(6)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    before = [p.clone() for p in net.weight_parameters()]
    make_architect(net, second_order=True).step(xt, yt, xv, yv, 0.05, opt)
    for b, p in zip(before, net.weight_parameters()):
        assert torch.equal(b, p)


# ------------------------------------------------------------------ schedules & rules


def test_cosine_lr_endpoints() -> None:
    assert cosine_lr(0, 50, 0.025, 0.001) == pytest.approx(0.025)
    assert cosine_lr(25, 50, 0.025, 0.001) == pytest.approx(0.013)
    assert cosine_lr(50, 50, 0.025, 0.001) == pytest.approx(0.001)


def test_pdarts_skip_dropout_schedule() -> None:
    # E=25, arch from epoch 10: linear decay, then reset to p0 and exponential decay
    assert skip_dropout_rate(0.4, 0, 25, 10, 0.2) == pytest.approx(0.4 * 24 / 25)
    assert skip_dropout_rate(0.4, 9, 25, 10, 0.2) == pytest.approx(0.4 * 15 / 25)
    assert skip_dropout_rate(0.4, 10, 25, 10, 0.2) == pytest.approx(0.4)
    assert skip_dropout_rate(0.4, 15, 25, 10, 0.2) == pytest.approx(0.4 * math.exp(-1.0))


def test_prune_keeps_strongest_and_drops_none_last_stage() -> None:
    names = list(DARTS_PRIMITIVES)
    probs = np.array([[0.30, 0.05, 0.05, 0.20, 0.15, 0.10, 0.10, 0.05]])
    assert prune_edge_ops(probs, [names], 5, False) == [
        ["none", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3"]
    ]
    three = ["none", "skip_connect", "sep_conv_3x3"]
    assert prune_edge_ops(np.array([[0.5, 0.2, 0.3]]), [three], 1, True) == [["sep_conv_3x3"]]


def test_derive_cell_excludes_none_and_keeps_two_strongest_edges() -> None:
    names = list(DARTS_PRIMITIVES)
    probs = np.full((14, 8), 0.1)
    probs[:, 0] = 0.9  # `none` dominates everywhere but is never chosen
    probs[0, 4] = 0.5   # node 2: edges 0 and 1
    probs[1, 3] = 0.4
    probs[3, 7] = 0.6   # node 3: edge 3 (input 1) beats edge 2 and 4
    probs[4, 5] = 0.3
    gene = derive_cell(probs, [names] * 14, 4)
    assert gene[:4] == [("sep_conv_3x3", 0), ("skip_connect", 1),
                        ("dil_conv_5x5", 1), ("sep_conv_5x5", 2)]
    assert all(op != "none" for op, _ in gene)


def test_restrict_skip_connects_removes_weakest_skips_first() -> None:
    ops = [["skip_connect", "sep_conv_3x3", "none"]] * 14
    probs = np.tile([0.6, 0.3, 0.1], (14, 1))
    probs[0] = [0.50, 0.45, 0.05]  # weakest skip: replaced by sep_conv_3x3 first
    probs[1] = [0.55, 0.40, 0.05]
    free = restrict_skip_connects(probs, ops, 4, 14)
    assert sum(op == "skip_connect" for op, _ in free) == 8
    two = restrict_skip_connects(probs, ops, 4, 2)
    assert sum(op == "skip_connect" for op, _ in two) == 2
    assert two[0] == ("sep_conv_3x3", 0)
    assert all(op != "none" for op, _ in two)


# ------------------------------------------------------------------ runs and resume


def tiny_config(strategy: str, **kw):
    base = preset_config(strategy, "small").with_overrides(
        init_channels=4, layers=3, epochs=2, batch_size=32, data_limit=128, seed=3,
        arch_start_epoch=1 if strategy == "pdarts" else 0,
    )
    if strategy == "pdarts":
        base = base.with_overrides(add_layers=(0, 1, 2))
    return base.with_overrides(**kw)


class Killed(Exception):
    pass


@pytest.mark.parametrize("strategy", ["darts", "pdarts"])
def test_resumed_run_ends_with_the_same_genotype(tmp_path, strategy: str) -> None:
    cfg = tiny_config(strategy, epochs=4 if strategy == "darts" else 2)
    full = run_search(cfg, RunDir.create(tmp_path / "full", {"search": cfg.to_dict()}),
                      log=lambda m: None)

    run = RunDir.create(tmp_path / "killed", {"search": cfg.to_dict()})
    calls = []

    def kill_after_third_epoch_log(msg: str) -> None:
        if "epoch" in msg and "done" not in msg:
            calls.append(msg)
            if len(calls) == 3:  # log line written, checkpoint of that epoch not yet
                raise Killed

    with pytest.raises(Killed):
        run_search(cfg, run, log=kill_after_third_epoch_log)
    resumed = run_search(cfg, RunDir.open(run.path), resume=True, log=lambda m: None)
    assert resumed.genotype == full.genotype
    full_log = full.run_dir.read_jsonl("log.jsonl")
    resumed_log = resumed.run_dir.read_jsonl("log.jsonl")
    assert len(resumed_log) == len(full_log)
    for a, b in zip(full_log, resumed_log):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["genotype"] == b["genotype"]
    assert json.loads((resumed.run_dir.path / "genotype.json").read_text()) == \
        full.genotype.to_dict()


def test_run_directory_contents(tmp_path) -> None:
    cfg = tiny_config("pdarts")
    result = run_search(cfg, RunDir.create(tmp_path / "r", {"search": cfg.to_dict()}),
                        log=lambda m: None)
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"config.json", "log.jsonl", "arch_weights.jsonl", "checkpoint.pt",
            "genotype.json", "summary.json"} <= names
    log = result.run_dir.read_jsonl("log.jsonl")
    assert len(log) == 3 * 2
    for rec in log:
        assert {"train_loss", "train_acc", "val_acc", "entropy", "genotype", "lr"} <= set(rec)
    # each stage restarts the cosine schedule and the stage's skip-dropout schedule
    assert [(r["stage"], r["epoch"]) for r in log] == [(s, e) for s in range(3) for e in (0, 1)]
    for r in log:
        assert r["lr"] == pytest.approx(cosine_lr(r["epoch"], cfg.epochs, cfg.lr, cfg.lr_min))
        assert r["skip_dropout"] == pytest.approx(skip_dropout_rate(
            cfg.skip_dropout[r["stage"]], r["epoch"], cfg.epochs, cfg.arch_start_epoch,
            cfg.skip_dropout_decay))
    arch = result.run_dir.read_jsonl("arch_weights.jsonl")
    # P-DARTS stages: 8 ops per edge, then 5, then 3
    assert [len(a["weights"]["normal"][0]) for a in arch[::2]] == [8, 5, 3]
    # the final cell takes each edge's op from the last stage's remaining candidates
    last_ops = arch[-1]["edge_ops"]
    for cell in ("normal", "reduce"):
        for i, (op, j) in enumerate(getattr(result.genotype, cell)):
            node = i // 2
            edge = sum(range(2, node + 2)) + j  # node n (from 0) has n + 2 inputs
            assert op in last_ops[cell][edge], (cell, i, op, last_ops[cell][edge])
    assert json.loads((tmp_path / "r" / "genotype.json").read_text()) == \
        result.genotype.to_dict()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    by_limit = summary["genotypes_by_max_skips"]
    assert int(min(by_limit)) == 0
    for limit, genotype in by_limit.items():  # each alternative keeps to its own limit
        assert sum(op == "skip_connect" for op, _ in genotype["normal"]) <= int(limit)
    n_skips = sum(op == "skip_connect" for op, _ in result.genotype.normal)
    assert n_skips <= cfg.max_skips


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path) -> None:
    cfg = tiny_config("darts", epochs=1)
    run = RunDir.create(tmp_path / "r", {"search": cfg.to_dict()})
    run_search(cfg, run, log=lambda m: None)
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="corrupt checkpoint"):
        Search(cfg, RunDir.open(run.path), log=lambda m: None).restore()


def test_create_refuses_non_empty_directory(tmp_path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        RunDir.create(tmp_path, {})
    assert (tmp_path / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------ --space and --strategy


def _search_args(*argv: str):
    from nas.cli.main import build_parser

    return build_parser().parse_args(["search", *argv])


def test_strategy_is_a_flag_of_its_own_and_space_pdarts_is_its_short_form() -> None:
    from nas.cli.search import config_from_args

    short = config_from_args(_search_args("--space", "pdarts"))
    long = config_from_args(_search_args("--space", "darts", "--strategy", "pdarts"))
    assert short == long and (long.space, long.strategy) == ("darts", "pdarts")
    assert long.num_stages == 3
    plain = config_from_args(_search_args("--strategy", "darts"))
    assert (plain.space, plain.strategy, plain.num_stages) == ("darts", "darts", 1)
    nb201 = config_from_args(_search_args("--space", "nb201", "--strategy", "darts"))
    assert (nb201.space, nb201.strategy) == ("nb201", "darts")


@pytest.mark.parametrize("argv, needle", [
    (("--space", "nb201", "--strategy", "pdarts"), "P-DARTS does not run on the nb201"),
    (("--space", "pdarts", "--strategy", "darts"), "--space pdarts means P-DARTS"),
])
def test_a_strategy_the_space_cannot_run_is_one_line(argv, needle) -> None:
    from nas.cli.search import config_from_args

    with pytest.raises(InputError, match=needle):
        config_from_args(_search_args(*argv))
