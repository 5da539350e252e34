"""Import someone else's latency measurements (a CSV of architectures and latencies).

Every row is validated (architecture parses in the space, latency is a finite positive
number) and a bad row is reported by its line number and column, on one line. Rows become
samples in the usual format, marked `imported`, so predictors train on them like any
other samples; the profile they belong to is created (source: imported) if needed.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import yaml

from latency.hardware import KINDS, HardwareError, load_profile, profile_file
from latency.samples import SampleError, SampleWriter, arch_field, now_iso
from search_spaces.errors import InputError
from search_spaces.space import get_space


def ensure_imported_profile(name: str, kind: str, device: str, space: str) -> Path:
    """The profile `name`, created as `source: imported` when it does not exist yet."""
    try:
        load_profile(name)
        return profile_file(f"{name}.yaml")
    except HardwareError as e:
        if "unknown hardware" not in str(e):
            raise
    if kind not in KINDS:
        raise InputError(f"--kind {kind!r} is not one of {', '.join(KINDS)}")
    network = ({"dataset": "cifar10", "input": [3, 32, 32], "layers": 15, "channels": 16,
                "num_classes": 10} if space == "nb201" else
               {"dataset": "cifar10", "input": [3, 32, 32], "layers": 20, "channels": 36,
                "num_classes": 10})
    data: dict[str, Any] = {
        "name": name, "kind": kind, "source": "imported", "device": device,
        "notes": f"created by `nas profile import` for {space} measurements made elsewhere",
        "measurement": {"backend": "imported", "batch_size": 1, "precision": "fp32",
                        **({"threads": 1} if kind != "cuda" else {})},
        "network": network,
    }
    path = profile_file(f"{name}.yaml", for_writing=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    except OSError as e:
        raise InputError(f"cannot create profile {path}: {e.strerror or e}") from None
    load_profile(name)  # validates what was written
    return path


def import_csv(path: str | Path, space_name: str, arch_column: str, latency_column: str,
               hardware: str, out: str | Path) -> int:
    """Append every row of the CSV as an imported sample; returns the number written."""
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
    writer = SampleWriter(out)
    if writer.count:
        raise SampleError(f"{out} already holds samples; import into a new file")
    stamp = now_iso()
    for k, (arch, lat) in enumerate(rows):
        writer.append({
            "id": k, "space": space.name, "arch": arch_field(space, arch),
            "latency_ms": lat, "hardware": hardware, "source": "imported",
            "backend": "imported", "batch_size": 1, "timestamp": stamp,
            "imported_from": str(p), "column": latency_column,
        })
    return len(rows)
