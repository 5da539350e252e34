"""Published DARTS cells no predictor saw, predicted by a `cpu` predictor and measured here.

Issue 15, item 7: every published cell of `search_spaces.genotype_library.PUBLISHED`
(DARTS_V1, DARTS_V2, PDARTS, PC_DARTS, GDAS, ...; the alias DARTS is skipped) is predicted
by a `cpu` latency predictor and measured on this machine's `cpu` profile
(hardware_profiles/cpu.yaml: its deployed network, one thread, batch 1) at the same
machine state; the goal is every cell within 10%.

Protocol:

1. The predictor is trained as `nas predictor train` trains it (`train_predictor`, the MLP
   ensemble, reference-normalised labels, the fixed seeded 80/20 split; no baselines) on
   the 2,000 measured samples of bench/data/cpu_samples_reference.jsonl.gz, after dropping
   every row whose genotype is a published cell or deploys as the same network as one
   (`darts_symmetry.cell_variants`: same cost up to renaming inputs and nodes), so that
   no published cell is seen in training. `--predictor DIR` reuses the predictor in DIR,
   or trains it there first when DIR holds none.
2. Each cell's deployed network is built as `nas latency NAME --hardware cpu --measure`
   builds it (`space.deployed_network`) and timed with `latency.profiling.
   measure_at_state`, interleaved with the reference network (DARTS_V2's deployed
   network). The raw prediction is moved to the machine state of that measurement with
   `prediction_at_state(predicted, trained_reference_ms, reference_now_ms)`.
3. `--repeats N` measures every cell N times, the cells in turn each time (so the N
   measurements of a cell are minutes apart); a cell's verdict is the median of its N
   relative errors (prediction at state vs measured). The raw prediction's error is
   reported beside it: it differs by how far the machine is now from the training state.

    python bench/bench_published_cells.py --repeats 3 \
        --out bench/results_published_cells.json

Prints a table on stderr; the JSON holds the machine (CPUs, torch, threads, load average
at start and end), the command, the predictor (its trained reference_ms, training time,
rows dropped), one row per cell and measurement, and the summary (largest |error|, cells
within 10%). Keep the machine otherwise idle: a neighbour's load moves the cell and the
reference alike only on average.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency.hardware import load_profile  # noqa: E402
from latency.measure import fingerprint  # noqa: E402
from latency.predictor.artifact import META_NAME  # noqa: E402
from latency.predictor.locate import load_for_space  # noqa: E402
from latency.predictor.train import train_predictor  # noqa: E402
from latency.profiling import measure_at_state, prediction_at_state  # noqa: E402
from latency.samples import SampleError, validate_row  # noqa: E402
from search_spaces.darts_symmetry import cell_variants  # noqa: E402
from search_spaces.genotype import Genotype  # noqa: E402
from search_spaces.genotype_library import PUBLISHED  # noqa: E402
from search_spaces.space import get_space  # noqa: E402

SAMPLES = ROOT / "bench" / "data" / "cpu_samples_reference.jsonl.gz"
HARDWARE = "cpu"
ALIASES = {"DARTS"}  # DARTS is DARTS_V2
TOLERANCE = 0.10


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The sample rows of a (gzipped) JSON-lines file, each validated as a sample."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        rows = [validate_row(json.loads(line), f"{path}:{n}")
                for n, line in enumerate(f, start=1) if line.strip()]
    wrong = {(r["hardware"], r["space"]) for r in rows} - {(HARDWARE, "darts")}
    if wrong:
        raise SampleError(f"{path}: rows of {sorted(wrong)}, expected {HARDWARE} / darts")
    return rows


def cost_key(g: Genotype) -> tuple[Any, Any]:
    """The same for two genotypes exactly when their deployed networks are the same
    computation up to renaming (the smallest of each cell's renamings)."""
    return (min(cell_variants(g.normal, g.normal_concat, g.steps)),
            min(cell_variants(g.reduce, g.reduce_concat, g.steps)))


def drop_published(rows: list[dict[str, Any]], cells: dict[str, Genotype]
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`rows` without those whose genotype is, or deploys as, one of `cells`."""
    space = get_space("darts")
    keys = {cost_key(g): name for name, g in cells.items()}
    exact = set(cells.values())
    kept, dropped = [], []
    for r in rows:
        g = space.parse(r["arch"])
        name = keys.get(cost_key(g))
        if name is None:
            kept.append(r)
        else:
            dropped.append({"id": r["id"], "seed": r.get("seed", 0), "cell": name,
                            "identical": g in exact})
    return kept, {"rows_in_file": len(rows), "rows_dropped": len(dropped),
                  "dropped": dropped}


def get_predictor(path: Path | None, rows: list[dict[str, Any]], overlap: dict[str, Any],
                  log: Any) -> tuple[Path, dict[str, Any]]:
    """The predictor directory to use, trained first when it holds none."""
    if path is not None and (path / META_NAME).is_file():
        log(f"reusing the predictor in {path}")
        report_file = path / "report.json"
        info = json.loads(report_file.read_text()) if report_file.is_file() else {}
        return path, {"path": str(path), "trained_here": False, "train_seconds": None,
                      "report": info}
    out = path or Path(tempfile.mkdtemp(prefix="published_cells_predictor_"))
    dataset = (f"{SAMPLES.relative_to(ROOT)} without the published cells "
               f"({overlap['rows_dropped']} of {overlap['rows_in_file']} rows dropped)")
    log(f"training the {HARDWARE} predictor on {len(rows)} rows into {out} "
        f"({overlap['rows_dropped']} rows dropped: published cells)")
    t0 = time.perf_counter()
    report = train_predictor(rows, out, hardware=HARDWARE, dataset=dataset, baselines=(),
                             log=log)
    seconds = time.perf_counter() - t0
    log(f"trained in {seconds:.0f} s")
    return out, {"path": str(out), "trained_here": True, "train_seconds": seconds,
                 "report": report}


def rel(a: float | None, b: float) -> float | None:
    return None if a is None else (a - b) / b


def measure_cell(name: str, g: Genotype, profile: Any, mlp: Any, trained_ref: float | None
                 ) -> dict[str, Any]:
    """One measurement of `name` at the machine's state now, as `nas latency --measure`."""
    space = get_space("darts")
    mean, std = mlp.predict(space.encode(g)[None].astype(np.float32))
    predicted = float(mean[0])
    model, shape = space.deployed_network(g, profile)
    m, ref = measure_at_state(profile, model, shape)
    at_state = prediction_at_state(predicted, trained_ref, ref.median_ms)
    return {
        "cell": name, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "predicted_ms": predicted, "predicted_std_ms": float(std[0]),
        "predicted_at_state_ms": at_state, "measured_ms": m.median_ms,
        "measured_spread": m.spread, "measured_noisy": m.noisy, "measured_runs": m.runs,
        "reference_now_ms": ref.median_ms, "reference_spread": ref.spread,
        "rel_error_raw": rel(predicted, m.median_ms),
        "rel_error_at_state": rel(at_state, m.median_ms),
    }


def per_cell(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A cell's verdict over its measurements: the medians of the relative errors."""
    def med(key: str) -> float | None:
        vals = [r[key] for r in runs if r[key] is not None]
        return statistics.median(vals) if vals else None

    err = med("rel_error_at_state")
    return {
        "cell": name, "measurements": len(runs),
        "predicted_ms": runs[0]["predicted_ms"],
        "predicted_at_state_ms": med("predicted_at_state_ms"),
        "measured_ms": med("measured_ms"), "measured_spread": med("measured_spread"),
        "reference_now_ms": med("reference_now_ms"),
        "rel_error_raw": med("rel_error_raw"), "rel_error_at_state": err,
        "rel_errors_at_state": [r["rel_error_at_state"] for r in runs],
        "within_10": err is not None and abs(err) <= TOLERANCE,
    }


def _pct(x: float | None) -> str:
    return "   n/a" if x is None else f"{100 * x:+6.1f}%"


def print_table(cells: list[dict[str, Any]], trained_ref: float | None) -> None:
    say = sys.stderr.write
    say(f"cpu profile, predictor trained at reference {trained_ref or float('nan'):.3f} ms\n")
    say(f"{'cell':12s} {'pred':>7s} {'at state':>8s} {'measured':>8s} {'spread':>6s} "
        f"{'ref now':>7s} {'err raw':>7s} {'err st.':>7s}  within 10%\n")
    for c in cells:
        at = c["predicted_at_state_ms"]
        say(f"{c['cell']:12s} {c['predicted_ms']:7.3f} "
            f"{at if at is not None else float('nan'):8.3f} {c['measured_ms']:8.3f} "
            f"{100 * c['measured_spread']:5.1f}% {c['reference_now_ms']:7.3f} "
            f"{_pct(c['rel_error_raw'])} {_pct(c['rel_error_at_state'])}  "
            f"{'yes' if c['within_10'] else 'NO'}\n")


def machine(load_start: tuple[float, ...]) -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(x, 2) for x in load_start],
            "fingerprint": fingerprint()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--predictor", type=Path, help="predictor directory: reused when it "
                    "holds one, else trained there (default: a temporary directory)")
    ap.add_argument("--cells", help="comma-separated published names (default: all but "
                    "the alias DARTS)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="measurements per cell, the cells in turn (default 1)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results_published_cells.json")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    names = ([n.strip().upper().replace("-", "_") for n in args.cells.split(",") if n.strip()]
             if args.cells else [n for n in PUBLISHED if n not in ALIASES])
    unknown = [n for n in names if n not in PUBLISHED]
    if unknown:
        ap.error(f"unknown cells {unknown}; published: {', '.join(PUBLISHED)}")
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    started = time.perf_counter()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    profile = load_profile(HARDWARE)
    # every published cell stays out of training, not only those measured now
    everything = {n: g for n, g in PUBLISHED.items() if n not in ALIASES}
    rows, overlap = drop_published(load_rows(SAMPLES), everything)
    log(f"{overlap['rows_dropped']} of {overlap['rows_in_file']} sample rows are published "
        "cells (or deploy as one) and are left out of training")
    path, predictor = get_predictor(args.predictor, rows, overlap, log)
    mlp, meta = load_for_space(path, get_space("darts"))
    trained_ref = (meta.get("extra") or {}).get("reference_ms")
    trained_ref = float(trained_ref) if trained_ref else None
    predictor.update({"reference_ms": trained_ref, "samples": meta.get("dataset")})

    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(args.repeats):
        for n in names:
            row = measure_cell(n, PUBLISHED[n], profile, mlp, trained_ref)
            row["repeat"] = r
            runs[n].append(row)
            log(f"[{r + 1}/{args.repeats}] {n}: measured {row['measured_ms']:.3f} ms, "
                f"predicted at state {row['predicted_at_state_ms'] or float('nan'):.3f} ms "
                f"({_pct(row['rel_error_at_state']).strip()})")
    cells = [per_cell(n, runs[n]) for n in names]
    errors = [abs(c["rel_error_at_state"]) for c in cells if c["rel_error_at_state"] is not None]
    summary = {
        "cells": len(cells), "within_10": sum(c["within_10"] for c in cells),
        "all_within_10": all(c["within_10"] for c in cells),
        "max_abs_rel_error_at_state": max(errors) if errors else None,
        "median_abs_rel_error_at_state": statistics.median(errors) if errors else None,
        "max_abs_rel_error_raw": max((abs(c["rel_error_raw"]) for c in cells), default=None),
        "worst_cell": max(cells, key=lambda c: abs(c["rel_error_at_state"] or 0))["cell"],
    }
    result = {
        "command": shlex.join([sys.executable, *sys.argv] if argv is None
                              else ["bench/bench_published_cells.py", *argv]),
        "machine": {**machine(load_start),
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "profile": profile.name, "tolerance": TOLERANCE, "repeats": args.repeats,
        "seconds": time.perf_counter() - started,
        "predictor": {**predictor, "excluded_rows": overlap},
        "summary": summary, "cells": cells, "measurements": [x for n in names for x in runs[n]],
    }
    print_table(cells, trained_ref)
    log(f"{summary['within_10']} of {summary['cells']} cells within 10%; largest |error| "
        f"{_pct(summary['max_abs_rel_error_at_state']).strip()} ({summary['worst_cell']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
