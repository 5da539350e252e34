"""The modelled arithmetic energy (latency/energy.py) against figures computed by hand,
adder kernels in the roofline, and energy beside latency in `nas latency`, `nas info` and
profiled rows.

Per-operation energies (pJ, Horowitz ISSCC 2014, 45 nm): fp32 add 0.9 / mult 3.7, int8
add 0.03 / mult 0.2; a MAC is one of each, an adder layer's addition one add.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import search_spaces.adder_ops  # noqa: F401  (registers AdderConv2d's layer spec)
from latency.energy import (
    ENERGY_LABEL,
    HOROWITZ_45NM_PJ,
    PRECISION_ROWS,
    EnergyEstimate,
    architecture_energy,
    arithmetic_energy,
    network_energy,
)
from latency.hardware import PRECISIONS, load_profile, profile_names
from latency.simulate import LayerCost, RooflineParams, simulate_costs
from nas.cli.main import main
from search_spaces.adder import AdderConv2d
from search_spaces.adder_ops import adder_form
from search_spaces.complexity import OpCounts, count_ops
from search_spaces.errors import InputError
from search_spaces.genotype import Genotype
from search_spaces.genotype_library import DARTS_V2
from search_spaces.networks import NetworkCIFAR

torch.set_num_threads(1)

# ------------------------------------------------------------------ hand figures

# a 3x3 layer, 3 -> 4 channels, padding 1, on 3x4x4: 4 x 4 x 4 = 64 outputs x 27 taps;
# then a linear 64 -> 10: 640 MACs
TAPS = 64 * 27
LINEAR_MACS = 640


def tiny(first: nn.Module) -> nn.Module:
    return nn.Sequential(first, nn.Flatten(), nn.Linear(64, 10)).eval()


def test_tiny_conv_net_by_hand() -> None:
    net = tiny(nn.Conv2d(3, 4, 3, padding=1, bias=False))
    macs = TAPS + LINEAR_MACS  # 2368
    fp32 = network_energy(net, (3, 4, 4), "fp32")
    assert (fp32.multiplications, fp32.additions) == (macs, macs)
    assert fp32.pj == pytest.approx(2368 * (3.7 + 0.9))  # 10,892.8 pJ
    assert fp32.mj == pytest.approx(10_892.8e-9)
    int8 = network_energy(net, (3, 4, 4), "int8")
    assert int8.pj == pytest.approx(2368 * (0.2 + 0.03))  # 544.64 pJ
    assert (int8.precision, int8.row) == ("int8", "int8")


def test_tiny_adder_net_by_hand() -> None:
    net = tiny(AdderConv2d(3, 4, 3, padding=1))
    adds = 2 * TAPS  # an absolute difference and an accumulation per tap: 3456
    fp32 = network_energy(net, (3, 4, 4), "fp32")
    # multiplications only in the linear layer; additions: its MACs' and the adder's
    assert (fp32.multiplications, fp32.additions) == (LINEAR_MACS, LINEAR_MACS + adds)
    assert fp32.pj == pytest.approx(640 * 4.6 + 3456 * 0.9)  # 2944 + 3110.4 = 6054.4 pJ
    int8 = network_energy(net, (3, 4, 4), "int8")
    assert int8.pj == pytest.approx(640 * 0.23 + 3456 * 0.03)  # 147.2 + 103.68 = 250.88
    conv = network_energy(tiny(nn.Conv2d(3, 4, 3, padding=1, bias=False)), (3, 4, 4), "fp32")
    assert fp32.pj < conv.pj


def test_table_and_precision_rows() -> None:
    assert HOROWITZ_45NM_PJ == {
        "int8": {"add": 0.03, "mult": 0.2}, "int32": {"add": 0.1, "mult": 3.1},
        "fp16": {"add": 0.4, "mult": 1.1}, "fp32": {"add": 0.9, "mult": 3.7},
    }
    # every precision a profile may name has a row; bf16 is approximated by fp16
    assert set(PRECISION_ROWS) == set(PRECISIONS)
    assert PRECISION_ROWS["bf16"] == "fp16"
    counts = OpCounts(macs=10, additions=4, bops=0, params=0)
    assert arithmetic_energy(counts, "bf16").pj == arithmetic_energy(counts, "fp16").pj
    assert arithmetic_energy(counts, "fp16").pj == pytest.approx(10 * 1.5 + 4 * 0.4)


def test_estimate_is_frozen_and_labelled_modelled() -> None:
    e = arithmetic_energy(OpCounts(macs=1, additions=0, bops=0, params=0), "fp32")
    assert isinstance(e, EnergyEstimate) and e.label == ENERGY_LABEL
    assert e.label.startswith("modelled") and "memory traffic not included" in e.label
    with pytest.raises(AttributeError):
        e.pj = 0.0  # type: ignore[misc]
    assert e.to_dict() == {"energy_mj": e.mj, "multiplications": 1, "additions": 1,
                           "energy_label": ENERGY_LABEL}


def test_unknown_precision_is_a_one_line_input_error() -> None:
    counts = OpCounts(macs=1, additions=0, bops=0, params=0)
    with pytest.raises(InputError) as exc:
        arithmetic_energy(counts, "fp64")
    assert "fp64" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(InputError):
        network_energy(nn.Linear(2, 2), (2,), "int4")


# ------------------------------------------------------------------ adder networks


def to_adder(g: Genotype) -> Genotype:
    return Genotype(
        normal=tuple((adder_form(op), i) for op, i in g.normal),
        normal_concat=g.normal_concat,
        reduce=tuple((adder_form(op), i) for op, i in g.reduce),
        reduce_concat=g.reduce_concat,
    )


@pytest.fixture(scope="module")
def darts_v2_counts() -> tuple[OpCounts, OpCounts]:
    """(float, all-adder) counts of a small DARTS_V2 evaluation network: the DARTS space
    validates only DARTS op names, so `NetworkCIFAR` is built directly."""
    shape = (3, 16, 16)
    nets = [NetworkCIFAR(g, C=8, layers=5, num_classes=10, auxiliary=False).eval()
            for g in (DARTS_V2, to_adder(DARTS_V2))]
    return count_ops(nets[0], shape), count_ops(nets[1], shape)


@pytest.mark.parametrize("name", profile_names())
def test_all_adder_network_costs_less_on_every_profile(name, darts_v2_counts) -> None:
    """The adder network is cheaper at every shipped profile's precision; the layers that
    became adder layers save at least 40% of their energy, and the whole network saves
    exactly what they save.

    The whole network saves less than 40% at fp32 (about a third): the stem, the cells'
    1x1 preprocessing convs and the factorised reductions stay convolutions, and they
    hold over 40% of DARTS_V2's MACs."""
    precision = load_profile(name).precision
    f, a = darts_v2_counts
    float_e, adder_e = arithmetic_energy(f, precision), arithmetic_energy(a, precision)
    assert adder_e.pj < float_e.pj
    moved = f.macs - a.macs  # MACs of the convolutions that became adder layers
    assert moved > 0 and a.additions == 2 * moved
    pj = HOROWITZ_45NM_PJ[PRECISION_ROWS[precision]]
    as_conv = moved * (pj["mult"] + pj["add"])
    as_adder = a.additions * pj["add"]
    assert as_adder <= 0.6 * as_conv
    assert float_e.pj - adder_e.pj == pytest.approx(as_conv - as_adder)
    assert adder_e.multiplications == a.macs < float_e.multiplications


@pytest.mark.parametrize("precision", sorted(PRECISION_ROWS))
def test_converted_layers_save_at_least_40_percent_at_every_precision(precision) -> None:
    """Two additions per tap instead of one MAC: 1 - 2 add / (mult + add) is 61% at fp32,
    47% at fp16 / bf16, 74% at int8."""
    pj = HOROWITZ_45NM_PJ[PRECISION_ROWS[precision]]
    assert 1 - 2 * pj["add"] / (pj["mult"] + pj["add"]) >= 0.4


# ------------------------------------------------------------------ roofline


def test_compute_bound_adder_kernel_takes_twice_a_conv_kernel() -> None:
    params = RooflineParams(peak_flops=1e12, bandwidth=1e11, overhead_s=0.0, eff_compute=0.5)
    conv = LayerCost(name="c", op="Conv2d", kind="conv", flops=1e9, bytes=1e3)
    adder = LayerCost(name="a", op="AdderConv2d", kind="adder", flops=1e9, bytes=1e3)
    sim = simulate_costs([conv, adder], params)
    c, a = sim.per_layer
    assert c.bound == a.bound == "compute"
    assert c.ms == pytest.approx(1e9 / (1e12 * 0.5) * 1e3)  # 2 ms
    assert a.ms == pytest.approx(2 * c.ms)
    assert params.efficiency("adder") == 0.25 and params.efficiency("conv") == 0.5
    # a kind_efficiency entry still overrides the default
    tuned = RooflineParams(peak_flops=1e12, bandwidth=1e11, overhead_s=0.0, eff_compute=0.5,
                           kind_efficiency={"adder": 0.5})
    assert tuned.time(adder).ms == pytest.approx(c.ms)


def test_profiles_cost_adder_kernels_at_half_eff_compute() -> None:
    p100 = load_profile("p100")
    params = RooflineParams.from_profile(p100)
    assert params.efficiency("adder") == pytest.approx(params.eff_compute / 2)
    over = RooflineParams.from_profile(p100, kind_efficiency={"adder": 0.3})
    assert over.efficiency("adder") == 0.3


# ------------------------------------------------------------------ outputs


def test_nas_latency_reports_modelled_energy(capsys) -> None:
    assert main(["latency", "DARTS_V2", "--hardware", "p100", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["energy_mj"] > 0 and r["energy_label"].startswith("modelled")
    expected = architecture_energy(DARTS_V2, load_profile("p100"))
    assert r["energy_mj"] == pytest.approx(expected.mj)
    # a float network at fp32: every MAC 4.6 pJ
    assert r["multiplications"] == r["additions"] == expected.multiplications > 0
    assert r["energy_mj"] == pytest.approx(r["multiplications"] * 4.6e-9)
    assert main(["latency", "DARTS_V2", "--hardware", "p100"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("  energy:"))
    assert f"{r['energy_mj']:.3g} mJ per image (modelled:" in line


def test_nas_latency_energy_without_a_predictor(capsys) -> None:
    """The cpu profile ships no predictor: --measure still reports the energy of the
    network it timed."""
    assert main(["latency", "DARTS_V2", "--hardware", "cpu", "--measure", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["energy_mj"] == pytest.approx(
        architecture_energy(DARTS_V2, load_profile("cpu")).mj)
    assert r["energy_label"].startswith("modelled")


def test_nas_info_prints_multiplications_and_additions(capsys) -> None:
    args = ["info", "DARTS_V2", "--dataset", "digits", "--channels", "8", "--layers", "5"]
    assert main([*args, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["multiplications"] == r["macs"] == 435_584
    assert r["total_additions"] == r["macs"] + r["additions"] == 435_584
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "multiplications per image:            435,584 (0.4M)" in out
    assert "additions per image (MACs + adders):  435,584 (0.4M)" in out


def test_profiled_rows_carry_modelled_energy(tmp_path) -> None:
    from latency.profiling import profile_hardware, sample_genotype
    from latency.samples import load_samples
    from search_spaces.space import get_space

    space, p100 = get_space("darts"), load_profile("p100")
    out = tmp_path / "p100.jsonl"
    profile_hardware(p100, space, out, samples=1, log=lambda _: None)
    (row,) = load_samples(out)
    expected = architecture_energy(sample_genotype(space, 0, 0), p100)
    assert row["energy_mj"] == pytest.approx(expected.mj) and row["energy_mj"] > 0
