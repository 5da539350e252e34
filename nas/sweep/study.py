"""The study behind a sweep: where it is stored, who may join it, and the loop that runs
trials until enough of them have finished.

**Storage.** By default `sqlite:///<sweep dir>/study.db`: embedded, nothing to start.
`--storage URL` takes any database URL Optuna's `RDBStorage` accepts (PostgreSQL, MySQL,
or a SQLite file that several processes open), so workers on one or many machines share
one study. `sweep.json` in the sweep directory marks it as a sweep and remembers the study
(storage, name, settings), so `nas sweep --resume DIR` needs nothing else.

**Who may join.** The study's user attributes hold its settings (`SETTINGS_ATTR`); a worker
or a resume asking for other settings is refused (`settings.merge_settings`), so one
Pareto front never mixes two experiments.

**Dead workers.** Every running trial's worker writes a heartbeat every `heartbeat`
seconds (Optuna's RDBStorage heartbeat). A trial whose heartbeat is older than the grace
period belonged to a process that died: `optuna.storages.fail_stale_trials` marks it FAIL
and Optuna's retry callback (`RetryHeartbeatStaleTrialCallback`, `RetryFailedTrialCallback`
before Optuna 4.9) queues a copy with the same parameters (WAITING), which the next `ask`
takes first. The retry runs in the original trial's directory, so its search and retrain
continue from their checkpoints (`trial.py`). A trial stopped with Ctrl-C is failed by
Optuna and queued by the same callback here, so it resumes too.

**What counts.** A sweep runs until the study holds `--trials` finished trials: COMPLETE
plus FAIL, except a FAIL that was queued again (a dead or interrupted process: its retry
counts instead) and a proposal that was not run because a finished or running trial has
the same settings (a seeded search and retrain would repeat its result; this happens when
only categorical parameters are varied). Such a proposal is recorded as FAIL
with `duplicate_of`, which samplers ignore (a PRUNED trial would teach TPE that those
settings are bad). Trials RUNNING in other live workers are waited for, not duplicated.
The target is stored in the study, so `nas sweep --resume DIR` continues to the last
`--trials` asked for.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.sweep.settings import BASELINE_ATTR, GRACE_FACTOR, SweepSettings
from search_spaces.errors import InputError, first_line
from search_spaces.fileio import atomic_write_bytes

#: the file that makes a directory a sweep
SWEEP_FILE = "sweep.json"
#: the default storage's file in the sweep directory
DB_FILE = "study.db"
SWEEP_FORMAT = "nas-sweep"
SWEEP_VERSION = 1
#: study user attributes: the fixed settings, the sweep format version, the target count
SETTINGS_ATTR = "nas_sweep_settings"
VERSION_ATTR = "nas_sweep_version"
TARGET_ATTR = "nas_sweep_trials"
#: a trial whose process keeps dying is retried at most this many times
MAX_RETRY = 3
#: a worker whose sampler proposes only settings already run this many times in a row stops
MAX_SKIPS_IN_A_ROW = 50

#: Optuna 4.9 renamed the retry callback and the storage's keyword; both forms work
_RETRY: Any = (getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
               or optuna.storages.RetryFailedTrialCallback)
_STALE_KEYWORD = ("heartbeat_stale_trial_callback"
                  if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
                  else "failed_trial_callback")


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own log lines and its warnings about experimental features (heartbeat,
    retry history) off: the sweep prints one line per trial of its own."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


# ---------------------------------------------------------------- where a sweep lives


@dataclass(frozen=True)
class SweepPlace:
    """A sweep directory, its study's storage and name, and its sweep.json (None: new)."""

    path: Path
    storage_url: str
    study_name: str
    record: dict[str, Any] | None

    @property
    def default_storage(self) -> bool:
        return self.storage_url == default_storage_url(self.path)

    @property
    def storage_shown(self) -> str:
        return redact(self.storage_url)


def default_storage_url(path: Path) -> str:
    return f"sqlite:///{(path / DB_FILE).resolve()}"


def redact(url: str) -> str:
    """A storage URL with any password hidden, for outputs and messages."""
    try:
        from sqlalchemy.engine import make_url

        return str(make_url(url).render_as_string(hide_password=True))
    except Exception:
        return url


def _has_password(url: str) -> bool:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password is not None
    except Exception:
        return False


def read_record(path: Path) -> dict[str, Any] | None:
    """sweep.json of `path`, None when absent; refuses a non-empty directory without one
    (not a sweep: nothing a user has is written into)."""
    if path.exists() and not path.is_dir():
        raise InputError(f"--dir {path} is a file, not a directory")
    file = path / SWEEP_FILE
    if not file.is_file():
        # a worker started at the same moment may be writing sweep.json (its temp file)
        if path.is_dir() and any(not p.name.startswith(f".{SWEEP_FILE}.")
                                 for p in path.iterdir()):
            raise InputError(f"{path} exists, is not empty and is not a sweep (no "
                             f"{SWEEP_FILE}); choose another --dir")
        return None
    try:
        record = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {file}: {first_line(e)}") from None
    if not isinstance(record, dict) or record.get("format") != SWEEP_FORMAT:
        raise InputError(f"{file} is not a sweep record (no \"format\": \"{SWEEP_FORMAT}\")")
    return record


def locate(path: Path, storage: str | None, study_name: str | None,
           resume: bool) -> SweepPlace:
    """Where the sweep is, and which study: flags, else sweep.json, else the defaults
    (SQLite in the directory, the directory's name). A flag that disagrees with sweep.json
    is refused: a sweep directory belongs to one study."""
    record = read_record(path)
    if resume and record is None:
        raise InputError(f"cannot resume {path}: no {SWEEP_FILE} there (not a sweep "
                         "directory)")
    default_url = default_storage_url(path)
    url = storage or default_url
    name = study_name or path.resolve().name
    if record is not None:
        saved_url = record.get("storage") or default_url
        if record.get("storage_has_password") and storage is None:
            raise InputError(f"{path}'s study is in a database whose URL holds a password, "
                             f"which {SWEEP_FILE} does not keep: give --storage URL again")
        if storage is not None and redact(storage) != redact(saved_url):
            raise InputError(f"--storage {redact(storage)} conflicts with {path}'s study in "
                             f"{redact(saved_url)}: a sweep directory belongs to one study")
        if study_name is not None and study_name != record.get("study_name"):
            raise InputError(f"--study-name {study_name} conflicts with {path}'s study "
                             f"{record.get('study_name')!r}: a sweep directory belongs to "
                             "one study")
        url = storage or saved_url
        name = str(record.get("study_name") or name)
    return SweepPlace(path, url, name, record)


def write_record(place: SweepPlace, settings: SweepSettings, data_dir: str | None) -> None:
    """sweep.json, written once when the sweep directory is made (a password in the
    storage URL is not written)."""
    if place.record is not None:
        return
    secret = _has_password(place.storage_url)
    record = {
        "format": SWEEP_FORMAT, "version": SWEEP_VERSION,
        "study_name": place.study_name,
        "storage": None if place.default_storage else (
            redact(place.storage_url) if secret else place.storage_url),
        "storage_has_password": secret,
        "settings": settings.to_dict(),
        "data_dir": data_dir,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_bytes(place.path / SWEEP_FILE, (json.dumps(record, indent=2) + "\n").encode())


# ---------------------------------------------------------------- the study


def open_storage(url: str, heartbeat: int) -> optuna.storages.RDBStorage:
    """An RDBStorage with heartbeats, a grace period and the retry callback. SQLite waits
    up to a minute for a lock, so several processes can share one file."""
    if heartbeat < 1:
        raise InputError(f"--heartbeat must be at least 1 second, got {heartbeat}")
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=heartbeat,
            grace_period=GRACE_FACTOR * heartbeat,
            **{_STALE_KEYWORD: _RETRY(max_retry=MAX_RETRY)})
    except Exception as e:  # sqlalchemy and optuna raise many types for a bad URL
        raise InputError(f"cannot open the study storage {redact(url)}: {first_line(e)}"
                         ) from None


def stored_settings(storage: optuna.storages.RDBStorage, name: str
                    ) -> tuple[dict[str, Any] | None, int]:
    """The settings stored with study `name` (None: no such study yet) and how many
    trials it holds; refuses a study that nas sweep did not make."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None, 0
    attrs = storage.get_study_user_attrs(study_id)
    n = len(storage.get_all_trials(study_id, deepcopy=False))
    if SETTINGS_ATTR not in attrs:
        if n == 0:  # another worker is creating it right now
            return None, 0
        raise InputError(f"study {name!r} exists in {redact(storage.url)} but was not made by "
                         "nas sweep (no settings stored with it); choose another --study-name")
    settings = attrs[SETTINGS_ATTR]
    if not isinstance(settings, dict):
        raise InputError(f"study {name!r}: its stored settings are not a JSON object")
    return settings, n


def make_sampler(seed: int, trials_before: int, target: int,
                 worker_seed: int | None) -> optuna.samplers.BaseSampler:
    """Multi-objective TPE. Its random start is seeded by --seed and the number of trials
    already in the study, so a resumed sweep does not replay the points it has (a
    `--worker-seed` gives each of several workers started together their own). Half the
    trials, between 2 and 10, are random before TPE models the front."""
    import numpy as np

    if worker_seed is None:
        worker_seed = int(np.random.SeedSequence([seed, trials_before]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=worker_seed,
                                      n_startup_trials=min(10, max(2, target // 2)),
                                      constant_liar=True)


def open_study(place: SweepPlace, storage: optuna.storages.RDBStorage,
               settings: SweepSettings, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Create the study or join it (load_if_exists); a new one gets the settings."""
    study = optuna.create_study(storage=storage, study_name=place.study_name,
                                directions=[StudyDirection[d.upper()]
                                            for d in settings.directions], sampler=sampler,
                                load_if_exists=True)
    if SETTINGS_ATTR not in study.user_attrs:
        study.set_user_attr(SETTINGS_ATTR, settings.to_dict())
        study.set_user_attr(VERSION_ATTR, SWEEP_VERSION)
        study.set_metric_names([o.key for o in settings.objective_specs])
        enqueue_baseline(study, settings)
    elif study.user_attrs[SETTINGS_ATTR] != settings.to_dict():
        raise InputError(f"study {place.study_name!r} was started with other settings "
                         "at the same moment; rerun to join it with its own")
    if [d.name.lower() for d in study.directions] != settings.directions:
        raise InputError(f"study {place.study_name!r} optimises "
                         f"{[d.name.lower() for d in study.directions]}, not "
                         f"{settings.directions}")
    return study


def enqueue_baseline(study: optuna.Study, settings: SweepSettings) -> None:
    """When the latency weight is varied, queue the one trial with lambda = 0 (the plain
    search), taken by the first worker to ask (`settings.suggest`)."""
    if "latency_weight" in settings.vary:
        study.enqueue_trial({}, user_attrs={BASELINE_ATTR: True})


# ---------------------------------------------------------------- counting


def retry_root(trial: optuna.Trial) -> int:
    """The number of the first trial in `trial`'s retry chain (its own if not a retry):
    whose directory the trial runs in. (A live `Trial` does not show its system
    attributes, where Optuna keeps the chain; the study's frozen copy does.)"""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False)
                  if t.number == trial.number)
    original = _RETRY.retried_trial_number(frozen)
    return trial.number if original is None else int(original)


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials that were queued again (a retry names them in its history)."""
    return {n for t in trials for n in _RETRY.retry_history(t)}


def is_duplicate(trial: FrozenTrial) -> bool:
    """A proposal that was not run: its settings were a finished or running trial's."""
    return trial.user_attrs.get("duplicate_of") is not None


@dataclass(frozen=True)
class Tally:
    complete: int
    fail: int
    retried: int  # FAIL trials that were queued again: not counted
    duplicates: int  # FAIL proposals not run (same settings as another trial): not counted
    running: int
    waiting: int

    @property
    def counted(self) -> int:
        return self.complete + self.fail - self.retried - self.duplicates

    @property
    def failed(self) -> int:
        """Trials that failed for a reason of their own."""
        return self.fail - self.retried - self.duplicates

    def to_dict(self) -> dict[str, int]:
        return {"complete": self.complete, "fail": self.fail, "fail_retried": self.retried,
                "fail_duplicate": self.duplicates, "failed": self.failed,
                "running": self.running, "waiting": self.waiting, "counted": self.counted}


def tally(study: optuna.Study) -> Tally:
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    failed = [t for t in trials if t.state == TrialState.FAIL]

    def n(state: TrialState) -> int:
        return sum(t.state == state for t in trials)

    return Tally(complete=n(TrialState.COMPLETE), fail=len(failed),
                 retried=sum(t.number in retried for t in failed),
                 duplicates=sum(is_duplicate(t) and t.number not in retried for t in failed),
                 running=n(TrialState.RUNNING), waiting=n(TrialState.WAITING))


def target_trials(study: optuna.Study, asked: int | None, default: int) -> int:
    """The number of trials to finish: `asked` (--trials), stored in the study for later
    resumes; else the stored one; else `default`."""
    if asked is not None:
        if asked < 1:
            raise InputError(f"--trials must be at least 1, got {asked}")
        if study.user_attrs.get(TARGET_ATTR) != asked:
            study.set_user_attr(TARGET_ATTR, asked)
        return asked
    stored = study.user_attrs.get(TARGET_ATTR)
    return int(stored) if isinstance(stored, int) and stored > 0 else default


# ---------------------------------------------------------------- the loop


class TrialFailed(Exception):
    """A trial that failed for a reason of its own (its message is one line): recorded
    as FAIL with the message, and the sweep goes on."""


class TrialSkipped(TrialFailed):
    """A proposal not run because another trial has its settings (see the module doc)."""


@dataclass
class WorkerState:
    """What the loop needs to know about this process's trials."""

    current: int | None = None  # the trial running now (queued again on Ctrl-C)
    skipped_in_a_row: int = 0  # duplicate proposals since the last trial that ran


Objective = Callable[[optuna.Trial], list[float]]
Callback = Callable[[optuna.Study, FrozenTrial], None]


def run_trials(study: optuna.Study, target: int, objective: Objective, after: Callback,
               heartbeat: int, log: Callable[[str], None], worker: WorkerState) -> None:
    """Run trials one at a time until `target` count (see the module doc). Before each,
    Optuna fails stale trials (their retries are queued and taken first). When the only
    trials missing are running elsewhere, wait: they finish, or their heartbeat goes stale
    and they are retried here. `worker.current` names the trial this process runs, so
    that one interrupted by Ctrl-C is queued again."""
    waiting_for: set[int] = set()
    while True:
        optuna.storages.fail_stale_trials(study)
        t = tally(study)
        if t.counted >= target:
            return
        if worker.skipped_in_a_row >= MAX_SKIPS_IN_A_ROW:
            log(f"stopping: the last {worker.skipped_in_a_row} proposals repeated settings "
                "already run (the varied parameters hold few distinct settings)")
            return
        if t.counted + t.running >= target and not t.waiting:
            running = {tr.number for tr in study.get_trials(deepcopy=False,
                                                            states=(TrialState.RUNNING,))}
            if running - waiting_for:
                waiting_for |= running
                log(f"waiting for trial(s) {', '.join(map(str, sorted(running)))}: running "
                    "in another worker, or left by a killed one (Optuna fails it once its "
                    f"heartbeat is {GRACE_FACTOR * heartbeat} s old, and it is retried here)")
            time.sleep(heartbeat)
            continue
        try:
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[after])
        except KeyboardInterrupt:
            _requeue_interrupted(study, worker.current)
            raise


def _requeue_interrupted(study: optuna.Study, number: int | None) -> None:
    """Queue a trial stopped by Ctrl-C again (Optuna has made it FAIL), with the same
    callback that retries a dead worker's trials. A trial that failed for a reason of its
    own has an `error` and stays failed."""
    if number is None:
        return
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.number == number and not t.user_attrs.get("error"):
            _RETRY(max_retry=MAX_RETRY)(study, t)
            return
