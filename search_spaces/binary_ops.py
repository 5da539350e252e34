"""Binary candidate operations: dense k x k IR-Net convolutions (1-bit weights and
activations, `irnet.IRConv2d`) for a search that trades accuracy for XNOR-popcount
arithmetic (METHODS.md section 5, "Quantized ops as NAS candidates").

`binary_conv_3x3` and `binary_conv_5x5` are one block each (`BinaryConvBlock`)::

    x -> BN -> IRConv2d(C, C, k, stride, padding k//2) -> BN -> (+ shortcut(x)) -> Hardtanh

IRConv2d applies the EDE sign to its input itself, so the first BN is what the sign
sees: never a ReLU (sign(ReLU(x)) collapses to {0, +1}); the block has no ReLU anywhere
and ends in Hardtanh, the Bi-Real / IR-Net choice. The shortcut carries the block's
full-precision input: the identity at stride 1; at stride 2 a 2x2 average pool with
stride 2 (Bi-Real Net's downsampling shortcut; C stays C, so no 1x1 conv is needed and
the shortcut adds no MACs). The pool uses ``ceil_mode=True`` without counting padding,
so an odd input size gives ceil(H/2), the size the stride-2 conv gives, and a partial
window at the border averages only the values it covers.

There is no binarised depthwise convolution (a depthwise kernel has too few taps per
output to survive binarisation); the only binary layer is the dense conv. These ops take
no activation choice (`OpSpec.build_activated` is None), so a pair such as
``binary_conv_3x3/silu`` is refused by the op registry. In the supernet they run one
module per edge (`batched=None`, `supernet_ops.PerEdge`).

Importing this module registers the ops once, in the shared namespace; `BINARY_SET`
names them for an op set. The EDE schedule is per epoch: call `irnet.set_ede` on the
network at the start of each epoch.
"""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.irnet import IRNET_LAYER, IRConv2d
from search_spaces.op_spec import OpSpec, register_op_spec


class BinaryConvBlock(nn.Module):
    """BN -> IRConv2d (EDE sign on its input, Libra-PB weights) -> BN, plus the
    shortcut, then Hardtanh; C channels in and out (see the module docstring)."""

    def __init__(self, C: int, kernel: int, stride: int, affine: bool = True) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be odd and positive, got {kernel}")
        self.bn_in = nn.BatchNorm2d(C, affine=affine)
        self.conv = IRConv2d(C, C, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn_out = nn.BatchNorm2d(C, affine=affine)
        self.shortcut: nn.Module = (
            nn.Identity() if stride == 1
            else nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False)
        )
        self.act = nn.Hardtanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn_out(self.conv(self.bn_in(x))) + self.shortcut(x))


def _binary3(C: int, stride: int, affine: bool) -> nn.Module:
    return BinaryConvBlock(C, 3, stride, affine)


def _binary5(C: int, stride: int, affine: bool) -> nn.Module:
    return BinaryConvBlock(C, 5, stride, affine)


BINARY_OP_SPECS: tuple[OpSpec, ...] = tuple(
    OpSpec(name, build, batched=None, family="conv", heavy=True,
           layers={IRConv2d: IRNET_LAYER})
    for name, build in (("binary_conv_3x3", _binary3), ("binary_conv_5x5", _binary5))
)

for _op in BINARY_OP_SPECS:
    register_op_spec(_op)

#: The binary ops, for an op set (registered elsewhere).
BINARY_SET: tuple[str, ...] = ("binary_conv_3x3", "binary_conv_5x5")

#: A DARTS convolution -> the binary op of its kernel size. There is no binary depthwise
#: convolution, so a separable or dilated conv becomes the dense binary conv with the same
#: k x k kernel (its 1x1 pointwise part folded in); dilation is dropped.
_BINARY_MIRROR = {"sep_conv_3x3": "binary_conv_3x3", "sep_conv_5x5": "binary_conv_5x5",
                  "dil_conv_3x3": "binary_conv_3x3", "dil_conv_5x5": "binary_conv_5x5"}


def binary_form(name: str) -> str:
    """The binary op that stands in for DARTS convolution `name` ("sep_conv_3x3" ->
    "binary_conv_3x3", see `_BINARY_MIRROR`); any other name unchanged. Binary ops take
    no activation, so a pair ("sep_conv_3x3/silu") is refused rather than silently
    losing its activation."""
    if "/" in name and name.partition("/")[0] in _BINARY_MIRROR:
        raise ValueError(f"{name!r}: binary ops take no activation choice")
    return _BINARY_MIRROR.get(name, name)


__all__ = ["BINARY_OP_SPECS", "BINARY_SET", "BinaryConvBlock", "binary_form"]
