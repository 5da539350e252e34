"""Matplotlib set-up shared by every picture, and writing a figure without half-files.

The `Agg` backend is chosen here, before pyplot is imported, because reports are made on
machines without a display (servers, CI) and must never try to open a window.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import Colormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from search_spaces.fileio import atomic_write_bytes  # noqa: E402

DPI = 120

__all__ = ["DPI", "Figure", "plt", "save_figure", "weights_cmap"]


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
    """The colour map of architecture weights; NaN (a pruned op) is a neutral grey."""
    return matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
