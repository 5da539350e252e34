"""Training curves (loss, accuracy, architecture entropy) and predicted latency per epoch.

Every series is plotted against the global epoch axis of `nas.report.epochs`, so P-DARTS
stages follow each other with a line between them instead of overlapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.report.epochs import EpochAxis, epoch_axis, series

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LATENCY_KEYS = ("predicted_latency_ms", "genotype_predicted_latency_ms")


def has_curves(records: Sequence[dict[str, Any]]) -> bool:
    """Whether any record has a loss or accuracy to draw."""
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
    return any(np.isfinite(series(records, k)).any() for k in keys)


def has_latency(records: Sequence[dict[str, Any]]) -> bool:
    """Whether a latency predictor logged anything (only latency-aware searches do)."""
    return any(np.isfinite(series(records, k)).any() for k in LATENCY_KEYS)


def latency_label(records: Sequence[dict[str, Any]]) -> str:
    """The predictor's label(s) ("simulated", "measured") as logged, in first-seen order."""
    labels: list[str] = []
    for record in records:
        label = record.get("latency_label")
        if isinstance(label, str) and label and label not in labels:
            labels.append(label)
    return " / ".join(labels)


def _stages(ax: Axes, axis: EpochAxis) -> None:
    """Integer epoch ticks; with several stages, dotted lines between them and the stage
    numbers along the top (in head-room added for them, so they never cover a curve)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlim(0.5, len(axis.x) + 0.5)
    ax.ticklabel_format(axis="y", useOffset=False)
    if not axis.multi_stage:
        return
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.1 * (high - low))
    for b in axis.boundaries:
        ax.axvline(b, color="#777777", linestyle=":", linewidth=1)
    for first, last, stage in axis.stages:
        ax.text((first + last) / 2, 0.98, f"stage {stage + 1}", ha="center", va="top",
                fontsize=7, color="#555555", transform=ax.get_xaxis_transform())


def _line(ax: Axes, axis: EpochAxis, y: np.ndarray, label: str, **style: Any) -> bool:
    """Plot the finite points of `y`, one line per stage (a new stage is a new supernet,
    so its first epoch does not continue the last one); sparse series get dots."""
    ok = np.isfinite(y)
    if not ok.any():
        return False
    sparse = ok.sum() < len(y) or ok.sum() == 1
    colour = style.pop("color", None)
    for first, last, _ in axis.stages:
        part = ok & (axis.x >= first) & (axis.x <= last)
        if part.any():
            (line,) = ax.plot(axis.x[part], y[part], marker="o" if sparse else None,
                              markersize=3, label=label, color=colour, **style)
            colour, label = line.get_color(), "_nolegend_"
    return True


def _test_marker(ax: Axes, x: np.ndarray, y: np.ndarray, fallback: Any, what: str) -> None:
    """The final test figure as a star: from the log's last line, else from report.json."""
    ok = np.isfinite(y)
    if ok.any():
        i = int(np.flatnonzero(ok)[-1])
        xv, yv = float(x[i]), float(y[i])
    elif isinstance(fallback, (int, float)) and not isinstance(fallback, bool) and len(x):
        xv, yv = float(x[-1]), float(fallback)
    else:
        return
    ax.scatter([xv], [yv], marker="*", s=140, color="#D55E00", zorder=5,
               label=f"test {what} {yv:.4g}")


def draw_curves(
    records: Sequence[dict[str, Any]], kind: str, title: str, final: dict[str, Any] | None = None
) -> Figure:
    """Loss and accuracy panels (and architecture entropy for a search) per epoch.

    Each panel's legend sits under its title, above the axes, and the title (with the
    retrain's summary line) is wrapped to the figure: neither can cover a curve or be cut.
    """
    from nas.report.plotting import fit_suptitle, legend_above, plt

    final = final or {}
    axis = epoch_axis(records)
    x = axis.x
    entropy_cells = [c for c in ("normal", "reduce")
                     if np.isfinite(series(records, "entropy", c)).any()]
    panels = 3 if kind == "search" and entropy_cells else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.8), layout="constrained",
                             squeeze=False)
    loss_ax, acc_ax = axes[0][0], axes[0][1]
    held_out = "val" if kind == "search" else "test"
    for ax, what in ((loss_ax, "loss"), (acc_ax, "acc")):
        _line(ax, axis, series(records, f"train_{what}"), f"train {what}", color="#0072B2")
        if kind == "search":
            _line(ax, axis, series(records, f"val_{what}"), f"val {what}", color="#E69F00")
        else:
            _test_marker(ax, x, series(records, f"test_{what}"), final.get(f"test_{what}"),
                         what)
        _stages(ax, axis)
        ax.set_xlabel("epoch (all stages)" if axis.multi_stage else "epoch")
        ax.grid(alpha=0.3)
    loss_ax.set_ylabel("loss")
    acc_ax.set_ylabel("accuracy")
    legend_above(loss_ax, f"loss (train, {held_out})")
    legend_above(acc_ax, f"accuracy (train, {held_out})")
    if panels == 3:
        ax = axes[0][2]
        for cell, colour in zip(entropy_cells, ("#009E73", "#CC79A7"), strict=False):
            _line(ax, axis, series(records, "entropy", cell), cell, color=colour)
        _stages(ax, axis)
        ax.set_xlabel("epoch (all stages)" if axis.multi_stage else "epoch")
        ax.set_ylabel("mean entropy per edge (nats)")
        ax.grid(alpha=0.3)
        legend_above(ax, "architecture entropy")
    summary = final_summary(final)
    fit_suptitle(fig, title + (f"\n{summary}" if summary else ""), fontsize=10)
    return fig


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _latency_text(value: Any) -> str:
    """A latency entry of report.json: a number, ``{"ms": ...}``, or named ``{"ms"}`` dicts."""
    ms = _number(value)
    if ms is not None:
        return f"{ms:.3f} ms"
    if not isinstance(value, dict):
        return ""
    ms = _number(value.get("ms"))
    if ms is not None:
        where = value.get("hardware")
        return f"{ms:.3f} ms" + (f" ({where})" if isinstance(where, str) else "")
    parts = [f"{k} {_latency_text(v)}" for k, v in value.items()
             if isinstance(v, dict) and _number(v.get("ms")) is not None]
    return ", ".join(parts)


def final_summary(final: dict[str, Any]) -> str:
    """One line of a retrain's report.json figures, whatever of them it has."""
    parts = []
    acc, params, macs = (_number(final.get(k)) for k in ("test_acc", "params", "macs"))
    if acc is not None:
        parts.append(f"test acc {acc:.4f}")
    if params is not None:
        parts.append(f"params {params / 1e6:.3g}M")
    if macs is not None:
        parts.append(f"MACs {macs / 1e6:.3g}M")
    for key, name in (("predicted_latency", "predicted"), ("measured_latency", "measured")):
        text = _latency_text(final.get(key))
        if text:
            parts.append(f"{name} latency {text}")
    return "; ".join(parts)


def draw_latency(records: Sequence[dict[str, Any]], title: str) -> Figure:
    """Predicted latency of the soft architecture and of the genotype derived each epoch."""
    from nas.report.plotting import fit_suptitle, legend_above, plt

    axis = epoch_axis(records)
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    _line(ax, axis, series(records, "predicted_latency_ms"),
          "soft architecture", color="#0072B2")
    _line(ax, axis, series(records, "genotype_predicted_latency_ms"),
          "derived genotype", color="#D55E00", linestyle="--")
    _stages(ax, axis)
    label = latency_label(records)
    ax.set_ylabel(f"predicted latency (ms, {label})" if label else "predicted latency (ms)")
    ax.set_xlabel("epoch (all stages)" if axis.multi_stage else "epoch")
    ax.grid(alpha=0.3)
    legend_above(ax, "predicted latency per epoch")
    fit_suptitle(fig, title, fontsize=10)
    return fig
