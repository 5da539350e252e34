"""Architecture weights over epochs: as matrices (pure) and as heat maps.

P-DARTS prunes ops between stages, so a later stage's edges list fewer ops, in its own
order. `weight_matrix` puts every record onto one op axis (every op name seen, in
first-seen order) and leaves an op that an edge no longer has as NaN, which the heat
maps draw in a neutral grey: "pruned" must not look like "weight 0".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.report.cells import darts_node_name, nb201_node_name, tex
from nas.report.epochs import epoch_axis
from search_spaces.errors import InputError
from search_spaces.nb201 import NB201_EDGES
from search_spaces.supernet import cell_edges

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SOURCE = "arch_weights.jsonl"


def cell_types(records: Sequence[dict[str, Any]]) -> list[str]:
    """Cell types with weights, normal first (NB201 runs have only ``normal``)."""
    seen: list[str] = []
    for record in records:
        weights = record.get("weights")
        for cell in weights if isinstance(weights, dict) else ():
            if cell not in seen:
                seen.append(cell)
    order = {"normal": 0, "reduce": 1}
    return sorted(seen, key=lambda c: (order.get(c, 2), seen.index(c)))


def _edges_of(record: dict[str, Any], cell: str, n: int) -> tuple[list[Any], list[Any]]:
    ops, weights = record.get("edge_ops"), record.get("weights")
    ops = ops.get(cell) if isinstance(ops, dict) else None
    weights = weights.get(cell) if isinstance(weights, dict) else None
    if not isinstance(ops, list) or not isinstance(weights, list):
        raise InputError(f"{SOURCE} record {n}: no 'edge_ops' / 'weights' for the {cell} cell")
    if len(ops) != len(weights):
        raise InputError(f"{SOURCE} record {n}: {cell} cell has {len(ops)} edges in "
                         f"'edge_ops' but {len(weights)} in 'weights'")
    return ops, weights


def op_union(records: Sequence[dict[str, Any]], cell: str) -> list[str]:
    """Every op name any edge of `cell` had in any record, in first-seen order."""
    names: list[str] = []
    for n, record in enumerate(records, start=1):
        ops, _ = _edges_of(record, cell, n)
        for edge in ops:
            for op in edge if isinstance(edge, list) else ():
                if isinstance(op, str) and op not in names:
                    names.append(op)
    return names


def weight_matrix(
    records: Sequence[dict[str, Any]], cell: str, ops: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """(op names, array of shape epochs x edges x ops) for `cell`; NaN where pruned.

    `ops` fixes the op axis (default: `op_union`). Raises `InputError` for a record whose
    edges do not match its weights or whose edge count differs from the first record's.
    """
    names = list(ops) if ops is not None else op_union(records, cell)
    column = {op: k for k, op in enumerate(names)}
    num_edges: int | None = None
    out: np.ndarray | None = None
    for n, record in enumerate(records, start=1):
        edge_ops, weights = _edges_of(record, cell, n)
        if num_edges is None:
            num_edges = len(edge_ops)
            out = np.full((len(records), num_edges, len(names)), np.nan)
        elif len(edge_ops) != num_edges:
            raise InputError(f"{SOURCE} record {n}: {cell} cell has {len(edge_ops)} edges, "
                             f"record 1 has {num_edges}")
        assert out is not None
        for e, (eops, probs) in enumerate(zip(edge_ops, weights, strict=True)):
            if not isinstance(eops, list) or not isinstance(probs, list) or len(eops) != len(
                    probs):
                raise InputError(f"{SOURCE} record {n}: {cell} edge {e} lists a different "
                                 "number of ops and weights")
            for op, p in zip(eops, probs, strict=True):
                if op not in column:
                    raise InputError(f"{SOURCE} record {n}: op {op!r} is not in the op axis")
                if not isinstance(p, (int, float)) or isinstance(p, bool):
                    raise InputError(f"{SOURCE} record {n}: {cell} edge {e}: weight of "
                                     f"{op!r} is not a number")
                out[n - 1, e, column[op]] = float(p)
    if out is None:
        out = np.full((0, 0, len(names)), np.nan)
    return names, out


def edge_endpoints(space: str, num_edges: int) -> list[tuple[int, int]] | None:
    """(source, target) node of each edge, or None if the count fits no known cell."""
    if space == "nb201" and num_edges == len(NB201_EDGES):
        return list(NB201_EDGES)
    for steps in range(1, 16):
        if len(cell_edges(steps)) == num_edges:
            return cell_edges(steps)
    return None


def edge_titles(space: str, num_edges: int) -> list[str]:
    """Plain-text titles "i→j" with the node names the cell pictures use."""
    ends = edge_endpoints(space, num_edges)
    if ends is None:
        return [f"edge {e}" for e in range(num_edges)]
    if space == "nb201":
        return [f"{nb201_node_name(s)}→{nb201_node_name(d)}" for s, d in ends]
    steps = max(d for _, d in ends) - 1
    return [f"{darts_node_name(s, steps)}→{darts_node_name(d, steps)}" for s, d in ends]


def _tex_title(title: str) -> str:
    return "→".join(tex(part) for part in title.split("→"))


def _grid(space: str, num_edges: int) -> list[list[int]]:
    """Edges arranged one row per target node (its incoming edges left to right)."""
    ends = edge_endpoints(space, num_edges)
    if ends is None:
        cols = math.ceil(math.sqrt(max(num_edges, 1)))
        return [list(range(r, min(r + cols, num_edges))) for r in range(0, num_edges, cols)]
    rows: dict[int, list[int]] = {}
    for e, (_, dst) in enumerate(ends):
        rows.setdefault(dst, []).append(e)
    return [rows[d] for d in sorted(rows)]


def draw_alpha_over_epochs(
    records: Sequence[dict[str, Any]], cell: str, space: str, title: str
) -> Figure:
    """One small ops x epochs heat map per edge, on a shared 0..1 colour scale."""
    from matplotlib.ticker import MaxNLocator

    from nas.report.plotting import plt, weights_cmap

    names, mats = weight_matrix(records, cell)
    axis = epoch_axis(records)
    num_edges = mats.shape[1]
    grid = _grid(space, num_edges)
    titles = edge_titles(space, num_edges)
    ncols = max(len(r) for r in grid)
    nrows = len(grid)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.0 + 2.3 * ncols, 0.8 + (0.55 + 0.17 * len(names)) * nrows),
        layout="constrained", squeeze=False,
    )
    cmap = weights_cmap()
    image = None
    epochs = len(records)
    for r, row in enumerate(grid):
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(row):
                ax.axis("off")
                continue
            e = row[c]
            image = ax.imshow(
                np.ma.masked_invalid(mats[:, e, :].T), aspect="auto", cmap=cmap, vmin=0.0,
                vmax=1.0, interpolation="nearest",
                extent=(0.5, epochs + 0.5, len(names) - 0.5, -0.5),
            )
            for b in axis.boundaries:
                ax.axvline(b, color="white", linewidth=1.2)
            ax.set_title(_tex_title(titles[e]), fontsize=8)
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels(names if c == 0 else [], fontsize=6)
            ax.tick_params(axis="x", labelsize=6)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="softmax weight")
    stages = " (white lines: stage boundaries)" if axis.multi_stage else ""
    fig.suptitle(f"{title}: architecture weights per edge, ops x epoch{stages}", fontsize=10)
    fig.supxlabel("epoch", fontsize=9)
    return fig


def draw_alpha_final(
    records: Sequence[dict[str, Any]], cells: Sequence[str], space: str, title: str
) -> Figure:
    """The last record's weights, edges x ops per cell type, each value written in."""
    from nas.report.plotting import plt, weights_cmap

    mats = [weight_matrix(records, cell) for cell in cells]
    rows = max(m.shape[1] for _, m in mats)
    width = sum(1.6 + 0.62 * len(names) for names, _ in mats) + 1.0
    fig, axes = plt.subplots(1, len(cells), figsize=(width, 1.6 + 0.3 * rows),
                             layout="constrained", squeeze=False)
    cmap = weights_cmap()
    image = None
    for ax, cell, (names, m) in zip(axes[0], cells, mats, strict=True):
        final = m[-1]
        image = ax.imshow(np.ma.masked_invalid(final), cmap=cmap, vmin=0.0, vmax=1.0,
                          aspect="auto", interpolation="nearest")
        for (e, k), v in np.ndenumerate(final):
            if np.isfinite(v):
                ax.text(k, e, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if v < 0.55 else "black")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(final.shape[0]))
        ax.set_yticklabels([_tex_title(t) for t in edge_titles(space, final.shape[0])],
                           fontsize=7)
        ax.set_title(f"{cell} cell", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="softmax weight")
    where = f"epoch {len(records)}"
    axis = epoch_axis(records)
    if axis.multi_stage:
        first, _, _ = axis.stages[-1]
        where = f"stage {len(axis.stages)}, epoch {len(records) - first + 1}"
    fig.suptitle(f"{title}: final architecture weights ({where}; grey: pruned)", fontsize=10)
    return fig
