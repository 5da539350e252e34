"""Time and peak memory of AdderConv2d (forward + backward) beside nn.Conv2d of one shape.

Method: each (shape, layer, budget) runs in a fresh process at one thread,
torch.manual_seed(0), float32; one warm-up forward+backward, then timed repeats (median
of time.perf_counter()). Peak memory is the resident-set high-water mark (ru_maxrss)
after the timed repeats minus its value after building the layer and the input and
running the layer once on a tiny input (so one-time library set-up is not counted;
torch's CPU allocations are invisible to tracemalloc). Adder runs with the automatic
budget (default) and with a fixed 64 MiB budget.

    python bench/bench_adder.py                # writes bench/results_adder.json
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

# N, C (in = out), H (= W), kernel, stride
SHAPES = [(32, 16, 32, 3, 1), (32, 32, 16, 3, 1), (64, 64, 8, 3, 1), (8, 16, 32, 5, 2)]
WARMUP, REPEATS = 1, 5
OUT = Path(__file__).resolve().parent / "results_adder.json"


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(shape: tuple[int, ...], layer: str) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from search_spaces.adder import DEFAULT_MEMORY_BUDGET_BYTES, AdderConv2d

    torch.set_num_threads(1)
    torch.manual_seed(0)
    n, c, hw, k, s = shape
    pad = k // 2
    m: torch.nn.Module
    if layer == "conv":
        m = torch.nn.Conv2d(c, c, k, stride=s, padding=pad, bias=False)
    else:
        budget = DEFAULT_MEMORY_BUDGET_BYTES if layer == "adder_64MiB" else None
        m = AdderConv2d(c, c, k, stride=s, padding=pad, memory_budget_bytes=budget)
    # initialise the libraries (oneDNN etc.) on a tiny input first, so the peak measures
    # this shape's tensors rather than one-time library set-up
    m(torch.randn(1, c, k + 1, k + 1, requires_grad=True)).sum().backward()
    m.zero_grad(set_to_none=True)
    x = torch.randn(n, c, hw, hw, requires_grad=True)
    base = rss_mib()
    times = []
    for i in range(WARMUP + REPEATS):
        t0 = time.perf_counter()
        y = m(x)
        y.backward(torch.ones_like(y))
        dt = time.perf_counter() - t0
        del y
        x.grad = None
        m.zero_grad(set_to_none=True)
        if i >= WARMUP:
            times.append(dt)
    return {"ms": 1000 * statistics.median(times), "peak_mib": rss_mib() - base,
            "peak_abs_mib": rss_mib()}


def run_child(shape: tuple[int, ...], layer: str) -> dict:
    args = [sys.executable, __file__, "--child", ",".join(map(str, shape)), "--layer", layer]
    res = subprocess.run(args, capture_output=True, text=True, check=True)
    out: dict = json.loads(res.stdout)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--child")
    p.add_argument("--layer", default="conv", choices=["conv", "adder", "adder_64MiB"])
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(tuple(map(int, a.child.split(","))), a.layer)))
        return
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    rows = []
    for shape in SHAPES:
        conv, adder, adder64 = (run_child(shape, lay) for lay in ("conv", "adder", "adder_64MiB"))
        n, c, hw, k, s = shape
        rows.append({
            "shape": {"N": n, "C_in": c, "C_out": c, "HW": hw, "kernel": k, "stride": s,
                      "padding": k // 2},
            "conv_ms": conv["ms"], "adder_ms": adder["ms"],
            "time_ratio": adder["ms"] / conv["ms"],
            "conv_peak_mib": conv["peak_mib"], "adder_peak_mib": adder["peak_mib"],
            "peak_ratio": adder["peak_mib"] / conv["peak_mib"],
            "adder_64MiB_ms": adder64["ms"], "adder_64MiB_peak_mib": adder64["peak_mib"],
            "peak_ratio_64MiB": adder64["peak_mib"] / conv["peak_mib"],
        })
        print(f"{shape}: conv {conv['ms']:.1f} ms {conv['peak_mib']:.1f} MiB | adder "
              f"{adder['ms']:.1f} ms {adder['peak_mib']:.1f} MiB | adder 64MiB "
              f"{adder64['ms']:.1f} ms {adder64['peak_mib']:.1f} MiB", file=sys.stderr)
    import torch

    report = {
        "command": "python bench/bench_adder.py",
        "method": (__doc__ or "").split("\n\n")[1].replace("\n", " "),
        "warmup": WARMUP, "repeats": REPEATS, "threads": 1, "dtype": "float32",
        "torch": torch.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "loadavg_start": load0, "loadavg_end": os.getloadavg(),
        "wall_s": time.perf_counter() - t0, "results": rows,
    }
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
