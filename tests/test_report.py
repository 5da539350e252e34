"""`nas report`: pictures of fake and real run directories, the pure helpers behind them,
and the errors a user can run into.

Over 600 lines on purpose: the run-directory fixtures (fake searches, retrains, killed
runs of both spaces) are shared by every picture's tests, and splitting the file would
mean either duplicating them or a conftest that only this command uses."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from nas.cli.main import main
from nas.report.arch_heatmaps import edge_titles, op_union, weight_matrix
from nas.report.cells import cell_layout, darts_cell_layout, op_family
from nas.report.epochs import epoch_axis
from nas.report.runs import load_run
from search_spaces.genotype import Genotype
from search_spaces.genotype_library import DARTS_V2, PDARTS
from search_spaces.nb201 import NB201_EDGES, NB201_OPS
from search_spaces.nb201_space import NB201_SPACE
from search_spaces.ops import DARTS_PRIMITIVES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NB201_ARCH = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"


# ------------------------------------------------------------------ fake run directories


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _softmax(rng: np.random.Generator, n: int) -> list[float]:
    z = np.exp(rng.normal(size=n))
    return (z / z.sum()).tolist()


def _arch_record(rng, stage: int, epoch: int, edge_ops: dict) -> dict:
    return {
        "stage": stage, "epoch": epoch, "edge_ops": edge_ops,
        "weights": {cell: [_softmax(rng, len(ops)) for ops in edges]
                    for cell, edges in edge_ops.items()},
    }


def _log_record(stage: int, epoch: int, genotype: dict, latency: bool) -> dict:
    record = {"stage": stage, "epoch": epoch, "lr": 0.025 / (epoch + 1),
              "train_loss": 2.0 - 0.3 * epoch, "train_acc": 0.3 + 0.1 * epoch,
              "entropy": {"normal": 2.0 - 0.1 * epoch, "reduce": 2.05 - 0.1 * epoch},
              "genotype": genotype, "seconds": 1.5}
    if epoch % 2 == 0:
        record.update(val_loss=2.1 - 0.3 * epoch, val_acc=0.25 + 0.1 * epoch)
    if latency:
        record.update(predicted_latency_ms=5.0 - 0.2 * epoch,
                      genotype_predicted_latency_ms=4.5 - 0.1 * epoch,
                      latency_label="simulated")
    return record


def make_darts_run(root: Path, epochs: int = 3, final_genotype: bool = True) -> Path:
    run = root / "darts-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(
        {"search": {"strategy": "darts", "space": "darts", "hardware": "p100",
                    "dataset": "digits"}}))
    rng = np.random.default_rng(0)
    full = {c: [list(DARTS_PRIMITIVES) for _ in range(14)] for c in ("normal", "reduce")}
    _write_jsonl(run / "arch_weights.jsonl",
                 [_arch_record(rng, 0, e, full) for e in range(epochs)])
    _write_jsonl(run / "log.jsonl",
                 [_log_record(0, e, DARTS_V2.to_dict(), True) for e in range(epochs)])
    if final_genotype:
        (run / "genotype.json").write_text(json.dumps(DARTS_V2.to_dict(), indent=2))
    return run


#: ops kept per edge in P-DARTS stage 2 (the second stage): a different subset per edge
def _pruned(edge: int) -> list[str]:
    keep = ["sep_conv_3x3", "skip_connect", "max_pool_3x3", "dil_conv_5x5", "none"]
    return keep[edge % 3: edge % 3 + 3]


def make_pdarts_run(root: Path) -> tuple[Path, list[dict]]:
    run = root / "pdarts-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(
        {"search": {"strategy": "pdarts", "space": "darts", "hardware": None}}))
    rng = np.random.default_rng(1)
    full = {c: [list(DARTS_PRIMITIVES) for _ in range(14)] for c in ("normal", "reduce")}
    pruned = {c: [_pruned(e) for e in range(14)] for c in ("normal", "reduce")}
    arch = [_arch_record(rng, 0, e, full) for e in range(2)]
    arch += [_arch_record(rng, 1, e, pruned) for e in range(2)]
    _write_jsonl(run / "arch_weights.jsonl", arch)
    _write_jsonl(run / "log.jsonl", [_log_record(s, e, PDARTS.to_dict(), False)
                                     for s in (0, 1) for e in range(2)])
    (run / "genotype.json").write_text(json.dumps(PDARTS.to_dict()))
    return run, arch


def make_retrain_run(root: Path) -> Path:
    run = root / "retrain-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(
        {"retrain": {"epochs": 4, "dataset": "digits"}, "genotype": PDARTS.to_dict()}))
    log = [{"epoch": e, "lr": 0.025, "drop_path_prob": 0.2 * e / 4,
            "train_loss": 1.5 - 0.3 * e, "train_acc": 0.5 + 0.1 * e, "seconds": 2.0}
           for e in range(4)]
    log[-1].update(test_loss=0.4, test_acc=0.91)
    _write_jsonl(run / "log.jsonl", log)
    (run / "report.json").write_text(json.dumps(
        {"test_acc": 0.91, "params": 123456, "macs": 7890123,
         "predicted_latency": {"ms": 1.234, "std_ms": 0.1, "hardware": "p100"},
         "measured_latency": {"pytorch": {"ms": 2.5, "how": "median"}}}))
    return run


def make_nb201_run(root: Path) -> Path:
    run = root / "nb201-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(
        {"search": {"strategy": "darts", "space": "nb201", "hardware": None}}))
    rng = np.random.default_rng(2)
    edges = {"normal": [list(NB201_OPS) for _ in NB201_EDGES]}
    _write_jsonl(run / "arch_weights.jsonl", [_arch_record(rng, 0, e, edges) for e in range(3)])
    genotype = {"space": "nb201", "arch": NB201_ARCH}
    _write_jsonl(run / "log.jsonl", [_log_record(0, e, genotype, False) for e in range(3)])
    (run / "genotype.json").write_text(json.dumps(genotype))
    return run


def _digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and "report" not in p.parts}


def _check_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ whole reports

DARTS_FILES = {"cell_normal.png", "cell_reduce.png", "alpha_normal.png", "alpha_reduce.png",
               "alpha_final.png", "curves.png"}


def test_darts_search_report_writes_every_picture(tmp_path, capsys) -> None:
    run = make_darts_run(tmp_path)
    before = _digests(run)
    code, out, err = run_cli(["report", str(run)], capsys)
    assert code == 0, err
    names = {Path(line).name for line in out.splitlines()}
    assert names == DARTS_FILES | {"latency.png"}
    for name in names:
        assert (run / "report" / name).is_file()
        _check_png(run / "report" / name)
    assert _digests(run) == before
    # a re-run replaces its own pictures and leaves no temp files behind
    code, out2, _ = run_cli(["report", str(run)], capsys)
    assert code == 0 and out2 == out
    assert {p.name for p in (run / "report").iterdir()} == names
    assert _digests(run) == before


def test_json_output_is_one_object_and_out_dir_is_honoured(tmp_path, capsys) -> None:
    run = make_darts_run(tmp_path)
    out_dir = tmp_path / "pictures"
    code, out, err = run_cli(["report", str(run), "--out", str(out_dir), "--json"], capsys)
    assert code == 0, err
    assert out.count("\n") == 1
    data = json.loads(out)
    assert data["run_dir"] == str(run) and data["kind"] == "search"
    assert {Path(f).name for f in data["files"]} == DARTS_FILES | {"latency.png"}
    assert all(Path(f).parent == out_dir for f in data["files"])
    assert not (run / "report").exists()


def test_pdarts_report_and_killed_run_genotype_from_log(tmp_path, capsys) -> None:
    run, _ = make_pdarts_run(tmp_path)
    (run / "genotype.json").unlink()  # killed before the end: the last log line has one
    before = _digests(run)
    code, out, err = run_cli(["report", str(run), "--json"], capsys)
    assert code == 0, err
    files = [Path(f) for f in json.loads(out)["files"]]
    assert {f.name for f in files} == DARTS_FILES  # no latency predictor in this run
    for f in files:
        _check_png(f)
    assert load_run(run).genotype == PDARTS
    assert _digests(run) == before


def test_retrain_report(tmp_path, capsys) -> None:
    run = make_retrain_run(tmp_path)
    before = _digests(run)
    code, out, err = run_cli(["report", str(run), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["kind"] == "retrain"
    assert {Path(f).name for f in data["files"]} == {"cell_normal.png", "cell_reduce.png",
                                                      "curves.png"}
    for f in data["files"]:
        _check_png(Path(f))
    assert _digests(run) == before


def test_nb201_search_report_draws_its_single_cell(tmp_path, capsys) -> None:
    run = make_nb201_run(tmp_path)
    code, out, err = run_cli(["report", str(run), "--json"], capsys)
    assert code == 0, err
    files = {Path(f).name: Path(f) for f in json.loads(out)["files"]}
    assert set(files) == {"cell_normal.png", "alpha_normal.png", "alpha_final.png",
                          "curves.png"}
    for f in files.values():
        _check_png(f)


# ------------------------------------------------------------------ pure helpers


def test_weight_matrix_puts_nan_exactly_at_pruned_ops(tmp_path) -> None:
    _, arch = make_pdarts_run(tmp_path)
    ops, mats = weight_matrix(arch, "normal")
    assert ops == list(DARTS_PRIMITIVES)  # union in first-seen order
    assert op_union(arch, "reduce") == list(DARTS_PRIMITIVES)
    assert mats.shape == (4, 14, len(DARTS_PRIMITIVES))
    for t, record in enumerate(arch):
        for e in range(14):
            edge_ops = record["edge_ops"]["normal"][e]
            probs = dict(zip(edge_ops, record["weights"]["normal"][e]))
            for k, op in enumerate(ops):
                if op in probs:
                    assert mats[t, e, k] == pytest.approx(probs[op])
                else:
                    assert math.isnan(mats[t, e, k]), (t, e, op)
    # stage 1 has every op, stage 2 exactly three per edge
    assert np.isfinite(mats[:2]).all()
    assert (np.isfinite(mats[2:]).sum(axis=2) == 3).all()


def test_weight_matrix_rejects_mismatched_edges() -> None:
    from search_spaces.errors import InputError

    bad = [{"stage": 0, "epoch": 0, "edge_ops": {"normal": [["a", "b"]]},
            "weights": {"normal": [[0.5, 0.3, 0.2]]}}]
    with pytest.raises(InputError, match="record 1"):
        weight_matrix(bad, "normal")


def test_epoch_axis_marks_stage_boundaries(tmp_path) -> None:
    _, arch = make_pdarts_run(tmp_path)
    axis = epoch_axis(arch)
    assert axis.x.tolist() == [1, 2, 3, 4]
    assert axis.boundaries == [2.5]
    assert axis.stages == [(1, 2, 0), (3, 4, 1)]


@pytest.mark.parametrize("genotype", [DARTS_V2, PDARTS], ids=["DARTS_V2", "PDARTS"])
def test_cell_layout_has_every_node_and_one_edge_per_pair(genotype: Genotype) -> None:
    for cell in ("normal", "reduce"):
        pairs = getattr(genotype, cell)
        concat = getattr(genotype, f"{cell}_concat")
        layout = darts_cell_layout(pairs, concat)
        assert set(layout.nodes) == set(range(len(pairs) // 2 + 3))
        names = [layout.nodes[i].name for i in sorted(layout.nodes)]
        assert names == ["c_{k-2}", "c_{k-1}", "0", "1", "2", "3", "c_{k}"]
        positions = {(n.x, n.y) for n in layout.nodes.values()}
        assert len(positions) == len(layout.nodes)  # no two nodes on top of each other
        op_edges = [e for e in layout.edges if e.op is not None]
        assert [(e.op, e.src, e.dst) for e in op_edges] == [
            (op, src, 2 + k // 2) for k, (op, src) in enumerate(pairs)]
        assert all(e.label is not None for e in op_edges)
        assert sorted(e.src for e in layout.edges if e.op is None) == sorted(concat)
        # inputs on the left, output on the right, every edge runs left to right
        xs = {i: n.x for i, n in layout.nodes.items()}
        assert xs[0] == xs[1] == min(xs.values()) and xs[6] == max(xs.values())
        assert all(xs[e.src] < xs[e.dst] for e in layout.edges)


def test_nb201_layout_skips_none_edges() -> None:
    from search_spaces.nb201 import parse_arch

    layout = cell_layout(NB201_SPACE.cell_graphs(parse_arch(NB201_ARCH))[0])
    assert set(layout.nodes) == {0, 1, 2, 3}
    assert [(e.src, e.dst, e.op) for e in layout.edges] == [
        (0, 1, "nor_conv_3x3"), (1, 2, "skip_connect"), (0, 3, "avg_pool_3x3"),
        (1, 3, "nor_conv_1x1")]


def test_op_families_and_edge_titles() -> None:
    assert [op_family(o) for o in ("sep_conv_3x3", "dil_conv_5x5", "nor_conv_1x1",
                                   "max_pool_3x3", "skip_connect", "none")] == [
        "conv", "conv", "conv", "pool", "skip", "none"]
    titles = edge_titles("darts", 14)
    assert titles[:3] == ["c_{k-2}→0", "c_{k-1}→0", "c_{k-2}→1"] and titles[-1] == "2→3"
    assert edge_titles("nb201", 6) == ["0→1", "0→2", "1→2", "0→3", "1→3", "2→3"]


# ------------------------------------------------------------------ bad input


def _not_json_log(tmp_path: Path) -> Path:
    """A damaged line before the last one (a torn *last* line is what a kill leaves, and
    is left out instead: `test_a_killed_runs_torn_last_line_is_left_out`)."""
    run = make_darts_run(tmp_path)
    lines = (run / "log.jsonl").read_text().splitlines(keepends=True)
    lines.insert(len(lines) - 1, '{"epoch": 3, "train_loss": 0.5\n')
    (run / "log.jsonl").write_text("".join(lines))
    return run


def _bad_config(tmp_path: Path) -> Path:
    run = make_darts_run(tmp_path)
    (run / "config.json").write_text("{not json")
    return run


def _config_only(tmp_path: Path) -> Path:
    run = tmp_path / "empty-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"search": {"space": "darts"}}))
    return run


def _bad_genotype(tmp_path: Path) -> Path:
    run = make_darts_run(tmp_path)
    (run / "genotype.json").write_text('{"normal": 3}')
    return run


def _no_config(tmp_path: Path) -> Path:
    (tmp_path / "somewhere").mkdir()
    return tmp_path / "somewhere"


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: p / "missing", "does not exist"),
        (_no_config, "not a run directory"),
        (_bad_config, "config.json is not valid JSON"),
        (_not_json_log, "log.jsonl:3: not a JSON object line"),
        (_config_only, "nothing to plot"),
        (_bad_genotype, "genotype.json"),
    ],
    ids=["missing", "no-config", "config-not-json", "log-line-not-json", "nothing-to-plot",
         "bad-genotype"],
)
def test_bad_input_is_one_error_line_and_exit_2(make, needle, tmp_path, capsys) -> None:
    run = make(tmp_path)
    before = _digests(run) if run.exists() else {}
    code, out, err = run_cli(["report", str(run)], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error:"), err
    assert needle in err, err
    assert not (run / "report").exists()
    if run.exists():
        assert _digests(run) == before


# ------------------------------------------------------------------ a real search


def test_report_on_a_real_search_run(tmp_path, capsys) -> None:
    run = tmp_path / "search"
    code, _, err = run_cli(["search", "--space", "darts", "--epochs", "1", "--limit", "64",
                            "--channels", "4", "--layers", "3", "--out", str(run)], capsys)
    assert code == 0, err
    before = _digests(run)
    code, out, err = run_cli(["report", str(run), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["kind"] == "search"
    assert {Path(f).name for f in data["files"]} == DARTS_FILES
    for f in data["files"]:
        _check_png(Path(f))
    assert _digests(run) == before


# ------------------------------------------------------------------ what the pictures show


def _near_uniform_records(epochs: int = 3) -> list[dict]:
    """A short run's weights: 8 ops, every weight within 0.11..0.15 of uniform 1/8; op 0
    sits at 0.12 and op 1 at 0.14 on every edge and epoch."""
    ops = list(DARTS_PRIMITIVES)
    rest = (1.0 - 0.12 - 0.14) / 6
    probs = [0.12, 0.14] + [rest] * 6
    return [{"stage": 0, "epoch": e, "edge_ops": {"normal": [ops] * 14},
             "weights": {"normal": [probs] * 14}} for e in range(epochs)]


def _images(fig) -> list:
    return [im for ax in fig.axes for im in ax.images]


def _colour_distance(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a[:3]) - np.asarray(b[:3])))


@pytest.mark.parametrize("which", ["over_epochs", "final"])
def test_heat_map_colours_follow_a_near_uniform_run(which: str) -> None:
    from matplotlib.colors import LogNorm

    from nas.report.arch_heatmaps import draw_alpha_final, draw_alpha_over_epochs
    from nas.report.plotting import plt

    records = _near_uniform_records()
    fig = (draw_alpha_over_epochs(records, "normal", "darts", "normal cell")
           if which == "over_epochs" else draw_alpha_final(records, ["normal"], "darts", "t"))
    try:
        images = _images(fig)
        assert images
        for im in images:
            norm = im.norm
            # the scale spans the data's own spread around uniform, not 0..1
            assert isinstance(norm, LogNorm)
            assert norm.vmin == pytest.approx(1 / norm.vmax)
            assert norm.vmax < 1.5
            assert norm(1.0) == pytest.approx(0.5)  # uniform is the centre colour
            # 0.12 and 0.14 (x K = 0.96 and 1.12) get clearly different colours, on
            # opposite sides of the centre
            low, high = im.to_rgba(np.array([0.12 * 8, 0.14 * 8]))
            assert _colour_distance(low, high) > 0.5
            assert norm(0.12 * 8) < 0.4 and norm(0.14 * 8) > 0.9
            # and what is drawn in the cells is exactly those values
            data = np.ma.getdata(im.get_array())
            assert np.isclose(data, 0.96).any() and np.isclose(data, 1.12).any()
        # the colour bar says what the colour means
        labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
        assert any("softmax weight × K" in t and "uniform" in t and "log scale" in t
                   for t in labels), labels
    finally:
        plt.close(fig)


def test_colour_scale_of_a_long_run_reaches_zero_and_one() -> None:
    """Weights gone to 0 and 1: the scale spans 1/K..K, an op with weight exactly 0 is
    clipped to the lowest colour, not masked (masked means pruned)."""
    from nas.report.arch_heatmaps import draw_alpha_over_epochs, ratio_scale, ratio_ticks
    from nas.report.plotting import plt

    ops = list(DARTS_PRIMITIVES)
    records = [{"edge_ops": {"normal": [ops] * 14},
                "weights": {"normal": [[1.0] + [0.0] * 7] * 14}}]
    r, extend = ratio_scale(np.array([8.0, 0.0, 0.5]), 8)
    assert r == pytest.approx(8.0) and extend == "min"
    assert ratio_scale(np.array([0.96, 1.12]), 8) == (pytest.approx(1.12), "neither")
    assert ratio_scale(np.full(3, 1.0), 8)[0] > 1.0  # all uniform: still a valid scale
    ticks = ratio_ticks(8.0)
    assert 1.0 in ticks and ticks == sorted(ticks) and ticks[-1] == 8.0
    assert ticks == pytest.approx([1 / t for t in reversed(ticks)])
    fig = draw_alpha_over_epochs(records, "normal", "darts", "normal cell")
    try:
        for im in _images(fig):
            assert not np.ma.getmaskarray(im.get_array()).any()
            assert im.norm.vmax == pytest.approx(8.0)
            top, bottom = im.to_rgba(np.array([8.0, 1e-6]))
            assert _colour_distance(top, bottom) > 0.5
    finally:
        plt.close(fig)


def test_pruned_ops_are_masked_and_grey(tmp_path) -> None:
    from matplotlib.colors import to_rgba

    from nas.report.arch_heatmaps import draw_alpha_final, draw_alpha_over_epochs
    from nas.report.plotting import PRUNED_GREY, plt

    _, arch = make_pdarts_run(tmp_path)
    _, mats = weight_matrix(arch, "normal")
    fig = draw_alpha_over_epochs(arch, "normal", "darts", "normal cell")
    final = draw_alpha_final(arch, ["normal", "reduce"], "darts", "t")
    try:
        images = _images(fig)
        assert len(images) == 14
        for e, im in enumerate(images):
            # one image per edge, ops x epochs, masked exactly where the op was pruned
            assert np.array_equal(np.ma.getmaskarray(im.get_array()), np.isnan(mats[:, e, :].T))
        im = _images(final)[0]
        assert np.array_equal(np.ma.getmaskarray(im.get_array()), np.isnan(mats[-1]))
        for im in images + _images(final):
            bad = im.cmap.get_bad()
            assert tuple(bad) == pytest.approx(to_rgba(PRUNED_GREY))
            assert bad[0] == bad[1] == bad[2] and bad[3] == 1.0  # a neutral, opaque grey
            # grey is not the colour of "uniform" (the centre of the map)
            assert _colour_distance(bad, im.cmap(0.5)) > 0.3
        assert "grey" in final.get_suptitle()
    finally:
        plt.close(fig)
        plt.close(final)


# ------------------------------------------------------------------ nothing hidden or cut


def _figures(run: Path) -> list:
    from nas.report.build import plan_report

    # alpha_reduce is drawn exactly like alpha_normal: leave it out to keep this fast
    return [(name, make()) for name, make in plan_report(load_run(run), lambda msg: None)
            if name != "alpha_reduce.png"]


def _area(a, b) -> float:
    from matplotlib.transforms import Bbox

    inter = Bbox.intersection(a, b)
    return 0.0 if inter is None else max(inter.width, 0.0) * max(inter.height, 0.0)


def _inside(inner, outer, tol: float = 1.0) -> bool:
    return (inner.x0 >= outer.x0 - tol and inner.y0 >= outer.y0 - tol
            and inner.x1 <= outer.x1 + tol and inner.y1 <= outer.y1 + tol)


def _texts(fig) -> list:
    """Every visible, non-empty text of `fig` except tick labels (those of ticks outside
    the view limits keep stale positions and are not drawn)."""
    from matplotlib.text import Text

    ticks = {id(t) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
             for tick in axis.get_major_ticks() + axis.get_minor_ticks()
             for t in (tick.label1, tick.label2)}
    return [t for t in fig.findobj(Text)
            if id(t) not in ticks and t.get_visible() and t.get_text().strip()]


LONG_NAME = "2024-05-01T12-00-00-retrain-DARTS_V2-raspi4-with-a-very-long-run-directory-name"


def _all_runs(root: Path) -> list[Path]:
    runs = [make_darts_run(root), make_pdarts_run(root)[0], make_nb201_run(root)]
    retrain = make_retrain_run(root)
    # a long name and a long summary line: the title must wrap, not run off the figure
    report = json.loads((retrain / "report.json").read_text())
    report["measured_latency"]["onnxruntime"] = {"ms": 0.186, "how": "median"}
    (retrain / "report.json").write_text(json.dumps(report))
    runs.append(retrain.rename(root / LONG_NAME))
    return runs


def test_legends_cover_no_data_and_titles_fit_the_figure(tmp_path) -> None:
    from nas.report.plotting import plt

    names = set()
    for run in _all_runs(tmp_path):
        for name, fig in _figures(run):
            names.add(name)
            try:
                fig.canvas.draw()
                renderer = fig.canvas.get_renderer()
                frame = fig.bbox
                areas = [ax.get_window_extent(renderer) for ax in fig.axes]
                legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes
                                               if ax.get_legend() is not None]
                if name.startswith(("curves", "latency", "cell")):
                    assert legends, (run.name, name)
                boxes = [leg.get_window_extent(renderer) for leg in legends]
                for box in boxes:
                    assert _inside(box, frame), (run.name, name)
                    for area in areas:
                        assert _area(box, area) == 0.0, (run.name, name, "legend over data")
                for i, a in enumerate(boxes):
                    for b in boxes[i + 1:]:
                        assert _area(a, b) == 0.0, (run.name, name, "legends overlap")
                # the title lies inside the figure, above every axes and legend
                title = fig._suptitle
                assert title is not None and title.get_text(), (run.name, name)
                tbox = title.get_window_extent(renderer)
                assert _inside(tbox, frame, tol=0.0), (run.name, name, title.get_text())
                for ax in fig.axes:
                    assert _area(tbox, ax.get_tightbbox(renderer)) == 0.0, (run.name, name)
                for box in boxes:
                    assert _area(tbox, box) == 0.0, (run.name, name)
                # and no other text (colour bar labels, axes titles, labels) is cut off
                for text in _texts(fig):
                    assert _inside(text.get_window_extent(renderer), frame), (
                        run.name, name, text.get_text())
            finally:
                plt.close(fig)
    assert {"curves.png", "latency.png", "alpha_final.png", "cell_reduce.png"} <= names


def test_long_titles_wrap_at_gentle_places_and_fit() -> None:
    from nas.report.plotting import fit_text, plt

    fig = plt.figure(figsize=(5, 3))
    try:
        renderer = fig.canvas.get_renderer()
        from matplotlib.font_manager import FontProperties

        prop = FontProperties(size=10)
        limit = 0.96 * 5 * fig.dpi
        for text in [f"{LONG_NAME} (retrain, space darts, digits)\ntest acc 0.9100; "
                     "params 0.123M; MACs 7.89M; predicted latency 1.234 ms (p100)",
                     "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|"
                     "nor_conv_1x1~1|none~2|", "x" * 300]:
            wrapped = fit_text(fig, text, 10)
            lines = wrapped.split("\n")
            assert len(lines) > text.count("\n") + 1
            for line in lines:
                width, _, _ = renderer.get_text_width_height_descent(line, prop, ismath=False)
                assert width <= limit, line
            # nothing lost but the spaces at the breaks
            assert "".join(wrapped.split()) == "".join(text.split())
        wrapped = fit_text(fig, "a (b, c); test acc 0.91; params 0.1M; MACs 7.9M; "
                           "predicted latency 1.234 ms (p100); measured latency 2.5 ms", 10)
        assert all(not line.startswith((";", ",")) for line in wrapped.split("\n"))
        assert "; " in wrapped or ";\n" in wrapped  # spaces after separators survive
        assert ";m" not in wrapped and ";p" not in wrapped
    finally:
        plt.close(fig)


@pytest.mark.parametrize("tail", [b'{"stage": 0, "epoch": 3, "train_lo', b"garbage\n"])
def test_a_killed_runs_torn_last_line_is_left_out(tmp_path, tail: bytes) -> None:
    """A kill mid-append leaves a torn last line: the report reads the complete epochs,
    as `--resume` does (one reader, one policy), and the run's files stay as they are."""
    run = make_darts_run(tmp_path)
    for name in ("log.jsonl", "arch_weights.jsonl"):
        with open(run / name, "ab") as f:
            f.write(tail)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    loaded = load_run(run)
    assert len(loaded.log) == 3 and len(loaded.arch) == 3
    assert [r["epoch"] for r in loaded.log] == [0, 1, 2]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
