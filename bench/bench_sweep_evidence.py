"""Issue 20 item 3: a `nas sweep` on real images against the `cpu` profile, its front
retrained with three seeds and measured here, beside the latency-blind search (lambda 0).

Four phases, each resumable (the sweep by Optuna's storage, the retrains by the runs
file), because accuracy and latency need different conditions:

- `sweep`: `nas sweep --hardware cpu` on the CIFAR-10 subset, varying the latency weight,
  run by TWO worker processes on one SQLite study (what docs/sweep.md shows);
- `retrain`: every front genotype, and the lambda = 0 genotype (a search with the
  sweep's settings and no latency term), retrained on all training images with seeds
  0, 1, 2 (test accuracy, evaluated once);
- `measure`: every retrained network timed in ONE interleaved session (eager PyTorch,
  batch 1, one thread, its own 3x32x32 input): run it on an idle machine;
- `table`: the markdown for BENCHMARKS.md.

    HOME=<dir with a cpu predictor> python bench/bench_sweep_evidence.py sweep
    python bench/bench_sweep_evidence.py retrain && python bench/bench_sweep_evidence.py measure
    python bench/bench_sweep_evidence.py table

The sweep's latency objective is the `cpu` predictor's (trained on latencies measured
here of the profile's deployed network, the 8x8 digits network with these cells); the
table's latency is each retrained CIFAR network measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from evidence_runs import DATA, ROOT, nas_run, read_runs

HERE = Path(__file__).resolve().parent
OUT = HERE / "results_sweep_evidence.json"
SEEDS = (0, 1, 2)


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("phase", choices=["sweep", "retrain", "measure", "table"])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--work", type=Path, default=Path("/tmp/nas-evidence/sweep"),
                    help="sweep directory and retrain runs")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--holdout", type=int, default=200)
    ap.add_argument("--search-epochs", type=int, default=2)
    ap.add_argument("--retrain-epochs", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2, help="retrains at a time (one thread each)")
    ap.add_argument("--runs", type=int, default=100, help="timed runs per network (measure)")
    return ap.parse_args()


def sweep_dir(a: argparse.Namespace) -> Path:
    return a.work / "study"


def data_flags(a: argparse.Namespace) -> list[str]:
    return ["--dataset", "cifar10", "--data-dir", str(a.data), "--limit", str(a.limit)]


def sweep(a: argparse.Namespace) -> None:
    """Two workers on one study: each runs until the study holds --trials trials."""
    cmd = [sys.executable, "-m", "nas.cli.main", "--threads", "1", "sweep",
           "--dir", str(sweep_dir(a)), "--hardware", "cpu", *data_flags(a),
           "--search-epochs", str(a.search_epochs), "--retrain-epochs", str(a.retrain_epochs),
           "--holdout", str(a.holdout), "--trials", str(a.trials), "--vary", "latency_weight",
           "--preset", "small"]
    a.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    first = subprocess.Popen([*cmd, "--worker-seed", "100"], cwd=ROOT)
    time.sleep(20)  # the first worker creates the study; the others join it
    others = [subprocess.Popen([*cmd, "--worker-seed", str(100 + k)], cwd=ROOT)
              for k in range(1, a.workers)]
    codes = [p.wait() for p in [first, *others]]
    print(f"sweep: {a.workers} workers, exit {codes}, {time.perf_counter() - start:.0f} s",
          file=sys.stderr)


def front(a: argparse.Namespace) -> dict[str, Any]:
    return json.loads((sweep_dir(a) / "pareto.json").read_text())


def retrain(a: argparse.Namespace) -> None:
    """Each arm's genotype retrained with every seed on all --limit training images."""
    result = front(a)
    arms: dict[str, dict[str, Any]] = {}
    for p in result["front"]:
        arms[f"front-{p['trial']}"] = {"genotype": str(Path(p["search_dir"]) / "genotype.json"),
                                      "latency_weight": p["settings"]["latency_weight"],
                                      "sweep_val_acc": p["objectives"]["val_acc"],
                                      "sweep_latency_ms": p["latency_ms"]}
    # lambda = 0: the sweep's baseline trial (the same search without the latency term)
    zero = next(t for t in result["all_trials"]
                if t["state"] == "COMPLETE" and t["settings"]["latency_weight"] == 0)
    zero_dir = sweep_dir(a) / "trials" / str(zero["trial"]) / "search"
    arms.pop(f"front-{zero['trial']}", None)  # on the front or not, it is this arm
    arms["lambda0"] = {"genotype": str(zero_dir / "genotype.json"), "latency_weight": 0.0,
                       "sweep_val_acc": zero["objectives"]["val_acc"],
                       "sweep_latency_ms": zero["objectives"]["latency_ms"],
                       "on_front": any(p["trial"] == zero["trial"] for p in result["front"])}
    runs_path = OUT.with_suffix(".runs.jsonl")
    done = {(r["arm"], r["seed"]) for r in read_runs(runs_path)}
    jobs = [(arm, s) for s in SEEDS for arm in arms if (arm, s) not in done]
    lock = threading.Lock()

    def one(job: tuple[str, int]) -> None:
        arm, seed = job
        t0 = time.perf_counter()
        out = a.work / f"retrain-{arm}-s{seed}"
        report = nas_run("retrain", out, ["--genotype", arms[arm]["genotype"], *data_flags(a),
                                          "--preset", "small",
                                          "--epochs", str(a.retrain_epochs), "--seed",
                                          str(seed), "--hardware", "cpu", "--no-measure"],
                         ["--no-measure"])
        run = {"arm": arm, "seed": seed, **arms[arm], "retrain_dir": str(out),
               "test_acc": report["test_acc"], "test_images": report["test_images"],
               "params": report["params"], "macs": report["macs"],
               "cpu_predicted_ms": (report.get("predicted_latency") or {}).get("ms"),
               "retrain_seconds": time.perf_counter() - t0}
        print(f"{arm} seed {seed}: test {run['test_acc']:.3f}", file=sys.stderr)
        with lock, runs_path.open("a") as f:
            f.write(json.dumps(run) + "\n")

    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        list(pool.map(one, jobs))


def measure(a: argparse.Namespace) -> None:
    import torch

    from latency.measure import TimingConfig, fingerprint, measure_many, prepare
    from nas.retrain.export import load_trained

    runs = read_runs(OUT.with_suffix(".runs.jsonl"))
    runners = []
    for r in runs:
        net, _, _ = load_trained(r["retrain_dir"])
        runners.append(prepare("torch-cpu", net, (3, 32, 32), batch_size=1,
                               precision="fp32", threads=1))
    torch.set_num_threads(1)
    load = os.getloadavg()
    timed = measure_many(runners, config=TimingConfig(runs=a.runs, min_time_s=0.5))
    measured = {(r["arm"], r["seed"]): {"measured_ms": m.median_ms,
                                        "measured_spread": m.spread,
                                        "measured_noisy": m.noisy}
                for r, m in zip(runs, timed, strict=True)}
    how = {"how": f"torch-cpu eager, batch 1, 1 thread, fp32, input 3x32x32, interleaved "
                  f"rounds over all {len(runs)} networks, median of >= {a.runs} runs",
           "fingerprint": fingerprint(), "load_average_before": load,
           "date": time.strftime("%Y-%m-%d %H:%M")}
    (HERE / "results_sweep_evidence.measured.json").write_text(json.dumps(
        {"measurement": how, "networks": [{"arm": k[0], "seed": k[1], **v}
                                          for k, v in measured.items()]}, indent=1) + "\n")
    table(a)


def _mean_sd(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    v = [scale * x for x in values]
    if len(v) < 2:
        return f"{v[0]:.{digits}f}" if v else "-"
    return f"{statistics.fmean(v):.{digits}f} ± {statistics.stdev(v):.{digits}f}"


def table(a: argparse.Namespace) -> None:
    runs = read_runs(OUT.with_suffix(".runs.jsonl"))
    mpath = HERE / "results_sweep_evidence.measured.json"
    measured = json.loads(mpath.read_text()) if mpath.exists() else {"networks": []}
    by_key = {(m["arm"], m["seed"]): m for m in measured["networks"]}
    for r in runs:
        r.update(by_key.get((r["arm"], r["seed"]), {}))
    result = front(a)
    arms = sorted({r["arm"] for r in runs}, key=lambda x: (x != "lambda0", x))
    summary = []
    print("| arm | λ | sweep val acc (200 held-out) | test acc, 3 seeds (mean ± sd) | "
          "measured ms here (mean ± sd) | cpu predictor ms (digits network) | params |")
    print("|---|---|---|---|---|---|---|")
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        first = mine[0]
        acc = [r["test_acc"] for r in mine]
        ms = [r["measured_ms"] for r in mine if "measured_ms" in r]
        row = {"arm": arm, "latency_weight": first["latency_weight"], "seeds":
               sorted(r["seed"] for r in mine), "test_acc": acc, "measured_ms": ms,
               "params": first["params"], "sweep_val_acc": first.get("sweep_val_acc"),
               "cpu_predicted_ms": first.get("cpu_predicted_ms")}
        summary.append(row)
        val = f"{100 * first['sweep_val_acc']:.1f}%" if first.get("sweep_val_acc") else "-"
        pred = f"{first['cpu_predicted_ms']:.3f}" if first.get("cpu_predicted_ms") else "-"
        print(f"| {arm} | {first['latency_weight']:.3g} | {val} | {_mean_sd(acc, 100, 1)}% "
              f"| {_mean_sd(ms, 1, 3)} | {pred} | {first['params']:,} |")
    out = {"command": "python bench/bench_sweep_evidence.py sweep|retrain|measure",
           "budget": {"training_images": a.limit, "holdout_in_sweep": a.holdout,
                      "search_epochs": a.search_epochs, "retrain_epochs": a.retrain_epochs,
                      "trials": a.trials, "workers": a.workers, "seeds": list(SEEDS)},
           "sweep": {k: result[k] for k in ("trials", "latency", "objectives", "chosen_on")
                     if k in result},
           "all_trials": result.get("all_trials"),
           "measurement": measured.get("measurement"), "summary": summary, "runs": runs}
    OUT.write_text(json.dumps(out, indent=1) + "\n")


def main() -> None:
    a = arguments()
    {"sweep": sweep, "retrain": retrain, "measure": measure, "table": table}[a.phase](a)


if __name__ == "__main__":
    main()
