"""Hardware profiles: one YAML per device in `hardware_profiles/`, validated on load.

A profile says what a latency number refers to (the deployed network and the
measurement settings) and where it comes from: `measured` on the device in hand,
`simulated` from published specifications (a roofline model, `latency/simulate/`), or
`imported` from someone else's data. A simulated profile must list its specs and their
source, and says so wherever it is used.

Schema (every key is checked; an unknown key, a wrong type, a negative or non-finite
number is a `HardwareError` naming the file and the field, on one line)::

    name: p100                 # str, the profile's name (the file stem for shipped ones)
    kind: cuda                 # cpu | x86 | arm | cuda
    source: simulated          # measured | simulated | imported
    device: "NVIDIA ..."       # str, the device in words
    notes: "..."               # optional str
    measurement:
      backend: roofline-model  # str: torch-cpu, torch-cuda, tflite, roofline-model, ...
      batch_size: 1            # int > 0
      precision: fp32          # fp32 | fp16 | bf16 | int8
      threads: 1               # int > 0; required for CPU kinds (cpu, x86, arm)
      warmup: 10               # optional int >= 0: warm-up runs (at least)
      warmup_s: 0.2            # optional number >= 0: warm-up seconds (at least)
      repeats: 30              # optional int > 0: timed runs (at least)
      min_time_s: 0.5          # optional number >= 0: timed seconds (at least)
      noise_threshold: 0.05    # optional number in (0, 1): max spread before re-measuring
    network:                   # the DEPLOYED network the latency refers to
      dataset: cifar10         # str
      layout: cifar            # optional: cifar | imagenet (default cifar)
      input: [3, 32, 32]       # one sample's shape, positive ints
      layers: 20               # cells, int > 0
      channels: 36             # initial channels, int > 0
      num_classes: 10          # int > 0
    specs:                     # required (with the keys marked *) when source is simulated
      source: "..."            # * str: where the numbers come from
      peak_fp32_tflops: 9.3    # * > 0: peak rate of the units the measurement uses
      memory_bandwidth_gbs: 732  # * > 0: peak memory bandwidth
      kernel_overhead_us: 5    # * >= 0: fixed cost per launched kernel
      peak_fp16_tflops, peak_int8_tops          # optional > 0
      eff_compute, eff_compute_depthwise        # optional, in (0, 1]
      eff_memory               # optional > 0 (may exceed 1: cache-resident data)
      fold_batchnorm, fuse_activation           # optional bool
      cores, frequency_ghz, flops_per_cycle, memory_gb, tdp_w, l2_cache_mb  # optional > 0
      memory: "..."            # optional str (type, bus width)
      sources: {key: "..."}    # optional: a source per spec key
      estimates: [key, ...]    # optional: which spec keys are estimates, not published
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from search_spaces.errors import InputError, first_line

SOURCES = ("measured", "simulated", "imported")
KINDS = ("cpu", "x86", "arm", "cuda")
CPU_KINDS = ("cpu", "x86", "arm")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
LAYOUTS = ("cifar", "imagenet")
REQUIRED = ("name", "kind", "source", "device", "measurement", "network")
#: Spec keys a simulated profile must give (the roofline cannot run without them).
SIMULATED_SPECS = ("source", "peak_fp32_tflops", "memory_bandwidth_gbs", "kernel_overhead_us")


class HardwareError(InputError):
    """An unknown or malformed hardware profile."""


# ----------------------------------------------------------------------------- checks

Check = Callable[[str, str, Any], Any]


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(where: str, field_name: str, expected: str, value: Any) -> HardwareError:
    return HardwareError(f"{where}: {field_name} must be {expected}, got {_brief(value)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _string(where: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, name, "a non-empty string", value)
    return value


def _integer(minimum: int) -> Check:
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def check(where: str, name: str, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise _fail(where, name, what, value)
        return value

    return check


def _number(low: float = 0.0, high: float = math.inf, *, low_open: bool = True,
            high_open: bool = True) -> Check:
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    if math.isinf(high):
        what = "a positive number" if low == 0 and low_open else f"a number >= {low:g}"
    else:
        what = f"a number in {left}{low:g}, {high:g}{right}"

    def check(where: str, name: str, value: Any) -> float:
        ok = _is_number(value) and math.isfinite(value)
        if ok:
            ok = (value > low if low_open else value >= low) and (
                value < high if high_open else value <= high
            )
        if not ok:
            raise _fail(where, name, what, value)
        return value

    return check


def _choice(options: tuple[str, ...]) -> Check:
    def check(where: str, name: str, value: Any) -> str:
        if value not in options:
            raise _fail(where, name, f"one of {', '.join(options)}", value)
        return value

    return check


def _boolean(where: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, name, "true or false", value)
    return value


def _shape(where: str, name: str, value: Any) -> list[int]:
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= 4
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise _fail(where, name, "a list of 1-4 positive integers (one sample's shape)", value)
    return list(value)


def _spec_keys_list(where: str, name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(where, name, "a list of spec names", value)
    for v in value:
        if v not in SPECS_SCHEMA or v in ("sources", "estimates"):
            raise HardwareError(f"{where}: {name}: {v!r} is not a spec key")
    return list(value)


def _spec_sources(where: str, name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _fail(where, name, "a mapping of spec name to source", value)
    for key, text in value.items():
        if key not in SPECS_SCHEMA or key in ("sources", "estimates", "source"):
            raise HardwareError(f"{where}: {name}: {key!r} is not a spec key")
        _string(where, f"{name}.{key}", text)
    return dict(value)


_positive_int = _integer(1)
_positive = _number()
_fraction = _number(0.0, 1.0, high_open=False)

#: section -> key -> (required, check). `required` for specs means "for simulated profiles".
MEASUREMENT_SCHEMA: dict[str, tuple[bool, Check]] = {
    "backend": (True, _string),
    "batch_size": (True, _positive_int),
    "precision": (True, _choice(PRECISIONS)),
    "threads": (False, _positive_int),
    "warmup": (False, _integer(0)),
    "warmup_s": (False, _number(0.0, low_open=False)),
    "repeats": (False, _positive_int),
    "min_time_s": (False, _number(0.0, low_open=False)),
    "noise_threshold": (False, _number(0.0, 1.0)),
}
NETWORK_SCHEMA: dict[str, tuple[bool, Check]] = {
    "dataset": (True, _string),
    "layout": (False, _choice(LAYOUTS)),
    "input": (True, _shape),
    "layers": (True, _positive_int),
    "channels": (True, _positive_int),
    "num_classes": (True, _positive_int),
}
SPECS_SCHEMA: dict[str, tuple[bool, Check]] = {
    "source": (True, _string),
    "peak_fp32_tflops": (True, _positive),
    "memory_bandwidth_gbs": (True, _positive),
    "kernel_overhead_us": (True, _number(0.0, low_open=False)),
    "peak_fp16_tflops": (False, _positive),
    "peak_int8_tops": (False, _positive),
    "eff_compute": (False, _fraction),
    "eff_compute_depthwise": (False, _fraction),
    "eff_memory": (False, _positive),
    "fold_batchnorm": (False, _boolean),
    "fuse_activation": (False, _boolean),
    "cores": (False, _positive_int),
    "frequency_ghz": (False, _positive),
    "flops_per_cycle": (False, _positive),
    "memory_gb": (False, _positive),
    "memory": (False, _string),
    "tdp_w": (False, _positive),
    "l2_cache_mb": (False, _positive),
    "sources": (False, _spec_sources),
    "estimates": (False, _spec_keys_list),
}
TOP_KEYS = (*REQUIRED, "specs", "notes")


def _section(
    data: Any, schema: dict[str, tuple[bool, Check]], section: str, where: str,
    *, require: bool = True,
) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _fail(where, section, "a mapping", data)
    unknown = [str(k) for k in data if k not in schema]
    if unknown:
        raise HardwareError(
            f"{where}: {section}: unknown key {unknown[0]!r}; known keys: {', '.join(schema)}"
        )
    if require:
        missing = [k for k, (req, _) in schema.items() if req and k not in data]
        if missing:
            raise HardwareError(f"{where}: {section}: missing keys: {', '.join(missing)}")
    return {k: schema[k][1](where, f"{section}.{k}", v) for k, v in data.items()}


# ---------------------------------------------------------------------------- profile


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
    notes: str = ""

    @property
    def simulated(self) -> bool:
        return self.source == "simulated"

    @property
    def label(self) -> str:
        """How numbers from this profile must be labelled in every output."""
        return {"simulated": "simulated", "imported": "imported measurements"}.get(
            self.source, "measured"
        )

    @property
    def prediction_label(self) -> str:
        """How a predictor's output for this profile is labelled: `simulated` when it learned
        the roofline simulator, `measured-model` when it learned real measurements (a model
        of measurements is still a model, not a measurement)."""
        return "simulated" if self.source == "simulated" else "measured-model"

    @property
    def batch_size(self) -> int:
        return int(self.measurement["batch_size"])

    @property
    def precision(self) -> str:
        return str(self.measurement["precision"])

    @property
    def threads(self) -> int | None:
        threads = self.measurement.get("threads")
        return None if threads is None else int(threads)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape of the deployed network (no batch dimension)."""
        return tuple(int(s) for s in self.network["input"])

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "device": self.device,
            "measurement": dict(self.measurement),
            "network": dict(self.network),
            "specs": dict(self.specs),
        }
        if self.notes:
            out["notes"] = self.notes
        return out


#: environment variable naming the user's data directory (default ~/.hw-nas)
HOME_ENV = "HW_NAS_HOME"


def profiles_dir() -> Path:
    """The profiles shipped with the package (read-only in a normal install)."""
    return Path(str(resources.files("hardware_profiles")))


def user_profiles_dir() -> Path:
    """Where the user's own profiles, samples and predictors go ($HW_NAS_HOME, default
    ~/.hw-nas, then hardware_profiles/): never inside the installed package, so a
    reinstall cannot delete what a user measured and a read-only install still works."""
    home = os.environ.get(HOME_ENV) or str(Path.home() / ".hw-nas")
    return Path(home).expanduser() / "hardware_profiles"


def profile_dirs() -> list[Path]:
    """Search order: the user's directory first (their files shadow shipped ones)."""
    return [user_profiles_dir(), profiles_dir()]


def find_profile_file(filename: str) -> Path | None:
    """The first existing `filename` (file or directory) in `profile_dirs()`."""
    for d in profile_dirs():
        if (d / filename).exists():
            return d / filename
    return None


def profile_file(filename: str, for_writing: bool = False) -> Path:
    """Where `filename` is read from (the user's copy, else the shipped one, else where
    it would be written), or, `for_writing`, always the user's directory."""
    if not for_writing:
        found = find_profile_file(filename)
        if found is not None:
            return found
    return user_profiles_dir() / filename


def profile_names() -> list[str]:
    return sorted({p.stem for d in profile_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def parse_profile(data: Any, where: str) -> HardwareProfile:
    """Validate a profile already read from YAML; `where` names it in error messages."""
    if not isinstance(data, dict):
        raise HardwareError(f"{where}: a hardware profile must be a YAML mapping")
    unknown = [str(k) for k in data if k not in TOP_KEYS]
    if unknown:
        raise HardwareError(
            f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(TOP_KEYS)}"
        )
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise HardwareError(f"{where}: missing keys: {', '.join(missing)}")
    name = _string(where, "name", data["name"])
    kind = _choice(KINDS)(where, "kind", data["kind"])
    source = _choice(SOURCES)(where, "source", data["source"])
    device = _string(where, "device", data["device"])
    notes = _string(where, "notes", data["notes"]) if "notes" in data else ""
    measurement = _section(data["measurement"], MEASUREMENT_SCHEMA, "measurement", where)
    if kind in CPU_KINDS and "threads" not in measurement:
        raise HardwareError(
            f"{where}: measurement: missing keys: threads (required for kind {kind})"
        )
    network = _section(data["network"], NETWORK_SCHEMA, "network", where)
    simulated = source == "simulated"
    specs_data = data.get("specs")
    if specs_data is None:
        if simulated:
            raise HardwareError(
                f"{where}: specs: a simulated profile must list its specs "
                f"({', '.join(SIMULATED_SPECS)}) and their source"
            )
        specs: dict[str, Any] = {}
    else:
        specs = _section(specs_data, SPECS_SCHEMA, "specs", where, require=simulated)
    return HardwareProfile(
        name=name,
        kind=kind,
        source=source,
        device=device,
        measurement=measurement,
        network=network,
        specs=specs,
        path=where,
        notes=notes,
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def _yaml_message(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError):
        what = e.problem or e.context or type(e).__name__
        mark = e.problem_mark or e.context_mark
        if mark is not None:
            return f"{what} (line {mark.line + 1}, column {mark.column + 1})"
        return str(what)
    first = first_line(e)
    return first


def read_profile(path: Path) -> HardwareProfile:
    """Read and validate one profile file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise HardwareError(f"cannot read hardware profile {path}: {e}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise HardwareError(f"malformed hardware profile {path}: {_yaml_message(e)}") from None
    return parse_profile(data, str(path))


def load_profile(name: str) -> HardwareProfile:
    """A shipped profile by name, or a path to a profile YAML."""
    path = Path(name)
    looks_like_path = path.suffix in {".yaml", ".yml"} or "/" in name or "\\" in name
    if looks_like_path:
        if not path.is_file():
            raise HardwareError(f"hardware profile file not found: {name}")
        return read_profile(path)
    found = find_profile_file(f"{name}.yaml") if name and "." not in name else None
    path = found or profiles_dir() / f"{name}.yaml"
    if not name or not path.is_file():
        raise HardwareError(
            f"unknown hardware {name!r}; known profiles: {', '.join(profile_names())}"
        )
    profile = read_profile(path)
    if profile.name != name:
        raise HardwareError(
            f"{path}: name {profile.name!r} does not match the file name {name!r}"
        )
    return profile
