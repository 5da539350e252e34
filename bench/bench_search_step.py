"""Time one first-order search iteration (architecture step + weight step) and its memory.

Method (the same as our harness for the reference DARTS code, so figures compare):
each configuration runs in a fresh process; random 32x32x3 inputs, 10 classes,
torch.manual_seed(0); the full DARTS op set on every edge; warm-up iterations, then timed
ones; median and minimum of each phase with time.perf_counter(); peak memory is the
resident-set high-water mark (ru_maxrss) after the timed iterations minus its value after
building the model and data. The second-order architecture step is timed in its own
process so its memory does not mix with the first-order figure.

    python bench/bench_search_step.py                 # JSON on stdout
    python bench/bench_search_step.py --markdown      # table rows for BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = [(8, 5, 32, 3, 10), (16, 8, 64, 2, 5)]  # C, layers, batch, warm-up, timed


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def search_step(net, batch: int, second_order: bool = False):  # type: ignore[no-untyped-def]
    """(architecture step, weight step) of the bilevel loop on a channels-last supernet
    `net`, on random 32x32x3 batches of 10 classes, with the DARTS optimiser settings:
    what every search-step benchmark times."""
    import torch
    import torch.nn.functional as F

    from nas.search.architect import Architect

    cl = torch.channels_last
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    arch = Architect(net, 3e-4, (0.5, 0.999), 1e-3, 0.9, 3e-4, second_order=second_order)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=cl)
    y = torch.randint(0, 10, (batch,))
    xv = torch.randn(batch, 3, 32, 32).contiguous(memory_format=cl)
    yv = torch.randint(0, 10, (batch,))

    def arch_step() -> None:
        arch.step(x, y, xv, yv, 0.025, opt)

    def weight_step() -> None:
        opt.zero_grad(set_to_none=True)
        w = {k: v.detach() for k, v in net.arch_weights().items()}
        loss = F.cross_entropy(net(x, w), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
        opt.step()

    return arch_step, weight_step


def child(C: int, layers: int, batch: int, warmup: int, timed: int, mode: str) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from search_spaces.space import get_space

    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = get_space("darts").build_supernet(C, layers, 10, 3).to(
        memory_format=torch.channels_last)
    arch_step, weight_step = search_step(net, batch, second_order=mode == "second")
    base = rss_mib()

    arch_t, weight_t = [], []
    for i in range(warmup + timed):
        t0 = time.perf_counter()
        arch_step()
        t1 = time.perf_counter()
        if mode == "first":
            weight_step()
        t2 = time.perf_counter()
        if i >= warmup:
            arch_t.append(t1 - t0)
            weight_t.append(t2 - t1)
    out = {
        "C": C, "layers": layers, "batch": batch, "warmup": warmup, "timed": timed,
        "mode": mode,
        "arch_step_s": statistics.median(arch_t), "arch_step_min_s": min(arch_t),
        "peak_rss_mib": rss_mib() - base, "peak_rss_abs_mib": rss_mib(),
    }
    if mode == "first":
        it = [a + w for a, w in zip(arch_t, weight_t, strict=True)]
        out.update({
            "weight_step_s": statistics.median(weight_t), "weight_step_min_s": min(weight_t),
            "iteration_s": statistics.median(it), "iteration_min_s": min(it),
        })
    return out


def run_child(cfg: tuple[int, ...], mode: str) -> dict:
    args = [sys.executable, __file__, "--child", ",".join(map(str, cfg)), "--mode", mode]
    res = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child")
    p.add_argument("--mode", default="first", choices=["first", "second"])
    p.add_argument("--second-order", action="store_true", help="also time the 2nd-order step")
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(*map(int, a.child.split(",")), mode=a.mode)))
        return
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    results = [run_child(c, "first") for c in CONFIGS]
    if a.second_order:
        results.append(run_child(CONFIGS[0][:3] + (3, 10), "second"))
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    import torch

    report = {
        "results": results, "torch": torch.__version__, "threads": 2, "cpu": cpu,
        "python": platform.python_version(),
        "loadavg_start": load0, "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
    }
    if a.markdown:
        for r in results:
            cfg = f"C={r['C']}, {r['layers']} cells, batch {r['batch']}"
            if r["mode"] == "first":
                print(f"| {cfg} | {r['arch_step_s']:.3f} ({r['arch_step_min_s']:.3f}) | "
                      f"{r['weight_step_s']:.3f} ({r['weight_step_min_s']:.3f}) | "
                      f"{r['iteration_s']:.3f} | {r['peak_rss_mib']:.0f} |")
            else:
                print(f"| {cfg}, second order | {r['arch_step_s']:.3f} "
                      f"({r['arch_step_min_s']:.3f}) | | | {r['peak_rss_mib']:.0f} |")
    print(json.dumps(report, indent=1), file=sys.stderr if a.markdown else sys.stdout)


if __name__ == "__main__":
    main()
