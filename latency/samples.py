"""Sample datasets: one JSON line per architecture whose latency was measured or simulated.

Why JSON lines: an append is one `write` of one line followed by fsync, so a profiling
run killed at any moment loses at most the line being written; on the next start that
torn line is cut off and profiling resumes after the last complete sample. Rows carry
their sample `id` (position in the seeded sampling sequence) and the `seed` of that
sequence, so resuming skips exactly the samples already present, shards merge without
duplicates, and runs with different seeds merge without shadowing each other. Rows also
name their `hardware` and `space`, and a file of one profile refuses rows of another.
Only a torn tail (an unfinished JSON object after the last newline) is ever cut; a file
that is not a sample file is refused, never truncated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, with_config
from typing_extensions import NotRequired, TypedDict

from search_spaces.base import SearchSpace
from search_spaces.errors import InputError
from search_spaces.fileio import atomic_write_bytes, read_json_lines

Source = Literal["measured", "simulated", "imported"]
SOURCES: tuple[str, ...] = get_args(Source)
_Name = Annotated[str, StringConstraints(min_length=1)]


@with_config(ConfigDict(extra="allow", strict=True))  # strict: no "1" for 1, no true for 1
class Row(TypedDict):
    """What every sample row holds; a row may hold more (threads, precision, noisy, ...)."""

    id: Annotated[int, Field(ge=0)]
    space: _Name
    arch: Any  # the space reads it (`space.parse`)
    latency_ms: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    hardware: _Name
    source: Source
    backend: _Name
    batch_size: Annotated[int, Field(gt=0)]
    timestamp: _Name
    seed: NotRequired[Annotated[int, Field(ge=0)]]


REQUIRED = tuple(k for k in Row.__annotations__ if k in Row.__required_keys__)
_ROW = TypeAdapter(Row)
#: what a field must be, as an error says it (the rest: a non-empty string)
_EXPECTED = {"id": "a non-negative integer", "seed": "a non-negative integer",
             "latency_ms": "a positive, finite number", "batch_size": "a positive integer",
             "source": f"one of {', '.join(SOURCES)}"}


class SampleError(InputError):
    """A sample file or row that cannot be used."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def validate_row(row: Any, where: str) -> dict[str, Any]:
    """`row` itself when it is a valid sample (`Row`), else a one-line `SampleError`."""
    if not isinstance(row, dict):
        raise SampleError(f"{where}: a sample must be a JSON object")
    try:
        _ROW.validate_python(row)
    except ValidationError as e:
        errors = e.errors()
        told = [x for x in errors if x["type"] == "missing"] or errors[:1]
        name = ", ".join(str(x["loc"][0]) for x in told)
        if told[0]["type"] == "missing":
            text = f"missing fields: {name}"
        else:
            text = (f"{name} must be {_EXPECTED.get(name, 'a non-empty string')}, "
                    f"got {told[0]['input']!r}")
        more = len(errors) - len(told)
        if more:
            text += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise SampleError(f"{where}: {text}") from None
    return row


def _read_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Valid rows and the byte length of the prefix that holds them (a torn last append
    lies beyond it). A file that is not a sample file (a CSV, a config, notes) is refused,
    never truncated (`search_spaces.fileio.read_json_lines`)."""
    lines = read_json_lines(path, error=SampleError)
    rows = [validate_row(r, f"{path}:{n}") for n, r in enumerate(lines.records, start=1)]
    return rows, lines.keep_bytes


def load_samples(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete rows of a sample file (a torn last line is ignored)."""
    p = Path(path)
    if not p.exists():
        raise SampleError(f"sample file {p} does not exist")
    return _read_lines(p)[0]


def sample_key(row: dict[str, Any]) -> tuple[int, int]:
    """(seed, id): which architecture of which seeded sequence a row measured. Rows written
    before seeds were recorded count as seed 0, the default."""
    return int(row.get("seed", 0)), int(row["id"])


class SampleWriter:
    """Appends rows to a sample file, one fsync'd line at a time.

    `expect` ({"hardware": ..., "space": ...}) names what the file is for: an existing
    file holding rows of another profile or space is refused before anything is written,
    so one device's latencies never end up in another's training data.
    """

    def __init__(self, path: str | os.PathLike[str],
                 expect: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise SampleError(f"{self.path} is not a file")
        rows, good_end = _read_lines(self.path)
        for key, want in (expect or {}).items():
            found = sorted({str(r.get(key)) for r in rows} - {str(want)})
            if found:
                raise SampleError(
                    f"{self.path} holds samples of {key} {', '.join(found)}, not {want}; "
                    "write them to another file (--out)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size != good_end:
            with open(self.path, "r+b") as f:  # cut a torn line left by a killed run
                f.truncate(good_end)
        self.keys = {sample_key(r) for r in rows}
        self.spaces = {r["space"] for r in rows}
        self.count = len(rows)

    def append(self, row: dict[str, Any]) -> None:
        row = validate_row(dict(row), str(self.path))
        key = sample_key(row)
        if key in self.keys:
            raise SampleError(f"{self.path}: sample id {row['id']} (seed {key[0]}) is already "
                              "present")
        line = (json.dumps(row, sort_keys=True) + "\n").encode()
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.keys.add(key)
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


def merge_samples(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]
                  ) -> tuple[int, int]:
    """Every distinct measurement of the files, ordered by (seed, id), into a new file.

    Rows are the same sample when their (seed, id) match: shards of one sequence never
    collide, runs with different seeds never shadow each other. Identical rows (a shard
    merged twice) are kept once; two different measurements of the same sample are both
    kept. Refuses files of different spaces or hardware, and an `out` that exists.
    Returns (rows written, identical rows dropped).
    """
    target = Path(out)
    if target.exists():
        raise SampleError(f"--out {target} already exists; merge writes a new file")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    keys: set[tuple[str, str]] = set()
    total = 0
    for p in paths:
        for r in load_samples(p):
            total += 1
            keys.add((r["space"], r["hardware"]))
            text = json.dumps(r, sort_keys=True)
            if text not in seen:
                seen.add(text)
                rows.append(r)
    if len(keys) > 1:
        raise SampleError(f"cannot merge samples of different spaces/hardware: {sorted(keys)}")
    rows.sort(key=sample_key)  # stable: repeated measurements keep their file order
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    atomic_write_bytes(target, text.encode())
    return len(rows), total - len(rows)


def arch_field(space: SearchSpace[Any], arch: Any) -> Any:
    """`arch` as a row stores it (`SearchSpace.row_form`: NB201's benchmark string, which
    published data use too; a DARTS genotype's JSON object); `space.parse` reads it back."""
    return space.row_form(arch)


def latencies(rows: Iterable[dict[str, Any]]) -> list[float]:
    return [float(r["latency_ms"]) for r in rows]
