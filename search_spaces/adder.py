"""AdderNet convolution: output = negative L1 distance between filter and input patch.

AdderNet (Chen et al., "AdderNet: Do We Really Need Multiplications in Deep Learning?",
CVPR 2020, arXiv:1912.13200) replaces the multiply-accumulate of a convolution by an
absolute difference: with ``X_col = unfold(X)`` (patches as columns, ``k`` runs over
``C_in/groups * kh * kw``),

    Y[n, t, p] = - sum_k | X_col[n, k, p] - F[t, k] |.

Multiplication-free layers are attractive for hardware (adders are cheaper than
multipliers in area and energy), which is why a hardware-aware search space wants them.
The exact derivatives of ``-|X - F|`` are signs, which train badly, so the paper uses its
own backward rules, implemented by `AdderConv2dFunction`:

* filter gradient: the full-precision difference ``dY/dF = X - F`` (not its sign);
* input gradient: the difference clipped by HardTanh, ``dY/dX = clamp(F - X, -1, 1)``;
* adaptive per-layer learning-rate scaling of the filter gradient, applied once inside
  the layer's backward: ``grad_F <- eta * sqrt(numel(F)) * grad_F / ||grad_F||_2``.

Neither gradient is the true gradient of the forward; they are a deliberate rule.
The layer has no bias and its outputs are all <= 0 with a large magnitude, so it is meant
to be followed by a BatchNorm (not included here). Filters start from a standard normal.

Memory: the naive form broadcasts ``X_col[:, None] - F[None, :, :, None]``, an
``(N, C_out, K, L)`` tensor that is ``C_out`` times larger than ``unfold(X)``, itself
``kh*kw`` times larger than ``X``. This implementation never builds either whole. The
output positions ``L`` are processed in chunks of `chunk_size` positions, chosen from
``memory_budget_bytes`` (by default the larger of the input and output tensors' bytes);
each chunk's patches are gathered straight from the padded input
with a precomputed index (no full unfold). The forward uses ``torch.cdist(p=1)``, which
computes the distances without the broadcast tensor. The backward saves only ``X`` and
``F``; the filter gradient ``sum_{n,p} g (X_col - F) = conv2d_weight(X, g) - F * sum g``
is a convolution weight gradient plus a cheap term (no chunking needed), and only the
clipped input gradient, which has no matmul form, builds the broadcast tensor, chunk by
chunk, and scatters it back with ``index_add_`` (col2im).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F
from torch.nn.grad import conv2d_weight
from torch.nn.modules.utils import _pair

from search_spaces.layer_spec import in_counting_pass

__all__ = ["AdderConv2d", "AdderConv2dFunction", "chunk_size", "bytes_per_position",
           "auto_budget", "DEFAULT_MEMORY_BUDGET_BYTES", "DEFAULT_ETA"]

#: A fixed budget for large layers (the module's default is the automatic budget).
DEFAULT_MEMORY_BUDGET_BYTES = 64 * 2**20
#: The authors' gradient scale (their code divides the normalised gradient by 5).
DEFAULT_ETA = 0.2


def bytes_per_position(batch: int, in_channels: int, out_channels: int, kernel_elems: int,
                       groups: int, element_size: int) -> int:
    """Bytes of chunk-proportional temporaries per output position (the larger of forward
    and backward): the ``(N, C_out, K/groups)`` broadcast of the input gradient, the
    gathered patches and their gradient ``(N, C_in*kh*kw)`` each, and the output/upstream
    gradient slice ``(N, C_out)``."""
    k_group = in_channels // groups * kernel_elems
    elems = batch * (out_channels * k_group + 2 * in_channels * kernel_elems + out_channels)
    return elems * element_size


#: The automatic budget never goes below this: a small layer (a supernet edge at 8x8)
#: would otherwise run in a dozen chunks of a few positions, and the per-chunk overhead
#: made a search step 2-3x slower; 4 MiB is nothing beside the process itself.
MIN_AUTO_BUDGET_BYTES = 4 * 2**20


def auto_budget(batch: int, in_channels: int, in_pixels: int, out_channels: int,
                positions: int, element_size: int) -> int:
    """The automatic budget (``memory_budget_bytes=None``): the larger of the layer's
    input and output tensors in bytes, so the temporaries stay the size of tensors a
    convolution holds anyway (a fixed 64 MiB is many times a small layer's activations),
    and at least `MIN_AUTO_BUDGET_BYTES`."""
    tensors = batch * max(in_channels * in_pixels, out_channels * positions) * element_size
    return max(tensors, MIN_AUTO_BUDGET_BYTES)


def chunk_size(batch: int, in_channels: int, out_channels: int, kernel_elems: int,
               groups: int, positions: int, element_size: int, budget_bytes: int,
               strict: bool = True) -> int:
    """Largest number of output positions per chunk whose temporaries fit the budget
    (``chunk * bytes_per_position(...) <= budget_bytes``), capped at ``positions``.
    When not even one position fits: ValueError if ``strict``, else one position."""
    per = bytes_per_position(batch, in_channels, out_channels, kernel_elems, groups,
                             element_size)
    if per > budget_bytes and strict:
        raise ValueError(f"memory_budget_bytes={budget_bytes} cannot hold one output "
                         f"position ({per} bytes needed)")
    return max(1, min(positions, budget_bytes // per))


def _out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _patch_index(wp: int, kh: int, kw: int, stride: tuple[int, int],
                 dilation: tuple[int, int], h_out: int, w_out: int,
                 device: torch.device) -> torch.Tensor:
    """``(kh*kw, L)`` flat indices into the padded ``(Hp*Wp)`` plane: the unfold order."""
    ki = torch.arange(kh, device=device) * dilation[0]
    kj = torch.arange(kw, device=device) * dilation[1]
    oi = torch.arange(h_out, device=device) * stride[0]
    oj = torch.arange(w_out, device=device) * stride[1]
    rows = (ki[:, None] + oi[None, :])  # (kh, h_out)
    cols = (kj[:, None] + oj[None, :])  # (kw, w_out)
    flat = rows[:, None, :, None] * wp + cols[None, :, None, :]  # (kh, kw, h_out, w_out)
    return flat.reshape(kh * kw, h_out * w_out)


def _chunk(x: torch.Tensor, c_out: int, kk: int, groups: int, n_pos: int,
           budget_bytes: int | None) -> int:
    n, c_in, h, w = x.shape
    es = x.element_size()
    if budget_bytes is None:
        budget = auto_budget(n, c_in, h * w, c_out, n_pos, es)
        return chunk_size(n, c_in, c_out, kk, groups, n_pos, es, budget, strict=False)
    return chunk_size(n, c_in, c_out, kk, groups, n_pos, es, budget_bytes)


class AdderConv2dFunction(torch.autograd.Function):
    """``Y = -||X_col - F||_1`` with AdderNet's backward rules (see the module docstring).

    Arguments of `apply`: x (N, C_in, H, W), weight (C_out, C_in/groups, kh, kw), stride,
    padding, dilation (int pairs), groups, eta (float or None), budget_bytes, eta_blocks
    (the gradient scale applies to each of that many equal blocks of output channels)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                eta: float | None, budget_bytes: int | None,
                eta_blocks: int = 1) -> torch.Tensor:
        n, c_in, h, w = x.shape
        c_out, c_g, kh, kw = weight.shape
        h_out = _out_size(h, kh, stride[0], padding[0], dilation[0])
        w_out = _out_size(w, kw, stride[1], padding[1], dilation[1])
        if h_out < 1 or w_out < 1:
            raise ValueError(f"input {h}x{w} too small for kernel {kh}x{kw} here")
        n_pos = h_out * w_out
        kk = kh * kw
        chunk = _chunk(x, c_out, kk, groups, n_pos, budget_bytes)
        xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
        hp, wp = xp.shape[-2:]
        xflat = xp.reshape(n, c_in, hp * wp)
        idx = _patch_index(wp, kh, kw, stride, dilation, h_out, w_out, x.device)
        w_g = weight.reshape(groups, c_out // groups, c_g * kk)
        out = x.new_empty(n, groups, c_out // groups, n_pos)
        for p0 in range(0, n_pos, chunk):
            p1 = min(n_pos, p0 + chunk)
            lc = p1 - p0
            # (N, C_in, Lc, kk) -> (g, N*Lc, K_g): the rows cdist compares with the filters
            cols = xflat[:, :, idx[:, p0:p1].t()]
            cols = cols.reshape(n, groups, c_g, lc, kk).permute(1, 0, 3, 2, 4)
            cols = cols.reshape(groups, n * lc, c_g * kk)
            dist = torch.cdist(cols, w_g, p=1)  # (g, N*Lc, C_out/g)
            out[..., p0:p1] = dist.reshape(groups, n, lc, c_out // groups).permute(1, 0, 3, 2)
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups, eta, budget_bytes, h_out, w_out,
                    eta_blocks)
        return out.neg_().reshape(n, c_out, h_out, w_out)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, eta, budget_bytes, h_out, w_out, blocks = ctx.conf
        n, c_in, h, w = x.shape
        c_out, c_g, kh, kw = weight.shape
        kk = kh * kw
        n_pos = h_out * w_out
        g = grad_out.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            # sum_{n,p} g (X_col - F) = (weight gradient of a convolution) - F * sum g
            grad_w = conv2d_weight(x, weight.shape, g, stride, padding, dilation, groups)
            grad_w -= weight * g.sum(dim=(0, 2, 3)).reshape(c_out, 1, 1, 1)
            if eta is not None:  # per block: each block is one layer's filters
                per = grad_w.view(blocks, -1)
                norm = torch.linalg.vector_norm(per, dim=1, keepdim=True)
                per.mul_(torch.where(norm > 0, eta * math.sqrt(per.shape[1]) / norm,
                                     torch.ones_like(norm)))
        if ctx.needs_input_grad[0]:
            chunk = _chunk(x, c_out, kk, groups, n_pos, budget_bytes)
            hp, wp = h + 2 * padding[0], w + 2 * padding[1]
            xflat = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
            xflat = xflat.reshape(n, c_in, hp * wp)
            idx = _patch_index(wp, kh, kw, stride, dilation, h_out, w_out, x.device)
            grad_pad = x.new_zeros(n, c_in, hp * wp)
            w_g = weight.reshape(1, groups, c_out // groups, c_g * kk, 1)
            g_flat = g.reshape(n, groups, c_out // groups, 1, n_pos)
            # Buffers reused by every chunk: allocating a fresh large tensor per chunk
            # costs more in page faults than the arithmetic (measured ~6x on the sub).
            diff_buf = x.new_empty(n * c_out * c_g * kk * chunk)
            gcols_buf = x.new_empty(n * c_in * kk * chunk)
            for p0 in range(0, n_pos, chunk):
                p1 = min(n_pos, p0 + chunk)
                lc = p1 - p0
                ic = idx[:, p0:p1]
                cols = xflat[:, :, ic].reshape(n, groups, 1, c_g * kk, lc)
                # (N, g, C_out/g, K_g, Lc): the one large temporary, HT(F - X) * g
                diff = diff_buf[:n * c_out * c_g * kk * lc].view(
                    n, groups, c_out // groups, c_g * kk, lc)
                torch.sub(w_g, cols, out=diff)
                diff.clamp_(-1.0, 1.0).mul_(g_flat[..., p0:p1])
                gcols = gcols_buf[:n * c_in * kk * lc].view(n, groups, c_g * kk, lc)
                torch.sum(diff, dim=2, out=gcols)
                grad_pad.index_add_(2, ic.reshape(-1), gcols.view(n, c_in, kk * lc))
            grad_x = grad_pad.reshape(n, c_in, hp, wp)
            grad_x = grad_x[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + w]
        return grad_x, grad_w, None, None, None, None, None, None, None


class AdderConv2d(nn.Module):
    """A 2-D AdderNet layer (no bias; follow it with BatchNorm2d).

    ``eta`` is the adaptive gradient scale of the filters (``None`` disables it), applied
    to each of ``eta_blocks`` equal blocks of output channels on its own (a supernet
    runs n edges' layers as one grouped layer; each edge's filters are still one layer);
    ``memory_budget_bytes`` bounds the chunk-proportional temporaries of forward and
    backward (see `chunk_size`); ``None`` (default) sizes it per call to the larger of
    the input and output tensors (`auto_budget`, at least one output position).
    `DEFAULT_MEMORY_BUDGET_BYTES` (64 MiB) is a reasonable explicit value for big layers.
    ``groups`` divides both channel counts, as in
    ``nn.Conv2d`` (``groups=in_channels`` is depthwise)."""

    #: ONNX has no operator for -sum |x - w| (`nas retrain` says so instead of exporting)
    onnx_exportable = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1,
                 eta: float | None = DEFAULT_ETA,
                 memory_budget_bytes: int | None = None, eta_blocks: int = 1) -> None:
        super().__init__()
        ks, st, pd, dl = _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation)
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channel counts must be >= 1, got {in_channels}, {out_channels}")
        if min(ks) < 1 or min(st) < 1 or min(dl) < 1:
            raise ValueError(f"kernel_size, stride, dilation must be >= 1, got {ks}, {st}, {dl}")
        if min(pd) < 0:
            raise ValueError(f"padding must be >= 0, got {pd}")
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        if eta is not None and not eta > 0:
            raise ValueError(f"eta must be > 0 or None, got {eta}")
        if eta_blocks < 1 or out_channels % eta_blocks:
            raise ValueError(f"eta_blocks={eta_blocks} must divide out_channels="
                             f"{out_channels}")
        if memory_budget_bytes is not None and memory_budget_bytes < 1:
            raise ValueError(f"memory_budget_bytes must be >= 1, got {memory_budget_bytes}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size: tuple[int, int] = (int(ks[0]), int(ks[1]))
        self.stride: tuple[int, int] = (int(st[0]), int(st[1]))
        self.padding: tuple[int, int] = (int(pd[0]), int(pd[1]))
        self.dilation: tuple[int, int] = (int(dl[0]), int(dl[1]))
        self.groups, self.eta, self.memory_budget_bytes = groups, eta, memory_budget_bytes
        self.eta_blocks = eta_blocks
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups,
                                               *self.kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, 0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (N, {self.in_channels}, H, W) input, got "
                             f"{tuple(x.shape)}")
        if in_counting_pass():  # only the shape is wanted (`layer_spec.counting_pass`)
            h, w = x.shape[-2:]
            sizes = [_out_size(n, k, s, p, d) for n, k, s, p, d in zip(
                (h, w), self.kernel_size, self.stride, self.padding, self.dilation,
                strict=True)]
            return x.new_zeros(x.shape[0], self.out_channels, *sizes)
        out: torch.Tensor = AdderConv2dFunction.apply(
            x, self.weight, self.stride, self.padding, self.dilation, self.groups, self.eta,
            self.memory_budget_bytes, self.eta_blocks)
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, eta={self.eta}, "
                f"memory_budget_bytes={self.memory_budget_bytes}")
