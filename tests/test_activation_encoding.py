"""The activation-aware latency encoding ("darts-act", "nb201-act"): columns, the two entry
points, gradients into alpha and beta, sampling, lookup, and a search whose latency term
moves beta."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latency.hardware import load_profile
from latency.predictor.locate import load_for_space
from latency.simulate.roofline import simulate_latency
from nas.run_dir import RunDir
from nas.search.config import preset_config
from nas.search.driver import run_search
from nas.search.latency_loss import latency_term, latency_term_factory
from search_spaces.activation_encoding import activation_space, arch_encoding_space
from search_spaces.activations import ACTIVATIONS, split_pair
from search_spaces.errors import InputError
from search_spaces.genotype_library import resolve_genotype
from search_spaces.space import get_space, space_names, space_of
from search_spaces.supernet import activation_key

DARTS = get_space("darts")
NB201 = get_space("nb201")
ACTS = tuple(ACTIVATIONS)


def column_activation(name: str) -> str | None:
    """The activation a column names (ReLU for a plain conv), None for ops without one."""
    base, act = split_pair(name)
    if act is not None:
        return act
    return "relu" if base.startswith(("sep", "dil", "nor_conv")) else None


# ----------------------------------------------------------------------- columns


def test_variant_columns_cover_every_pair_and_keep_the_other_blocks() -> None:
    var = get_space("darts-act")
    assert var.name == "darts-act"
    # 4 ops without an activation + 4 convolutions x 5 activations, per edge
    assert len(var.encoding_ops) == 4 + 4 * len(ACTS) == 24
    assert var.encoding_size == 2 * 14 * 24
    assert var.encoding_ops[4:9] == ("sep_conv_3x3", "sep_conv_3x3/silu",
                                      "sep_conv_3x3/leaky_relu", "sep_conv_3x3/elu",
                                      "sep_conv_3x3/hardswish")
    nb = get_space("nb201-act")
    assert len(nb.encoding_ops) == 3 + 2 * len(ACTS)
    layout = nb.encoding_layout
    assert layout["onehot"] == (0, 6 * 13)
    shift = 6 * 13 - 6 * 5
    for block, (a, b) in NB201.encoding_layout.items():
        if block != "onehot":
            assert layout[block] == (a + shift, b + shift)


def test_variants_are_looked_up_by_name_but_never_own_an_architecture() -> None:
    assert "darts-act" not in space_names()
    assert get_space("darts-act") is get_space("darts-act")
    g = resolve_genotype("DARTS_V2")
    assert space_of(g) is DARTS
    with pytest.raises(InputError, match="unknown search space 'foo-act'"):
        get_space("foo-act")
    assert arch_encoding_space(g) is DARTS
    pairs = DARTS.rename_ops(g, lambda op: op + "/silu" if op.startswith("sep") else op)
    assert arch_encoding_space(pairs).name == "darts-act"


# --------------------------------------------------------------- the two entry points


def one_hot_weights(space, arch, acts=ACTS) -> dict[str, torch.Tensor]:
    """Soft-weight form of a discrete arch: alpha one-hot, beta one-hot over `acts`."""
    rows = space.encoding_rows(arch)
    out = {}
    for cell, names in rows.items():
        p = torch.zeros(len(names), len(space.op_names))
        q = torch.zeros(len(names), len(acts))
        for e, name in enumerate(names):
            base, act = split_pair(name)
            p[e, space.op_names.index(base)] = 1.0
            q[e, acts.index(act or "relu")] = 1.0
        out[cell], out[activation_key(cell)] = p, q
    return out


@pytest.mark.parametrize("plain", [DARTS, NB201], ids=lambda s: s.name)
def test_encode_equals_encode_weights_on_one_hot_weights(plain) -> None:
    var = activation_space(plain)
    rng = np.random.default_rng(0)
    for _ in range(5):
        arch = var.sample(rng, 0.6)
        code = var.encode(arch)
        assert code.shape == (var.encoding_size,) and code.dtype == np.float32
        soft = var.encode_weights(one_hot_weights(plain, arch)).numpy()
        np.testing.assert_array_equal(code, soft)
        # one column set per edge row, on the pair the edge holds
        k = len(var.encoding_ops)
        rows = code[: len(plain.cell_types) * plain.num_edges * k].reshape(-1, k)
        assert (rows.sum(axis=1) == 1).all()
        names = [n for cell in plain.cell_types for n in plain.encoding_rows(arch)[cell]]
        assert [var.encoding_ops[i] for i in rows.argmax(axis=1)] == names


@pytest.mark.parametrize("plain", [DARTS, NB201], ids=lambda s: s.name)
def test_a_plain_architecture_sits_in_the_relu_columns_of_the_plain_encoding(plain) -> None:
    var = activation_space(plain)
    arch = plain.sample(np.random.default_rng(3), 0.5)
    code, base = var.encode(arch), plain.encode(arch)
    k, kk = len(var.encoding_ops), len(plain.op_names)
    n = len(plain.cell_types) * plain.num_edges
    keep = [i for i, c in enumerate(var.encoding_ops) if column_activation(c) in (None, "relu")]
    np.testing.assert_array_equal(code[: n * k].reshape(n, k)[:, keep],
                                  base[: n * kk].reshape(n, kk))
    np.testing.assert_array_equal(code[n * k:], base[n * kk:])  # NB201's structure blocks
    # soft weights without beta (a plain search) mean ReLU everywhere
    w = {c: torch.softmax(torch.randn(plain.num_edges, kk), -1) for c in plain.cell_types}
    soft = var.encode_weights(w).numpy().reshape(-1)[: n * k].reshape(n, k)
    others = [i for i, c in enumerate(var.encoding_ops) if column_activation(c) not in
              (None, "relu")]
    assert (soft[:, others] == 0).all()


def test_joint_entry_is_the_product_and_gradients_match_finite_differences() -> None:
    """d(cost . encoding)/d(alpha, beta) against finite differences, through the
    softmaxes, over a searched subset of activations."""
    searched = ("relu", "silu", "elu")
    var = activation_space(DARTS, searched)
    torch.manual_seed(0)
    cost = torch.rand(var.encoding_size, dtype=torch.float64)
    alpha = torch.randn(2, 14, 8, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(2, 14, 3, dtype=torch.float64, requires_grad=True)

    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        w = {"normal": a[0].softmax(-1), "reduce": a[1].softmax(-1),
             activation_key("normal"): b[0].softmax(-1),
             activation_key("reduce"): b[1].softmax(-1)}
        return var.encode_weights(w) @ cost

    assert torch.autograd.gradcheck(loss, (alpha, beta))
    # the entry of (sep_conv_3x3 / silu) on the first normal edge is p_sep * q_silu
    w = {"normal": alpha[0].softmax(-1), "reduce": alpha[1].softmax(-1),
         activation_key("normal"): beta[0].softmax(-1),
         activation_key("reduce"): beta[1].softmax(-1)}
    enc = var.encode_weights(w)
    col = var.encoding_ops.index("sep_conv_3x3/silu")
    expected = w["normal"][0, DARTS.op_names.index("sep_conv_3x3")] * \
        w[activation_key("normal")][0, 1]
    torch.testing.assert_close(enc[col], expected)
    # an activation outside the searched subset gets weight 0; skip keeps p_skip
    assert float(enc[var.encoding_ops.index("sep_conv_3x3/hardswish")].detach()) == 0.0
    torch.testing.assert_close(enc[var.encoding_ops.index("skip_connect")],
                               w["normal"][0, DARTS.op_names.index("skip_connect")])


def test_pruned_pdarts_edges_scatter_to_their_columns() -> None:
    var = activation_space(DARTS, ("relu", "silu"))
    keep = ["skip_connect", "sep_conv_3x3"]
    edge_ops = {c: [keep] * 14 for c in DARTS.cell_types}
    w = {c: torch.tensor([[0.25, 0.75]] * 14) for c in DARTS.cell_types}
    w.update({activation_key(c): torch.tensor([[0.4, 0.6]] * 14) for c in DARTS.cell_types})
    enc = var.encode_weights(w, edge_ops).reshape(28, -1)
    cols = var.encoding_ops
    torch.testing.assert_close(enc[:, cols.index("skip_connect")], torch.full((28,), 0.25))
    torch.testing.assert_close(enc[:, cols.index("sep_conv_3x3")], torch.full((28,), 0.3))
    torch.testing.assert_close(enc[:, cols.index("sep_conv_3x3/silu")], torch.full((28,), 0.45))
    assert float(enc.sum()) == pytest.approx(28.0)


def test_bad_activation_weights_are_one_line_errors() -> None:
    var = activation_space(DARTS, ("relu", "silu"))
    w = {c: torch.full((14, 8), 1 / 8) for c in DARTS.cell_types}
    w[activation_key("normal")] = torch.full((14, 3), 1 / 3)
    with pytest.raises(InputError, match=r"shape \(14, 2\)"):
        var.encode_weights(w)
    with pytest.raises(InputError, match="unknown activation 'swish'"):
        activation_space(DARTS, ("relu", "swish"))


# ------------------------------------------------------------------------ sampling


def test_profiling_samples_draw_activations_from_the_searched_set() -> None:
    var = activation_space(DARTS, ("silu", "elu"))
    a = var.sample(np.random.default_rng(7), 0.8)
    assert a == var.sample(np.random.default_rng(7), 0.8)
    ops = [op for op, _ in a.normal + a.reduce]
    convs = [op for op in ops if op.startswith(("sep", "dil"))]
    assert convs and all(split_pair(op)[1] in ("silu", "elu") for op in convs)
    assert all("/" not in op for op in ops if op not in convs)
    DARTS.parse(DARTS.to_json(a))  # a valid genotype of the plain space


# ----------------------------------------------------------- predictors and the simulator


def test_a_plain_predictor_is_refused_by_the_activation_encoding() -> None:
    from latency.predictor.locate import default_predictor_path

    path = default_predictor_path("p100", "darts")
    with pytest.raises(InputError, match="op"):
        load_for_space(path, get_space("darts-act"))


def test_simulated_profiles_cost_unfused_activations_as_kernels_of_their_own() -> None:
    """Every shipped simulated profile fuses only ReLU into a convolution (its runtime's
    documented epilogues): the same cell with SiLU inside its convolutions launches more
    kernels and is slower; the FLOPs of each activation kernel follow its cost table."""
    g = resolve_genotype("DARTS_V2")
    silu = DARTS.rename_ops(g, lambda op: op + "/silu" if op.startswith(("sep", "dil"))
                            else op)
    for hw in ("p100", "raspi4"):
        profile = load_profile(hw)
        assert profile.specs["fused_activations"] == ["relu"]
        relu_net, shape = DARTS.deployed_network(g, profile)
        silu_net, _ = DARTS.deployed_network(silu, profile)
        a, b = simulate_latency(relu_net, shape, profile), simulate_latency(silu_net, shape,
                                                                            profile)
        assert b.kernels > a.kernels and b.ms > a.ms
        acts = [t for t in b.per_layer if t.op == "silu"]
        assert acts and all(t.flops == 16.0 * t.bytes / 8 for t in acts)  # in + out, fp32
    # a runtime that fuses SiLU too launches as many kernels as for ReLU
    profile = load_profile("p100")
    fused = simulate_latency(DARTS.deployed_network(silu, profile)[0], shape, profile,
                             fused_activations=["relu", "silu"])
    relu_p100 = simulate_latency(DARTS.deployed_network(g, profile)[0], shape, profile)
    assert fused.kernels == relu_p100.kernels and fused.ms > relu_p100.ms  # SiLU's FLOPs


# ------------------------------------------------- a latency-weighted search moves beta


class PairCost:
    """A latency model linear in the encoding: every non-ReLU pair costs 1 ms."""

    reference_ms = 1.0

    def __init__(self, space) -> None:
        self.cost = torch.tensor([0.0 if column_activation(c) in (None, "relu") else 1.0
                                  for c in space.encoding_ops] * (space.encoding_size //
                                                                  len(space.encoding_ops)))

    def latency_ms(self, encoding: torch.Tensor) -> torch.Tensor:
        return encoding @ self.cost.to(encoding.dtype)


def test_latency_gradient_reaches_beta() -> None:
    var = activation_space(DARTS, ("relu", "silu"))
    alpha = {c: torch.zeros(14, 8, requires_grad=True) for c in DARTS.cell_types}
    beta = {c: torch.zeros(14, 2, requires_grad=True) for c in DARTS.cell_types}
    w = {c: alpha[c].softmax(-1) for c in DARTS.cell_types}
    w.update({activation_key(c): beta[c].softmax(-1) for c in DARTS.cell_types})
    term = latency_term(PairCost(var), var, DARTS.full_edge_ops(), weight=1.0)
    term.fn(w).backward()
    for c in DARTS.cell_types:
        g = beta[c].grad
        assert g is not None and (g[:, 0] < 0).all() and (g[:, 1] > 0).all()
        # the convolutions carry the cost, so alpha moves too
        assert alpha[c].grad is not None and alpha[c].grad.abs().sum() > 0


def test_a_latency_weighted_search_moves_beta_toward_the_cheaper_activation(tmp_path) -> None:
    acts = ("relu", "silu")
    cfg = preset_config("darts", "small").with_overrides(
        init_channels=4, layers=3, epochs=2, batch_size=32, data_limit=128, seed=3,
        arch_start_epoch=0, activations=acts)
    var = activation_space(DARTS, acts)

    def beta_after(weight: float, name: str) -> dict[str, np.ndarray]:
        run = RunDir.create(tmp_path / name, {"search": cfg.to_dict()})
        terms = [latency_term_factory(PairCost(var), var, weight)] if weight else []
        run_search(cfg, run, terms=terms, log=lambda m: None)
        last = run.read_jsonl("arch_weights.jsonl")[-1]["weights"]
        return {c: np.asarray(last[activation_key(c)]) for c in DARTS.cell_types}

    free, paid = beta_after(0.0, "free"), beta_after(50.0, "paid")
    for c in DARTS.cell_types:
        # beta starts at q = 0.5 +- 0.001; with SiLU costing latency q(relu) rises on every
        # edge (Adam: by about lr per step), beyond where the task loss alone takes it
        assert paid[c][:, 0].min() > 0.55
        assert free[c][:, 0].min() < paid[c][:, 0].min()
        assert paid[c][:, 0].mean() > free[c][:, 0].mean() + 0.02
