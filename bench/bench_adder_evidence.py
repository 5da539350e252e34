"""Float against adder on real images: one cell retrained in float and in adder form, and a
`--ops darts+adder` search result, on the CIFAR-10 subset in ``../shared/data/cifar10-subset``,
same budget and seeds.

Per seed (``--seeds``, default 0, 1, 2), exactly what a user runs:

* `float`: ``nas --threads 1 retrain --genotype DARTS_V2 --dataset cifar10 --data-dir D
  --preset small --epochs R --limit N --seed S --no-measure`` (8 cells, C=16);
* `adder`: the same with the genotype in adder form (every convolution of DARTS_V2 an
  adder mirror, `search_spaces.adder_ops.adder_form`), written to a file first;
* `searched`: ``nas --threads 1 search --space darts --ops darts+adder --preset small
  --epochs E --limit N --seed S`` (5 cells, C=8), then the retrain above of its genotype.

Test accuracy on the subset's 1,017 test images, which no run trains on. Per network:
parameters, multiplications and additions per image of the retrained network (32x32),
and on the `raspi4` and `p100` profiles the modelled energy (`latency.energy`: arithmetic,
Horowitz 45 nm table) and the simulated latency (roofline, adder layers at the device's
add rate) of the deployed network: all MODELLED, none measured.

    python bench/bench_adder_evidence.py [--seeds 0,1,2 --epochs 3 --retrain-epochs 8
        --limit 1000 --jobs 2]

Writes bench/results_adder_evidence.json (run directories under a temporary folder).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_factorised_evidence import DATA, nas  # noqa: E402

OUT = Path(__file__).with_name("results_adder_evidence.json")
ARMS = ("float", "adder", "searched")
PROFILES = ("raspi4", "p100")


def genotype_file(arm: str, tmp: Path) -> Path:
    """DARTS_V2 (float) or its adder form, as a genotype.json."""
    from search_spaces.adder_ops import adder_form
    from search_spaces.genotype_library import DARTS_V2
    from search_spaces.space import get_space

    space = get_space("darts")
    g = DARTS_V2 if arm == "float" else space.rename_ops(DARTS_V2, adder_form)
    return space.save(g, tmp / f"{arm}.json")


def one(arm: str, seed: int, a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    common = ["--dataset", "cifar10", "--data-dir", str(a.data), "--limit", str(a.limit),
              "--seed", str(seed)]
    t0 = time.perf_counter()
    search: dict[str, Any] = {}
    if arm == "searched":
        source = tmp / f"search-{seed}"
        search = nas(["search", "--space", "darts", "--ops", "darts+adder", "--preset",
                      "small", "--epochs", str(a.epochs), "--out", str(source), *common])
    else:
        source = genotype_file(arm, tmp)
    t1 = time.perf_counter()
    retrain = nas(["retrain", "--genotype", str(source), "--preset", "small", "--epochs",
                   str(a.retrain_epochs), "--no-measure",
                   "--out", str(tmp / f"retrain-{arm}-{seed}"), *common])
    t2 = time.perf_counter()
    genotype = retrain["genotype"] if "genotype" in retrain else search.get("genotype")
    print(f"{arm:8s} seed {seed}: retrain test {retrain['test_acc']:.3f} ({t2 - t1:.0f} s"
          f"{f', search {t1 - t0:.0f} s' if search else ''})", file=sys.stderr, flush=True)
    return {"arm": arm, "seed": seed, "genotype": genotype, "source": str(source),
            "search_val_acc": search.get("final_val_acc"), "search_seconds": t1 - t0,
            "test_acc": retrain["test_acc"], "test_images": retrain["test_images"],
            "params": retrain["params"], "retrain_seconds": t2 - t1}


def costs(runs: list[dict[str, Any]]) -> None:
    """Counts of the retrained network, and modelled energy / simulated latency of the
    deployed networks, per run."""
    from latency.energy import architecture_energy
    from latency.hardware import load_profile
    from latency.simulate import simulate_genotype
    from nas.cli.info import network_size
    from search_spaces.space import load_architecture

    for run in runs:
        g = load_architecture(run["source"])
        size = network_size(g, "cifar10", channels=16, layers=8)
        run.update({"multiplications": size["multiplications"],
                    "additions": size["total_additions"],
                    "adder_additions": size["additions"], "genotype": g.to_dict()})
        for name in PROFILES:
            profile = load_profile(name)
            run[f"{name}_energy_mj"] = architecture_energy(g, profile).mj
            run[f"{name}_simulated_ms"] = simulate_genotype(g, profile).ms


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("test_acc", "params", "multiplications", "additions",
            *(f"{p}_{k}" for p in PROFILES for k in ("energy_mj", "simulated_ms")))
    out: dict[str, Any] = {}
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        out[arm] = {"seeds": len(mine), **{k: {"mean": statistics.fmean(float(r[k]) for r in mine),
                        "sd": statistics.stdev(float(r[k]) for r in mine)
                        if len(mine) > 1 else None} for k in keys}}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--retrain-epochs", type=int, default=8)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of "
                    + ", ".join(ARMS))
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    if not a.data.is_dir():
        raise SystemExit(f"no CIFAR-10 batches at {a.data}")
    seeds = [int(s) for s in a.seeds.split(",")]
    start, load_start = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        arms = [arm for arm in a.arms.split(",") if arm]
        unknown = sorted(set(arms) - set(ARMS))
        if unknown:
            raise SystemExit(f"unknown arm(s) {', '.join(unknown)}: choose from {', '.join(ARMS)}")
        jobs = [(arm, s) for s in seeds for arm in arms]
        with ThreadPoolExecutor(max_workers=a.jobs) as pool:
            runs = list(pool.map(lambda j: one(j[0], j[1], a, tmp), jobs))
        costs(runs)
    result = {"command": "python bench/bench_adder_evidence.py " + " ".join(sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "threads_per_run": 1, "jobs": a.jobs,
                          "load_average_at_start": load_start,
                          "load_average_at_end": os.getloadavg()},
              "budget": {"search_epochs": a.epochs, "retrain_epochs": a.retrain_epochs,
                         "training_images": a.limit, "search_preset": "small",
                         "retrain_preset": "small"},
              "labels": {"energy": "modelled (latency.energy)",
                         "simulated_ms": "simulated (roofline)"},
              "wall_s": time.perf_counter() - start, "summary": summary(runs), "runs": runs}
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
