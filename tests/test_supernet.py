"""The batched supernet computes exactly what a per-edge DARTS supernet computes."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.op_spec import op_spec
from search_spaces.ops import DARTS_PRIMITIVES, build_op
from search_spaces.supernet import SuperNet, cell_edges
from search_spaces.supernet_ops import BatchedDilConv, BatchedFactorizedReduce


class NaiveMixedOp(nn.Module):
    """DARTS' MixedOp: sum over ops of weight * op(x), `none` included."""

    def __init__(self, C: int, stride: int, names: list[str]) -> None:
        super().__init__()
        self.names = names
        ops = []
        for name in names:
            op = build_op(name, C, stride, False)
            if op_spec(name).supernet_bn:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return sum(wi * op(x) for wi, op in zip(w, self.ops))


def naive_cell_forward(cell, mixed: nn.ModuleList, s0, s1, weights):
    states = [cell.preprocess0(s0), cell.preprocess1(s1)]
    edges = cell_edges(cell.steps)
    for j in range(cell.steps):
        states.append(
            sum(mixed[k](states[i], weights[k]) for k, (i, t) in enumerate(edges) if t == j + 2)
        )
    return torch.cat(states[-cell.multiplier :], dim=1)


def build_naive(net: SuperNet) -> list[nn.ModuleList]:
    """Per-edge modules carrying exactly the batched supernet's parameters."""
    naive = []
    for cell in net.cells:
        cell_type = "reduce" if cell.reduction else "normal"
        edge_ops = net.edge_ops[cell_type]
        edges = cell_edges(cell.steps)
        C = cell.preprocess1[1].out_channels
        mixed = nn.ModuleList(
            NaiveMixedOp(C, 2 if cell.reduction and i < 2 else 1, edge_ops[k])
            for k, (i, _) in enumerate(edges)
        )
        for s, source in enumerate(cell.sources):
            ids = [k for k, (i, _) in enumerate(edges) if i == s]
            for k, (name, op) in enumerate(zip(source.op_names, source.ops)):
                for slot, p in enumerate(getattr(source, f"pos_{k}").tolist()):
                    e = ids[p]
                    target = mixed[e].ops[edge_ops[e].index(name)]
                    if isinstance(op, BatchedDilConv):
                        blocks = list(target) if len(op.blocks) == 2 else [target]
                        sl = slice(slot * C, (slot + 1) * C)
                        for block, t in zip(op.blocks, blocks):
                            t[1].weight.data.copy_(block["dw"].weight.data[sl])
                            t[2].weight.data.copy_(block["pw"].weight.data[sl])
                    elif isinstance(op, BatchedFactorizedReduce):
                        sl = slice(slot * C // 2, (slot + 1) * C // 2)
                        target.conv_1.weight.data.copy_(op.conv_1.weight.data[sl])
                        target.conv_2.weight.data.copy_(op.conv_2.weight.data[sl])
        naive.append(mixed)
    return naive


def naive_forward(net: SuperNet, naive, x):
    weights = net.arch_weights()
    s0 = s1 = net.stem(x)
    for cell, mixed in zip(net.cells, naive):
        w = weights["reduce" if cell.reduction else "normal"]
        s0, s1 = s1, naive_cell_forward(cell, mixed, s0, s1, w)
    return net.classifier(torch.flatten(net.global_pooling(s1), 1))


def pruned_edge_ops(keep: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [sorted(rng.sample(DARTS_PRIMITIVES, keep), key=DARTS_PRIMITIVES.index)
            for _ in range(14)]


@pytest.mark.parametrize("keep", [8, 5, 3])
def test_batched_supernet_matches_per_edge_reference(keep: int) -> None:
    torch.manual_seed(0)
    if keep == 8:
        edge_ops = {"normal": [list(DARTS_PRIMITIVES)] * 14,
                    "reduce": [list(DARTS_PRIMITIVES)] * 14}
    else:
        edge_ops = {"normal": pruned_edge_ops(keep, 1), "reduce": pruned_edge_ops(keep, 2)}
    net = SuperNet(C=4, num_classes=5, layers=3, edge_ops=edge_ops, in_channels=3)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()  # far from uniform, so a wrong column would show
    naive = build_naive(net)
    x = torch.randn(6, 3, 8, 8)
    y = torch.randint(0, 5, (6,))

    out = net(x)
    loss = F.cross_entropy(out, y)
    grads = torch.autograd.grad(loss, net.arch_parameters() + [net.stem[0].weight])

    ref = naive_forward(net, naive, x)
    ref_loss = F.cross_entropy(ref, y)
    ref_grads = torch.autograd.grad(ref_loss, net.arch_parameters() + [net.stem[0].weight])

    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-6)


def test_supernet_shapes_and_parameter_split() -> None:
    ops = [list(DARTS_PRIMITIVES)] * 14
    net = SuperNet(C=4, num_classes=10, layers=5, edge_ops={"normal": ops, "reduce": ops},
                   in_channels=1)
    out = net(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
    assert [a.shape for a in net.arch_parameters()] == [(14, 8), (14, 8)]
    n_weights = sum(p.numel() for p in net.weight_parameters())
    n_all = sum(p.numel() for p in net.parameters())
    assert n_all - n_weights == 2 * 14 * 8


def test_skip_dropout_masks_are_independent_per_edge() -> None:
    torch.manual_seed(0)
    ops = [["skip_connect"]] * 14
    net = SuperNet(C=4, num_classes=3, layers=3, edge_ops={"normal": ops, "reduce": ops})
    net.set_skip_dropout(0.5)
    cell = net.cells[0]
    x = torch.randn(2, 4, 8, 8)
    out = cell.sources[0](x, torch.ones(14))
    assert out.shape == (2, 4, 4, 8, 8)
    zero = out == 0
    assert 0.4 < zero.float().mean() < 0.6
    assert not torch.equal(zero[:, 0], zero[:, 1])
    net.eval()
    torch.testing.assert_close(cell.sources[0](x, torch.ones(14))[:, 0], x)


def test_all_none_edges_give_zeros() -> None:
    ops = [["none"]] * 14
    net = SuperNet(C=4, num_classes=3, layers=3, edge_ops={"normal": ops, "reduce": ops})
    out = net.cells[1].sources[0](torch.randn(2, 8, 8, 8), torch.ones(14))
    assert out.shape == (2, 4, 8, 4, 4) and out.abs().sum() == 0


def test_running_statistics_match_per_edge_reference_in_eval_mode() -> None:
    """Same training-mode history -> same running statistics -> same eval-mode output."""
    torch.manual_seed(0)
    edge_ops = {"normal": pruned_edge_ops(5, 3), "reduce": pruned_edge_ops(5, 4)}
    net = SuperNet(C=4, num_classes=5, layers=3, edge_ops=edge_ops)
    naive = build_naive(net)
    # stem and preprocess BNs are the same modules in both networks: rewind them between
    # the two replays so each network sees the history once
    shared = [m for m in [*net.stem.modules(), *(c.preprocess0 for c in net.cells),
                          *(c.preprocess1 for c in net.cells)]]
    shared_bns = [b for m in shared for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    saved = [(b.running_mean.clone(), b.running_var.clone()) for b in shared_bns]
    batches = [torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(s))
               for s in range(3)]
    with torch.no_grad():
        for x in batches:
            net(x)
        after_net = [(b.running_mean.clone(), b.running_var.clone()) for b in shared_bns]
        for b, (mean, var) in zip(shared_bns, saved):
            b.running_mean.copy_(mean)
            b.running_var.copy_(var)
        for x in batches:
            naive_forward(net, naive, x)
        for b, (mean, var) in zip(shared_bns, after_net):
            torch.testing.assert_close(b.running_mean, mean)
            torch.testing.assert_close(b.running_var, var)
        net.eval()
        for m in naive:
            m.eval()
        x = torch.randn(4, 3, 8, 8)
        torch.testing.assert_close(net(x), naive_forward(net, naive, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel, stride, size", [(3, 1, 8), (5, 1, 8), (3, 2, 8), (5, 2, 8),
                                                  (3, 2, 7), (5, 1, 7)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_phase_split_dilated_depthwise_equals_dilated_conv(kernel, stride, size,
                                                           channels_last) -> None:
    from search_spaces.supernet_ops import depthwise

    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, kernel, stride, padding=kernel - 1, dilation=2, groups=6,
                     bias=False)
    x = torch.randn(3, 6, size, size, requires_grad=True)
    xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    ours = depthwise(conv, xin)
    ref = conv(x)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(ref)
    gx, gw = torch.autograd.grad(ours, (x, conv.weight), g)
    rx, rw = torch.autograd.grad(ref, (x, conv.weight), g)
    torch.testing.assert_close(gx, rx, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, rw, rtol=1e-5, atol=1e-5)
