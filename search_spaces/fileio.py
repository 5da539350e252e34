"""Writing files so that a crash never leaves a half-written one in place.

Lives in the lowest layer because every layer saves something (genotypes, predictors,
checkpoints, sample files) and all of them need the same guarantee; and the one reader of
append-only JSON-lines files (run logs, sample files), with one policy for the torn last
line a kill leaves (docs/robustness.md).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to a temp file beside `path`, fsync it, then rename it over `path`.

    Readers see the old file or the new one, never a mix; a failed write leaves the old
    file untouched and no temp file behind. Parent directories are created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass(frozen=True)
class JsonLines:
    """The records of a JSON-lines file and how many leading bytes hold them; bytes past
    `keep_bytes` are a torn last write that a writer resuming the file cuts off."""

    records: list[dict[str, Any]]
    keep_bytes: int
    size: int

    @property
    def torn(self) -> bool:
        return self.size != self.keep_bytes


def read_json_lines(path: str | os.PathLike[str],
                    error: type[Exception] = ValueError) -> JsonLines:
    """One policy, for run logs, reports and sample files alike, for what a kill leaves.

    Every line must be a JSON object, except the last one, which is a torn write (left
    out, and reported in `keep_bytes`) when a killed append can explain it: it follows
    at least one record, or it is the unfinished start of an object. Anything else is
    `error` naming the file and line: a damaged line in the middle, or a file that is
    not ours at all (notes, a CSV, a config), which must never be cut or appended to.
    A missing file has no records.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return JsonLines([], 0, 0)
    except OSError as e:
        raise error(f"cannot read {p}: {e.strerror or e}") from None
    lines = data.split(b"\n")
    last = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
    records: list[dict[str, Any]] = []
    pos = keep = 0
    for i, raw in enumerate(lines):
        end = pos + len(raw) + 1  # through this line's newline
        complete = i < len(lines) - 1
        if raw.strip():
            record = _json_object(raw) if complete else None
            if record is None:
                if i == last and (records or _unfinished_object(raw)):
                    break  # a torn last write: everything from `keep` on
                raise error(f"{p}:{i + 1}: not a JSON object line; is it the right file?")
            records.append(record)
        if complete:
            keep = end
        pos = end
    return JsonLines(records, keep, len(data))


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _unfinished_object(raw: bytes) -> bool:
    """The start of a JSON object that was cut short (no complete value)."""
    text = raw.strip()
    if not text.startswith(b"{"):
        return False
    try:
        json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return True
    return False
