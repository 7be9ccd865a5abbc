"""Leaderboard plots as PNG files (matplotlib Agg, no pyplot global state).

Record strings are drawn with math text disabled, so a ``$`` in a name
cannot break rendering. PNGs carry no software/time metadata, so the same
input gives the same bytes.
"""
from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fednlp_bench.io_utils import atomic_write
from fednlp_bench.leaderboard.tables import Table, number

log = logging.getLogger(__name__)

DPI = 100
CURVE_SIZE = (6.4, 3.6)  # inches
_RC = {"text.parse_math": False, "font.size": 9}


def _legend_label(text: str) -> str:
    return " " + text if text.startswith("_") else text  # "_x" would be hidden from the legend


def _save(fig: Figure, path: Path) -> tuple[int, int]:
    FigureCanvasAgg(fig)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=DPI, metadata={"Software": None}))
    w, h = fig.get_size_inches() * DPI
    return int(round(w)), int(round(h))


def convergence_plot(table: Table, path: Path) -> tuple[int, int] | None:
    """Primary metric vs round, one line per row (mean over seeds, ±std band).

    Reference rows are drawn as dashed horizontal lines at their final mean.
    Returns the image size in pixels, or None when no row has a curve.
    """
    rows = [r for r in table.rows if r.curve]
    refs = [r for r in table.references if r.primary.mean is not None]
    if not rows:
        return None
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=CURVE_SIZE, dpi=DPI)
        ax = fig.add_subplot()
        for i, row in enumerate(rows):
            x = np.array([p.round for p in row.curve])
            y = np.array([p.mean for p in row.curve])
            color = f"C{i % 10}"
            ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, lw=1.5, color=color,
                    label=_legend_label(row.label))
            sd = np.array([p.std if p.std is not None else 0.0 for p in row.curve])
            if sd.any():
                ax.fill_between(x, y - sd, y + sd, color=color, alpha=0.15, lw=0)
        for j, ref in enumerate(refs):
            ax.axhline(ref.primary.mean, color="0.35", ls=("--", ":", "-.")[j % 3], lw=1.2,
                       label=_legend_label(f"{ref.label} (reference)"))
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(table.primary)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best", frameon=False)
        fig.tight_layout()
        return _save(fig, path)


def _label_counts(stats: dict[str, Any]) -> np.ndarray | None:
    counts = stats.get("label_counts")
    if not isinstance(counts, list) or not counts or not all(isinstance(r, list) for r in counts):
        return None
    width = len(counts[0])
    if width == 0 or any(len(r) != width for r in counts):
        return None
    values = [[number(v) for v in r] for r in counts]
    if any(v is None or v < 0 for r in values for v in r):
        return None
    return np.asarray(values, dtype=np.float64)


def partition_heatmap(stats: dict[str, Any], title: str, path: Path) -> tuple[int, int] | None:
    """Clients x labels heatmap of each client's label distribution (rows sum to 1).

    Returns the image size in pixels, or None when ``stats`` has no usable counts.
    """
    counts = _label_counts(stats)
    if counts is None:
        return None
    totals = counts.sum(axis=1, keepdims=True)
    dist = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n_clients, n_labels = dist.shape
    names = stats.get("label_names")
    if not (isinstance(names, list) and len(names) == n_labels):
        names = [str(i) for i in range(n_labels)]
    mean_js = number(stats.get("mean_js"))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(6.4, 3.6), dpi=DPI)
        ax = fig.add_subplot()
        im = ax.imshow(dist, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_xlabel("label")
        ax.set_ylabel("client")
        if n_labels <= 30:
            ax.set_xticks(range(n_labels))
            ax.set_xticklabels([str(n)[:16] for n in names], rotation=45 if n_labels > 6 else 0,
                               ha="right" if n_labels > 6 else "center", fontsize=7)
        if n_clients <= 30:
            ax.set_yticks(range(n_clients))
            ax.tick_params(axis="y", labelsize=6)
        heading = textwrap.shorten(title, 80, placeholder=" ...")
        if mean_js is not None:
            heading += f"\nmean JS divergence of client label distributions: {mean_js:.3f}"
        ax.set_title(heading, fontsize=9)
        fig.colorbar(im, ax=ax, label="share of client's samples")
        fig.tight_layout()
        return _save(fig, path)
