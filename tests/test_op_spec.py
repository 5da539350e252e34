"""One OpSpec per operation: a toy op family registered from here (no package edit)
builds, runs in a supernet, is counted and simulated from its layer specs, and reports
its family; namespaces, the keyed activation cache and unknown names are checked too.

Names start with "toyspec_" so they cannot collide with other tests' registrations.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from latency.simulate import RooflineParams, layer_costs, register_compute_scale
from latency.simulate.tracing import LayerCost
from nas.report.cells import op_family
from search_spaces.activations import ACTIVATIONS, activation
from search_spaces.complexity import count_macs, count_ops
from search_spaces.errors import UnknownOperationError
from search_spaces.layer_spec import LayerSpec, find_layer_spec
from search_spaces.nb201 import NB201_NAMESPACE, NB201_OPS
from search_spaces.nb201_supernet import Nb201SuperNet
from search_spaces.op_spec import OpSpec, op_spec, register_op_spec
from search_spaces.ops import DARTS_PRIMITIVES, build_op, op_names, register_op
from search_spaces.supernet import SuperNet
from search_spaces.supernet_ops import (
    EdgeBatchOp,
    PerEdge,
    SharedPool,
    SourceCache,
    build_edge_batch,
    register_batched_op,
)

# ------------------------------------------------------------------ the toy family


class ToyQConv(nn.Module):
    """A k x k conv stored at 8-bit weights, reading 4-bit activations (as a quantized
    deployment would); computed in float here, which is all the counters look at."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.stride, self.padding = stride, kernel // 2
        self.weight = nn.Parameter(torch.randn(C_out, C_in, kernel, kernel) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, None, self.stride, self.padding)


class ToyAdder(nn.Module):
    """A 1x1 adder layer: out[o] = -sum_i |x[i] - w[o, i]|; additions only, no MACs."""

    def __init__(self, C_in: int, C_out: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.weight = nn.Parameter(torch.randn(C_out, C_in) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        diff = x.unsqueeze(1) - self.weight[None, :, :, None, None]
        return -diff.abs().sum(dim=2)


def toy_qconv_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    assert isinstance(module, ToyQConv)
    return output.numel() * module.weight[0].numel()


def toy_adder_additions(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    assert isinstance(module, ToyAdder)
    return output.numel() * module.weight.shape[1] * 2  # one subtraction, one accumulation


QCONV_LAYER = LayerSpec(count=toy_qconv_macs, kind="toyspec_lowbit", weight_bits=8,
                        act_bits=4, compute_scale=8 * 4 / 64)
ADDER_LAYER = LayerSpec(count=lambda m, i, o: 0, kind="toyspec_adder",
                        additions=toy_adder_additions)


class BatchedToyQConv(EdgeBatchOp):
    """SiLU (the node's shared one) -> one ToyQConv with n*C outputs, for n edges."""

    def __init__(self, C: int, stride: int, n: int) -> None:
        super().__init__(n)
        self.C = C
        self.conv = ToyQConv(C, n * C, 3, stride)

    def forward(self, cache: SourceCache) -> torch.Tensor:
        h = self.conv(cache.activated("silu"))
        N, _, H, W = h.shape
        return h.view(N, self.n, self.C, H, W)


QCONV = register_op_spec(OpSpec(
    "toyspec_qconv_3x3",
    build=lambda C, stride, affine: nn.Sequential(
        nn.SiLU(), ToyQConv(C, C, 3, stride), nn.BatchNorm2d(C, affine=affine)),
    batched=BatchedToyQConv,
    family="lowbit",
    heavy=True,
    layers={ToyQConv: QCONV_LAYER},
))
# "conv" in the name, but the spec says "adder": reports must follow the spec
ADDER = register_op_spec(OpSpec(
    "toyspec_adderconv_1x1",
    build=lambda C, stride, affine: nn.Sequential(
        ToyAdder(C, C, stride), nn.BatchNorm2d(C, affine=affine)),  # as AdderNet's blocks
    family="adder",
    layers={ToyAdder: ADDER_LAYER},
))


# ------------------------------------------------------------------------ building


def test_toy_ops_build_discretely() -> None:
    x = torch.randn(2, 4, 8, 8)
    assert build_op("toyspec_qconv_3x3", 4, 1)(x).shape == (2, 4, 8, 8)
    assert build_op("toyspec_adderconv_1x1", 4, 2)(x).shape == (2, 4, 4, 4)
    assert {"toyspec_qconv_3x3", "toyspec_adderconv_1x1"} <= set(op_names())
    assert op_spec("toyspec_qconv_3x3") is QCONV and QCONV.heavy and not ADDER.heavy
    assert find_layer_spec(ToyQConv(1, 1, 3)) is QCONV_LAYER  # registered with the op


def test_toy_ops_in_supernet_edges() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 6)
    per_edge = build_edge_batch("toyspec_adderconv_1x1", 4, 1, 3)
    assert isinstance(per_edge, PerEdge)  # no batched form: one module per edge
    out = per_edge(SourceCache(x))
    assert out.shape == (2, 3, 4, 6, 6)
    torch.testing.assert_close(out[:, 1], per_edge.ops[1](x))

    batched = build_edge_batch("toyspec_qconv_3x3", 4, 2, 2)
    assert isinstance(batched, BatchedToyQConv)
    y = batched(SourceCache(x))
    assert y.shape == (2, 2, 4, 3, 3)
    w = batched.conv.weight[4:8]  # edge 1's slice
    torch.testing.assert_close(y[:, 1], F.conv2d(F.silu(x), w, None, 2, 1))

    ops = ["none", "toyspec_qconv_3x3", "toyspec_adderconv_1x1", "skip_connect"]
    net = SuperNet(4, 10, 3, {"normal": [ops] * 5, "reduce": [ops] * 5}, steps=2,
                   multiplier=2)
    loss = net(torch.randn(2, 3, 8, 8)).sum()
    loss.backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.arch_parameters())
    names = net.cells[0].sources[0].op_names
    assert "none" not in names and "toyspec_qconv_3x3" in names  # zero: never computed


def test_old_style_registration_makes_a_default_spec() -> None:
    register_op("toyspec_old_pool")(lambda C, stride, affine: nn.MaxPool2d(3, stride, 1))
    spec = op_spec("toyspec_old_pool")
    assert (spec.family, spec.heavy, spec.zero, spec.batched) == ("pool", False, False, None)
    assert isinstance(build_edge_batch("toyspec_old_pool", 4, 1, 2), PerEdge)

    @register_batched_op("toyspec_old_pool")
    def _shared(C: int, stride: int, n: int) -> EdgeBatchOp:
        return SharedPool(nn.MaxPool2d(3, stride, 1), C, n, bn=False)

    assert isinstance(build_edge_batch("toyspec_old_pool", 4, 1, 2), SharedPool)
    # a namespace that only inherits the name gets its own copy; the shared spec stays
    register_batched_op("toyspec_old_pool", "toyspec_space")(
        lambda C, stride, n: PerEdge("toyspec_old_pool", C, stride, n))
    assert op_spec("toyspec_old_pool", "toyspec_space").namespace == "toyspec_space"
    assert op_spec("toyspec_old_pool").batched is _shared


# ------------------------------------------------------------------------ counting


def test_count_ops_of_the_toy_layers() -> None:
    model = nn.Sequential(ToyQConv(2, 3, 3), ToyAdder(3, 4))
    counts = count_ops(model, (2, 4, 4))
    macs = 3 * 4 * 4 * (2 * 3 * 3)  # 48 outputs x (2 in channels x 3x3)
    additions = 4 * 4 * 4 * 3 * 2  # 64 outputs x 3 in channels x (sub + add)
    assert counts.macs == macs == 864 and count_macs(model, (2, 4, 4)) == macs
    assert counts.additions == additions == 384
    assert counts.bops == macs * 8 * 4  # the adder's additions are no bit-operations
    assert counts.params == 3 * 2 * 9 + 4 * 3

    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    plain = count_ops(conv, (2, 4, 4))
    assert plain.additions == 0 and plain.bops == 864 * 32 * 32 and plain.macs == 864


@pytest.mark.parametrize(("precision", "qconv_bytes", "adder_bytes"), [
    # inputs at min(act_bits / 8, bpe), weights at min(weight_bits / 8, bpe), outputs at bpe
    ("fp32", 32 * 0.5 + 54 * 1 + 48 * 4, (48 + 12 + 64) * 4),
    ("fp16", 32 * 0.5 + 54 * 1 + 48 * 2, (48 + 12 + 64) * 2),
    ("int8", 32 * 0.5 + 54 * 1 + 48 * 1, (48 + 12 + 64) * 1),
])
def test_layer_costs_follow_the_layer_specs(precision, qconv_bytes, adder_bytes) -> None:
    model = nn.Sequential(ToyQConv(2, 3, 3), ToyAdder(3, 4))
    costs = layer_costs(model, (2, 4, 4), 1, precision, False, False)
    assert costs == [
        LayerCost("0", "ToyQConv", "toyspec_lowbit", 2.0 * 864 * 0.5, qconv_bytes,
                  weight_bits=8, act_bits=4),
        LayerCost("1", "ToyAdder", "toyspec_adder", 384.0, adder_bytes),
    ]


def test_efficiency_of_a_new_kind() -> None:
    params = RooflineParams(peak_flops=1e12, bandwidth=1e11, overhead_s=0.0,
                            kind_efficiency={"toyspec_adder": 0.3})
    assert params.efficiency("toyspec_adder") == 0.3
    assert params.efficiency("toyspec_lowbit") == params.eff_compute == 0.5
    assert params.efficiency("depthwise") == params.eff_compute_depthwise
    assert params.efficiency("conv") == params.eff_compute
    cost = LayerCost("1", "ToyAdder", "toyspec_adder", 3e9, 1.0)
    assert math.isclose(params.time(cost).compute_ms, 3e9 / (1e12 * 0.3) * 1e3)
    from latency.hardware import load_profile

    tuned = RooflineParams.from_profile(load_profile("h100"),
                                        kind_efficiency={"toyspec_adder": 0.2})
    assert tuned.efficiency("toyspec_adder") == 0.2


def test_compute_scale_needs_a_layer_spec() -> None:
    class Bare(nn.Module):
        pass

    with pytest.raises(TypeError, match="no layer spec"):
        register_compute_scale(Bare)(lambda m: 0.5)


def test_a_layer_type_cannot_get_two_different_specs() -> None:
    with pytest.raises(ValueError, match="different LayerSpec"):
        register_op_spec(OpSpec("toyspec_clash", build=lambda C, s, a: ToyQConv(C, C, 3, s),
                                layers={ToyQConv: LayerSpec(count=toy_qconv_macs)}))
    assert "toyspec_clash" not in op_names()
    with pytest.raises(ValueError, match="already registered"):
        register_op_spec(OpSpec("toyspec_qconv_3x3", build=QCONV.build))


# ---------------------------------------------------------------------- namespaces


def test_nb201_avg_pool_has_no_bn_darts_has() -> None:
    nb201 = op_spec("avg_pool_3x3", NB201_NAMESPACE)
    darts = op_spec("avg_pool_3x3")
    assert nb201.namespace == NB201_NAMESPACE and darts.namespace == ""
    assert darts.supernet_bn and not nb201.supernet_bn
    # names NB201 does not redefine resolve to the shared specs
    assert op_spec("skip_connect", NB201_NAMESPACE) is op_spec("skip_connect")
    assert op_spec("nor_conv_3x3", NB201_NAMESPACE) is op_spec("nor_conv_3x3")

    x = torch.randn(2, 4, 6, 6) * 3 + 1
    pool = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    own = build_edge_batch("avg_pool_3x3", 4, 1, 2, namespace=NB201_NAMESPACE)
    shared = build_edge_batch("avg_pool_3x3", 4, 1, 2)
    assert isinstance(own, SharedPool) and own.bn is None
    assert isinstance(shared, SharedPool) and isinstance(shared.bn, nn.BatchNorm2d)
    torch.testing.assert_close(own(SourceCache(x)), pool)
    shared.train()
    bn = F.batch_norm(pool, None, None, training=True)
    torch.testing.assert_close(shared(SourceCache(x)), bn)

    # the per-edge fallback follows the namespace too
    assert isinstance(PerEdge("avg_pool_3x3", 4, 1, 1, NB201_NAMESPACE).ops[0], nn.AvgPool2d)
    assert isinstance(PerEdge("avg_pool_3x3", 4, 1, 1).ops[0], nn.Sequential)

    net = Nb201SuperNet(4, 1, 10, {"normal": [list(NB201_OPS)] * 6})
    pools = [m for m in net.modules() if isinstance(m, SharedPool)]
    assert pools and all(p.bn is None for p in pools)


def test_heavy_and_zero_flags() -> None:
    heavy = {n for n in DARTS_PRIMITIVES if op_spec(n).heavy}
    assert heavy == {"sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"}
    nb201_heavy = {n for n in NB201_OPS if op_spec(n, NB201_NAMESPACE).heavy}
    assert nb201_heavy == {"nor_conv_1x1", "nor_conv_3x3"}
    assert {n for n in DARTS_PRIMITIVES if op_spec(n).zero} == {"none"}
    assert [op_spec(n).family for n in DARTS_PRIMITIVES] == [
        "none", "pool", "pool", "skip", "conv", "conv", "conv", "conv"]


# ------------------------------------------------------------------ activation cache


def test_keyed_activation_cache_computes_each_key_once(monkeypatch) -> None:
    calls = {"relu": 0, "silu": 0}

    def counting(name: str):
        fn = ACTIVATIONS[name]

        def wrapped(x: torch.Tensor) -> torch.Tensor:
            calls[name] += 1
            return fn(x)

        return wrapped

    monkeypatch.setitem(ACTIVATIONS, "relu", counting("relu"))
    monkeypatch.setitem(ACTIVATIONS, "silu", counting("silu"))
    x = torch.randn(2, 3, 4, 4)
    cache = SourceCache(x)
    for _ in range(2):
        assert torch.equal(cache.activated("relu"), F.relu(x))
        assert torch.equal(cache.activated("silu"), F.silu(x))
        assert torch.equal(cache.activated_repeated("relu", 3), F.relu(x).repeat(1, 3, 1, 1))
        assert torch.equal(cache.activated_repeated("silu", 1), F.silu(x))
    assert calls == {"relu": 1, "silu": 1}
    assert cache.activated_repeated("relu", 3) is cache.activated_repeated("relu", 3)


# ------------------------------------------------------------------- unknown names


def test_unknown_names_are_one_line_errors() -> None:
    for call in (lambda: build_op("toyspec_nope", 4, 1),
                 lambda: op_spec("toyspec_nope", NB201_NAMESPACE),
                 lambda: build_edge_batch("toyspec_nope", 4, 1, 2),
                 lambda: activation("toyspec_nope")):
        with pytest.raises(UnknownOperationError) as info:
            call()
        message = str(info.value)
        assert "toyspec_nope" in message and "\n" not in message


def test_report_family_comes_from_the_spec() -> None:
    assert op_family("toyspec_adderconv_1x1") == "adder"  # its name alone says "conv"
    assert op_family("toyspec_qconv_3x3") == "lowbit"
    assert op_family("avg_pool_3x3", NB201_NAMESPACE) == "pool"
    assert op_family("toyspec_unregistered_pool") == "pool"  # no spec: the name decides
    assert op_family("nor_conv_1x1") == "conv"
