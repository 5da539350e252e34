"""Hardware profiles: one YAML per device in `hardware_profiles/`, validated on load.

A profile says what a latency number refers to (the deployed network and the
measurement settings) and where it comes from: `measured` on the device in hand,
`simulated` from published specifications (a roofline model, `latency/simulate/`), or
`imported` from someone else's data. A simulated profile must list its specs and their
source, and says so wherever it is used.

Schema (`Profile` and its sections below, validated by pydantic; every key is checked:
an unknown key, a wrong type, a negative or non-finite number is a `HardwareError` naming
the file, the field and the bad value, on one line)::

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

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import NotRequired, TypedDict

from search_spaces.errors import InputError, first_line

Kind = Literal["cpu", "x86", "arm", "cuda"]
Source = Literal["measured", "simulated", "imported"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]
Layout = Literal["cifar", "imagenet"]
SOURCES: tuple[str, ...] = get_args(Source)
KINDS: tuple[str, ...] = get_args(Kind)
CPU_KINDS = ("cpu", "x86", "arm")
PRECISIONS: tuple[str, ...] = get_args(Precision)
LAYOUTS: tuple[str, ...] = get_args(Layout)
#: Spec keys a simulated profile must give (the roofline cannot run without them).
SIMULATED_SPECS = ("source", "peak_fp32_tflops", "memory_bandwidth_gbs", "kernel_overhead_us")


class HardwareError(InputError):
    """An unknown or malformed hardware profile."""


# ------------------------------------------------------------------- schema (pydantic)


def _expect(what: str) -> WrapValidator:
    """Whatever pydantic finds wrong with a value, say in one phrase what it must be. The
    value is kept as given (an int stays an int where a number is expected)."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            handler(value)
        except ValidationError:
            raise PydanticCustomError("expected", "must be {expected}",
                                      {"expected": what}) from None
        return value

    return WrapValidator(check)


def _spec_names(exclude: tuple[str, ...]) -> AfterValidator:
    """Every key of a list or mapping must name a spec (`SPEC_KEYS`), none of `exclude`."""

    def check(value: Any) -> Any:
        for key in value:
            if key not in SPEC_KEYS or key in exclude:
                raise PydanticCustomError("spec_key", "{key} is not a spec key",
                                          {"key": repr(key)})
        return value

    return AfterValidator(check)


# Every field type is strict (no "1" for 1, no true for 1, no 1.5 for an int; an int is a
# number; lists and mappings are strict through `_SECTION`), numbers are finite, and each
# type says in words what it must be.
Text = Annotated[str, StringConstraints(strict=True, pattern=r"\S"),
                 _expect("a non-empty string")]
PositiveInt = Annotated[int, Field(strict=True, gt=0), _expect("a positive integer")]
Count = Annotated[int, Field(strict=True, ge=0), _expect("an integer >= 0")]
Positive = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False),
                     _expect("a positive number")]
NonNegative = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False),
                        _expect("a number >= 0")]
Efficiency = Annotated[float, Field(strict=True, gt=0, le=1, allow_inf_nan=False),
                       _expect("a number in (0, 1]")]
Threshold = Annotated[float, Field(strict=True, gt=0, lt=1, allow_inf_nan=False),
                      _expect("a number in (0, 1)")]
Flag = Annotated[bool, Field(strict=True), _expect("true or false")]
Shape = Annotated[list[Annotated[int, Field(strict=True, gt=0)]],
                  Field(min_length=1, max_length=4),
                  _expect("a list of 1-4 positive integers (one sample's shape)")]
#: the activations a runtime fuses into the producing kernel (aten names: relu, silu, ...)
ActivationNames = Annotated[list[Annotated[str, StringConstraints(strict=True,
                                                                  pattern=r"^[a-z0-9_]+$")]],
                            _expect("a list of activation names (relu, silu, ...)")]
#: deployed low-bit kernels: precision class -> compute speed-up over fp32
LowbitSpeedups = Annotated[
    dict[Literal["binary", "int2", "int4", "int8"], Annotated[
        float, Field(strict=True, gt=0, allow_inf_nan=False)]],
    _expect("a mapping of binary / int2 / int4 / int8 to a positive speed-up over fp32")]
SpecNames = Annotated[list[str], _expect("a list of spec names"),
                      _spec_names(exclude=("sources", "estimates"))]
SpecSources = Annotated[dict[str, Text],
                        _spec_names(exclude=("sources", "estimates", "source"))]

_SECTION = ConfigDict(extra="forbid", strict=True)


@with_config(_SECTION)
class Measurement(TypedDict):
    backend: Text
    batch_size: PositiveInt
    precision: Annotated[Precision, _expect(f"one of {', '.join(PRECISIONS)}")]
    threads: NotRequired[PositiveInt]  # required for CPU kinds (see parse_profile)
    warmup: NotRequired[Count]
    warmup_s: NotRequired[NonNegative]
    repeats: NotRequired[PositiveInt]
    min_time_s: NotRequired[NonNegative]
    noise_threshold: NotRequired[Threshold]


@with_config(_SECTION)
class Network(TypedDict):
    dataset: Text
    layout: NotRequired[Annotated[Layout, _expect(f"one of {', '.join(LAYOUTS)}")]]
    input: Shape
    layers: PositiveInt
    channels: PositiveInt
    num_classes: PositiveInt


@with_config(_SECTION)
class Specs(TypedDict, total=False):
    """All optional; a simulated profile must give `SIMULATED_SPECS` (see parse_profile)."""

    source: Text
    peak_fp32_tflops: Positive
    memory_bandwidth_gbs: Positive
    kernel_overhead_us: NonNegative
    peak_fp16_tflops: Positive
    peak_int8_tops: Positive
    eff_compute: Efficiency
    eff_compute_depthwise: Efficiency
    eff_memory: Positive  # may exceed 1: cache-resident data
    fold_batchnorm: Flag
    fuse_activation: Flag
    fused_activations: ActivationNames
    lowbit_speedups: LowbitSpeedups
    cores: PositiveInt
    frequency_ghz: Positive
    flops_per_cycle: Positive
    memory_gb: Positive
    memory: Text
    tdp_w: Positive
    l2_cache_mb: Positive
    sources: SpecSources
    estimates: SpecNames


SPEC_KEYS = tuple(Specs.__annotations__)


@with_config(_SECTION)
class Profile(TypedDict):
    name: Text
    kind: Annotated[Kind, _expect(f"one of {', '.join(KINDS)}")]
    source: Annotated[Source, _expect(f"one of {', '.join(SOURCES)}")]
    device: Text
    measurement: Measurement
    network: Network
    specs: NotRequired[Specs | None]
    notes: NotRequired[Text]


_SECTIONS: dict[str, Any] = {"": Profile, "measurement": Measurement, "network": Network,
                             "specs": Specs}
_PROFILE = TypeAdapter(Profile)


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(error: ValidationError) -> str:
    """pydantic's first error as one line: the field path, what it must be, the bad value
    (unknown keys first, then missing ones, as a reader fixes them); and how many more."""
    order = {"extra_forbidden": 0, "invalid_key": 0, "missing": 1}
    errors = sorted(error.errors(), key=lambda e: order.get(e["type"], 2))
    first, kind = errors[0], errors[0]["type"]
    loc = [str(part) for part in first["loc"]]
    path, section = ".".join(loc), ".".join(loc[:-1])
    head = f"{section}: " if section else ""
    told = [first]
    if kind in ("extra_forbidden", "invalid_key"):  # invalid_key: not a string
        known = ", ".join(_SECTIONS[section].__annotations__) if section in _SECTIONS else ""
        text = f"{head}unknown key {loc[-1]!r}; known keys: {known}"
    elif kind == "missing":
        told = [e for e in errors if e["type"] == "missing" and e["loc"][:-1] == first["loc"][:-1]]
        text = f"{head}missing keys: {', '.join(str(e['loc'][-1]) for e in told)}"
    elif kind == "expected":
        text = f"{path} must be {first['ctx']['expected']}, got {_brief(first['input'])}"
    elif kind == "dict_type":
        text = f"{path} must be a mapping, got {_brief(first['input'])}"
    elif loc[-1:] == ["[key]"]:  # a mapping's key (specs.sources)
        text = f"{'.'.join(loc[:-2])}: key {first['input']!r} must be a spec name"
    else:  # our own checks (spec keys), or a pydantic message
        text = f"{path}: {first['msg']}"
    more = len(errors) - len(told)
    return text + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


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
    try:
        checked = _PROFILE.validate_python(data)
    except ValidationError as e:
        raise HardwareError(f"{where}: {_problem(e)}") from None
    kind, source, specs = checked["kind"], checked["source"], checked.get("specs")
    if kind in CPU_KINDS and "threads" not in checked["measurement"]:
        raise HardwareError(
            f"{where}: measurement: missing keys: threads (required for kind {kind})"
        )
    if source == "simulated":
        if specs is None:
            raise HardwareError(
                f"{where}: specs: a simulated profile must list its specs "
                f"({', '.join(SIMULATED_SPECS)}) and their source"
            )
        missing = [k for k in SIMULATED_SPECS if k not in specs]
        if missing:
            raise HardwareError(f"{where}: specs: missing keys: {', '.join(missing)}")
    return HardwareProfile(
        name=checked["name"],
        kind=kind,
        source=source,
        device=checked["device"],
        measurement=dict(checked["measurement"]),
        network=dict(checked["network"]),
        specs=dict(specs or {}),
        path=where,
        notes=checked.get("notes", ""),
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
