"""Quantized (DSQ k-bit) and binary (IR-Net) candidates in the search and retraining: op
sets, per-epoch schedules, parameter groups, low-bit costing and energy, `nas info`."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from latency.energy import architecture_energy, network_energy
from latency.hardware import load_profile
from latency.simulate.roofline import lowbit_class, simulate_latency
from nas.cli.main import main
from nas.run_dir import RunDir
from nas.search.config import preset_config
from nas.search.driver import Search
from search_spaces.binary_ops import binary_form
from search_spaces.dsq import DSQConv2d, quantizer_parameters
from search_spaces.dsq_ops import quantized_form
from search_spaces.float_twin import float_twin
from search_spaces.genotype_library import DARTS_V2
from search_spaces.irnet import IRConv2d, ede_schedule
from search_spaces.op_sets import resolve_op_sets
from search_spaces.space import get_space

DARTS = get_space("darts")
BINARY_V2 = DARTS.rename_ops(DARTS_V2, binary_form)
DSQ4_V2 = DARTS.rename_ops(DARTS_V2, lambda op: quantized_form(op, 4))


def test_named_sets_compose() -> None:
    ops = resolve_op_sets("darts+dsq4+binary")
    assert ops[:8] == DARTS.op_names
    assert ops[8:] == ("dsq4_sep_conv_3x3", "dsq4_sep_conv_5x5", "dsq4_dil_conv_3x3",
                       "dsq4_dil_conv_5x5", "binary_conv_3x3", "binary_conv_5x5")
    assert get_space("darts.darts+dsq4+binary").encoding_size == 2 * 14 * 14


def test_binary_form_maps_by_kernel_and_refuses_an_activation_pair() -> None:
    assert binary_form("sep_conv_5x5") == "binary_conv_5x5"
    assert binary_form("dil_conv_3x3") == "binary_conv_3x3"
    assert binary_form("skip_connect") == "skip_connect"
    with pytest.raises(ValueError, match="no activation"):
        binary_form("sep_conv_3x3/silu")


def test_float_twin_keeps_shapes_and_drops_only_the_low_bit_convolutions() -> None:
    net, _ = DARTS.deployed_network(BINARY_V2, load_profile("raspi4"))
    shapes = [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.groups)
              for m in net.modules() if isinstance(m, nn.Conv2d)]
    twin = float_twin(net)
    assert not any(isinstance(m, (IRConv2d, DSQConv2d)) for m in twin.modules())
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.groups)
            for m in twin.modules() if isinstance(m, nn.Conv2d)] == shapes


def test_lowbit_class_by_precision() -> None:
    assert lowbit_class(32, 32) is None and lowbit_class(1, 1) == "binary"
    assert lowbit_class(4, 4) == "int4" and lowbit_class(2, 8) == "int8"
    assert lowbit_class(3, 3) == "int4"


@pytest.mark.parametrize("profile_name", ["raspi4", "pixel4"])
def test_on_arm_binary_and_dsq_convolutions_beat_the_same_network_in_float(
        profile_name) -> None:
    """Simulated: the deployed network with binary (or 4-bit) convolutions against the
    same network with those layers in float, on the ARM profiles' low-bit kernels."""
    profile = load_profile(profile_name)
    for genotype in (BINARY_V2, DSQ4_V2):
        net, shape = DARTS.deployed_network(genotype, profile)
        low = simulate_latency(net, shape, profile)
        e_low = network_energy(net, shape, profile.precision)
        twin = float_twin(net)
        flt = simulate_latency(twin, shape, profile)
        e_flt = network_energy(twin, shape, profile.precision)
        assert low.ms < 0.85 * flt.ms, (profile_name, low.ms, flt.ms)
        assert e_low.pj < 0.7 * e_flt.pj
        assert e_low.label.startswith("modelled")


def test_gpu_profiles_without_lowbit_kernels_run_them_at_float_speed() -> None:
    profile = load_profile("p100")
    net, shape = DARTS.deployed_network(BINARY_V2, profile)
    binary = {t.name: t for t in simulate_latency(net, shape, profile).per_layer
              if t.op.startswith("IRConv2d")}
    twin = {t.name: t for t in simulate_latency(float_twin(net), shape, profile).per_layer
            if t.name in binary}
    assert binary and set(twin) == set(binary)
    for name, t in binary.items():  # same compute; only the bytes moved are fewer
        assert t.compute_ms == pytest.approx(twin[name].compute_ms)
        assert t.memory_ms < twin[name].memory_ms


def test_binary_ops_get_their_epoch_schedule_and_dsq_its_own_parameter_group(tmp_path) -> None:
    cfg = preset_config("darts", "small").with_overrides(
        init_channels=4, layers=3, epochs=2, batch_size=16, data_limit=32, seed=0,
        ops="darts+dsq4+binary")
    search = Search(cfg, RunDir.create(tmp_path / "s", {"search": cfg.to_dict()}),
                    log=lambda m: None)
    search.run_all()
    model = search.model
    t, k = ede_schedule(1, 2)  # the last epoch's values
    irconvs = [m for m in model.modules() if isinstance(m, IRConv2d)]
    assert irconvs and all(float(m.t) == pytest.approx(t) and float(m.k) == pytest.approx(k)
                           for m in irconvs)
    groups = search.weight_optimizer.param_groups
    free = [g for g in groups if g["weight_decay"] == 0.0]
    assert len(free) == 1
    assert {id(p) for p in free[0]["params"]} == {id(p) for p in quantizer_parameters(model)}
    assert not {id(p) for p in free[0]["params"]} & {id(p) for p in model.arch_parameters()}


def test_search_retrain_and_info_with_quantized_candidates(tmp_path, capsys) -> None:
    code = main(["search", "--space", "darts", "--ops", "darts+dsq4+binary", "--epochs", "1",
                 "--channels", "4", "--layers", "3", "--limit", "32", "--out",
                 str(tmp_path / "s"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["genotype"]
    DARTS.save(BINARY_V2, tmp_path / "b.json")
    code = main(["retrain", "--genotype", str(tmp_path / "b.json"), "--epochs", "1",
                 "--channels", "4", "--layers", "3", "--limit", "32", "--batch-size", "16",
                 "--no-measure", "--hardware", "raspi4", "--out", str(tmp_path / "r"),
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert 0 <= report["test_acc"] <= 1
    # the report tells the binary network from its float form: bit-operations, MACs per
    # precision, and the modelled energy beside the predicted latency
    assert report["macs_by_precision"]["w1a1"] > 0
    assert report["bit_operations"] == sum(
        m * int(p[1:p.index("a")]) * int(p[p.index("a") + 1:])
        for p, m in report["macs_by_precision"].items())
    assert report["energy"]["hardware"] == "raspi4" and report["energy"]["mj"] > 0
    assert report["energy"]["label"].startswith("modelled")
    if "onnx_note" not in report:  # the onnx extra is installed: the file is float ops
        assert "binary layers as float operations" in report["onnx_holds"]
    code = main(["info", str(tmp_path / "b.json"), "--dataset", "digits", "--json"])
    info = json.loads(capsys.readouterr()[0])
    assert code == 0 and "w1a1" in info["macs_by_precision"]
    assert info["bit_operations"] == sum(
        m * int(p[1:p.index("a")]) * int(p[p.index("a") + 1:])
        for p, m in info["macs_by_precision"].items())


def test_energy_of_quantized_genotypes_follows_their_bit_operations() -> None:
    profile = load_profile("raspi4")
    base = architecture_energy(DARTS_V2, profile)
    dsq = architecture_energy(DSQ4_V2, profile)
    assert dsq.pj < base.pj
    # the conv MACs moved to 4 bits cost int8 (0.2 + 0.03 pJ) x 16/64 each
    net, shape = DARTS.deployed_network(DSQ4_V2, profile)
    from search_spaces.complexity import count_ops

    counts = count_ops(net, shape)
    low = counts.by_precision[(4, 4)]
    expected = (counts.macs - low) * (3.7 + 0.9) + low * (0.2 + 0.03) * 16 / 64
    assert dsq.pj == pytest.approx(expected)
    assert torch.isfinite(torch.tensor(dsq.pj))


LOWBIT_TINY = ["--epochs", "3", "--channels", "4", "--layers", "3", "--limit", "32",
               "--batch-size", "16"]


@pytest.mark.parametrize("kind", ["search", "retrain"])
def test_kill_and_resume_with_quantized_ops_ends_exactly_like_an_uninterrupted_run(
        tmp_path, capsys, monkeypatch, kill_at_checkpoint, kind: str) -> None:
    """Killed after epoch 2 is logged (before its checkpoint): the resume redoes epoch 2
    with the EDE t, k of epoch 2 and the DSQ clipping ranges of the checkpoint, and ends
    bit for bit where the uninterrupted run ends (weights, quantizer parameters, EDE
    buffers, architecture)."""
    mixed = {**DARTS_V2.to_dict()}
    mixed["normal"] = [[binary_form(op) if i % 2 else quantized_form(op, 4), j]
                       for i, (op, j) in enumerate(DARTS_V2.to_dict()["normal"])]
    DARTS.save(DARTS.parse(mixed), tmp_path / "mixed.json")
    args = {"search": ["search", "--space", "darts", "--ops", "darts+dsq4+binary"],
            "retrain": ["retrain", "--genotype", str(tmp_path / "mixed.json"),
                        "--no-measure"]}[kind]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main([*args, *LOWBIT_TINY, "--out", str(tmp_path / "full")]) == 0
    with monkeypatch.context() as mp:
        kill_at_checkpoint(mp, 3)
        assert main([*args, *LOWBIT_TINY, "--out", str(tmp_path / "run")]) == 130
    resume = [kind, "--resume", str(tmp_path / "run")]
    assert main(resume + (["--no-measure"] if kind == "retrain" else [])) == 0
    capsys.readouterr()
    full, run = tmp_path / "full", tmp_path / "run"
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(run / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    state_a, state_b = a["model"], b["model"]
    assert state_a.keys() == state_b.keys()
    lowbit = [k for k in state_a if k.endswith((".t", ".k", ".lower", ".upper",
                                                ".alpha_raw"))]
    assert any(k.endswith(".t") for k in lowbit) and any(k.endswith(".lower") for k in lowbit)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    if kind == "search":
        assert (run / "genotype.json").read_bytes() == (full / "genotype.json").read_bytes()
