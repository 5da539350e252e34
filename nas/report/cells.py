"""Drawing a cell as a graph, with a layered layout computed here.

A space describes each cell as a `CellGraph` (search_spaces/base.py); the layout
(`cell_layout`) is separate from the drawing and pure, so it can be tested without
looking at pictures. Unless the space places its nodes, it is a plain layered (Sugiyama
style) layout, small enough to do by hand: inputs in layer 0, every other node one layer
right of its deepest input, the output right of everything; nodes within a layer ordered
by the mean height of their inputs, which removes most crossings in cells this small.
Edges that skip layers, or that share both ends with another edge, are drawn as arcs so
they do not run through nodes or over each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from search_spaces.base import CellGraph
from search_spaces.darts_space import darts_cell_graph
from search_spaces.errors import GenotypeError
from search_spaces.op_spec import family_from_name, find_op_spec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

X_STEP = 2.0
Y_STEP = 1.25
NODE_RADIUS = 0.3

#: op family -> colour (colour-blind safe Okabe-Ito tones)
FAMILY_COLOURS = {
    "conv": "#0072B2",
    "pool": "#009E73",
    "skip": "#E69F00",
    "none": "#999999",
    "other": "#CC79A7",
}
ROLE_COLOURS = {"input": "#cfe2f3", "intermediate": "#fff2cc", "output": "#d9ead3"}


@dataclass(frozen=True)
class LayoutNode:
    id: int
    name: str  # plain text, e.g. "c_{k-2}" or "0"
    role: str  # "input" | "intermediate" | "output"
    x: float
    y: float


@dataclass(frozen=True)
class LayoutEdge:
    src: int
    dst: int
    op: str | None  # None: an unlabelled edge into the cell output (concatenation)
    rad: float  # curvature as in matplotlib's arc3 connection style; 0 is straight
    #: where the op name goes: centre and angle in degrees (None: no label)
    label: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class CellLayout:
    nodes: dict[int, LayoutNode]
    edges: list[LayoutEdge]


def op_family(op: str, namespace: str = "") -> str:
    """Colour group of an operation (conv / pool / skip / none / other, or a family an
    op spec names): its spec's, so a new op is drawn as its author classed it; a name
    without a spec (e.g. read from an old run) is classed by what its name suggests."""
    spec = find_op_spec(op, namespace)
    return spec.family if spec is not None else family_from_name(op)


def _layered(
    ids: Sequence[int], roles: dict[int, str], links: Sequence[tuple[int, int]]
) -> dict[int, tuple[float, float]]:
    """Positions of `ids` (in topological order) given directed `links`."""
    preds: dict[int, list[int]] = {i: [] for i in ids}
    for src, dst in links:
        preds[dst].append(src)
    layer: dict[int, int] = {}
    for i in ids:
        if roles[i] == "input":
            layer[i] = 0
        elif roles[i] != "output":
            layer[i] = 1 + max((layer[p] for p in preds[i]), default=0)
    last = max(layer.values(), default=0)
    for i in ids:
        if roles[i] == "output":
            layer[i] = last + 1
    pos: dict[int, tuple[float, float]] = {}
    for level in range(max(layer.values()) + 1):
        members = [i for i in ids if layer[i] == level]

        def barycentre(i: int) -> float:
            ys = [pos[p][1] for p in preds[i] if p in pos]
            return -sum(ys) / len(ys) if ys else 0.0

        if level > 0:
            members.sort(key=lambda i: (barycentre(i), ids.index(i)))
        top = (len(members) - 1) / 2
        for k, i in enumerate(members):
            pos[i] = (level * X_STEP, (top - k) * Y_STEP)
    return pos


#: curvatures tried for an edge, gentlest first; the first that clears every node wins
_RADS = (0.0, 0.08, 0.12, 0.16, 0.2, 0.25, 0.3, 0.4)
_CLEARANCE = NODE_RADIUS + 0.12


def _clearance(pos: dict[int, tuple[float, float]], src: int, dst: int, rad: float) -> float:
    """How close the curve from `src` to `dst` comes to the centre of any other node."""
    others = [xy for n, xy in pos.items() if n not in (src, dst)]
    if not others:
        return math.inf
    pts = np.array([_bezier(pos[src], pos[dst], rad, t)[:2] for t in np.linspace(0, 1, 41)])
    return float(np.linalg.norm(pts[:, None] - np.array(others)[None], axis=2).min())


def _arcs(
    pos: dict[int, tuple[float, float]], links: Sequence[tuple[int, int]]
) -> list[float]:
    """A curvature per link: straight if nothing is in the way, else the gentlest arc that
    passes every other node, bulging away from the middle of the picture when it can.
    Edges sharing both ends are fanned out so they do not lie on top of each other."""
    centre = float(np.mean([y for _, y in pos.values()]))
    rads: list[float] = []
    seen: dict[tuple[int, int], int] = {}
    count = {link: links.count(link) for link in links}
    for src, dst in links:
        # arc3 bends right of the direction of travel, so a negative rad bulges upwards
        outward = -1.0 if (pos[src][1] + pos[dst][1]) / 2 >= centre else 1.0
        candidates = [sign * r for r in _RADS for sign in ((outward, -outward) if r else (1,))]
        best = max(candidates, key=lambda r: _clearance(pos, src, dst, r))
        rad = next((r for r in candidates if _clearance(pos, src, dst, r) >= _CLEARANCE), best)
        k = seen.get((src, dst), 0)
        seen[(src, dst)] = k + 1
        if count[(src, dst)] > 1:
            rad += (k - (count[(src, dst)] - 1) / 2) * 0.5
        rads.append(rad)
    return rads


def _bezier(a: tuple[float, float], b: tuple[float, float], rad: float,
            t: float) -> tuple[float, float, float]:
    """Point `t` of the quadratic curve matplotlib's ``arc3,rad=`` draws from `a` to `b`,
    and the direction there in degrees, turned to read left to right.

    Its control point is the midpoint moved by ``rad * (dy, -dx)``; exact at equal aspect.
    """
    (x0, y0), (x1, y1) = a, b
    cx = (x0 + x1) / 2 + rad * (y1 - y0)
    cy = (y0 + y1) / 2 - rad * (x1 - x0)
    u = 1 - t
    x = u * u * x0 + 2 * u * t * cx + t * t * x1
    y = u * u * y0 + 2 * u * t * cy + t * t * y1
    angle = math.degrees(math.atan2(u * (cy - y0) + t * (y1 - cy), u * (cx - x0) + t * (x1 - cx)))
    if angle > 90:
        angle -= 180
    elif angle <= -90:
        angle += 180
    return x, y, angle


#: label size in data units (the figure is drawn at about one inch per unit): characters
#: at 7 pt are ~0.058 in wide; the half-height includes a little clearance
_CHAR_W, _HALF_H = 0.058, 0.085
_LABEL_TS = (0.5, 0.42, 0.58, 0.34, 0.66, 0.27, 0.73)


def _label_points(x: float, y: float, angle: float, width: float) -> list[tuple[float, float]]:
    """Points along a label's baseline direction, to test it against everything else."""
    dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [(x + f * width / 2 * dx, y + f * width / 2 * dy) for f in np.linspace(-1, 1, 9)]


def _place_labels(
    pos: dict[int, tuple[float, float]], links: Sequence[tuple[int, int]],
    ops: Sequence[str | None], rads: Sequence[float],
) -> list[tuple[float, float, float] | None]:
    """(x, y, angle) of each op label along its edge, chosen greedily to keep labels off
    each other, off nodes and off other edges; the midpoint wins ties."""
    curves = [np.array([_bezier(pos[s], pos[d], r, i / 40)[:2] for i in range(41)])
              for (s, d), r in zip(links, rads, strict=True)]
    centres = np.array(list(pos.values()))
    placed: list[np.ndarray] = []
    out: list[tuple[float, float, float] | None] = []
    for k, ((src, dst), op, rad) in enumerate(zip(links, ops, rads, strict=True)):
        if op is None:
            out.append(None)
            continue
        width = _CHAR_W * len(op) + 0.06
        best: tuple[float, tuple[float, float, float]] | None = None
        for t in _LABEL_TS:
            x, y, angle = _bezier(pos[src], pos[dst], rad, t)
            pts = np.array(_label_points(x, y, angle, width))
            cost = abs(t - 0.5) * 0.2
            for other in placed:
                d = np.linalg.norm(pts[:, None] - other[None], axis=2)
                cost += 2.0 * float((d < 2 * _HALF_H).sum())
            d = np.linalg.norm(pts[:, None] - centres[None], axis=2)
            cost += 5.0 * float((d < NODE_RADIUS + _HALF_H).sum())
            for j, curve in enumerate(curves):
                if j != k:
                    d = np.linalg.norm(pts[:, None] - curve[None], axis=2)
                    cost += 0.5 * float((d.min(axis=0) < _HALF_H).sum())
            if best is None or cost < best[0] - 1e-9:
                best = (cost, (x, y, angle))
        assert best is not None
        placed.append(np.array(_label_points(*best[1], width)))
        out.append(best[1])
    return out


def cell_layout(graph: CellGraph) -> CellLayout:
    """Where every node, edge and label of a cell goes. Nodes sit at the positions the
    space suggests, else in columns by depth; edges take the space's curvatures, else the
    gentlest arcs that clear every node."""
    ids = sorted(graph.node_names)
    links = [(src, dst) for src, dst, _ in graph.edges]
    for src, dst in links:
        if src not in graph.node_names or dst not in graph.node_names:
            raise GenotypeError(f"edge {src}->{dst} of the {graph.title} joins a node the "
                                f"cell does not have (nodes {ids[0]}..{ids[-1]})")
    if graph.positions is not None:
        pos = {i: (x * X_STEP, y * Y_STEP) for i, (x, y) in graph.positions.items()}
    else:
        pos = _layered(ids, graph.roles, links)
    rads = ([graph.arcs.get(link, 0.0) for link in links] if graph.arcs is not None
            else _arcs(pos, links))
    ops = [op for _, _, op in graph.edges]
    labels = _place_labels(pos, links, ops, rads)
    return CellLayout(
        nodes={i: LayoutNode(i, graph.node_names[i], graph.roles[i], *pos[i]) for i in ids},
        edges=[LayoutEdge(s, d, op, r, xy) for (s, d), op, r, xy in zip(
            links, ops, rads, labels, strict=True)],
    )


def darts_cell_layout(edges: Sequence[tuple[str, int]], concat: Sequence[int]) -> CellLayout:
    """Layout of one DARTS cell: pairs ``2i, 2i+1`` of `edges` feed intermediate node i."""
    return cell_layout(darts_cell_graph(edges, concat))


def tex(name: str) -> str:
    """Node names like ``c_{k-2}`` rendered as mathtext; plain names unchanged."""
    return f"${name}$" if "_{" in name else name


def _extent(layout: CellLayout) -> tuple[float, float, float, float]:
    """Data limits that hold every node, every arc and every label, plus a margin."""
    pts = [(n.x + dx, n.y + dy) for n in layout.nodes.values()
           for dx, dy in ((-NODE_RADIUS, -NODE_RADIUS), (NODE_RADIUS, NODE_RADIUS))]
    for e in layout.edges:
        a, b = layout.nodes[e.src], layout.nodes[e.dst]
        pts += [_bezier((a.x, a.y), (b.x, b.y), e.rad, t)[:2] for t in np.linspace(0, 1, 21)]
        if e.label is not None and e.op is not None:
            pts += _label_points(*e.label, _CHAR_W * len(e.op) + 0.06)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    margin = 0.3
    return min(xs) - margin, max(xs) + margin, min(ys) - margin, max(ys) + margin


def draw_cell(layout: CellLayout, title: str) -> Figure:
    """The cell as a figure: nodes as circles, op edges coloured by family and labelled."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, FancyArrowPatch

    from nas.report.plotting import fit_suptitle, plt

    x0, x1, y0, y1 = _extent(layout)
    width = max(6.0, (x1 - x0) * 1.05)
    height = max(3.0, (y1 - y0) * 1.05 + 0.8)
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.axis("off")
    circles = {}
    for node in layout.nodes.values():
        circle = Circle((node.x, node.y), NODE_RADIUS, facecolor=ROLE_COLOURS[node.role],
                        edgecolor="#333333", linewidth=1.2, zorder=3)
        ax.add_patch(circle)
        circles[node.id] = circle
        ax.text(node.x, node.y, tex(node.name), ha="center", va="center", fontsize=10,
                zorder=4)
    families: list[str] = []
    for edge in layout.edges:
        a, b = layout.nodes[edge.src], layout.nodes[edge.dst]
        if edge.op is None:
            colour, style, width_ = "#888888", "--", 1.0
        else:
            family = op_family(edge.op)
            if family not in families:
                families.append(family)
            colour, style, width_ = FAMILY_COLOURS.get(family, FAMILY_COLOURS["other"]), "-", 1.8
        ax.add_patch(FancyArrowPatch(
            (a.x, a.y), (b.x, b.y), patchA=circles[edge.src], patchB=circles[edge.dst],
            connectionstyle=f"arc3,rad={edge.rad}", arrowstyle="-|>", mutation_scale=12,
            color=colour, linestyle=style, linewidth=width_, zorder=2,
        ))
        if edge.op is not None:
            mx, my, angle = edge.label or _bezier((a.x, a.y), (b.x, b.y), edge.rad, 0.5)
            ax.text(mx, my, edge.op, ha="center", va="center", fontsize=7, color=colour,
                    rotation=angle, rotation_mode="anchor",
                    zorder=5, bbox={"boxstyle": "round,pad=0.15", "facecolor": "white",
                                    "edgecolor": "none", "alpha": 0.85})
    # known families in their fixed order, then any a registered op family brings
    ordered = [f for f in FAMILY_COLOURS if f in families] + [
        f for f in families if f not in FAMILY_COLOURS]
    handles = [Line2D([], [], color=FAMILY_COLOURS.get(f, FAMILY_COLOURS["other"]),
                      linewidth=2, label=f) for f in ordered]
    if any(e.op is None for e in layout.edges):
        handles.append(Line2D([], [], color="#888888", linestyle="--", label="concatenated"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8,
                   frameon=False)
    # the figure's title, wrapped to its width: an NB201 arch string is one long word
    fit_suptitle(fig, title, fontsize=11)
    return fig
