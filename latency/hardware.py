"""Hardware profiles: one YAML per device in `hardware_profiles/`, validated on load.

A profile says what a latency number refers to (the deployed network and the
measurement settings) and where it comes from: `measured` on the device in hand,
`simulated` from published specifications, or `imported` from someone else's data. A
simulated profile must list its specs and their source, and says so wherever it is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from search_spaces.errors import InputError

SOURCES = ("measured", "simulated", "imported")
KINDS = ("cpu", "x86", "arm", "cuda")
REQUIRED = ("name", "kind", "source", "device", "measurement", "network")


class HardwareError(InputError):
    """An unknown or malformed hardware profile."""


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    kind: str
    source: str
    device: str
    measurement: dict[str, Any]
    network: dict[str, Any]
    specs: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def simulated(self) -> bool:
        return self.source == "simulated"

    @property
    def label(self) -> str:
        """How numbers from this profile must be labelled in every output."""
        return {"simulated": "simulated", "imported": "imported measurements"}.get(
            self.source, "measured"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "device": self.device,
            "measurement": self.measurement,
            "network": self.network,
            "specs": self.specs,
        }


def profiles_dir() -> Path:
    return Path(str(resources.files("hardware_profiles")))


def profile_names() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def parse_profile(data: Any, where: str) -> HardwareProfile:
    if not isinstance(data, dict):
        raise HardwareError(f"{where}: a hardware profile must be a YAML mapping")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise HardwareError(f"{where}: missing keys: {', '.join(missing)}")
    if data["kind"] not in KINDS:
        raise HardwareError(f"{where}: kind {data['kind']!r} is not one of {', '.join(KINDS)}")
    if data["source"] not in SOURCES:
        raise HardwareError(
            f"{where}: source {data['source']!r} is not one of {', '.join(SOURCES)}"
        )
    for key in ("measurement", "network"):
        if not isinstance(data[key], dict):
            raise HardwareError(f"{where}: {key} must be a mapping")
    specs = data.get("specs") or {}
    if data["source"] == "simulated" and not (isinstance(specs, dict) and specs.get("source")):
        raise HardwareError(f"{where}: a simulated profile must list its specs and their source")
    return HardwareProfile(
        name=str(data["name"]),
        kind=data["kind"],
        source=data["source"],
        device=str(data["device"]),
        measurement=dict(data["measurement"]),
        network=dict(data["network"]),
        specs=dict(specs),
        path=where,
    )


def load_profile(name: str) -> HardwareProfile:
    """A shipped profile by name, or a path to a profile YAML."""
    path = Path(name)
    if not (path.suffix in {".yaml", ".yml"} and path.is_file()):
        path = profiles_dir() / f"{name}.yaml"
        if not path.is_file():
            raise HardwareError(
                f"unknown hardware {name!r}; known profiles: {', '.join(profile_names())}"
            )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HardwareError(f"malformed hardware profile {path}: {first}") from None
    return parse_profile(data, str(path))
