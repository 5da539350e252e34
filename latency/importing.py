"""Import someone else's latency measurements (a CSV of architectures and latencies).

Every row is validated (architecture parses in the space, latency is a finite positive
number) and a bad row is reported by its line number and column, on one line. Rows become
samples in the usual format, marked `imported`, so predictors train on them like any
other samples; the profile they belong to is created (source: imported) if needed.

An import is all or nothing: the whole CSV is validated before anything is written, the
sample file is new (an existing `--out` is refused) and written in one atomic rename,
and a profile created for it is removed again if writing fails, so a failed import
leaves no profile behind in every list of known profiles.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import yaml

from latency.hardware import KINDS, HardwareError, load_profile, profile_file
from latency.samples import SampleError, arch_field, now_iso, validate_row
from search_spaces.errors import InputError
from search_spaces.fileio import atomic_write_bytes
from search_spaces.space import get_space


def ensure_imported_profile(name: str, kind: str, device: str, space: str
                            ) -> tuple[Path, bool]:
    """The profile `name` and whether it was created now (as `source: imported`)."""
    try:
        load_profile(name)
        return profile_file(f"{name}.yaml"), False
    except HardwareError as e:
        if "unknown hardware" not in str(e):
            raise
    if kind not in KINDS:
        raise InputError(f"--kind {kind!r} is not one of {', '.join(KINDS)}")
    network = get_space(space).profile_network()
    data: dict[str, Any] = {
        "name": name, "kind": kind, "source": "imported", "device": device,
        "notes": f"created by `nas profile import` for {space} measurements made elsewhere",
        "measurement": {"backend": "imported", "batch_size": 1, "precision": "fp32",
                        **({"threads": 1} if kind != "cuda" else {})},
        "network": network,
    }
    path = profile_file(f"{name}.yaml", for_writing=True)
    try:
        atomic_write_bytes(path, yaml.safe_dump(data, sort_keys=False).encode())
    except OSError as e:
        raise InputError(f"cannot create profile {path}: {e.strerror or e}") from None
    try:
        load_profile(name)  # validates what was written
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, True


def read_csv(path: str | Path, space_name: str, arch_column: str, latency_column: str
             ) -> list[tuple[Any, float]]:
    """Every (architecture, latency) of the CSV, each row validated; writes nothing."""
    space = get_space(space_name)
    p = Path(path)
    if not p.is_file():
        raise InputError(f"CSV file {p} does not exist")
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for col in (arch_column, latency_column):
            if col not in columns:
                raise InputError(f"{p}: no column {col!r} (columns: {', '.join(columns)})")
        rows = []
        for line, rec in enumerate(reader, start=2):
            where = f"{p}:{line}"
            try:
                arch = space.parse(rec[arch_column])
            except InputError as e:
                raise InputError(f"{where}: column {arch_column!r}: {e}") from None
            try:
                lat = float(rec[latency_column])
            except (TypeError, ValueError):
                raise InputError(f"{where}: column {latency_column!r} is not a number: "
                                 f"{rec[latency_column]!r}") from None
            if not math.isfinite(lat) or lat <= 0:
                raise InputError(f"{where}: column {latency_column!r} must be a finite "
                                 f"positive latency, got {lat}")
            rows.append((arch, lat))
    if not rows:
        raise InputError(f"{p}: no data rows")
    return rows


def write_imported(rows: list[tuple[Any, float]], space_name: str, hardware: str,
                   source: str | Path, latency_column: str, out: str | Path) -> int:
    """The rows as a new sample file `out`, in one atomic write; returns how many."""
    space = get_space(space_name)
    target = Path(out)
    if target.exists():
        raise SampleError(f"--out {target} already exists; import writes a new file")
    stamp = now_iso()
    lines = []
    for k, (arch, lat) in enumerate(rows):
        row = validate_row({
            "id": k, "space": space.name, "arch": arch_field(space, arch),
            "latency_ms": lat, "hardware": hardware, "source": "imported",
            "backend": "imported", "batch_size": 1, "timestamp": stamp,
            "imported_from": str(source), "column": latency_column,
        }, str(target))
        lines.append(json.dumps(row, sort_keys=True) + "\n")
    try:
        atomic_write_bytes(target, "".join(lines).encode())
    except OSError as e:
        raise InputError(f"cannot write {target}: {e.strerror or e}") from None
    return len(lines)


def import_csv(path: str | Path, space_name: str, arch_column: str, latency_column: str,
               hardware: str, out: str | Path, kind: str = "x86",
               device: str | None = None) -> int:
    """Import a CSV as samples of `hardware` (created if unknown) into the new file `out`.

    Everything that can fail is checked before the profile or the file is written; a
    profile created here is removed again when the samples cannot be written."""
    if Path(out).exists():
        raise SampleError(f"--out {out} already exists; import writes a new file")
    rows = read_csv(path, space_name, arch_column, latency_column)
    profile_path, created = ensure_imported_profile(hardware, kind, device or hardware,
                                                    space_name)
    try:
        return write_imported(rows, space_name, hardware, path, latency_column, out)
    except BaseException:
        if created:
            profile_path.unlink(missing_ok=True)
        raise
