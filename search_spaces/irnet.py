"""IR-Net binarisation: Libra-PB weights, EDE sign, and the 1-bit convolution `IRConv2d`.

IR-Net (Qin et al., "Forward and Backward Information Retention for Accurate Binary
Neural Networks", CVPR 2020, arXiv:1909.10788; METHODS.md section 5) binarises weights
and activations to one bit each:

* **Libra-PB** (weights, per output channel): standardise, ``w_hat = (w - mean(w)) /
  std(w)``, inside autograd (the mean and std are *not* detached, so the gradient flows
  through the standardisation), then ``Q_w = sign(w_hat) * 2**n`` with
  ``n = round(log2(mean|w_hat|))``. The power-of-two scale is detached: deployed, it is a
  bit shift of the popcount result, not a learned or differentiated factor. `std` is the
  unbiased (Bessel-corrected) standard deviation, ``torch.std``'s default, as the
  authors' code uses; `round` is ``torch.round`` (ties to even, a measure-zero case).
* **Activations**: ``Q_a = sign(a)``.
* **EDE** (error decay estimator): every sign above runs forward as sign and backward as
  the derivative of ``k * tanh(t * x)``, i.e. ``g * k * t * (1 - tanh(t * x)**2)``
  (`EDESign`). Early in training (small t, k = 1/t) this is the identity straight-through
  estimator; late (t = T_max, k = 1) it is a sharp approximation of sign's derivative.
  As in the authors' 1-bit/1-bit code, the weights' sign uses EDE with the same t and k
  as the activations' sign.

**sign(0) = +1.** ``torch.sign`` maps 0 to 0, a third value that one bit cannot store;
here every non-NaN input becomes exactly +1 or -1 (0 and -0.0 both give +1, the usual
"x >= 0 is bit 1" convention of XNOR-popcount kernels). NaN stays NaN, so a diverged
run stays visible (``torch.sign`` would map NaN to 0 too).

**EDE schedule** (`ede_schedule`, `set_ede`): for epoch i of N,
``t = 10**(log10 T_min + (log10 T_max - log10 T_min) * i / N)`` and ``k = max(1/t, 1)``,
with T_max = 10. The paper's code uses T_min = 0.1 for VGG-Small and for ResNet-20 with
1-bit weights and 32-bit activations, and T_min = 1e-3 for ResNet-20 1w1a.
`DEFAULT_T_MIN` is 1e-3: `IRConv2d` binarises weights *and* activations (1w1a), and at
t = 1e-3, k = 1000 the estimator starts as the plain identity STE (``k * t = 1`` and
``tanh'`` ~ 1 over the post-BN activation range), the gentler start the authors chose
when activations are binarised as well. The current t and k of a layer are buffers, so
they are saved in its ``state_dict`` and a resumed run continues with exactly the values
it stopped with.

**Padding.** `IRConv2d` pads its binarised input with zeros (``padding_mode="zeros"``,
as the authors' code does): border taps see 0, not +-1. A deployment XNOR kernel must
treat borders accordingly (pad with -1 and correct the count, or mask); costs
(`IRNET_LAYER`) are per tap and unaffected.

`IRNET_LAYER` (its `LayerSpec`) counts conv MACs at 1-bit weights x 1-bit activations,
so bit-operations equal MACs (`complexity.count_ops`); the kernel kind is that of the
shape (`layer_spec.conv_kind`). It is registered on import, so an `IRConv2d` is costed
as binary wherever it is used; `binary_ops` names the same object in its op specs.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.common_types import _size_2_t

from search_spaces.layer_spec import LayerSpec, conv_kind, conv_macs, register_layer

#: T_min of the ResNet-20 1w1a setting (binary weights and activations, like `IRConv2d`).
DEFAULT_T_MIN = 1e-3
#: T_max of every published IR-Net setting.
DEFAULT_T_MAX = 10.0


# --------------------------------------------------------------------------- EDE


def binary_sign(x: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1: every value becomes exactly +1 or -1, except NaN, which
    stays NaN."""
    out = torch.ones_like(x).masked_fill_(x < 0, -1.0)
    return out.masked_fill_(torch.isnan(x), math.nan)  # torch.sign would give NaN 0


class EDESign(torch.autograd.Function):
    """Forward `binary_sign(x)`; backward ``g * k * t * (1 - tanh(t * x)**2)``, the
    derivative of ``k * tanh(t * x)`` (IR-Net's error decay estimator).

    Arguments of `apply`: x, t, k (t and k as tensors broadcastable to x, e.g. 0-dim;
    `ede_sign` also takes floats). t and k receive no gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, t, k)
        return binary_sign(x)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, t, k = ctx.saved_tensors
        grad_x = grad_out * (k * t) * (1 - torch.tanh(t * x).square())
        return grad_x, None, None


def ede_sign(x: torch.Tensor, t: float | torch.Tensor, k: float | torch.Tensor
             ) -> torch.Tensor:
    """`EDESign` of x with the EDE parameters t and k (floats or tensors)."""
    t_ = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    k_ = torch.as_tensor(k, dtype=x.dtype, device=x.device)
    out: torch.Tensor = EDESign.apply(x, t_, k_)
    return out


# --------------------------------------------------------------------- schedule


def ede_schedule(epoch: int, epochs: int, t_min: float = DEFAULT_T_MIN,
                 t_max: float = DEFAULT_T_MAX) -> tuple[float, float]:
    """(t, k) for epoch `epoch` (0-based) of `epochs`: t runs log-linearly from t_min at
    epoch 0 to t_max at epoch == epochs, and k = max(1/t, 1).

    A training loop over ``range(epochs)`` never reaches t_max itself, as in the paper's
    code; ``epoch == epochs`` is accepted so the end point can be named."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if not 0 <= epoch <= epochs:
        raise ValueError(f"epoch must be in [0, {epochs}], got {epoch}")
    if not (t_min > 0 and t_max > 0 and math.isfinite(t_min) and math.isfinite(t_max)):
        raise ValueError(f"t_min and t_max must be positive and finite, got {t_min}, {t_max}")
    lo, hi = math.log10(t_min), math.log10(t_max)
    t = 10.0 ** (lo + (hi - lo) * epoch / epochs)
    return t, max(1.0 / t, 1.0)


def set_ede(model: nn.Module, epoch: int, epochs: int, t_min: float = DEFAULT_T_MIN,
            t_max: float = DEFAULT_T_MAX) -> tuple[float, float]:
    """Set t and k of every `IRConv2d` in `model` to `ede_schedule`'s values for `epoch`
    (call once at the start of each epoch); returns them. A model without binary layers
    is left as it is."""
    t, k = ede_schedule(epoch, epochs, t_min, t_max)
    for m in model.modules():
        if isinstance(m, IRConv2d):
            m.set_ede_values(t, k)
    return t, k


# ---------------------------------------------------------------------- Libra-PB


def standardise_weight(weight: torch.Tensor) -> torch.Tensor:
    """Per output channel ``(w - mean(w)) / std(w)``, as a (C_out, fan_in) tensor, inside
    autograd. std is unbiased (biased for a single weight per channel, where the unbiased
    one is undefined); a channel with std 0 (all-zero weights) gives zeros, not NaN,
    and its binary weight is then 0 (`shift_scale` is 2**-inf = 0)."""
    flat = weight.reshape(weight.shape[0], -1)
    centered = flat - flat.mean(dim=1, keepdim=True)
    correction = 1 if flat.shape[1] > 1 else 0
    std = flat.std(dim=1, keepdim=True, correction=correction)
    return centered / std.clamp_min(torch.finfo(flat.dtype).tiny)


def shift_exponent(w_hat: torch.Tensor) -> torch.Tensor:
    """n = round(log2(mean|w_hat|)) per row (output channel) of a standardised (C_out,
    fan_in) weight, as a (C_out, 1) tensor without gradient."""
    with torch.no_grad():
        return torch.round(torch.log2(w_hat.abs().mean(dim=1, keepdim=True)))


def shift_scale(w_hat: torch.Tensor) -> torch.Tensor:
    """The detached power-of-two scale 2**n of `shift_exponent`, (C_out, 1)."""
    return torch.exp2(shift_exponent(w_hat)).detach()


def libra_pb(weight: torch.Tensor, t: float | torch.Tensor = 1.0,
             k: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Libra-PB binary weight, shaped like `weight`: per output channel
    ``EDESign(w_hat) * 2**n`` (see the module docstring); each channel takes exactly the
    two values +-2**n (unless it is constant, see `standardise_weight`)."""
    w_hat = standardise_weight(weight)
    return (ede_sign(w_hat, t, k) * shift_scale(w_hat)).reshape(weight.shape)


# ------------------------------------------------------------------------ layer


class IRConv2d(nn.Conv2d):
    """A convolution with 1-bit weights (Libra-PB) and 1-bit input activations (EDE
    sign): ``conv(sign(x), sign(w_hat)) * 2**n[c_out] + bias``, with the arguments of
    `nn.Conv2d`. The full-precision `weight` is the latent weight the optimiser updates.

    `t` and `k` are the current EDE parameters, 0-dim buffers set by `set_ede` (or
    `set_ede_values`); they start at the schedule's epoch-0 values for `DEFAULT_T_MIN`.
    """

    weight_bits = 1
    act_bits = 1
    t: torch.Tensor
    k: torch.Tensor

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
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=padding, dilation=dilation, groups=groups, bias=bias,
                         padding_mode=padding_mode, device=device, dtype=dtype)
        t, k = ede_schedule(0, 1)
        self.register_buffer("t", torch.tensor(t, device=device, dtype=dtype))
        self.register_buffer("k", torch.tensor(k, device=device, dtype=dtype))

    def set_ede_values(self, t: float, k: float) -> None:
        """Set the EDE parameters (in place, so the buffers keep device and dtype)."""
        with torch.no_grad():
            self.t.fill_(t)
            self.k.fill_(k)

    #: the EDE schedule's range (`ede_schedule`); per layer, so a setting can differ
    t_min: float = DEFAULT_T_MIN
    t_max: float = DEFAULT_T_MAX
    #: what an ONNX export of a network with this layer holds (`nas retrain` says it)
    onnx_holds = ("binary layers as float operations (sign, Libra-PB weights as +-2^n "
                  "in float32), not an XNOR-popcount graph")

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """The per-epoch EDE schedule (`nas.layer_state.advance_schedules` calls it in
        search and retrain; t and k follow the epoch, so a resumed run continues
        exactly)."""
        self.set_ede_values(*ede_schedule(epoch, epochs, self.t_min, self.t_max))

    def binary_weight(self) -> torch.Tensor:
        """The Libra-PB weight ``sign(w_hat) * 2**n`` the forward uses (with EDE)."""
        return libra_pb(self.weight, self.t, self.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(ede_sign(x, self.t, self.k), self.binary_weight(),
                                  self.bias)


#: Cost of one `IRConv2d` call: conv MACs at 1-bit weights and activations.
IRNET_LAYER = LayerSpec(count=conv_macs, kind=conv_kind, weight_bits=1, act_bits=1)
register_layer(IRNET_LAYER, IRConv2d, replace=False)


__all__ = [
    "DEFAULT_T_MAX",
    "DEFAULT_T_MIN",
    "EDESign",
    "IRNET_LAYER",
    "IRConv2d",
    "binary_sign",
    "ede_schedule",
    "ede_sign",
    "libra_pb",
    "set_ede",
    "shift_exponent",
    "shift_scale",
    "standardise_weight",
]
