"""Cost of a factorised search step (operations x activations) beside the plain DARTS step
and beside a naive joint supernet with one candidate per (operation, activation) pair.

Three supernets of the same shape (C, cells, batch), all eight DARTS operations per edge:

* `plain`: today's DARTS supernet (ReLU inside every convolution);
* `factorised`: `--activations` with the five built-in activations: alpha over the 8
  ops and beta over the 5 activations per edge; each source node computes the 5
  activations of its input once and every edge its own mixture of them (linear cost);
* `joint`: the naive form of the same space: every (op, activation) pair is a candidate
  of its own (4 convolutions x 5 activations + 4 ops without one = 24 per edge), one
  softmax over all of them, a convolution per pair (the M x N cost the factorisation
  avoids).

Method as `bench_search_step.py`: each configuration in a fresh process, random 32x32x3
inputs, torch.manual_seed(0), channels-last, 2 threads; warm-up iterations, then timed
ones (a first-order architecture step + a weight step); median wall time per iteration;
peak memory = the resident-set high-water mark after the timed iterations minus its value
after building the model and data.

    python bench/bench_factorised_step.py [--configs 8,5,32 16,5,32] [--timed 5]

Writes bench/results_factorised_step.json and prints the table rows on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).with_name("results_factorised_step.json")
ACTIVATIONS = ("relu", "silu", "leaky_relu", "elu", "hardswish")
MODES = ("plain", "factorised", "joint")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(mode: str, C: int, layers: int):  # type: ignore[no-untyped-def]
    from search_spaces.activations import pair_name
    from search_spaces.op_spec import op_spec
    from search_spaces.space import get_space

    space = get_space("darts")
    if mode == "plain":
        return space.build_supernet(C, layers, 10, 3)
    if mode == "factorised":
        return space.build_supernet(C, layers, 10, 3, activations=ACTIVATIONS)
    joint = [pair_name(op, act) if op_spec(op).takes_activation else op
             for op in space.op_names for act in ACTIVATIONS]
    joint = list(dict.fromkeys(joint))  # ops without an activation once
    edge_ops = {c: [joint] * space.num_edges for c in space.cell_types}
    return space.build_supernet(C, layers, 10, 3, edge_ops=edge_ops)


def child(mode: str, C: int, layers: int, batch: int, warmup: int, timed: int) -> dict:
    import torch
    from bench_search_step import search_step

    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = build(mode, C, layers).to(memory_format=torch.channels_last)
    arch_step, weight_step = search_step(net, batch)
    base = rss_mib()

    def iteration() -> None:
        arch_step()
        weight_step()

    for _ in range(warmup):
        iteration()
    times = []
    for _ in range(timed):
        t = time.perf_counter()
        iteration()
        times.append(time.perf_counter() - t)
    candidates = len(net.edge_ops["normal"][0])
    return {"mode": mode, "C": C, "layers": layers, "batch": batch,
            "candidates_per_edge": candidates,
            "arch_parameters": sum(p.numel() for p in net.arch_parameters()),
            "weight_parameters": sum(p.numel() for p in net.weight_parameters()),
            "median_s": statistics.median(times), "min_s": min(times),
            "peak_mib": rss_mib() - base, "timed": timed}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=["8,5,32", "16,5,32"],
                    help="C,layers,batch triples")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--timed", type=int, default=5)
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    if a.child:
        mode, *nums = a.child
        print(json.dumps(child(mode, *map(int, nums))))
        return 0
    rows = []
    start_load = os.getloadavg()
    for cfg in a.configs:
        C, layers, batch = map(int, cfg.split(","))
        for mode in MODES:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(C), str(layers), str(batch),
                 str(a.warmup), str(a.timed)], capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                raise SystemExit(proc.stderr[-2000:])
            row = json.loads(proc.stdout.splitlines()[-1])
            rows.append(row)
            print(f"C={C} layers={layers} batch={batch} {mode:10s} "
                  f"{row['median_s']:.3f} s/iteration, peak +{row['peak_mib']:.0f} MiB, "
                  f"{row['candidates_per_edge']} candidates/edge", file=sys.stderr, flush=True)
    for row in rows:
        plain = next(r for r in rows if r["mode"] == "plain" and r["C"] == row["C"]
                     and r["layers"] == row["layers"] and r["batch"] == row["batch"])
        row["time_vs_plain"] = row["median_s"] / plain["median_s"]
        row["memory_vs_plain"] = row["peak_mib"] / plain["peak_mib"] if plain["peak_mib"] else None
    result = {"command": "python bench/bench_factorised_step.py " + " ".join(sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "threads": 2, "load_average_at_start": start_load,
                          "load_average_at_end": os.getloadavg()},
              "activations": list(ACTIVATIONS), "rows": rows}
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    for r in rows:
        mem = f"{r['memory_vs_plain']:.2f}x" if r["memory_vs_plain"] else "-"
        print(f"| C={r['C']}, {r['layers']} cells, batch {r['batch']} | {r['mode']} | "
              f"{r['candidates_per_edge']} | {r['median_s']:.3f} | {r['time_vs_plain']:.2f}x | "
              f"{r['peak_mib']:.0f} | {mem} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
