"""Candidate operations: the DARTS modules, and the registration helpers of old.

Every builder has the signature `(C, stride, affine) -> nn.Module` and maps a tensor of
C channels to C channels (spatially subsampled when stride is 2). The names of the eight
DARTS primitives are the published ones, so published genotypes paste in unchanged.
The modules follow the DARTS reference layer for layer, because parameter counts and
multiply-accumulates are checked against the papers' tables.

What an operation *is* (builder, supernet form, family, heavy flag, layer costs) lives in
one `OpSpec` (`op_spec.py`); the DARTS primitives' specs are registered in
`darts_ops.py`. `register_op` / `build_op` / `op_names` / `check_op_names` are kept
here because spaces and tests import them from this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.activations import DEFAULT_ACTIVATION, activation_module
from search_spaces.layer_spec import LayerSpec
from search_spaces.op_spec import (
    SHARED,
    ActivatedBatchedBuilder,
    ActivatedBuilder,
    BatchedBuilder,
    OpBuilder,
    OpSpec,
    check_op_names,
    op_names,
    op_spec,
    register_op_spec,
)

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


def register_op(
    name: str,
    *,
    namespace: str = SHARED,
    batched: BatchedBuilder | None = None,
    family: str = "",
    heavy: bool = False,
    zero: bool = False,
    supernet_bn: bool = False,
    layers: Mapping[type[nn.Module], LayerSpec] | None = None,
    build_activated: ActivatedBuilder | None = None,
    batched_activated: ActivatedBatchedBuilder | None = None,
) -> Callable[[OpBuilder], OpBuilder]:
    """Decorator form of `register_op_spec` for a builder: the keywords are the other
    `OpSpec` fields, so a bare `@register_op("name")` gives a spec with defaults (run per
    edge in the supernet, family read from the name, not heavy). A (namespace, name)
    pair can be registered once."""

    def decorate(builder: OpBuilder) -> OpBuilder:
        register_op_spec(OpSpec(
            name, builder, batched=batched, family=family, heavy=heavy, zero=zero,
            supernet_bn=supernet_bn, layers=dict(layers or {}), namespace=namespace,
            build_activated=build_activated, batched_activated=batched_activated,
        ))
        return builder

    return decorate


def build_op(name: str, C: int, stride: int, affine: bool = True,
             namespace: str = SHARED) -> nn.Module:
    """Build the discrete operation `name` for C channels."""
    return op_spec(name, namespace).build(C, stride, affine)


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
    """Activation (ReLU unless `activation` names another) -> k x k conv -> BN."""

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool = True,
        activation: str = DEFAULT_ACTIVATION,
    ) -> None:
        super().__init__(
            activation_module(activation),
            nn.Conv2d(C_in, C_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU (or `activation`) -> depthwise k x k (dilated) -> pointwise 1x1 -> BN."""

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
            nn.Conv2d(
                C_in, C_in, kernel, stride, padding, dilation=dilation, groups=C_in, bias=False
            ),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two (ReLU -> depthwise -> pointwise -> BN) blocks; only the first carries stride.
    `activation` replaces both ReLUs."""

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool = True,
        activation: str = DEFAULT_ACTIVATION,
    ) -> None:
        super().__init__(
            DilConv(C_in, C_in, kernel, stride, padding, 1, affine, activation),
            DilConv(C_in, C_out, kernel, 1, padding, 1, affine, activation),
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


__all__ = [
    "DARTS_PRIMITIVES",
    "DilConv",
    "FactorizedReduce",
    "Identity",
    "ReLUConvBN",
    "SepConv",
    "Zero",
    "build_op",
    "check_op_names",
    "op_names",
    "register_op",
    "shift_one_pixel",
]
