"""Plain against factorised (operations x activations) search on real images: the CIFAR-10
subset in ``../shared/data/cifar10-subset``, same budget and seeds for both.

Per seed (``--seeds``, default 0, 1, 2) and per arm (`plain`: the DARTS op set with ReLU;
`factorised`: ``--activations all``), exactly what a user runs:

1. ``nas --threads 1 search --space darts --dataset cifar10 --data-dir D --preset small
   --epochs E --limit N --seed S [--activations all]``: the small preset (5 cells, C=8,
   batch 64) on the first N training images (half train the weights, half the
   architecture);
2. ``nas --threads 1 retrain --genotype RUN --dataset cifar10 --data-dir D --preset small
   --epochs R --limit N --seed S --no-measure``: the derived cell in the small retrain
   network (8 cells, C=16) on the same N images, test accuracy on the subset's 1,017 test
   images, which no search saw;
3. the derived genotype's deployed network on this machine's `cpu` profile, timed
   interleaved with the reference network (`latency.profiling.measure_at_state`), after
   every run has finished: the measured latency, and the reference's time beside it so
   runs measured at different machine states compare.

Two runs at a time, one thread each (``--jobs``). The table: per arm the mean and sd over
seeds of test accuracy, parameters and measured latency, and each seed's activations.

    python bench/bench_factorised_evidence.py [--seeds 0,1,2 --epochs 4 --retrain-epochs 6
        --limit 2000 --jobs 2]

Writes bench/results_factorised_evidence.json (run directories under a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from evidence_runs import DATA, nas  # noqa: E402

OUT = Path(__file__).with_name("results_factorised_evidence.json")
ARMS = {"plain": [], "factorised": ["--activations", "all"]}


def one(arm: str, seed: int, a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    common = ["--dataset", "cifar10", "--data-dir", str(a.data), "--limit", str(a.limit),
              "--seed", str(seed)]
    search_dir = tmp / f"search-{arm}-{seed}"
    t0 = time.perf_counter()
    search = nas(["search", "--space", "darts", "--preset", "small", "--epochs",
                  str(a.epochs), "--out", str(search_dir), *common, *ARMS[arm]])
    t1 = time.perf_counter()
    retrain = nas(["retrain", "--genotype", str(search_dir), "--preset", "small", "--epochs",
                   str(a.retrain_epochs), "--no-measure",
                   "--out", str(tmp / f"retrain-{arm}-{seed}"), *common])
    t2 = time.perf_counter()
    ops = [op for cell in ("normal", "reduce") for op, _ in search["genotype"][cell]]
    acts = Counter(op.split("/")[1] if "/" in op else "relu" for op in ops
                   if op.startswith(("sep_conv", "dil_conv")))
    print(f"{arm:10s} seed {seed}: search val {search['final_val_acc']:.3f} ({t1 - t0:.0f} s), "
          f"retrain test {retrain['test_acc']:.3f} ({t2 - t1:.0f} s), {dict(acts)}",
          file=sys.stderr, flush=True)
    return {"arm": arm, "seed": seed, "genotype": search["genotype"],
            "search_val_acc": search["final_val_acc"], "search_seconds": t1 - t0,
            "test_acc": retrain["test_acc"], "test_images": retrain["test_images"],
            "params": retrain["params"], "macs": retrain["macs"],
            "retrain_seconds": t2 - t1, "activations_in_convolutions": dict(acts)}


def measure(runs: list[dict[str, Any]]) -> None:
    """Each derived genotype's deployed `cpu` network, timed now beside the reference."""
    import torch

    from latency.hardware import load_profile
    from latency.profiling import measure_at_state
    from search_spaces.space import get_space

    torch.set_num_threads(1)
    space, profile = get_space("darts"), load_profile("cpu")
    for run in runs:
        model, shape = space.deployed_network(space.parse(run["genotype"]), profile)
        m, ref = measure_at_state(profile, model, shape)
        run.update({"cpu_ms": m.median_ms, "cpu_spread": m.spread,
                    "cpu_reference_ms": ref.median_ms,
                    "cpu_ms_per_reference": m.median_ms / ref.median_ms})


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        row: dict[str, Any] = {}
        for key in ("test_acc", "params", "cpu_ms", "cpu_ms_per_reference", "search_val_acc"):
            vals = [float(r[key]) for r in mine if key in r]
            if vals:
                row[key] = {"mean": statistics.fmean(vals),
                            "sd": statistics.stdev(vals) if len(vals) > 1 else None}
        out[arm] = row
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--retrain-epochs", type=int, default=6)
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    if not a.data.is_dir():
        raise SystemExit(f"no CIFAR-10 batches at {a.data}")
    seeds = [int(s) for s in a.seeds.split(",")]
    start, load_start = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        jobs = [(arm, s) for s in seeds for arm in ARMS]
        with ThreadPoolExecutor(max_workers=a.jobs) as pool:
            runs = list(pool.map(lambda j: one(j[0], j[1], a, tmp), jobs))
    measure(runs)
    result = {"command": "python bench/bench_factorised_evidence.py " + " ".join(sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "threads_per_run": 1, "jobs": a.jobs,
                          "load_average_at_start": load_start,
                          "load_average_at_end": os.getloadavg()},
              "budget": {"search_epochs": a.epochs, "retrain_epochs": a.retrain_epochs,
                         "training_images": a.limit, "search_preset": "small",
                         "retrain_preset": "small"},
              "wall_s": time.perf_counter() - start, "summary": summary(runs), "runs": runs}
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
