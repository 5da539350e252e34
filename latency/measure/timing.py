"""Timing a Runner so that the number can be trusted (docs/methods.md#measuring-latency).

* Warm up first: at least `warmup_runs` runs AND at least `warmup_s` seconds, so caches,
  allocators, lazy initialisation and CPU clocks have settled.
* Then time at least `runs` runs AND at least `min_time_s` seconds, keep the median (one
  slow run from the OS does not move it) and a spread: IQR/median decides, the coefficient
  of variation is recorded as well.
* If the spread is above `threshold`, measure again (up to `max_attempts` in all) and keep
  the attempt with the smallest spread; if none gets below the threshold the result is
  marked `noisy` rather than silently kept.
* Several networks are timed interleaved, in rounds (A B C A B C ...), so slow drift of a
  shared machine spreads over all of them instead of becoming a fake difference.
* `stability_check` times one network at the start and the end of a profiling run; the
  two medians should agree within the threshold, and the summary says whether they did.

Time minimums are counted in measured time (the sum of the runs' durations), so a fake
Runner with injected durations behaves exactly like a real one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

from latency.measure.backends import Runner
from search_spaces.errors import InputError


@dataclass(frozen=True)
class TimingConfig:
    """How long to warm up and to time; the defaults are the minimums of
    docs/methods.md#measuring-latency."""

    warmup_runs: int = 10
    warmup_s: float = 0.2
    runs: int = 30
    min_time_s: float = 0.5
    threshold: float = 0.05
    max_attempts: int = 3
    max_runs: int = 100_000  # a cap for networks so fast that min_time_s needs millions

    def __post_init__(self) -> None:
        if self.warmup_runs < 0 or self.warmup_s < 0 or self.min_time_s < 0:
            raise InputError("warm-up runs and time minimums must not be negative")
        if self.runs < 1 or self.max_attempts < 1:
            raise InputError("timing needs at least 1 run and at least 1 attempt")
        if self.max_runs < self.runs:
            raise InputError(f"max_runs ({self.max_runs}) is below runs ({self.runs})")
        if not self.threshold > 0:
            raise InputError(f"the noise threshold must be positive, got {self.threshold}")


@dataclass(frozen=True)
class Stats:
    median_ms: float
    iqr_ms: float
    spread: float  # IQR / median
    cv: float  # population standard deviation / mean
    runs: int


@dataclass(frozen=True)
class Measurement:
    """One network's latency on one backend, with what makes the number reproducible."""

    median_ms: float
    iqr_ms: float
    spread: float
    cv: float
    runs: int
    attempts: int
    noisy: bool
    backend: str
    threads: int
    batch_size: int
    precision: str
    input_shape: tuple[int, ...] = ()  # one sample, no batch axis (resolution matters)
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(durations_ms: Sequence[float]) -> Stats:
    """Median, IQR (linear-interpolated quartiles), IQR/median and CV of some durations."""
    if not durations_ms:
        raise ValueError("no durations to summarize")
    data = [float(d) for d in durations_ms]
    median = statistics.median(data)
    if len(data) >= 2:
        q1, _, q3 = statistics.quantiles(data, n=4, method="inclusive")
    else:
        q1 = q3 = data[0]
    mean = statistics.fmean(data)
    iqr = q3 - q1
    spread = iqr / median if median > 0 else 0.0
    cv = statistics.pstdev(data) / mean if mean > 0 else 0.0
    return Stats(median, iqr, spread, cv, len(data))


def _collect(runner: Runner, min_runs: int, min_s: float, max_runs: int) -> list[float]:
    """At least `min_runs` runs and `min_s` seconds of measured time (capped at max_runs)."""
    times = runner.timed_runs(min_runs)
    goal_ms = min_s * 1000.0
    while sum(times) < goal_ms and len(times) < max_runs:
        mean = sum(times) / len(times) if times else 0.0
        need = math.ceil((goal_ms - sum(times)) / mean) if mean > 0 else max_runs
        times += runner.timed_runs(max(1, min(need, max_runs - len(times))))
    return times


def warm_up(runner: Runner, config: TimingConfig | None = None) -> list[float]:
    """Run until both warm-up minimums are met; returns the (discarded) durations."""
    cfg = config or TimingConfig()
    return _collect(runner, cfg.warmup_runs, cfg.warmup_s, cfg.max_runs)


def _measurement(runner: Runner, best: Stats, attempts: int, threshold: float) -> Measurement:
    return Measurement(
        median_ms=best.median_ms,
        iqr_ms=best.iqr_ms,
        spread=best.spread,
        cv=best.cv,
        runs=best.runs,
        attempts=attempts,
        noisy=best.spread > threshold,
        backend=runner.backend,
        threads=runner.threads,
        batch_size=runner.batch_size,
        precision=runner.precision,
        input_shape=runner.input_shape,
        label=runner.label,
    )


def measure(runner: Runner, config: TimingConfig | None = None) -> Measurement:
    """Warm up, time, and re-time while the spread is above the threshold."""
    cfg = config or TimingConfig()
    warm_up(runner, cfg)
    best: Stats | None = None
    attempts = 0
    while attempts < cfg.max_attempts:
        attempts += 1
        stats = summarize(_collect(runner, cfg.runs, cfg.min_time_s, cfg.max_runs))
        if best is None or stats.spread < best.spread:
            best = stats
        if best.spread <= cfg.threshold:
            break
    assert best is not None
    return _measurement(runner, best, attempts, cfg.threshold)


def _noisy(stats: Stats | None, cfg: TimingConfig) -> bool:
    return stats is not None and stats.spread > cfg.threshold


def _interleave(
    runners: Sequence[Runner], rounds: int, blocks: Sequence[int], cfg: TimingConfig
) -> list[list[float]]:
    """`rounds` rounds of one block per runner, then extra rounds for any runner that is
    still short of `min_time_s` (only those, still in turn)."""
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for k, runner in enumerate(runners):
            times[k] += runner.timed_runs(blocks[k])
    goal_ms = cfg.min_time_s * 1000.0
    while True:
        short = [
            k
            for k in range(len(runners))
            if sum(times[k]) < goal_ms and len(times[k]) < cfg.max_runs
        ]
        if not short:
            return times
        for k in short:
            times[k] += runners[k].timed_runs(min(blocks[k], cfg.max_runs - len(times[k])))


def measure_many(
    runners: Sequence[Runner], rounds: int = 10, config: TimingConfig | None = None
) -> list[Measurement]:
    """Time several networks interleaved: A B C A B C ..., one block of runs each per round.

    Each runner's block is sized from its warm-up so that `rounds` rounds reach both
    `runs` and `min_time_s`. Runners whose spread stays above the threshold are timed
    again, interleaved among themselves, up to `max_attempts`; each keeps its best attempt.
    Returns one Measurement per runner, in the order given.
    """
    cfg = config or TimingConfig()
    if rounds < 1:
        raise InputError(f"interleaved timing needs at least 1 round, got {rounds}")
    blocks = []
    for runner in runners:
        warm = warm_up(runner, cfg)
        block = math.ceil(cfg.runs / rounds)
        mean = sum(warm) / len(warm) if warm else 0.0
        if mean > 0:
            block = max(block, math.ceil(cfg.min_time_s * 1000.0 / mean / rounds))
        blocks.append(min(block, max(1, cfg.max_runs // rounds)))
    best: list[Stats | None] = [None] * len(runners)
    attempts = [0] * len(runners)
    pending = list(range(len(runners)))
    while pending:
        timed = _interleave(
            [runners[k] for k in pending], rounds, [blocks[k] for k in pending], cfg
        )
        for k, durations in zip(pending, timed, strict=True):
            attempts[k] += 1
            stats = summarize(durations)
            current = best[k]
            if current is None or stats.spread < current.spread:
                best[k] = stats
        pending = [k for k in pending if attempts[k] < cfg.max_attempts and _noisy(best[k], cfg)]
    return [
        _measurement(runner, stats, n, cfg.threshold)
        for runner, stats, n in zip(runners, best, attempts, strict=True)
        if stats is not None
    ]


@dataclass(frozen=True)
class StabilityReport:
    """The same network timed at the start and the end of a profiling run."""

    start: Measurement
    end: Measurement
    relative_diff: float  # (end - start) / start
    threshold: float

    @property
    def within_threshold(self) -> bool:
        return abs(self.relative_diff) <= self.threshold

    def summary(self) -> str:
        verdict = "stable" if self.within_threshold else "DRIFTED"
        return (
            f"drift check: {self.start.median_ms:.3f} ms at start, {self.end.median_ms:.3f} ms "
            f"at end ({self.relative_diff:+.1%}; threshold {self.threshold:.0%}): {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.to_dict(),
            "end": self.end.to_dict(),
            "relative_diff": self.relative_diff,
            "threshold": self.threshold,
            "within_threshold": self.within_threshold,
        }


class StabilityCheck:
    """Time a reference network before and after a profiling run, to see if the machine
    drifted. Use `start()`/`finish()`, or as a context manager:

        with stability_check(runner) as check:
            ...  # profile
        print(check.report.summary())
    """

    def __init__(self, runner: Runner, config: TimingConfig | None = None) -> None:
        self.runner = runner
        self.config = config or TimingConfig()
        self.first: Measurement | None = None
        self.report: StabilityReport | None = None

    def start(self) -> Measurement:
        self.first = measure(self.runner, self.config)
        return self.first

    def finish(self) -> StabilityReport:
        if self.first is None:
            raise RuntimeError("StabilityCheck.finish() called before start()")
        last = measure(self.runner, self.config)
        base = self.first.median_ms
        diff = (last.median_ms - base) / base if base > 0 else 0.0
        self.report = StabilityReport(self.first, last, diff, self.config.threshold)
        return self.report

    def __enter__(self) -> StabilityCheck:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish()


def stability_check(runner: Runner, config: TimingConfig | None = None) -> StabilityCheck:
    """A drift check on `runner` (not started yet; see `StabilityCheck`)."""
    return StabilityCheck(runner, config)
