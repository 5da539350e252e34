"""One trial: a short `nas search`, a short `nas retrain` of its genotype, and the
objectives read from their JSON.

Both run as subprocesses of the CLI itself (`python -m nas.sweep.child`, which runs
`nas ...` and dies with the sweep): memory is given back after every run, and a crash
(out of memory, a bug, a bad setting) is a non-zero exit that fails this trial, not the
sweep. stdout of a `--json` run is exactly one JSON object; stderr (progress) goes to
`<trial dir>/search.log` and `retrain.log`, whose last line becomes the trial's `error`
when a run fails.

A trial runs in `trials/<n>/`, n being the number of the first trial of its retry chain
(`study.retry_root`): a retry of a trial whose process died finds the search or retrain
run directory there and continues it with `--resume` (or reads its result when it had
finished), instead of starting over.

For tests and for trying the failure handling, `HW_NAS_SWEEP_FAIL_TRIALS=1,3` makes the
searches of trials 1 and 3 fail: they get `--epochs 0` appended, which `nas search`
refuses (a real failed subprocess, exit code 2, one error line).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.sweep.settings import (
    BASELINE_ATTR,
    SweepSettings,
    TrialParams,
    retrain_args,
    search_args,
    suggest,
)
from nas.sweep.study import TrialFailed, TrialSkipped, WorkerState, retry_root
from search_spaces.errors import first_line

#: trial numbers whose search is made to fail (see the module doc)
FAIL_ENV = "HW_NAS_SWEEP_FAIL_TRIALS"
TRIALS_DIR = "trials"
SEARCH_DONE = "summary.json"
RETRAIN_DONE = "report.json"


def failing_trials() -> frozenset[int]:
    """The trial numbers in $HW_NAS_SWEEP_FAIL_TRIALS."""
    text = os.environ.get(FAIL_ENV, "")
    return frozenset(int(x) for x in text.replace(" ", "").split(",") if x)


@dataclass
class TrialContext:
    """What every trial of this worker shares."""

    settings: SweepSettings
    sweep_dir: Path
    data_dir: str | None
    threads: int | None
    log: Any
    fail: frozenset[int] = field(default_factory=failing_trials)
    worker: WorkerState = field(default_factory=WorkerState)


def trial_dir(ctx: TrialContext, root: int) -> Path:
    return ctx.sweep_dir / TRIALS_DIR / str(root)


def objective(trial: optuna.Trial, ctx: TrialContext) -> list[float]:
    """The Optuna objective: the trial's objective values, in the settings' order. Any
    failure becomes `TrialFailed` with a one-line `error` user attribute."""
    ctx.worker.current = trial.number
    trial.set_user_attr("error", None)  # a retry copies its predecessor's attributes
    try:
        return _run(trial, ctx)
    except TrialSkipped as e:
        ctx.worker.skipped_in_a_row += 1
        trial.set_user_attr("error", str(e))
        raise
    except TrialFailed as e:
        trial.set_user_attr("error", str(e))
        raise
    except Exception as e:  # a trial's own problem (disk, a malformed report): not fatal
        message = f"{type(e).__name__}: {first_line(e)}"
        trial.set_user_attr("error", message)
        raise TrialFailed(message) from e


def _run(trial: optuna.Trial, ctx: TrialContext) -> list[float]:
    s = ctx.settings
    params = suggest(trial, s)
    twin = same_settings(trial, params)
    if twin is not None:
        trial.set_user_attr("settings", params.to_dict())
        trial.set_user_attr("duplicate_of", twin)
        raise TrialSkipped(f"not run: trial {twin} has the same settings (a seeded search "
                           "and retrain would repeat its result)")
    ctx.worker.skipped_in_a_row = 0
    root = retry_root(trial)
    here = trial_dir(ctx, root).resolve()
    search_dir, retrain_dir = here / "search", here / "retrain"
    for key, value in (("settings", params.to_dict()), ("trial_dir", str(here)),
                       ("search_dir", str(search_dir)), ("retrain_dir", str(retrain_dir)),
                       ("host", socket.gethostname()),
                       ("retry_of", None if root == trial.number else root)):
        trial.set_user_attr(key, value)
    shown = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in params.to_dict().items() if k in s.vary)
    again = f" (retry of trial {root})" if root != trial.number else ""
    if trial.user_attrs.get(BASELINE_ATTR):
        again += " (baseline: the plain search)"
    ctx.log(f"trial {trial.number}{again}: {shown}; logs in {here}/*.log")
    start = time.perf_counter()
    args = search_args(s, params, ctx.data_dir)
    if trial.number in ctx.fail:
        args += ["--epochs", "0"]
    search, how = _stage(ctx, trial, "search", search_dir, args, SEARCH_DONE)
    trial.set_user_attr("search_run", how)
    genotype = search_dir / "genotype.json"
    if not genotype.is_file():
        raise TrialFailed(f"search finished without {genotype}")
    retrain, how = _stage(ctx, trial, "retrain", retrain_dir,
                          retrain_args(s, str(genotype), ctx.data_dir), RETRAIN_DONE)
    trial.set_user_attr("retrain_run", how)
    record = trial_record(s, search, retrain)
    record["seconds"] = time.perf_counter() - start
    for key, value in record.items():
        trial.set_user_attr(key, value)
    return [float(record[o.key]) for o in s.objective_specs]


def same_settings(trial: optuna.Trial, params: TrialParams) -> int | None:
    """The number of another trial, finished or in progress, with exactly these settings
    (a failed one does not count: failures may be transient)."""
    mine = params.to_dict()
    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    for other in trial.study.get_trials(deepcopy=False, states=states):
        if other.number != trial.number and other.user_attrs.get("settings") == mine:
            return other.number
    return None


def _stage(ctx: TrialContext, trial: optuna.Trial, kind: str, run_dir: Path,
           args: list[str], done_file: str) -> tuple[dict[str, Any], str]:
    """Run `nas search` / `nas retrain` into `run_dir`, or continue it there: a finished
    run is read back (`done_file`), a started one is resumed from its checkpoint. Returns
    its JSON and how it ran ("new", "resumed", "finished before")."""
    done = run_dir / done_file
    if done.is_file():
        report = json.loads(done.read_text())
        report.setdefault("run_dir", str(run_dir))
        return report, "finished before"
    if (run_dir / "config.json").is_file():
        argv, how = [kind, "--resume", str(run_dir), "--json"], "resumed"
    else:
        if run_dir.is_dir() and any(run_dir.iterdir()):  # killed while being created
            aside = run_dir.with_name(f"{run_dir.name}.incomplete-{int(time.time())}")
            run_dir.rename(aside)
            ctx.log(f"trial {trial.number}: {run_dir} held no run; moved to {aside.name}")
        argv, how = [*args, "--json", "--out", str(run_dir)], "new"
    trial.set_user_attr(f"{kind}_command", "nas " + shlex.join(_global(ctx) + argv))
    return run_nas(ctx, argv, run_dir.parent / f"{kind}.log"), how


def _global(ctx: TrialContext) -> list[str]:
    return ["--threads", str(ctx.threads)] if ctx.threads else []


def run_nas(ctx: TrialContext, argv: list[str], log_path: Path) -> dict[str, Any]:
    """`nas ARGV` in a child process: its stdout JSON object; stderr is appended to
    `log_path`. A non-zero exit or output that is not one JSON object is TrialFailed,
    with the last line the run wrote on stderr."""
    cmd = [sys.executable, "-m", "nas.sweep.child", str(os.getpid()), *_global(ctx), *argv]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"$ nas {shlex.join(_global(ctx) + argv)}\n".encode())
        log.flush()
        start = log.tell()
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=log, check=False)
    tail = last_line(log_path, start)
    kind = argv[0]
    if proc.returncode:
        raise TrialFailed(f"{kind} {_exit_how(proc.returncode)}: {tail or 'no message'}")
    text = proc.stdout.decode(errors="replace").strip()
    try:
        report = json.loads(text)
    except json.JSONDecodeError:
        snippet = text[:80] + ("..." if len(text) > 80 else "")
        raise TrialFailed(f"{kind} printed no JSON object on stdout ({snippet!r}); last "
                          f"stderr line: {tail or 'none'}") from None
    if not isinstance(report, dict):
        raise TrialFailed(f"{kind} printed JSON that is not an object")
    return report


def _exit_how(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def last_line(path: Path, start: int) -> str:
    """The last non-empty line written to `path` after byte `start`."""
    with open(path, "rb") as f:
        f.seek(start)
        lines = f.read().decode(errors="replace").splitlines()
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def trial_record(s: SweepSettings, search: dict[str, Any],
                 retrain: dict[str, Any]) -> dict[str, Any]:
    """What a trial is remembered by (its user attributes): the objectives, each labelled;
    the test accuracy for the record only (never an objective); sizes and the genotype."""
    if retrain.get("val_acc") is None:
        raise TrialFailed("the retrain report has no val_acc (it needs --holdout)")
    record: dict[str, Any] = {
        "val_acc": float(retrain["val_acc"]),
        "val_loss": retrain.get("val_loss"),
        "val_images": retrain.get("val_images"),
        "test_acc": retrain.get("test_acc"),
        "test_images": retrain.get("test_images"),
        "genotype": retrain.get("genotype"),
        "network_params": retrain.get("params"),
        "macs": retrain.get("macs"),
        "search_val_acc": search.get("final_val_acc"),
        "search_predicted_latency_ms": (search.get("latency") or {}).get(
            "genotype_predicted_latency_ms"),
    }
    record.update(_latency(s, retrain))
    energy = retrain.get("energy") or {}
    record["energy_mj"] = energy.get("mj")
    record["energy_label"] = energy.get("label")
    if "energy" in s.objectives and record["energy_mj"] is None:
        raise TrialFailed("the retrain report has no modelled energy")
    return record


def _latency(s: SweepSettings, retrain: dict[str, Any]) -> dict[str, Any]:
    if s.latency_source == "measured":
        measured = retrain.get("measured_latency") or {}
        torch_ms = (measured.get("torch") or {}).get("ms")
        if torch_ms is None:
            raise TrialFailed(f"the retrain report has no measured latency ({measured})")
        return {"latency_ms": float(torch_ms), "latency_label": "measured",
                "latency_refers_to": f"{measured.get('network')}; "
                                     f"{measured['torch'].get('how')}",
                "latency_caution": "noisy" if measured["torch"].get("noisy") else None}
    predicted = retrain.get("predicted_latency") or {}
    if predicted.get("ms") is None:
        raise TrialFailed(f"no predicted latency for the genotype: "
                          f"{predicted.get('note', 'the retrain report has none')}")
    return {"latency_ms": float(predicted["ms"]), "latency_label": predicted.get("label"),
            "latency_refers_to": predicted.get("refers_to"),
            "latency_caution": predicted.get("caution")}
