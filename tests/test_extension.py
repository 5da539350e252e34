"""A new operation family and a new search space, added from outside the package.

This module is what a contributor writes to extend the product: it registers an op
family (`OpSpec` + `LayerSpec`, search_spaces/op_spec.py) and a toy space (a
`SearchSpace` subclass + `register_space`) without editing any package file, then runs
them through everything the product does with a space: a short search from the CLI,
derivation, the discrete network, the encoding (both entry points), the counters and the
simulated latency. If any of these needed a branch on a space's or an op's name, this
would fail.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from latency.hardware import load_profile
from latency.simulate import RooflineParams, layer_costs, simulate_genotype
from nas.cli.main import main
from search_spaces.base import CellGraph, EdgeOps, SearchSpace, SizedNetwork
from search_spaces.complexity import count_macs, count_ops, count_parameters
from search_spaces.errors import GenotypeError, InputError
from search_spaces.layer_spec import LayerSpec
from search_spaces.op_spec import OpSpec, op_spec, register_op_spec
from search_spaces.space import SPACES, get_space, load_architecture, register_space, space_of
from search_spaces.supernet import ArchParameters, SourceEdges

# ------------------------------------------------------------- the new op family


class LowBitConv(nn.Module):
    """A k x k convolution stored at 8-bit weights and 4-bit inputs (here computed in
    float: the family only needs its cost described, not a real low-bit kernel)."""

    def __init__(self, C: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(C, C, kernel, kernel) / (C * kernel))
        self.stride, self.padding = stride, kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, None, self.stride, self.padding)


def lowbit_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    assert isinstance(module, LowBitConv)
    C_in, k = module.weight.shape[1], module.weight.shape[2]
    return int(output.numel() * C_in * k * k)


LOWBIT_LAYER = LayerSpec(count=lowbit_macs, kind="lowbit", weight_bits=8, act_bits=4)


def _lowbit(kernel: int):
    def build(C: int, stride: int, affine: bool) -> nn.Module:
        return nn.Sequential(nn.ReLU(), LowBitConv(C, kernel, stride),
                             nn.BatchNorm2d(C, affine=affine))

    return build


for _k in (1, 3):
    register_op_spec(OpSpec(f"lowbit_conv_{_k}x{_k}", _lowbit(_k), family="lowbit",
                            heavy=True, layers={LowBitConv: LOWBIT_LAYER}))

# ------------------------------------------------------------------ the toy space

TOY_OPS = ("none", "skip_connect", "lowbit_conv_1x1", "lowbit_conv_3x3")
TOY_EDGES = ((0, 1), (0, 2), (1, 2))  # node 2 is the cell output


@dataclass(frozen=True)
class ToyArch:
    ops: tuple[str, str, str]

    def __post_init__(self) -> None:
        if len(self.ops) != 3 or any(o not in TOY_OPS for o in self.ops):
            raise GenotypeError(f"a toy cell has 3 ops out of {', '.join(TOY_OPS)}, "
                                f"got {self.ops}")

    def __str__(self) -> str:
        return "toy:" + ",".join(self.ops)


class ToySearchCell(nn.Module):
    def __init__(self, C: int, edge_ops: EdgeOps) -> None:
        super().__init__()
        width = len(edge_ops[0])
        self.from0 = SourceEdges(C, 1, [0, 1], edge_ops, width, namespace="toy")
        self.from1 = SourceEdges(C, 1, [2], edge_ops, width, namespace="toy")

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        flat = weights.reshape(-1)
        out0 = self.from0(x, flat)  # (N, 2, C, H, W): edges 0->1 and 0->2
        node1 = out0[:, 0]
        return out0[:, 1] + self.from1(node1, flat)[:, 0]


class ToySuperNet(ArchParameters, nn.Module):
    def __init__(self, C: int, layers: int, num_classes: int, in_channels: int,
                 edge_ops: Mapping[str, EdgeOps]) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C))
        self.cells = nn.ModuleList(ToySearchCell(C, edge_ops["normal"]) for _ in range(layers))
        self.classifier = nn.Linear(C, num_classes)
        width = len(edge_ops["normal"][0])
        self.arch = nn.ParameterDict({"normal": nn.Parameter(1e-3 * torch.randn(3, width))})

    def forward(self, x: torch.Tensor,
                arch_weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        w = (arch_weights or self.arch_weights())["normal"]
        h = self.stem(x)
        for cell in self.cells:
            h = cell(h, w)
        return self.classifier(h.mean(dim=(2, 3)))


class ToyCell(nn.Module):
    def __init__(self, C: int, arch: ToyArch) -> None:
        super().__init__()
        self.ops = nn.ModuleList(op_spec(o, "toy").build(C, 1, True) for o in arch.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        node1 = self.ops[0](x)
        return self.ops[1](x) + self.ops[2](node1)


class ToyNetwork(nn.Module):
    def __init__(self, arch: ToyArch, C: int, layers: int, num_classes: int,
                 in_channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C))
        self.cells = nn.Sequential(*(ToyCell(C, arch) for _ in range(layers)))
        self.classifier = nn.Linear(C, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.cells(self.stem(x)).mean(dim=(2, 3)))


class ToySpace(SearchSpace[ToyArch]):
    name = "toy"
    op_names = TOY_OPS
    cell_types = ("normal",)
    num_edges = 3
    op_namespace = "toy"

    def owns(self, arch: object) -> bool:
        return isinstance(arch, ToyArch)

    def claims(self, stored: Any) -> bool:
        if isinstance(stored, str):
            return stored.startswith("toy:")
        return isinstance(stored, Mapping) and stored.get("space") == "toy"

    def parse(self, stored: Any, *, source: str = "toy arch") -> ToyArch:
        if isinstance(stored, Mapping):
            stored = stored.get("arch", "")
        if not isinstance(stored, str) or not stored.startswith("toy:"):
            raise GenotypeError(f"{source}: not a toy arch")
        return ToyArch(tuple(stored[4:].split(",")))  # type: ignore[arg-type]

    def to_json(self, arch: ToyArch) -> dict[str, str]:
        return {"space": "toy", "arch": str(arch)}

    def build_supernet(self, C: int, layers: int, num_classes: int, in_channels: int = 3,
                       edge_ops: EdgeOps | None = None) -> nn.Module:
        return ToySuperNet(C, layers, num_classes, in_channels,
                           edge_ops if edge_ops is not None else self.full_edge_ops())

    def build_network(self, arch: ToyArch, C: int, layers: int, num_classes: int,
                      in_channels: int = 3, **options: Any) -> nn.Module:
        return ToyNetwork(arch, C, layers, num_classes, in_channels)

    def sized_network(self, arch: ToyArch, dataset: str, channels: int | None = None,
                      layers: int | None = None) -> SizedNetwork:
        C, n = channels or 8, layers or 2
        return SizedNetwork(self.build_network(arch, C, n, 10, 1), (1, 8, 8), C, n)

    def deployed_network(self, arch: ToyArch, profile: Any) -> tuple[nn.Module, tuple]:
        shape = tuple(profile.input_shape)
        return self.build_network(arch, 8, 2, 10, shape[0]).eval(), shape

    def describe_deployed(self, profile: Any) -> str:
        return f"{profile.name}'s toy network: 2 cells, 8 channels"

    def derive(self, weights: Mapping[str, Any], edge_ops: EdgeOps | None = None) -> ToyArch:
        w = np.asarray(torch.as_tensor(weights["normal"]).detach())
        names = edge_ops["normal"] if edge_ops is not None else [TOY_OPS] * 3
        return ToyArch(tuple(names[e][int(k)] for e, k in enumerate(w.argmax(axis=1))))

    def encode(self, arch: ToyArch) -> np.ndarray:
        out = np.zeros((3, len(TOY_OPS)), dtype=np.float32)
        for e, op in enumerate(arch.ops):
            out[e, TOY_OPS.index(op)] = 1.0
        return out.reshape(-1)

    def encode_weights(self, weights: Mapping[str, torch.Tensor],
                       edge_ops: EdgeOps | None = None) -> torch.Tensor:
        return weights["normal"].reshape(-1)  # the unpruned space: columns are TOY_OPS

    def sample(self, rng: np.random.Generator, heavy_share: float | None = None) -> ToyArch:
        return ToyArch(tuple(TOY_OPS[k] for k in rng.integers(len(TOY_OPS), size=3)))

    def cell_graphs(self, arch: ToyArch) -> tuple[CellGraph, ...]:
        roles = {0: "input", 1: "intermediate", 2: "output"}
        return (CellGraph("normal", "toy cell", {i: str(i) for i in roles}, roles,
                          tuple((s, d, o) for (s, d), o in zip(TOY_EDGES, arch.ops,
                                                               strict=True))),)

    def edge_ends(self, cell_type: str) -> tuple[tuple[int, int], ...]:
        return TOY_EDGES


TOY = ToySpace()
if "toy" not in SPACES:
    register_space(TOY)
ARCH = ToyArch(("lowbit_conv_3x3", "skip_connect", "lowbit_conv_1x1"))


# ------------------------------------------------------------------------ the tests


def test_the_registries_find_them() -> None:
    assert get_space("toy") is TOY and space_of(ARCH) is TOY
    assert op_spec("lowbit_conv_3x3").heavy and op_spec("lowbit_conv_3x3").family == "lowbit"
    assert load_architecture(str(ARCH)) == ARCH  # the loader asks every space
    with pytest.raises(ValueError, match="already registered"):
        register_space(ToySpace())


def test_a_short_search_from_the_cli(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["search", "--space", "toy", "--epochs", "2", "--channels", "4",
                 "--layers", "1", "--batch-size", "32", "--limit", "96", "--out", str(out),
                 "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    derived = load_architecture(str(out))  # the run directory's genotype.json
    assert space_of(derived) is TOY
    assert summary["genotype"] == TOY.to_json(derived) and summary["genotype_literal"] == str(
        derived)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    weights = json.loads((out / "arch_weights.jsonl").read_text().splitlines()[-1])
    assert len(log) == 2 and np.array(weights["weights"]["normal"]).shape == (3, 4)
    # the logged genotype is what derive gives on the logged weights
    w = {"normal": torch.tensor(weights["weights"]["normal"])}
    assert TOY.to_json(TOY.derive(w)) == log[-1]["genotype"]


def test_derivation_and_both_encodings_agree() -> None:
    onehot = torch.from_numpy(TOY.encode(ARCH)).reshape(3, 4)
    assert TOY.derive({"normal": onehot}) == ARCH
    soft = TOY.encode_weights({"normal": onehot})
    assert torch.equal(soft, torch.from_numpy(TOY.encode(ARCH)))
    assert TOY.encoding_size == 12 == TOY.encode(ARCH).size


def test_the_discrete_network_and_its_counters() -> None:
    net = TOY.build_network(ARCH, C=4, layers=1, num_classes=10, in_channels=1)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    counts = count_ops(net, (1, 8, 8))
    # by hand: stem 1*4*9 MACs per pixel; 3x3 low-bit conv 4*4*9, 1x1 4*4; classifier 4*10
    stem, conv3, conv1, fc = 64 * 36, 64 * 144, 64 * 16, 40
    assert counts.macs == stem + conv3 + conv1 + fc == count_macs(net, (1, 8, 8))
    # bit-operations: float layers at 32 x 32 bits, the family's at 8 x 4
    assert counts.bops == (stem + fc) * 32 * 32 + (conv3 + conv1) * 8 * 4
    assert counts.additions == 0
    assert counts.params == count_parameters(net) == 36 + 8 + 144 + 8 + 16 + 8 + 50


def test_the_simulated_latency_costs_the_family_as_its_spec_says() -> None:
    profile = load_profile("p100")  # fp32, batch 1, 3x32x32 inputs
    model, shape = TOY.deployed_network(ARCH, profile)
    assert shape == (3, 32, 32)
    lowbit = [c for c in layer_costs(model, shape) if c.kind == "lowbit"]
    assert len(lowbit) == 4  # two cells x (3x3, 1x1)
    conv3, pixels = lowbit[0], 32 * 32
    # bytes per tensor: input at 4 bits, weights at 8 bits, output at fp32
    assert conv3.bytes == 8 * pixels * 0.5 + 8 * 8 * 9 * 1 + 8 * pixels * 4
    # its BN folds into it and the next op's ReLU fuses as its epilogue (one FLOP each)
    assert conv3.op == "LowBitConv+native_batch_norm+relu"
    assert conv3.flops == 2 * pixels * 8 * 8 * 9 + 8 * pixels
    params = RooflineParams.from_profile(profile, kind_efficiency={"lowbit": 0.1})
    assert params.efficiency("lowbit") == 0.1
    sim = simulate_genotype(ARCH, profile)
    assert sim.ms > 0 and math.isfinite(sim.ms)
    assert sim.ms == pytest.approx(sum(t.ms for t in sim.per_layer))
    assert any(t.kind == "lowbit" for t in sim.per_layer)


def test_nas_info_and_report_draw_it(tmp_path, capsys) -> None:
    assert main(["info", str(ARCH), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    net = TOY.build_network(ARCH, 8, 2, 10, 1)
    assert info["space"] == "toy" and info["params"] == count_parameters(net)
    assert info["bit_operations"] == count_ops(net, (1, 8, 8)).bops and info["low_bit"]
    assert main(["info", "DARTS_V2", "--json"]) == 0
    darts = json.loads(capsys.readouterr().out)  # float: 1024 bit-operations per MAC
    assert darts["bit_operations"] == 1024 * darts["macs"] and not darts["low_bit"]
    assert darts["additions"] == info["additions"] == 0
    from nas.report.cells import cell_layout

    layout = cell_layout(TOY.cell_graphs(ARCH)[0])
    assert [e.op for e in layout.edges] == list(ARCH.ops)


def test_unknown_dataset_and_bad_arch_are_one_line_errors() -> None:
    with pytest.raises(GenotypeError, match="toy cell has 3 ops"):
        load_architecture("toy:none,skip_connect")
    with pytest.raises(InputError, match="unknown search space 'toy2'"):
        get_space("toy2")
