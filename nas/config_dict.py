"""The dict form of a run's configuration (`config.json`), shared by search and retrain.

A run directory stores its configuration as JSON so `--resume` rebuilds exactly the
config it started with. JSON has lists where the dataclasses hold tuples (kept immutable
so configs can be compared and hashed), and an old or hand-edited file may hold keys
this version does not know, or values of the wrong type: all are handled here once.
Values are checked against the dataclass's field types by pydantic, strictly (no "3"
for 3, no 3.0 or true for an int; an int is a float).
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from typing import Any, TypeVar, get_type_hints

from pydantic import BaseModel, ValidationError, create_model
from pydantic import ConfigDict as PydanticConfig

from search_spaces.errors import InputError

C = TypeVar("C", bound="ConfigDict")


_MODELS: dict[type, type[BaseModel]] = {}


def _model(cls: type) -> type[BaseModel]:
    """A strict pydantic model of the dataclass `cls`'s field types. (pydantic validates a
    dataclass itself only leniently from a dict: strict, it wants an instance.) Every
    field may be left out: the dataclass fills in its default."""
    if cls not in _MODELS:
        hints = get_type_hints(cls)
        spec: dict[str, Any] = {f.name: (hints[f.name], None) for f in fields(cls)}
        _MODELS[cls] = create_model(f"{cls.__name__}Fields",
                                    __config__=PydanticConfig(strict=True), **spec)
    return _MODELS[cls]


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class ConfigDict:
    """Mixin for frozen dataclass configs; `KIND` names the config in error messages."""

    KIND = "run"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
        """The config `data` describes; an unknown key or a value of the wrong type is an
        `InputError` of one line (prefixed by `where`, the file, when given)."""
        head = f"{where}: " if where else ""
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - set(known)
        if unknown:
            raise InputError(
                f"{head}unknown {cls.KIND} config keys: {', '.join(sorted(unknown))}")
        values = {
            k: tuple(v) if isinstance(v, list) and isinstance(known[k].default, tuple) else v
            for k, v in data.items()
        }
        try:
            _model(cls).model_validate(values)
        except ValidationError as e:
            first, more = e.errors()[0], e.error_count() - 1
            path = ".".join(str(part) for part in first["loc"])
            text = f"{path}: {first['msg'][:1].lower()}{first['msg'][1:]}"
            text += f", got {_brief(first['input'])}"
            if more:
                text += f" (and {more} more problem{'s' if more > 1 else ''})"
            raise InputError(f"{head}{cls.KIND} config: {text}") from None
        return cls(**values)

    def with_overrides(self: C, **overrides: Any) -> C:
        """A copy with every override that is not None (an unset CLI option) applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[type-var]
