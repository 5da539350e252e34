"""DSQ quantizer, DSQConv2d and the DSQ candidate ops (search_spaces/dsq.py, dsq_ops.py).

The forward is the hard quantizer; the backward must be the derivative of the soft
quantizer, so the gradient checks evaluate `soft_quantize` directly for the finite
differences, in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from search_spaces.complexity import count_ops
from search_spaces.dsq import (
    ALPHA_MAX,
    ALPHA_MIN,
    DSQ_LAYER,
    DSQConv2d,
    DSQFunction,
    DSQQuantizer,
    _constants,
    quantizer_parameters,
    soft_quantize,
)
from search_spaces.dsq_ops import (
    DSQ_SETS,
    DSQDilConv,
    DSQSepConv,
    quantized_form,
)
from search_spaces.layer_spec import conv_kind, conv_macs, counting_pass, find_layer_spec
from search_spaces.op_spec import op_spec
from search_spaces.ops import build_op

torch.set_num_threads(1)

DSQ_OPS = tuple(name for names in DSQ_SETS.values() for name in names)


def leaves(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if not list(m.children())]


def convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


# ---------------------------------------------------------------- the quantizer


def test_hard_forward_matches_hand_computed_values() -> None:
    """2 bits on [-1, 2]: Delta = 1, grid {-1, 0, 1, 2}; nearest grid value after
    clipping, a midpoint rounds up."""
    q = DSQQuantizer(2, lower=-1.0, upper=2.0)
    x = torch.tensor([-3.0, -1.0, -0.6, -0.4, 0.2, 0.5, 0.9, 1.49, 1.51, 2.0, 7.0])
    expected = torch.tensor([-1.0, -1.0, -1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    assert torch.equal(q(x), expected)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_outputs_lie_on_the_grid(bits: int) -> None:
    torch.manual_seed(bits)
    q = DSQQuantizer(bits, lower=-0.7, upper=1.3)
    out = q(torch.randn(4000) * 2).detach().double()
    n = 2**bits - 1
    j = (out + 0.7) / (2.0 / n)
    assert torch.allclose(j, j.round(), atol=1e-5)
    assert j.min() >= -1e-5 and j.max() <= n + 1e-5
    assert len(out.unique()) == 2**bits  # every level is used by a wide input


def _g_and_x(n: int, l: float, u: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points spread over [l - 1, u + 1], none within 1e-3 of the clipping edges (where
    dQ/dx jumps), and an upstream gradient."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=gen, dtype=torch.float64) * (u - l + 2) + (l - 1)
    near = ((x - l).abs() < 1e-3) | ((x - u).abs() < 1e-3)
    x = torch.where(near, x + 3e-3, x)
    return x, torch.randn(n, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("bits,alpha", [(2, 0.2), (3, 0.45), (4, 0.05)])
def test_backward_is_the_soft_quantizer_derivative(bits: int, alpha: float) -> None:
    l0, u0 = -0.8, 1.1
    x, g = _g_and_x(300, l0, u0, seed=bits)
    xs = x.clone().requires_grad_()
    lo = torch.tensor(l0, dtype=torch.float64, requires_grad=True)
    hi = torch.tensor(u0, dtype=torch.float64, requires_grad=True)
    a = torch.tensor(alpha, dtype=torch.float64, requires_grad=True)
    (DSQFunction.apply(xs, lo, hi, a, bits) * g).sum().backward()

    def loss(x_: torch.Tensor, l_: float, u_: float, a_: float) -> float:
        t = [torch.tensor(v, dtype=torch.float64) for v in (l_, u_, a_)]
        return float((soft_quantize(x_, t[0], t[1], t[2], bits) * g).sum())

    h = 1e-6
    fd_l = (loss(x, l0 + h, u0, alpha) - loss(x, l0 - h, u0, alpha)) / (2 * h)
    fd_u = (loss(x, l0, u0 + h, alpha) - loss(x, l0, u0 - h, alpha)) / (2 * h)
    fd_a = (loss(x, l0, u0, alpha + h) - loss(x, l0, u0, alpha - h)) / (2 * h)
    assert lo.grad is not None and hi.grad is not None and a.grad is not None
    assert float(lo.grad) == pytest.approx(fd_l, rel=1e-6, abs=1e-7)
    assert float(hi.grad) == pytest.approx(fd_u, rel=1e-6, abs=1e-7)
    assert float(a.grad) == pytest.approx(fd_a, rel=1e-6, abs=1e-7)

    # elementwise, so one perturbation of every x gives every partial derivative
    L, U, A = (torch.tensor(v, dtype=torch.float64) for v in (l0, u0, alpha))
    fd_x = g * (soft_quantize(x + h, L, U, A, bits) - soft_quantize(x - h, L, U, A, bits)) \
        / (2 * h)
    assert xs.grad is not None
    assert torch.allclose(xs.grad, fd_x, rtol=1e-6, atol=1e-7)
    outside = (x < l0) | (x > u0)
    assert outside.any() and torch.all(xs.grad[outside] == 0)


def test_module_gradients_reach_lower_upper_and_alpha_raw() -> None:
    """Through the module (ordering, alpha's sigmoid parametrisation), against finite
    differences of the soft quantizer written with the module's parameters."""
    q = DSQQuantizer(3, lower=-0.5, upper=1.5).double()
    x, g = _g_and_x(200, -0.5, 1.5, seed=7)
    (q(x) * g).sum().backward()

    def loss() -> float:
        l_, u_ = q.clip_range()
        return (soft_quantize(x, l_, u_, q.alpha, 3) * g).sum().item()

    h = 1e-6
    for p in (q.lower, q.upper, q.alpha_raw):
        with torch.no_grad():
            p.add_(h)
            up = loss()
            p.sub_(2 * h)
            down = loss()
            p.add_(h)
        assert p.grad is not None
        assert float(p.grad) == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-7)


def test_lower_and_upper_are_ordered() -> None:
    """Crossed parameters (an optimizer step too far) quantize as the ordered range."""
    x = torch.linspace(-2, 2, 41)
    crossed = DSQQuantizer(2, lower=-1.0, upper=1.0)
    with torch.no_grad():
        crossed.lower.fill_(1.0)
        crossed.upper.fill_(-1.0)
    assert torch.equal(crossed(x), DSQQuantizer(2, lower=-1.0, upper=1.0)(x))
    same = DSQQuantizer(2, lower=0.0, upper=1.0)
    with torch.no_grad():
        same.upper.fill_(0.0)
    out = same(x)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad) for p in same.parameters())


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_alpha_is_initialised_at_0_2_and_stays_valid_under_large_steps(sign: float) -> None:
    """Huge steps pushing alpha down (sign 1) or up (sign -1); the clipping range gets
    ordinary ones (huge steps on it overflow float32 for reasons unrelated to alpha).
    Then Adam on everything: alpha never leaves (0, 0.5] and nothing turns NaN."""
    q = DSQQuantizer(2, lower=-1.0, upper=1.0)
    assert q.alpha.item() == pytest.approx(0.2)
    torch.manual_seed(0)
    x = torch.randn(256)
    opt = torch.optim.SGD([{"params": [q.alpha_raw], "lr": 1e6},
                           {"params": [q.lower, q.upper], "lr": 1e-2}])
    for _ in range(30):
        opt.zero_grad()
        (sign * q.alpha * 1e3 + (q(x) - x).pow(2).mean()).backward()
        opt.step()
        alpha = q.alpha.item()
        assert 0.0 < alpha <= ALPHA_MAX and math.isfinite(alpha)
    assert q.alpha.item() == pytest.approx(ALPHA_MIN if sign > 0 else ALPHA_MAX)
    adam = torch.optim.Adam(q.parameters(), lr=50.0)
    for _ in range(50):
        adam.zero_grad()
        out = q(x)
        (out - 3 * x).pow(2).mean().backward()
        assert torch.isfinite(out).all()
        assert all(torch.isfinite(p.grad).all() for p in q.parameters() if p.grad is not None)
        adam.step()
        assert 0.0 < q.alpha.item() <= ALPHA_MAX


@pytest.mark.parametrize("alpha", [0.001, 0.2, 0.5])
def test_k_and_s_put_phi_at_plus_minus_one_on_interval_edges(alpha: float) -> None:
    a = torch.tensor(alpha, dtype=torch.float64)
    delta = 0.37
    c, s = _constants(a)
    k = c / delta
    assert float(s) == pytest.approx(1.0 / (1.0 - alpha))
    assert float(k) == pytest.approx(math.log(2.0 / alpha - 1.0) / delta)
    assert float(1.0 - torch.tanh(k * delta / 2)) == pytest.approx(alpha)
    assert float(s * torch.tanh(k * delta / 2)) == pytest.approx(1.0)
    assert float(s * torch.tanh(-k * delta / 2)) == pytest.approx(-1.0)
    # hence the soft quantizer passes through every grid point
    lo, hi = torch.tensor(-0.5, dtype=torch.float64), torch.tensor(-0.5 + 7 * delta,
                                                                    dtype=torch.float64)
    grid = lo + torch.arange(8, dtype=torch.float64) * delta
    assert torch.allclose(soft_quantize(grid, lo, hi, a, 3), grid, atol=1e-12)


def test_range_initialised_from_the_first_batch_but_not_by_a_counting_pass() -> None:
    q = DSQQuantizer(4)
    with counting_pass():
        q(torch.zeros(5))
    assert not bool(q.initialized)
    x = torch.randn(1000) * 3 + 1
    q(x)
    assert bool(q.initialized)
    assert q.lower.item() == pytest.approx(float(x.min()))
    assert q.upper.item() == pytest.approx(float(x.max()))
    q(x * 10)  # only the first batch
    assert q.upper.item() == pytest.approx(float(x.max()))
    loaded = DSQQuantizer(4)
    loaded.load_state_dict(q.state_dict())
    assert bool(loaded.initialized) and loaded.upper.item() == q.upper.item()

    flat = DSQQuantizer(2)
    flat(torch.zeros(10))  # no spread: a unit margin on both sides
    assert (flat.lower.item(), flat.upper.item()) == (-1.0, 1.0)

    robust = DSQQuantizer(4, init_quantile=0.99)
    robust(x)
    assert robust.upper.item() == pytest.approx(float(torch.quantile(x, 0.99)), rel=1e-5)
    assert robust.upper.item() < float(x.max())


# ---------------------------------------------------------------- DSQConv2d


def test_dsq_conv_forward_and_backward() -> None:
    torch.manual_seed(0)
    conv = DSQConv2d(3, 5, 3, stride=2, padding=1, bits=4)
    assert (conv.bits, conv.weight_bits, conv.act_bits) == (4, 4, 4)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = conv(x)
    assert out.shape == (2, 5, 4, 4)
    out.pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in conv.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # the conv runs on quantized tensors: at most 2^4 distinct weight values
    assert len(conv.weight_quantizer(conv.weight).unique()) <= 16


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("groups", [1, 4])
def test_count_ops_gives_bops_at_the_bit_widths(bits: int, groups: int) -> None:
    conv = DSQConv2d(4, 8, 3, padding=1, groups=groups, bias=False, bits=bits)
    assert find_layer_spec(conv) is DSQ_LAYER
    assert DSQ_LAYER.count is conv_macs
    assert DSQ_LAYER.kind_of(conv) == conv_kind(conv)
    counts = count_ops(conv, (4, 6, 6))
    assert counts.macs == 6 * 6 * 8 * (4 // groups) * 9
    assert counts.bops == counts.macs * bits * bits
    assert not bool(conv.act_quantizer.initialized)  # counting does not initialise


# ---------------------------------------------------------------- the ops


@pytest.mark.parametrize("name", DSQ_OPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_ops_build_and_train(name: str, stride: int) -> None:
    torch.manual_seed(stride)
    op = build_op(name, 4, stride)
    x = torch.randn(2, 4, 8, 8)
    out = op(x)
    assert out.shape == (2, 4, 8 // stride, 8 // stride)
    out.pow(2).mean().backward()
    qparams = {id(p) for p in quantizer_parameters(op)}
    assert all(p.grad is not None for p in op.parameters() if id(p) not in qparams)
    assert all(p.grad is not None for p in quantizer_parameters(op))


@pytest.mark.parametrize("name", DSQ_OPS)
def test_ops_mirror_the_darts_convs(name: str) -> None:
    bits = int(name[3])
    darts = name.split("_", 1)[1]
    float_convs = convs(build_op(darts, 6, 2))
    dsq = convs(build_op(name, 6, 2))
    assert len(dsq) == len(float_convs) == (4 if "sep" in name else 2)
    for c, d in zip(float_convs, dsq):
        assert isinstance(d, DSQConv2d) and d.bits == bits
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                     "dilation", "groups"):
            assert getattr(d, attr) == getattr(c, attr), attr
        assert d.bias is None
    # the same layers in the same order: activation, convs, BN
    layout = [type(m).__name__ for m in build_op(name, 6, 1).modules()
              if isinstance(m, (nn.ReLU, DSQConv2d, nn.BatchNorm2d))]
    float_layout = [type(m).__name__.replace("Conv2d", "DSQConv2d")
                    for m in build_op(darts, 6, 1).modules()
                    if isinstance(m, (nn.ReLU, nn.Conv2d, nn.BatchNorm2d))]
    assert layout == float_layout


def test_op_specs_and_pairs() -> None:
    for name in DSQ_OPS:
        spec = op_spec(name)
        assert spec.family == "conv" and spec.heavy and spec.batched is None
        assert spec.takes_activation and dict(spec.layers) == {DSQConv2d: DSQ_LAYER}
    op = build_op("dsq4_sep_conv_3x3/silu", 4, 1)
    assert any(isinstance(m, nn.SiLU) for m in op.modules())
    assert not any(isinstance(m, nn.ReLU) for m in op.modules())
    assert op(torch.randn(1, 4, 6, 6)).shape == (1, 4, 6, 6)
    assert all(c.bits == 4 for c in convs(op))


def test_sets_and_quantized_form() -> None:
    assert set(DSQ_SETS) == {"dsq2", "dsq4", "dsq8"}
    assert DSQ_SETS["dsq4"] == ("dsq4_sep_conv_3x3", "dsq4_sep_conv_5x5",
                                "dsq4_dil_conv_3x3", "dsq4_dil_conv_5x5")
    assert all(len(v) == 4 and all(n.startswith(k + "_") for n in v)
               for k, v in DSQ_SETS.items())
    assert quantized_form("sep_conv_3x3", 2) == "dsq2_sep_conv_3x3"
    assert quantized_form("dil_conv_5x5/silu", 8) == "dsq8_dil_conv_5x5/silu"
    for other in ("max_pool_3x3", "skip_connect", "none", "dsq4_sep_conv_3x3",
                  "adder_sep_conv_3x3"):
        assert quantized_form(other, 4) == other
    with pytest.raises(ValueError):
        quantized_form("sep_conv_3x3", 3)


def test_quantizer_parameters_finds_exactly_the_quantizer_params() -> None:
    model = nn.Sequential(DSQSepConv(4, 4, 3, 1, 1, bits=2),
                          DSQDilConv(4, 4, 3, 1, 2, 2, bits=8), nn.Conv2d(4, 4, 1))
    found = quantizer_parameters(model)
    expected = [p for n, p in model.named_parameters()
                if n.split(".")[-1] in ("lower", "upper", "alpha_raw")]
    assert len(found) == 6 * 3 * 2 == len(expected)
    assert {id(p) for p in found} == {id(p) for p in expected}
    assert all("quantizer" in n for n, p in model.named_parameters()
               if id(p) in {id(q) for q in found})
    assert quantizer_parameters(nn.Conv2d(2, 2, 1)) == []
