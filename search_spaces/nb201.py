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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from search_spaces.errors import GenotypeError, InputError
from search_spaces.ops import ReLUConvBN, build_op, op_names, register_op

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


# The DARTS registry already holds none / skip_connect / avg_pool_3x3 with the same
# meaning as NAS-Bench-201's (Zero, Identity, AvgPool2d(3, 1, 1, count_include_pad=False)),
# so only the two plain convolutions are new.
for _k in (1, 3):
    if f"nor_conv_{_k}x{_k}" not in op_names():  # a module reload must not fail
        register_op(f"nor_conv_{_k}x{_k}")(_conv_builder(_k))


# --------------------------------------------------------------------- architectures


@dataclass(frozen=True)
class Nb201Arch:
    """One op name per edge, in `NB201_EDGES` order; immutable so it can key caches."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        ops = tuple(self.ops)
        if len(ops) != NUM_EDGES:
            raise GenotypeError(f"an NB201 cell has {NUM_EDGES} edges, got {len(ops)} ops")
        for op in ops:
            if op not in NB201_OPS:
                raise GenotypeError(
                    f"unknown NB201 operation {op!r}; known: {', '.join(NB201_OPS)}"
                )
        object.__setattr__(self, "ops", ops)

    def __str__(self) -> str:
        return format_arch(self)


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
            if op not in NB201_OPS:
                raise GenotypeError(
                    f"NB201 arch {text!r}: unknown operation {op!r} in token {token!r}; "
                    f"known: {', '.join(NB201_OPS)}"
                )
            ops.append(op)
    return Nb201Arch(tuple(ops))


def format_arch(arch: Nb201Arch | Sequence[str]) -> str:
    """The benchmark string of `arch` (the inverse of `parse_arch`)."""
    ops = arch.ops if isinstance(arch, Nb201Arch) else Nb201Arch(tuple(arch)).ops
    groups, k = [], 0
    for j in range(1, NUM_NODES):
        groups.append("|" + "|".join(f"{ops[k + i]}~{i}" for i in range(j)) + "|")
        k += j
    return "+".join(groups)


def _as_arch(arch: Nb201Arch | str | Sequence[str]) -> Nb201Arch:
    if isinstance(arch, Nb201Arch):
        return arch
    if isinstance(arch, str):
        return parse_arch(arch)
    return Nb201Arch(tuple(arch))


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
        [sum(carried[..., e] for e, (_, jj) in enumerate(NB201_EDGES) if jj == j)
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
        out[e, NB201_OPS.index(op)] = 1.0
    return out


def encode(arch: Nb201Arch | str | Sequence[str]) -> np.ndarray:
    """The encoding (float32, `ENCODING_SIZE`) of a discrete architecture."""
    with torch.no_grad():
        return _encode(torch.from_numpy(one_hot(arch))).numpy()


def encode_weights(weights: torch.Tensor) -> torch.Tensor:
    """The encoding of soft weights (..., 6, 5), softmax already applied; differentiable."""
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


class Nb201Network(nn.Module):
    """NAS-Bench-201's CIFAR network; `forward` returns logits (not a (features, logits)
    pair as the benchmark's code does), like the project's other networks."""

    def __init__(
        self, arch: Nb201Arch, C: int = 16, N: int = 5, num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C)
        )
        layers: list[nn.Module] = []
        C_prev = C
        for stage, C_curr in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                layers.append(ResNetBasicBlock(C_prev, C_curr))
            layers.extend(InferCell(arch, C_curr) for _ in range(N))
            C_prev = C_curr
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.global_pooling(self.lastact(self.cells(self.stem(x))))
        return self.classifier(out.flatten(1))


# ------------------------------------------------------------------------------ space


@dataclass(frozen=True)
class Nb201Space:
    """The NAS-Bench-201 space object (one cell type, shared by every cell)."""

    name: str = "nb201"
    op_names: tuple[str, ...] = NB201_OPS
    num_edges: int = NUM_EDGES
    edges: tuple[tuple[int, int], ...] = NB201_EDGES

    @property
    def cell_types(self) -> tuple[str, ...]:
        return ("cell",)

    @property
    def encoding_size(self) -> int:
        return ENCODING_SIZE

    @property
    def encoding_layout(self) -> dict[str, tuple[int, int]]:
        return dict(ENCODING_LAYOUT)

    def parse(self, arch_string: str) -> Nb201Arch:
        return parse_arch(arch_string)

    def format(self, arch: Nb201Arch | Sequence[str]) -> str:
        return format_arch(arch)

    def build_network(
        self, arch: Nb201Arch | str | Sequence[str], C: int = 16, N: int = 5,
        num_classes: int = 10,
    ) -> Nb201Network:
        return Nb201Network(_as_arch(arch), C=C, N=N, num_classes=num_classes)

    def encode(self, arch: Nb201Arch | str | Sequence[str]) -> np.ndarray:
        return encode(arch)

    def encode_weights(self, weights: torch.Tensor) -> torch.Tensor:
        return encode_weights(weights)

    def sample(self, rng: np.random.Generator) -> Nb201Arch:
        """A uniformly random cell (all 15,625 equally likely)."""
        return Nb201Arch(tuple(NB201_OPS[k] for k in rng.integers(NUM_OPS, size=NUM_EDGES)))

    def derive(self, weights: torch.Tensor | np.ndarray) -> Nb201Arch:
        """The strongest op per edge (NB201 keeps every edge, `none` included)."""
        w = weights.detach().cpu().numpy() if isinstance(weights, torch.Tensor) else weights
        w = np.asarray(w)
        if w.shape != (NUM_EDGES, NUM_OPS):
            raise InputError(
                f"NB201 weights must have shape ({NUM_EDGES}, {NUM_OPS}), got {w.shape}"
            )
        return Nb201Arch(tuple(NB201_OPS[k] for k in w.argmax(axis=1)))


NB201_SPACE = Nb201Space()
