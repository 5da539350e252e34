"""Which pictures a run gets, and writing them.

The run is read and every matrix checked before the first PNG is written, so bad input
leaves no partial report. Pictures go to their own directory (``RUN_DIR/report`` by
default) under fixed names; a re-run replaces exactly those files and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from nas.report import arch_heatmaps, cells, curves
from nas.report.runs import ARCH_LOG, GENOTYPE, LOG, Run, load_run
from search_spaces.errors import InputError
from search_spaces.space import space_of
from search_spaces.supernet import ACTIVATION_SUFFIX

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Note = Callable[[str], None]
Plan = list[tuple[str, Callable[[], "Figure"]]]


@dataclass
class Report:
    run_dir: Path
    kind: str
    files: list[Path]


def _title(run: Run) -> str:
    s = run.settings
    if run.kind == "search":
        strategy = str(s.get("strategy") or "search").upper()
        bits = [f"{strategy} search", f"space {run.space}"]
        if s.get("dataset"):
            bits.append(str(s["dataset"]))
        if s.get("hardware"):
            bits.append(f"hardware {s['hardware']}")
    else:
        bits = ["retrain", f"space {run.space}"]
        if s.get("dataset"):
            bits.append(str(s["dataset"]))
    return f"{run.path.name} ({', '.join(bits)})"


def _cell_plan(run: Run, note: Note) -> Plan:
    genotype = run.genotype
    if genotype is None:
        note(f"note: no genotype in {run.path} ({GENOTYPE}, config or log); "
             "no cell pictures")
        return []
    source = f"genotype from {run.genotype_source}"
    plan: Plan = []
    for graph in space_of(genotype).cell_graphs(genotype):
        layout = cells.cell_layout(graph)
        title = f"{graph.title} ({source})" + (f"\n{graph.caption}" if graph.caption else "")
        # cast: mypy cannot infer a lambda with default arguments from its context
        plan.append((f"cell_{graph.cell_type}.png",
                     cast("Callable[[], Figure]", lambda layout=layout, title=title:
                          cells.draw_cell(layout, title))))
    return plan


def _weights_file(key: str) -> str:
    """alpha_<cell>.png, or beta_<cell>.png for a factorised search's activation weights
    (logged under `supernet.activation_key(cell)`)."""
    if key.endswith(ACTIVATION_SUFFIX):
        return f"beta_{key.removesuffix(ACTIVATION_SUFFIX)}.png"
    return f"alpha_{key}.png"


def _weights_title(key: str) -> str:
    if key.endswith(ACTIVATION_SUFFIX):
        return f"{key.removesuffix(ACTIVATION_SUFFIX)} cell, activations (beta; rows: activations)"
    return f"{key} cell"


def _alpha_plan(run: Run, title: str) -> Plan:
    if not run.arch:
        return []
    types = arch_heatmaps.cell_types(run.arch)
    for cell in types:  # validate every record now, before anything is written
        arch_heatmaps.weight_matrix(run.arch, cell)
    # cast: mypy cannot infer a lambda with default arguments from its context
    plan: Plan = [
        (_weights_file(cell),
         cast("Callable[[], Figure]", lambda cell=cell: arch_heatmaps.draw_alpha_over_epochs(
             run.arch, cell, run.space, _weights_title(cell))))
        for cell in types
    ]
    if types:
        plan.append(("alpha_final.png",
                     lambda: arch_heatmaps.draw_alpha_final(run.arch, types, run.space, title)))
    return plan


def plan_report(run: Run, note: Note) -> Plan:
    """(file name, figure builder) for every picture this run has data for."""
    title = _title(run)
    plan = _cell_plan(run, note) + _alpha_plan(run, title)
    if curves.has_curves(run.log):
        plan.append(("curves.png",
                     lambda: curves.draw_curves(run.log, run.kind, title, run.final)))
    if curves.has_latency(run.log):
        plan.append(("latency.png", lambda: curves.draw_latency(run.log, title)))
    return plan


def _out_dir(run: Run, out: str | os.PathLike[str] | None) -> Path:
    target = Path(out) if out is not None else run.path / "report"
    if target.exists() and not target.is_dir():
        raise InputError(f"report directory {target} exists and is not a directory")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create report directory {target}: {e.strerror or e}") from None
    return target


def build_report(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    note: Note = lambda msg: None,
    written: Note = lambda path: None,
) -> Report:
    """Read `run_dir`, draw every picture it has data for into `out`, return the files.

    `note` receives remarks for stderr (a missing genotype); `written` is called with each
    file as soon as it is in place, so a long report shows progress.
    """
    run = load_run(run_dir)
    notes: list[str] = []
    plan = plan_report(run, notes.append)
    if not plan:
        raise InputError(f"nothing to plot in {run.path}: no {GENOTYPE}, no lines in {LOG}"
                         f"{' or ' + ARCH_LOG if run.kind == 'search' else ''}")
    target = _out_dir(run, out)
    for msg in notes:  # only once there is a report, so an error stays a single line
        note(msg)
    from nas.report.plotting import save_figure

    files: list[Path] = []
    for name, make in plan:
        path = save_figure(make(), target / name)
        files.append(path)
        written(str(path))
    return Report(run.path, run.kind, files)
