"""Train a latency predictor on a sample file and report how good it is, beside baselines.

The held-out split is a fixed, seeded fraction of the samples that no model sees while
training; every model (the MLP ensemble and each scikit-learn baseline) is scored on the
same held-out rows with the same metrics. The report says where the numbers came from
(measured / simulated / imported samples).

Where the time goes (1,000 p100 samples, one thread of this 2-core machine, 26 s in
all): choosing the MLP's grid point, 13 s, and training its members, 2 s (`mlp.py`, all
models of a phase batched); scoring it out of fold for the choice of the shipped blend,
2.4 s (`blend.py`); the baselines, 7 s (histogram gradient boosting and the forest about
3.5 s each, the ridges well under a second); encoding, the equivalent cells, the metrics
and the plot about a second. A `log` callable hears each phase, and progress bars run
on stderr when it is a terminal.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from latency.predictor.artifact import save_predictor
from latency.predictor.augment import with_equivalents
from latency.predictor.baselines import BASELINES, make_baseline
from latency.predictor.blend import choose_and_ship
from latency.predictor.features import layout_for_space
from latency.predictor.locate import load_for_space
from latency.predictor.metrics import report
from latency.predictor.mlp import LatencyMLP, MLPConfig
from latency.samples import SampleError
from search_spaces.fileio import atomic_write_bytes
from search_spaces.space import get_space


def encode_rows(rows: Sequence[dict[str, Any]]) -> tuple[Any, np.ndarray, np.ndarray]:
    """(space, encodings, latencies) of sample rows, which must share one space."""
    spaces = {r["space"] for r in rows}
    if len(spaces) != 1:
        raise SampleError(f"samples mix spaces {sorted(spaces)}; train one space at a time")
    space = get_space(spaces.pop())
    X = np.stack([space.encode(space.parse(r["arch"])) for r in rows]).astype(np.float32)
    y = np.array([float(r["latency_ms"]) for r in rows], dtype=np.float64)
    return space, X, y


def reference_normalised(
    rows: Sequence[dict[str, Any]], y: np.ndarray, reference_ms: float | None = None
) -> tuple[np.ndarray, float | None]:
    """Latencies with the machine's state divided out, when every row carries one.

    A measured row records `reference_ms`: a fixed reference network timed in the same
    interleaved rounds. A shared machine drifts between sessions by several percent
    (frequency, neighbours), and every network in a round drifts alike, so
    `latency * reference_ms / row_reference` is the latency the row would have had at the
    machine state where the reference takes `reference_ms` (default: the median over the
    rows). Returns the labels unchanged and None when any row lacks a reference (simulated
    or imported data).
    """
    refs = [r.get("reference_ms") for r in rows]
    if not rows or any(not isinstance(v, (int, float)) or v <= 0 for v in refs):
        return y, None
    ref = np.asarray(refs, dtype=np.float64)
    target = float(np.median(ref)) if reference_ms is None else float(reference_ms)
    return y * (target / ref), target


def _quiet(message: str) -> None:
    """The default `log`: library callers and tests hear nothing."""


def noisy_count(rows: Sequence[dict[str, Any]]) -> int | None:
    """How many rows were marked noisy when measured (their timing spread stayed above the
    profile's threshold), or None when some row does not say (simulated rows say False;
    imported rows say nothing), so a missing mark is never counted as a clean one."""
    marks = [r.get("noisy") for r in rows]
    if not marks or any(not isinstance(m, bool) for m in marks):
        return None
    return sum(1 for m in marks if m)


def split(n: int, test_fraction: float, seed: int, train_size: int | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, test) indices: `train_size` rows for training and all others held
    out, or a `test_fraction` held out."""
    order = np.random.default_rng(seed).permutation(n)
    if train_size is not None:
        if not 0 < train_size < n:
            raise SampleError(f"--train-size must be between 1 and {n - 1}, got {train_size}")
        return np.sort(order[:train_size]), np.sort(order[train_size:])
    n_test = max(1, int(round(test_fraction * n)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def train_predictor(
    rows: Sequence[dict[str, Any]],
    out: str | Path,
    hardware: str,
    dataset: str,
    test_fraction: float = 0.2,
    seed: int = 0,
    baselines: Sequence[str] = tuple(BASELINES),
    config: MLPConfig | None = None,
    train_size: int | None = None,
    min_latency_ms: float | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`min_latency_ms` drops rows below it from training AND evaluation, and the report
    counts them (e.g. published ARM latencies near zero for networks a runtime folded).
    `log` (default: silent) gets one line per phase; see the module docstring."""
    say = log or _quiet
    excluded = 0
    if min_latency_ms is not None:
        kept = [r for r in rows if float(r["latency_ms"]) >= min_latency_ms]
        excluded = len(rows) - len(kept)
        rows = kept
    if len(rows) < 10:
        raise SampleError(f"{len(rows)} samples are too few to train and hold out a test set")
    space, X, y = encode_rows(rows)
    y, reference_ms = reference_normalised(rows, y)
    train, test = split(len(y), test_fraction, seed, train_size)
    layout = layout_for_space(space)
    # every model trains on the same rows: the training split plus the cells that compute
    # the same as one of its rows (held-out rows are never augmented)
    X_fit, y_fit, groups = with_equivalents(
        space, [space.parse(rows[i]["arch"]) for i in train], X[train], y[train])
    added = int(len(y_fit) - len(train))
    say(f"training on {len(train)} {space.name} samples"
        f"{f' (+{added} cells that compute the same)' if added else ''}, "
        f"holding out {len(test)}")
    mlp = LatencyMLP(layout, config or MLPConfig(seed=seed)).fit(X_fit, y_fit, groups,
                                                                  log=log)
    results: dict[str, Any] = {"mlp": report(y[test], mlp.predict(X[test])[0])}
    # the model that ships: the MLP, a linear per-edge model or a blend, by out-of-fold
    # validation on the training rows only (blend.py)
    blend, candidates, linear = choose_and_ship(mlp, X_fit, y_fit, groups, len(train),
                                                seed, log=log)
    say(f"shipping {blend.name} (out-of-fold within 10 % + Kendall tau, "
        f"{len(candidates)} candidates)")
    mean, std = mlp.predict(X[test])
    results = {"shipped": report(y[test], mean), **results}
    if baselines:
        say(f"fitting baselines: {', '.join(baselines)}")
    bar = tqdm(baselines, desc="fitting baselines", unit="model", leave=False,
               disable=None if log is not None else True)
    for name in bar:
        bar.set_postfix_str(name)
        model = linear[name] if name in linear else make_baseline(name, layout, seed).fit(
            X_fit, y_fit)
        results[name] = report(y[test], model.predict(X[test]))
    sources = sorted({r["source"] for r in rows})
    extra: dict[str, Any] = {"sources": sources, "n_train": int(len(train)),
                             "n_equivalents_added": added,
                             "n_test": int(len(test)), "seed": seed,
                             "reference_ms": reference_ms,
                             "shipped_model": blend.to_dict()}
    noisy = noisy_count([rows[i] for i in train])
    if noisy is not None:
        extra["n_noisy_train"] = noisy
    save_predictor(mlp, out, space=space.name, op_names=space.encoding_ops, hardware=hardware,
                   dataset=dataset, metrics=results["shipped"], extra=extra)
    summary = {
        "hardware": hardware, "space": space.name, "samples": dataset, "sources": sources,
        "n_train": int(len(train)), "n_equivalents_added": added,
        "n_test": int(len(test)), "n_noisy_train": noisy,
        "excluded_below_min_latency": excluded,
        "min_latency_ms": min_latency_ms,
        "reference_normalised": reference_ms is not None, "reference_ms": reference_ms,
        "metrics": results, "mean_uncertainty_ms": float(np.mean(std)), "predictor": str(out),
        "shipped_model": blend.to_dict(),
        "model_choice": {"rule": "out-of-fold (5 folds of the training rows) within 10 % + "
                                 "Kendall tau, best candidate ships; ties to the larger MLP "
                                 "weight",
                         "candidates": candidates},
    }
    out_dir = Path(out)
    atomic_write_bytes(out_dir / "report.json", (json.dumps(summary, indent=2) + "\n").encode())
    _calibration_plot(y[test], mean, out_dir / "calibration.png",
                      f"{hardware} ({', '.join(sources)}): held-out {len(test)} samples")
    return summary


def evaluate_predictor(path: str | Path, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    space, X, y = encode_rows(rows)
    mlp, meta = load_for_space(Path(path), space)
    normalised = False
    trained_ref = (meta.get("extra") or {}).get("reference_ms")
    if trained_ref:  # judge on labels at the machine state it was trained at
        y2, ref = reference_normalised(rows, y, trained_ref)
        y, normalised = y2, ref is not None
    mean, _ = mlp.predict(X)
    return {"predictor": str(path), "hardware": meta.get("hardware"), "n": int(len(y)),
            "reference_normalised": normalised, **report(y, mean)}


def _calibration_plot(y: np.ndarray, pred: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.scatter(y, pred, s=6, alpha=0.6)
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.fill_between([lo, hi], [0.9 * lo, 0.9 * hi], [1.1 * lo, 1.1 * hi], color="k",
                    alpha=0.08, label="within 10%")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title(title, fontsize=8)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
