"""AdderConv2d (search_spaces/adder.py): forward against naive references, AdderNet's
backward rules against their published formulas, the eta scaling, chunking, arguments.

About gradients: AdderNet's backward is a *rule*, not the derivative of its forward.
The true derivatives of ``-|X - F|`` are ``sign(X - F)`` (w.r.t. F) and ``-sign(X - F)``
(w.r.t. X); AdderNet uses ``X - F`` and ``clamp(F - X, -1, 1)`` instead. So the custom
gradients are checked against those formulas computed naively, and finite differences
(gradcheck) are used only on the naive reference *forward*, to make sure the reference
itself is right.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from search_spaces.adder import (
    AdderConv2d,
    auto_budget,
    bytes_per_position,
    chunk_size,
)

torch.set_num_threads(1)
DT = torch.float64

# (C_in, C_out, groups): plain, grouped, depthwise
CHANNELS = [(3, 5, 1), (4, 6, 2), (4, 4, 4)]
GEOMETRY = list(itertools.product([1, 2], [0, 1], [1, 2]))  # stride, padding, dilation


def ref_cols(x: torch.Tensor, k: int, s: int, p: int, d: int, groups: int) -> torch.Tensor:
    """unfold(X) split by group: (N, g, K_g, L)."""
    cols = F.unfold(x, k, dilation=d, padding=p, stride=s)
    return cols.reshape(x.shape[0], groups, -1, cols.shape[-1])


def ref_forward(x: torch.Tensor, w: torch.Tensor, s: int, p: int, d: int,
                groups: int) -> torch.Tensor:
    """The broadcast form: -sum_k |X_col - F| (builds the whole (N, g, C_out/g, K, L))."""
    cols = ref_cols(x, w.shape[-1], s, p, d, groups)
    wg = w.reshape(groups, w.shape[0] // groups, -1)
    y = -(cols[:, :, None] - wg[None, :, :, :, None]).abs().sum(3)
    h = (x.shape[2] + 2 * p - d * (w.shape[2] - 1) - 1) // s + 1
    return y.reshape(x.shape[0], w.shape[0], h, -1)


def ref_grads(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor, s: int, p: int, d: int,
              groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """AdderNet's rules, naively: grad_F = sum g (X - F); grad_X = fold(sum g HT(F - X))."""
    k = w.shape[-1]
    cols = ref_cols(x, k, s, p, d, groups)[:, :, None]  # (N, g, 1, K_g, L)
    wg = w.reshape(groups, w.shape[0] // groups, -1)[None, :, :, :, None]
    gg = g.reshape(g.shape[0], groups, w.shape[0] // groups, 1, -1)
    grad_w = (gg * (cols - wg)).sum(dim=(0, 4)).reshape(w.shape)
    gcols = (gg * (wg - cols).clamp(-1, 1)).sum(2).reshape(x.shape[0], -1, cols.shape[-1])
    grad_x = F.fold(gcols, x.shape[-2:], k, dilation=d, padding=p, stride=s)
    return grad_x, grad_w


def loop_forward(x: torch.Tensor, w: torch.Tensor, s: int, p: int) -> torch.Tensor:
    """Explicit loops, groups 1, dilation 1: the definition, for checking the references."""
    xp = F.pad(x, (p, p, p, p))
    k = w.shape[-1]
    h = (xp.shape[2] - k) // s + 1
    wo = (xp.shape[3] - k) // s + 1
    y = x.new_zeros(x.shape[0], w.shape[0], h, wo)
    for n, t, i, j in itertools.product(range(x.shape[0]), range(w.shape[0]), range(h),
                                        range(wo)):
        patch = xp[n, :, i * s:i * s + k, j * s:j * s + k]
        y[n, t, i, j] = -(patch - w[t]).abs().sum()
    return y


def make(c_in: int, c_out: int, groups: int, s: int, p: int, d: int, eta: float | None = None,
         budget: int = 64 * 2**20, seed: int = 0) -> tuple[AdderConv2d, torch.Tensor]:
    torch.manual_seed(seed)
    m = AdderConv2d(c_in, c_out, 3, stride=s, padding=p, dilation=d, groups=groups, eta=eta,
                    memory_budget_bytes=budget).to(DT)
    x = torch.randn(2, c_in, 7, 6, dtype=DT)
    return m, x


def test_references_agree_with_loops_and_gradcheck() -> None:
    """The broadcast reference equals explicit loops; its forward passes gradcheck (the
    true gradient of |.|, fine at random points away from kinks)."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, 7, 6, dtype=DT)
    w = torch.randn(5, 3, 3, 3, dtype=DT)
    for s, p in itertools.product([1, 2], [0, 1]):
        torch.testing.assert_close(ref_forward(x, w, s, p, 1, 1), loop_forward(x, w, s, p))
    xs = torch.randn(1, 2, 4, 4, dtype=DT, requires_grad=True)
    ws = torch.randn(3, 2, 3, 3, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ref_forward(a, b, 1, 1, 1, 1), (xs, ws))


@pytest.mark.parametrize("c_in,c_out,groups", CHANNELS)
@pytest.mark.parametrize("s,p,d", GEOMETRY)
def test_forward_matches_reference(c_in: int, c_out: int, groups: int, s: int, p: int,
                                   d: int) -> None:
    m, x = make(c_in, c_out, groups, s, p, d)
    y = m(x)
    torch.testing.assert_close(y, ref_forward(x, m.weight, s, p, d, groups), rtol=0,
                               atol=1e-12)
    assert (y <= 0).all()


def test_filter_equal_to_patch_gives_zero() -> None:
    m, x = make(3, 5, 1, 1, 0, 1)
    with torch.no_grad():
        m.weight[2] = x[1, :, 2:5, 1:4]
    y = m(x)
    assert y[1, 2, 2, 1].item() == 0.0
    assert (y <= 0).all() and (y[1, 2] < 0).sum() == y[1, 2].numel() - 1


@pytest.mark.parametrize("c_in,c_out,groups", CHANNELS)
@pytest.mark.parametrize("s,p,d", GEOMETRY)
def test_backward_matches_published_rules(c_in: int, c_out: int, groups: int, s: int, p: int,
                                          d: int) -> None:
    """eta=None: grad_F = sum g (X - F) (not sign) and grad_X = fold(sum g HT(F - X));
    inputs scaled by 0.5 so both clipped and unclipped differences occur."""
    m, x = make(c_in, c_out, groups, s, p, d)
    x = (0.5 * x).requires_grad_()
    y = m(x)
    g = torch.randn_like(y)
    y.backward(g)
    assert x.grad is not None and m.weight.grad is not None
    grad_x, grad_w = ref_grads(x.detach(), m.weight.detach(), g, s, p, d, groups)
    diff = ref_cols(x.detach(), 3, s, p, d, groups)[:, :, None] - m.weight.detach().reshape(
        groups, c_out // groups, -1)[None, :, :, :, None]
    assert (diff.abs() > 1).any() and (diff.abs() < 1).any()  # clip is exercised
    torch.testing.assert_close(m.weight.grad, grad_w, rtol=0, atol=1e-11)
    torch.testing.assert_close(x.grad, grad_x, rtol=0, atol=1e-11)


def test_input_gradient_is_not_the_true_gradient() -> None:
    """Documents the deliberate departure: autograd through the reference gives the sign
    form; the layer gives the clipped difference (they differ)."""
    m, x = make(3, 5, 1, 1, 1, 1)
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    g = torch.randn(2, 5, 7, 6, dtype=DT)
    ref_forward(xa, m.weight.detach(), 1, 1, 1, 1).backward(g)
    m(xb).backward(g)
    assert xa.grad is not None and xb.grad is not None
    assert not torch.allclose(xa.grad, xb.grad)


@pytest.mark.parametrize("eta", [0.2, 0.5])
def test_eta_scaling_norm_and_direction(eta: float) -> None:
    m, x = make(3, 5, 1, 1, 1, 1, eta=eta)
    m0, _ = make(3, 5, 1, 1, 1, 1, eta=None)
    g = torch.randn(2, 5, 7, 6, dtype=DT)
    m(x).backward(g)
    m0(x).backward(g)
    assert m.weight.grad is not None and m0.weight.grad is not None
    n = m.weight.numel()
    assert torch.linalg.vector_norm(m.weight.grad).item() == pytest.approx(eta * math.sqrt(n))
    unit = m0.weight.grad / torch.linalg.vector_norm(m0.weight.grad)
    torch.testing.assert_close(m.weight.grad, eta * math.sqrt(n) * unit)


def test_eta_applied_once_per_layer_in_a_stack() -> None:
    """Two stacked layers: each layer's gradient is its own unscaled gradient scaled once;
    the scaling does not touch the input gradient passed to the layer below."""
    torch.manual_seed(3)
    x = torch.randn(2, 3, 6, 6, dtype=DT)
    a = AdderConv2d(3, 4, 3, padding=1).to(DT)
    b = AdderConv2d(4, 2, 3, padding=1, eta=0.3).to(DT)
    a0 = AdderConv2d(3, 4, 3, padding=1, eta=None).to(DT)
    b0 = AdderConv2d(4, 2, 3, padding=1, eta=None).to(DT)
    a0.load_state_dict(a.state_dict())
    b0.load_state_dict(b.state_dict())
    g = torch.randn(2, 2, 6, 6, dtype=DT)
    b(a(x) * 0.01).backward(g)
    b0(a0(x) * 0.01).backward(g)
    for layer, plain, eta in ((a, a0, 0.2), (b, b0, 0.3)):
        assert layer.weight.grad is not None and plain.weight.grad is not None
        n = layer.weight.numel()
        expect = eta * math.sqrt(n) * plain.weight.grad / plain.weight.grad.norm()
        torch.testing.assert_close(layer.weight.grad, expect)


def test_zero_upstream_gradient_gives_zero_not_nan() -> None:
    m, x = make(3, 5, 1, 1, 0, 1, eta=0.2)
    m(x).backward(torch.zeros(2, 5, 5, 4, dtype=DT))
    assert m.weight.grad is not None
    assert torch.equal(m.weight.grad, torch.zeros_like(m.weight))


@pytest.mark.parametrize("c_in,c_out,groups", CHANNELS)
@pytest.mark.parametrize("s,p,d", [(1, 1, 1), (2, 0, 2)])
def test_tiny_budget_equals_huge_budget(c_in: int, c_out: int, groups: int, s: int, p: int,
                                        d: int) -> None:
    """One position per chunk (the smallest budget allowed) against a single chunk."""
    per = bytes_per_position(2, c_in, c_out, 9, groups, 8)
    results = []
    for budget in (per, 2**40):
        m, x = make(c_in, c_out, groups, s, p, d, eta=None, budget=budget)
        x.requires_grad_()
        y = m(x)
        torch.manual_seed(9)
        y.backward(torch.randn_like(y))
        results.append((y.detach(), x.grad, m.weight.grad))
    for small, big in zip(*results):
        torch.testing.assert_close(small, big, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n,c_in,c_out,k,groups,positions", [
    (32, 16, 16, 9, 1, 1024), (64, 64, 64, 9, 1, 64), (8, 16, 16, 25, 1, 256),
    (2, 3, 5, 9, 1, 42), (32, 32, 32, 9, 32, 256),
])
@pytest.mark.parametrize("budget", [2**16, 2**20, 64 * 2**20])
def test_chunk_size_respects_budget(n: int, c_in: int, c_out: int, k: int, groups: int,
                                    positions: int, budget: int) -> None:
    per = bytes_per_position(n, c_in, c_out, k, groups, 4)
    # the largest temporary is the (N, C_out, K_g, chunk) broadcast of the input gradient
    assert per >= n * c_out * (c_in // groups) * k * 4
    if per > budget:
        with pytest.raises(ValueError, match="cannot hold one output position"):
            chunk_size(n, c_in, c_out, k, groups, positions, 4, budget)
        return
    c = chunk_size(n, c_in, c_out, k, groups, positions, 4, budget)
    assert 1 <= c <= positions and c * per <= budget
    assert c == positions or (c + 1) * per > budget


def cdist_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the rows (N * positions) of every torch.cdist call: the chunk sizes."""
    calls: list[int] = []
    real = torch.cdist

    def spy(a: torch.Tensor, b: torch.Tensor, p: float = 2.0) -> torch.Tensor:
        calls.append(a.shape[1])
        return real(a, b, p=p)

    monkeypatch.setattr(torch, "cdist", spy)
    return calls


def test_chunks_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a budget of 3 positions, cdist is called on chunks of at most 3 positions."""
    calls = cdist_rows(monkeypatch)
    per = bytes_per_position(2, 3, 5, 9, 1, 8)
    m, x = make(3, 5, 1, 1, 1, 1, budget=3 * per + 1)
    m(x)
    assert calls == [2 * 3] * 14  # 42 positions, N=2 rows per position


def test_auto_budget_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """memory_budget_bytes=None (the default): chunks sized to max(input, output) bytes,
    at least MIN_AUTO_BUDGET_BYTES, never an error (one position per chunk at least),
    same results as one chunk."""
    from search_spaces.adder import MIN_AUTO_BUDGET_BYTES

    assert AdderConv2d(3, 5, 3).memory_budget_bytes is None
    assert auto_budget(2, 3, 42, 5, 42, 8) == MIN_AUTO_BUDGET_BYTES  # tiny tensors: floor
    assert auto_budget(64, 64, 1024, 64, 1024, 4) == 64 * 64 * 1024 * 4  # 16 MiB tensors
    calls = cdist_rows(monkeypatch)
    m, x = make(3, 5, 1, 1, 1, 1, eta=None, budget=2**40)
    x.requires_grad_()
    auto = AdderConv2d(3, 5, 3, padding=1, eta=None).to(DT)
    auto.load_state_dict(m.state_dict())
    xa = x.detach().clone().requires_grad_()
    g = torch.randn(2, 5, 7, 6, dtype=DT)
    m(x).backward(g)
    calls.clear()
    ya = auto(xa)
    assert calls == [2 * 42]  # the 4 MiB floor holds all 42 positions in one chunk
    ya.backward(g)
    torch.testing.assert_close(ya, m(x), rtol=0, atol=1e-12)
    assert xa.grad is not None and auto.weight.grad is not None
    torch.testing.assert_close(xa.grad, x.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(auto.weight.grad, m.weight.grad, rtol=0, atol=1e-12)


def test_budget_too_small_raises() -> None:
    m, x = make(3, 5, 1, 1, 1, 1, budget=100)
    with pytest.raises(ValueError, match="cannot hold one output position"):
        m(x)


@pytest.mark.parametrize("kwargs,match", [
    ({"kernel_size": 0}, "kernel_size"), ({"padding": -1}, "padding"),
    ({"stride": 0}, "stride"), ({"groups": 2}, "groups"), ({"eta": 0.0}, "eta"),
    ({"memory_budget_bytes": 0}, "memory_budget_bytes"),
])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"in_channels": 3, "out_channels": 5, "kernel_size": 3} | kwargs
    with pytest.raises(ValueError, match=match):
        AdderConv2d(**args)


def test_bad_input_shapes() -> None:
    m = AdderConv2d(3, 5, 3)
    with pytest.raises(ValueError, match="expected"):
        m(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="too small"):
        m(torch.randn(1, 3, 2, 2))


def test_module_defaults_and_float32_training_step() -> None:
    """Standard-normal init, no bias, float32, followed by BatchNorm; an SGD step runs."""
    torch.manual_seed(0)
    m = AdderConv2d(8, 16, 3, padding=1)
    assert m.eta == 0.2 and [n for n, _ in m.named_parameters()] == ["weight"]
    assert abs(m.weight.std().item() - 1.0) < 0.1
    net = torch.nn.Sequential(m, torch.nn.BatchNorm2d(16))
    x = torch.randn(4, 8, 8, 8, requires_grad=True)
    net(x).square().mean().backward()
    assert m.weight.grad is not None and x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert m.weight.grad.norm().item() == pytest.approx(0.2 * math.sqrt(m.weight.numel()),
                                                        rel=1e-4)
