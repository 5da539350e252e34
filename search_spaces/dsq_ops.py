"""DSQ-quantized candidate operations: the DARTS convolutions at 2, 4 and 8 bits.

For b in (2, 4, 8), ``dsq{b}_sep_conv_3x3``, ``dsq{b}_sep_conv_5x5``,
``dsq{b}_dil_conv_3x3`` and ``dsq{b}_dil_conv_5x5`` mirror `ops.SepConv` / `ops.DilConv`
layer for layer (kernel, padding, dilation, stride, groups, channels, BN), with every
`nn.Conv2d` a `dsq.DSQConv2d` whose weights and input activations are quantized to b bits
(METHODS.md section 5). A quantized op and its float counterpart therefore differ only
in precision, and `quantized_form` turns a float genotype's op names into their b-bit
form.

The ops are registered once, on import, in the shared namespace: family "conv", heavy,
no batched supernet form (the supernet runs one module per edge, `PerEdge`), with
`build_activated`, so a pair such as ``dsq4_sep_conv_3x3/silu`` works. Their layer spec
is `dsq.DSQ_LAYER` (a conv's MACs at the module's bit widths). `DSQ_SETS` lists the four
ops of each bit width for whoever registers named op sets.

Quantizer parameters (l, u, alpha of every DSQConv2d) belong on the weight side of a
bilevel split, in a parameter group without weight decay: `dsq.quantizer_parameters`.
"""

from __future__ import annotations

from typing import Protocol

from torch import nn

from search_spaces.activations import DEFAULT_ACTIVATION, PAIR_SEPARATOR, activation_module
from search_spaces.dsq import DSQ_LAYER, DSQConv2d
from search_spaces.op_spec import OpSpec, register_op_spec

#: The bit widths that have registered ops.
DSQ_BITS: tuple[int, ...] = (2, 4, 8)

# ------------------------------------------------------------------------ modules


class DSQDilConv(nn.Sequential):
    """ReLU (or `activation`) -> depthwise k x k DSQ conv (dilated) -> pointwise 1x1 DSQ
    conv -> BN: `ops.DilConv` with `bits`-bit DSQ convolutions."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel: int,
        stride: int,
        padding: int,
        dilation: int,
        bits: int,
        affine: bool = True,
        activation: str = DEFAULT_ACTIVATION,
    ) -> None:
        super().__init__(
            activation_module(activation),
            DSQConv2d(C_in, C_in, kernel, stride, padding, dilation=dilation, groups=C_in,
                      bias=False, bits=bits),
            DSQConv2d(C_in, C_out, 1, bias=False, bits=bits),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DSQSepConv(nn.Sequential):
    """Two `DSQDilConv` blocks without dilation; only the first carries the stride, as in
    `ops.SepConv`. `activation` replaces both ReLUs."""

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, bits: int,
        affine: bool = True, activation: str = DEFAULT_ACTIVATION,
    ) -> None:
        super().__init__(
            DSQDilConv(C_in, C_in, kernel, stride, padding, 1, bits, affine, activation),
            DSQDilConv(C_in, C_out, kernel, 1, padding, 1, bits, affine, activation),
        )


# ------------------------------------------------------------------------ builders


class _Builder(Protocol):
    """Both `OpBuilder` and `ActivatedBuilder`: the activation defaults to ReLU."""

    def __call__(self, C: int, stride: int, affine: bool, act: str = ...) -> nn.Module: ...


def _sep(kernel: int, padding: int, bits: int) -> _Builder:
    def build(C: int, stride: int, affine: bool, act: str = DEFAULT_ACTIVATION) -> nn.Module:
        return DSQSepConv(C, C, kernel, stride, padding, bits, affine, activation=act)
    return build


def _dil(kernel: int, padding: int, dilation: int, bits: int) -> _Builder:
    def build(C: int, stride: int, affine: bool, act: str = DEFAULT_ACTIVATION) -> nn.Module:
        return DSQDilConv(C, C, kernel, stride, padding, dilation, bits, affine,
                          activation=act)
    return build


def _builders(bits: int) -> dict[str, _Builder]:
    """DARTS conv name -> builder of its `bits`-bit mirror (kernel / padding / dilation
    of `darts_ops`)."""
    return {
        "sep_conv_3x3": _sep(3, 1, bits),
        "sep_conv_5x5": _sep(5, 2, bits),
        "dil_conv_3x3": _dil(3, 2, 2, bits),
        "dil_conv_5x5": _dil(5, 4, 2, bits),
    }


def dsq_name(base: str, bits: int) -> str:
    """``dsq{bits}_{base}``."""
    return f"dsq{bits}_{base}"


def _spec(name: str, build: _Builder) -> OpSpec:
    return OpSpec(name, build, batched=None, family="conv", heavy=True,
                  layers={DSQConv2d: DSQ_LAYER}, build_activated=build)


DSQ_OP_SPECS: tuple[OpSpec, ...] = tuple(
    _spec(dsq_name(base, b), build) for b in DSQ_BITS for base, build in _builders(b).items()
)

for _op in DSQ_OP_SPECS:
    register_op_spec(_op)

# --------------------------------------------------------------- float -> quantized

#: The DARTS convolutions that have quantized mirrors.
QUANTIZABLE: tuple[str, ...] = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
                                "dil_conv_5x5")

#: "dsq2" / "dsq4" / "dsq8" -> the four ops of that bit width.
DSQ_SETS: dict[str, tuple[str, ...]] = {
    f"dsq{b}": tuple(dsq_name(base, b) for base in QUANTIZABLE) for b in DSQ_BITS
}


def quantized_form(name: str, bits: int) -> str:
    """The `bits`-bit DSQ mirror of op `name`, keeping a pair's activation
    ("sep_conv_3x3/silu", 4 -> "dsq4_sep_conv_3x3/silu"); any other name (pooling, skip,
    an already quantized op) unchanged. `bits` must be one of `DSQ_BITS`."""
    if bits not in DSQ_BITS:
        raise ValueError(f"no DSQ ops for {bits} bits; registered widths: "
                         f"{', '.join(map(str, DSQ_BITS))}")
    base, sep, act = name.partition(PAIR_SEPARATOR)
    if base not in QUANTIZABLE:
        return name
    return f"{dsq_name(base, bits)}{sep}{act}"


__all__ = [
    "DSQ_BITS",
    "DSQ_OP_SPECS",
    "DSQ_SETS",
    "QUANTIZABLE",
    "DSQDilConv",
    "DSQSepConv",
    "dsq_name",
    "quantized_form",
]
