"""Architecture weights over epochs: as matrices (pure) and as heat maps.

P-DARTS prunes ops between stages, so a later stage's edges list fewer ops, in its own
order. `weight_matrix` puts every record onto one op axis (every op name seen, in
first-seen order) and leaves an op that an edge no longer has as NaN, which the heat
maps draw in a neutral grey: "pruned" must not look like "weight 0".

Colour is the weight relative to uniform, ``w * K`` with K the ops the edge has in that
record, on a log scale centred on 1 (`relative_weights`, `ratio_scale`). A fixed 0..1
scale of raw weights shows nothing of a short run (every weight stays near 1/K, one
colour everywhere), and raw weights are not comparable across P-DARTS stages, whose
uniform value moves from 1/8 to 1/5 to 1/3 as ops are pruned. ``w * K`` is 1 for "no
preference" in every stage; the scale spans the data's own spread around 1, symmetric so
that the centre colour always means uniform, and at most 1/K..K, the range a long run
reaches (one op near 1, the others near 0; anything below 1/K is drawn as 1/K).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.report.cells import tex
from nas.report.epochs import epoch_axis
from search_spaces.base import SearchSpace
from search_spaces.darts_space import darts_node_name
from search_spaces.errors import InputError
from search_spaces.space import SPACES
from search_spaces.supernet import cell_edges

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SOURCE = "arch_weights.jsonl"
#: the narrowest colour scale: 1/RATIO_FLOOR..RATIO_FLOOR, so weights that never move
#: from uniform show as uniform instead of being stretched over the whole map
RATIO_FLOOR = 1.02
#: colour bar label of every weight map: what the colour is, exactly
RATIO_LABEL = ("softmax weight × K\nK = ops on the edge at that epoch\n"
               "1 = uniform weight 1/K; log scale")
#: candidate colour bar ticks above 1 (those below are their reciprocals)
_NICE = (1.01, 1.02, 1.05, 1.1, 1.2, 1.5, 2.0, 3.0, 4.0, 5.0, 8.0, 10.0, 16.0, 20.0, 32.0,
         50.0, 64.0, 100.0)


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


def relative_weights(mats: np.ndarray) -> np.ndarray:
    """Each weight times the number of ops its edge has in its record (the finite entries
    along the last axis): 1 is uniform whatever P-DARTS pruned. NaN stays NaN."""
    k = np.isfinite(mats).sum(axis=-1, keepdims=True)
    return mats * k


def ops_per_edge(mats: np.ndarray) -> int:
    """The most ops any edge has in any record (K of the widest edge)."""
    return int(np.isfinite(mats).sum(axis=-1).max(initial=0))


def ratio_scale(rel: np.ndarray, k_max: int) -> tuple[float, str]:
    """(r, extend): the colour scale 1/r..r for relative weights `rel`, and which ends of
    the colour bar have values beyond it ("neither", "min", "max" or "both").

    r is the data's largest ratio to uniform either way (so a short run's 0.96 vs 1.12
    get clearly different colours), between `RATIO_FLOOR` and `k_max`, the most ops of
    an edge (a softmax weight is at most 1, so w * K <= K; a weight further below
    uniform than 1/K is clipped to the end of the scale).
    """
    finite = rel[np.isfinite(rel)]
    if not finite.size:
        return 2.0, "neither"
    positive = finite[finite > 0]
    low = float(positive.min()) if positive.size else 0.0
    spread = max(float(finite.max()), 1.0 / low if low > 0 else math.inf)
    r = min(max(spread, RATIO_FLOOR), max(k_max, RATIO_FLOOR))
    below = bool((finite < 1.0 / r * (1 - 1e-9)).any())
    above = bool((finite > r * (1 + 1e-9)).any())
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max",
              (True, True): "both"}[(below, above)]
    return r, extend


def ratio_ticks(r: float) -> list[float]:
    """Colour bar ticks for the scale 1/r..r: 1 and round ratios spread evenly in log."""
    gap = math.log(r) / 3.5
    picks: list[float] = []
    for t in reversed(_NICE):
        if t > r * (1 + 1e-9) or math.log(t) < 0.8 * gap:
            continue
        if not picks or math.log(picks[-1]) - math.log(t) >= gap:
            picks.append(t)
    return [1 / t for t in picks] + [1.0] + picks[::-1]


def _ratio_norm(rel: np.ndarray, k_max: int) -> tuple[Any, str]:
    """(LogNorm for 1/r..r, extend) of relative weights `rel`."""
    from matplotlib.colors import LogNorm

    r, extend = ratio_scale(rel, k_max)
    return LogNorm(vmin=1.0 / r, vmax=r, clip=False), extend


def _clipped(rel: np.ndarray, lowest: float) -> np.ma.MaskedArray:
    """`rel` masked where NaN (pruned), with zeros raised to `lowest`: a log scale would
    otherwise mask a weight that underflowed to 0 too, and draw it as if pruned."""
    with np.errstate(invalid="ignore"):
        return np.ma.masked_invalid(np.where(rel <= 0, lowest, rel))  # NaN <= 0 is False


def _ratio_colorbar(fig: Figure, image: Any, axes: Any, extend: str, pruned: bool) -> Any:
    """The colour bar of relative weights, with round ticks and the uniform value marked;
    its label is wrapped to the figure's height so that no word of it is cut off."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    from nas.report.plotting import fit_text

    norm = image.norm
    bar = fig.colorbar(image, ax=axes, shrink=0.8, extend=extend)
    label = RATIO_LABEL + ("\ngrey: op pruned" if pruned else "")
    bar.set_label(fit_text(fig, label, 8, width=0.7, along="height"), fontsize=8)
    ticks = ratio_ticks(float(norm.vmax))
    bar.ax.yaxis.set_major_locator(FixedLocator(ticks))
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    bar.ax.yaxis.set_minor_locator(FixedLocator([]))
    bar.ax.axhline(1.0, color="black", linewidth=1.0)
    return bar


def _space(space: str) -> SearchSpace[Any] | None:
    return SPACES.get(space)


def edge_endpoints(space: str, num_edges: int) -> list[tuple[int, int]] | None:
    """(source, target) node of each edge, or None if the count fits no known cell: the
    space's own edges when it is registered and the count is its, else a DARTS-like cell
    with as many intermediate nodes as the count needs (a run of another `steps`)."""
    known = _space(space)
    if known is not None:
        ends = list(known.edge_ends(known.cell_types[0]))
        if len(ends) == num_edges:
            return ends
    for steps in range(1, 16):
        if len(cell_edges(steps)) == num_edges:
            return cell_edges(steps)
    return None


def edge_titles(space: str, num_edges: int) -> list[str]:
    """Plain-text titles "i→j" with the node names the cell pictures use."""
    ends = edge_endpoints(space, num_edges)
    if ends is None:
        return [f"edge {e}" for e in range(num_edges)]
    known = _space(space)
    steps = max(d for _, d in ends) - 1
    own = known is not None and ends == list(known.edge_ends(known.cell_types[0]))

    def name(index: int) -> str:
        return known.node_name(index) if own and known is not None else darts_node_name(
            index, steps)

    return [f"{name(s)}→{name(d)}" for s, d in ends]


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
    """One small ops x epochs heat map per edge, all on one colour scale of the weight
    relative to uniform (see the module's doc)."""
    from matplotlib.ticker import MaxNLocator

    from nas.report.plotting import fit_suptitle, plt, weights_cmap

    names, mats = weight_matrix(records, cell)
    rel = relative_weights(mats)
    norm, extend = _ratio_norm(rel, ops_per_edge(mats))
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
                _clipped(rel[:, e, :].T, norm.vmin), aspect="auto", cmap=cmap, norm=norm,
                interpolation="nearest",
                extent=(0.5, epochs + 0.5, len(names) - 0.5, -0.5),
            )
            for b in axis.boundaries:
                ax.axvline(b, color="black", linewidth=1.2)
            ax.set_title(_tex_title(titles[e]), fontsize=8)
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels(names if c == 0 else [], fontsize=6)
            ax.tick_params(axis="x", labelsize=6)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if image is not None:
        _ratio_colorbar(fig, image, axes.ravel().tolist(), extend, bool(np.isnan(mats).any()))
    stages = " (black lines: stage boundaries)" if axis.multi_stage else ""
    fit_suptitle(fig, f"{title}: architecture weights per edge relative to uniform, ops x "
                 f"epoch{stages}", fontsize=10)
    fig.supxlabel("epoch", fontsize=9)
    return fig


def draw_alpha_final(
    records: Sequence[dict[str, Any]], cells: Sequence[str], space: str, title: str
) -> Figure:
    """The last record's weights, edges x ops per cell type: coloured relative to uniform
    like the maps over epochs, each softmax weight written in."""
    from nas.report.plotting import fit_suptitle, plt, weights_cmap

    mats = [weight_matrix(records, cell) for cell in cells]
    finals = [relative_weights(m[-1]) for _, m in mats]
    pruned = "; grey: pruned" if any(bool(np.isnan(f).any()) for f in finals) else ""
    norm, extend = _ratio_norm(np.concatenate([f.ravel() for f in finals]),
                               max(ops_per_edge(m[-1]) for _, m in mats))
    rows = max(m.shape[1] for _, m in mats)
    width = sum(1.6 + 0.62 * len(names) for names, _ in mats) + 1.0
    fig, axes = plt.subplots(1, len(cells), figsize=(width, 1.6 + 0.3 * rows),
                             layout="constrained", squeeze=False)
    cmap = weights_cmap()
    image = None
    for ax, cell, (names, m), rel in zip(axes[0], cells, mats, finals, strict=True):
        final = m[-1]
        image = ax.imshow(_clipped(rel, norm.vmin), cmap=cmap, norm=norm, aspect="auto",
                          interpolation="nearest")
        for (e, k), v in np.ndenumerate(final):
            if np.isfinite(v):
                ax.text(k, e, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color=_text_colour(cmap(norm(max(rel[e, k], norm.vmin)))))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(final.shape[0]))
        ax.set_yticklabels([_tex_title(t) for t in edge_titles(space, final.shape[0])],
                           fontsize=7)
        ax.set_title(f"{cell} cell", fontsize=9)
    if image is not None:
        _ratio_colorbar(fig, image, axes.ravel().tolist(), extend, bool(pruned))
    where = f"epoch {len(records)}"
    axis = epoch_axis(records)
    if axis.multi_stage:
        first, _, _ = axis.stages[-1]
        where = f"stage {len(axis.stages)}, epoch {len(records) - first + 1}"
    fit_suptitle(fig, f"{title}: final architecture weights ({where}; numbers: softmax "
                 f"weight; colour: relative to uniform{pruned})", fontsize=10)
    return fig


def _text_colour(rgba: Any) -> str:
    """Black on light cells, white on dark ones (relative luminance of the cell)."""
    r, g, b = (float(c) for c in rgba[:3])
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"
