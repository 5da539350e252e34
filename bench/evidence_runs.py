"""What the evidence benches (float against adder, float against low-bit, ...) share: the
CLI call they make for each run, the seeds x arms job pool, a per-arm mean / sd summary,
and a results file that survives a session running out.

Each finished run is appended to ``<out>.runs.jsonl`` the moment it ends, and
``--resume`` skips the (arm, seed) pairs already there, so an evidence run that does
not fit one sitting is finished in the next with the same command, and the final JSON
is always built from every run on file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10-subset" / "cifar-10-batches-py"

Run = dict[str, Any]


def nas(args: list[str]) -> dict[str, Any]:
    """``nas --threads 1 ARGS --json`` in a fresh process: its JSON object."""
    cmd = [sys.executable, "-m", "nas.cli.main", "--threads", "1", *args, "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-1500:]}")
    return json.loads(proc.stdout)


def nas_run(command: str, out: Path, args: list[str],
            resume_args: Sequence[str] = ()) -> dict[str, Any]:
    """``nas COMMAND ARGS --out OUT``; or, when OUT already holds a run (a bench killed
    mid-run left it), ``nas COMMAND --resume OUT RESUME_ARGS``, which continues it from its
    checkpoint (or just reports a finished one) instead of failing on the existing folder."""
    if out.is_dir() and any(out.iterdir()):
        return nas([command, "--resume", str(out), *resume_args])
    return nas([command, *args, "--out", str(out)])


def deployed_costs(run: Run, profiles: Sequence[str], counts: Mapping[str, str]) -> None:
    """Fill `run` with its genotype, the `nas info` counts of its retrained network (the
    small preset: 8 cells, 16 channels, 32x32), each under the run key `counts` maps it
    to, and per profile the simulated latency and modelled energy of the deployed
    network (`<profile>_simulated_ms`, `<profile>_energy_mj`)."""
    from latency.energy import architecture_energy
    from latency.hardware import load_profile
    from latency.simulate import simulate_genotype
    from nas.cli.info import network_size
    from search_spaces.space import load_architecture

    g = load_architecture(run["source"])
    size = network_size(g, "cifar10", channels=16, layers=8)
    run.update({key: size[name] for name, key in counts.items()})
    run["genotype"] = g.to_dict()
    for name in profiles:
        profile = load_profile(name)
        run[f"{name}_simulated_ms"] = simulate_genotype(g, profile).ms
        run[f"{name}_energy_mj"] = architecture_energy(g, profile).mj


def add_common_arguments(ap: argparse.ArgumentParser, arms: Sequence[str], *, epochs: int,
                         retrain_epochs: int, limit: int, out: Path) -> None:
    """The options every evidence bench takes."""
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=epochs, help="search epochs")
    ap.add_argument("--retrain-epochs", type=int, default=retrain_epochs)
    ap.add_argument("--limit", type=int, default=limit, help="training images")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    ap.add_argument("--arms", default=",".join(arms),
                    help=f"comma-separated subset of {', '.join(arms)}")
    ap.add_argument("--runs-dir", type=Path, default=None,
                    help="keep run directories here (default: a folder under the system temp dir)")
    ap.add_argument("--resume", action="store_true",
                    help="skip the (arm, seed) runs already in the .runs.jsonl file")
    ap.add_argument("--out", type=Path, default=out)


def data_arguments(a: argparse.Namespace, seed: int) -> list[str]:
    """The dataset / limit / seed options of every search and retrain call."""
    return ["--dataset", "cifar10", "--data-dir", str(a.data), "--limit", str(a.limit),
            "--seed", str(seed)]


def runs_file(out: Path) -> Path:
    return out.with_suffix(".runs.jsonl")


def read_runs(path: Path) -> list[Run]:
    """Every run recorded in `path` (a missing file: none)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def parse_jobs(a: argparse.Namespace, arms: Sequence[str]) -> list[tuple[str, int]]:
    """(arm, seed) pairs to run, in seed-major order, minus those on file with --resume."""
    chosen = [arm for arm in a.arms.split(",") if arm]
    unknown = sorted(set(chosen) - set(arms))
    if unknown:
        raise SystemExit(f"unknown arm(s) {', '.join(unknown)}: choose from {', '.join(arms)}")
    seeds = [int(s) for s in a.seeds.split(",")]
    done = ({(r["arm"], r["seed"]) for r in read_runs(runs_file(a.out))} if a.resume
            else set())
    return [(arm, s) for s in seeds for arm in chosen if (arm, s) not in done]


def run_jobs(jobs: Iterable[tuple[str, int]], one: Callable[[str, int], Run],
             annotate: Callable[[Run], None], a: argparse.Namespace) -> None:
    """Run `one(arm, seed)` for every job, `a.jobs` at a time; each result, completed by
    `annotate` (counts, modelled costs), is appended to the runs file as it finishes.
    Without --resume a previous runs file is moved aside, never overwritten."""
    path = runs_file(a.out)
    if path.exists() and not a.resume:
        path.rename(path.with_suffix(f".jsonl.{int(time.time())}"))
    lock = threading.Lock()

    def job(arm_seed: tuple[str, int]) -> None:
        run = one(*arm_seed)
        annotate(run)
        with lock, path.open("a") as f:
            f.write(json.dumps(run) + "\n")

    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        list(pool.map(job, jobs))


def summary(runs: list[Run], arms: Sequence[str], keys: Sequence[str]) -> dict[str, Any]:
    """Per arm with runs: the number of seeds, and each key's mean and sd (sd None for one
    seed; a key missing from some run is summarised over the runs that have it)."""
    out: dict[str, Any] = {}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        row: dict[str, Any] = {"seeds": sorted(r["seed"] for r in mine)}
        for key in keys:
            vals = [float(r[key]) for r in mine if r.get(key) is not None]
            if vals:
                row[key] = {"mean": statistics.fmean(vals),
                            "sd": statistics.stdev(vals) if len(vals) > 1 else None}
        out[arm] = row
    return out


def write_results(a: argparse.Namespace, script: str, arms: Sequence[str],
                  keys: Sequence[str], extra: dict[str, Any], load_start: tuple[float, ...],
                  start: float) -> dict[str, Any]:
    """The results JSON from every run on file (sorted by arm, then seed)."""
    order = {arm: i for i, arm in enumerate(arms)}
    runs = sorted(read_runs(runs_file(a.out)),
                  key=lambda r: (order.get(r["arm"], len(order)), r["seed"]))
    result = {"command": f"python bench/{script} " + " ".join(sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "threads_per_run": 1, "jobs": a.jobs,
                          "load_average_at_start": load_start,
                          "load_average_at_end": os.getloadavg()},
              "budget": {"search_epochs": a.epochs, "retrain_epochs": a.retrain_epochs,
                         "training_images": a.limit, "search_preset": "small",
                         "retrain_preset": "small"},
              **extra, "wall_s_this_invocation": time.perf_counter() - start,
              "summary": summary(runs, arms, keys), "runs": runs}
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    return result
