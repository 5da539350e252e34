"""How `nas search` fares on a shared machine: alone, beside a busy core, and two at once.

Times whole commands (wall clock, process start to exit) in three scenarios:

* `idle`: the job alone;
* `busy-core`: the job beside one process that keeps one core busy (a Python spin loop);
* `two-jobs`: two copies of the job, the second started `--stagger` seconds after the
  first (both are timed).

Each scenario runs once per variant per repeat, variants interleaved, so drift of the
machine hits all alike. A variant is a source tree put first on PYTHONPATH (the commit
before this change, checked out with `git worktree add`, against this one) plus
environment settings, so `before` and `after` run in one session on one machine.

    git worktree add /tmp/nas-before <commit>
    python bench/bench_shared_machine.py --before /tmp/nas-before --repeats 3 \
        --out bench/results_shared_machine.json

Results and the machine they ran on go in BENCHMARKS.md ("Shared machine").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {
    "search-1-epoch": ["search", "--space", "darts", "--epochs", "1", "--limit", "400"],
    "readme": ["search", "--space", "pdarts", "--hardware", "p100"],
}
SPIN = "while True: pass"


def _env(tree: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",
                                                             "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = str(tree)
    env.update(extra)
    return env


def _start(args: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    # cwd outside both trees: `python -m` puts the cwd first on sys.path
    return subprocess.Popen([sys.executable, "-m", "nas.cli.main", *args, "--out", str(out)],
                            env=env, cwd=out.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _wait(proc: subprocess.Popen[bytes], started: float, timeout: float) -> dict[str, Any]:
    try:
        _, err = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"seconds": None, "timed_out": True}
    text = err.decode(errors="replace")
    threads = next((line.split("; ")[-1].split(" thread(s))")[0] + " thread(s)"
                    for line in text.splitlines() if "thread(s))" in line), "not reported")
    if proc.returncode != 0:
        raise SystemExit(f"job failed ({proc.returncode}): {text.strip().splitlines()[-1:]}")
    return {"seconds": time.monotonic() - started, "threads": threads}


def run_scenario(scenario: str, args: list[str], env: dict[str, str], work: Path,
                 stagger: float, timeout: float) -> list[dict[str, Any]]:
    spinner = None
    if scenario == "busy-core":
        spinner = subprocess.Popen([sys.executable, "-c", SPIN])
        time.sleep(1.0)  # let the load register before the job looks at it
    try:
        t0 = time.monotonic()
        first = _start(args, env, work / "job1")
        if scenario != "two-jobs":
            return [_wait(first, t0, timeout)]
        time.sleep(stagger)
        t1 = time.monotonic()
        second = _start(args, env, work / "job2")
        return [_wait(first, t0, timeout), _wait(second, t1, timeout)]
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", type=Path, required=True,
                   help="source tree of the code before the change (a git worktree)")
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="search-1-epoch")
    p.add_argument("--scenarios", default="idle,busy-core,two-jobs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--stagger", type=float, default=3.0,
                   help="seconds between the starts of the two jobs (two-jobs)")
    p.add_argument("--timeout", type=float, default=900.0, help="per job, seconds")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:K=V,...",
                   help="another variant: this tree with these environment settings "
                   "(e.g. 'spin10k:OMP_WAIT_POLICY=,GOMP_SPINCOUNT=10000')")
    p.add_argument("--out", type=Path, help="JSON results")
    a = p.parse_args()
    variants = {"before": _env(a.before.resolve(), {}), "after": _env(ROOT, {})}
    for spec in a.variant:
        name, _, settings = spec.partition(":")
        pairs = [kv.split("=", 1) for kv in settings.split(",") if kv]
        variants[name] = _env(ROOT, {k: v for k, v in pairs})
    scenarios = a.scenarios.split(",")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        s: {v: [] for v in variants} for s in scenarios}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("HW_NAS_HOME", str(Path(tmp) / "home"))
        for r in range(a.repeats):
            order = list(variants) if r % 2 == 0 else list(variants)[::-1]  # interleaved
            for s in scenarios:
                for v in order:
                    work = Path(tmp) / f"{s}-{v}-{r}"
                    work.mkdir()
                    env = {**variants[v], "HW_NAS_HOME": os.environ["HW_NAS_HOME"]}
                    jobs = run_scenario(s, WORKLOADS[a.workload], env, work, a.stagger,
                                        a.timeout)
                    results[s][v].append({"repeat": r, "jobs": jobs})
                    print(f"{s:10s} {v:6s} repeat {r}: "
                          + ", ".join(f"{j['seconds']:.1f} s ({j.get('threads')})"
                                      if j["seconds"] is not None else "timed out"
                                      for j in jobs), file=sys.stderr, flush=True)
    summary = {}
    for s in scenarios:
        for v in variants:
            times = [j["seconds"] for run in results[s][v] for j in run["jobs"]
                     if j["seconds"] is not None]
            summary[f"{s}/{v}"] = ({"median_s": median(times), "min_s": min(times),
                                    "max_s": max(times), "n": len(times)} if times else None)
    report = {"workload": WORKLOADS[a.workload], "repeats": a.repeats, "stagger_s": a.stagger,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "summary": summary, "runs": results}
    if a.out:
        a.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| scenario | " + " | ".join(f"{v} (median, min-max)" for v in variants) + " |")
    print("|---|" + "---|" * len(variants))
    for s in scenarios:
        cells = []
        for v in variants:
            m = summary[f"{s}/{v}"]
            cells.append(f"{m['median_s']:.1f} s ({m['min_s']:.1f}-{m['max_s']:.1f}, n={m['n']})"
                         if m else "timed out")
        print(f"| {s} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
