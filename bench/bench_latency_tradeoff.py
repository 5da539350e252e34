"""Issue 3 item 9: does the latency loss buy latency at the same accuracy?

For each seed, search DARTS (small preset, embedded digits) with LAMBDA = 0 and with
LAMBDA > 0 against the `cpu` predictor (trained on latencies measured on this machine),
retrain both derived genotypes with the small retrain preset (whose network is the
`cpu` profile's deployed network), then measure every retrained network here.

Two phases, because accuracy and latency need different conditions:
- `train`: searches and retrains (CPU-heavy; other load only slows them down);
- `measure`: all retrained networks timed in ONE interleaved session
  (docs/methods.md#measuring-latency: rounds over all networks, so drift hits every
  network alike). Run it on an idle machine.

    python bench/bench_latency_tradeoff.py train --seeds 0 1 2 --lambdas 0 1
    python bench/bench_latency_tradeoff.py measure
    python bench/bench_latency_tradeoff.py table     # markdown for BENCHMARKS.md

Needs a `cpu` predictor (`~/.hw-nas/hardware_profiles/cpu.predictor`: run
`nas profile --hardware cpu`, then `nas predictor train --hardware cpu`), or `--predictor`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results_latency_tradeoff.json"


def _nas(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "nas.cli.main", *args, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def _load() -> dict[str, Any]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}


def _save(data: dict[str, Any]) -> None:
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(RESULTS)


def train(args: argparse.Namespace) -> None:
    data = _load()
    done = {(r["seed"], r["lambda"]) for r in data["runs"]}
    work = Path(args.workdir)
    for seed in args.seeds:
        for lam in args.lambdas:
            if (seed, lam) in done:
                continue
            t0 = time.perf_counter()
            search_dir = work / f"search-s{seed}-l{lam}"
            retrain_dir = work / f"retrain-s{seed}-l{lam}"
            for d in (search_dir, retrain_dir):  # left by an interrupted run of this script
                shutil.rmtree(d, ignore_errors=True)
            extra = ["--predictor", args.predictor] if args.predictor else []
            search = _nas("search", "--space", "darts", "--hardware", "cpu", "--seed", str(seed),
                          "--latency-weight", str(lam), "--out", str(search_dir), *extra)
            report = _nas("retrain", "--genotype", str(search_dir / "genotype.json"),
                          "--hardware", "cpu", "--seed", str(seed), "--no-measure",
                          "--out", str(retrain_dir))
            lat = search.get("latency") or {}
            data["runs"].append({
                "seed": seed, "lambda": lam,
                "genotype": search["genotype_literal"],
                "search_val_acc": search["final_val_acc"],
                "search_predicted_ms": lat.get("genotype_predicted_latency_ms"),
                "retrain_dir": str(retrain_dir),
                "test_acc": report["test_acc"],
                "params": report["params"], "macs": report["macs"],
                "predicted_ms": report["predicted_latency"]["ms"],
                "wall_s": time.perf_counter() - t0,
            })
            _save(data)
            print(f"seed {seed} lambda {lam}: test {report['test_acc']:.4f}, predicted "
                  f"{report['predicted_latency']['ms']:.3f} ms", file=sys.stderr)


def measure(args: argparse.Namespace) -> None:
    import torch

    from latency.hardware import load_profile
    from latency.measure import TimingConfig, fingerprint, measure_many, prepare
    from nas.retrain.export import load_trained

    data = _load()
    profile = load_profile("cpu")
    runners = []
    for r in data["runs"]:
        net, _, _ = load_trained(r["retrain_dir"])
        shape = tuple(profile.input_shape)
        runners.append(prepare("torch-cpu", net, shape, batch_size=profile.batch_size,
                               precision=profile.precision, threads=profile.threads or 1))
    torch.set_num_threads(1)
    cfg = TimingConfig(runs=args.runs, min_time_s=args.min_time)
    for r, m in zip(data["runs"], measure_many(runners, config=cfg), strict=True):
        r["measured_ms"] = m.median_ms
        r["measured_spread"] = m.spread
        r["measured_noisy"] = m.noisy
    data["measurement"] = {"how": f"torch-cpu, batch {profile.batch_size}, "
                           f"{profile.threads} thread, fp32, interleaved rounds over all "
                           f"{len(runners)} networks (docs/methods.md#measuring-latency), "
                           f"median of >= {args.runs} runs",
                           "fingerprint": fingerprint(),
                           "date": time.strftime("%Y-%m-%d %H:%M")}
    _save(data)
    table(args)


def _mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4g}" if values else "-"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def table(args: argparse.Namespace) -> None:
    data = _load()
    runs = data["runs"]
    print("| seed | λ | test acc | measured ms (spread) | predicted ms | params | MACs |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(runs, key=lambda r: (r["seed"], r["lambda"])):
        meas = (f"{r['measured_ms']:.3f} ({100 * r['measured_spread']:.1f}%)"
                if "measured_ms" in r else "-")
        print(f"| {r['seed']} | {r['lambda']} | {100 * r['test_acc']:.2f}% | {meas} | "
              f"{r['predicted_ms']:.3f} | {r['params']:,} | {r['macs']:,} |")
    print()
    print("| λ | seeds | test acc (mean ± sd) | measured ms (mean ± sd) | vs λ=0 |")
    print("|---|---|---|---|---|")
    lams = sorted({r["lambda"] for r in runs})
    base = [r.get("measured_ms") for r in runs if r["lambda"] == lams[0]]
    for lam in lams:
        rs = [r for r in runs if r["lambda"] == lam]
        acc = [100 * r["test_acc"] for r in rs]
        ms = [r["measured_ms"] for r in rs if "measured_ms" in r]
        rel = "-"
        if ms and all(b is not None for b in base) and base:
            rel = f"{100 * (statistics.mean(ms) / statistics.mean(base) - 1):+.1f}%"
        print(f"| {lam} | {len(rs)} | {_mean_sd(acc)}% | {_mean_sd(ms)} | {rel} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="phase", required=True)
    t = sub.add_parser("train")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 1.0])
    t.add_argument("--predictor")
    t.add_argument("--workdir", default="/tmp/latency-tradeoff")
    t.set_defaults(run=train)
    m = sub.add_parser("measure")
    m.add_argument("--runs", type=int, default=100)
    m.add_argument("--min-time", type=float, default=1.0)
    m.set_defaults(run=measure)
    sub.add_parser("table").set_defaults(run=table)
    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
