"""Reading a run directory for a report: what kind of run it is and what it holds.

Everything is read and checked here, before any picture is drawn, so a bad file gives one
`InputError` line and no partial report. Nothing in the run directory is ever written.

The kind comes from `config.json`: a search run has a ``"search"`` key, a retrain run a
``"retrain"`` key. If both are present the run is a retrain: a retrain may well record the
search it came from, but a search never records a retrain.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_spaces.errors import GenotypeError, InputError
from search_spaces.fileio import read_json_lines
from search_spaces.genotype import Genotype, load_genotype, parse_darts_literal
from search_spaces.space import DEFAULT_SPACE, SPACES, claiming_space, space_of

CONFIG = "config.json"
LOG = "log.jsonl"
ARCH_LOG = "arch_weights.jsonl"
GENOTYPE = "genotype.json"
FINAL = "report.json"

#: A cell to draw: a DARTS genotype or a NAS-Bench-201 architecture.
Cell = Any  # an architecture of any space


@dataclass
class Run:
    """Everything a report needs from one run directory, already validated."""

    path: Path
    kind: str  # "search" | "retrain"
    config: dict[str, Any]
    space: str  # a registered space's name
    log: list[dict[str, Any]] = field(default_factory=list)
    arch: list[dict[str, Any]] = field(default_factory=list)
    genotype: Cell | None = None
    genotype_source: str | None = None
    final: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        """The run's own settings block (``config["search"]`` or ``config["retrain"]``)."""
        block = self.config.get(self.kind)
        return block if isinstance(block, dict) else {}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None


def read_json(path: Path) -> Any:
    """One JSON document; any failure is one line naming the file (and the line)."""
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON: {e.msg} (line {e.lineno})") from None
    except RecursionError:
        raise InputError(f"{path} is not valid JSON: nested too deeply") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines log; a missing file is empty. The one reader of run
    logs (`read_json_lines`): a torn last line, as a killed run leaves it, is left out, so
    a killed run can be drawn; a damaged line before it is an error naming the file and
    line, because a silently skipped epoch would make every curve after it wrong."""
    return read_json_lines(path, error=InputError).records


def parse_cell(obj: Any, source: str) -> Cell:
    """A genotype as stored anywhere in a run: the form of the space that claims it (an
    NB201 ``{"space": "nb201", "arch": ...}`` or bare arch string), else a DARTS dict or
    literal, checked for structure only (a report draws any op name it is given)."""
    try:
        space = claiming_space(obj.strip() if isinstance(obj, str) else obj)
        if space is not None:
            return space.parse(obj.strip() if isinstance(obj, str) else obj, source=source)
        if isinstance(obj, str):
            return _checked(parse_darts_literal(obj.strip(), source=source), source)
        if isinstance(obj, dict):
            return _checked(Genotype.from_dict(obj, source=source), source)
    except GenotypeError as e:
        msg = str(e)
        raise GenotypeError(msg if msg.startswith(source) else f"{source}: {msg}") from None
    raise GenotypeError(f"{source}: expected a genotype object, got {type(obj).__name__}")


def _checked(genotype: Genotype, source: str) -> Genotype:
    """Structure only (inputs, concat, cell sizes): a report draws any op name it is given,
    but an edge from a node that does not exist yet cannot be drawn."""
    ops = {op for op, _ in genotype.normal + genotype.reduce}
    genotype.validate(ops, source=source)
    return genotype


def _load_genotype_file(path: Path) -> Cell:
    data = read_json(path) if path.suffix == ".json" else None
    if data is not None and claiming_space(data) is not None:
        return parse_cell(data, str(path))
    return _checked(load_genotype(path), f"'{path}'")


def _find_genotype(run: Run) -> None:
    """The cell to draw, from the most authoritative place the run has one.

    A retrain draws the genotype it trained (its config), a search its final
    `genotype.json`; a killed search has neither, so the last logged genotype is used.
    """
    if run.kind == "retrain" and run.config.get("genotype") is not None:
        run.genotype = parse_cell(run.config["genotype"], f"{run.path / CONFIG} 'genotype'")
        run.genotype_source = CONFIG
        return
    if (run.path / GENOTYPE).is_file():
        run.genotype = _load_genotype_file(run.path / GENOTYPE)
        run.genotype_source = GENOTYPE
        return
    for n, record in reversed(list(enumerate(run.log, start=1))):
        if record.get("genotype") is not None:
            run.genotype = parse_cell(record["genotype"], f"{run.path / LOG} record {n}")
            run.genotype_source = f"{LOG}, last logged epoch"
            return


def _space(run: Run) -> str:
    """The run's space: as its config says, else that of its genotype, else the one whose
    cell types its architecture weights have (a killed search), else the default."""
    space = run.settings.get("space")
    if isinstance(space, str) and space in SPACES:
        return space
    if run.genotype is not None:
        return space_of(run.genotype).name
    if run.arch:
        types = set(run.arch[0].get("weights") or {})
        matching = [s.name for s in SPACES.values() if set(s.cell_types) == types]
        if len(matching) == 1:
            return matching[0]
    return DEFAULT_SPACE


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read and check a run directory; raises `InputError` (one line) for bad input."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"run directory {p} does not exist")
    if not p.is_dir():
        raise InputError(f"{p} is not a directory")
    if not (p / CONFIG).is_file():
        raise InputError(f"{p} is not a run directory (no {CONFIG})")
    config = read_json(p / CONFIG)
    if not isinstance(config, dict):
        raise InputError(f"{p / CONFIG} is not a JSON object")
    if "retrain" in config:
        kind = "retrain"
    elif "search" in config:
        kind = "search"
    else:
        raise InputError(f"{p / CONFIG} has neither 'search' nor 'retrain': not a search or "
                         "retrain run")
    if not isinstance(config[kind], dict):
        raise InputError(f"{p / CONFIG}: '{kind}' must be a JSON object")
    run = Run(path=p, kind=kind, config=config, space=DEFAULT_SPACE)
    run.log = read_jsonl(p / LOG)
    if kind == "search":
        run.arch = read_jsonl(p / ARCH_LOG)
    if (p / FINAL).is_file():
        final = read_json(p / FINAL)
        run.final = final if isinstance(final, dict) else {}
    _find_genotype(run)
    run.space = _space(run)
    return run
