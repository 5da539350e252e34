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

    python bench/bench_adder_evidence.py [--seeds 0,1,2 --epochs 2 --retrain-epochs 5
        --limit 1000 --jobs 2 --arms float,adder,searched --resume]

Writes bench/results_adder_evidence.json; each run is also appended to
bench/results_adder_evidence.runs.jsonl as it finishes (``--resume`` continues).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from evidence_runs import (  # noqa: E402
    Run,
    add_common_arguments,
    data_arguments,
    deployed_costs,
    nas_run,
    parse_jobs,
    run_jobs,
    write_results,
)

OUT = Path(__file__).with_name("results_adder_evidence.json")
ARMS = ("float", "adder", "searched")
PROFILES = ("raspi4", "p100")
KEYS = ("test_acc", "params", "multiplications", "additions",
        *(f"{p}_{k}" for p in PROFILES for k in ("energy_mj", "simulated_ms")))


def genotype_file(arm: str, folder: Path) -> Path:
    """DARTS_V2 (float) or its adder form, as a genotype.json."""
    from search_spaces.adder_ops import adder_form
    from search_spaces.genotype_library import DARTS_V2
    from search_spaces.space import get_space

    space = get_space("darts")
    g = DARTS_V2 if arm == "float" else space.rename_ops(DARTS_V2, adder_form)
    return space.save(g, folder / f"{arm}.json")


def one(arm: str, seed: int, a: argparse.Namespace, folder: Path) -> Run:
    common = data_arguments(a, seed)
    t0 = time.perf_counter()
    search: dict[str, Any] = {}
    if arm == "searched":
        source = folder / f"search-{seed}"
        search = nas_run("search", source, ["--space", "darts", "--ops", "darts+adder",
                                            "--preset", "small", "--epochs", str(a.epochs),
                                            *common])
    else:
        source = genotype_file(arm, folder)
    t1 = time.perf_counter()
    retrain = nas_run("retrain", folder / f"retrain-{arm}-{seed}",
                      ["--genotype", str(source), "--preset", "small", "--epochs",
                       str(a.retrain_epochs), "--no-measure", *common], ["--no-measure"])
    t2 = time.perf_counter()
    print(f"{arm:8s} seed {seed}: retrain test {retrain['test_acc']:.3f} ({t2 - t1:.0f} s"
          f"{f', search {t1 - t0:.0f} s' if search else ''})", file=sys.stderr, flush=True)
    return {"arm": arm, "seed": seed, "source": str(source),
            "search_val_acc": search.get("final_val_acc"),
            "search_seconds": t1 - t0 if search else None,
            "test_acc": retrain["test_acc"], "test_images": retrain["test_images"],
            "params": retrain["params"], "retrain_seconds": t2 - t1}


def costs(run: Run) -> None:
    """Multiplications and additions of the retrained network (adder layers' own apart),
    and modelled energy / simulated latency of the deployed network."""
    deployed_costs(run, PROFILES, {"multiplications": "multiplications",
                                   "total_additions": "additions",
                                   "additions": "adder_additions"})


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add_common_arguments(ap, ARMS, epochs=2, retrain_epochs=5, limit=1000, out=OUT)
    a = ap.parse_args()
    if not a.data.is_dir():
        raise SystemExit(f"no CIFAR-10 batches at {a.data}")
    folder = a.runs_dir or Path(tempfile.gettempdir()) / "nas-evidence" / a.out.stem
    folder.mkdir(parents=True, exist_ok=True)
    start, load_start = time.perf_counter(), os.getloadavg()
    run_jobs(parse_jobs(a, ARMS), lambda arm, seed: one(arm, seed, a, folder), costs, a)
    result = write_results(
        a, "bench_adder_evidence.py", ARMS, KEYS,
        {"labels": {"energy": "modelled (latency.energy)",
                    "simulated_ms": "simulated (roofline)"}},
        load_start, start)
    for arm, row in result["summary"].items():
        acc = row["test_acc"]
        sd = f" (sd {acc['sd']:.3f})" if acc["sd"] is not None else ""
        print(f"{arm:8s} seeds {row['seeds']}: test {acc['mean']:.3f}{sd}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
