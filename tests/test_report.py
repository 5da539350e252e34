"""`nas report`: pictures of fake and real run directories, the pure helpers behind them,
and the errors a user can run into."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from nas.cli.main import main
from nas.report.arch_heatmaps import edge_titles, op_union, weight_matrix
from nas.report.cells import darts_cell_layout, nb201_cell_layout, op_family
from nas.report.epochs import epoch_axis
from nas.report.runs import load_run
from search_spaces.genotype import Genotype
from search_spaces.genotype_library import DARTS_V2, PDARTS
from search_spaces.nb201 import NB201_EDGES, NB201_OPS
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

    layout = nb201_cell_layout(parse_arch(NB201_ARCH))
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
    run = make_darts_run(tmp_path)
    with open(run / "log.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_loss": 0.5\n')
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
        (_not_json_log, "log.jsonl line 4 is not JSON"),
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
