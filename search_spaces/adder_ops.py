"""Adder candidate operations: the DARTS convolutions with AdderNet layers in them.

A multiplication-free candidate lets a hardware-aware search trade accuracy for cheaper
arithmetic (adders cost less area and energy than multipliers; METHODS.md section 4).
The four ops mirror DARTS's separable and dilated convolutions layer for layer, with
every `nn.Conv2d` an `AdderConv2d`, so an adder op and its float counterpart differ only
in the arithmetic, and `adder_form` can turn a float genotype into its adder form.

One departure from the DARTS layout: every adder layer is followed by a BatchNorm, as
AdderNet requires, also the depthwise one that DARTS follows directly by the pointwise
conv. An adder layer's outputs are all <= 0 and large; fed unnormalised into the
pointwise adder, they sit below every filter, so ``|x - f| = f - x`` for every tap and all
output channels become one sum of the inputs plus a constant (the final BN removes the
constant, leaving identical channels).

In the supernet the n edges leaving a node run as grouped adder layers
(`BatchedAdderDilConv`), each edge with its own filters; adder and conv candidates never
share weights (METHODS.md: adder weights are Laplacian, conv weights Gaussian). Importing
this module registers them once; `op_sets` imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from search_spaces.activations import DEFAULT_ACTIVATION, PAIR_SEPARATOR, activation_module
from search_spaces.adder import AdderConv2d
from search_spaces.layer_spec import LayerSpec
from search_spaces.op_spec import OpSpec, register_op_spec
from search_spaces.supernet_ops import EdgeBatchOp, SourceCache

# ------------------------------------------------------------------------ modules


class AdderDilConv(nn.Sequential):
    """ReLU (or `activation`) -> depthwise k x k adder (dilated) -> BN -> pointwise 1x1
    adder -> BN: `ops.DilConv` with adder layers, each followed by its BN."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
        activation: str = DEFAULT_ACTIVATION,
    ) -> None:
        super().__init__(
            activation_module(activation),
            AdderConv2d(C_in, C_in, kernel, stride=stride, padding=padding,
                        dilation=dilation, groups=C_in),
            nn.BatchNorm2d(C_in, affine=affine),
            AdderConv2d(C_in, C_out, 1),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class AdderSepConv(nn.Sequential):
    """Two `AdderDilConv` blocks without dilation; only the first carries the stride, as
    in `ops.SepConv`. `activation` replaces both ReLUs."""

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool = True,
        activation: str = DEFAULT_ACTIVATION,
    ) -> None:
        super().__init__(
            AdderDilConv(C_in, C_in, kernel, stride, padding, 1, affine, activation),
            AdderDilConv(C_in, C_out, kernel, 1, padding, 1, affine, activation),
        )


# ------------------------------------------------------------------ supernet form


class BatchedAdderDilConv(EdgeBatchOp):
    """`AdderDilConv` (`repeat=1`) or `AdderSepConv` (`repeat=2`) for the n edges leaving
    one supernet node, as grouped adder layers: one depthwise adder over n*C channels and
    one pointwise adder with n groups per block, instead of n modules of their own (a
    search step spent most of its time in per-module overhead). Edge e owns channels
    [e*C, (e+1)*C) of every layer, and the adaptive gradient scale is applied per edge
    (`eta_blocks=n`), so each edge trains exactly as its own module would; BNs are
    affine-free, as in every DARTS supernet op. The first activation is the node's shared
    one (or each edge's mixture, `MIXED`)."""

    def __init__(self, C: int, stride: int, n: int, kernel: int, padding: int,
                 dilation: int, repeat: int, activation: str = DEFAULT_ACTIVATION) -> None:
        super().__init__(n)
        self.C, self.activation = C, activation
        nC = n * C
        self.blocks = nn.ModuleList(
            nn.Sequential(
                AdderConv2d(nC, nC, kernel, stride=stride if r == 0 else 1, padding=padding,
                            dilation=dilation, groups=nC, eta_blocks=n),
                nn.BatchNorm2d(nC, affine=False),
                AdderConv2d(nC, nC, 1, groups=n, eta_blocks=n),
                nn.BatchNorm2d(nC, affine=False),
            )
            for r in range(repeat)
        )

    def forward(self, cache: SourceCache) -> torch.Tensor:
        h = cache.activated_repeated(self.activation, self.n)
        for r, block in enumerate(self.blocks):
            if r > 0:
                h = cache.apply(self.activation, h)
            h = block(h)
        N, _, H, W = h.shape
        return h.view(N, self.n, self.C, H, W)


# ------------------------------------------------------------------------- costs


def adder_additions(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """Two additions per filter tap of every output element (the absolute difference and
    the accumulation): 2 x out elements x (in_channels / groups) x kernel area, batch
    included as `layer_spec.conv_macs` counts it."""
    assert isinstance(module, AdderConv2d)
    taps = (module.in_channels // module.groups) * math.prod(module.kernel_size)
    return 2 * output.numel() * taps


def _no_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    return 0


#: One spec object shared by the four ops: a layer type takes one spec (`op_spec`).
ADDER_LAYER = LayerSpec(count=_no_macs, additions=adder_additions, kind="adder")

# ------------------------------------------------------------------------ builders
# kernel, padding and dilation are those of the DARTS counterparts (`darts_ops`)


class _Builder(Protocol):
    """Both `OpBuilder` and `ActivatedBuilder`: the activation defaults to ReLU."""

    def __call__(self, C: int, stride: int, affine: bool, act: str = ...) -> nn.Module: ...


def _sep3(C: int, stride: int, affine: bool, act: str = DEFAULT_ACTIVATION) -> nn.Module:
    return AdderSepConv(C, C, 3, stride, 1, affine, activation=act)


def _sep5(C: int, stride: int, affine: bool, act: str = DEFAULT_ACTIVATION) -> nn.Module:
    return AdderSepConv(C, C, 5, stride, 2, affine, activation=act)


def _dil3(C: int, stride: int, affine: bool, act: str = DEFAULT_ACTIVATION) -> nn.Module:
    return AdderDilConv(C, C, 3, stride, 2, 2, affine, activation=act)


def _dil5(C: int, stride: int, affine: bool, act: str = DEFAULT_ACTIVATION) -> nn.Module:
    return AdderDilConv(C, C, 5, stride, 4, 2, affine, activation=act)


def _batched(kernel: int, padding: int, dilation: int, repeat: int
             ) -> Callable[..., EdgeBatchOp]:
    """(C, stride, n[, activation]) -> the supernet form of one adder op."""
    def build(C: int, stride: int, n: int, act: str = DEFAULT_ACTIVATION) -> EdgeBatchOp:
        return BatchedAdderDilConv(C, stride, n, kernel, padding, dilation, repeat, act)
    return build


def _spec(name: str, build: _Builder, batched: Callable[..., EdgeBatchOp]) -> OpSpec:
    return OpSpec(name, build, batched=batched, family="conv", heavy=True,
                  layers={AdderConv2d: ADDER_LAYER}, build_activated=build,
                  batched_activated=batched)


ADDER_OP_SPECS: tuple[OpSpec, ...] = (
    _spec("adder_sep_conv_3x3", _sep3, _batched(3, 1, 1, 2)),
    _spec("adder_sep_conv_5x5", _sep5, _batched(5, 2, 1, 2)),
    _spec("adder_dil_conv_3x3", _dil3, _batched(3, 2, 2, 1)),
    _spec("adder_dil_conv_5x5", _dil5, _batched(5, 4, 2, 1)),
)

for _op in ADDER_OP_SPECS:
    register_op_spec(_op)

# ------------------------------------------------------------------ float -> adder

#: Each DARTS convolution and its adder mirror.
ADDER_FORM: dict[str, str] = {
    "sep_conv_3x3": "adder_sep_conv_3x3",
    "sep_conv_5x5": "adder_sep_conv_5x5",
    "dil_conv_3x3": "adder_dil_conv_3x3",
    "dil_conv_5x5": "adder_dil_conv_5x5",
}


def adder_form(name: str) -> str:
    """The adder mirror of op `name`, keeping a pair's activation ("sep_conv_3x3/silu" ->
    "adder_sep_conv_3x3/silu"); any other name (pooling, skip, an adder op) unchanged."""
    base, sep, act = name.partition(PAIR_SEPARATOR)
    mirror = ADDER_FORM.get(base)
    return name if mirror is None else f"{mirror}{sep}{act}"


__all__ = [
    "ADDER_FORM",
    "ADDER_LAYER",
    "ADDER_OP_SPECS",
    "AdderDilConv",
    "AdderSepConv",
    "BatchedAdderDilConv",
    "adder_additions",
    "adder_form",
]
