"""DSQ: the Differentiable Soft Quantizer (Gong et al., ICCV 2019, arXiv:1908.05033).

A b-bit quantizer with a learned clipping range [l, u] and a learned "characteristic
variable" alpha (METHODS.md section 5). With n = 2^b - 1 intervals:

    x_c   = clip(x, l, u),        Delta = (u - l) / n
    i     = floor((x_c - l) / Delta), kept in [0, n - 1] (x_c = u is in the last interval)
    m_i   = l + (i + 1/2) Delta                       (midpoint of interval i)
    phi   = s * tanh(k (x_c - m_i))                   (phi = -1 / +1 at the interval edges)
    k     = ln(2/alpha - 1) / Delta,   s = 1 / (1 - alpha)
    Q_S   = l + Delta * (i + (phi + 1) / 2)           (soft quantizer)
    Q_H   = l + Delta * (i + (sgn(phi) + 1) / 2)      (hard quantizer: on the grid l + j Delta)

alpha = 1 - tanh(k Delta / 2) measures how far the soft quantizer is from the hard one:
alpha -> 0 makes tanh a step. Writing c = k Delta = ln(2/alpha - 1), phi depends on alpha
and on t = (x_c - l) / Delta only: phi = s tanh(c (t - i - 1/2)).

**Forward / backward.** The forward value is the hard quantizer Q_H (sgn(0) is taken as
+1, so a value exactly on a midpoint rounds up and every output lies on the grid). The
backward is the derivative of the soft quantizer Q_S with respect to x, l, u and alpha,
with the interval index i held piecewise constant. It is implemented as a custom autograd
Function (`DSQFunction`), not as ``hard + (soft - soft.detach())``: the closed-form
backward saves only x and the three scalars instead of every intermediate of the soft
expression. `soft_quantize` is the soft quantizer written with ordinary tensor ops; its
autograd gradient is what `DSQFunction`'s backward reproduces (the tests check both
against finite differences). With D = s c (1 - T^2) / 2, T = tanh(c (t - i - 1/2)) and
A = i + 1/2 + s T / 2, inside [l, u]:

    dQ/dx     = D
    dQ/dl     = 1 - A / n + D (t / n - 1)
    dQ/du     = A / n - D t / n
    dQ/dalpha = (Delta / 2) (s^2 T - s (1 - T^2) (t - i - 1/2) * 2 / (alpha (2 - alpha)))

(dQ/dx + dQ/dl + dQ/du = 1: moving x, l and u together shifts the output.) Below l,
Q = l, so only dQ/dl = 1; above u, Q = u, so only dQ/du = 1; dQ/dx = 0 outside [l, u].

**alpha stays valid by parametrisation, not clamping.** alpha must lie in the open
interval (0, 1) (alpha >= 1 gives k <= 0 and s = inf; the unofficial public code's clamp
at 2 is invalid) and should stay <= 0.5. The learnable parameter is `alpha_raw`, and

    alpha = alpha_min + (alpha_max - alpha_min) * sigmoid(alpha_raw),

alpha_max = 0.5, alpha_min = 1e-3, initialised so that alpha = 0.2. A sigmoid keeps every
value of the raw parameter valid, and the gradient keeps flowing (no clamp that silently
stops it). The small floor alpha_min is there because a float32 sigmoid is exactly 0
below about -104: without it, an optimizer that drives alpha_raw far negative would
reach alpha = 0, k = inf and NaNs. At alpha = 1e-3 the soft quantizer is already a step
for practical purposes (c = ln(1999) ~ 7.6). Like any bounded smooth map, the sigmoid
saturates: once |alpha_raw| is far beyond ~20 (only absurd steps get there; the gradient
w.r.t. alpha_raw shrinks as alpha nears either end), alpha's gradient is 0 and it stays
at that end. The quantizer's parameter group wants a modest learning rate.

**l < u by ordering.** `lower` and `upper` are free parameters; the quantizer uses
l = min(lower, upper) and u = max(lower, upper), and Delta uses a width of at least
`min_width` (1e-8), so an optimizer step that crosses them never breaks the quantizer
(the gradient then reaches whichever parameter is currently the lower one).

**Initialisation of l and u.** Given `lower` and `upper` at construction, they are used
as they are. Otherwise they are set from the first tensor the quantizer sees outside a
counting pass (`layer_spec.counting_pass`, whose zeros carry no range), in any mode:
its min and max, or with `init_quantile=q < 1` its (1 - q) and q quantiles (on at most
2^20 evenly strided elements). A first tensor with (almost) no spread, e.g. all zeros,
gives [v - 1, v + 1] around its value. The `initialized` buffer is part of the state
dict, so a loaded checkpoint is not re-initialised.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.common_types import _size_2_t

from search_spaces.layer_spec import (
    LayerSpec,
    conv_kind,
    conv_macs,
    in_counting_pass,
    register_layer,
)

#: alpha's valid range by parametrisation (module docstring).
ALPHA_MAX = 0.5
ALPHA_MIN = 1e-3
ALPHA_INIT = 0.2
#: Smallest clipping width Delta is computed from.
MIN_WIDTH = 1e-8
#: Largest number of elements a quantile initialisation reads.
_QUANTILE_SAMPLE = 2**20


# --------------------------------------------------------------------- math pieces


def _constants(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c, s) = (k * Delta, s) = (ln(2/alpha - 1), 1 / (1 - alpha))."""
    return torch.log(2.0 / alpha - 1.0), 1.0 / (1.0 - alpha)


def soft_quantize(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                  alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """The soft quantizer Q_S with ordinary tensor ops (i detached); autograd gives the
    gradients `DSQFunction` computes in closed form. `lower` < `upper` is assumed."""
    levels = 2**bits - 1
    delta = (upper - lower) / levels
    x_c = torch.minimum(torch.maximum(x, lower), upper)
    t = (x_c - lower) / delta
    i = torch.floor(t).clamp(0.0, float(levels - 1)).detach()
    c, s = _constants(alpha)
    k = c / delta
    m = lower + (i + 0.5) * delta
    phi = s * torch.tanh(k * (x_c - m))
    return lower + delta * (i + (phi + 1.0) / 2.0)


def hard_quantize(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                  alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """The hard quantizer Q_H: the grid value l + j Delta nearest to clip(x, l, u) (a
    midpoint rounds up). alpha does not change it (sgn(phi) is the sign of x_c - m_i);
    it is taken for symmetry with `soft_quantize`.

    j = floor(t + 1/2) with t = clip((x - l) / Delta, 0, n) is the interval index i plus
    one from the midpoint on (t = n gives j = n), written as in-place passes over one
    buffer: this runs on every activation of every DSQ layer."""
    levels = 2**bits - 1
    delta = (upper - lower) / levels
    j = (x - lower).div_(delta).clamp_(0.0, float(levels)).add_(0.5).floor_()
    return j.mul_(delta).add_(lower)


class DSQFunction(torch.autograd.Function):
    """Forward: `hard_quantize`. Backward: the closed-form derivatives of
    `soft_quantize` with respect to x, lower, upper and alpha (module docstring).

    `lower` < `upper` must hold (the module orders them); the three are 0-dim tensors.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                alpha: torch.Tensor, bits: int) -> torch.Tensor:
        ctx.save_for_backward(x, lower, upper, alpha)
        ctx.bits = bits
        return hard_quantize(x, lower.to(x.dtype), upper.to(x.dtype), alpha, bits)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        # Fewer full-size passes than the formulas in the module docstring spell out:
        # inside [l, u], dQ/dl = 1 - dQ/du - dQ/dx, so grad_l = sum(g) - grad_u -
        # sum(grad_x) holds everywhere (below l: 1 - 0 - 0; above u: 1 - 1 - 0) and no
        # per-element dQ/dl is formed.
        (g,) = grads
        x, lower, upper, alpha = ctx.saved_tensors
        levels = 2**ctx.bits - 1
        dt = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        xf, gf = x.to(dt), g.to(dt)
        l_, u_, a_ = lower.to(dt), upper.to(dt), alpha.to(dt)
        delta = (u_ - l_) / levels
        c, s = _constants(a_)
        t = (xf - l_) / delta
        above = t > float(levels)
        outside = (t < 0.0).logical_or_(above)
        g_in = gf.masked_fill(outside, 0.0)  # the upstream gradient where Q depends on x
        t.clamp_(0.0, float(levels))
        i = torch.floor(t).clamp_(max=float(levels - 1))
        r = t - i
        r.sub_(0.5)  # position in the interval, -1/2 .. 1/2
        tanh = torch.tanh(c * r)
        d = (tanh * tanh).neg_().add_(1.0).mul_(s * c / 2.0)  # dQ/dx inside [l, u]

        grad_x = grad_l = grad_u = grad_a = None
        needs = ctx.needs_input_grad
        gx = g_in * d
        if needs[0]:
            grad_x = gx.to(x.dtype)
        if needs[1] or needs[2]:
            # inside: dQ/du = (i + 1/2 + s T / 2 - d t) / n; above u: 1; below l: 0
            du = i.add_(0.5).add_(tanh * (s / 2.0)).sub_(d * t).div_(levels)
            g_u = (g_in * du).sum() + gf.masked_fill(~above, 0.0).sum()
            if needs[2]:
                grad_u = g_u.reshape(upper.shape).to(upper.dtype)
            if needs[1]:
                grad_l = (gf.sum() - g_u - gx.sum()).reshape(lower.shape).to(lower.dtype)
        if needs[3]:
            # dQ/dalpha = (Delta/2) (s^2 T - s (1 - T^2) r * 2 / (alpha (2 - alpha)));
            # s (1 - T^2) = d * 2 / c
            da = tanh.mul_(s * s).sub_(d.mul_(r).mul_(4.0 / (c * a_ * (2.0 - a_))))
            grad_a = (g_in * da).sum().mul(delta / 2.0)
            grad_a = grad_a.reshape(alpha.shape).to(alpha.dtype)
        return grad_x, grad_l, grad_u, grad_a, None


# --------------------------------------------------------------------------- module


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class DSQQuantizer(nn.Module):
    """A b-bit DSQ quantizer with its own learnable `lower`, `upper` and `alpha_raw`
    (one value each per quantizer, i.e. per layer and per weight / activation side).

    The output is on the 2^b-point grid of the clipping range; gradients are those of the
    soft quantizer (`DSQFunction`). See the module docstring for alpha's parametrisation,
    the ordering of lower / upper and their initialisation.
    """

    initialized: torch.Tensor
    #: clipping values and alpha are not weights: no weight decay on them
    #: (`nas.layer_state.weight_decay_groups`)
    no_weight_decay = True

    def __init__(self, bits: int, lower: float | None = None, upper: float | None = None,
                 init_quantile: float = 1.0, alpha_init: float = ALPHA_INIT,
                 alpha_min: float = ALPHA_MIN, alpha_max: float = ALPHA_MAX,
                 min_width: float = MIN_WIDTH) -> None:
        super().__init__()
        if not isinstance(bits, int) or bits < 1:
            raise ValueError(f"bits must be a positive integer, got {bits!r}")
        if not 0.0 < alpha_min < alpha_max < 1.0:
            raise ValueError(f"need 0 < alpha_min < alpha_max < 1, got {alpha_min}, "
                             f"{alpha_max}")
        if not alpha_min < alpha_init < alpha_max:
            raise ValueError(f"alpha_init must lie in ({alpha_min}, {alpha_max}), "
                             f"got {alpha_init}")
        if not 0.5 < init_quantile <= 1.0:
            raise ValueError(f"init_quantile must lie in (0.5, 1], got {init_quantile}")
        if (lower is None) != (upper is None):
            raise ValueError("give both lower and upper, or neither")
        if lower is not None and upper is not None and not lower < upper:
            raise ValueError(f"lower must be below upper, got {lower}, {upper}")
        self.bits = bits
        self.init_quantile = init_quantile
        self.alpha_min, self.alpha_max = alpha_min, alpha_max
        self.min_width = min_width
        given = lower is not None and upper is not None
        lo, hi = -1.0, 1.0
        if lower is not None and upper is not None:
            lo, hi = float(lower), float(upper)
        self.lower = nn.Parameter(torch.tensor(lo))
        self.upper = nn.Parameter(torch.tensor(hi))
        p = (alpha_init - alpha_min) / (alpha_max - alpha_min)
        self.alpha_raw = nn.Parameter(torch.tensor(_logit(p)))
        self.register_buffer("initialized", torch.tensor(given))

    @property
    def levels(self) -> int:
        """n = 2^b - 1 intervals."""
        return 2**self.bits - 1

    @property
    def alpha(self) -> torch.Tensor:
        """alpha_min + (alpha_max - alpha_min) * sigmoid(alpha_raw): always in
        [alpha_min, alpha_max], inside (0, 1)."""
        return self.alpha_min + (self.alpha_max - self.alpha_min) * torch.sigmoid(
            self.alpha_raw)

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(l, u) as the quantizer uses them: ordered, at least `min_width` apart."""
        l_ = torch.minimum(self.lower, self.upper)
        u_ = torch.maximum(torch.maximum(self.lower, self.upper), l_ + self.min_width)
        return l_, u_

    @torch.no_grad()
    def init_range(self, x: torch.Tensor) -> None:
        """Set lower / upper from `x` (min / max or quantiles) and mark initialised."""
        flat = x.detach().reshape(-1).float()
        if flat.numel() == 0:
            return
        if self.init_quantile >= 1.0:
            lo, hi = flat.min(), flat.max()
        else:
            step = max(1, flat.numel() // _QUANTILE_SAMPLE)
            sample = flat[::step]
            q = torch.tensor([1.0 - self.init_quantile, self.init_quantile],
                             device=sample.device)
            lo, hi = torch.quantile(sample, q)
        lo_f, hi_f = float(lo), float(hi)
        if not hi_f - lo_f > 1e-6 * max(1.0, abs(lo_f), abs(hi_f)):
            lo_f, hi_f = lo_f - 1.0, hi_f + 1.0
        self.lower.fill_(lo_f)
        self.upper.fill_(hi_f)
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized) and not in_counting_pass():
            self.init_range(x)
        l_, u_ = self.clip_range()
        out: torch.Tensor = DSQFunction.apply(x, l_, u_, self.alpha, self.bits)
        return out

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class DSQConv2d(nn.Conv2d):
    """`nn.Conv2d` on DSQ-quantized weights and input activations, both `bits` wide, each
    with its own `DSQQuantizer` (`weight_quantizer`, `act_quantizer`). The bias, if any,
    stays in full precision. `weight_bits` / `act_bits` are what counters read."""

    #: what an ONNX export of a network with this layer holds (`nas retrain` says it)
    onnx_holds = ("DSQ layers fake-quantized: float32 operations whose weights and inputs "
                  "are rounded to the k-bit grid, not an integer graph")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _size_2_t,
        stride: _size_2_t = 1,
        padding: _size_2_t | str = 0,
        dilation: _size_2_t = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        bits: int = 4,
        act_init_quantile: float = 1.0,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=padding, dilation=dilation, groups=groups, bias=bias,
                         padding_mode=padding_mode, device=device, dtype=dtype)
        self.bits = bits
        self.weight_bits = bits
        self.act_bits = bits
        self.weight_quantizer = DSQQuantizer(bits)
        self.act_quantizer = DSQQuantizer(bits, init_quantile=act_init_quantile)
        if device is not None or dtype is not None:
            self.weight_quantizer.to(device=device, dtype=dtype)
            self.act_quantizer.to(device=device, dtype=dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = self.act_quantizer(input)
        w = self.weight_quantizer(self.weight)
        return self._conv_forward(x, w, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}"


def quantizer_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter owned by a `DSQQuantizer` in `model` (lower, upper, alpha_raw),
    each once, in module order: for a parameter group of their own (no weight decay),
    on the weight side of a bilevel split."""
    seen: set[int] = set()
    out: list[nn.Parameter] = []
    for m in model.modules():
        if isinstance(m, DSQQuantizer):
            for p in m.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
    return out


# ------------------------------------------------------------------------- costs


def _weight_bits(module: nn.Module) -> int:
    assert isinstance(module, DSQConv2d)
    return module.weight_bits


def _act_bits(module: nn.Module) -> int:
    assert isinstance(module, DSQConv2d)
    return module.act_bits


#: A conv's MACs and kernel kind at the module's bit widths; low-bit compute costs
#: (`compute_scale`) are left to the simulator's owners.
DSQ_LAYER = LayerSpec(count=conv_macs, kind=conv_kind, weight_bits=_weight_bits,
                      act_bits=_act_bits)
register_layer(DSQ_LAYER, DSQConv2d, replace=False)


__all__ = [
    "ALPHA_INIT",
    "ALPHA_MAX",
    "ALPHA_MIN",
    "DSQ_LAYER",
    "DSQConv2d",
    "DSQFunction",
    "DSQQuantizer",
    "hard_quantize",
    "quantizer_parameters",
    "soft_quantize",
]
