"""The DARTS supernet: every edge is a softmax-weighted mixture of candidate operations.

Layout and semantics follow DARTS `model_search.py`: two architecture tensors (normal,
reduce) of shape (edges, ops per edge), each shared by every cell of its type; search BNs
carry no affine parameters. P-DARTS' pruned op sets are expressed by giving each edge its
own list of candidate names (all edges have the same count, as in P-DARTS).

The computation is organised per source node (see `supernet_ops`): each node computes
all operations of all its outgoing edges in a few batched calls, and the weighted sums
are formed with one fused multiply-add per operation. What an op name means here (its
batched form, whether it is `zero`) is its `OpSpec`, looked up in a namespace so another
space (NB201) can reuse this machinery with its own meaning of a shared name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from search_spaces.activations import activation
from search_spaces.arch_samplers import ArchSampler, SoftmaxSampler
from search_spaces.op_spec import SHARED, op_spec
from search_spaces.ops import FactorizedReduce, ReLUConvBN, check_op_names
from search_spaces.supernet_ops import (
    MIXED,
    EdgeBatchOp,
    PerEdge,
    SharedIdentity,
    SourceCache,
    build_edge_batch,
)

EdgeOps = Sequence[Sequence[str]]


#: where a supernet keeps a sampler set by `set_arch_sampler` (its parameters train with
#: the architecture), and the parameter-name prefixes of that side of the bilevel split
SAMPLER_MODULE = "arch_sampler"
ARCH_PREFIXES = ("arch.", SAMPLER_MODULE + ".")
#: stateless, so one instance serves every supernet that has no sampler of its own
_SOFTMAX = SoftmaxSampler()

#: `arch` key of a cell type's activation parameters in a factorised supernet
ACTIVATION_SUFFIX = "_act"


def checked_activations(activations: Sequence[str]) -> tuple[str, ...]:
    """The activations of a factorised supernet, each registered and named once (an
    unknown name is a one-line error; a repeated one would get two columns of beta)."""
    for name in activations:
        activation(name)
    if len(set(activations)) != len(activations):
        raise ValueError(f"activations repeat a name: {list(activations)}")
    return tuple(activations)


def activation_key(cell_type: str) -> str:
    """Where the activation parameters (beta) of `cell_type` live in `arch` and in
    `arch_weights()`: beside the op parameters (alpha), so every optimiser, log and
    checkpoint that handles alpha handles beta too."""
    return cell_type + ACTIVATION_SUFFIX


def cell_edges(steps: int) -> list[tuple[int, int]]:
    """(source, target) state indices of a DARTS cell's edges, in DARTS order."""
    return [(i, j + 2) for j in range(steps) for i in range(j + 2)]


class SourceEdges(nn.Module):
    """All candidate operations of all edges leaving one source node."""

    def __init__(
        self,
        C: int,
        stride: int,
        edge_ids: Sequence[int],
        edge_ops: EdgeOps,
        num_columns: int,
        namespace: str = SHARED,
        activations: Sequence[str] = (),
    ) -> None:
        """`namespace` is the space whose meaning of the op names applies (NB201's pooling
        has no BN after it); the default is the DARTS search network's. With
        `activations`, every op that carries an activation reads its edge's mixture of
        them (`supernet_ops.MIXED`): the factorised supernet."""
        super().__init__()
        self.activations = tuple(activations)
        self.num_edges = len(edge_ids)
        self.stride = stride
        names: list[str] = []
        for e in edge_ids:
            names.extend(n for n in edge_ops[e]
                         if n not in names and not op_spec(n, namespace).zero)
        self.op_names = names
        self.ops = nn.ModuleList()
        self._full: list[bool] = []
        for k, name in enumerate(names):
            positions = [p for p, e in enumerate(edge_ids) if name in edge_ops[e]]
            flat = [edge_ids[p] * num_columns + list(edge_ops[edge_ids[p]]).index(name)
                    for p in positions]
            self.ops.append(self._build(name, C, stride, len(positions), namespace))
            self.register_buffer(f"pos_{k}", torch.tensor(positions), persistent=False)
            self.register_buffer(f"flat_{k}", torch.tensor(flat), persistent=False)
            self._full.append(len(positions) == self.num_edges)

    def _build(self, name: str, C: int, stride: int, n: int, namespace: str) -> EdgeBatchOp:
        spec = op_spec(name, namespace)
        if not self.activations or not spec.takes_activation:
            return build_edge_batch(name, C, stride, n, namespace)
        if spec.batched_activated is None:  # one module per edge, each mixing its own q
            return PerEdge(name, C, stride, n, namespace, mixed_activations=self.activations)
        return spec.batched_activated(C, stride, n, MIXED)

    def forward(self, x: torch.Tensor, weights_flat: torch.Tensor,
                activation_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mixed outputs of every outgoing edge: (N, edges, C, H', W').
        `activation_weights` (edges, K): the softmax of this node's edges' activation
        parameters, in a factorised supernet."""
        cache = SourceCache(x, self.activations, activation_weights)
        acc: torch.Tensor | None = None
        for k, op in enumerate(self.ops):
            y = op(cache if self._full[k] or activation_weights is None
                   else cache.subset(getattr(self, f"pos_{k}")))
            if op.shared:
                y = y.unsqueeze(1)
            w = weights_flat[getattr(self, f"flat_{k}")].view(1, -1, 1, 1, 1)
            if self._full[k]:
                acc = y * w if acc is None else torch.addcmul(acc, y, w)
            else:
                term = y * w
                if acc is None:
                    acc = term.new_zeros(term.shape[0], self.num_edges, *term.shape[2:])
                acc = acc.index_add(1, getattr(self, f"pos_{k}"), term)
        if acc is None:  # every edge of this node is `none`
            sub = x[:, :, :: self.stride, :: self.stride]
            acc = sub.new_zeros(sub.shape[0], self.num_edges, *sub.shape[1:])
        return acc


class SearchCell(nn.Module):
    def __init__(
        self,
        steps: int,
        multiplier: int,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        edge_ops: EdgeOps,
        activations: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        edges = cell_edges(steps)
        num_columns = len(edge_ops[0])
        self.sources = nn.ModuleList()
        self._targets: list[list[int]] = []
        for source in range(steps + 1):
            ids = [k for k, (i, _) in enumerate(edges) if i == source]
            stride = 2 if reduction and source < 2 else 1
            self.sources.append(SourceEdges(C, stride, ids, edge_ops, num_columns,
                                            activations=activations))
            self._targets.append([edges[k][1] for k in ids])
            self.register_buffer(f"edges_{source}", torch.tensor(ids), persistent=False)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                activation_weights: torch.Tensor | None = None) -> torch.Tensor:
        """`activation_weights` (edges, K): softmax of the cell type's activation
        parameters, in a factorised supernet."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        incoming: list[list[torch.Tensor]] = [[] for _ in range(self.steps)]
        weights_flat = weights.reshape(-1)
        for i, source in enumerate(self.sources):
            if i >= 2:
                states.append(_sum(incoming[i - 2]))
            q = (None if activation_weights is None
                 else activation_weights.index_select(0, getattr(self, f"edges_{i}")))
            mixed = source(states[i], weights_flat, q)
            for p, target in enumerate(self._targets[i]):
                incoming[target - 2].append(mixed[:, p])
        states.append(_sum(incoming[self.steps - 1]))
        return torch.cat(states[-self.multiplier :], dim=1)


def _sum(tensors: list[torch.Tensor]) -> torch.Tensor:
    total = tensors[0] + tensors[1] if len(tensors) > 1 else tensors[0].clone()
    for t in tensors[2:]:
        total = total + t
    return total


class ArchParameters:
    """The supernet interface the search driver and the architect use: architecture
    parameters in `self.arch` (a ParameterDict keyed by cell type, one row per edge), the
    sampler that turns them into mixture weights (`self.arch_sampler`, with any
    parameters of its own), everything else a weight. Shared by every space's supernet."""

    arch: nn.ParameterDict

    @property
    def arch_sampler(self) -> ArchSampler:
        """The sampler set by `set_arch_sampler`; DARTS's softmax until one is (so a space
        written before samplers existed needs nothing new)."""
        found = self._modules.get(SAMPLER_MODULE)  # type: ignore[attr-defined]
        return found if found is not None else _SOFTMAX

    def set_arch_sampler(self, sampler: ArchSampler) -> None:
        """Use `sampler` (a fresh one: it attaches its parameters to this `arch`)."""
        sampler.attach(self.arch)
        # straight into _modules: `add_module` refuses a name the class has (the property)
        self._modules[SAMPLER_MODULE] = sampler  # type: ignore[attr-defined]

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.arch.parameters()) + list(self.arch_sampler.parameters())

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_weight_parameters()]

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        named = self.named_parameters()  # type: ignore[attr-defined]
        return [(name, p) for name, p in named if not name.startswith(ARCH_PREFIXES)]

    def arch_weights(self) -> dict[str, torch.Tensor]:
        """Each candidate's importance, normalised per edge (softmax(alpha) for DARTS):
        what genotypes are derived from, P-DARTS prunes by, and runs log."""
        return self.arch_sampler.importance(self.arch)

    def sample_arch_weights(self) -> dict[str, torch.Tensor]:
        """The mixture weights of one training step (a fresh draw for a stochastic
        sampler, differentiable in the architecture parameters)."""
        return self.arch_sampler.sample(self.arch)

    def expected_arch_weights(self) -> dict[str, torch.Tensor]:
        """The mixture weights of a deterministic forward pass (evaluation)."""
        return self.arch_sampler.expected(self.arch)

    def set_skip_dropout(self, p: float) -> None:
        """P-DARTS: the element-wise dropout rate after every stride-1 skip-connect."""
        for m in self.modules():  # type: ignore[attr-defined]
            if isinstance(m, SharedIdentity):
                m.p = p


class SuperNet(ArchParameters, nn.Module):
    """The DARTS search network with its architecture parameters.

    Architecture parameters live in `self.arch` (a ParameterDict keyed by cell type);
    `weight_parameters()` and `arch_parameters()` split them for the bilevel optimisers.
    """

    def __init__(
        self,
        C: int,
        num_classes: int,
        layers: int,
        edge_ops: Mapping[str, EdgeOps],
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        in_channels: int = 3,
        alpha_init_scale: float = 1e-3,
        activations: Sequence[str] = (),
    ) -> None:
        """`activations`: search the activation inside every op that carries one as a
        second choice per edge (beta, one row per edge and cell type), factorised from
        the op choice (docs/methods.md, factorised operator sets); empty: plain DARTS."""
        super().__init__()
        self.activations = checked_activations(activations)
        n_edges = len(cell_edges(steps))
        for cell_type in ("normal", "reduce"):
            ops = edge_ops[cell_type]
            if len(ops) != n_edges:
                raise ValueError(f"{cell_type}: expected {n_edges} edges, got {len(ops)}")
            widths = {len(o) for o in ops}
            if len(widths) != 1:
                raise ValueError(f"{cell_type}: every edge needs the same number of ops")
            for o in ops:
                check_op_names(o)
        self.edge_ops = {k: [list(o) for o in v] for k, v in edge_ops.items()}
        self.steps = steps
        self.multiplier = multiplier
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr)
        )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell_type = "reduce" if reduction else "normal"
            self.cells.append(
                SearchCell(
                    steps,
                    multiplier,
                    C_prev_prev,
                    C_prev,
                    C_curr,
                    reduction,
                    reduction_prev,
                    self.edge_ops[cell_type],
                    self.activations,
                )
            )
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        arch = {k: nn.Parameter(alpha_init_scale * torch.randn(n_edges, len(v[0])))
                for k, v in self.edge_ops.items()}
        if self.activations:
            arch.update({activation_key(k): nn.Parameter(
                alpha_init_scale * torch.randn(n_edges, len(self.activations)))
                for k in self.edge_ops})
        self.arch = nn.ParameterDict(arch)

    def forward(
        self, x: torch.Tensor, arch_weights: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        weights = self.expected_arch_weights() if arch_weights is None else arch_weights
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            cell_type = "reduce" if cell.reduction else "normal"
            s0, s1 = s1, cell(s0, s1, weights[cell_type], weights.get(activation_key(cell_type)))
        return self.classifier(torch.flatten(self.global_pooling(s1), 1))


__all__ = ["ACTIVATION_SUFFIX", "ARCH_PREFIXES", "ArchParameters", "SuperNet", "SearchCell",
           "SourceEdges", "EdgeBatchOp", "activation_key", "cell_edges", "checked_activations"]
