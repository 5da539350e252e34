"""Sample datasets: one JSON line per architecture whose latency was measured or simulated.

Why JSON lines: an append is one `write` of one line followed by fsync, so a profiling
run killed at any moment loses at most the line being written; on the next start that
torn line is cut off and profiling resumes after the last complete sample. Rows carry
their sample `id` (position in the seeded sampling sequence), so resuming skips exactly
the ids already present and shards of the sequence merge without duplicates.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from search_spaces.errors import InputError
from search_spaces.fileio import atomic_write_bytes

REQUIRED = (
    "id", "space", "arch", "latency_ms", "hardware", "source", "backend",
    "batch_size", "timestamp",
)
SOURCES = ("measured", "simulated", "imported")


class SampleError(InputError):
    """A sample file or row that cannot be used."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def validate_row(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise SampleError(f"{where}: a sample must be a JSON object")
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise SampleError(f"{where}: missing fields: {', '.join(missing)}")
    lat = row["latency_ms"]
    if isinstance(lat, bool) or not isinstance(lat, (int, float)) or not math.isfinite(lat):
        raise SampleError(f"{where}: latency_ms must be a finite number, got {lat!r}")
    if lat <= 0:
        raise SampleError(f"{where}: latency_ms must be positive, got {lat!r}")
    if row["source"] not in SOURCES:
        raise SampleError(f"{where}: source {row['source']!r} is not one of {', '.join(SOURCES)}")
    if not isinstance(row["id"], int) or isinstance(row["id"], bool) or row["id"] < 0:
        raise SampleError(f"{where}: id must be a non-negative integer, got {row['id']!r}")
    return row


def _read_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Valid rows and the byte length of the complete-line prefix of the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    except OSError as e:
        raise SampleError(f"cannot read {path}: {e.strerror or e}") from None
    rows, good_end, pos = [], 0, 0
    lines = data.split(b"\n")
    for n, raw in enumerate(lines, start=1):
        end = pos + len(raw) + 1
        last = n == len(lines)
        if raw.strip():
            try:
                row = json.loads(raw)
            except json.JSONDecodeError:
                if last or (n == len(lines) - 1 and not lines[-1]):
                    break  # torn final line of a killed run: ignored, repaired on append
                raise SampleError(f"{path}:{n}: not a JSON line") from None
            if last:
                break  # no newline yet: the write was cut short
            rows.append(validate_row(row, f"{path}:{n}"))
        pos = end
        if not last:
            good_end = pos
    return rows, good_end


def load_samples(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete rows of a sample file (a torn last line is ignored)."""
    p = Path(path)
    if not p.exists():
        raise SampleError(f"sample file {p} does not exist")
    return _read_lines(p)[0]


class SampleWriter:
    """Appends rows to a sample file, one fsync'd line at a time."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows, good_end = _read_lines(self.path)
        if self.path.exists() and self.path.stat().st_size != good_end:
            with open(self.path, "r+b") as f:  # cut a torn line left by a killed run
                f.truncate(good_end)
        self.ids = {r["id"] for r in rows}
        self.spaces = {r["space"] for r in rows}
        self.count = len(rows)

    def append(self, row: dict[str, Any]) -> None:
        row = validate_row(dict(row), str(self.path))
        if row["id"] in self.ids:
            raise SampleError(f"{self.path}: sample id {row['id']} is already present")
        line = (json.dumps(row, sort_keys=True) + "\n").encode()
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.ids.add(row["id"])
        self.count += 1


def shard_ids(total: int, shard: int, num_shards: int) -> list[int]:
    """Sample ids of shard `shard` (0-based) of `num_shards`: every num_shards-th id."""
    if not 0 <= shard < num_shards:
        raise SampleError(f"shard {shard + 1}/{num_shards} does not exist")
    return list(range(shard, total, num_shards))


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' with 1 <= I <= N -> (I-1, N)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SampleError(f"--shard must look like I/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= i <= n:
        raise SampleError(f"--shard {text}: I must be between 1 and N")
    return i - 1, n


def merge_samples(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> int:
    """Union of shard files ordered by id; refuses files of different spaces or hardware."""
    rows: dict[int, dict[str, Any]] = {}
    keys: set[tuple[str, str]] = set()
    for p in paths:
        for r in load_samples(p):
            keys.add((r["space"], r["hardware"]))
            rows.setdefault(r["id"], r)
    if len(keys) > 1:
        raise SampleError(f"cannot merge samples of different spaces/hardware: {sorted(keys)}")
    text = "".join(json.dumps(rows[i], sort_keys=True) + "\n" for i in sorted(rows))
    atomic_write_bytes(out, text.encode())
    return len(rows)


def arch_field(space: Any, arch: Any) -> Any:
    """`arch` as a row stores it: the space's text form where it has one (NB201's benchmark
    string, which published data use too), else its JSON object (a DARTS genotype).
    `space.parse` reads either back."""
    return space.format(arch) if hasattr(space, "format") else arch.to_dict()


def latencies(rows: Iterable[dict[str, Any]]) -> list[float]:
    return [float(r["latency_ms"]) for r in rows]
