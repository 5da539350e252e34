"""NAS-Bench-201 space: arch strings, network, encoding (discrete == soft one-hot, grads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import search_spaces.nb201 as nb201
from search_spaces.errors import GenotypeError, InputError
from search_spaces.nb201 import (
    ENCODING_LAYOUT,
    ENCODING_SIZE,
    NB201_OPS,
    Nb201Arch,
    encode,
    encode_weights,
    format_arch,
    one_hot,
    parse_arch,
)
from search_spaces.nb201_space import NB201_SPACE
from search_spaces.ops import op_names

ALL_CONV3 = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)
MIXED = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|none~1|skip_connect~2|"
DISCONNECTED = "|none~0|+|none~0|avg_pool_3x3~1|+|none~0|avg_pool_3x3~1|skip_connect~2|"


def test_round_trip_and_space_api():
    for s in (ALL_CONV3, MIXED, DISCONNECTED):
        arch = NB201_SPACE.parse(s)
        assert NB201_SPACE.format(arch) == s == str(arch)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = NB201_SPACE.sample(rng)
        assert parse_arch(format_arch(a)) == a
    assert NB201_SPACE.name == "nb201" and NB201_SPACE.num_edges == 6
    assert NB201_SPACE.op_names == NB201_OPS
    assert {"nor_conv_1x1", "nor_conv_3x3"} <= set(op_names())


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("|nor_conv_3x3~0|+|none~0|none~1|", "3 '+'-separated"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "'conv~0'"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "'none~1'"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2"),
        ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "'none0'"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "enclosed"),
    ],
)
def test_parse_errors_are_one_line_and_name_the_token(text, needle):
    with pytest.raises(GenotypeError) as info:
        parse_arch(text)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg


def test_arch_validates_ops():
    with pytest.raises(GenotypeError, match="sep_conv_3x3"):
        Nb201Arch(("sep_conv_3x3",) * 6)
    with pytest.raises(GenotypeError, match="6 edges"):
        Nb201Arch(("none",) * 5)


def test_network_forward_shape_and_parameter_counts():
    torch.manual_seed(0)
    net = NB201_SPACE.build_network(MIXED, C=8, layers=1, num_classes=7)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    # Published NAS-Bench-201 CIFAR-10 range: 0.073M .. 1.531M parameters. By hand:
    # stem 3*16*9 + 2*16 = 464; reductions 14,464 and 57,600; last BN 128; fc 650;
    # per all-conv3x3 cell 6*(9C^2 + 2C): 5 cells each at C = 16, 32, 64.
    base = 464 + 14_464 + 57_600 + 128 + 650
    cells = sum(5 * 6 * (9 * c * c + 2 * c) for c in (16, 32, 64))
    big = NB201_SPACE.build_network(ALL_CONV3)
    assert sum(p.numel() for p in big.parameters()) == base + cells == 1_531_546
    empty = NB201_SPACE.build_network("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert sum(p.numel() for p in empty.parameters()) == base == 73_306


def test_encoding_structure():
    assert ENCODING_SIZE == NB201_SPACE.encoding_size == max(b for _, b in ENCODING_LAYOUT.values())
    e = encode(DISCONNECTED)
    sl = {k: e[a:b] for k, (a, b) in ENCODING_LAYOUT.items()}
    np.testing.assert_array_equal(sl["onehot"], one_hot(DISCONNECTED).ravel())
    np.testing.assert_array_equal(sl["edge_in"], [1, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(sl["edge_out"], [1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(sl["node_in"], [0, 0, 0])
    full = encode(ALL_CONV3)
    np.testing.assert_array_equal(full[ENCODING_LAYOUT["node_in"][0]:], [1, 2, 3, 1, 2, 3])


def test_encode_weights_equals_encode_on_one_hot():
    rng = np.random.default_rng(1)
    archs = [NB201_SPACE.sample(rng) for _ in range(30)] + [parse_arch(DISCONNECTED)]
    for a in archs:
        soft = NB201_SPACE.encode_weights(torch.from_numpy(one_hot(a)))
        assert torch.equal(soft, torch.from_numpy(NB201_SPACE.encode(a)))
    batch = torch.from_numpy(np.stack([one_hot(a) for a in archs]))
    expected = np.stack([encode(a) for a in archs])
    np.testing.assert_array_equal(encode_weights(batch).numpy(), expected)
    with pytest.raises(InputError, match="shape"):
        encode_weights(torch.zeros(6, 4))


def test_encode_weights_gradient_matches_finite_differences():
    torch.manual_seed(0)
    alpha = torch.randn(6, 5, dtype=torch.float64)
    proj = torch.randn(ENCODING_SIZE, dtype=torch.float64)

    def f(a: torch.Tensor) -> torch.Tensor:
        return (encode_weights(torch.softmax(a, dim=-1)) * proj).sum()

    a = alpha.clone().requires_grad_(True)
    f(a).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    eps = 1e-6
    for e, o in [(0, 0), (2, 3), (5, 0), (4, 2)]:
        d = torch.zeros_like(alpha)
        d[e, o] = eps
        fd = (f(alpha + d) - f(alpha - d)) / (2 * eps)
        assert abs(fd.item() - a.grad[e, o].item()) < 1e-6
    # the structural blocks themselves depend on the `none` weight (not just the one-hot)
    w = torch.full((6, 5), 0.2, dtype=torch.float64, requires_grad=True)
    encode_weights(w)[ENCODING_LAYOUT["edge_in"][0]:].sum().backward()
    assert w.grad[:, 0].abs().sum() > 0


# ------------------------------------------------------------------- computation key
def _swap(arch: str, a: int, b: int) -> str:
    ops = list(nb201.parse_arch(arch).ops)
    ops[a], ops[b] = ops[b], ops[a]
    return nb201.format_arch(ops)


# edge order: 0->1, 0->2, 1->2, 0->3, 1->3, 2->3
TWIN = "|skip_connect~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|nor_conv_1x1~0|none~1|skip_connect~2|"


def test_computation_key_identifies_twins_through_a_skip():
    key = nb201.computation_key
    # node 1 is the input itself: ops into node 2 (and node 3) from nodes 0 and 1 swap
    assert key(TWIN) == key(_swap(TWIN, 1, 2)) == key(_swap(TWIN, 3, 4))
    # not from node 2, which is computed
    assert key(TWIN) != key(_swap(TWIN, 3, 5))
    # without the skip on 0->1, node 1 is a new tensor: no twins
    conv = TWIN.replace("|skip_connect~0|+", "|nor_conv_1x1~0|+", 1)
    assert key(conv) != key(_swap(conv, 1, 2))
    # a chain of lone skips: node 2 = node 1 = input, so 0->3 and 2->3 swap too
    chain = "|skip_connect~0|+|none~0|skip_connect~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"
    assert key(chain) == key(_swap(chain, 3, 5)) == key(_swap(chain, 4, 5))
    # two live inputs make node 2 = 2x, a new tensor, even if both are skips
    double = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|nor_conv_3x3~0|none~1|none~2|"
    assert key(double) != key(_swap(double, 3, 5))


def test_twins_compute_the_same_values_with_the_same_weights():
    """The claim the key makes: a twin is the same network with its edges renamed."""
    torch.manual_seed(0)
    a, b = nb201.parse_arch(TWIN), nb201.parse_arch(_swap(TWIN, 1, 2))
    cell_a, cell_b = nb201.InferCell(a, 4).eval(), nb201.InferCell(b, 4).eval()
    for e, f in enumerate((0, 2, 1, 3, 4, 5)):  # b's edge f holds a's edge e's op
        cell_b.edges[f].load_state_dict(cell_a.edges[e].state_dict())
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(cell_a(x), cell_b(x))
    assert nb201.computation_key(a) == nb201.computation_key(b)
