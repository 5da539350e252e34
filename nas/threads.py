"""How many CPU threads training may use without fighting other work for cores.

PyTorch's default is one thread per core of the machine. On a shared machine that
oversubscribes: with a core busy elsewhere, a 2-thread job waits at every parallel region
for the thread that lost its core (two small searches at once each ran up to 4.5x slower
than alone, and the README's first command beside one busy core 4.4x: BENCHMARKS.md,
"Shared machine"). So the default is derived from the cores this process may use (its
CPU affinity and cgroup quota) minus the cores other processes keep busy right now
(sampled from /proc/stat).

OpenMP's passive waiting (`OMP_WAIT_POLICY=PASSIVE`) was measured and not adopted: it
helps when a second job arrives later, but made the README's P-DARTS search 2.2x slower
on an idle machine, where threads wait at thousands of tiny barriers per step
(BENCHMARKS.md, "Shared machine"). A policy the user sets is left alone.

The count is chosen once, when a run starts, and recorded with the run: changing it
mid-run would change float summation order, and a resumed run must be bit-identical
(`nas.cli.resume`). `--threads N` always wins.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

#: seconds over which other processes' CPU use is sampled at start-up
SAMPLE_SECONDS = 0.25


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    usable_cores: int
    busy_cores: float

    def describe(self) -> str:
        return (f"{self.threads} thread(s): {self.usable_cores} usable core(s), "
                f"{self.busy_cores:.1f} busy with other work (--threads N to override)")


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_quota() -> float | None:
    """CPUs allowed by a cgroup v2 (`cpu.max`) or v1 (`cfs_quota_us`) limit, if any."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        p = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def _cpu_times(cpus: set[int] | None) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over `cpus` (all when None), from /proc/stat."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        values = [float(v) for v in fields[:8]]
        idle = values[3] + values[4]  # idle + iowait
        total += sum(values)
        busy += sum(values) - idle
    return (busy, total) if total > 0 else None


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """Cores kept busy by other processes, averaged over `seconds` (0.0 if unknown)."""
    try:
        cpus: set[int] | None = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = None
    first, own0, wall0 = _cpu_times(cpus), _own_cpu_seconds(), time.monotonic()
    if first is None:
        return _loadavg_busy()
    time.sleep(seconds)
    second, own1, wall1 = _cpu_times(cpus), _own_cpu_seconds(), time.monotonic()
    if second is None or second[1] <= first[1]:
        return 0.0
    ncpu = len(cpus) if cpus is not None else (os.cpu_count() or 1)
    share = (second[0] - first[0]) / (second[1] - first[1])  # busy share of those cores
    own = (own1 - own0) / max(wall1 - wall0, 1e-9)
    return max(0.0, share * ncpu - own)


def _loadavg_busy() -> float:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def choose_threads(seconds: float = SAMPLE_SECONDS) -> ThreadChoice:
    """Usable cores minus those busy elsewhere (a core counts busy from half a core of
    load), never fewer than one."""
    cores = usable_cores()
    busy = busy_cores(seconds) if cores > 1 else 0.0
    threads = max(1, cores - int(math.floor(busy + 0.5)))
    return ThreadChoice(min(threads, cores), cores, busy)


def threads_now() -> int:
    """The thread count torch trains with now (what a run records in its config)."""
    import torch

    return torch.get_num_threads()


def use_default_threads() -> None:
    """Set torch's thread count to `choose_threads()`; a count the user gave torch through
    OMP_NUM_THREADS is theirs to keep."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    import torch

    torch.set_num_threads(choose_threads().threads)
