"""The registry of search spaces, and the one loader of architectures.

`get_space(name)` returns a `SearchSpace` (search_spaces/base.py); a new space is one
`register_space` call. `load_architecture` turns whatever a user gives a command (a
published name, a text form such as an NB201 arch string, a file, a run directory) into
an architecture of the space it belongs to, and `space_of` finds the space of an
architecture object, so no caller asks "which space is this?" by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from search_spaces.base import SearchSpace
from search_spaces.darts_space import DARTS_SPACE, DartsSpace
from search_spaces.errors import InputError
from search_spaces.genotype import MAX_FILE_BYTES
from search_spaces.genotype_library import resolve_genotype
from search_spaces.nb201_space import NB201_SPACE, Nb201Space

#: the space of published genotypes and of commands that name no space
DEFAULT_SPACE = "darts"

SPACES: dict[str, SearchSpace[Any]] = {}


def register_space(space: SearchSpace[Any]) -> SearchSpace[Any]:
    """Make `space` known to every command under `space.name`; a name is registered once."""
    if not isinstance(space, SearchSpace):
        raise TypeError(f"register_space expects a SearchSpace, got {type(space).__name__}")
    if space.name in SPACES and SPACES[space.name] is not space:
        raise ValueError(f"search space {space.name!r} is already registered")
    SPACES[space.name] = space
    return space


register_space(DARTS_SPACE)
register_space(NB201_SPACE)


def space_names() -> list[str]:
    return list(SPACES)


def encoding_space_names() -> list[str]:
    """Every name a profile's samples and predictors can be kept under: the registered
    spaces and the activation variants of those that search activations ("darts-act")."""
    from search_spaces.activation_encoding import VARIANT_SUFFIX

    return [*SPACES, *(n + VARIANT_SUFFIX for n, s in SPACES.items()
                       if s.searches_activations)]


def get_space(name: str) -> SearchSpace[Any]:
    """A registered space, or a variant of one: over another op set ("darts.adder",
    `op_set_space`) and/or with the activation-aware encoding ("darts-act",
    `activation_encoding`), the names profiles and predictors of such searches use."""
    if name in SPACES:
        return SPACES[name]
    from search_spaces.op_set_space import variant_of

    variant = variant_of(name, SPACES)
    if variant is None:
        raise InputError(f"unknown search space {name!r}; known: {', '.join(SPACES)}")
    return variant


def space_of(arch: object) -> SearchSpace[Any]:
    """The space `arch` is an architecture of."""
    for space in SPACES.values():
        if space.owns(arch):
            return space
    raise InputError(f"{type(arch).__name__} is not an architecture of any search space "
                     f"({', '.join(SPACES)})")


def claiming_space(stored: Any) -> SearchSpace[Any] | None:
    """The space other than the default one that claims a stored form (a JSON value from
    a file, a log or a sample row, or text), or None: DARTS genotypes predate the `space`
    field, so the default space is what is left."""
    for space in SPACES.values():
        if space.name != DEFAULT_SPACE and space.claims(stored):
            return space
    return None


def _read_json(path: Path) -> Any | None:
    """The JSON value of a small UTF-8 file, or None when it is not one (then the DARTS
    loader, which also takes a pasted literal, gives the one-line error)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None


def load_architecture(name_or_path: str | Path) -> Any:
    """What commands take as an architecture: a published name, a space's text form (an
    NB201 arch string), a file (JSON of any space, or a DARTS literal), or a run directory
    (its `genotype.json`). Unknown op names and malformed files fail with one line."""
    text = str(name_or_path)
    claimed = claiming_space(text) if isinstance(name_or_path, str) else None
    if claimed is not None:
        return claimed.parse(text, source=repr(text))
    path = Path(name_or_path)
    if path.is_dir() and (path / "genotype.json").is_file():
        path = path / "genotype.json"  # a run directory stands for its result
    if path.is_file():
        data = _read_json(path)
        claimed = claiming_space(data) if data is not None else None
        if claimed is not None:
            return claimed.parse(data, source=f"'{path}'")
    genotype = resolve_genotype(name_or_path)
    # checked against the op set, activation pairs under their one name
    return get_space(DEFAULT_SPACE).parse(genotype)

__all__ = [
    "DEFAULT_SPACE",
    "SPACES",
    "claiming_space",
    "DartsSpace",
    "Nb201Space",
    "get_space",
    "load_architecture",
    "register_space",
    "space_names",
    "space_of",
]
