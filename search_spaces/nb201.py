"""The NAS-Bench-201 cell space: 4 nodes, 6 edges, 5 operations, 15,625 cells.

A cell is a small DAG: node 0 is the cell input, node j (1..3) sums op(edge i->j) over
i < j, and node 3 is the cell output. An architecture is therefore just one op name per
edge; it is written in the benchmark's own string form
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` so that published strings paste in unchanged.
The network is the benchmark's CIFAR macro skeleton (stem, three stages of N cells at
C, 2C, 4C channels, residual reduction blocks in between), laid out as in the public
NAS-Bench-201 code, so parameter counts match the benchmark's published figures.

The ENCODING (one function, two entry points: `encode` for an architecture, and
`encode_weights` for soft per-edge weights) is a vector of `ENCODING_SIZE` numbers:

=========  ====  ==================================================================
block      size  meaning
=========  ====  ==================================================================
onehot       30  per edge (edge order of the arch string), the op weights in
                 `NB201_OPS` order; one-hot for a discrete architecture
edge_in       6  per edge, "its input node carries the cell input": node 0 does;
                 node j does if some edge i->j with a non-`none` op has an input
                 node that does
edge_out      6  per edge, "its output node reaches the cell output" along
                 non-`none` edges (node 3 does)
node_in       3  per node 1..3, the number of incoming non-`none` edges whose input
                 node carries the cell input (how many tensors the node sums)
node_in_out   3  the same, counted only when the node reaches the cell output
=========  ====  ==================================================================

Why the structural blocks: every op runs in a PyTorch deployment, but a compiler that
prunes dead code or folds constants (the ARM measurements show it: cells whose output
does not depend on the input run in ~0 ms) skips ops whose input is identically zero or
whose output leads nowhere, and the number of tensors summed per node is what decides
the extra additions. A one-hot alone cannot tell a latency regressor any of that.

For soft weights, "non-`none`" becomes the probability q_e = 1 - w_e[none] and each flag
becomes the probability that the path exists if edges were kept independently
(``1 - prod(1 - ...)``), so it is differentiable and equals the 0/1 flag exactly when the
weights are one-hot.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from search_spaces.activations import PAIR_SEPARATOR, pair_name, split_pair
from search_spaces.encoding import encodable_name
from search_spaces.errors import GenotypeError, InputError, UnknownOperationError
from search_spaces.ops import ReLUConvBN, build_op, check_op_names, op_names, register_op
from search_spaces.supernet_ops import BatchedReLUConvBN, EdgeBatchOp, SharedPool

#: The NAS-Bench-201 operations in the benchmark's order.
NB201_OPS: tuple[str, ...] = (
    "none",
    "skip_connect",
    "nor_conv_1x1",
    "nor_conv_3x3",
    "avg_pool_3x3",
)

#: (input node, output node) of each edge, in the order the arch string lists them.
NB201_EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_NODES = 4
#: The benchmark's own CIFAR network: C channels in the first stage, N cells per stage.
#: Every published NB201 latency and accuracy refers to this network.
BENCHMARK_CHANNELS, BENCHMARK_CELLS_PER_STAGE = 16, 5
NUM_EDGES = len(NB201_EDGES)
NUM_OPS = len(NB201_OPS)

#: Name -> (start, stop) of each block of the encoding; the predictor reads this.
ENCODING_LAYOUT: dict[str, tuple[int, int]] = {
    "onehot": (0, NUM_EDGES * NUM_OPS),
    "edge_in": (30, 36),
    "edge_out": (36, 42),
    "node_in": (42, 45),
    "node_in_out": (45, 48),
}
ENCODING_SIZE = 48


def _conv_builder(kernel: int):
    def build(C: int, stride: int, affine: bool) -> nn.Module:
        return ReLUConvBN(C, C, kernel, stride, kernel // 2, affine)

    return build


def _batched_conv(kernel: int):
    def batched(C: int, stride: int, n: int) -> EdgeBatchOp:
        return BatchedReLUConvBN(C, stride, n, kernel)

    return batched


def _conv_builder_activated(kernel: int):
    """nor_conv with another activation (an op named "nor_conv_3x3/silu")."""

    def build(C: int, stride: int, affine: bool, act: str) -> nn.Module:
        return ReLUConvBN(C, C, kernel, stride, kernel // 2, affine, activation=act)

    return build


def _batched_conv_activated(kernel: int):
    def batched(C: int, stride: int, n: int, act: str) -> EdgeBatchOp:
        return BatchedReLUConvBN(C, stride, n, kernel, activation=act)

    return batched


def _batched_avg_pool(C: int, stride: int, n: int) -> EdgeBatchOp:
    pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    return SharedPool(pool, C, n, bn=False)


#: Namespace of the op specs NB201 gives a meaning of its own (`search_spaces.op_spec`).
NB201_NAMESPACE = "nb201"

# none / skip_connect are the shared (DARTS) specs: the same modules as NAS-Bench-201's.
# The two plain convolutions are new, and heavy (they hold a cell's parameters and most
# of its compute). avg_pool_3x3 is DARTS's module too, but NB201's search cells put no
# BN after it, so its supernet form is NB201's own. A module reload must not fail.
for _k in (1, 3):
    if f"nor_conv_{_k}x{_k}" not in op_names():
        register_op(f"nor_conv_{_k}x{_k}", batched=_batched_conv(_k), family="conv",
                    heavy=True, build_activated=_conv_builder_activated(_k),
                    batched_activated=_batched_conv_activated(_k))(_conv_builder(_k))
if "avg_pool_3x3" not in op_names(NB201_NAMESPACE):
    register_op("avg_pool_3x3", namespace=NB201_NAMESPACE, batched=_batched_avg_pool,
                family="pool")(lambda C, s, affine: build_op("avg_pool_3x3", C, s, affine))


# --------------------------------------------------------------------- architectures


@dataclass(frozen=True)
class Nb201Arch:
    """One op name per edge, in `NB201_EDGES` order; immutable so it can key caches. A
    convolution may be a pair ``nor_conv_3x3/silu``, stored by its one name
    (`canonical_op`)."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        ops = tuple(self.ops)
        if len(ops) != NUM_EDGES:
            raise GenotypeError(f"an NB201 cell has {NUM_EDGES} edges, got {len(ops)} ops")
        object.__setattr__(self, "ops", tuple(canonical_op(op) for op in ops))

    def __str__(self) -> str:
        return format_arch(self)

    def to_dict(self) -> dict[str, str]:
        """JSON form of run directories (`genotype.json`, logs); the space is named so a
        reader cannot take it for a DARTS genotype."""
        return {"space": "nb201", "arch": format_arch(self)}


def canonical_op(op: str) -> str:
    """`op` as a cell stores it: one of `NB201_OPS`, or a pair ``nor_conv_3x3/silu`` (a
    convolution with another registered activation; ``op/relu`` is stored as ``op``).
    Anything else is a one-line GenotypeError naming the problem."""
    if op in NB201_OPS:
        return op
    if isinstance(op, str) and PAIR_SEPARATOR in op:
        try:
            base, act = split_pair(op)
            if base in NB201_OPS:
                check_op_names([op], NB201_OPS, NB201_NAMESPACE)
                return pair_name(base, act)
        except UnknownOperationError as exc:
            raise GenotypeError(str(exc)) from None
    raise GenotypeError(f"unknown NB201 operation {op!r}; known: {', '.join(NB201_OPS)}")


def parse_arch(text: str) -> Nb201Arch:
    """Parse ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` strictly.

    Every token must be ``op~i`` with the input index i equal to its position in the node
    group, because the benchmark's strings always list inputs 0..j-1 in order; anything
    else is far more likely a typo than a different cell.
    """
    if not isinstance(text, str):
        raise GenotypeError(f"an NB201 arch must be a string, got {type(text).__name__}")
    groups = text.strip().split("+")
    if len(groups) != NUM_NODES - 1:
        raise GenotypeError(
            f"NB201 arch {text!r}: expected {NUM_NODES - 1} '+'-separated node groups, "
            f"got {len(groups)}"
        )
    ops: list[str] = []
    for j, group in enumerate(groups, start=1):
        if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
            raise GenotypeError(
                f"NB201 arch {text!r}: node group {group!r} must be enclosed in '|'"
            )
        tokens = group[1:-1].split("|")
        if len(tokens) != j:
            raise GenotypeError(
                f"NB201 arch {text!r}: node {j} needs {j} inputs, got {len(tokens)} "
                f"in {group!r}"
            )
        for i, token in enumerate(tokens):
            op, sep, index = token.partition("~")
            if not sep or index != str(i):
                raise GenotypeError(
                    f"NB201 arch {text!r}: bad token {token!r} (expected 'op~{i}')"
                )
            if op not in NB201_OPS and PAIR_SEPARATOR not in op:
                raise GenotypeError(
                    f"NB201 arch {text!r}: unknown operation {op!r} in token {token!r}; "
                    f"known: {', '.join(NB201_OPS)}"
                )
            try:
                ops.append(canonical_op(op))
            except GenotypeError as exc:
                raise GenotypeError(f"NB201 arch {text!r}: {exc} (token {token!r})"
                                    ) from None
    return Nb201Arch(tuple(ops))


def format_arch(arch: Nb201Arch | Sequence[str]) -> str:
    """The benchmark string of `arch` (the inverse of `parse_arch`)."""
    ops = arch.ops if isinstance(arch, Nb201Arch) else Nb201Arch(tuple(arch)).ops
    groups, k = [], 0
    for j in range(1, NUM_NODES):
        groups.append("|" + "|".join(f"{ops[k + i]}~{i}" for i in range(j)) + "|")
        k += j
    return "+".join(groups)


def arch_from_dict(data: Mapping[str, Any]) -> Nb201Arch:
    """The inverse of `Nb201Arch.to_dict`, checked strictly."""
    if set(data) != {"space", "arch"} or data["space"] != "nb201":
        raise GenotypeError(
            f"an NB201 arch object has keys 'space' ('nb201') and 'arch', got {sorted(data)}"
        )
    return parse_arch(data["arch"])


def _as_arch(arch: Nb201Arch | str | Sequence[str]) -> Nb201Arch:
    if isinstance(arch, Nb201Arch):
        return arch
    if isinstance(arch, str):
        return parse_arch(arch)
    return Nb201Arch(tuple(arch))


def computation_key(arch: Nb201Arch | str | Sequence[str]) -> tuple[Any, ...]:
    """A key equal for two cells exactly when this rule proves they compute the same.

    Why: two strings can name one computation. If edge 0->1 is `skip_connect`, node 1
    holds the cell input itself, so the ops on 0->2 and 1->2 (and on 0->3 and 1->3) can
    be swapped: the result is the same network with its edges renamed (same kernels on
    equal tensors, same dead code for a compiler to prune). The same holds for any node
    whose only non-`none` input is a `skip_connect`. Cells with one key therefore differ
    in measured latency only by measurement noise: the model-free noise floor of a
    latency dataset (`bench/nb201_label_noise.py`). Every op counts (a `none` edge runs
    in a PyTorch deployment), so the key keeps each node's full multiset of
    (op, value class of its input).
    """
    ops = _as_arch(arch).ops
    value_class = [0]  # node 0 is the cell input
    key: list[tuple[tuple[str, int], ...]] = []
    for j in range(1, NUM_NODES):
        incoming = [
            (op, value_class[i]) for (i, t), op in zip(NB201_EDGES, ops, strict=True) if t == j
        ]
        key.append(tuple(sorted(incoming)))
        live = [(op, c) for op, c in incoming if op != "none"]
        same = len(live) == 1 and live[0][0] == "skip_connect"
        value_class.append(live[0][1] if same else j)
    return tuple(key)


@functools.lru_cache(maxsize=1)
def _cells_by_computation() -> dict[tuple[Any, ...], tuple[Nb201Arch, ...]]:
    """Every cell of the space (5^6 = 15,625) grouped by `computation_key`; ~0.2 s once."""
    groups: dict[tuple[Any, ...], list[Nb201Arch]] = {}
    for ops in itertools.product(NB201_OPS, repeat=NUM_EDGES):
        arch = Nb201Arch(ops)
        groups.setdefault(computation_key(arch), []).append(arch)
    return {k: tuple(v) for k, v in groups.items()}


def equivalent_archs(arch: Nb201Arch | str | Sequence[str]) -> tuple[Nb201Arch, ...]:
    """The other cells that compute what `arch` computes (same `computation_key`).

    A latency measured on one of them is a measurement of all of them, which is what lets
    a latency predictor learn this symmetry from its training rows for free."""
    a = _as_arch(arch)
    # the table holds the plain cells; a cell with activation pairs gets none listed
    return tuple(b for b in _cells_by_computation().get(computation_key(a), ()) if b != a)


# --------------------------------------------------------------------------- encoding


def _encode(w: torch.Tensor) -> torch.Tensor:
    """The encoding of per-edge op weights `w` (..., 6, 5); the single implementation.

    Only products, sums and ``1 - x`` of the weights, so one-hot input gives exact 0/1
    flags and integer counts, and the result is differentiable everywhere.
    """
    q = 1.0 - w[..., NB201_OPS.index("none")]  # (..., 6): the edge passes a tensor
    one = torch.ones_like(q[..., 0])
    # forward: node carries the cell input
    reach = [one]
    for j in range(1, NUM_NODES):
        miss = one
        for e, (i, jj) in enumerate(NB201_EDGES):
            if jj == j:
                miss = miss * (1.0 - reach[i] * q[..., e])
        reach.append(1.0 - miss)
    # backward: node reaches the cell output
    back: list[torch.Tensor] = [one] * NUM_NODES
    for i in range(NUM_NODES - 2, -1, -1):
        miss = one
        for e, (ii, j) in enumerate(NB201_EDGES):
            if ii == i:
                miss = miss * (1.0 - q[..., e] * back[j])
        back[i] = 1.0 - miss
    edge_in = torch.stack([reach[i] for i, _ in NB201_EDGES], dim=-1)
    edge_out = torch.stack([back[j] for _, j in NB201_EDGES], dim=-1)
    carried = q * edge_in
    node_in = torch.stack(
        # every node j >= 1 has incoming edges, so each sum is a tensor (never the 0 start)
        [cast(torch.Tensor,
              sum(carried[..., e] for e, (_, jj) in enumerate(NB201_EDGES) if jj == j))
         for j in range(1, NUM_NODES)],
        dim=-1,
    )
    node_in_out = node_in * torch.stack(back[1:], dim=-1)
    flat = w.reshape(*w.shape[:-2], NUM_EDGES * NUM_OPS)
    return torch.cat([flat, edge_in, edge_out, node_in, node_in_out], dim=-1)


def one_hot(arch: Nb201Arch | str | Sequence[str]) -> np.ndarray:
    """(6, 5) float32 one-hot of an architecture."""
    a = _as_arch(arch)
    out = np.zeros((NUM_EDGES, NUM_OPS), dtype=np.float32)
    for e, op in enumerate(a.ops):
        out[e, NB201_OPS.index(encodable_name(op))] = 1.0  # refuses activation pairs
    return out


def encode(arch: Nb201Arch | str | Sequence[str]) -> np.ndarray:
    """The encoding (float32, `ENCODING_SIZE`) of a discrete architecture."""
    with torch.no_grad():
        return _encode(torch.from_numpy(one_hot(arch))).numpy()


def full_weights(weights: torch.Tensor, edge_ops: Sequence[Sequence[str]]) -> torch.Tensor:
    """(..., 6, k) weights over each edge's own ops -> (..., 6, 5) over `NB201_OPS`.

    Column c of edge e is op `edge_ops[e][c]`; ops an edge does not have get weight 0,
    exactly as the DARTS encoding scatters P-DARTS' pruned op sets. Differentiable.
    """
    if len(edge_ops) != NUM_EDGES:
        raise InputError(f"NB201 edge_ops must list {NUM_EDGES} edges, got {len(edge_ops)}")
    if all(tuple(o) == NB201_OPS for o in edge_ops):
        return weights
    width = weights.shape[-1]
    select = torch.zeros(NUM_EDGES, width, NUM_OPS, dtype=weights.dtype, device=weights.device)
    for e, names in enumerate(edge_ops):
        if len(names) != width:
            raise InputError(f"edge {e} lists {len(names)} ops; the weights have {width}")
        for c, name in enumerate(names):
            select[e, c, NB201_OPS.index(name)] = 1.0
    return torch.einsum("...ek,eko->...eo", weights, select)


def encode_weights(
    weights: torch.Tensor | Mapping[str, torch.Tensor],
    edge_ops: Mapping[str, Sequence[Sequence[str]]] | None = None,
) -> torch.Tensor:
    """The encoding of soft weights, softmax already applied; differentiable.

    `weights` is a tensor (..., 6, 5), or the search driver's form {"normal": (6, k)}
    with `edge_ops` {"normal": per-edge op lists} naming the k columns (default: all
    five ops in `NB201_OPS` order).
    """
    if isinstance(weights, Mapping):
        if set(weights) != {"normal"}:
            raise InputError(f"NB201 weights have one cell type 'normal', got {sorted(weights)}")
        w = weights["normal"]
        if edge_ops is not None:
            w = full_weights(w, edge_ops["normal"])
        return encode_weights(w)
    if not isinstance(weights, torch.Tensor):
        raise InputError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    if weights.dim() < 2 or tuple(weights.shape[-2:]) != (NUM_EDGES, NUM_OPS):
        raise InputError(
            f"NB201 weights must have shape (..., {NUM_EDGES}, {NUM_OPS}), "
            f"got {tuple(weights.shape)}"
        )
    return _encode(weights)


# ---------------------------------------------------------------------------- network


class InferCell(nn.Module):
    """A discrete NB201 cell; every edge's op is built and run, `none` included.

    `none` runs as a multiplication by zero, as in the benchmark's code, because the
    measured latencies include it.
    """

    def __init__(self, arch: Nb201Arch, C: int) -> None:
        super().__init__()
        self.arch = arch
        self.edges = nn.ModuleList(build_op(op, C, 1, True) for op in arch.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, NUM_NODES):
            nodes.append(sum(
                self.edges[e](nodes[i]) for e, (i, jj) in enumerate(NB201_EDGES) if jj == j
            ))
        return nodes[-1]


class ResNetBasicBlock(nn.Module):
    """The reduction block between stages: two ReLU-Conv3x3-BN, shortcut AvgPool + 1x1."""

    def __init__(self, C_in: int, C_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(C_in, C_out, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


def stage_layers(C: int, N: int, make_cell: Callable[[int], nn.Module]
                 ) -> tuple[list[nn.Module], int]:
    """NB201's macro skeleton between stem and head, shared by the discrete network and the
    supernet (so their state dicts line up): three stages of N cells at C, 2C, 4C channels
    with a residual reduction block before the second and third. Returns the layers and
    the last stage's channels."""
    layers: list[nn.Module] = []
    C_prev = C
    for stage, C_curr in enumerate((C, 2 * C, 4 * C)):
        if stage > 0:
            layers.append(ResNetBasicBlock(C_prev, C_curr))
        layers.extend(make_cell(C_curr) for _ in range(N))
        C_prev = C_curr
    return layers, C_prev


class Nb201Network(nn.Module):
    """NAS-Bench-201's CIFAR network; `forward` returns logits (not a (features, logits)
    pair as the benchmark's code does), like the project's other networks."""

    def __init__(
        self, arch: Nb201Arch, C: int = BENCHMARK_CHANNELS, N: int = BENCHMARK_CELLS_PER_STAGE,
        num_classes: int = 10, in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C)
        )
        layers, C_prev = stage_layers(C, N, lambda c: InferCell(arch, c))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.global_pooling(self.lastact(self.cells(self.stem(x))))
        return self.classifier(out.flatten(1))
