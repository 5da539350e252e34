"""Candidate operations and the registry that maps a stable name to a builder.

Every builder has the signature `(C, stride, affine) -> nn.Module` and maps a tensor of
C channels to C channels (spatially subsampled when stride is 2). The names of the eight
DARTS primitives are the published ones, so published genotypes paste in unchanged.
The modules follow the DARTS reference layer for layer, because parameter counts and
multiply-accumulates are checked against the papers' tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.errors import UnknownOperationError

OpBuilder = Callable[[int, int, bool], nn.Module]

_REGISTRY: dict[str, OpBuilder] = {}

#: The DARTS primitives in their published order; genotypes store these names.
DARTS_PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


def register_op(name: str) -> Callable[[OpBuilder], OpBuilder]:
    """Register a builder under `name`; a name can be registered once."""

    def decorate(builder: OpBuilder) -> OpBuilder:
        if name in _REGISTRY:
            raise ValueError(f"operation {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorate


def op_names() -> list[str]:
    """All registered operation names."""
    return list(_REGISTRY)


def check_op_names(names: Sequence[str], allowed: Sequence[str] | None = None) -> None:
    """Raise UnknownOperationError for the first name not in `allowed` (default: registry)."""
    valid = list(_REGISTRY) if allowed is None else list(allowed)
    for name in names:
        if name not in valid:
            raise UnknownOperationError(
                f"unknown operation {name!r}; known operations: {', '.join(valid)}"
            )


def build_op(name: str, C: int, stride: int, affine: bool = True) -> nn.Module:
    """Build the operation `name` for C channels."""
    check_op_names([name])
    return _REGISTRY[name](C, stride, affine)


# --------------------------------------------------------------------------- modules


class Zero(nn.Module):
    """The `none` operation: zeros, subsampled when stride is 2."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class Identity(nn.Module):
    """Stride-1 skip connection; a class of its own so drop-path can recognise it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ReLUConvBN(nn.Sequential):
    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool = True
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise k x k (dilated) -> pointwise 1x1 -> BN."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                C_in, C_in, kernel, stride, padding, dilation=dilation, groups=C_in, bias=False
            ),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two (ReLU -> depthwise -> pointwise -> BN) blocks; only the first carries stride."""

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool = True
    ) -> None:
        super().__init__(
            DilConv(C_in, C_in, kernel, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel, 1, padding, 1, affine),
        )


class FactorizedReduce(nn.Module):
    """ReLU, two 1x1 stride-2 convs (the second on the input shifted by one pixel), BN.

    Halves the resolution without losing every other pixel, as DARTS' stride-2 skip.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of channels, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shift_one_pixel(x))], dim=1))


def shift_one_pixel(x: torch.Tensor) -> torch.Tensor:
    """Drop the first row and column; pad odd sizes so both branches agree in shape."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
    return x[:, :, 1:, 1:]


# ------------------------------------------------------------------- DARTS registry


@register_op("none")
def _none(C: int, stride: int, affine: bool) -> nn.Module:
    return Zero(stride)


@register_op("avg_pool_3x3")
def _avg_pool(C: int, stride: int, affine: bool) -> nn.Module:
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


@register_op("max_pool_3x3")
def _max_pool(C: int, stride: int, affine: bool) -> nn.Module:
    return nn.MaxPool2d(3, stride=stride, padding=1)


@register_op("skip_connect")
def _skip(C: int, stride: int, affine: bool) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine)


@register_op("sep_conv_3x3")
def _sep3(C: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(C, C, 3, stride, 1, affine)


@register_op("sep_conv_5x5")
def _sep5(C: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(C, C, 5, stride, 2, affine)


@register_op("dil_conv_3x3")
def _dil3(C: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(C, C, 3, stride, 2, 2, affine)


@register_op("dil_conv_5x5")
def _dil5(C: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(C, C, 5, stride, 4, 2, affine)


#: Ops whose supernet version is followed by a parameter-free BN (DARTS model_search).
POOLING_OPS = frozenset({"max_pool_3x3", "avg_pool_3x3"})
