"""The run directory: everything a run writes, and everything a resume needs.

Layout (docs/architecture.md): `config.json` (resolved config), `log.jsonl` (one line per epoch),
`arch_weights.jsonl` (softmax architecture weights per epoch), `checkpoint.pt` (latest
state, replaced atomically), `genotype.json` (final), `summary.json`.

A checkpoint records how many log lines existed when it was taken; a resume cuts the
logs back to that, so lines written after the last checkpoint by a killed run are not
duplicated when their epoch is run again. A kill during a log write leaves a torn last
line (no newline, or bytes that are not JSON): readers skip it and a resume cuts it.
Logs that hold fewer lines than the checkpoint says, or lines but no checkpoint, cannot
be repaired without guessing; `reconcile` refuses them in one line instead of silently
starting over and appending (docs/robustness.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from search_spaces.errors import InputError, first_line
from search_spaces.fileio import atomic_write_bytes, read_json_lines

LOG = "log.jsonl"
ARCH_LOG = "arch_weights.jsonl"
CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


class RunDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def create(cls, path: str | os.PathLike[str], config: dict[str, Any]) -> RunDir:
        """A new run; refuses a non-empty directory so nothing a user has is overwritten."""
        p = Path(path)
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise InputError(
                f"output directory {p} already exists and is not empty; "
                f"use --resume {p} or choose another --out"
            )
        p.mkdir(parents=True, exist_ok=True)
        run = cls(p)
        atomic_write_json(p / CONFIG, config)
        return run

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        p = Path(path)
        if not (p / CONFIG).is_file():
            raise InputError(f"cannot resume {p}: no {CONFIG} there (not a run directory)")
        return cls(p)

    def config(self) -> dict[str, Any]:
        p = self.path / CONFIG
        try:
            config = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"cannot read {p}: {first_line(e)}") from None
        if not isinstance(config, dict):
            raise InputError(f"{p} is not a run configuration (not a JSON object)")
        return config

    # ---------------------------------------------------------------- logs

    def append(self, name: str, record: dict[str, Any]) -> None:
        with open(self.path / name, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        """The complete records of a log; a torn last line (a kill mid-write) is left out,
        a damaged line before it is an error naming the file and line (`read_json_lines`)."""
        return read_json_lines(self.path / name, error=InputError).records

    def line_counts(self) -> dict[str, int]:
        return {n: len(self.read_jsonl(n)) for n in (LOG, ARCH_LOG)}

    def truncate_logs(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            lines = self.read_jsonl(name)[:n]
            atomic_write_bytes(
                self.path / name, "".join(json.dumps(r) + "\n" for r in lines).encode()
            )

    def check_logs(self, state: dict[str, Any] | None) -> None:
        """Refuse logs that cannot be brought back to the checkpoint `state` (None: there
        is no checkpoint) without guessing; changes nothing.

        Lines past the checkpoint are fine (a killed run wrote them for an epoch that will
        run again). Missing lines, or logs without any checkpoint, mean a file was lost or
        replaced: resuming would duplicate or skip epochs.
        """
        expected = dict(state["log_lines"]) if state is not None else {}
        for name in (LOG, ARCH_LOG):
            have = len(self.read_jsonl(name))
            want = int(expected.get(name, 0))
            if state is None and have:
                raise InputError(
                    f"cannot resume {self.path}: {name} holds {have} epoch(s) but there is no "
                    f"{CHECKPOINT}; the run's files disagree (start a new run with --out)")
            if have < want:
                raise InputError(
                    f"cannot resume {self.path}: {name} holds {have} line(s) but {CHECKPOINT} "
                    f"was taken after {want}; the run's files disagree (start a new run "
                    "with --out)")

    def reconcile(self, state: dict[str, Any] | None) -> None:
        """`check_logs`, then cut the logs back to the checkpoint: lines a killed run wrote
        after it, and a torn last line, go; the epochs they describe run again."""
        self.check_logs(state)
        expected = dict(state["log_lines"]) if state is not None else {}
        self.truncate_logs({name: int(expected.get(name, 0)) for name in (LOG, ARCH_LOG)
                            if (self.path / name).exists()})

    # ---------------------------------------------------------------- checkpoints

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        state = {**state, "log_lines": self.line_counts()}
        tmp = self.path / f".{CHECKPOINT}.tmp"
        torch.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path / CHECKPOINT)

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    def load_checkpoint(self) -> dict[str, Any]:
        """Load without unpickling arbitrary objects; corrupt files give one-line errors."""
        p = self.path / CHECKPOINT
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise InputError(f"cannot resume {self.path}: no {CHECKPOINT}") from None
        except Exception as e:  # torch raises several types for damaged archives
            msg = first_line(e)
            raise InputError(f"corrupt checkpoint {p}: {msg}") from None
        if not isinstance(state, dict) or "log_lines" not in state:
            raise InputError(f"corrupt checkpoint {p}: not a run checkpoint")
        return state

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)


class FollowerRunDir(RunDir):
    """The run directory as a data-parallel rank other than 0 sees it: the same path,
    and no writes. Rank 0 owns the directory; the other ranks hold the same state (checked
    every epoch), so their copies of every log line and checkpoint would only race rank
    0's, or, on another machine, land on a disk nobody reads (docs/distributed.md)."""

    def append(self, name: str, record: dict[str, Any]) -> None:
        pass

    def truncate_logs(self, counts: dict[str, int]) -> None:
        pass

    def check_logs(self, state: dict[str, Any] | None) -> None:
        pass  # rank 0 checked them before any rank started

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        pass

    def write_json(self, name: str, obj: Any) -> None:
        pass
