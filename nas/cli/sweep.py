"""`nas sweep`: an Optuna multi-objective study of held-out accuracy against latency (and
modelled energy) over search hyper-parameters; each trial is a short `nas search` and a
short `nas retrain` of its genotype. The logic lives in `nas/sweep/` (docs/sweep.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latency.hardware import profile_names
from nas.data.registry import dataset_names
from search_spaces.arch_samplers import sampler_names
from search_spaces.errors import InputError

#: setting name -> (flag help, type) for the flags that set a sweep's fixed settings; all
#: default to None so that a resume takes the study's value for any flag not given
_PARAM_HELP = ("latency_weight: lambda of the latency term, log-uniform over "
               "--latency-weight-range (plus one baseline trial with lambda = 0); "
               "ops: op set from --ops-choices; activations: from --activations-choices; "
               "sampler: softmax or lognormal")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from nas.cli.search import SPACE_ALIASES
    from nas.sweep import settings as st
    from search_spaces.space import space_names

    p = sub.add_parser(
        "sweep",
        help="Optuna multi-objective study: held-out accuracy against latency over search "
             "settings",
        description="Run an Optuna multi-objective study: each trial is a short `nas "
        "search` with hyper-parameters chosen by Optuna (--vary) and a short `nas retrain` "
        "of the genotype it found, both as subprocesses. Objectives: the retrain's "
        "held-out accuracy (val_acc on --holdout training images; never the test split), "
        "latency on --hardware (labelled simulated / measured-model / measured) and, with "
        "--objectives accuracy,latency,energy, modelled energy. Writes pareto.json, "
        "pareto.csv and pareto.png after every trial. Re-running the same command (or "
        "`nas sweep --resume DIR`) continues the sweep; several processes can work on one "
        "study (--storage). Flags left out on a resume take the study's settings. "
        "docs/sweep.md",
    )
    where = p.add_argument_group("where the sweep lives")
    where.add_argument("--dir", help="sweep directory: sweep.json, study.db, trials/<n>/ "
                       "(search and retrain runs, logs), pareto.* (default "
                       "results/<time>-sweep-<hardware>); a non-empty directory that is not "
                       "a sweep is refused")
    where.add_argument("--resume", metavar="DIR",
                       help="continue the sweep in DIR with its own settings (the same as "
                       "re-running its command with --dir DIR)")
    where.add_argument("--trials", type=int, metavar="N",
                       help="run until the study holds N finished trials: COMPLETE plus "
                       "FAIL, not counting a trial whose process was killed or interrupted "
                       "and that was queued again (its retry counts instead), nor a proposal "
                       "not run because another trial has its settings; trials running in "
                       "other workers are waited for. Stored in the study: a resume without "
                       f"--trials continues to the last N asked for (default "
                       f"{st.DEFAULT_TRIALS})")
    where.add_argument("--storage", metavar="URL",
                       help="Optuna database URL (sqlite:///path.db, postgresql://..., "
                       "mysql://...) shared by several workers (default "
                       "sqlite:///<dir>/study.db)")
    where.add_argument("--study-name", help="study name in the storage (default: the sweep "
                       "directory's name)")
    where.add_argument("--heartbeat", type=int, default=st.DEFAULT_HEARTBEAT, metavar="S",
                       help="seconds between a running trial's heartbeats; a trial silent "
                       f"for {st.GRACE_FACTOR} x S (its process died) is failed and queued again "
                       "(default %(default)s)")
    where.add_argument("--worker-seed", type=int, metavar="N",
                       help="seed of this worker's Optuna sampler (default: from --seed and "
                       "the trials already in the study); give each of several workers "
                       "started at once its own")
    where.add_argument("--json", action="store_true",
                       help="print one JSON object at the end (the content of pareto.json)")

    fixed = p.add_argument_group("fixed settings (stored in the study; a resume or worker "
                                 "with other values is refused)")
    fixed.add_argument("--hardware", help=f"hardware profile whose latency is an objective "
                       f"({', '.join(profile_names())}); required for a new sweep")
    fixed.add_argument("--space", choices=sorted([*space_names(), *SPACE_ALIASES]),
                       help="cell space, as for nas search (default darts)")
    fixed.add_argument("--dataset", choices=dataset_names(),
                       help="digits (embedded, default) or cifar10 (needs --data-dir)")
    fixed.add_argument("--data-dir", help="directory of the CIFAR-10 python batches (where "
                       "the data is, not a setting: a resume may give another)")
    fixed.add_argument("--limit", type=int, help="use only the first N training images "
                       "(search and retrain)")
    fixed.add_argument("--search-epochs", type=int,
                       help=f"epochs of each search (default {st.DEFAULT_SEARCH_EPOCHS})")
    fixed.add_argument("--retrain-epochs", type=int,
                       help=f"epochs of each retrain (default {st.DEFAULT_RETRAIN_EPOCHS})")
    fixed.add_argument("--holdout", type=int, metavar="N",
                       help="training images each retrain keeps out of training and scores "
                       "(val_acc, the accuracy objective) (default: a fifth of --limit, else "
                       f"{st.DEFAULT_HOLDOUT})")
    fixed.add_argument("--seed", type=int, help="seed of every search and retrain (default 0)")
    fixed.add_argument("--preset", choices=["small", "paper"],
                       help="preset of every search and retrain (default: small on digits, "
                       "paper otherwise, as for nas search / nas retrain; small is what fits "
                       "a CPU on CIFAR-10)")
    fixed.add_argument("--channels", type=int, help="initial channels of search and retrain "
                       "networks (default: each preset's)")
    fixed.add_argument("--layers", type=int, help="cells of search and retrain networks "
                       "(default: each preset's)")
    fixed.add_argument("--batch-size", type=int, help="batch size of search and retrain "
                       "(default: each preset's)")
    fixed.add_argument("--objectives", metavar="LIST",
                       help="accuracy,latency (default) or accuracy,latency,energy (modelled "
                       "energy per image on --hardware)")
    fixed.add_argument("--latency-source", choices=st.LATENCY_SOURCES,
                       help="predicted: the profile's predictor (labelled simulated or "
                       "measured-model; default); measured: the retrained network timed on "
                       "this machine, for a profile whose source is measured (cpu)")
    fixed.add_argument("--vary", metavar="LIST",
                       help=f"comma-separated parameters Optuna chooses per trial, from "
                       f"{', '.join(st.PARAMETERS)} (default latency_weight). {_PARAM_HELP}")
    fixed.add_argument("--latency-weight-range", metavar="LO,HI",
                       help="log-uniform range of the latency weight (default 0.01,10; LO > "
                       "0); the sweep's first trial, its baseline, runs with 0")
    fixed.add_argument("--ops-choices", metavar="LIST",
                       help="comma-separated op sets for --vary ops (default darts,darts+adder)")
    fixed.add_argument("--activations-choices", metavar="LIST",
                       help=f"'{st.ACTIVATIONS_SEPARATOR}'-separated choices for --vary "
                       "activations, each as nas search --activations takes it, or 'none' "
                       "(ReLU only) (default 'none;all')")
    fixed.add_argument("--sampler-choices", metavar="LIST",
                       help="comma-separated architecture samplers for --vary sampler (default "
                       "softmax,lognormal)")
    fixed.add_argument("--latency-weight", type=float, metavar="LAMBDA",
                       help="the latency weight of every trial when it is not varied "
                       "(default 0)")
    fixed.add_argument("--ops", help="the op set of every trial when ops is not varied "
                       "(default darts)")
    fixed.add_argument("--activations", metavar="LIST",
                       help="the --activations of every trial when not varied (default none)")
    fixed.add_argument("--sampler", choices=sampler_names(),
                       help="the architecture sampler of every trial when not varied "
                       "(default softmax)")
    p.set_defaults(run=run)


def _names(text: str, sep: str = ",") -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(sep) if n.strip())


def _weight_range(text: str) -> tuple[float, float]:
    parts = _names(text)
    try:
        lo, hi = (float(x) for x in parts)
    except ValueError:
        raise InputError(f"--latency-weight-range needs LO,HI (two numbers), got {text!r}"
                         ) from None
    return lo, hi


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user named on the command line (setting name -> value)."""
    from nas.sweep.settings import ACTIVATIONS_SEPARATOR

    plain = ("hardware", "space", "dataset", "limit", "search_epochs", "retrain_epochs",
             "holdout", "seed", "preset", "channels", "layers", "batch_size",
             "latency_source",
             "latency_weight", "ops", "activations", "sampler")
    given = {k: getattr(args, k) for k in plain if getattr(args, k) is not None}
    parsers: dict[str, Callable[[str], Any]] = {
        "objectives": _names, "vary": _names, "latency_weight_range": _weight_range,
        "ops_choices": _names, "sampler_choices": _names,
        "activations_choices": lambda t: _names(t, ACTIVATIONS_SEPARATOR)}
    for name, parse in parsers.items():
        text = getattr(args, name)
        if text is not None:
            given[name] = parse(text)
    return given


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from nas.sweep.study import quiet_optuna

    with quiet_optuna():
        return _run(args)


def _sweep_path(args: argparse.Namespace) -> Path:
    if args.resume and args.dir and Path(args.resume).resolve() != Path(args.dir).resolve():
        raise InputError(f"--resume {args.resume} and --dir {args.dir} name two sweeps; give "
                         "one")
    if args.resume or args.dir:
        return Path(args.resume or args.dir)
    return Path("results") / f"{time.strftime('%Y%m%d-%H%M%S')}-sweep-{args.hardware or 'nohw'}"


def _run(args: argparse.Namespace) -> int:
    from nas.sweep import pareto
    from nas.sweep.settings import DEFAULT_TRIALS, merge_settings, validate
    from nas.sweep.study import (
        DB_FILE,
        locate,
        make_sampler,
        open_storage,
        open_study,
        run_trials,
        stored_settings,
        tally,
        target_trials,
        write_record,
    )
    from nas.sweep.trial import TrialContext, objective

    started = time.perf_counter()
    if args.trials is not None and args.trials < 1:
        raise InputError(f"--trials must be at least 1, got {args.trials}")
    given = given_settings(args)
    path = _sweep_path(args)
    place = locate(path, args.storage, args.study_name, resume=bool(args.resume))
    data_dir = args.data_dir or (place.record or {}).get("data_dir")
    storage, stored, before = None, None, 0
    if not (place.default_storage and not (path / DB_FILE).is_file()):
        storage = open_storage(place.storage_url, args.heartbeat)
        stored, before = stored_settings(storage, place.study_name)
    if stored is None and place.record is not None:
        stored = place.record.get("settings")
    where = f"study {place.study_name!r} ({place.storage_shown})"
    settings = merge_settings(stored, given, where)
    validate(settings, data_dir)
    # everything is checked: from here on the sweep writes
    path.mkdir(parents=True, exist_ok=True)
    write_record(place, settings, data_dir)
    if storage is None:
        storage = open_storage(place.storage_url, args.heartbeat)
    sampler = make_sampler(settings.seed, before, args.trials or DEFAULT_TRIALS,
                           args.worker_seed)
    study = open_study(place, storage, settings, sampler)
    target = target_trials(study, args.trials, DEFAULT_TRIALS)
    args.resume_hint = f"nas sweep --resume {path}"
    ctx = TrialContext(settings, path, data_dir, getattr(args, "threads", None), _stderr)
    _headline(settings, place, path, target, tally(study))

    def after(study: Any, trial: Any) -> None:
        ctx.worker.current = None
        result = pareto.write_outputs(study, settings, place, target)
        _stderr(_trial_line(trial, settings, result))

    run_trials(study, target, lambda t: objective(t, ctx), after, args.heartbeat, _stderr,
               ctx.worker)
    result = pareto.write_outputs(study, settings, place, target)
    result["wall_s_this_invocation"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result))
    else:
        print(_final_text(result))
    if not result["trials"]["complete"]:
        _stderr("error: no trial completed; their errors are in pareto.json (all_trials) "
                "and trials/<n>/*.log")
        return 1
    return 0


def _headline(s: Any, place: Any, path: Path, target: int, t: Any) -> None:
    from nas.sweep.settings import distinct_settings, latency_label

    objectives = ", ".join(f"{o.key} ({o.direction[:3]})" for o in s.objective_specs)
    had = (f"; {t.counted} finished, {t.running} running, {t.waiting} queued in the study"
           if t.counted or t.running or t.waiting else "")
    _stderr(f"sweep {place.study_name!r} on {s.hardware} (latency: {s.latency_source}, "
            f"{latency_label(s)}): varying {', '.join(s.vary)}; objectives {objectives}; "
            f"{target} trial(s) of {s.search_epochs} search + {s.retrain_epochs} retrain "
            f"epochs{had}; storage {place.storage_shown} -> {path}")
    distinct = distinct_settings(s)
    if distinct is not None and target > distinct:
        _stderr(f"note: the varied parameters hold {distinct} distinct setting(s); a "
                "proposal that repeats a trial's settings is not run (seeded runs would "
                "repeat its result)")
    if t.counted >= target:
        _stderr(f"nothing to run: {t.counted} of {target} trials have finished (ask for "
                "more with --trials N)")


def _trial_line(trial: Any, s: Any, result: dict[str, Any]) -> str:
    t = result["trials"]
    progress = (f"front {len(result['front'])} of {t['complete']} complete; "
                f"{t['counted']}/{t['target']} finished")
    if trial.values is None:
        error = trial.user_attrs.get("error") or "stopped"
        what = "skipped" if trial.user_attrs.get("duplicate_of") is not None else "FAIL"
        return f"trial {trial.number} {what}: {error}; {progress}"
    a = trial.user_attrs
    parts = [f"val_acc {a.get('val_acc'):.3f} on {a.get('val_images')} held-out images",
             f"latency {a.get('latency_ms'):.3f} ms ({s.hardware}, {a.get('latency_label')})"]
    if a.get("energy_mj") is not None:
        parts.append(f"energy {a['energy_mj']:.4f} mJ (modelled)")
    secs = a.get("seconds")
    took = f" in {secs:.0f} s" if isinstance(secs, (int, float)) else ""
    return f"trial {trial.number} COMPLETE{took}: {', '.join(parts)}; {progress}"


def _final_text(result: dict[str, Any]) -> str:
    t = result["trials"]
    lines = [f"sweep {result['study_name']}: {t['counted']} of {t['target']} trials finished "
             f"({t['complete']} complete, {t['failed']} failed) in "
             f"{result['sweep_dir']}",
             f"  Pareto front, {len(result['front'])} point(s); chosen on {result['chosen_on']}; "
             f"{result['latency']['axis']}:"]
    for p in result["front"]:
        obj = "  ".join(f"{k} {v:.4g}" for k, v in p["objectives"].items())
        settings = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in (p["settings"] or {}).items())
        test = "" if p["test_acc"] is None else f"  (test_acc {p['test_acc']:.3f}, record only)"
        lines.append(f"    trial {p['trial']}: {obj}{test}  {settings}")
        lines.append(f"      {p['retrain_dir']}")
    lines.append("  files: " + ", ".join(result["files"].values()))
    return "\n".join(lines)
