"""The per-layer roofline simulator against figures computed by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from latency.hardware import HardwareError, load_profile, parse_profile
from latency.simulate import (
    LayerCost,
    RooflineParams,
    fit_efficiency,
    layer_costs,
    simulate_costs,
    simulate_genotype,
    simulate_latency,
)
from search_spaces.genotype import Genotype
from search_spaces.genotype_library import resolve_genotype
from search_spaces.networks import Cell


def toy_profile(**specs: Any) -> Any:
    """1 TFLOP/s, 100 GB/s, 2 us per kernel, eff 0.5 / 0.8; batch 1, fp32."""
    base = {
        "source": "made up for the test",
        "peak_fp32_tflops": 1.0,
        "memory_bandwidth_gbs": 100.0,
        "kernel_overhead_us": 2.0,
        "eff_compute": 0.5,
        "eff_compute_depthwise": 0.25,
        "eff_memory": 0.8,
    }
    base.update(specs)
    return parse_profile({
        "name": "toy", "kind": "cuda", "source": "simulated", "device": "toy",
        "measurement": {"backend": "roofline-model", "batch_size": 1, "precision": "fp32"},
        "network": {"dataset": "digits", "input": [4, 8, 8], "layers": 1, "channels": 4,
                    "num_classes": 10},
        "specs": base,
    }, "toy")


def test_single_conv_by_hand() -> None:
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    result = simulate_latency(conv, (4, 8, 8), toy_profile())
    assert result.label == "simulated" and result.kernels == 1
    layer = result.per_layer[0]
    # 8x8x8 outputs, each a dot product of 4 x 3 x 3 = 36 MACs
    macs = 8 * 8 * 8 * 36
    flops = 2 * macs  # 36,864
    moved = 4 * (4 * 8 * 8 + 8 * 4 * 3 * 3 + 8 * 8 * 8)  # input + weights + output, fp32
    assert (layer.flops, layer.bytes) == (flops, moved) == (36864, 4224)
    compute_s = flops / (1e12 * 0.5)  # 73.728 ns
    memory_s = moved / (100e9 * 0.8)  # 52.8 ns
    assert layer.compute_ms == pytest.approx(compute_s * 1e3)
    assert layer.memory_ms == pytest.approx(memory_s * 1e3)
    assert layer.bound == "compute"
    assert result.ms == pytest.approx((compute_s + 2e-6) * 1e3)  # 0.002073728 ms


def test_precision_scales_bytes() -> None:
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    fp32 = layer_costs(conv, (4, 8, 8))[0]
    fp16 = layer_costs(conv, (4, 8, 8), precision="fp16")[0]
    assert fp16.bytes * 2 == fp32.bytes and fp16.flops == fp32.flops


def test_depthwise_memory_bound_dense_compute_bound_on_p100() -> None:
    p100 = load_profile("p100")
    depthwise = nn.Conv2d(36, 36, 3, padding=1, groups=36, bias=False)
    dense = nn.Conv2d(256, 256, 3, padding=1, bias=False)
    dw = simulate_latency(depthwise, (36, 32, 32), p100).per_layer[0]
    big = simulate_latency(dense, (256, 32, 32), p100).per_layer[0]
    assert dw.kind == "depthwise" and dw.bound == "memory"
    assert big.kind == "conv" and big.bound == "compute"
    streaming = nn.Sequential(nn.ReLU(), nn.MaxPool2d(3, 1, 1), nn.AvgPool2d(3, 1, 1))
    for layer in simulate_latency(streaming, (36, 32, 32), p100).per_layer:
        assert layer.bound == "memory", layer


class TwoInputs(nn.Module):
    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cell(x, x)


def skip_cell(nodes: int) -> nn.Module:
    edges = tuple(e for i in range(nodes) for e in (("skip_connect", 0), ("skip_connect", i + 1)))
    concat = tuple(range(2, 2 + nodes))
    genotype = Genotype(normal=edges, normal_concat=concat, reduce=edges, reduce_concat=concat)
    return TwoInputs(Cell(genotype, 8, 8, 8, reduction=False, reduction_prev=False))


def test_cell_additions_and_concat_are_counted() -> None:
    profile = toy_profile()
    small = simulate_latency(skip_cell(2), (8, 8, 8), profile)
    large = simulate_latency(skip_cell(4), (8, 8, 8), profile)
    adds = [t for t in large.per_layer if t.op == "add"]
    cats = [t for t in large.per_layer if t.op == "cat"]
    assert len(adds) == 4 and len(cats) == 1
    assert adds[0].kind == "elementwise" and adds[0].bytes == 3 * 8 * 8 * 8 * 4
    assert cats[0].kind == "concat" and cats[0].bytes == 2 * 4 * 8 * 8 * 8 * 4
    assert adds[0].name == "cell"  # attributed to the module whose forward ran it
    assert sum(t.op == "add" for t in small.per_layer) == 2
    # by hand: two more adds of 3 x 2 KiB, each 2 us + 6144 B / (100 GB/s x 0.8) = 2.0768 us,
    # and a concat of 4 instead of 2 nodes (16 KiB instead of 8 KiB moved: +102.4 ns);
    # the preprocessing is the same in both cells
    add_ms = (2e-6 + 6144 / 80e9) * 1e3
    assert adds[0].ms == pytest.approx(add_ms)
    assert large.ms - small.ms == pytest.approx(2 * add_ms + (16384 - 8192) / 80e9 * 1e3)


def test_fusion_of_batchnorm_and_relu() -> None:
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    fused = layer_costs(net, (4, 8, 8))
    assert len(fused) == 1 and fused[0].op.startswith("Conv2d+") and "relu" in fused[0].op
    eager = layer_costs(net, (4, 8, 8), fold_batchnorm=False, fuse_activation=False)
    assert [c.kind for c in eager] == ["conv", "batchnorm", "elementwise"]

    class Fork(nn.Module):  # the conv output is read twice: nothing may fuse into it
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return torch.relu(y) + y

    assert [c.op for c in layer_costs(Fork(), (4, 8, 8))] == ["Conv2d", "relu", "add"]


def test_doubling_batch_doubles_compute_time() -> None:
    dense = nn.Conv2d(128, 128, 3, padding=1, bias=False)
    p100 = load_profile("p100")
    one = simulate_latency(dense, (128, 16, 16), p100).per_layer[0]
    two = simulate_latency(dense, (128, 16, 16), p100, batch_size=2).per_layer[0]
    assert one.bound == two.bound == "compute"
    assert two.compute_ms == pytest.approx(2 * one.compute_ms)
    assert 1.8 < (two.ms - two.overhead_ms) / (one.ms - one.overhead_ms) <= 2.0 + 1e-9


def test_total_is_sum_of_layers_plus_overheads() -> None:
    genotype = resolve_genotype("DARTS_V2")
    result = simulate_genotype(genotype, "cpu")  # the small digits network
    per = result.per_layer
    assert result.ms == pytest.approx(sum(t.ms for t in per))
    assert result.ms == pytest.approx(
        sum(max(t.compute_ms, t.memory_ms) for t in per) + len(per) * per[0].overhead_ms
    )
    assert sum(result.bound_counts.values()) == result.kernels
    summary = result.summary()
    assert summary["source"] == "simulated" and summary["label"] == "simulated"
    assert summary["latency_ms"] == result.ms and summary["hardware"] == "cpu"
    # costs reused directly give the same answer
    params = RooflineParams.from_profile(load_profile("cpu"))
    again = simulate_costs(
        [LayerCost(t.name, t.op, t.kind, t.flops, t.bytes) for t in per], params
    )
    assert again.ms == pytest.approx(result.ms)


def test_profile_without_roofline_specs() -> None:
    measured = parse_profile({
        "name": "m", "kind": "cuda", "source": "measured", "device": "m",
        "measurement": {"backend": "torch-cuda", "batch_size": 1, "precision": "fp32"},
        "network": {"dataset": "digits", "input": [1, 8, 8], "layers": 8, "channels": 16,
                    "num_classes": 10},
    }, "m.yaml")
    with pytest.raises(HardwareError, match="peak_fp32_tflops"):
        simulate_latency(nn.ReLU(), (1, 8, 8), measured)


def synthetic_models() -> list[tuple[nn.Module, tuple[int, ...]]]:
    """Compute-, memory- and overhead-dominated networks, so all three factors show."""
    torch.manual_seed(0)
    return [
        (nn.Conv2d(64, 64, 3, padding=1), (64, 16, 16)),
        (nn.Conv2d(128, 128, 3, padding=1), (128, 8, 8)),
        (nn.Sequential(nn.ReLU(), nn.MaxPool2d(3, 1, 1), nn.ReLU()), (32, 64, 64)),
        (nn.Sequential(*[nn.ReLU() for _ in range(12)]), (2, 2, 2)),
        (nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.Conv2d(8, 32, 1),
                       nn.AvgPool2d(3, 1, 1)), (8, 32, 32)),
        (nn.Sequential(*[nn.Conv2d(4, 4, 1) for _ in range(6)]), (4, 4, 4)),
    ]


def test_fit_recovers_known_factors() -> None:
    profile = toy_profile()
    truth = {"eff_compute": 0.3, "eff_memory": 0.45, "kernel_overhead_us": 7.0}
    samples = [
        (model, shape, simulate_latency(model, shape, profile, **truth).ms)
        for model, shape in synthetic_models()
    ]
    result = fit_efficiency(samples, profile)
    for key, value in truth.items():
        assert result.params[key] == pytest.approx(value, rel=1e-3), (key, result.params)
    assert result.mape < 1e-3
    assert all(abs(e) < 1e-5 for e in result.rel_errors)
    report = result.to_dict()
    assert len(report["samples"]) == len(samples)
    assert math.isclose(report["effective"]["compute_gflops"], 1000 * 0.3, rel_tol=1e-3)


@pytest.mark.parametrize("name", ["p100", "pixel4"])
def test_shipped_profiles_simulate_a_published_cell(name: str) -> None:
    genotype = resolve_genotype("DARTS_V2")
    result = simulate_genotype(genotype, name)
    assert result.label == "simulated" and result.profile == name
    assert result.bound_counts["compute"] > 0 and result.bound_counts["memory"] > 0
    # every kernel's time recomputed from the profile's datasheet figures
    specs = load_profile(name).specs
    peak, bandwidth = specs["peak_fp32_tflops"] * 1e12, specs["memory_bandwidth_gbs"] * 1e9
    bounds = {"compute": 0, "memory": 0}
    total = 0.0
    for t in result.per_layer:
        eff = specs["eff_compute_depthwise"] if t.kind == "depthwise" else specs["eff_compute"]
        compute_ms = t.flops / (peak * eff) * 1e3
        memory_ms = t.bytes / (bandwidth * specs["eff_memory"]) * 1e3
        assert t.compute_ms == pytest.approx(compute_ms) and t.memory_ms == pytest.approx(
            memory_ms), t
        assert t.ms == pytest.approx(max(compute_ms, memory_ms)
                                     + specs["kernel_overhead_us"] * 1e-3), t
        bounds["compute" if compute_ms >= memory_ms else "memory"] += 1
        total += t.ms
    assert result.bound_counts == bounds and result.ms == pytest.approx(total)
    # the conv and linear kernels do 2 FLOPs per multiply-accumulate of the deployed
    # network (a little more: the bias adds)
    from latency.simulate import deployed_network
    from search_spaces.complexity import count_macs

    model, shape = deployed_network(genotype, name)
    flops = sum(t.flops for t in result.per_layer if t.kind in ("conv", "depthwise", "linear"))
    assert 2 * count_macs(model, shape) <= flops <= 1.01 * 2 * count_macs(model, shape)


def test_calibration_smoke() -> None:
    from latency.simulate import calibrate_on_this_cpu

    threads = torch.get_num_threads()
    report = calibrate_on_this_cpu(
        networks=[("DARTS_V2", 4, 2, (1, 8, 8)), ("PDARTS", 8, 2, (1, 8, 8)),
                  ("DARTS_V1", 4, 3, (3, 16, 16))],
        leave_one_out=False, warmup=1, warmup_s=0.0, repeats=3, min_time_s=0.0,
    )
    assert torch.get_num_threads() == threads
    assert report["threads"] == 1 and len(report["fit"]["samples"]) == 3
    # wall-clock times: only sane bounds (three tiny networks, well under 10 s each)
    assert all(0 < s["measured_ms"] < 10_000 and math.isfinite(s["measured_ms"])
               for s in report["fit"]["samples"])
    assert set(report["fit"]["params"]) >= {"eff_compute", "eff_memory", "kernel_overhead_us"}
