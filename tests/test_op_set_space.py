"""Searching another named op set (`--ops adder`, `--ops darts+adder`): the space variants,
their encodings, the supernet's separate weights, the per-edge activation mixture of
ops without a batched form, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nas.cli.main import main
from search_spaces.activation_encoding import arch_encoding_space
from search_spaces.adder import AdderConv2d
from search_spaces.adder_ops import adder_form
from search_spaces.errors import InputError
from search_spaces.genotype_library import resolve_genotype
from search_spaces.ops import DARTS_PRIMITIVES
from search_spaces.space import get_space, space_names, space_of
from search_spaces.supernet_ops import EdgeMixture, PerEdge, SourceCache

DARTS = get_space("darts")
V2 = resolve_genotype("DARTS_V2")
ADDER_V2 = DARTS.rename_ops(V2, adder_form)


def run_cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_variants_carry_the_union_of_their_sets_in_order() -> None:
    both = get_space("darts.darts+adder")
    assert both.op_names[:8] == DARTS_PRIMITIVES
    assert both.op_names[8:] == ("adder_sep_conv_3x3", "adder_sep_conv_5x5",
                                 "adder_dil_conv_3x3", "adder_dil_conv_5x5")
    assert both.encoding_size == 2 * 14 * 12
    adder = get_space("darts.adder")
    assert "sep_conv_3x3" not in adder.op_names and len(adder.op_names) == 8
    assert get_space("darts.darts") is DARTS  # the space's own set is the space
    assert "darts.adder" not in space_names()
    act = get_space("darts.darts+adder-act")
    assert len(act.encoding_ops) == 4 + 8 * 5


@pytest.mark.parametrize("name, message", [
    ("nb201.adder", "nb201 space has a fixed op set"),
    ("darts.floats", "unknown op set 'floats'"),
    ("darts.darts+", "empty op set name"),
])
def test_bad_variant_names_are_one_line_errors(name, message) -> None:
    with pytest.raises(InputError) as exc:
        get_space(name)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_the_plain_space_reads_and_builds_adder_genotypes() -> None:
    g = DARTS.parse(DARTS.to_json(ADDER_V2))
    assert space_of(g) is DARTS
    net = DARTS.build_network(g, 8, 3, 10, auxiliary=False)
    assert any(isinstance(m, AdderConv2d) for m in net.modules())
    with pytest.raises(InputError):  # the plain encoding has no adder columns
        DARTS.encode(g)
    assert arch_encoding_space(g).name == "darts.adder"
    mixed = DARTS.rename_ops(V2, lambda op: adder_form(op) if op == "sep_conv_3x3" else op)
    assert arch_encoding_space(mixed).name == "darts.darts+adder"
    silu = DARTS.rename_ops(mixed, lambda op: op + "/silu" if "conv" in op else op)
    assert arch_encoding_space(silu).name == "darts.darts+adder-act"
    assert arch_encoding_space(V2) is DARTS


def test_variant_encoding_entry_points_agree() -> None:
    space = get_space("darts.darts+adder")
    rng = np.random.default_rng(2)
    for _ in range(4):
        g = space.sample(rng, 0.7)
        code = space.encode(g)
        rows = space.encoding_rows(g)
        w = {}
        for cell, names in rows.items():
            onehot = torch.zeros(14, len(space.op_names))
            for e, name in enumerate(names):
                onehot[e, space.op_names.index(name)] = 1.0
            w[cell] = onehot
        np.testing.assert_array_equal(code, space.encode_weights(w).numpy())
        assert set(op for op, _ in g.normal + g.reduce) <= set(space.op_names) - {"none"}


def test_float_and_adder_candidates_keep_their_own_weights() -> None:
    space = get_space("darts.darts+adder")
    net = space.build_supernet(4, 3, 10, in_channels=1)
    adders = [m for m in net.modules() if isinstance(m, AdderConv2d)]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert adders and convs
    ids = [id(m.weight) for m in adders + convs]
    assert len(ids) == len(set(ids))
    arch_ids = {id(p) for p in net.arch_parameters()}
    assert not arch_ids & set(ids)
    logits = net(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(m.weight.grad is not None for m in adders)


def test_per_edge_mixture_equals_the_explicit_one_and_its_gradient_is_exact() -> None:
    """An op without a batched activation form runs one module per edge whose ReLUs are
    EdgeMixtures of that edge's q: output = the op built around sum_k q_k a_k."""
    torch.manual_seed(0)
    acts = ("relu", "silu", "elu")
    op = PerEdge("adder_dil_conv_3x3", 3, 1, 2, mixed_activations=acts).double()
    mixtures = [m for m in op.modules() if isinstance(m, EdgeMixture)]
    assert len(mixtures) == 2 and not any(isinstance(m, torch.nn.ReLU) for m in op.modules())
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    beta = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)

    def out(b: torch.Tensor) -> torch.Tensor:
        return op(SourceCache(x, acts, b.softmax(-1)))

    op.eval()  # BN statistics fixed: a function of beta alone
    y = out(beta)
    assert y.shape == (2, 2, 3, 5, 5)
    (grad,) = torch.autograd.grad(y.sum(), beta)
    q = beta.softmax(-1)
    fns = (torch.relu, torch.nn.functional.silu, torch.nn.functional.elu)
    explicit = []
    for e, module in enumerate(op.ops):
        mixed_input = sum(q[e, k] * fn(x) for k, fn in enumerate(fns))
        rest = torch.nn.Sequential(*list(module.children())[1:])
        explicit.append(rest(mixed_input))
        torch.testing.assert_close(y[:, e], explicit[-1])
    # the same gradient into beta (the adder layers' own backward rules in both: AdderNet
    # clips the input gradient, so finite differences would not match either)
    (expected,) = torch.autograd.grad(sum(t.sum() for t in explicit), beta)
    torch.testing.assert_close(grad, expected)
    assert grad.abs().sum() > 0


# --------------------------------------------------------------------------------- CLI


def tiny_search(capsys, out_dir, *extra) -> dict:
    code, out, err = run_cli(
        ["search", "--space", "darts", "--epochs", "1", "--channels", "4", "--layers", "3",
         "--limit", "32", "--out", str(out_dir), "--json", *extra], capsys)
    assert code == 0, err
    return json.loads(out)


def test_search_over_darts_and_adder_and_its_result_retrains(tmp_path, capsys) -> None:
    summary = tiny_search(capsys, tmp_path / "s", "--ops", "darts+adder")
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["search"]["ops"] == "darts+adder"
    arch = [json.loads(x) for x in (tmp_path / "s" / "arch_weights.jsonl").read_text()
            .splitlines()][-1]
    assert len(arch["weights"]["normal"][0]) == 12
    assert arch["edge_ops"]["normal"][0][8] == "adder_sep_conv_3x3"
    g = DARTS.parse(summary["genotype"])
    code, out, err = run_cli(["retrain", "--genotype", str(tmp_path / "s" / "genotype.json"),
                              "--epochs", "1", "--channels", "4", "--layers", "3", "--limit",
                              "32", "--batch-size", "16", "--no-measure", "--out",
                              str(tmp_path / "r"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["params"] > 0
    assert g is not None


def test_adder_search_composes_with_activations(tmp_path, capsys) -> None:
    summary = tiny_search(capsys, tmp_path / "s", "--ops", "adder", "--activations",
                          "relu,silu")
    g = DARTS.parse(summary["genotype"])
    ops = {op.split("/")[0] for op, _ in g.normal + g.reduce}
    assert ops <= set(get_space("darts.adder").op_names)


@pytest.mark.parametrize("args, message", [
    (["--ops", "floats"], "unknown op set 'floats'"),
    (["--ops", "adder", "--space", "nb201"], "nb201 space has a fixed op set"),
])
def test_bad_ops_are_one_line_errors_before_any_write(tmp_path, capsys, args, message) -> None:
    argv = ["search", "--epochs", "1", "--out", str(tmp_path / "r"), *args]
    if "--space" not in args:
        argv += ["--space", "darts"]
    code, _, err = run_cli(argv, capsys)
    assert code != 0 and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_onnx_export_says_plainly_that_adder_layers_have_no_operator(tmp_path) -> None:
    from nas.retrain.export import export_network_onnx

    net = DARTS.build_network(ADDER_V2, 4, 3, 10, in_channels=1, auxiliary=False)
    note = export_network_onnx(net, (1, 8, 8), tmp_path / "m.onnx")
    assert note is not None and "ONNX has no operator for AdderConv2d" in note
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("name, stride", [("adder_sep_conv_3x3", 1), ("adder_dil_conv_5x5", 2)])
def test_batched_adder_op_is_its_edges_modules_and_scales_each_edge_alone(name, stride) -> None:
    """The supernet form of an adder op for n edges (grouped adder layers) computes what n
    per-edge modules with the same filters compute, and each edge's filter gradient gets
    AdderNet's scale on its own, as its own module's would."""
    from search_spaces.op_spec import op_spec

    torch.manual_seed(0)
    n, C = 3, 4
    spec = op_spec(name)
    batched = spec.batched(C, stride, n).double()
    per_edge = PerEdge(name, C, stride, n).double()
    adders = [m for m in batched.modules() if isinstance(m, AdderConv2d)]
    for e, module in enumerate(per_edge.ops):
        mine = [m for m in module.modules() if isinstance(m, AdderConv2d)]
        assert len(mine) == len(adders)
        with torch.no_grad():
            for big, small in zip(adders, mine, strict=True):
                small.weight.copy_(big.weight[e * C:(e + 1) * C])
    x = torch.randn(2, C, 6, 6, dtype=torch.float64)
    y_b, y_p = batched(SourceCache(x)), per_edge(SourceCache(x))
    torch.testing.assert_close(y_b, y_p)
    g = torch.randn_like(y_b)
    y_b.backward(g)
    y_p.backward(g)
    for e, module in enumerate(per_edge.ops):
        mine = [m for m in module.modules() if isinstance(m, AdderConv2d)]
        for big, small in zip(adders, mine, strict=True):
            torch.testing.assert_close(big.weight.grad[e * C:(e + 1) * C], small.weight.grad)


def test_retrain_report_counts_adder_additions_and_modelled_energy(tmp_path, capsys) -> None:
    """The adder form of DARTS_V2 retrained with --hardware: the report gives the adder
    layers' additions and the modelled energy, lower than the float cell's."""
    adder = DARTS.rename_ops(resolve_genotype("DARTS_V2"), adder_form)
    DARTS.save(adder, tmp_path / "adder.json")
    reports = {}
    for name, genotype in (("adder", str(tmp_path / "adder.json")), ("float", "DARTS_V2")):
        code, out, err = run_cli(["retrain", "--genotype", genotype, "--epochs", "1",
                                  "--channels", "4", "--layers", "3", "--limit", "32",
                                  "--batch-size", "16", "--no-measure", "--hardware",
                                  "raspi4", "--out", str(tmp_path / name), "--json"], capsys)
        assert code == 0, err
        reports[name] = json.loads(out)
    assert reports["adder"]["adder_additions"] > 0 and "adder_additions" not in reports["float"]
    assert reports["adder"]["energy"]["mj"] < reports["float"]["energy"]["mj"]
    assert "bit_operations" not in reports["float"]
