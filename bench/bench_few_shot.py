"""A new device from a few samples: leave-one-device-out over 15 measured NB201 devices.

Data: ``/work/shared/data/nb201-latency/`` (``--data``): all 15,625 NAS-Bench-201 cells
measured on 15 devices (`nb201_latency.csv`: 3, `nb201_latency_more_devices.csv`: 12).

Protocol (issue 15, item 5). For every device D:

* the prior is learned from the other 14 devices only (`DevicePrior.from_matrix`; its
  own hyper-parameters are chosen inside, by leave-one-device-out over those 14, so
  nothing is tuned on D);
* D is adapted from k = 5, 10, 20, 50 of its cells, drawn at random (seeded, `DRAWS`
  draws per k, the same draws for every method);
* every method is scored on ALL the other cells of D (about 15,600): Spearman, Kendall
  tau, share within 10 %, MAPE. The table reports, per method and k, the mean and the
  minimum over the 15 devices of each device's mean over its draws, and the spread
  over draws (sd over the draws of the 15-device mean).

Near-zero ARM latencies: on raspi4 (276 cells) and pixel3 (283) the published latency
of some cells is 0.003-0.6 ms; every one is a cell whose output does not depend on its
input (no non-`none` path from input to output), which those toolchains fold to a
constant, so it is not the latency of a network. Latencies below `MIN_MS` (1 ms) are
treated as not measured: left out of the prior, never drawn as a sample, never scored
(the JSON records how many per device). The other 65 / 58 disconnected cells of those
devices measured at >= 1 ms are kept.

Methods (all but the baselines learn from the 14 prior devices):

* `prior_mix` (shipped, `latency.predictor.prior`): Bayesian linear regression of
  log-latency on `PriorFeatures` (bias, the predictor's features, cross-edge op pairs:
  464 numbers for NB201) under a mixture prior over the per-device weight vectors (one
  global Gaussian + one component centred on each prior device), components weighted
  by evidence; Student-t likelihood (nu 4, by reweighting), as every Bayesian variant
  below. Encoding-based: serves soft encodings in a search.
* `prior_mix_gaussian`: the same with a Gaussian likelihood (what outliers cost).
* `prior_gauss`: the same, the global Gaussian component only (rho = 0).
* `prior_percost`: the same Bayesian regression on per-(edge, op) costs only (the
  30-entry one-hot and a bias): candidate (c) in its plainest form.
* `basis_nnls`, `basis_ridge`: log-latency of D as bias + a combination of the 14 prior
  devices' measured log-latencies of the same cell, weights by non-negative least
  squares / ridge shrunk towards equal weights (lambda 0.1). Table-based: only NB201
  cells of the table (missing ARM entries imputed from that device's own fit).
* `lowrank_blr`: the cells x devices log-latency table's rank-6 SVD (from the 14), D's
  loading and bias fitted by Bayesian linear regression with the
  prior devices' loadings' mean and covariance. Table-based.
* baselines on the same few samples, no prior: `flops` (ranking by MACs of the
  benchmark network, `count_macs` on `NB201_SPACE.build_network`, cached per
  (#conv1x1, #conv3x3), which fixes the MACs: checked on random cells; within-10 % and
  MAPE from a least-squares line ms = a + b MACs on the k samples), `ridge_onehot` (the
  product's ridge baseline: per-(edge, op) costs in ms, alpha 1e-2), `opcount_ls`
  (ms = bias + per-op count costs + per-op costs of ops on live edges, least squares:
  the roofline simulator's form on NB201, where every kernel of one op costs the same,
  with its free numbers replaced by one free cost per op, a superset of its 3).
* reference, not few-shot: `full_mlp_1000`, the product's `LatencyMLP` (default config,
  trained as `nas predictor train` does, with equivalent cells) on 1,000 random cells of
  D, scored on all its other cells; one split (seed 0) per device. ``--no-mlp`` skips.

Published figures, theirs, for context (their protocols differ in devices and test
sets): HELP (NeurIPS'21) mean Spearman 0.932 over six NB201 devices from 10 samples;
NASFLAT (MLSys'24) about 0.97 on a Raspberry Pi 4 and a Xeon Gold 6240 from 20.

Run: ``python bench/bench_few_shot.py`` (about 10-12 minutes on one shared core:
15 priors with their inner selection ~5 min, 15 reference MLPs ~4 min, the rest ~1 min).
Writes `bench/few_shot.json` and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls
from scipy.stats import kendalltau, spearmanr

from latency.predictor.augment import with_equivalents
from latency.predictor.baselines import make_baseline
from latency.predictor.features import layout_for_space
from latency.predictor.mlp import LatencyMLP, MLPConfig
from latency.predictor.prior import DevicePrior, PriorConfig, _posterior
from search_spaces.complexity import count_macs
from search_spaces.nb201 import NB201_OPS, parse_arch
from search_spaces.nb201_space import NB201_SPACE

DEFAULT_DATA = Path("/work/shared/data/nb201-latency")
FILES = ("nb201_latency.csv", "nb201_latency_more_devices.csv")
OUT = Path(__file__).with_name("few_shot.json")
MIN_MS = 1.0
KS = (5, 10, 20, 50)
DRAWS = 5
SEED = 2024
N_FULL = 1000
LOWRANK = 6
BASIS_LAMBDA = 0.1
NU = PriorConfig().robust_nu
METHODS = ("prior_mix", "prior_mix_gaussian", "prior_gauss", "prior_percost", "basis_nnls",
           "basis_ridge", "lowrank_blr", "flops", "ridge_onehot", "opcount_ls")
TARGETS = {20: {"mean": 0.95, "min": 0.90}, 10: {"mean": 0.932}}


def load(data: Path) -> tuple[list[str], np.ndarray, list[str]]:
    archs: list[str] | None = None
    cols: list[str] = []
    mats = []
    for name in FILES:
        with (data / name).open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        a = [r["arch"] for r in rows]
        if archs is not None and a != archs:
            raise SystemExit(f"{name}: cells not in the same order as {FILES[0]}")
        archs = a
        c = [k for k in rows[0] if k.endswith("_ms")]
        cols += c
        mats.append(np.array([[float(r[k]) for k in c] for r in rows]))
    assert archs is not None
    return archs, np.concatenate(mats, axis=1), cols


def load_encoded(data: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(arch strings, their NB201 encodings (float64), latencies cells x devices, device
    columns): what this benchmark and `build_nb201_prior.py` both start from."""
    archs, Y, cols = load(data)
    X = np.stack([NB201_SPACE.encode(a) for a in archs]).astype(np.float64)
    return archs, X, Y, cols


def macs_per_cell(archs: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """MACs of the benchmark network (C=16, N=5, CIFAR-10) of every cell, computed once
    per (#conv1x1, #conv3x3) with `count_macs` and checked on random other cells."""
    cache: dict[tuple[int, int], int] = {}

    def key(a: str) -> tuple[int, int]:
        ops = parse_arch(a).ops
        return ops.count("nor_conv_1x1"), ops.count("nor_conv_3x3")

    def count(a: str) -> int:
        return count_macs(NB201_SPACE.build_network(a).eval(), (3, 32, 32))

    keys = [key(a) for a in archs]
    for a, k in zip(archs, keys, strict=True):
        if k not in cache:
            cache[k] = count(a)
    rng = np.random.default_rng(SEED)
    checked = [int(i) for i in rng.choice(len(archs), 8, replace=False)]
    for i in checked:
        if count(archs[i]) != cache[keys[i]]:
            raise SystemExit(f"MACs of {archs[i]} depend on more than its conv counts")
    return (np.array([cache[k] for k in keys], dtype=np.float64),
            {"networks_counted": len(cache) + len(checked), "distinct_values": len(cache),
             "checked_cells": checked})


def score(y: np.ndarray, p: np.ndarray, rank: np.ndarray | None = None) -> dict[str, float]:
    """Spearman and tau of `rank` (default `p`) against y; within 10 % and MAPE of p."""
    r = p if rank is None else rank
    rel = np.abs(p - y) / y
    return {"spearman": float(spearmanr(y, r).statistic),
            "kendall_tau": float(kendalltau(y, r).statistic),
            "within_10": float((rel <= 0.1 + 1e-12).mean()), "mape": float(rel.mean())}


# ------------------------------------------------------------------ table methods


def basis_fit(B: np.ndarray, idx: np.ndarray, z: np.ndarray, how: str) -> np.ndarray:
    """z ~ b + B[idx] w: NNLS, or ridge shrunk towards equal weights; predictions for B."""
    A = B[idx]
    Ac, zc = A - A.mean(0), z - z.mean()
    if how == "nnls":
        w, _ = nnls(Ac, zc)
    else:
        n = B.shape[1]
        w0 = np.full(n, 1.0 / n)
        w = w0 + np.linalg.solve(Ac.T @ Ac + BASIS_LAMBDA * np.eye(n), Ac.T @ (zc - Ac @ w0))
    return B @ w + (z.mean() - A.mean(0) @ w)


def lowrank_prior(B: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell features [1, mean curve, U_r] and each prior device's coordinates in them."""
    mu = B.mean(1)
    Bc = B - mu[:, None]
    U, s, Vt = np.linalg.svd(Bc - Bc.mean(0), full_matrices=False)
    n = len(B)
    Psi = np.hstack([np.ones((n, 1)), mu[:, None], U[:, :r] * s[:r] / np.sqrt(n)])
    # device d: B[:, d] = 1 * mean_d + 1 * mu + U s V^T: coordinates (bias, 1, V sqrt n)
    coords = np.hstack([(Bc.mean(0))[:, None], np.ones((B.shape[1], 1)),
                        Vt[:r].T * np.sqrt(n)])
    return Psi, coords, mu


def blr_mean(Psi: np.ndarray, idx: np.ndarray, z: np.ndarray, coords: np.ndarray,
             noise_var: float, jitter: float = 1e-4) -> np.ndarray:
    post = _posterior(Psi[idx], z, coords, noise_var, 0.0, jitter, need_cov=False, nu=NU)
    return Psi @ post.mean


# --------------------------------------------------------------------------- main


def summarise(per: dict, methods: list[str], devices: list[str]) -> dict:
    """per[method][k][device] = list of draw scores -> the table."""
    out: dict = {}
    for m in methods:
        out[m] = {}
        for k in per[m]:
            entry: dict = {}
            for metric in ("spearman", "kendall_tau", "within_10", "mape"):
                arr = np.array([[s[metric] for s in per[m][k][d]] for d in devices])
                dev_mean = arr.mean(axis=1)
                entry[metric] = {
                    "mean": float(dev_mean.mean()), "min": float(dev_mean.min()),
                    "max": float(dev_mean.max()),
                    "worst_device": devices[int(dev_mean.argmin())]
                    if metric != "mape" else devices[int(dev_mean.argmax())],
                    "sd_over_draws_of_mean": float(arr.mean(axis=0).std()),
                    "mean_sd_over_draws_within_device": float(arr.std(axis=1).mean()),
                    "per_device": {d: float(v) for d, v in zip(devices, dev_mean, strict=True)},
                }
            out[m][k] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--devices", default="", help="comma-separated columns to leave out "
                    "in turn (default: all 15)")
    ap.add_argument("--draws", type=int, default=DRAWS)
    ap.add_argument("--no-mlp", action="store_true", help="skip the 1,000-sample MLP")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if not all((args.data / f).exists() for f in FILES):
        print(f"data files {FILES} not found in {args.data}", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    archs, X, Y, cols = load_encoded(args.data)
    layout = layout_for_space(NB201_SPACE)
    valid = Y >= MIN_MS
    Ym = np.where(valid, Y, np.nan)
    L = np.log(np.where(valid, Y, 1.0))
    t0 = time.perf_counter()
    macs, macs_info = macs_per_cell(archs)
    macs_info["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"MACs: {macs_info}", flush=True)
    onehot = X[:, :30]
    counts = X[:, :30].reshape(-1, 6, 5).sum(1)
    live = (X[:, 30:36] * X[:, 36:42])[:, :, None] * X[:, :30].reshape(-1, 6, 5)
    opcount = np.hstack([counts, live.sum(1)])
    none_col = [e * 5 + NB201_OPS.index("none") for e in range(6)]
    percost = np.hstack([np.ones((len(X), 1)), np.delete(onehot, none_col, axis=1)])

    leave = [c for c in args.devices.split(",") if c] or cols
    unknown = [c for c in leave if c not in cols]
    if unknown:
        print(f"unknown device column(s) {unknown}; known: {cols}", file=sys.stderr)
        return 2
    methods = list(METHODS) + ([] if args.no_mlp else ["full_mlp_1000"])
    per: dict = {m: {k: {} for k in KS} for m in METHODS}
    if not args.no_mlp:
        per["full_mlp_1000"] = {N_FULL: {}}
    devices_info: dict = {}
    coverage: dict = {k: {} for k in KS}
    timing = {"prior_fit_s": 0.0, "adapt_and_score_s": 0.0, "mlp_s": 0.0}
    for d in leave:
        j = cols.index(d)
        others = [i for i in range(len(cols)) if i != j]
        t0 = time.perf_counter()
        prior = DevicePrior.from_matrix(X, Ym[:, others], [cols[i] for i in others], layout,
                                        config=PriorConfig(), space=NB201_SPACE.name,
                                        op_names=list(NB201_SPACE.op_names))
        gauss = prior.with_settings(rho=0.0)
        plain = prior.subset(prior.devices)
        plain.config.robust_nu = None
        # per-(edge, op) cost prior: each prior device's own least squares on log-latency
        Wc = np.array([np.linalg.lstsq(percost[valid[:, i]], L[valid[:, i], i],
                                       rcond=None)[0] for i in others])
        noise_c = float(np.median([np.mean((percost[valid[:, i]] @ w - L[valid[:, i], i]) ** 2)
                                   for i, w in zip(others, Wc, strict=True)]))
        # table methods: prior devices' log-latencies, missing (ARM < 1 ms) entries
        # imputed from that device's own fit in the prior
        phi_all = prior.features.numpy(X)
        B = np.where(valid[:, others], L[:, others], phi_all @ prior.weights.T)
        Psi, coords, _ = lowrank_prior(B, LOWRANK)
        timing["prior_fit_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        v = np.where(valid[:, j])[0]
        devices_info[d] = {"usable_cells": int(len(v)), "excluded_below_min_ms":
                           int((~valid[:, j]).sum()), "prior_selection": prior.selection,
                           "closest_components_k20_draw0": None}
        y = Y[:, j]
        for k in KS:
            for m in METHODS:
                per[m][k][d] = []
            for r in range(args.draws):
                rng = np.random.default_rng([SEED, j, k, r])
                idx = rng.choice(v, k, replace=False)
                test = np.setdiff1d(v, idx)
                z = L[idx, j]
                preds: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
                model = prior.adapt(X[idx], y[idx])
                if k == 20 and r == 0:
                    devices_info[d]["closest_components_k20_draw0"] = \
                        model.info["closest_components"]
                mean, std = model.predict(X[test])
                preds["prior_mix"] = (mean, None)
                # calibration of the reported spread: share of cells within one sd (log)
                sd_log = np.sqrt(np.log1p((std / mean) ** 2))
                coverage[k].setdefault(d, []).append(
                    float(np.mean(np.abs(np.log(y[test] / mean)) <= sd_log)))
                preds["prior_mix_gaussian"] = (plain.adapt(X[idx], y[idx]).predict(X[test])[0],
                                               None)
                preds["prior_gauss"] = (gauss.adapt(X[idx], y[idx]).predict(X[test])[0], None)
                post = _posterior(percost[idx], z, Wc, noise_c, 0.0, 1e-4,
                                  need_cov=False, nu=NU)
                preds["prior_percost"] = (np.exp(percost[test] @ post.mean), None)
                preds["basis_nnls"] = (np.exp(basis_fit(B, idx, z, "nnls")[test]), None)
                preds["basis_ridge"] = (np.exp(basis_fit(B, idx, z, "ridge")[test]), None)
                preds["lowrank_blr"] = (np.exp(blr_mean(Psi, idx, z, coords,
                                                        prior.noise_var)[test]), None)
                fit = np.polyfit(macs[idx], y[idx], 1)
                preds["flops"] = (np.polyval(fit, macs[test]), macs[test])
                rid = make_baseline("ridge_onehot", layout).fit(X[idx], y[idx])
                preds["ridge_onehot"] = (rid.predict(X[test]), None)
                A = np.hstack([np.ones((k, 1)), opcount[idx]])
                w = np.linalg.lstsq(A, y[idx], rcond=None)[0]
                preds["opcount_ls"] = (np.hstack([np.ones((len(test), 1)),
                                                  opcount[test]]) @ w, None)
                for m, (p, rank) in preds.items():
                    # a few-sample fit in ms can go negative: floor it for relative errors
                    per[m][k][d].append(score(y[test], np.maximum(p, 1e-3), rank))
        timing["adapt_and_score_s"] += time.perf_counter() - t0
        line = (f"{d}: " + "; ".join(
            f"k={k} mix {np.mean([s['spearman'] for s in per['prior_mix'][k][d]]):.3f}"
            for k in KS))
        if not args.no_mlp:
            t0 = time.perf_counter()
            perm = np.random.default_rng([SEED, j]).permutation(v)
            tr, te = perm[:N_FULL], perm[N_FULL:]
            Xf, yf, g = with_equivalents(NB201_SPACE, [archs[i] for i in tr],
                                         X[tr].astype(np.float32), y[tr])
            mlp = LatencyMLP(layout, MLPConfig()).fit(Xf, yf, g)
            per["full_mlp_1000"][N_FULL][d] = [score(y[te], mlp.predict(X[te])[0])]
            timing["mlp_s"] += time.perf_counter() - t0
            line += f"; full MLP {per['full_mlp_1000'][N_FULL][d][0]['spearman']:.3f}"
        print(line + f" ({time.perf_counter() - t_start:.0f} s)", flush=True)

    table = summarise(per, methods, leave)
    targets = {}
    for k, t in TARGETS.items():
        got = table["prior_mix"][k]["spearman"]
        targets[f"k={k}"] = {"target": t, "mean": got["mean"], "min": got["min"],
                             "met": got["mean"] >= t["mean"] and got["min"] >= t.get("min", -1)}
    results = {
        "data": str(args.data),
        "protocol": {
            "devices": leave, "ks": list(KS), "draws": args.draws, "seed": SEED,
            "prior": "the other 14 devices (all their cells >= MIN_MS); hyper-parameters "
                     "chosen inside DevicePrior.fit by leave-one-device-out over those 14",
            "evaluation": "every cell of the device not among the k samples, latency >= "
                          "MIN_MS (about 15,600); per device the mean over draws; "
                          "mean/min over devices",
            "min_ms": MIN_MS,
            "near_zero": "latencies < 1 ms (raspi4: 276 cells, pixel3: 283, all of them "
                         "disconnected cells a toolchain folds to a constant) are treated "
                         "as not measured: not in the prior, not drawn, not scored",
            "full_mlp_1000": "LatencyMLP default config on 1,000 random usable cells (+ "
                             "equivalent cells), scored on all the other usable cells, "
                             "one split per device" if not args.no_mlp else "skipped",
            "flops": "Spearman / tau of MACs; within_10 / MAPE of a line fitted on the k "
                     "samples",
        },
        "macs": macs_info,
        "published_for_context": {
            "HELP (NeurIPS'21)": "mean Spearman 0.932 over six NB201 devices, 10 samples",
            "NASFLAT (MLSys'24)": "about 0.97 on Raspberry Pi 4 and Xeon Gold 6240, 20 "
                                  "samples",
        },
        "targets_prior_mix": targets,
        "table": table,
        "prior_mix_within_one_sd": {
            "note": "share of scored cells whose |log(y / mean)| <= the predicted sd of the "
                    "log (0.68 if calibrated); mean over draws",
            **{str(k): {d: float(np.mean(v)) for d, v in c.items()} for k, c in coverage.items()},
        },
        "devices": devices_info,
        "per_draw": per,
        "timing_s": {**{k: round(v, 1) for k, v in timing.items()},
                     "total": round(time.perf_counter() - t_start, 1)},
    }
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print("\n| method | k | Spearman mean | min | sd/draws | tau | within 10% | MAPE |")
    print("|---|---|---|---|---|---|---|---|")
    for m in methods:
        for k, e in table[m].items():
            print(f"| {m} | {k} | {e['spearman']['mean']:.3f} | {e['spearman']['min']:.3f} "
                  f"| {e['spearman']['sd_over_draws_of_mean']:.3f} | "
                  f"{e['kendall_tau']['mean']:.3f} | {e['within_10']['mean']:.3f} | "
                  f"{e['mape']['mean']:.3f} |")
    print("prior_mix share within one predicted sd (0.68 if calibrated): " + ", ".join(
        f"k={k} {np.mean([np.mean(v) for v in c.values()]):.2f}" for k, c in coverage.items()))
    print(json.dumps(targets, indent=1))
    print(f"wrote {args.out} in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
