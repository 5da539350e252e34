"""The Pareto front of a sweep, and the files that show it.

The front is Optuna's own (`study.best_trials`: the COMPLETE trials that no other trial
dominates in every objective), never a dominance test of ours, so it always agrees with
the study whichever worker writes it. `pareto.json`, `pareto.csv` and `pareto.png` are
rewritten atomically after every trial and at the end, each from the whole study, so
several workers writing them in turn leave a consistent set and a reader never sees a
half-written file.

Every point says which latency figure it is (`latency_label`: simulated, measured-model,
measured) and carries its test accuracy for the record only: the choice is made on the
retrain's held-out accuracy, and the test split is looked at once, after it.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.sweep.settings import PARAMETERS, SweepSettings, axis_label, latency_label
from nas.sweep.study import SweepPlace, Tally, retried_numbers, tally
from search_spaces.fileio import atomic_write_bytes

JSON_FILE = "pareto.json"
CSV_FILE = "pareto.csv"
PNG_FILE = "pareto.png"
TEST_NOTE = "for the record only: not an objective, never used to choose"


def point(t: FrozenTrial, s: SweepSettings) -> dict[str, Any]:
    """One completed trial as a front point."""
    a = t.user_attrs
    assert t.values is not None
    return {
        "trial": t.number,
        "params": dict(t.params),
        "settings": a.get("settings"),
        "objectives": {o.key: v for o, v in zip(s.objective_specs, t.values, strict=True)},
        "latency_ms": a.get("latency_ms"),
        "latency_label": a.get("latency_label"),
        "latency_refers_to": a.get("latency_refers_to"),
        "latency_caution": a.get("latency_caution"),
        "energy_mj": a.get("energy_mj"),
        "val_images": a.get("val_images"),
        "test_acc": a.get("test_acc"),
        "test_acc_note": TEST_NOTE,
        "network_params": a.get("network_params"),
        "search_dir": a.get("search_dir"),
        "retrain_dir": a.get("retrain_dir"),
        "genotype": a.get("genotype"),
        "retry_of": a.get("retry_of"),
        "host": a.get("host"),
    }


def _trial_row(t: FrozenTrial, s: SweepSettings, retried: set[int]) -> dict[str, Any]:
    row: dict[str, Any] = {"trial": t.number, "state": t.state.name,
                           "settings": t.user_attrs.get("settings") or dict(t.params)}
    if t.values is not None:
        row["objectives"] = {o.key: v for o, v in zip(s.objective_specs, t.values,
                                                      strict=True)}
    if t.state == TrialState.FAIL:
        row["error"] = t.user_attrs.get("error") or (
            "its process stopped (killed, or no heartbeat): queued again"
            if t.number in retried else "its process stopped (killed, or no heartbeat)")
        row["retried"] = t.number in retried
    for key in ("retry_of", "duplicate_of"):
        if t.user_attrs.get(key) is not None:
            row[key] = t.user_attrs[key]
    return row


def front(study: optuna.Study, s: SweepSettings) -> list[dict[str, Any]]:
    """Optuna's Pareto front, cheapest first (by the first cost objective)."""
    points = [point(t, s) for t in study.best_trials]
    cost = s.objective_specs[1].key
    return sorted(points, key=lambda p: (p["objectives"][cost], p["trial"]))


def summary(study: optuna.Study, s: SweepSettings, place: SweepPlace, target: int,
            counts: Tally | None = None) -> dict[str, Any]:
    """Everything pareto.json holds (and `nas sweep --json` prints)."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    counts = counts or tally(study)
    path = place.path.resolve()
    return {
        "sweep_dir": str(path),
        "study_name": place.study_name,
        "storage": place.storage_shown,
        "hardware": s.hardware,
        "latency": {"label": latency_label(s), "source": s.latency_source,
                    "axis": axis_label(s, "latency")},
        "objectives": [{"name": o.name, "key": o.key, "direction": o.direction,
                        "unit": o.unit, "axis": axis_label(s, o.name)}
                       for o in s.objective_specs],
        "chosen_on": f"val_acc: the retrain's accuracy on {s.holdout} training images held "
                     "out of its training, never the test split",
        "settings": s.to_dict(),
        "trials": {**counts.to_dict(), "target": target},
        "front": front(study, s),
        "all_trials": [_trial_row(t, s, retried) for t in trials],
        "files": {name: str(path / name) for name in (JSON_FILE, CSV_FILE, PNG_FILE)},
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_outputs(study: optuna.Study, s: SweepSettings, place: SweepPlace,
                  target: int) -> dict[str, Any]:
    """pareto.json, pareto.csv and pareto.png, each atomically; the summary."""
    result = summary(study, s, place, target)
    path = place.path
    atomic_write_bytes(path / JSON_FILE, (json.dumps(result, indent=2) + "\n").encode())
    atomic_write_bytes(path / CSV_FILE, front_csv(result["front"], s).encode())
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plot_front(completed, result, s, path / PNG_FILE)
    return result


def front_csv(points: list[dict[str, Any]], s: SweepSettings) -> str:
    """One row per front point: objectives, the latency label, test accuracy (record
    only), the parameters a trial ran with, its run directories and genotype (JSON)."""
    keys = [o.key for o in s.objective_specs]
    columns = ["trial", *keys, "latency_label", "test_acc", *PARAMETERS,
               "search_dir", "retrain_dir", "genotype"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for p in points:
        row = {"trial": p["trial"], **p["objectives"], "latency_label": p["latency_label"],
               "test_acc": p["test_acc"], **(p["settings"] or {}),
               "search_dir": p["search_dir"], "retrain_dir": p["retrain_dir"],
               "genotype": json.dumps(p["genotype"], separators=(",", ":"))}
        writer.writerow({k: row.get(k) for k in columns})
    return buf.getvalue()


def plot_front(completed: list[FrozenTrial], result: dict[str, Any], s: SweepSettings,
               out: Path) -> None:
    """Held-out accuracy against each cost objective (one panel each): every completed
    trial in grey, the front highlighted and labelled with trial numbers; with a single
    cost objective the front is also connected (it is then a staircase)."""
    from nas.report.plotting import fit_suptitle, legend_above, plt, save_figure

    specs = s.objective_specs
    costs = [o for o in specs if o.name != "accuracy"]
    acc = specs.index(next(o for o in specs if o.name == "accuracy"))
    on_front = {p["trial"] for p in result["front"]}
    fig, axes = plt.subplots(1, len(costs), figsize=(6.4 * len(costs), 4.8),
                             layout="constrained", squeeze=False)
    for ax, cost in zip(axes[0], costs, strict=True):
        i = specs.index(cost)
        xs = [t.values[i] for t in completed if t.values is not None]
        ys = [t.values[acc] for t in completed if t.values is not None]
        ax.scatter(xs, ys, color="0.65", s=28, label="completed trials", zorder=2)
        front_pts = sorted((t.values[i], t.values[acc], t.number) for t in completed
                           if t.number in on_front and t.values is not None)
        if front_pts:
            fx, fy, numbers = zip(*front_pts, strict=True)
            line = "-" if len(costs) == 1 else "none"
            what = ("Pareto front" if len(costs) == 1 else
                    f"Pareto front over {', '.join(o.name for o in specs)}")
            ax.plot(fx, fy, marker="o", linestyle=line, color="tab:red", markersize=7,
                    label=what, zorder=3)
            for x, y, n in zip(fx, fy, numbers, strict=True):
                ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(5, 4),
                            fontsize=8)
        else:
            ax.text(0.5, 0.5, "no completed trial yet", transform=ax.transAxes,
                    ha="center", va="center", color="0.4")
        ax.set_xlabel(axis_label(s, cost.name))
        ax.set_ylabel(axis_label(s, "accuracy"))
        ax.grid(True, alpha=0.3)
        legend_above(ax, f"accuracy against {cost.name}")
    t = result["trials"]
    fit_suptitle(fig, f"sweep {result['study_name']} on {s.hardware}: {t['complete']} "
                 f"complete, {t['failed']} failed, front of "
                 f"{len(result['front'])} (trial numbers beside the front)")
    save_figure(fig, out)
