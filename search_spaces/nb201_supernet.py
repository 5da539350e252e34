"""The NAS-Bench-201 supernet: NB201's CIFAR skeleton with mixed cells, for DARTS.

Macro layout is `Nb201Network`'s (stem, three stages of N cells at C, 2C, 4C channels,
residual reduction blocks between them, BN-ReLU-pool-classifier); only the cells differ:
each of the 6 edges is sum_o softmax(alpha)_o * o(x) over its candidate ops. One
architecture tensor ("normal", shape (6, ops per edge)) is shared by every cell, as in
NAS-Bench-201's own DARTS baseline.

Candidate ops are the benchmark's, with the search network's affine-free BN inside the
convolutions. Pooling gets no BN after it (the DARTS search network adds one; NB201's
search cells do not), so a supernet whose alphas are one-hot computes exactly the
discrete cell: `discrete_network` hands its weights to an `Nb201Network` (weight
inheritance) and the tests check the two outputs agree. That difference is NB201's own
`avg_pool_3x3` spec in namespace "nb201" (registered in `nb201.py`), which the cells
pass to `SourceEdges`; every other name means what the shared (DARTS) spec says.

The edges leaving one node are computed together (`SourceEdges`, shared with the DARTS
supernet): ReLU, pooling and identity once per node, both convolutions of all its
outgoing edges as one convolution with n*C output channels, `none` never computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import nn

from search_spaces.nb201 import (
    NB201_EDGES,
    NB201_NAMESPACE,
    NB201_OPS,
    NUM_EDGES,
    NUM_NODES,
    InferCell,
    Nb201Arch,
    Nb201Network,
    stage_layers,
)
from search_spaces.op_spec import op_spec
from search_spaces.ops import ReLUConvBN, check_op_names
from search_spaces.supernet import (
    ARCH_PREFIXES,
    ArchParameters,
    SourceEdges,
    activation_key,
    checked_activations,
)
from search_spaces.supernet_ops import BatchedReLUConvBN

EdgeOps = Sequence[Sequence[str]]


class Nb201SearchCell(nn.Module):
    """A mixed NB201 cell: node j = sum over edges i->j of the mixed edge of node i."""

    def __init__(self, C: int, edge_ops: EdgeOps, activations: Sequence[str] = ()) -> None:
        super().__init__()
        num_columns = len(edge_ops[0])
        self.sources = nn.ModuleList()
        self._targets: list[list[int]] = []
        for source in range(NUM_NODES - 1):
            ids = [e for e, (i, _) in enumerate(NB201_EDGES) if i == source]
            self.sources.append(
                SourceEdges(C, 1, ids, edge_ops, num_columns, namespace=NB201_NAMESPACE,
                            activations=activations)
            )
            self._targets.append([NB201_EDGES[e][1] for e in ids])
            self.register_buffer(f"edges_{source}", torch.tensor(ids), persistent=False)

    def forward(self, x: torch.Tensor, weights: torch.Tensor,
                activation_weights: torch.Tensor | None = None) -> torch.Tensor:
        """`activation_weights` (6, K): softmax of the activation parameters, in a
        factorised supernet."""
        weights_flat = weights.reshape(-1)
        nodes = [x]
        incoming: list[list[torch.Tensor]] = [[] for _ in range(NUM_NODES - 1)]
        for i, source in enumerate(self.sources):
            if i > 0:
                nodes.append(_sum(incoming[i - 1]))
            q = (None if activation_weights is None
                 else activation_weights.index_select(0, getattr(self, f"edges_{i}")))
            mixed = source(nodes[i], weights_flat, q)
            for p, target in enumerate(self._targets[i]):
                incoming[target - 1].append(mixed[:, p])
        return _sum(incoming[-1])


def _sum(tensors: list[torch.Tensor]) -> torch.Tensor:
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return total


def check_edge_ops(edge_ops: Mapping[str, EdgeOps]) -> list[list[str]]:
    """The per-edge op lists of the one cell type, checked: 6 edges, equal widths."""
    if set(edge_ops) != {"normal"}:
        raise ValueError(f"NB201 has one cell type ('normal'), got {sorted(edge_ops)}")
    ops = edge_ops["normal"]
    if len(ops) != NUM_EDGES:
        raise ValueError(f"normal: expected {NUM_EDGES} edges, got {len(ops)}")
    if len({len(o) for o in ops}) != 1:
        raise ValueError("normal: every edge needs the same number of ops")
    for o in ops:
        check_op_names(o, NB201_OPS)
        if len(set(o)) != len(o):
            raise ValueError(f"normal: an edge lists an op twice: {list(o)}")
    return [list(o) for o in ops]


class Nb201SuperNet(ArchParameters, nn.Module):
    """NB201's search network with its architecture parameters (`self.arch["normal"]`).

    Same interface as the DARTS `SuperNet`, so the search driver, architect and loop run
    it unchanged; `layers` there is N, the cells per stage.
    """

    def __init__(
        self,
        C: int,
        N: int,
        num_classes: int,
        edge_ops: Mapping[str, EdgeOps],
        in_channels: int = 3,
        alpha_init_scale: float = 1e-3,
        activations: Sequence[str] = (),
    ) -> None:
        """`activations`: a factorised search (`SuperNet` says how)."""
        super().__init__()
        self.activations = checked_activations(activations)
        self.edge_ops = {"normal": check_edge_ops(edge_ops)}
        self.C, self.N, self.num_classes, self.in_channels = C, N, num_classes, in_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C)
        )
        layers, C_prev = stage_layers(
            C, N, lambda c: Nb201SearchCell(c, self.edge_ops["normal"], self.activations)
        )
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        width = len(self.edge_ops["normal"][0])
        arch = {"normal": nn.Parameter(alpha_init_scale * torch.randn(NUM_EDGES, width))}
        if self.activations:
            arch[activation_key("normal")] = nn.Parameter(
                alpha_init_scale * torch.randn(NUM_EDGES, len(self.activations)))
        self.arch = nn.ParameterDict(arch)

    def forward(
        self, x: torch.Tensor, arch_weights: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        given = self.expected_arch_weights() if arch_weights is None else arch_weights
        weights, q = given["normal"], given.get(activation_key("normal"))
        h = self.stem(x)
        for layer in self.cells:
            h = layer(h, weights, q) if isinstance(layer, Nb201SearchCell) else layer(h)
        out = self.global_pooling(self.lastact(h))
        return self.classifier(out.flatten(1))

    # -- weight inheritance ----------------------------------------------------------

    @torch.no_grad()
    def discrete_network(self, arch: Nb201Arch) -> Nb201Network:
        """`arch`'s discrete network carrying this supernet's weights and BN statistics.

        Every op of `arch` must be a candidate on its edge. The discrete cells' BNs are
        affine with the identity transform, so with one-hot alphas on `arch` the two
        networks compute the same function (one-shot evaluation of a derived cell).
        """
        ref = self.classifier.weight
        net = Nb201Network(arch, C=self.C, N=self.N, num_classes=self.num_classes,
                           in_channels=self.in_channels).to(ref.device, ref.dtype)
        own = {k: v for k, v in self.state_dict().items() if not k.startswith(ARCH_PREFIXES)}
        target = net.state_dict()
        for k, v in own.items():
            if k in target and target[k].shape == v.shape:
                target[k].copy_(v)
        for layer, cell in zip(self.cells, net.cells, strict=True):
            if isinstance(layer, Nb201SearchCell):
                _copy_cell(layer, cell, arch)
        return net


def _copy_cell(search: Nb201SearchCell, cell: nn.Module, arch: Nb201Arch) -> None:
    for e, op in enumerate(arch.ops):
        source_index = NB201_EDGES[e][0]
        source: SourceEdges = search.sources[source_index]  # type: ignore[assignment]
        if op_spec(op, NB201_NAMESPACE).zero:
            continue  # never computed
        k = source.op_names.index(op)
        batched = source.ops[k]
        if not isinstance(batched, BatchedReLUConvBN):
            continue  # skip / pooling carry no state
        edge_ids = [i for i, (s, _) in enumerate(NB201_EDGES) if s == source_index]
        p = int((getattr(source, f"pos_{k}") == edge_ids.index(e)).nonzero()[0, 0])
        rows = slice(p * batched.C, (p + 1) * batched.C)
        edge = cast(ReLUConvBN, cast(InferCell, cell).edges[e])  # nor_conv: ReLU, conv, BN
        conv, bn = cast(nn.Conv2d, edge[1]), cast(nn.BatchNorm2d, edge[2])
        # both BatchNorms track running statistics (the default), so these are tensors
        assert bn.running_mean is not None and bn.running_var is not None
        assert bn.num_batches_tracked is not None
        assert batched.bn.running_mean is not None and batched.bn.running_var is not None
        assert batched.bn.num_batches_tracked is not None
        conv.weight.copy_(batched.conv.weight[rows])
        bn.running_mean.copy_(batched.bn.running_mean[rows])
        bn.running_var.copy_(batched.bn.running_var[rows])
        bn.num_batches_tracked.copy_(batched.bn.num_batches_tracked)
        bn.weight.fill_(1.0)
        bn.bias.zero_()


__all__ = ["Nb201SuperNet", "Nb201SearchCell", "BatchedReLUConvBN"]
