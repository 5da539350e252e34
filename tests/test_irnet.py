"""IR-Net binarisation (search_spaces/irnet.py) and the binary candidate ops
(search_spaces/binary_ops.py): EDE's backward, the EDE schedule, Libra-PB weights,
IRConv2d's forward / backward / state, the ops' layout and registration, and their
bit-operation counts."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.binary_ops import BINARY_OP_SPECS, BINARY_SET, BinaryConvBlock
from search_spaces.complexity import count_ops
from search_spaces.errors import UnknownOperationError
from search_spaces.irnet import (
    DEFAULT_T_MAX,
    DEFAULT_T_MIN,
    IRNET_LAYER,
    EDESign,
    IRConv2d,
    binary_sign,
    ede_schedule,
    ede_sign,
    libra_pb,
    set_ede,
    shift_exponent,
    shift_scale,
    standardise_weight,
)
from search_spaces.layer_spec import find_layer_spec
from search_spaces.op_spec import check_op_names, find_op_spec, op_spec, visible_op_names
from search_spaces.ops import DARTS_PRIMITIVES, build_op

torch.set_num_threads(1)

#: (t, k) pairs: both schedule ends of the 1w1a setting, its middle, and an odd one.
EDE_PARAMS = [(1e-3, 1e3), (10.0, 1.0), (0.1, 10.0), (2.5, 0.7)]


# ------------------------------------------------------------------------- EDE


def test_sign_forward_is_plus_minus_one_with_sign_zero_plus_one() -> None:
    inf = float("inf")
    x = torch.tensor([-inf, -2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0, inf, float("nan")])
    out = EDESign.apply(x, torch.tensor(1.0), torch.tensor(1.0))
    assert out[:8].tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert math.isnan(out[8].item())
    assert torch.equal(binary_sign(x[:8]), out[:8])
    assert ede_sign(x, 0.5, 2.0)[:8].tolist() == out[:8].tolist()
    assert binary_sign(x.double()).dtype == torch.float64


@pytest.mark.parametrize(("t", "k"), EDE_PARAMS)
def test_ede_backward_is_the_derivative_of_k_tanh_tx(t: float, k: float) -> None:
    torch.manual_seed(0)
    x = (torch.randn(200, dtype=torch.float64) * 2).requires_grad_()
    g = torch.randn(200, dtype=torch.float64)
    (grad,) = torch.autograd.grad(ede_sign(x, t, k), x, g)

    # autograd of the smooth function
    x2 = x.detach().clone().requires_grad_()
    (ref,) = torch.autograd.grad(k * torch.tanh(t * x2), x2, g)
    torch.testing.assert_close(grad, ref, rtol=1e-9, atol=1e-12)

    # by hand, and central finite differences of k * tanh(t * x)
    xd = x.detach()
    by_hand = g * k * t * (1 - torch.tanh(t * xd) ** 2)
    torch.testing.assert_close(grad, by_hand, rtol=1e-12, atol=1e-14)
    h = 1e-6
    fd = g * (k * torch.tanh(t * (xd + h)) - k * torch.tanh(t * (xd - h))) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)


def test_ede_takes_tensor_parameters_and_gives_them_no_gradient() -> None:
    x = torch.randn(10, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    k = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    EDESign.apply(x, t, k).sum().backward()
    assert t.grad is None and k.grad is None
    assert x.grad is not None
    torch.testing.assert_close(x.grad, 0.9 * (1 - torch.tanh(0.3 * x.detach()) ** 2))


# -------------------------------------------------------------------- schedule


def test_default_t_min_is_the_1w1a_setting() -> None:
    assert DEFAULT_T_MIN == 1e-3 and DEFAULT_T_MAX == 10.0


def test_schedule_by_hand() -> None:
    # 1w1a: log10 t runs from -3 to 1
    t, k = ede_schedule(0, 100)
    assert t == pytest.approx(1e-3, rel=1e-12) and k == pytest.approx(1e3, rel=1e-12)
    t, k = ede_schedule(100, 100)
    assert t == pytest.approx(10.0, rel=1e-12) and k == 1.0
    t, k = ede_schedule(50, 100)  # log10 t = -3 + 4 * 0.5 = -1
    assert t == pytest.approx(0.1, rel=1e-12) and k == pytest.approx(10.0, rel=1e-12)
    t, k = ede_schedule(3, 4)  # log10 t = -3 + 4 * 0.75 = 0: t = 1, k = max(1, 1)
    assert t == pytest.approx(1.0, rel=1e-12) and k == pytest.approx(1.0, rel=1e-12)
    # VGG-Small / 1w32a: log10 t runs from -1 to 1
    assert ede_schedule(0, 10, t_min=0.1) == pytest.approx((0.1, 10.0), rel=1e-12)
    t, k = ede_schedule(1, 4, t_min=0.1)  # log10 t = -1 + 2 * 0.25 = -0.5
    assert t == pytest.approx(10 ** -0.5, rel=1e-12)
    assert k == pytest.approx(10 ** 0.5, rel=1e-12)
    t, k = ede_schedule(3, 4, t_min=0.1)  # log10 t = 0.5: k = max(1/t, 1) = 1
    assert t == pytest.approx(10 ** 0.5, rel=1e-12) and k == 1.0
    assert ede_schedule(2, 4, t_min=0.01, t_max=1.0) == pytest.approx((0.1, 10.0))


def test_schedule_k_is_max_of_one_over_t_and_one() -> None:
    for i in range(21):
        t, k = ede_schedule(i, 20)
        assert k == max(1 / t, 1.0)
        assert (k * t == pytest.approx(1.0)) if t <= 1 else (k == 1.0)


@pytest.mark.parametrize(("epoch", "epochs", "t_min", "t_max"), [
    (0, 0, 1e-3, 10.0), (-1, 10, 1e-3, 10.0), (11, 10, 1e-3, 10.0), (0, 10, 0.0, 10.0),
    (0, 10, 1e-3, -1.0), (0, 10, float("inf"), 10.0),
])
def test_schedule_refuses_bad_arguments(epoch: int, epochs: int, t_min: float,
                                        t_max: float) -> None:
    with pytest.raises(ValueError):
        ede_schedule(epoch, epochs, t_min, t_max)


# -------------------------------------------------------------------- Libra-PB


def one_hot_weight(out_channels: int, in_channels: int, k: int) -> torch.Tensor:
    """Each output channel: one weight 5 (at position c), all others 0."""
    w = torch.zeros(out_channels, in_channels, k, k)
    w.view(out_channels, -1)[torch.arange(out_channels), torch.arange(out_channels)] = 5.0
    return w


def test_shift_exponent_by_hand() -> None:
    # one nonzero weight of n: centred values (n-1)/n once and -1/n (n-1) times, sum of
    # squares (n-1)/n, unbiased std 1/sqrt(n), so mean|w_hat| = 2 (n-1) / n**1.5.
    #   n = 9:  16/27 = 0.593, log2 = -0.75 -> -1
    #   n = 36: 70/216 = 0.324, log2 = -1.63 -> -2
    for fan_in, in_channels, n in ((9, 1, -1.0), (36, 4, -2.0)):
        w_hat = standardise_weight(one_hot_weight(3, in_channels, 3))
        expected = 2 * (fan_in - 1) / fan_in ** 1.5
        torch.testing.assert_close(w_hat.abs().mean(dim=1), torch.full((3,), expected))
        assert shift_exponent(w_hat).flatten().tolist() == [n] * 3
        assert shift_scale(w_hat).flatten().tolist() == [2.0 ** n] * 3


def test_binary_weight_takes_two_values_per_channel() -> None:
    torch.manual_seed(1)
    # channels of very different spread and offset; one sparse channel with n = -2
    w = torch.randn(5, 4, 3, 3) * torch.tensor([0.01, 1.0, 30.0, 1.0, 1.0]).view(5, 1, 1, 1)
    w[3] += 7.0
    w[4] = one_hot_weight(1, 4, 3)[0]
    q = libra_pb(w).view(5, -1)
    flat = w.view(5, -1).double()
    for c in range(5):
        # n by hand: explicit mean, unbiased std, mean |w_hat|
        vals = flat[c].tolist()
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        n = round(math.log2(sum(abs((v - mean) / std) for v in vals) / len(vals)))
        assert set(q[c].tolist()) == {2.0 ** n, -(2.0 ** n)}
        signs = [1.0 if v >= mean else -1.0 for v in vals]
        assert q[c].tolist() == [s * 2.0 ** n for s in signs]
    assert shift_exponent(standardise_weight(w))[4].item() == -2


def reference_binary_weight(w: torch.Tensor, t: float, k: float) -> torch.Tensor:
    """Libra-PB written out: explicit per-channel mean and unbiased std (not detached),
    sign through a straight-through surrogate k*tanh(t*x), and the scale detached."""
    flat = w.reshape(w.shape[0], -1)
    n = flat.shape[1]
    mean = flat.sum(dim=1, keepdim=True) / n
    centred = flat - mean
    std = torch.sqrt((centred * centred).sum(dim=1, keepdim=True) / (n - 1))
    w_hat = centred / std
    smooth = k * torch.tanh(t * w_hat)
    sign = torch.where(w_hat.detach() >= 0, 1.0, -1.0).to(w.dtype)
    binary = sign + (smooth - smooth.detach())
    scale = 2.0 ** torch.round(torch.log2(w_hat.detach().abs().mean(dim=1, keepdim=True)))
    return (binary * scale).reshape(w.shape)


@pytest.mark.parametrize(("t", "k"), EDE_PARAMS)
def test_gradient_flows_through_the_standardisation(t: float, k: float) -> None:
    torch.manual_seed(2)
    w = (torch.randn(4, 3, 3, 3, dtype=torch.float64) * 0.3 + 0.1).requires_grad_()
    r = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    q = libra_pb(w, t, k)
    (grad,) = torch.autograd.grad((q * r).sum(), w)
    w_ref = w.detach().clone().requires_grad_()
    q_ref = reference_binary_weight(w_ref, t, k)
    torch.testing.assert_close(q, q_ref, rtol=0, atol=0)
    (ref,) = torch.autograd.grad((q_ref * r).sum(), w_ref)
    torch.testing.assert_close(grad, ref, rtol=1e-10, atol=1e-12)

    # the mean and std take part: with them detached the gradient differs, and through
    # the mean every channel's gradient sums to zero (and is orthogonal to w_hat)
    flat = w.detach().reshape(4, -1)
    mean, std = flat.mean(dim=1, keepdim=True), flat.std(dim=1, keepdim=True)
    w_hat = (w.reshape(4, -1) - mean) / std
    scale = shift_scale(w_hat.detach())
    (detached,) = torch.autograd.grad(((ede_sign(w_hat, t, k) * scale).reshape(w.shape)
                                       * r).sum(), w)
    assert not torch.allclose(grad, detached)
    per_channel = grad.reshape(4, -1)
    torch.testing.assert_close(per_channel.sum(dim=1), torch.zeros(4, dtype=torch.float64),
                               atol=1e-10, rtol=0)
    torch.testing.assert_close((per_channel * w_hat.detach()).sum(dim=1),
                               torch.zeros(4, dtype=torch.float64), atol=1e-10, rtol=0)


def test_scale_is_detached() -> None:
    w = torch.randn(3, 2, 3, 3, requires_grad=True)
    w_hat = standardise_weight(w)
    assert w_hat.requires_grad
    scale = shift_scale(w_hat)
    assert not scale.requires_grad and scale.grad_fn is None
    assert not shift_exponent(w_hat).requires_grad
    # the weight's gradient is the scale times EDE's backward at w_hat, nothing more
    t, k = 0.5, 2.0
    (g_w,) = torch.autograd.grad(libra_pb(w, t, k).sum(), w)
    w2 = w.detach().clone().requires_grad_()
    w_hat2 = standardise_weight(w2)
    surrogate = scale * k * torch.tanh(t * w_hat2)
    (g_ref,) = torch.autograd.grad(surrogate.sum(), w2)
    torch.testing.assert_close(g_w, g_ref)


def test_all_zero_channel_gives_zero_weight_not_nan() -> None:
    w = torch.randn(2, 2, 3, 3)
    w[1] = 0.0
    q = libra_pb(w)
    assert torch.isfinite(q).all() and (q[1] == 0).all()
    assert set(q[0].abs().flatten().tolist()) == {1.0}


# -------------------------------------------------------------------- IRConv2d


def test_forward_by_hand() -> None:
    """Two output channels, one 3x3 input of signs, no padding (one output position).
    Channel 0: one weight 5 at the centre -> sign(w_hat) +1 at the centre, -1 elsewhere,
    n = -1 (test_shift_exponent_by_hand). Channel 1: one weight -3 at the top left ->
    -1 there, +1 elsewhere, also n = -1."""
    conv = IRConv2d(1, 2, 3, bias=True)
    assert conv.bias is not None
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 5.0
        conv.weight[1, 0, 0, 0] = -3.0
        conv.bias.copy_(torch.tensor([0.25, -1.0]))
    x = torch.tensor([[1.0, -1.0, 1.0],
                      [-1.0, 1.0, 1.0],
                      [1.0, 1.0, -1.0]]).view(1, 1, 3, 3)
    # channel 0: 0.5 * (centre - others) = 0.5 * (1 - 2) = -0.5, + 0.25
    # channel 1: 0.5 * (-top left + others) = 0.5 * (-1 + 2) = 0.5, - 1
    out = conv(x)
    assert out.flatten().tolist() == [-0.25, -0.5]
    # the input is binarised inside: any values with the same signs give the same output
    assert conv(x * torch.rand(1, 1, 3, 3).add(0.1)).flatten().tolist() == [-0.25, -0.5]


@pytest.mark.parametrize(("stride", "padding", "groups"), [(1, 1, 1), (2, 2, 1), (1, 0, 2)])
def test_forward_is_a_conv_of_the_binarised_tensors(stride: int, padding: int,
                                                    groups: int) -> None:
    torch.manual_seed(3)
    conv = IRConv2d(4, 6, 5, stride=stride, padding=padding, groups=groups, bias=True,
                    dtype=torch.float64)
    assert conv.bias is not None
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    signs = torch.where(x >= 0, 1.0, -1.0).to(torch.float64)
    w_hat = standardise_weight(conv.weight.detach())
    scale = (2.0 ** shift_exponent(w_hat)).view(6)
    sign_w = torch.where(w_hat >= 0, 1.0, -1.0).to(torch.float64).view_as(conv.weight)
    expected = (F.conv2d(signs, sign_w, None, stride, padding, groups=groups)
                * scale.view(1, 6, 1, 1) + conv.bias.detach().view(1, 6, 1, 1))
    torch.testing.assert_close(conv(x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(conv(signs), expected, rtol=1e-12, atol=1e-12)


def test_conv_gradients_match_the_reference() -> None:
    torch.manual_seed(4)
    t, k = 0.1, 10.0
    conv = IRConv2d(3, 4, 3, padding=1, bias=False, dtype=torch.float64)
    conv.set_ede_values(t, k)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    conv(x).backward(g)
    w_ref = conv.weight.detach().clone().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    smooth = k * torch.tanh(t * x_ref)
    a = torch.where(x_ref.detach() >= 0, 1.0, -1.0).to(torch.float64) + (smooth
                                                                         - smooth.detach())
    F.conv2d(a, reference_binary_weight(w_ref, t, k), padding=1).backward(g)
    assert conv.weight.grad is not None and x.grad is not None
    torch.testing.assert_close(conv.weight.grad, w_ref.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)


def test_defaults_are_the_epoch_zero_schedule() -> None:
    conv = IRConv2d(2, 2, 3)
    t0, k0 = ede_schedule(0, 50)
    assert conv.t.item() == pytest.approx(t0) and conv.k.item() == pytest.approx(k0)
    assert conv.weight_bits == 1 and conv.act_bits == 1
    assert isinstance(conv, nn.Conv2d)


def test_t_and_k_survive_a_state_dict_round_trip() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(BinaryConvBlock(4, 3, 1), BinaryConvBlock(4, 5, 2))
    t, k = set_ede(model, 7, 20)
    state = model.state_dict()
    assert {"0.conv.t", "0.conv.k", "1.conv.t", "1.conv.k"} <= set(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    first = BinaryConvBlock(4, 3, 1)
    fresh = nn.Sequential(first, BinaryConvBlock(4, 5, 2))
    assert first.conv.t.item() != pytest.approx(t)
    fresh.load_state_dict(torch.load(buffer))
    for m in fresh.modules():
        if isinstance(m, IRConv2d):
            assert m.t.item() == pytest.approx(t) and m.k.item() == pytest.approx(k)
    x = torch.randn(2, 4, 8, 8)
    grads = []
    for net in (model, fresh):
        xi = x.clone().requires_grad_()
        net(xi).square().sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_set_ede_updates_every_layer() -> None:
    model = nn.Sequential(
        BinaryConvBlock(4, 3, 1), nn.Sequential(BinaryConvBlock(4, 5, 2), nn.Conv2d(4, 4, 1)),
        IRConv2d(4, 2, 1),
    )
    convs = [m for m in model.modules() if isinstance(m, IRConv2d)]
    assert len(convs) == 3
    t, k = set_ede(model, 3, 10, t_min=0.1)
    assert (t, k) == ede_schedule(3, 10, t_min=0.1)
    for m in convs:
        assert m.t.item() == pytest.approx(t) and m.k.item() == pytest.approx(k)
    t2, k2 = set_ede(model, 10, 10)
    assert (t2, k2) == pytest.approx((10.0, 1.0))
    assert all(m.t.item() == pytest.approx(10.0) and m.k.item() == 1.0 for m in convs)
    assert set_ede(nn.Linear(2, 2), 0, 5) == ede_schedule(0, 5)  # nothing to set


def test_set_ede_keeps_buffer_dtype() -> None:
    conv = IRConv2d(2, 2, 1, dtype=torch.float64)
    set_ede(conv, 1, 3)
    assert conv.t.dtype == conv.k.dtype == torch.float64
    assert conv.t.item() == ede_schedule(1, 3)[0]


# ------------------------------------------------------------------------ ops


def test_binary_set_and_registration() -> None:
    assert BINARY_SET == ("binary_conv_3x3", "binary_conv_5x5")
    assert tuple(s.name for s in BINARY_OP_SPECS) == BINARY_SET
    names = visible_op_names()
    assert set(names[:8]) == set(DARTS_PRIMITIVES)
    assert set(BINARY_SET) <= set(names)
    for name, spec in zip(BINARY_SET, BINARY_OP_SPECS):
        assert op_spec(name) is spec
        assert spec.family == "conv" and spec.heavy and not spec.zero
        assert spec.batched is None and spec.batched_activated is None
        assert spec.build_activated is None and not spec.takes_activation
        assert spec.layers == {IRConv2d: IRNET_LAYER}


@pytest.mark.parametrize("name", BINARY_SET)
def test_activation_pair_is_refused(name: str) -> None:
    assert find_op_spec(f"{name}/silu") is None
    with pytest.raises(UnknownOperationError) as info:
        op_spec(f"{name}/silu")
    message = str(info.value)
    assert "\n" not in message and "no activation choice" in message and name in message
    with pytest.raises(UnknownOperationError):
        check_op_names([f"{name}/silu"])


@pytest.mark.parametrize("name", BINARY_SET)
@pytest.mark.parametrize(("stride", "size", "out_size"), [(1, 8, 8), (2, 8, 4), (2, 7, 4)])
def test_ops_build_and_train(name: str, stride: int, size: int, out_size: int) -> None:
    torch.manual_seed(6)
    op = build_op(name, 4, stride)
    x = torch.randn(2, 4, size, size, requires_grad=True)
    out = op(x)
    assert out.shape == (2, 4, out_size, out_size)
    assert out.abs().max() <= 1.0  # Hardtanh last
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for p in op.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
        assert p.grad.abs().sum() > 0


@pytest.mark.parametrize("name", BINARY_SET)
@pytest.mark.parametrize("stride", [1, 2])
def test_op_layout(name: str, stride: int) -> None:
    kernel = int(name[-1])
    op = build_op(name, 4, stride, affine=False)
    assert isinstance(op, BinaryConvBlock)
    modules = list(op.modules())
    assert not any(isinstance(m, nn.ReLU) for m in modules)
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and isinstance(convs[0], IRConv2d)
    conv = convs[0]
    assert conv.groups == 1  # no binarised depthwise conv
    assert conv.kernel_size == (kernel, kernel) and conv.padding == (kernel // 2,) * 2
    assert conv.stride == (stride, stride) and conv.bias is None
    assert (conv.in_channels, conv.out_channels) == (4, 4)
    children = list(op.children())
    assert [type(c) for c in children] == [
        nn.BatchNorm2d, IRConv2d, nn.BatchNorm2d,
        nn.Identity if stride == 1 else nn.AvgPool2d, nn.Hardtanh,
    ]
    assert all(not m.affine for m in modules if isinstance(m, nn.BatchNorm2d))


def test_stride_two_shortcut_is_a_2x2_average() -> None:
    op = BinaryConvBlock(1, 3, 2)
    x = torch.arange(9.0).view(1, 1, 3, 3)
    assert op.shortcut(x).flatten().tolist() == [2.0, 3.5, 6.5, 8.0]


def test_block_adds_the_shortcut_before_hardtanh() -> None:
    torch.manual_seed(7)
    op = BinaryConvBlock(3, 3, 1).eval()
    x = torch.randn(2, 3, 5, 5) * 0.4
    expected = torch.clamp(op.bn_out(op.conv(op.bn_in(x))) + x, -1, 1)
    torch.testing.assert_close(op(x), expected)


# ---------------------------------------------------------------------- counts


def test_count_ops_bops_equal_macs_for_irconv() -> None:
    layer = IRConv2d(2, 3, 3, padding=1)
    spec = find_layer_spec(layer)
    assert spec is IRNET_LAYER
    assert spec.weight_bits_of(layer) == 1 and spec.act_bits_of(layer) == 1
    assert spec.kind_of(layer) == "conv"
    assert IRNET_LAYER.kind_of(IRConv2d(4, 4, 3, groups=4)) == "depthwise"
    counts = count_ops(layer, (2, 4, 4))
    # 3 x 4 x 4 = 48 outputs x 2 input channels x 9 taps
    assert counts.macs == 864 and counts.bops == 864 * 1 * 1
    assert counts.additions == 0
    # a plain conv of the same shape: 32 x 32 bit-operations per MAC
    assert count_ops(nn.Conv2d(2, 3, 3, padding=1), (2, 4, 4)).bops == 864 * 1024


@pytest.mark.parametrize(("name", "stride", "macs"), [
    ("binary_conv_3x3", 1, 4 * 8 * 8 * 4 * 9),
    ("binary_conv_5x5", 2, 4 * 4 * 4 * 4 * 25),
])
def test_count_ops_of_the_ops(name: str, stride: int, macs: int) -> None:
    counts = count_ops(build_op(name, 4, stride), (4, 8, 8))
    assert counts.macs == macs and counts.bops == macs
