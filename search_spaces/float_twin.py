"""The float twin of a low-bit network: the same network with every DSQ / IR-Net
convolution an ordinary `nn.Conv2d` of the same shape.

A low-bit network's cost only means something beside the network it replaces, and the
honest comparison keeps everything else (BN, pooling, the binary block's shortcut and
Hardtanh) identical: the twin differs in the precision of its convolutions only. Used by
the low-bit cost benchmark and the tests that check the profiles' low-bit speed-ups.
"""

from __future__ import annotations

from torch import nn

from search_spaces.dsq import DSQConv2d
from search_spaces.irnet import IRConv2d

#: The low-bit convolutions a twin replaces.
LOW_BIT_CONVS: tuple[type[nn.Conv2d], ...] = (DSQConv2d, IRConv2d)


def _pair(size: tuple[int, ...]) -> tuple[int, int]:
    return size[0], size[1]


def _plain_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A float `nn.Conv2d` with `conv`'s shape."""
    pair = _pair
    padding = conv.padding if isinstance(conv.padding, str) else pair(conv.padding)
    return nn.Conv2d(conv.in_channels, conv.out_channels, pair(conv.kernel_size),
                     pair(conv.stride), padding, pair(conv.dilation), conv.groups,
                     bias=conv.bias is not None)


def float_twin(net: nn.Module) -> nn.Module:
    """`net` with every low-bit convolution replaced, in place, by a fresh float
    `nn.Conv2d` of the same shape (weights are not copied: the twin is for counting and
    costing); returns `net`."""
    for name, child in net.named_children():
        if isinstance(child, LOW_BIT_CONVS):
            setattr(net, name, _plain_conv(child))
        else:
            float_twin(child)
    return net


__all__ = ["LOW_BIT_CONVS", "float_twin"]
