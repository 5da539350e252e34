"""What a sweep is: its fixed settings, the parameters it varies, and its objectives.

Trials of a sweep are comparable only when they differ in the varied parameters and in
nothing else. So everything else (space, hardware, data, epochs, network size, seed, the
ranges and choices of the varied parameters, the objectives) is one frozen record,
`SweepSettings`, stored in the study (`study.SETTINGS_ATTR`) and compared with what every
later worker or resume asks for: a disagreement is refused in one line rather than mixing
two experiments in one Pareto front.

A setting that does not apply is left out of the record (the choices of a parameter that
is not varied, the fixed value of one that is), so that it can never cause a conflict, and
naming it on the command line is an error instead of being silently ignored.

Objectives: the retrain's held-out accuracy (`val_acc`, images kept out of its training;
never the test split, which would tune the choice on test data), latency for `--hardware`
(predicted by the profile's predictor, labelled `simulated` or `measured-model`; or
measured on this machine for a measured profile), and optionally modelled energy.
"""

from __future__ import annotations

import argparse
import itertools
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, NoReturn

from search_spaces.errors import InputError

#: the hyper-parameters a sweep can vary (`--vary`), in the order they are suggested
PARAMETERS = ("latency_weight", "ops", "activations", "sampler")
#: `--objectives` names; accuracy is always one of them
OBJECTIVES = ("accuracy", "latency", "energy")
#: where the latency objective comes from (`--latency-source`)
LATENCY_SOURCES = ("predicted", "measured")
#: the activations choice meaning "no activation search" (ReLU only, no --activations)
NO_ACTIVATIONS = "none"
#: the op set a search uses without --ops
DEFAULT_OPS = "darts"
DEFAULT_SAMPLER = "softmax"
#: separator of --activations-choices (a choice itself is a comma-separated list)
ACTIVATIONS_SEPARATOR = ";"

# Defaults sized so that `nas sweep --hardware p100` on the embedded digits data finishes
# in about 10-15 minutes on a 2-core CPU (docs/sweep.md gives the measured time).
DEFAULT_TRIALS = 6
DEFAULT_SEARCH_EPOCHS = 6
DEFAULT_RETRAIN_EPOCHS = 10
#: held-out images when --limit is not given; with --limit N, N // 5
DEFAULT_HOLDOUT = 200
#: seconds between a running trial's heartbeats (--heartbeat); a trial silent for
#: GRACE_FACTOR x that is failed and queued again (nas/sweep/study.py)
DEFAULT_HEARTBEAT = 20
GRACE_FACTOR = 3


@dataclass(frozen=True)
class Objective:
    """One objective: its key in trial records and pareto.json, and its direction."""

    name: str
    key: str
    direction: str  # "maximize" | "minimize"
    unit: str


OBJECTIVE_SPECS = {
    "accuracy": Objective("accuracy", "val_acc", "maximize", "fraction of held-out images"),
    "latency": Objective("latency", "latency_ms", "minimize", "ms"),
    "energy": Objective("energy", "energy_mj", "minimize", "mJ per image"),
}

#: a varied parameter -> the setting holding its range or choices
RANGE_FIELD = {"latency_weight": "latency_weight_range", "ops": "ops_choices",
               "activations": "activations_choices", "sampler": "sampler_choices"}


@dataclass(frozen=True)
class SweepSettings:
    """The fixed settings of a sweep; None for a size means the preset's (search and
    retrain presets differ: a search supernet is smaller than the retrained network)."""

    hardware: str
    space: str = "darts"
    dataset: str = "digits"
    limit: int | None = None
    search_epochs: int = DEFAULT_SEARCH_EPOCHS
    retrain_epochs: int = DEFAULT_RETRAIN_EPOCHS
    holdout: int = DEFAULT_HOLDOUT
    seed: int = 0
    preset: str | None = None  # None: each command's default for the dataset
    channels: int | None = None
    layers: int | None = None
    batch_size: int | None = None
    objectives: tuple[str, ...] = ("accuracy", "latency")
    latency_source: str = "predicted"
    vary: tuple[str, ...] = ("latency_weight",)
    latency_weight_range: tuple[float, float] = (0.01, 10.0)
    ops_choices: tuple[str, ...] = ("darts", "darts+adder")
    activations_choices: tuple[str, ...] = (NO_ACTIVATIONS, "all")
    sampler_choices: tuple[str, ...] = ("softmax", "lognormal")
    latency_weight: float = 0.0
    ops: str = DEFAULT_OPS
    activations: str = NO_ACTIVATIONS
    sampler: str = DEFAULT_SAMPLER

    def applies(self, name: str) -> bool:
        """Whether setting `name` means anything for this sweep (see the module doc)."""
        for param, range_field in RANGE_FIELD.items():
            if name == range_field:
                return param in self.vary
            if name == param:
                return param not in self.vary
        return True

    def to_dict(self) -> dict[str, Any]:
        """The settings that apply, JSON-ready (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in asdict(self).items() if self.applies(k)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> SweepSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{where}: unknown sweep setting(s) {', '.join(unknown)} "
                             "(written by a newer version?)")
        if "hardware" not in data:
            raise InputError(f"{where}: the sweep settings name no hardware")
        return cls(**{k: _canonical(k, v) for k, v in data.items()})

    @property
    def objective_specs(self) -> list[Objective]:
        return [OBJECTIVE_SPECS[name] for name in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objective_specs]


def _canonical(name: str, value: Any) -> Any:
    """A setting in the one form two equal settings share: ordered name sets in their
    canonical order (`--vary ops,latency_weight` is `--vary latency_weight,ops`), lists
    as tuples, floats for the weight range."""
    if name == "vary":
        return tuple(p for p in PARAMETERS if p in value) + tuple(
            p for p in value if p not in PARAMETERS)
    if name == "objectives":
        return tuple(o for o in OBJECTIVES if o in value) + tuple(
            o for o in value if o not in OBJECTIVES)
    if name == "latency_weight_range":
        return tuple(float(x) for x in value)
    if name == "latency_weight":
        return float(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def default_holdout(limit: int | None) -> int:
    """A fifth of the images when --limit is given, else DEFAULT_HOLDOUT."""
    return max(1, limit // 5) if limit else DEFAULT_HOLDOUT


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def show(name: str, value: Any) -> str:
    """A setting as the user would type it."""
    if isinstance(value, (tuple, list)):
        sep = ACTIVATIONS_SEPARATOR if name == "activations_choices" else ","
        return sep.join(str(v) for v in value)
    return str(value)


def merge_settings(stored: dict[str, Any] | None, given: dict[str, Any],
                   where: str) -> SweepSettings:
    """The settings of this run: the study's (`stored`, None for a new sweep) with the
    flags the user gave (`given`, setting name -> value) checked against them, or the
    defaults with `given` applied. Refuses, in one line, flags that disagree with the
    study or that do not apply to it."""
    given = {k: _canonical(k, v) for k, v in given.items()}
    if stored is None:
        values = dict(given)
        values.setdefault("holdout", default_holdout(values.get("limit")))
        if "hardware" not in values:
            raise InputError("--hardware NAME is required for a new sweep (the profile "
                             "whose latency is an objective)")
        settings = SweepSettings(**values)
        _check_applies(settings, given)
        return settings
    settings = SweepSettings.from_dict(stored, where)
    record = {k: _canonical(k, v) for k, v in settings.to_dict().items()}
    conflicts = []
    for name, value in given.items():
        if name not in record:
            conflicts.append(f"{flag(name)} {show(name, value)} (the study "
                             f"{_why_not(settings, name)})")
        elif record[name] != value:
            conflicts.append(f"{flag(name)} {show(name, value)} (the study's {name} = "
                             f"{show(name, record[name])})")
    if conflicts:
        raise InputError(f"{'; '.join(conflicts)}: every trial of a sweep runs with the "
                         "study's settings; drop the flag, or start a new sweep (another "
                         "--dir or --study-name) to change it")
    return settings


def _why_not(settings: SweepSettings, name: str) -> str:
    for param, range_field in RANGE_FIELD.items():
        if name == range_field:
            return f"does not vary {param}"
        if name == param:
            return f"varies {param}"
    return "has no such setting"


def _check_applies(settings: SweepSettings, given: dict[str, Any]) -> None:
    for param, range_field in RANGE_FIELD.items():
        if param in settings.vary and param in given:
            raise InputError(f"{flag(param)} fixes {param}, which --vary varies: give "
                             f"{flag(range_field)} or drop {param} from --vary")
        if param not in settings.vary and range_field in given:
            raise InputError(f"{flag(range_field)} applies only when --vary includes {param}")


# ---------------------------------------------------------------- trial parameters


@dataclass(frozen=True)
class TrialParams:
    """The values one trial runs with, varied or fixed (`latency_weight` 0: no term)."""

    latency_weight: float
    ops: str
    activations: str
    sampler: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: user attribute of the one trial that runs with lambda = 0 (`study.enqueue_baseline`)
BASELINE_ATTR = "baseline"


def suggest(trial: Any, s: SweepSettings) -> TrialParams:
    """Ask Optuna for the varied parameters of `trial` (define-by-run).

    The latency weight is log-uniform over its range, which cannot reach 0. Lambda = 0,
    the plain search that every other trial is compared with, is one trial queued when
    the study is made (its `baseline` attribute), not a value the sampler can draw: an
    on/off choice drawn by the sampler would come up again and again, and each repeat
    would be an identical seeded run (TPE was seen proposing it 50 times in a row)."""
    if "latency_weight" in s.vary:
        lo, hi = s.latency_weight_range
        if trial.user_attrs.get(BASELINE_ATTR):
            weight = 0.0
        else:
            weight = float(trial.suggest_float("latency_weight", lo, hi, log=True))
    else:
        weight = s.latency_weight

    def pick(name: str, choices: tuple[str, ...], fixed: str) -> str:
        return str(trial.suggest_categorical(name, list(choices))) if name in s.vary else fixed

    return TrialParams(weight, pick("ops", s.ops_choices, s.ops),
                       pick("activations", s.activations_choices, s.activations),
                       pick("sampler", s.sampler_choices, s.sampler))


def _sizes(s: SweepSettings, data_dir: str | None) -> list[str]:
    args = ["--dataset", s.dataset, "--seed", str(s.seed)]
    if data_dir:
        args += ["--data-dir", data_dir]
    for name, value in (("limit", s.limit), ("preset", s.preset), ("channels", s.channels),
                        ("layers", s.layers), ("batch_size", s.batch_size)):
        if value is not None:
            args += [flag(name), str(value)]
    return args


def search_args(s: SweepSettings, p: TrialParams, data_dir: str | None) -> list[str]:
    """`nas search` arguments of a trial (without --out / --json)."""
    args = ["search", "--space", s.space, "--hardware", s.hardware,
            "--epochs", str(s.search_epochs), *_sizes(s, data_dir)]
    if p.latency_weight > 0:
        args += ["--latency-weight", repr(p.latency_weight)]
    if p.ops != DEFAULT_OPS:
        args += ["--ops", p.ops]
    if p.activations != NO_ACTIVATIONS:
        args += ["--activations", p.activations]
    if p.sampler != DEFAULT_SAMPLER:
        args += ["--sampler", p.sampler]
    return args


def retrain_args(s: SweepSettings, genotype: str, data_dir: str | None) -> list[str]:
    """`nas retrain` arguments of a trial (without --out / --json). It is timed here only
    when measured latency is the objective (timing costs seconds per trial)."""
    args = ["retrain", "--genotype", genotype, "--hardware", s.hardware,
            "--epochs", str(s.retrain_epochs), "--holdout", str(s.holdout),
            *_sizes(s, data_dir)]
    if s.latency_source != "measured":
        args.append("--no-measure")
    return args


# ---------------------------------------------------------------- labels


def latency_label(s: SweepSettings) -> str:
    """What kind of figure the latency objective is: the profile's prediction label
    (`simulated`, `measured-model`), or `measured` (timed here)."""
    from latency.hardware import load_profile

    if s.latency_source == "measured":
        return "measured"
    return load_profile(s.hardware).prediction_label


def axis_label(s: SweepSettings, objective: str) -> str:
    """An axis title with what the figure is and its unit."""
    if objective == "latency":
        where = ("this machine's CPU, " if s.latency_source == "measured" else "")
        return f"latency on {s.hardware} ({where}{latency_label(s)}), ms"
    if objective == "energy":
        return f"energy on {s.hardware} (modelled), mJ per image"
    return f"held-out accuracy (retrain val_acc, {s.holdout} images)"


# ---------------------------------------------------------------- validation


class _Refusing(argparse.ArgumentParser):
    """argparse that raises InputError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def _command_parser() -> argparse.ArgumentParser:
    from nas.cli import retrain, search

    parser = _Refusing(prog="nas")
    sub = parser.add_subparsers(dest="command", parser_class=_Refusing)
    search.add_parser(sub)
    retrain.add_parser(sub)
    return parser


def distinct_settings(s: SweepSettings) -> int | None:
    """How many different trials the sweep can run (None: unbounded, the latency weight
    is continuous)."""
    return None if "latency_weight" in s.vary else len(combinations(s))


def combinations(s: SweepSettings) -> list[TrialParams]:
    """Every combination of categorical values a trial can get; the latency weight at the
    top of its range when varied (the setting that needs a predictor)."""
    weight = s.latency_weight_range[1] if "latency_weight" in s.vary else s.latency_weight
    values = [getattr(s, RANGE_FIELD[p]) if p in s.vary else (getattr(s, p),)
              for p in ("ops", "activations", "sampler")]
    return [TrialParams(weight, *combo) for combo in itertools.product(*values)]


def validate(s: SweepSettings, data_dir: str | None) -> None:
    """Refuse, in one line and before anything is written, settings that would make every
    trial fail: unknown hardware or names, impossible sizes, a missing predictor. Each
    combination of choices is checked by `nas search`'s and `nas retrain`'s own parsers
    and config checks, so the sweep accepts exactly what its trials will."""
    from latency.hardware import load_profile
    from nas.data.registry import dataset_names

    profile = load_profile(s.hardware)
    if s.dataset not in dataset_names():
        raise InputError(f"unknown --dataset {s.dataset!r}; known: {', '.join(dataset_names())}")
    for name in ("search_epochs", "retrain_epochs", "holdout"):
        if getattr(s, name) < 1:
            raise InputError(f"{flag(name)} must be at least 1, got {getattr(s, name)}")
    if s.limit is not None and s.holdout >= s.limit:
        raise InputError(f"--holdout {s.holdout} leaves no training images of --limit "
                         f"{s.limit}")
    _check_names(s)
    if s.latency_source == "measured" and profile.source != "measured":
        raise InputError(f"--latency-source measured needs a profile measured on this "
                         f"machine; {profile.name} is {profile.source}, so its latency can "
                         "only be predicted (--latency-source predicted)")
    parser = _command_parser()
    checked: set[str] = set()
    cell_space = None
    for params in combinations(s):
        cell_space = _check_search(s, params, data_dir, parser, checked)
    assert cell_space is not None
    _check_retrain(s, cell_space)


def _check_names(s: SweepSettings) -> None:
    if not s.vary:
        raise InputError(f"--vary needs at least one of {', '.join(PARAMETERS)}")
    for name, known, values in (("--vary", PARAMETERS, s.vary),
                                ("--objectives", OBJECTIVES, s.objectives)):
        unknown = [v for v in values if v not in known]
        if unknown:
            raise InputError(f"unknown {name} name {unknown[0]!r}; known: {', '.join(known)}")
    if "accuracy" not in s.objectives or len(s.objectives) < 2:
        raise InputError("--objectives needs accuracy and at least one of latency, energy "
                         f"(got {','.join(s.objectives)})")
    if s.latency_source not in LATENCY_SOURCES:
        raise InputError(f"unknown --latency-source {s.latency_source!r}; known: "
                         f"{', '.join(LATENCY_SOURCES)}")
    lo, hi = s.latency_weight_range
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise InputError(f"--latency-weight-range LO,HI needs 0 < LO <= HI, got {lo:g},{hi:g} "
                         "(lambda = 0 is always run once, as the sweep's baseline trial)")
    if s.latency_weight < 0:
        raise InputError(f"--latency-weight must be >= 0, got {s.latency_weight:g}")
    for param in PARAMETERS[1:]:
        if param in s.vary:
            choices = getattr(s, RANGE_FIELD[param])
            if not choices:
                raise InputError(f"{flag(RANGE_FIELD[param])} needs at least one choice")
            if len(set(choices)) != len(choices):
                raise InputError(f"{flag(RANGE_FIELD[param])} repeats a choice: "
                                 f"{show(RANGE_FIELD[param], choices)}")


def _check_search(s: SweepSettings, params: TrialParams, data_dir: str | None,
                  parser: argparse.ArgumentParser, checked: set[str]) -> str:
    """One combination through `nas search`'s parser and config checks, and its latency
    predictor loaded once per encoding; the cell space it searches."""
    from nas.cli.search import config_from_args, latency_space

    args = search_args(s, params, data_dir)
    try:
        cfg = config_from_args(parser.parse_args(args))
    except InputError as e:
        raise InputError(f"a trial's search would fail ({_shown(params, s)}): {e}") from None
    space = latency_space(cfg)
    if space.name in checked:
        return str(cfg.space)
    checked.add(space.name)
    if s.latency_source == "predicted" or params.latency_weight > 0:
        from latency.predictor.locate import load_for_space, require_predictor

        try:
            load_for_space(require_predictor(s.hardware, space.name), space)
        except InputError as e:
            raise InputError(f"{s.hardware} cannot give the latency of a trial "
                             f"({_shown(params, s)}): {e}") from None
    return str(cfg.space)


def _shown(params: TrialParams, s: SweepSettings) -> str:
    """The categorical values of a combination that are varied or not the default."""
    values = {"ops": (params.ops, DEFAULT_OPS),
              "activations": (params.activations, NO_ACTIVATIONS),
              "sampler": (params.sampler, DEFAULT_SAMPLER)}
    return ", ".join(f"{name} {value}" for name, (value, default) in values.items()
                     if name in s.vary or value != default) or f"space {s.space}"


def _check_retrain(s: SweepSettings, cell_space: str) -> None:
    from nas.retrain.config import preset_config, validate_config
    from nas.search.config import default_preset

    cfg = preset_config(default_preset(s.dataset), cell_space).with_overrides(
        dataset=s.dataset, hardware=s.hardware, seed=s.seed, epochs=s.retrain_epochs,
        init_channels=s.channels, layers=s.layers, batch_size=s.batch_size,
        holdout=s.holdout, data_limit=s.limit)
    try:
        validate_config(cfg)
    except InputError as e:
        raise InputError(f"a trial's retrain would fail: {e}") from None
