"""Matplotlib set-up shared by every picture, and writing a figure without half-files.

The `Agg` backend is chosen here, before pyplot is imported, because reports are made on
machines without a display (servers, CI) and must never try to open a window.

Titles and legends go through the helpers here so that no picture loses text at its edge
or hides data under a legend: `fit_suptitle` wraps a title to the figure's width (run
directory names and summary lines can be longer than any figure), and `legend_above`
puts an axes' legend, under the panel's title, above the axes instead of inside them.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import Colormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from search_spaces.fileio import atomic_write_bytes  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.legend import Legend
    from matplotlib.text import Text

DPI = 120
#: colour of a pruned op in the weight maps: a neutral mid grey, darker than the pale
#: tints next to the centre of the diverging map, so "pruned" never reads as "uniform"
PRUNED_GREY = "#9a9a9a"
#: share of the figure's width a title may use
TITLE_WIDTH = 0.96

__all__ = ["DPI", "PRUNED_GREY", "Figure", "fit_suptitle", "fit_text", "legend_above", "plt",
           "save_figure", "weights_cmap"]


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Render `fig` as PNG and put it at `path` atomically, then close the figure.

    The PNG is rendered in memory and renamed into place from a temp file in the same
    directory, so a reader (or a killed report) never sees a truncated picture, and a
    re-run replaces only this one file. The figure is closed even if writing fails, so a
    long report does not accumulate open figures.
    """
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        return atomic_write_bytes(path, buf.getvalue())
    finally:
        plt.close(fig)


def weights_cmap() -> Colormap:
    """The diverging colour map of architecture weights relative to uniform (blue: below,
    white: uniform, red: above); NaN (a pruned op) is a neutral grey."""
    return matplotlib.colormaps["RdBu_r"].with_extremes(bad=PRUNED_GREY)


#: where a too-long line may break, most preferred first: after "; " or ", " or before
#: " (" (between the parts of a title), at a space, after "+" (between NB201 node
#: groups), after "|-_./~" (inside a run directory name or an arch string)
_BREAKS = (r"(?<=; )|(?<=, )|(?= \()", r"(?<= )", r"(?<=\+)", r"(?<=[|\-_./~])")


def _wrap(text: str, fits: Callable[[str], bool], level: int = 0) -> list[str]:
    """`text` as few lines as `fits` allows, breaking at the gentlest `_BREAKS` first.

    Lines keep the spaces they end with (the caller strips them): a piece carried on to
    the next line must keep the space that separates it from what follows.
    """
    if fits(text.strip()) or len(text.strip()) <= 1:
        return [text]
    if level == len(_BREAKS):  # nothing left to break at: cut between characters
        lines, cur = [], ""
        for ch in text:
            if cur and not fits(cur + ch):
                lines.append(cur)
                cur = ""
            cur += ch
        return [*lines, cur]
    lines, cur = [], ""
    for piece in (p for p in re.split(_BREAKS[level], text) if p):
        if fits((cur + piece).strip()):
            cur += piece
            continue
        if cur.strip():
            lines.append(cur)
        *done, cur = _wrap(piece.lstrip(), fits, level + 1)
        lines += done
    return [*lines, cur] if cur.strip() else lines or [text]


def fit_text(fig: Figure, text: str, fontsize: float, width: float = TITLE_WIDTH,
             along: str = "width") -> str:
    """`text` with line breaks added so that no line is longer than `width` of the
    figure's width (or, with ``along="height"``, of its height: a vertical label).

    Lengths are measured with the figure's renderer at this font size, so the result
    holds at any DPI (text and figure scale together).
    """
    from matplotlib.font_manager import FontProperties

    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    prop = FontProperties(size=fontsize)
    size = fig.get_figwidth() if along == "width" else fig.get_figheight()
    limit = width * size * fig.dpi

    def fits(line: str) -> bool:
        w, _, _ = renderer.get_text_width_height_descent(line, prop, ismath=False)
        return bool(w <= limit)

    return "\n".join(line.strip() for part in text.split("\n") for line in _wrap(part, fits))


def fit_suptitle(fig: Figure, text: str, fontsize: float = 10, **kwargs: Any) -> Text:
    """The figure's title, wrapped to its width (constrained layout makes room for every
    line above the axes)."""
    return fig.suptitle(fit_text(fig, text, fontsize), fontsize=fontsize, **kwargs)


def legend_above(ax: Axes, title: str, fontsize: float = 8,
                 title_fontsize: float = 10) -> Legend | None:
    """The panel's `title` with its legend entries in one row under it, above the axes.

    Nothing is drawn inside the axes, so the legend can never hide a curve whatever the
    data do; constrained layout reserves the room. Without entries, a plain axes title.
    """
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        ax.set_title(title, fontsize=title_fontsize)
        return None
    return ax.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                     ncol=len(handles), title=title, title_fontsize=title_fontsize,
                     fontsize=fontsize, frameon=False, borderaxespad=0.2,
                     handlelength=1.6, columnspacing=1.2)
