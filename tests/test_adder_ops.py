"""Adder candidate operations (search_spaces/adder_ops.py): the DARTS convolutions with
every conv an AdderConv2d followed by a BN, registered as op specs (pairs included),
counted as additions rather than MACs, mapped from float names by `adder_form`, and run
inside a DARTS evaluation network.

The DARTS space itself lists only the 8 DARTS primitives (`DartsSpace.op_names`), so its
`build_network` refuses adder genotypes; the network test builds `NetworkCIFAR` directly.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from latency.simulate import layer_costs
from search_spaces.adder import AdderConv2d
from search_spaces.adder_ops import (
    ADDER_FORM,
    ADDER_LAYER,
    AdderDilConv,
    AdderSepConv,
    adder_additions,
    adder_form,
)
from search_spaces.complexity import count_ops
from search_spaces.genotype import Genotype
from search_spaces.layer_spec import find_layer_spec
from search_spaces.networks import NetworkCIFAR
from search_spaces.op_spec import op_spec, visible_op_names
from search_spaces.ops import DARTS_PRIMITIVES, build_op

torch.set_num_threads(1)

ADDER_OPS = ("adder_sep_conv_3x3", "adder_sep_conv_5x5", "adder_dil_conv_3x3",
             "adder_dil_conv_5x5")
#: adder op -> its DARTS counterpart
MIRRORS = {adder: darts for darts, adder in ADDER_FORM.items()}


def leaves(module: nn.Module) -> list[nn.Module]:
    """The leaf modules in forward order (every op here is a chain of Sequentials)."""
    return [m for m in module.modules() if not list(m.children())]


# ------------------------------------------------------------------ modules


@pytest.mark.parametrize("name", ADDER_OPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_output_shape(name: str, stride: int) -> None:
    op = build_op(name, 4, stride)
    out = op(torch.randn(2, 4, 8, 8))
    assert out.shape == (2, 4, 8 // stride, 8 // stride)


@pytest.mark.parametrize("name", ADDER_OPS)
def test_every_conv_is_an_adder_followed_by_bn(name: str) -> None:
    layers = leaves(build_op(name, 4, 1))
    assert not any(isinstance(m, nn.Conv2d) for m in layers)
    adders = [i for i, m in enumerate(layers) if isinstance(m, AdderConv2d)]
    assert len(adders) == (4 if "sep" in name else 2)
    for i in adders:
        assert isinstance(layers[i + 1], nn.BatchNorm2d), f"layer {i} is not followed by BN"


@pytest.mark.parametrize("name", ADDER_OPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_geometry_mirrors_the_darts_op(name: str, stride: int) -> None:
    """Each adder layer has the kernel, stride, padding, dilation, groups and channels of
    the conv in the same place of the DARTS op."""
    convs = [m for m in leaves(build_op(MIRRORS[name], 6, stride)) if isinstance(m, nn.Conv2d)]
    adders = [m for m in leaves(build_op(name, 6, stride)) if isinstance(m, AdderConv2d)]
    assert len(convs) == len(adders)
    for c, a in zip(convs, adders, strict=True):
        assert (a.in_channels, a.out_channels, a.groups) == (c.in_channels, c.out_channels,
                                                            c.groups)
        assert (a.kernel_size, a.stride, a.padding, a.dilation) == (
            c.kernel_size, c.stride, c.padding, c.dilation)
    assert adders[0].groups == 6  # depthwise


def test_modules_take_the_ops_py_signature() -> None:
    sep = AdderSepConv(4, 6, 3, 2, 1, affine=False, activation="elu")
    assert sep(torch.randn(1, 4, 8, 8)).shape == (1, 6, 4, 4)
    assert sum(isinstance(m, nn.ELU) for m in sep.modules()) == 2
    assert all(not m.affine for m in sep.modules() if isinstance(m, nn.BatchNorm2d))
    dil = AdderDilConv(4, 6, 5, 1, 4, 2)
    assert dil(torch.randn(1, 4, 8, 8)).shape == (1, 6, 8, 8)
    assert isinstance(dil[0], nn.ReLU)


def test_output_channels_do_not_collapse() -> None:
    """With no BN between the depthwise and pointwise adders, every output channel is
    the same function of the input (correlation 1); the BN after each adder prevents it."""
    torch.manual_seed(0)
    y = AdderDilConv(8, 8, 3, 1, 1, 1)(torch.randn(4, 8, 8, 8))
    corr = torch.corrcoef(y.transpose(0, 1).reshape(8, -1))
    off_diagonal = corr[~torch.eye(8, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.99


def test_gradients_reach_every_adder() -> None:
    op = build_op("adder_sep_conv_3x3", 4, 2)
    op(torch.randn(2, 4, 8, 8)).square().sum().backward()
    adders = [m for m in op.modules() if isinstance(m, AdderConv2d)]
    for a in adders:
        assert a.weight.grad is not None and a.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------- specs


@pytest.mark.parametrize("name", ADDER_OPS)
def test_spec_facts(name: str) -> None:
    spec = op_spec(name)
    assert spec.family == "conv" and spec.heavy and not spec.zero
    assert spec.batched is not None and spec.batched_activated is not None
    assert spec.takes_activation
    assert spec.layers == {AdderConv2d: ADDER_LAYER}
    layer = find_layer_spec(AdderConv2d(2, 2, 1))
    assert layer is ADDER_LAYER
    assert layer.kind == "adder" and layer.weight_bits == 32 and layer.act_bits == 32


def test_registered_after_the_darts_ops() -> None:
    names = visible_op_names()
    assert set(names[:8]) == set(DARTS_PRIMITIVES)
    assert [n for n in names if n in ADDER_OPS] == list(ADDER_OPS)
    assert names.index("adder_sep_conv_3x3") > 7


def test_import_alone_keeps_the_builtins_first() -> None:
    """Imported first in a fresh process, the module still gets the DARTS ops registered
    before its own (the registry's lazy builtin loading)."""
    code = ("import search_spaces.adder_ops\n"
            "from search_spaces.op_spec import op_names\n"
            "print(','.join(op_names()))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.strip().split(",")
    assert set(out[:8]) == set(DARTS_PRIMITIVES)
    assert out[8:] == list(ADDER_OPS)


@pytest.mark.parametrize("name", ADDER_OPS)
def test_silu_pair_builds_with_silu_everywhere(name: str) -> None:
    op = build_op(f"{name}/silu", 4, 1)
    kinds = leaves(op)
    assert sum(isinstance(m, nn.SiLU) for m in kinds) == (2 if "sep" in name else 1)
    assert not any(isinstance(m, nn.ReLU) for m in kinds)
    assert any(isinstance(m, nn.ReLU) for m in leaves(build_op(name, 4, 1)))
    assert op(torch.randn(1, 4, 8, 8)).shape == (1, 4, 8, 8)
    assert op_spec(f"{name}/silu").family == "conv"


# ------------------------------------------------------------------- counts

# C=2 channels, 4x4 input, stride 1 (output 4x4 everywhere). Per AdderDilConv block:
#   depthwise 3x3: 2*4*4 = 32 output elements x (2/2) x 9 taps = 288 taps
#   pointwise 1x1: 32 output elements x 2 x 1 = 64 taps
#   2 additions per tap: 2 * (288 + 64) = 704
# a sep conv is two such blocks: 1408. The DARTS dil_conv_3x3 does 288 + 64 = 352 MACs.
HAND_ADDITIONS = {"adder_dil_conv_3x3": 704, "adder_sep_conv_3x3": 1408}
HAND_MACS = {"dil_conv_3x3": 352, "sep_conv_3x3": 704}


@pytest.mark.parametrize("name", sorted(HAND_ADDITIONS))
def test_count_ops_counts_additions_not_macs(name: str) -> None:
    counts = count_ops(build_op(name, 2, 1), (2, 4, 4))
    assert counts.macs == 0 and counts.bops == 0
    assert counts.additions == HAND_ADDITIONS[name]
    darts = count_ops(build_op(MIRRORS[name], 2, 1), (2, 4, 4))
    assert darts.additions == 0
    assert darts.macs == HAND_MACS[MIRRORS[name]] > 0
    assert counts.additions == 2 * darts.macs  # same taps, two additions each


def test_stride_two_counts_the_smaller_output() -> None:
    # depthwise: 2*2*2 = 8 outputs x 9 = 72 taps, pointwise: 8 x 2 = 16 -> 2 * 88
    assert count_ops(build_op("adder_dil_conv_3x3", 2, 2), (2, 4, 4)).additions == 176


def test_additions_scale_with_the_batch_as_conv_macs() -> None:
    layer = AdderConv2d(4, 6, 3, padding=1, groups=2)
    one, three = torch.randn(1, 4, 5, 5), torch.randn(3, 4, 5, 5)
    per_sample = adder_additions(layer, (one,), layer(one))
    assert per_sample == 2 * (6 * 5 * 5) * 2 * 9
    assert adder_additions(layer, (three,), layer(three)) == 3 * per_sample


def test_simulator_sees_adder_kernels() -> None:
    model = build_op("adder_sep_conv_3x3", 2, 1)
    costs = layer_costs(model, (2, 4, 4), 1, "fp32", False, False)
    adders = [c for c in costs if c.kind == "adder"]
    assert len(adders) == 4
    assert sum(c.flops for c in adders) == HAND_ADDITIONS["adder_sep_conv_3x3"]


# ---------------------------------------------------------------- adder_form


def test_adder_form() -> None:
    assert ADDER_FORM == {
        "sep_conv_3x3": "adder_sep_conv_3x3", "sep_conv_5x5": "adder_sep_conv_5x5",
        "dil_conv_3x3": "adder_dil_conv_3x3", "dil_conv_5x5": "adder_dil_conv_5x5",
    }
    for darts, adder in ADDER_FORM.items():
        assert adder_form(darts) == adder
        assert adder_form(f"{darts}/silu") == f"{adder}/silu"
        assert adder_form(adder) == adder  # already adder: unchanged
        assert adder_form(f"{adder}/silu") == f"{adder}/silu"
    for other in ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3",
                  "not_an_op", "sep_conv_3x3x"):
        assert adder_form(other) == other


# ------------------------------------------------------------------ networks

FLOAT_GENOTYPE = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_5x5/silu", 1), ("dil_conv_3x3", 0),
            ("skip_connect", 1), ("dil_conv_5x5", 2), ("avg_pool_3x3", 0),
            ("skip_connect", 0), ("sep_conv_3x3", 3)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("dil_conv_5x5", 1), ("sep_conv_5x5", 0),
            ("skip_connect", 2), ("dil_conv_3x3/silu", 2), ("avg_pool_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 4)],
    reduce_concat=[2, 3, 4, 5],
)


def to_adder(g: Genotype) -> Genotype:
    return Genotype(
        normal=[(adder_form(op), i) for op, i in g.normal], normal_concat=g.normal_concat,
        reduce=[(adder_form(op), i) for op, i in g.reduce], reduce_concat=g.reduce_concat,
    )


def test_adder_network_trains_a_step() -> None:
    torch.manual_seed(0)
    genotype = to_adder(FLOAT_GENOTYPE)
    assert not {op for op, _ in genotype.normal + genotype.reduce} & set(ADDER_FORM)
    genotype.validate([*DARTS_PRIMITIVES, *ADDER_OPS])
    net = NetworkCIFAR(genotype, C=8, layers=3, num_classes=10, auxiliary=False)
    assert not any(isinstance(m, nn.Conv2d) for cell in net.cells for m in cell._ops.modules())
    logits, aux = net(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 10) and aux is None
    nn.functional.cross_entropy(logits, torch.tensor([1, 7])).backward()
    adders = [m for m in net.modules() if isinstance(m, AdderConv2d)]
    # layers=3: one normal cell (3 sep x 4 + 2 dil x 2), two reduce (2 x 4 + 2 x 2 each)
    assert len(adders) == 16 + 2 * 12
    assert all(a.weight.grad is not None and torch.isfinite(a.weight.grad).all()
               for a in adders)


def test_adder_network_moves_conv_work_to_additions() -> None:
    float_net = NetworkCIFAR(FLOAT_GENOTYPE, C=8, layers=3, auxiliary=False)
    adder_net = NetworkCIFAR(to_adder(FLOAT_GENOTYPE), C=8, layers=3, auxiliary=False)
    f, a = count_ops(float_net, (3, 8, 8)), count_ops(adder_net, (3, 8, 8))
    assert f.additions == 0 and a.additions > 0
    # the stem, preprocessing and classifier stay MACs; the edges' MACs become additions
    assert 0 < a.macs < f.macs
    assert a.additions == 2 * (f.macs - a.macs)
