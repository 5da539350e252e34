"""Our first-order DARTS search step beside NNI 3.0's, same space, data, batch and size.

Each arm runs in a fresh subprocess, and the arms alternate (ours, NNI, NNI, ours, ...)
so that a shared machine's load falls on both alike. Both arms: the DARTS cell space
(8 primitives, 4 nodes, normal + reduce cells, the DARTS CIFAR stem), C channels and
`layers` cells (reductions at 1/3 and 2/3), 10 classes, the same batches of the CIFAR-10
subset (or the embedded digits, grey repeated to 3 channels), torch.manual_seed(0),
2 threads, first-order DARTS: an architecture step on a validation batch (Adam 3e-4,
betas (0.5, 0.999), weight decay 1e-3) then a weight step on a training batch (SGD lr
0.025, momentum 0.9, weight decay 3e-4, gradient clip 5).

- ours: the supernet of `nas search` (channels-last, batched mixed ops), driven as
  `nas.search.loop` drives it (`Architect.step`, then the weight step), as in
  bench/bench_search_step.py but on real batches.
- nni: `nni.nas.hub.pytorch.DARTS(width=C, num_cells=layers, dataset='cifar')` mutated by
  `nni.nas.strategy.DARTS`, trained by its `DartsLightningModule` under a Lightning
  Trainer (NNI's `Classification` evaluator with the same SGD settings); a step is timed
  from Lightning's `on_train_batch_start` to `on_train_batch_end` (both phases, NNI's
  per-step logging included, the data loader's fetch excluded).
- nni-latency (optional): the same with our latency penalty (`nas.nni_bridge`) added.

Seconds per step: median, min, max and interquartile range of the timed steps (warm-up
steps dropped) pooled over the repeats, plus each repeat's median. Peak memory: the
child's resident-set high-water mark (ru_maxrss) after the timed steps, minus its value
once the model and data were built (and, for NNI, Lightning imported), and absolute.

    python bench/bench_nni_darts.py                        # writes the results files
    python bench/bench_nni_darts.py --arms ours,nni,nni-latency --repeats 3

Needs NNI 3.0 and pytorch-lightning 2.6.6 beside this project (the `nni` extra).
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
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "cifar10-subset"
ARMS = ("ours", "nni", "nni-latency")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batches(data: str, data_dir: str, batch: int, n: int) -> tuple[Any, Any]:
    """`n` train and `n` val batches (disjoint images), 3 x H x W, in a fixed order."""
    import torch

    sys.path.insert(0, str(ROOT))
    from nas.data.registry import load_dataset

    need = 2 * batch * n
    if data == "cifar10":
        d = load_dataset("cifar10", data_dir, limit=need)
    else:
        d = load_dataset("digits", None)
    x, y = d.train_x, d.train_y
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    idx = torch.arange(need) % x.shape[0]
    x, y = x[idx].contiguous(), y[idx]
    tr = [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(n)]
    off = batch * n
    va = [(x[off + i * batch:off + (i + 1) * batch], y[off + i * batch:off + (i + 1) * batch])
          for i in range(n)]
    return tr, va


def child_ours(a: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from nas.search.architect import Architect
    from search_spaces.space import get_space

    cl = torch.channels_last
    n = a.warmup + a.timed
    tr, va = batches(a.data, a.data_dir, a.batch, n)
    torch.manual_seed(0)
    net = get_space("darts").build_supernet(a.C, a.layers, 10, 3).to(memory_format=cl)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    arch = Architect(net, 3e-4, (0.5, 0.999), 1e-3, 0.9, 3e-4, second_order=False)
    params = sum(p.numel() for p in net.weight_parameters())
    alphas = sum(p.numel() for p in net.arch_parameters())
    base = rss_mib()
    times = []
    net.train()
    for (x, y), (xv, yv) in zip(tr, va, strict=True):
        x, xv = x.contiguous(memory_format=cl), xv.contiguous(memory_format=cl)
        t0 = time.perf_counter()
        arch.step(x, y, xv, yv, 0.025, opt)
        opt.zero_grad(set_to_none=True)
        w = {k: v.detach() for k, v in net.sample_arch_weights().items()}
        loss = F.cross_entropy(net(x, w), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    return {"times": times, "base_rss_mib": base, "peak_rss_abs_mib": rss_mib(),
            "weight_params": params, "arch_params": alphas, "layout": "channels_last"}


def child_nni(a: argparse.Namespace, with_latency: bool) -> dict[str, Any]:
    import torch

    from nas.nni_bridge.example import build_evaluator, quiet_nni

    quiet_nni()
    import pytorch_lightning as pl
    from nni.nas.hub.pytorch import DARTS as NniDartsSpace
    from nni.nas.strategy import DARTS

    n = a.warmup + a.timed
    tr, va = batches(a.data, a.data_dir, a.batch, n)
    cat = (torch.cat([x for x, _ in tr]), torch.cat([y for _, y in tr]))
    vcat = (torch.cat([x for x, _ in va]), torch.cat([y for _, y in va]))
    times: list[float] = []

    class Timer(pl.Callback):  # type: ignore[misc]
        def on_train_batch_start(self, *args: Any) -> None:
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            times.append(time.perf_counter() - self.t0)

    torch.manual_seed(0)
    evaluator = build_evaluator(cat, vcat, a.batch, n, callbacks=[Timer()])
    space = NniDartsSpace(width=a.C, num_cells=a.layers, dataset="cifar")
    kwargs = {"arc_learning_rate": 3e-4, "gradient_clip_val": 5.0}
    if with_latency:
        from nas.nni_bridge import latency_darts

        strategy = latency_darts(hardware=a.hardware, weight=a.latency_weight, **kwargs)
    else:
        strategy = DARTS(**kwargs)
    supernet = strategy.mutate_model(space)
    evaluator = strategy.mutate_evaluator(evaluator)
    from nas.nni_bridge import find_cell_alphas

    cell_alphas = find_cell_alphas(supernet).alphas.values()
    arch = {id(p) for p in cell_alphas}
    params = sum(p.numel() for p in supernet.parameters() if id(p) not in arch)
    alphas = sum(p.numel() for p in cell_alphas)
    base = rss_mib()
    evaluator.evaluate(supernet)
    if len(times) != n:
        raise RuntimeError(f"NNI ran {len(times)} steps, expected {n}")
    peak = rss_mib()
    import nni

    out = {"times": times, "base_rss_mib": base, "peak_rss_abs_mib": peak,
           "weight_params": params, "arch_params": alphas, "layout": "contiguous (NCHW)",
           "nni": nni.__version__, "pytorch_lightning": pl.__version__}
    if with_latency:
        # the penalty alone, as the architecture step calls it: find the alphas, predict,
        # backpropagate into them
        latency, calls = strategy.penalty.latency, []
        for _ in range(20):
            t0 = time.perf_counter()
            term, _ms = latency.evaluate(evaluator.module)
            term.backward()
            calls.append(time.perf_counter() - t0)
        out["penalty_call_s"] = statistics.median(calls)
    return out


def child(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(a.threads)
    out = (child_ours(a) if a.child == "ours"
           else child_nni(a, with_latency=a.child == "nni-latency"))
    t = out.pop("times")
    out.update({"arm": a.child, "step_s": t, "timed_s": t[a.warmup:],
                "peak_rss_mib": out["peak_rss_abs_mib"] - out["base_rss_mib"],
                "torch": torch.__version__, "threads": torch.get_num_threads()})
    return out


def run_child(a: argparse.Namespace, arm: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as f:
        args = [sys.executable, __file__, "--child", arm, "--child-out", f.name,
                "--data", a.data, "--data-dir", a.data_dir, "--C", str(a.C),
                "--layers", str(a.layers), "--batch", str(a.batch), "--warmup", str(a.warmup),
                "--timed", str(a.timed), "--threads", str(a.threads),
                "--hardware", a.hardware, "--latency-weight", str(a.latency_weight)]
        t0 = time.perf_counter()
        res = subprocess.run(args, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"arm {arm} failed:\n{res.stderr[-3000:]}")
        out = json.loads(Path(f.name).read_text())
        out["process_wall_s"] = time.perf_counter() - t0
        return out


def _q(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=4, method="inclusive")[int(q * 4) - 1]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    t = [s for r in runs for s in r["timed_s"]]
    return {
        "median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
        "q1_s": _q(t, 0.25), "q3_s": _q(t, 0.75), "steps": len(t),
        "repeat_medians_s": [statistics.median(r["timed_s"]) for r in runs],
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "peak_rss_abs_mib": max(r["peak_rss_abs_mib"] for r in runs),
        "weight_params": runs[0]["weight_params"], "arch_params": runs[0]["arch_params"],
        "layout": runs[0]["layout"],
        **({"penalty_call_s": statistics.median(r["penalty_call_s"] for r in runs)}
           if "penalty_call_s" in runs[0] else {}),
    }


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    data = ("the CIFAR-10 subset (`../shared/data/cifar10-subset`, 32x32x3)"
            if s["data"] == "cifar10" else "the embedded digits (8x8, grey repeated to 3 "
            "channels)")
    names = {"ours": "ours (`nas search`'s supernet)", "nni": "NNI 3.0 DARTS",
             "nni-latency": f"NNI 3.0 DARTS + our latency penalty ({s['hardware']}, "
                            f"weight {s['latency_weight']:g})"}
    lines = [
        "## Search step: ours vs NNI 3.0's DARTS (`bench/bench_nni_darts.py`)",
        "",
        f"Machine: {report['cpu']}, {report['cores']} cores (shared with other work; load "
        f"average {' '.join(report['loadavg_start'])} at the start, "
        f"{' '.join(report['loadavg_end'])} at the end), {s['threads']} torch thread(s), "
        f"Python {report['python']}, torch {report['torch']}, NNI {report.get('nni', '?')}, "
        f"pytorch-lightning {report.get('pytorch_lightning', '?')}.",
        "",
        f"Command: `{report['command']}` (in a venv with the `nni` extra). Same DARTS cell "
        f"space, C={s['C']}, {s['layers']} cells, batch {s['batch']}, {data}, "
        "first-order DARTS (architecture step on a validation batch, then the weight step); "
        f"{s['warmup']} warm-up + {s['timed']} timed steps per run, {s['repeats']} runs per "
        "arm, each in a fresh process, arms alternating.",
        "",
        "| arm | s / step, median | IQR | min - max | run medians | peak RSS over build "
        "(MiB) | peak RSS (MiB) | weights | alphas |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, r in report["summary"].items():
        meds = ", ".join(f"{m:.2f}" for m in r["repeat_medians_s"])
        lines.append(
            f"| {names.get(arm, arm)} | {r['median_s']:.3f} | {r['q1_s']:.3f} - "
            f"{r['q3_s']:.3f} | {r['min_s']:.3f} - {r['max_s']:.3f} | {meds} | "
            f"{r['peak_rss_mib']:.0f} | {r['peak_rss_abs_mib']:.0f} | "
            f"{r['weight_params']:,} | {r['arch_params']:,} |")
    if "ours" in report["summary"] and "nni" in report["summary"]:
        ratio = report["summary"]["nni"]["median_s"] / report["summary"]["ours"]["median_s"]
        mem = (report["summary"]["nni"]["peak_rss_mib"]
               / max(report["summary"]["ours"]["peak_rss_mib"], 1e-9))
        lines += ["", f"NNI's step takes {ratio:.2f}x ours (medians); its peak memory over "
                  f"the build is {mem:.2f}x ours."]
    call = report["summary"].get("nni-latency", {}).get("penalty_call_s")
    if call is not None:
        lines += ["", f"The penalty itself (finding NNI's alphas, our predictor's forward "
                  f"and backward) takes {1000 * call:.0f} ms a call (median of 20 calls "
                  "after the search, in the nni-latency processes); a gap between the two "
                  "NNI rows beyond that is the machine's load moving between runs."]
    lines += [
        "",
        "Caveats:",
        "- A shared 2-core machine: absolute seconds move with other work; the arms "
        "alternate so the ratio is the figure to read, and the spread is shown. With "
        "other work on the machine, 2 torch threads made our step about 5x slower than 1 "
        "(18.4 vs 3.3 s, OpenMP threads waiting on each other), hence "
        f"{s['threads']} thread(s) here; bench/results_search_step.json has our step on "
        "an idle machine with 2 threads.",
        "- Not the same code path, by design: ours is channels-last with batched mixed "
        "ops; NNI computes each op of each edge separately, stacks the outputs with a "
        "zero tensor for its 'unused' column, and runs under Lightning's manual-"
        "optimisation loop, whose per-step hooks and metric logging (loss, accuracy) are "
        "inside NNI's timed step. Our step has no logging.",
        "- NNI's search cells keep affine batch norm in their ops (the DARTS reference and "
        "ours use affine-free BN in the search network), hence its slightly larger weight "
        "count.",
        "- Memory is the process RSS high-water mark (ru_maxrss), which includes "
        "allocator caching; the 'over build' column subtracts the RSS after building "
        "the model and data, which for NNI includes importing NNI and Lightning.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=ARMS)
    p.add_argument("--child-out")
    p.add_argument("--arms", default="ours,nni")
    p.add_argument("--data", default="cifar10", choices=["cifar10", "digits"])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--timed", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per arm (default 1: on a shared 2-core machine, 2 "
                   "OpenMP threads wait on each other whenever other work holds a core)")
    p.add_argument("--hardware", default="p100", help="predictor of the nni-latency arm")
    p.add_argument("--latency-weight", type=float, default=1.0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results_nni_darts.json"))
    p.add_argument("--md", default=str(ROOT / "bench" / "results_nni_darts.md"))
    p.add_argument("--markdown-from", metavar="JSON",
                   help="only rewrite the Markdown section from a results file")
    a = p.parse_args()
    if a.markdown_from:
        Path(a.md).write_text(markdown(json.loads(Path(a.markdown_from).read_text())))
        return
    if a.child:
        Path(a.child_out).write_text(json.dumps(child(a)))
        return
    arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    bad = [x for x in arms if x not in ARMS]
    if bad:
        raise SystemExit(f"unknown arm(s) {bad}; known: {', '.join(ARMS)}")
    if a.data == "cifar10" and not Path(a.data_dir).is_dir():
        print(f"no CIFAR-10 subset at {a.data_dir}; using the embedded digits",
              file=sys.stderr)
        a.data = "digits"
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    for r in range(a.repeats):
        for arm in (arms if r % 2 == 0 else arms[::-1]):
            print(f"repeat {r + 1}/{a.repeats}: {arm} ...", file=sys.stderr, flush=True)
            out = run_child(a, arm)
            runs[arm].append(out)
            print(f"  median {statistics.median(out['timed_s']):.3f} s/step, peak RSS "
                  f"+{out['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
    import torch

    extra = next((r for arm in arms for r in runs[arm] if "nni" in r), {})
    settings = {k: getattr(a, k) for k in ("data", "C", "layers", "batch", "warmup", "timed",
                                           "repeats", "threads", "hardware",
                                           "latency_weight")}
    cmd = "python bench/bench_nni_darts.py " + " ".join(sys.argv[1:])
    report = {
        "settings": settings, "arms": arms, "summary": {arm: summarise(runs[arm])
                                                         for arm in arms},
        "runs": runs, "cpu": cpu_name(), "cores": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__,
        "nni": extra.get("nni"), "pytorch_lightning": extra.get("pytorch_lightning"),
        "loadavg_start": load0, "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
        "command": cmd.strip(),
    }
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    Path(a.md).write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
