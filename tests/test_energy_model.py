"""The linear energy model of an encoding (`latency.energy_model`) and the search's
`--energy-weight` term."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latency.energy import architecture_energy
from latency.energy_model import energy_model
from latency.hardware import load_profile
from nas.cli.main import main
from nas.run_dir import RunDir
from nas.search.config import preset_config
from nas.search.driver import run_search
from nas.search.energy_loss import energy_term_factory, uniform_weights
from search_spaces.errors import InputError
from search_spaces.space import get_space

P100 = load_profile("p100")


@pytest.fixture(scope="module")
def mixed_model():
    space = get_space("darts.darts+adder-act")
    return space, energy_model(space, P100)


def test_linear_form_is_exact_on_architectures(mixed_model) -> None:
    space, model = mixed_model
    rng = np.random.default_rng(11)
    for _ in range(4):
        g = space.sample(rng, 0.6)
        linear = float(model.energy_pj(torch.as_tensor(space.encode(g), dtype=torch.float64)))
        assert linear == pytest.approx(architecture_energy(g, P100).pj, rel=1e-9)
    plain = get_space("darts")
    g = plain.sample(np.random.default_rng(3), 0.5)
    m = energy_model(plain, P100)
    assert float(m.energy_pj(torch.as_tensor(plain.encode(g), dtype=torch.float64))) == \
        pytest.approx(architecture_energy(g, P100).pj, rel=1e-9)


def test_adder_columns_cost_less_than_their_float_ops_and_pairs_cost_their_op(
        mixed_model) -> None:
    space, model = mixed_model
    cols = space.encoding_ops
    coef = model.coefficients_pj.reshape(2, 14, len(cols))
    for float_op in ("sep_conv_3x3", "dil_conv_5x5"):
        adder = "adder_" + float_op
        f, a = coef[..., cols.index(float_op)], coef[..., cols.index(adder)]
        assert (a < f).all() and (a > 0).all()
        torch.testing.assert_close(coef[..., cols.index(float_op + "/silu")], f)
    for free in ("none", "max_pool_3x3", "avg_pool_3x3"):
        assert (coef[..., cols.index(free)] == 0).all()
    # skip_connect is free at stride 1, a FactorizedReduce (two 1x1 convs) at stride 2
    skip = coef[1, :, cols.index("skip_connect")]
    assert skip[0] > 0 and skip[4] == 0  # reduce cell: row 0 reads input 0, row 4 node 2


def test_energy_term_gradient_prefers_adder_ops(mixed_model) -> None:
    space, model = mixed_model
    alpha = {c: torch.zeros(14, 12, dtype=torch.float64, requires_grad=True)
             for c in space.cell_types}
    w = {c: a.softmax(-1) for c, a in alpha.items()}
    term = energy_term_factory(model, space, 1.0)(space.full_edge_ops())
    value = term.fn(w)
    assert float(value.detach()) == pytest.approx(1.0)  # uniform: the reference energy
    value.backward()
    ops = space.op_names
    g = alpha["normal"].grad
    assert (g[:, ops.index("adder_sep_conv_3x3")] < g[:, ops.index("sep_conv_3x3")]).all()
    assert (g[:, ops.index("max_pool_3x3")] < 0).all()  # free ops gain weight


def test_an_energy_weighted_search_lowers_the_expected_energy(tmp_path) -> None:
    """Same seed and data, with and without the term: the supernet's expected energy
    (the model on the final soft weights) ends lower with it."""
    space = get_space("darts.darts+adder")
    model = energy_model(space, P100)
    cfg = preset_config("darts", "small").with_overrides(
        init_channels=4, layers=3, epochs=1, batch_size=16, data_limit=32, seed=1,
        ops="darts+adder")

    def energy_after(weight: float, name: str) -> float:
        run = RunDir.create(tmp_path / name, {"search": cfg.to_dict()})
        terms = [energy_term_factory(model, space, weight)] if weight else []
        run_search(cfg, run, terms=terms, log=lambda m: None)
        last = run.read_jsonl("arch_weights.jsonl")[-1]["weights"]
        w = {c: torch.tensor(last[c], dtype=torch.float64) for c in space.cell_types}
        return float(model.energy_pj(space.encode_weights(w)))

    free, paid = energy_after(0.0, "free"), energy_after(20.0, "paid")
    assert paid < free


def test_uniform_weights_cover_ops_and_activations() -> None:
    space = get_space("darts-act")
    w = uniform_weights(space, ("relu", "silu"))
    assert w["normal"].shape == (14, 8) and float(w["normal"].sum()) == pytest.approx(14)
    assert w["normal_act"].shape == (14, 2)


def test_spaces_without_cell_shapes_are_refused_in_one_line() -> None:
    with pytest.raises(InputError) as exc:
        energy_model(get_space("nb201"), P100)
    assert "--energy-weight needs DARTS cells" in str(exc.value)


@pytest.mark.parametrize("args, message", [
    (["--energy-weight", "0.1"], "--energy-weight needs --hardware NAME"),
    (["--energy-weight", "-1", "--hardware", "p100"], "--energy-weight must be >= 0"),
    (["--space", "nb201", "--energy-weight", "0.1", "--hardware", "p100"],
     "--energy-weight needs DARTS cells"),
])
def test_bad_energy_settings_are_one_line_errors(tmp_path, capsys, args, message) -> None:
    argv = ["search", "--epochs", "1", "--out", str(tmp_path / "r"), *args]
    code = main(argv)
    _, err = capsys.readouterr()
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_search_cli_reports_the_derived_genotypes_energy(tmp_path, capsys) -> None:
    code = main(["search", "--space", "darts", "--ops", "darts+adder", "--hardware", "raspi4",
                 "--energy-weight", "0.1", "--epochs", "1", "--channels", "4", "--layers",
                 "3", "--limit", "32", "--out", str(tmp_path / "r"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    energy = summary["energy"]
    assert energy["genotype_energy_mj"] > 0 and energy["label"].startswith("modelled")
    g = get_space("darts").parse(summary["genotype"])
    assert energy["genotype_energy_mj"] == pytest.approx(
        architecture_energy(g, load_profile("raspi4")).mj)
