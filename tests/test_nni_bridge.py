"""The NNI bridge: NNI's DARTS alphas as our encoding, our latency term on them, and the
hook into NNI's DARTS strategy. The mapping and the penalty need no NNI and always run;
the tests at the end import NNI 3.0 and are skipped where the `nni` extra is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from latency.predictor.locate import load_for_space, require_predictor
from nas.nni_bridge import (
    NNI_DARTS_OPS,
    LatencyPenalty,
    alpha_mapping,
    find_cell_alphas,
    genotype_from_export,
    latency_penalty,
    parse_edge_label,
    soft_weights,
)
from nas.search.latency_loss import PredictorLatency, latency_term
from search_spaces.encoding import edge_index
from search_spaces.errors import InputError
from search_spaces.genotype_library import DARTS_V2
from search_spaces.space import get_space

SPACE = get_space("darts")
OURS = SPACE.op_names
ROWS = edge_index(4)                      # (input, node) -> row, DARTS order
LABELS = [f"{c}/{node}_{src}" for c in ("normal", "reduce")
          for (src, node), _ in sorted(ROWS.items(), key=lambda kv: kv[1])]


def nni_alphas(seed: int = 0, dtype: torch.dtype = torch.float32,
               grad: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(8, generator=g, dtype=dtype).requires_grad_(grad) for k in LABELS}


def our_logits(alphas: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same logits in our layout: NNI column k -> our column of that op, last -> none."""
    out = {}
    for cell in ("normal", "reduce"):
        rows = torch.zeros(14, 8, dtype=next(iter(alphas.values())).dtype)
        for label, a in alphas.items():
            c, node, src = parse_edge_label(label)
            if c != cell:
                continue
            for k, op in enumerate((*NNI_DARTS_OPS, "none")):
                rows[ROWS[(src, node)], OURS.index(op)] = a[k]
        out[cell] = rows
    return out


@pytest.fixture(scope="module")
def p100() -> PredictorLatency:
    """The shipped p100 predictor in float64 (its own copy: the bridge caches another)."""
    mlp, _ = load_for_space(require_predictor("p100"), SPACE)
    return PredictorLatency(mlp.double())


# -- the mapping ------------------------------------------------------------------------


def test_mapping_puts_each_nni_column_in_its_named_column_and_the_last_in_none() -> None:
    m = alpha_mapping()
    assert m.nni_ops == NNI_DARTS_OPS and m.implicit_zero and m.width == 8
    assert m.index == tuple(OURS.index(op) for op in NNI_DARTS_OPS) + (OURS.index("none"),)
    sel = m.selection(torch.float64)
    assert sel.shape == (8, 8) and torch.equal(sel.sum(1), torch.ones(8, dtype=torch.float64))


def test_soft_weights_follow_edge_labels_and_op_names() -> None:
    # one dominant candidate per edge, different everywhere, so any misplaced row or
    # column shows
    alphas = {}
    for n, label in enumerate(LABELS):
        a = torch.zeros(8)
        a[n % 8] = 30.0
        alphas[label] = a
    w = soft_weights(alphas)
    for n, label in enumerate(LABELS):
        cell, node, src = parse_edge_label(label)
        want = (*NNI_DARTS_OPS, "none")[n % 8]
        assert OURS[int(w[cell][ROWS[(src, node)]].argmax())] == want
    # probabilities: NNI's softmax over the edge, permuted into our columns
    alphas = nni_alphas(1)
    w = soft_weights(alphas)
    ref = {c: torch.softmax(v, -1) for c, v in our_logits(alphas).items()}
    for c in ("normal", "reduce"):
        torch.testing.assert_close(w[c], ref[c])
        torch.testing.assert_close(w[c].sum(1), torch.ones(14))


def test_mapping_errors_are_one_line_and_name_the_problem() -> None:
    alphas = nni_alphas()
    cases = {
        "missing 1 edge(s) of the reduce cell: reduce/5_4": {
            k: v for k, v in alphas.items() if k != "reduce/5_4"},
        "unknown cell 'cell0'": {**alphas, "cell0/2_0": torch.zeros(8)},
        "no edge from node 5 into node 2": {**alphas, "normal/2_5": torch.zeros(8)},
        "expected (8,)": {**alphas, "normal/2_0": torch.zeros(7)},
        "not an NNI DARTS cell edge label": {**alphas, "normal/op_2_0": torch.zeros(8)},
    }
    for needle, bad in cases.items():
        with pytest.raises(InputError) as e:
            soft_weights(bad)
        assert needle in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="'conv_7x1_1x7' has no column in the 'darts'"):
        alpha_mapping((*NNI_DARTS_OPS, "conv_7x1_1x7"))
    with pytest.raises(InputError, match="twice"):
        alpha_mapping(("skip_connect", "skip_connect"))


def test_a_subset_of_candidates_leaves_our_other_columns_at_zero() -> None:
    m = alpha_mapping(("sep_conv_3x3", "skip_connect"))
    alphas = {k: torch.zeros(3) for k in LABELS}
    w = soft_weights(alphas, m)["normal"]
    third = torch.full((14,), 1 / 3)
    for op in ("sep_conv_3x3", "skip_connect", "none"):
        torch.testing.assert_close(w[:, OURS.index(op)], third)
    assert float(w[:, OURS.index("dil_conv_5x5")].abs().sum()) == 0.0


# -- the penalty --------------------------------------------------------------------------


@pytest.mark.parametrize("target", [None, 2.0])
def test_penalty_equals_our_latency_term_on_the_same_soft_weights(p100, target) -> None:
    alphas = nni_alphas(2, torch.float64)
    pen = LatencyPenalty(p100, 0.7, target)
    ours = latency_term(p100, SPACE, SPACE.full_edge_ops(), 0.7, target)(
        {c: torch.softmax(v, -1) for c, v in our_logits(alphas).items()})
    assert float(pen(alphas)) == pytest.approx(float(ours), rel=1e-12)
    if target is None:
        ms = pen.predicted_ms(alphas)
        assert float(pen(alphas)) == pytest.approx(0.7 * ms / p100.reference_ms, rel=1e-9)


def test_shipped_predictor_through_the_functional_form() -> None:
    alphas = nni_alphas(3)
    v = latency_penalty(alphas, hardware="p100", weight=2.0)
    pen = LatencyPenalty.for_hardware("p100", 2.0)
    assert pen.label == "simulated"
    assert float(v) == pytest.approx(2.0 * pen.predicted_ms(alphas) / pen.model.reference_ms,
                                     rel=1e-5)
    as_params = nn.ParameterDict({k: nn.Parameter(a) for k, a in alphas.items()})
    assert float(pen(as_params).detach()) == pytest.approx(float(v), rel=1e-6)


@pytest.mark.parametrize("target", [None, 1.0])
def test_penalty_gradient_matches_finite_differences(p100, target) -> None:
    alphas = nni_alphas(4, torch.float64, grad=True)
    # a budget below the soft architecture's latency keeps the hinge active
    pen = LatencyPenalty(p100, 1.3, target)
    grads = torch.autograd.grad(pen(alphas), [alphas[k] for k in LABELS])
    assert all(float(g.abs().sum()) > 0 for g in grads)
    eps = 1e-6
    for label, k in [("normal/2_0", 3), ("normal/5_4", 7), ("reduce/3_1", 0),
                     ("reduce/4_2", 6)]:
        g = grads[LABELS.index(label)][k].item()
        with torch.no_grad():
            alphas[label][k] += eps
            up = float(pen(alphas))
            alphas[label][k] -= 2 * eps
            down = float(pen(alphas))
            alphas[label][k] += eps
        assert g == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-11)


def test_near_one_hot_alphas_give_the_genotypes_prediction(p100) -> None:
    """Alphas that pick DARTS_V2's ops on its edges and NNI's 'unused' column elsewhere
    are, through the mapping, the genotype's own encoding."""
    alphas = {}
    for cell, edges in (("normal", DARTS_V2.normal), ("reduce", DARTS_V2.reduce)):
        chosen = {(src, 2 + k // 2): op for k, (op, src) in enumerate(edges)}
        for (src, node) in ROWS:
            a = torch.full((8,), -40.0, dtype=torch.float64)
            op = chosen.get((src, node))
            a[NNI_DARTS_OPS.index(op) if op else 7] = 40.0
            alphas[f"{cell}/{node}_{src}"] = a
    pen = LatencyPenalty(p100, 1.0)
    enc = SPACE.encode_weights(pen.soft_weights(alphas))
    torch.testing.assert_close(enc, torch.as_tensor(SPACE.encode(DARTS_V2), dtype=enc.dtype))
    assert pen.predicted_ms(alphas) == pytest.approx(pen.genotype_ms(DARTS_V2), rel=1e-9)


def test_bad_weight_and_target_are_refused(p100) -> None:
    for w, t in [(-1.0, None), (float("nan"), None), (1.0, 0.0)]:
        with pytest.raises(InputError):
            LatencyPenalty(p100, w, t)


# -- module trees shaped like NNI's (duck typing) ---------------------------------------


class FakeCell(nn.Module):
    """What NNI's DifferentiableMixedCell exposes to the bridge."""

    def __init__(self, label: str, shared: dict[str, nn.Parameter]) -> None:
        super().__init__()
        self.op_names = list(NNI_DARTS_OPS)
        self._arch_alpha = nn.ParameterDict()
        for k in LABELS:
            if k.startswith(label + "/"):
                shared.setdefault(k, nn.Parameter(torch.randn(8) * 1e-3))
                self._arch_alpha[k] = shared[k]


def fake_supernet(extra: bool = False) -> nn.Module:
    shared: dict[str, nn.Parameter] = {}
    net = nn.Sequential(*(FakeCell(c, shared) for c in
                          ("normal", "normal", "reduce", "normal", "reduce")))
    if extra:
        width = nn.Module()
        width._arch_alpha = nn.ParameterDict({"width": nn.Parameter(torch.zeros(3))})
        net.append(width)
    return net


def test_alphas_are_found_in_a_module_tree_and_receive_the_gradient() -> None:
    net = fake_supernet()
    found = find_cell_alphas(net)
    assert sorted(found.alphas) == sorted(LABELS) and found.op_names == NNI_DARTS_OPS
    pen = LatencyPenalty.for_hardware("p100", 1.0)
    pen(net).backward()
    for p in found.alphas.values():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    with pytest.raises(InputError, match="also searches width"):
        pen(fake_supernet(extra=True))
    assert "width" in find_cell_alphas(fake_supernet(extra=True)).other
    with pytest.raises(InputError, match="no DARTS cell architecture parameters"):
        pen(nn.Linear(2, 2))
    clash = fake_supernet()
    clash[1]._arch_alpha["normal/2_0"] = nn.Parameter(torch.zeros(8))
    with pytest.raises(InputError, match="different parameters"):
        find_cell_alphas(clash)


def test_nni_export_becomes_our_genotype() -> None:
    export = {}
    for cell, edges in (("normal", DARTS_V2.normal), ("reduce", DARTS_V2.reduce)):
        for k, (op, src) in enumerate(edges):
            export[f"{cell}/op_{2 + k // 2}_{k % 2}"] = op
            export[f"{cell}/input_{2 + k // 2}_{k % 2}"] = [src]
    g = genotype_from_export(export)
    assert g.normal == DARTS_V2.normal and g.reduce == DARTS_V2.reduce
    assert g.normal_concat == (2, 3, 4, 5)
    del export["reduce/op_5_1"]
    with pytest.raises(InputError, match="reduce/op_5_1"):
        genotype_from_export(export)


# -- without NNI --------------------------------------------------------------------------


def test_the_package_imports_without_nni() -> None:
    code = ("import sys; sys.modules['nni'] = None; import nas.nni_bridge, "
            "nas.nni_bridge.example; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_missing_nni_is_one_line_that_says_how_to_install(monkeypatch, capsys) -> None:
    from nas.nni_bridge import latency_darts
    from nas.nni_bridge.example import main

    monkeypatch.setitem(sys.modules, "nni", None)       # import nni -> ImportError
    with pytest.raises(InputError) as e:
        latency_darts(hardware="p100")
    assert "pip install 'hw-nas[nni]'" in str(e.value) and "\n" not in str(e.value)
    assert main(["--hardware", "p100", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hw-nas[nni]" in err


# -- with NNI 3.0 -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nni_darts():  # type: ignore[no-untyped-def]
    pytest.importorskip("nni")
    pytest.importorskip("pytorch_lightning")
    from nas.nni_bridge.example import quiet_nni

    quiet_nni()
    from nni.nas.hub.pytorch import DARTS as NniDartsSpace

    return NniDartsSpace


def test_nni_darts_cells_are_what_the_mapping_expects(nni_darts) -> None:
    from nni.nas.strategy import DARTS

    supernet = DARTS().mutate_model(nni_darts(width=4, num_cells=3, dataset="cifar"))
    found = find_cell_alphas(supernet)
    assert found.op_names == NNI_DARTS_OPS and found.other == ()
    assert sorted(found.alphas) == sorted(LABELS)
    assert all(tuple(a.shape) == (8,) for a in found.alphas.values())


def test_penalty_gradient_reaches_the_alphas_nni_optimises(nni_darts) -> None:
    from nas.nni_bridge import latency_darts

    strategy = latency_darts(hardware="p100", weight=1.0)
    supernet = strategy.mutate_model(nni_darts(width=4, num_cells=3, dataset="cifar"))
    alphas = find_cell_alphas(supernet).alphas
    pen = strategy.penalty
    pen.bind(supernet)
    loss = torch.zeros((), requires_grad=True)
    total, details = pen(loss, {})
    total.backward()
    assert details["latency_ms"] > 0 and details["latency_loss"] > 0
    for p in alphas.values():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    # what NNI would hand its own penalty instead: plain floats, no gradient
    from nni.nas.strategy import DARTS

    plain = DARTS()
    ev_module = plain.configure_oneshot_module(_training_module())
    ev_module.set_model(DARTS().mutate_model(nni_darts(width=4, num_cells=3,
                                                       dataset="cifar")))
    probs = ev_module.export_probs()
    assert isinstance(next(iter(probs["normal/2_0"].values())), float)


def _training_module():  # type: ignore[no-untyped-def]
    from nni.nas.evaluator.pytorch.lightning import ClassificationModule

    return ClassificationModule(num_classes=10)


def test_nni_darts_search_steps_with_the_penalty(nni_darts) -> None:
    """Two NNI DARTS steps from one seed, without and with the penalty: NNI logs the
    penalty, and the alphas it moved differ only because of it."""
    from nni.nas.strategy import DARTS

    from nas.nni_bridge import latency_darts
    from nas.nni_bridge.example import build_evaluator, digits_splits

    def run(weight: float) -> tuple[dict[str, torch.Tensor], dict[str, float], object]:
        torch.manual_seed(0)
        train, val = digits_splits(0, 8, 2)
        evaluator = build_evaluator(train, val, 8, 2)
        kwargs = {"arc_learning_rate": 3e-2, "gradient_clip_val": 5.0}
        strategy = (latency_darts(hardware="p100", weight=weight, **kwargs) if weight
                    else DARTS(**kwargs))
        supernet = strategy.mutate_model(nni_darts(width=2, num_cells=3, dataset="cifar"))
        evaluator = strategy.mutate_evaluator(evaluator)
        evaluator.evaluate(supernet)
        metrics = {k: float(v) for k, v in evaluator.trainer.callback_metrics.items()}
        alphas = {k: v.detach().clone() for k, v in find_cell_alphas(supernet).alphas.items()}
        return alphas, metrics, evaluator.module.export()

    plain, plain_metrics, _ = run(0.0)
    heavy, metrics, export = run(50.0)
    assert "penalty/latency_ms" in metrics and "penalty/latency_ms" not in plain_metrics
    assert metrics["penalty/latency_loss"] > 0
    assert any(not torch.equal(plain[k], heavy[k]) for k in plain)
    # the penalty lowers the soft architecture's predicted latency
    meter = LatencyPenalty.for_hardware("p100", 1.0)
    assert meter.predicted_ms(heavy) < meter.predicted_ms(plain)
    g = genotype_from_export(export)
    assert meter.genotype_ms(g) > 0
