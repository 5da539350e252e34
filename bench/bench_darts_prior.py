"""The DARTS-space device prior, and how well it adapts to this machine's CPU.

No public multi-device latency data exist for DARTS cells, so the DARTS prior is learned
from what we have: the samples of the shipped simulated profiles (p100, h100, jetson-tx2,
raspi4, pixel4; roofline simulations of their datasheets, `hardware_profiles/*.samples.
jsonl`). It is judged on the one real device at hand: the 2,000 `cpu` samples measured here
(`bench/data/cpu_samples_reference.jsonl.gz`, reference-normalised as training does),
"as if this machine were new": the prior adapted on k = 10, 20, 50 of the training rows
(5 seeded draws each) and scored on the held-out 400 rows of the 2,000-sample predictor's
own split (`train.split(2000, 0.2, seed 0)`), beside the same k rows' ridge and that
predictor's figures (bench/results_cpu_predictor_2000_reference.json).

    python bench/bench_darts_prior.py            # build the prior, evaluate, write JSON
    python bench/bench_darts_prior.py --no-build # evaluate the shipped prior only

Writes hardware_profiles/priors/darts.json + .pt and bench/results_darts_prior.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency.predictor.baselines import make_baseline  # noqa: E402
from latency.predictor.features import layout_for_space  # noqa: E402
from latency.predictor.metrics import report  # noqa: E402
from latency.predictor.prior import DevicePrior, PriorConfig, shipped_prior_path  # noqa: E402
from latency.predictor.train import reference_normalised, split  # noqa: E402
from latency.samples import load_samples  # noqa: E402
from search_spaces.space import get_space  # noqa: E402

SOURCES = ("p100", "h100", "jetson-tx2", "raspi4", "pixel4")
CPU_ROWS = ROOT / "bench" / "data" / "cpu_samples_reference.jsonl.gz"
FULL = ROOT / "bench" / "results_cpu_predictor_2000_reference.json"
KS = (10, 20, 50)
DRAWS = 5
NOTICE = ("Learned from the shipped simulated profiles' samples (roofline simulations of "
          "datasheet figures), not from measurements")


def build(space, out: Path) -> DevicePrior:
    data = {name: load_samples(ROOT / "hardware_profiles" / f"{name}.samples.jsonl")
            for name in SOURCES}
    # pairs=False: pairwise edge products would be 24,192 features in the DARTS space
    config = PriorConfig(min_ms=None, pairs=False)
    prior = DevicePrior.fit(data, layout_for_space(space), config=config,
                            space=space.name, op_names=list(space.op_names), notice=NOTICE,
                            log=print)
    prior.save(out)
    return prior


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-build", action="store_true", help="evaluate the shipped prior")
    args = ap.parse_args(argv)
    space = get_space("darts")
    out = shipped_prior_path(space.name)
    t0 = time.perf_counter()
    prior = (DevicePrior.load(out, op_names=space.op_names) if args.no_build
             else build(space, out))
    built_s = time.perf_counter() - t0
    rows = [json.loads(line) for line in gzip.open(CPU_ROWS, "rt")]
    archs = [space.parse(r["arch"]) for r in rows]
    X = np.stack([space.encode(a) for a in archs]).astype(np.float64)
    y = np.array([r["latency_ms"] for r in rows], dtype=np.float64)
    y, ref = reference_normalised(rows, y)
    train, test = split(len(y), 0.2, 0, None)
    layout = layout_for_space(space)
    table: dict[str, dict[str, dict[str, float]]] = {"prior": {}, "ridge_onehot": {}}
    per_draw: dict[str, list] = {"prior": [], "ridge_onehot": []}
    adapt_s = []
    for k in KS:
        for name in table:
            results = []
            for draw in range(DRAWS):
                idx = np.random.default_rng([draw, k]).choice(train, size=k, replace=False)
                if name == "prior":
                    t1 = time.perf_counter()
                    model = prior.adapt(X[idx], y[idx])
                    adapt_s.append(time.perf_counter() - t1)
                    pred = model.predict(X[test])[0]
                else:
                    pred = make_baseline("ridge_onehot", layout, draw).fit(
                        X[idx].astype(np.float32), y[idx]).predict(X[test].astype(np.float32))
                    pred = np.maximum(pred, 1e-3)
                results.append(report(y[test], pred))
            per_draw[name].append({"k": k, "draws": results})
            table[name][str(k)] = {
                m: float(np.mean([r[m] for r in results])) for m in results[0]}
            table[name][str(k)].update(
                {f"{m}_sd": float(np.std([r[m] for r in results]))
                 for m in ("kendall_tau", "spearman")})
            t = table[name][str(k)]
            print(f"{name:13s} k={k:3d}: tau {t['kendall_tau']:.3f} (sd {t['kendall_tau_sd']:.3f})"
                  f" Spearman {t['spearman']:.3f} within10 {t['within_10']:.3f} "
                  f"MAPE {t['mape']:.3f}")
    full = json.loads(FULL.read_text())["metrics"]["mlp"]
    result = {
        "prior": {"sources": list(SOURCES), "note": NOTICE, "rho": prior.rho,
                  "jitter": prior.jitter, "seconds_to_build": built_s,
                  "file": str(out.relative_to(ROOT))},
        "protocol": {"rows": str(CPU_ROWS.relative_to(ROOT)), "n": len(rows),
                     "held_out": int(len(test)), "draws": DRAWS, "ks": list(KS),
                     "reference_normalised_to_ms": ref},
        "table": table,
        "full_2000_sample_mlp_same_held_out": full,
        "adapt_seconds_median": float(np.median(adapt_s)),
        "per_draw": per_draw,
    }
    (ROOT / "bench" / "results_darts_prior.json").write_text(json.dumps(result, indent=1))
    print(f"full 2,000-sample MLP on the same held-out rows: tau {full['kendall_tau']:.3f}, "
          f"within10 {full['within_10']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
