"""Candidate operations of the supernet, computed for many edges at once.

All edges that leave one node of a cell read the same tensor. So instead of one small
module per (edge, operation), as the DARTS reference does, an operation is computed for
all edges leaving a node in one call:

- the pre-activation (ReLU for every shipped op; any registered activation by name),
  pooling (+ its parameter-free BN) and the identity depend only on the input:
  computed once per source node and shared by all its edges (exact: the per-edge BNs of
  the reference have no parameters and see identical inputs, so their outputs and
  running statistics are identical).
- Separable / dilated convolutions of n edges become one depthwise convolution over the
  input repeated n times and one grouped 1x1 convolution with n groups; a plain conv
  (NB201's) one convolution with n*C outputs. Parameter shapes per edge and PyTorch's
  default initialisation (fan-in) are those of the per-edge convs.
- `zero` ops (`none`) contribute exactly zero and are never computed; their
  architecture weight still takes part in the softmax, so gradients are the reference's.

Every batched op returns either a shared (N, C, H, W) tensor or (N, n, C, H, W).
Which form an op gets is its `OpSpec.batched` (`op_spec.py`; the DARTS ones are
registered in `darts_ops.py`); ops without one fall back to one module per edge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.activations import activation
from search_spaces.op_spec import (
    SHARED,
    BatchedBuilder,
    op_spec,
    register_op_spec,
    replace_op_spec,
)
from search_spaces.ops import shift_one_pixel

#: The activation key of a factorised supernet's activation-carrying ops: "this edge's
#: mixture of activations", sum_k q[e, k] * a_k(x), with q the softmax of the edge's
#: activation parameters (docs/methods.md, factorised operator sets).
MIXED = "<mixture>"


class SourceCache:
    """Per-forward cache of tensors derived from one source node: its activations, by
    name, and their channel repeats. Each is computed once however many ops read it.

    In a factorised supernet it also holds the node's activation mixture: `names` (the
    K candidate activations) and `mix` (edges x K weights of the edges an op serves, in
    the op's edge order). Every candidate activation of x is computed once per node and
    shared by every op and edge; an edge's mixture is then K multiply-adds, so the cost
    is linear in the number of operations plus the number of activations."""

    def __init__(self, x: torch.Tensor, names: Sequence[str] = (),
                 mix: torch.Tensor | None = None) -> None:
        self.x = x
        self.names = tuple(names)
        self.mix = mix
        self._activated: dict[str, torch.Tensor] = {}
        self._repeats: dict[tuple[str, int], torch.Tensor] = {}

    def subset(self, positions: torch.Tensor) -> SourceCache:
        """The same cache for the edges at `positions` of this one (an op that serves
        only some of the node's edges, as after P-DARTS pruning); activations stay
        shared."""
        view = SourceCache(self.x, self.names,
                           None if self.mix is None else self.mix.index_select(0, positions))
        view._activated = self._activated
        return view

    def activated(self, key: str) -> torch.Tensor:
        """The activation registered as `key` (`activations.py`) applied to x; for
        `MIXED`, the mixture of an op that serves one edge."""
        if key == MIXED:
            return self.activated_repeated(key, 1)
        if key not in self._activated:
            self._activated[key] = activation(key)(self.x)
        return self._activated[key]

    def activated_repeated(self, key: str, n: int) -> torch.Tensor:
        """activated(key) repeated n times along channels: (N, n*C, H, W), edge-major;
        for `MIXED`, block e is edge e's own mixture of activations."""
        if key == MIXED:
            if (key, n) not in self._repeats:
                q = self._mix_weights(n)
                self._repeats[key, n] = _mixture([self.activated(a) for a in self.names], q,
                                                 per_edge=False)
            return self._repeats[key, n]
        if n == 1:
            return self.activated(key)
        if (key, n) not in self._repeats:
            self._repeats[key, n] = repeat_channels(self.activated(key), n)
        return self._repeats[key, n]

    def apply(self, key: str, h: torch.Tensor) -> torch.Tensor:
        """Activation `key` on an op's inner tensor h (N, n*C, H, W), edge-major: the
        second activation of a separable convolution. For `MIXED`, edge e's block is
        sum_k q[e, k] a_k(h_e): the same weights as the edge's input mixture."""
        if key != MIXED:
            return activation(key)(h)
        q = self._mix_weights(None)
        return _mixture([activation(a)(h) for a in self.names], q, per_edge=True)

    def _mix_weights(self, n: int | None) -> torch.Tensor:
        if self.mix is None or not self.names:
            raise ValueError("an op with the mixed activation needs a factorised supernet")
        if n is not None and self.mix.shape[0] != n:
            raise ValueError(f"activation weights for {self.mix.shape[0]} edges, op has {n}")
        return self.mix


def _mixture(acts: Sequence[torch.Tensor], q: torch.Tensor, per_edge: bool) -> torch.Tensor:
    """Activations `acts` (K tensors (N, channels, H, W)) mixed per edge with `q` (n, K)
    into (N, n*C, H, W), block e = sum_k q[e, k] * acts[k] (its block e, with `per_edge`:
    an op's inner tensor holds the n edges' blocks side by side; without, one C-channel
    tensor is every edge's input).

    Multiply-adds on an edge-major view in the tensors' own memory layout (channels-last
    stays channels-last, as the depthwise convolutions that read it want), so nothing is
    stacked, permuted or copied besides the result; einsum over a stacked tensor spent
    most of a factorised step in such copies."""
    n = q.shape[0]
    N, channels, H, W = acts[0].shape
    C = channels // n if per_edge else channels
    nhwc = acts[0].is_contiguous(memory_format=torch.channels_last) and \
        not acts[0].is_contiguous()
    if nhwc:  # (N, H, W, n or 1, C), weights over the edge axis
        views = [a.permute(0, 2, 3, 1).reshape(N, H, W, n if per_edge else 1, C)
                 for a in acts]
        w = q.t().reshape(len(acts), 1, 1, 1, n, 1)
    else:  # (N, n or 1, C, H, W)
        views = [a.reshape(N, n if per_edge else 1, C, H, W) for a in acts]
        w = q.t().reshape(len(acts), 1, n, 1, 1, 1)
    out = views[0] * w[0]
    for k in range(1, len(views)):
        out = torch.addcmul(out, views[k], w[k])
    if nhwc:
        return out.reshape(N, H, W, n * C).permute(0, 3, 1, 2)
    return out.reshape(N, n * C, H, W)


def repeat_channels(x: torch.Tensor, n: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, n*C, H, W), copy e at channels [e*C, (e+1)*C).

    Keeps a channels-last input channels-last (`Tensor.repeat` would not), because the
    depthwise convolutions that read it are several times faster in that layout on CPU.
    """
    if not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():
        return x.repeat(1, n, 1, 1)
    N, C, H, W = x.shape
    nhwc = x.permute(0, 2, 3, 1).unsqueeze(3).expand(N, H, W, n, C)
    return nhwc.reshape(N, H, W, n * C).permute(0, 3, 1, 2)


class EdgeBatchOp(nn.Module):
    """One candidate operation for `n` edges leaving the same node."""

    #: True when the output is one (N, C, H, W) tensor valid for every edge.
    shared: bool = False

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, cache: SourceCache) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def register_batched_op(
    name: str, namespace: str = SHARED
) -> Callable[[BatchedBuilder], BatchedBuilder]:
    """Give the registered operation `name` a many-edges form after the fact; ops
    registered with `OpSpec(batched=...)` need not call this. For a `namespace` that
    only inherits `name`, the form is registered as that namespace's own copy of the
    shared spec, so the shared op is left as it is."""

    def decorate(builder: BatchedBuilder) -> BatchedBuilder:
        spec = op_spec(name, namespace)
        new = dataclasses.replace(spec, batched=builder, namespace=namespace)
        if spec.namespace == namespace:
            replace_op_spec(new)
        else:
            register_op_spec(new)
        return builder

    return decorate


def build_edge_batch(name: str, C: int, stride: int, n: int,
                     namespace: str = SHARED) -> EdgeBatchOp:
    """The supernet form of operation `name` for n edges (search: BN without affine),
    as `name` means it in `namespace`."""
    spec = op_spec(name, namespace)
    if spec.batched is not None:
        return spec.batched(C, stride, n)
    return PerEdge(name, C, stride, n, namespace)


class EdgeMixture(nn.Module):
    """The activation slot of a per-edge module in a factorised supernet: sum_k q_k a_k(x)
    with the q of the edge the module serves, set by `PerEdge` before each call."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = tuple(names)
        self.q: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.q is None:
            raise ValueError("an EdgeMixture needs its edge's activation weights")
        out = self.q[0] * activation(self.names[0])(x)
        for k in range(1, len(self.names)):
            out = out + self.q[k] * activation(self.names[k])(x)
        return out


class PerEdge(EdgeBatchOp):
    """Fallback: one discrete module per edge, outputs stacked.

    With `mixed_activations` (a factorised supernet, for an op that has no batched form
    mixing activations, such as the adder convolutions) every ReLU of each edge's module
    is an `EdgeMixture` reading that edge's q: the same mixture the batched ops use, but
    the input's K activations are computed per edge rather than once per node (cheap
    beside the ops that need this fallback)."""

    def __init__(self, name: str, C: int, stride: int, n: int,
                 namespace: str = SHARED, mixed_activations: Sequence[str] = ()) -> None:
        super().__init__(n)
        spec = op_spec(name, namespace)
        self.mixed = tuple(mixed_activations)
        ops = []
        for _ in range(n):
            op = spec.build(C, stride, False)
            if self.mixed:
                op = _with_edge_mixtures(op, self.mixed)
            if spec.supernet_bn:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, cache: SourceCache) -> torch.Tensor:
        if self.mixed:
            q = cache._mix_weights(self.n)
            for e, op in enumerate(self.ops):
                for m in op.modules():
                    if isinstance(m, EdgeMixture):
                        m.q = q[e]
        return torch.stack([op(cache.x) for op in self.ops], dim=1)


def _with_edge_mixtures(module: nn.Module, names: Sequence[str]) -> nn.Module:
    """`module` with each of its ReLU modules (the activation a plain op is built with)
    replaced by an `EdgeMixture` over `names`."""
    if isinstance(module, nn.ReLU):
        return EdgeMixture(names)
    for child_name, child in module.named_children():
        setattr(module, child_name, _with_edge_mixtures(child, names))
    return module


class SharedPool(EdgeBatchOp):
    """Pooling, computed once for all edges of a node.

    With `bn` a parameter-free BN follows, as in the DARTS search network; NB201's search
    cells have none, so that a one-hot supernet computes exactly the discrete cell.
    """

    shared = True

    def __init__(self, pool: nn.Module, C: int, n: int, bn: bool = True) -> None:
        super().__init__(n)
        self.pool = pool
        self.bn = nn.BatchNorm2d(C, affine=False) if bn else None

    def forward(self, cache: SourceCache) -> torch.Tensor:
        y = self.pool(cache.x)
        return y if self.bn is None else self.bn(y)


class SharedIdentity(EdgeBatchOp):
    """Stride-1 skip; with P-DARTS dropout each edge gets its own element-wise mask."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.p = 0.0

    @property
    def shared(self) -> bool:  # type: ignore[override]
        return not (self.training and self.p > 0)

    def forward(self, cache: SourceCache) -> torch.Tensor:
        x = cache.x
        if self.shared:
            return x
        expanded = x.unsqueeze(1).expand(x.shape[0], self.n, *x.shape[1:])
        return F.dropout(expanded, self.p, training=True)


class BatchedFactorizedReduce(EdgeBatchOp):
    """Stride-2 skip (FactorizedReduce) for n edges."""

    def __init__(self, C: int, n: int, activation: str = "relu") -> None:
        super().__init__(n)
        if C % 2:
            raise ValueError(f"FactorizedReduce needs an even number of channels, got {C}")
        self.C = C
        self.activation = activation
        self.conv_1 = nn.Conv2d(C, n * C // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C, n * C // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(n * C, affine=False)

    def forward(self, cache: SourceCache) -> torch.Tensor:
        r = cache.activated(self.activation)
        a = self.conv_1(r)
        b = self.conv_2(shift_one_pixel(r))
        N, _, H, W = a.shape
        half = self.C // 2
        out = torch.cat([a.view(N, self.n, half, H, W), b.view(N, self.n, half, H, W)], dim=2)
        return self.bn(out.view(N, self.n * self.C, H, W)).view(N, self.n, self.C, H, W)


class BatchedDilConv(EdgeBatchOp):
    """Activation -> depthwise -> pointwise -> BN, `repeat` times, for n edges.

    `repeat=2` is DARTS' separable conv (only the first block strides), `repeat=1` its
    dilated conv; both use ReLU. The first activation is the node's shared one.
    """

    def __init__(
        self, C: int, stride: int, n: int, kernel: int, padding: int, dilation: int,
        repeat: int, activation: str = "relu",
    ) -> None:
        super().__init__(n)
        self.C = C
        self.activation = activation
        nC = n * C
        blocks = []
        for r in range(repeat):
            blocks.append(
                nn.ModuleDict(
                    {
                        "dw": nn.Conv2d(
                            nC,
                            nC,
                            kernel,
                            stride if r == 0 else 1,
                            padding,
                            dilation=dilation,
                            groups=nC,
                            bias=False,
                        ),
                        "pw": nn.Conv2d(nC, nC, 1, groups=n, bias=False),
                        "bn": nn.BatchNorm2d(nC, affine=False),
                    }
                )
            )
        self.blocks = nn.ModuleList(blocks)

    def forward(self, cache: SourceCache) -> torch.Tensor:
        h = cache.activated_repeated(self.activation, self.n)
        for r, block in enumerate(cast("Iterable[nn.ModuleDict]", self.blocks)):
            if r > 0:
                h = cache.apply(self.activation, h)
            h = block["bn"](block["pw"](depthwise(cast(nn.Conv2d, block["dw"]), h)))
        N, _, H, W = h.shape
        return h.view(N, self.n, self.C, H, W)


class BatchedReLUConvBN(EdgeBatchOp):
    """Activation -> k x k conv -> BN(affine=False) for n edges: one conv with n*C
    outputs (NB201's nor_conv ops, with ReLU).

    Slice [e*C, (e+1)*C) of the weight is edge e's C x C conv; its fan-in (and so
    PyTorch's default initialisation) is that of the per-edge conv.
    """

    def __init__(self, C: int, stride: int, n: int, kernel: int,
                 activation: str = "relu") -> None:
        super().__init__(n)
        self.C = C
        self.activation = activation
        self.conv = nn.Conv2d(C, n * C, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(n * C, affine=False)

    def forward(self, cache: SourceCache) -> torch.Tensor:
        if self.activation == MIXED and self.n > 1:
            # each edge reads its own mixture: the same weights as a grouped conv over
            # the n mixtures side by side (edge e's C x C slice sees only block e)
            conv = self.conv
            h = F.conv2d(cache.activated_repeated(MIXED, self.n), conv.weight, None,
                         conv.stride, conv.padding, conv.dilation, self.n)
            h = self.bn(h)
        else:
            h = self.bn(self.conv(cache.activated(self.activation)))
        N, _, H, W = h.shape
        return h.view(N, self.n, self.C, H, W)


def depthwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A depthwise convolution; dilation 2 is run as plain convolutions on pixel phases.

    PyTorch's CPU backward of dilated depthwise convolutions is 10-50x slower than its
    forward. A dilation-2 kernel with even padding only ever combines pixels of the same
    row/column parity, so: at stride 2 it reads only the even/even phase (a plain conv
    with half the padding on x[::2, ::2]); at stride 1 the four phases are independent
    plain convs (run as one batch). Same arithmetic, fast kernels.
    """
    # the convs given here are built with int padding (never "same" / "valid")
    d, s, p = conv.dilation[0], conv.stride[0], cast(int, conv.padding[0])
    square = conv.dilation[0] == conv.dilation[1] and conv.stride[0] == conv.stride[1]
    if d != 2 or p % 2 or not square or conv.padding[0] != conv.padding[1]:
        return conv(x)
    if s == 2:
        return F.conv2d(x[:, :, ::2, ::2], conv.weight, None, 1, p // 2, 1, conv.groups)
    N, C, H, W = x.shape
    if s != 1 or H % 2 or W % 2:
        return conv(x)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        nhwc = x.permute(0, 2, 3, 1).reshape(N, H // 2, 2, W // 2, 2, C)
        phases = nhwc.permute(2, 4, 0, 1, 3, 5).reshape(4 * N, H // 2, W // 2, C)
        y = F.conv2d(phases.permute(0, 3, 1, 2), conv.weight, None, 1, p // 2, 1, conv.groups)
        y = y.permute(0, 2, 3, 1).reshape(2, 2, N, H // 2, W // 2, C)
        return y.permute(2, 3, 0, 4, 1, 5).reshape(N, H, W, C).permute(0, 3, 1, 2)
    phases = x.reshape(N, C, H // 2, 2, W // 2, 2).permute(3, 5, 0, 1, 2, 4)
    y = F.conv2d(phases.reshape(4 * N, C, H // 2, W // 2), conv.weight, None, 1, p // 2, 1,
                 conv.groups)
    y = y.reshape(2, 2, N, C, H // 2, W // 2).permute(2, 3, 4, 0, 5, 1)
    return y.reshape(N, C, H, W)


__all__ = [
    "BatchedDilConv",
    "BatchedFactorizedReduce",
    "BatchedReLUConvBN",
    "EdgeBatchOp",
    "PerEdge",
    "SharedIdentity",
    "SharedPool",
    "SourceCache",
    "build_edge_batch",
    "depthwise",
    "register_batched_op",
    "repeat_channels",
]
