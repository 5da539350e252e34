"""Where a profile's samples and predictor live, and finding the predictor a command uses.

Samples and predictors live beside their profile, one file per (hardware, space) because
a predictor knows one op set: ``<name>.samples.jsonl`` / ``<name>.predictor/`` for the
DARTS space, ``<name>.<space>.samples.jsonl`` / ``<name>.<space>.predictor/`` for another.
They are read from the user's directory, else the shipped one, and always written to the
user's (`latency.hardware.profile_file`). `nas search`, `nas latency` and `nas retrain`
all go through `locate_predictor`, so they agree on which predictor a profile has and
say the same thing when it has none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latency.hardware import profile_file
from search_spaces.errors import InputError
from search_spaces.space import DEFAULT_SPACE

PREDICTOR_FILE = "predictor.json"


def _tag(space: str) -> str:
    """Files of the default space carry no tag (they predate the others)."""
    return "" if space == DEFAULT_SPACE else f".{space}"


def default_samples_path(hardware: str, space: str = "darts", for_writing: bool = False) -> Path:
    return profile_file(f"{hardware}{_tag(space)}.samples.jsonl", for_writing)


def default_predictor_path(hardware: str, space: str = "darts",
                           for_writing: bool = False) -> Path:
    return profile_file(f"{hardware}{_tag(space)}.predictor", for_writing)


def how_to_make(hardware: str, space: str = "darts") -> str:
    """The two commands that give `hardware` a predictor for `space`."""
    if space == DEFAULT_SPACE:
        return (f"run `nas profile --hardware {hardware}` and "
                f"`nas predictor train --hardware {hardware}`")
    return (f"run `nas profile --hardware {hardware} --space {space}` and "
            f"`nas predictor train --hardware {hardware} --space {space}`")


def locate_predictor(hardware: str, space: str = "darts",
                     explicit: str | Path | None = None) -> Path | None:
    """The predictor directory to use, or None when the profile has none for `space`.

    A path the user named must hold a predictor: a typo there is an error, never a
    silent fall-back to no prediction."""
    if explicit is not None:
        path = Path(explicit)
        if not (path / PREDICTOR_FILE).is_file():
            raise InputError(f"no latency predictor at {path} (no {PREDICTOR_FILE})")
        return path
    path = default_predictor_path(hardware, space)
    return path if (path / PREDICTOR_FILE).is_file() else None


def require_predictor(hardware: str, space: str = "darts",
                      explicit: str | Path | None = None) -> Path:
    """`locate_predictor`, where having none is an error that says how to make one."""
    path = locate_predictor(hardware, space, explicit)
    if path is None:
        raise InputError(f"no latency predictor at {default_predictor_path(hardware, space)}; "
                         f"{how_to_make(hardware, space)} first")
    return path


def load_for_space(path: Path, space: Any) -> tuple[Any, dict[str, Any]]:
    """Load the predictor at `path`, checked against `space`'s ops and encoding."""
    from latency.predictor.artifact import load_predictor

    return load_predictor(path, op_names=space.encoding_ops, encoding_size=space.encoding_size)
