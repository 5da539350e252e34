"""The dict form of a run's configuration (`config.json`), shared by search and retrain.

A run directory stores its configuration as JSON so `--resume` rebuilds exactly the
config it started with. JSON has lists where the dataclasses hold tuples (kept immutable
so configs can be compared and hashed), and an old or hand-edited file may hold keys
this version does not know: both are handled here once.
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from typing import Any, TypeVar

from search_spaces.errors import InputError

C = TypeVar("C", bound="ConfigDict")


class ConfigDict:
    """Mixin for frozen dataclass configs; `KIND` names the config in error messages."""

    KIND = "run"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - set(known)
        if unknown:
            raise InputError(f"unknown {cls.KIND} config keys: {', '.join(sorted(unknown))}")
        values = {
            k: tuple(v) if isinstance(v, list) and isinstance(known[k].default, tuple) else v
            for k, v in data.items()
        }
        return cls(**values)

    def with_overrides(self: C, **overrides: Any) -> C:
        """A copy with every override that is not None (an unset CLI option) applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[type-var]
