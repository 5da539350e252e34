"""Architecture samplers (search_spaces/arch_samplers.py): softmax stays DARTS exactly; the
log-normal sampler's samples, moments, gradients, shared noise, discretisation modes, and
its use in searches (P-DARTS, NB201, factorised, quantized, latency term, resume)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.cli.main import main
from nas.run_dir import RunDir
from nas.search.config import preset_config
from nas.search.driver import run_search
from search_spaces.arch_samplers import (
    LogNormalSampler,
    SoftmaxSampler,
    make_sampler,
    sampler_names,
)
from search_spaces.space import get_space

DARTS = get_space("darts")


def arch(rows: int = 3, ops: int = 4, seed: int = 0) -> nn.ParameterDict:
    g = torch.Generator().manual_seed(seed)
    return nn.ParameterDict({"normal": nn.Parameter(torch.randn(rows, ops, generator=g,
                                                                dtype=torch.float64))})


def test_registry_and_errors() -> None:
    assert {"softmax", "lognormal"} <= set(sampler_names())
    with pytest.raises(ValueError, match="unknown sampler 'gumbel'"):
        make_sampler("gumbel")
    with pytest.raises(ValueError, match="lognormal"):
        make_sampler("lognormal", sigma=1.0)
    with pytest.raises(ValueError, match="init_sigma"):
        LogNormalSampler(init_sigma=0.0)
    with pytest.raises(ValueError, match="discretisation"):
        LogNormalSampler(discretise="mode")


def test_softmax_sampler_is_darts_and_adds_no_state() -> None:
    a = arch()
    s = SoftmaxSampler()
    want = F.softmax(a["normal"], dim=-1)
    for view in (s.sample, s.expected, s.importance):
        assert torch.equal(view(a)["normal"], want)
    net = DARTS.build_supernet(4, 3, 10, 1)
    assert not any(k.startswith("arch_sampler") for k in net.state_dict())
    assert net.arch_parameters() == list(net.arch.parameters())


def test_attach_starts_mu_at_minus_log_n_and_sigma_at_init() -> None:
    a = arch(ops=5)
    before = a["normal"].detach().clone()
    s = LogNormalSampler(init_sigma=0.3)
    s.attach(a)
    assert torch.allclose(a["normal"], before - math.log(5))
    assert torch.allclose(s.sigma("normal"), torch.full_like(before, 0.3))


@pytest.mark.parametrize("rank", [0, 2])
def test_samples_have_the_log_normal_moments(rank: int) -> None:
    """log w ~ N(mu, diag(sigma^2) + U U^T): Monte Carlo mean and covariance of log w,
    and E[w] = exp(mu + Var/2) (`expected`)."""
    a = arch(rows=2, ops=3)
    s = LogNormalSampler(init_sigma=0.4, rank=rank)
    s.attach(a)
    if rank:
        with torch.no_grad():
            s.factor["normal"].copy_(0.3 * torch.randn(2, 3, rank, dtype=torch.float64))
    torch.manual_seed(0)
    n = 40_000
    z = torch.stack([s.sample(a)["normal"].log() for _ in range(n)])  # (n, 2, 3)
    mu = a["normal"].detach()
    assert torch.allclose(z.mean(0), mu, atol=4 * 0.6 / math.sqrt(n))
    centred = z - z.mean(0)
    emp = torch.einsum("nei,nej->eij", centred, centred) / (n - 1)
    assert torch.allclose(emp, s.covariance(a, "normal").detach(), atol=0.01)
    w = z.exp().mean(0)
    assert torch.allclose(w, s.expected(a)["normal"].detach(), rtol=0.02)


def test_reparameterised_gradients_reach_mu_sigma_and_factor() -> None:
    a = arch()
    s = LogNormalSampler(rank=1)
    s.attach(a)
    torch.manual_seed(1)
    (s.sample(a)["normal"] * torch.arange(4.0, dtype=torch.float64)).sum().backward()
    for p in (a["normal"], s.rho["normal"], s.factor["normal"]):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_same_sample_reuses_the_noise_only_inside_the_block() -> None:
    a = arch()
    s = LogNormalSampler()
    s.attach(a)
    with s.same_sample():
        first, second = s.sample(a)["normal"], s.sample(a)["normal"]
    assert torch.equal(first, second)
    assert not torch.equal(s.sample(a)["normal"], s.sample(a)["normal"])


def test_mu_is_clamped_where_it_is_used() -> None:
    a = arch()
    s = LogNormalSampler(mu_bounds=(-3.0, 1.0))
    s.attach(a)
    with torch.no_grad():
        a["normal"][0, 0] = 50.0
    assert s.expected(a)["normal"][0, 0] < math.exp(1.0 + 0.2**2)


def test_discretisation_modes_by_hand() -> None:
    """Two candidates: A with mu 0, sigma 0.1; B with mu -0.1, sigma 1.5. The median
    exp(mu) prefers A; the mean exp(mu + s^2/2) prefers B (variance raises it); the
    probability of being the larger is P(z_B > z_A) = Phi(-0.1 / sqrt(0.1^2 + 1.5^2)),
    below 1/2, so mc prefers A."""
    a = nn.ParameterDict({"normal": nn.Parameter(torch.tensor([[0.0, -0.1]]))})
    rho = {0.1: math.log(math.expm1(0.1)), 1.5: math.log(math.expm1(1.5))}
    views = {}
    for mode in ("median", "mean", "mc"):
        s = LogNormalSampler(discretise=mode, mc_samples=20_000)
        s.attach(nn.ParameterDict({"normal": nn.Parameter(torch.zeros(1, 2))}))
        with torch.no_grad():
            s.rho["normal"].copy_(torch.tensor([[rho[0.1], rho[1.5]]]))
        views[mode] = s.importance(a)["normal"][0]
        assert views[mode].sum().item() == pytest.approx(1.0)
    assert views["median"].argmax() == 0 and views["mean"].argmax() == 1
    p_b = 0.5 * (1 + math.erf(-0.1 / math.sqrt(0.1**2 + 1.5**2) / math.sqrt(2)))
    assert views["mc"][1].item() == pytest.approx(p_b, abs=0.01)


def test_mc_discretisation_is_deterministic_and_leaves_the_training_rng_alone() -> None:
    a = arch()
    s = LogNormalSampler(discretise="mc", mc_samples=500)
    s.attach(a)
    torch.manual_seed(3)
    state = torch.get_rng_state()
    first = s.importance(a)["normal"]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, s.importance(a)["normal"])


def test_supernet_with_the_log_normal_sampler_splits_its_parameters() -> None:
    net = DARTS.build_supernet(4, 3, 10, 1)
    net.set_arch_sampler(LogNormalSampler(rank=1))
    arch_ids = {id(p) for p in net.arch_parameters()}
    weight_ids = {id(p) for p in net.weight_parameters()}
    assert not arch_ids & weight_ids
    assert len(arch_ids) == 6  # mu, rho, factor for normal and reduce
    assert arch_ids | weight_ids == {id(p) for p in net.parameters()}
    x = torch.randn(2, 1, 8, 8)
    net.eval()
    assert torch.equal(net(x), net(x))  # evaluation: the deterministic expected weights


TINY = ["--epochs", "2", "--channels", "4", "--layers", "3", "--limit", "48",
        "--batch-size", "16"]


@pytest.mark.parametrize("extra", [
    ["--space", "darts", "--discretise", "mc", "--lognormal-rank", "1"],
    ["--space", "nb201", "--activations", "relu,silu"],
    ["--space", "darts", "--ops", "darts+dsq4+binary"],
    ["--space", "darts", "--hardware", "p100", "--latency-weight", "0.5"],
])
def test_log_normal_search_composes(tmp_path, capsys, extra: list[str]) -> None:
    args = ["search", *TINY, "--sampler", "lognormal", *extra, "--out", str(tmp_path / "r"),
            "--json"]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["genotype"]
    assert "lognormal sampler" in err
    weights = RunDir(tmp_path / "r").read_jsonl("arch_weights.jsonl")[-1]["weights"]
    for rows in weights.values():  # the logged importance is per-edge normalised
        assert all(sum(r) == pytest.approx(1.0, abs=1e-5) for r in rows)
    if "--latency-weight" in extra:
        logged = RunDir(tmp_path / "r").read_jsonl("log.jsonl")[-1]
        assert logged["latency_loss"] > 0


def test_log_normal_p_darts_prunes_by_the_importance_view(tmp_path) -> None:
    cfg = preset_config("pdarts", "small").with_overrides(
        init_channels=4, layers=3, epochs=2, batch_size=16, data_limit=48, seed=3,
        arch_start_epoch=1, add_layers=(0, 1, 2), sampler="lognormal", discretise="median")
    result = run_search(cfg, RunDir.create(tmp_path / "r", {"search": cfg.to_dict()}),
                        log=lambda m: None)
    stages = [g["stage"] for g in result.summary["stage_genotypes"]]
    assert stages == [0, 1] and result.genotype is not None


def test_killed_log_normal_search_resumes_to_the_same_genotype(
        tmp_path, capsys, monkeypatch, kill_at_checkpoint) -> None:
    args = ["search", "--space", "darts", "--sampler", "lognormal", *TINY, "--epochs", "3"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    with monkeypatch.context() as mp:
        kill_at_checkpoint(mp, 3)  # epoch 2 logged, its checkpoint not written
        assert main([*args, "--out", str(tmp_path / "run")]) == 130
    assert main(["search", "--resume", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    for name in ("genotype.json", "arch_weights.jsonl"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


@pytest.mark.parametrize("bad, needle", [
    (["--discretise", "median"], "apply to --sampler lognormal only"),
    (["--sampler", "lognormal", "--lognormal-sigma", "-1"], "init_sigma"),
    (["--sampler", "lognormal", "--lognormal-rank", "-2"], "rank"),
])
def test_bad_sampler_options_are_one_line_errors(tmp_path, capsys, bad, needle) -> None:
    code = main(["search", *TINY, *bad, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err
    assert not (tmp_path / "r").exists()
