"""Float against DSQ k-bit and IR-Net binary on real images: one cell retrained in float, in
8-, 4- and 2-bit DSQ form and in binary form, and a mixed-precision search with a latency
weight on `raspi4`, on the CIFAR-10 subset in ``../shared/data/cifar10-subset``, same
budget and seeds.

Per seed (``--seeds``, default 0, 1, 2), exactly what a user runs:

* `float`: ``nas --threads 1 retrain --genotype DARTS_V2 --dataset cifar10 --data-dir D
  --preset small --epochs R --limit N --seed S --no-measure`` (8 cells, C=16);
* `dsq8`, `dsq4`, `dsq2`: the same with every convolution of DARTS_V2 its b-bit DSQ mirror
  (`dsq_ops.quantized_form`: weights and activations at b bits), written to a file first;
* `binary`: the same with every convolution the dense IR-Net binary conv of its kernel
  size (`binary_ops.binary_form`);
* `searched`: ``nas --threads 1 search --space darts --ops darts+dsq4+binary --hardware
  raspi4 --latency-weight W --preset small --epochs E --limit N --seed S`` (5 cells, C=8),
  then the retrain above of its genotype.

Test accuracy on the subset's 1,017 test images, which no run trains on. Per network:
parameters, MACs and bit-operations per image of the retrained network (32x32; a float MAC
is 32x32 = 1,024 bit-operations, a w4a4 MAC 16, a binary MAC 1), and on the ARM profiles
(`raspi4`, `pixel4`) the simulated latency (roofline with the profiles' published low-bit
kernel speed-ups) and the modelled arithmetic energy of the deployed network: all
MODELLED, none measured.

    python bench/bench_lowbit_evidence.py [--seeds 0,1,2 --epochs 2 --retrain-epochs 5
        --limit 1000 --jobs 2 --resume]

Writes bench/results_lowbit_evidence.json; each run is also appended to
bench/results_lowbit_evidence.runs.jsonl as it finishes (``--resume`` continues).
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

OUT = Path(__file__).with_name("results_lowbit_evidence.json")
FORMS = ("float", "dsq8", "dsq4", "dsq2", "binary")
ARMS = (*FORMS, "searched")
PROFILES = ("raspi4", "pixel4")
SEARCH_OPS = "darts+dsq4+binary"
KEYS = ("test_acc", "params", "macs", "bit_operations",
        *(f"{p}_{k}" for p in PROFILES for k in ("simulated_ms", "energy_mj")))


def genotype_file(form: str, folder: Path) -> Path:
    """DARTS_V2 in `form` (float, dsqB or binary), as a genotype.json."""
    from search_spaces.binary_ops import binary_form
    from search_spaces.dsq_ops import quantized_form
    from search_spaces.genotype_library import DARTS_V2
    from search_spaces.space import get_space

    space = get_space("darts")
    if form == "float":
        g = DARTS_V2
    elif form == "binary":
        g = space.rename_ops(DARTS_V2, binary_form)
    else:
        bits = int(form.removeprefix("dsq"))
        g = space.rename_ops(DARTS_V2, lambda op: quantized_form(op, bits))
    return space.save(g, folder / f"{form}.json")


def one(arm: str, seed: int, a: argparse.Namespace, folder: Path) -> Run:
    common = data_arguments(a, seed)
    t0 = time.perf_counter()
    search: dict[str, Any] = {}
    if arm == "searched":
        source = folder / f"search-{seed}"
        search = nas_run("search", source, [
            "--space", "darts", "--ops", SEARCH_OPS, "--hardware", "raspi4",
            "--latency-weight", str(a.latency_weight), "--preset", "small", "--epochs",
            str(a.epochs), *common])
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
    """MACs, bit-operations and MACs per precision of the retrained network, and simulated
    latency / modelled energy of the deployed network on the ARM profiles."""
    deployed_costs(run, PROFILES, {"macs": "macs", "bit_operations": "bit_operations",
                                   "macs_by_precision": "macs_by_precision"})


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add_common_arguments(ap, ARMS, epochs=2, retrain_epochs=5, limit=1000, out=OUT)
    ap.add_argument("--latency-weight", type=float, default=0.5,
                    help="the searched arm's --latency-weight (raspi4)")
    a = ap.parse_args()
    if not a.data.is_dir():
        raise SystemExit(f"no CIFAR-10 batches at {a.data}")
    folder = a.runs_dir or Path(tempfile.gettempdir()) / "nas-evidence" / a.out.stem
    folder.mkdir(parents=True, exist_ok=True)
    start, load_start = time.perf_counter(), os.getloadavg()
    jobs = parse_jobs(a, ARMS)
    run_jobs(jobs, lambda arm, seed: one(arm, seed, a, folder), costs, a)
    result = write_results(
        a, "bench_lowbit_evidence.py", ARMS, KEYS,
        {"search": {"ops": SEARCH_OPS, "hardware": "raspi4",
                    "latency_weight": a.latency_weight},
         "labels": {"simulated_ms": "simulated (roofline, published low-bit speed-ups)",
                    "energy_mj": "modelled (latency.energy)"}},
        load_start, start)
    for arm, row in result["summary"].items():
        acc = row["test_acc"]
        sd = f" (sd {acc['sd']:.3f})" if acc["sd"] is not None else ""
        print(f"{arm:8s} seeds {row['seeds']}: test {acc['mean']:.3f}{sd}, "
              f"raspi4 {row['raspi4_simulated_ms']['mean']:.2f} ms (simulated)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
