"""Does the roofline simulator explain real CUDA measurements? Fitted on a Titan RTX.

Issue 3 item 3: where measured data of a simulated device's family exists, fit the
simulator's efficiency factors on it and report the fit. Our CUDA profiles (p100, h100,
jetson-tx2) are simulated; the NAS-Bench-201 data (`../shared/data/nb201-latency`) holds
real CUDA measurements: every NB201 cell's benchmark network (C=16, N=5, 3x32x32, batch 1)
on an NVIDIA Titan RTX. So: a Titan RTX profile from its published specifications, the
runtime as measured (eager PyTorch: no BatchNorm folding, no fusion), its per-kernel
overhead and efficiency factors fitted on `--train` random cells (least squares on log
latency, `latency.simulate.fit_efficiency`), then scored on `--test` other cells with
the product's predictor metrics, beside what the fit says about the device.

Published specifications (NVIDIA TITAN RTX product page / Turing whitepaper): 4,608 CUDA
cores at a 1,770 MHz boost clock = 16.3 TFLOP/s FP32; 24 GB GDDR6 on a 384-bit bus at
14 Gbit/s = 672 GB/s.

Tracing one network for its kernels takes ~0.1 s here, so the defaults (200 + 2,000
cells) take a few minutes on one core. Run: ``python bench/bench_roofline_cuda_fit.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from latency.hardware import HardwareProfile, parse_profile
from latency.predictor.metrics import report
from latency.simulate import deployed_network, fit_efficiency, simulate_latency, with_specs
from search_spaces.nb201 import parse_arch

DEFAULT_DATA = Path("/work/shared/data/nb201-latency/nb201_latency.csv")
OUT = Path(__file__).with_name("results_roofline_cuda_fit.json")
COLUMN = "titan_rtx_bs1_ms"
FITTED = ("kernel_overhead_us", "eff_compute", "eff_memory")

TITAN_RTX = {
    "name": "titan-rtx-roofline",
    "kind": "cuda",
    "source": "simulated",
    "device": "NVIDIA TITAN RTX (Turing TU102)",
    "notes": "eager PyTorch as in the NB201 measurements: every layer is its own kernel",
    "measurement": {"backend": "roofline-model", "batch_size": 1, "precision": "fp32"},
    "network": {"dataset": "cifar10", "layout": "cifar", "input": [3, 32, 32],
                "layers": 15, "channels": 16, "num_classes": 10},
    "specs": {
        "peak_fp32_tflops": 16.3,
        "memory_bandwidth_gbs": 672,
        "memory_gb": 24,
        "kernel_overhead_us": 5.0,   # starting values; the fit replaces them
        "eff_compute": 0.5,
        "eff_compute_depthwise": 0.25,
        "eff_memory": 0.75,
        "fold_batchnorm": False,
        "fuse_activation": False,
        "source": "NVIDIA TITAN RTX: 4,608 CUDA cores, 1,770 MHz boost, 24 GB GDDR6 384-bit "
                  "14 Gbit/s",
        "estimates": ["kernel_overhead_us", "eff_compute", "eff_compute_depthwise",
                      "eff_memory"],
    },
}


def simulate(arch: str, profile: HardwareProfile) -> float:
    model, shape = deployed_network(parse_arch(arch), profile)
    return simulate_latency(model, shape, profile).ms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if not args.data.exists():
        print(f"data file {args.data} not found", file=sys.stderr)
        return 2
    with args.data.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    perm = np.random.default_rng(args.seed).permutation(len(rows))
    train = [rows[i] for i in perm[:args.train]]
    test = [rows[i] for i in perm[args.train:args.train + args.test]]
    profile = parse_profile(TITAN_RTX, "bench titan-rtx profile")

    t0 = time.perf_counter()
    samples = []
    for r in train:
        model, shape = deployed_network(parse_arch(r["arch"]), profile)
        samples.append({"name": r["arch"], "model": model, "input_shape": shape,
                        "latency_ms": float(r[COLUMN])})
    fit = fit_efficiency(samples, profile, fit=FITTED)
    fit_s = time.perf_counter() - t0
    print(f"fitted on {len(train)} cells in {fit_s:.0f} s: "
          + ", ".join(f"{k}={v:.4g}" for k, v in fit.params.items())
          + f"; in-sample MAPE {fit.mape:.2f}%", flush=True)

    fitted = with_specs(profile, **fit.params)
    y = np.array([float(r[COLUMN]) for r in test])
    pred = np.array([simulate(r["arch"], fitted) for r in test])
    unfitted = np.array([simulate(r["arch"], profile) for r in test[:50]])
    held_out = report(y, pred)
    result = {
        "data": str(args.data), "column": COLUMN, "seed": args.seed,
        "n_train": len(train), "n_test": len(test),
        "profile": TITAN_RTX,
        "fitted": fit.params, "effective": fit.effective,
        "in_sample_mape": fit.mape / 100,
        "held_out": held_out,
        "starting_values_first_50_test_cells": report(y[:50], unfitted),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"held out ({len(test)} cells): MAPE {held_out['mape']:.3f}, within 5% "
          f"{held_out['within_5']:.3f}, within 10% {held_out['within_10']:.3f}, "
          f"tau {held_out['kendall_tau']:.3f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
