"""Leaderboard plots as PNG files (matplotlib Agg, no pyplot global state).

Record strings are drawn with math text disabled and passed through
:func:`~fednlp_bench.record_checks.safe_text`, so a ``$`` or an odd character in a name cannot
break rendering. Legends sit outside the axes (below them), so long labels never squash a
plot. PNGs carry no software/time metadata, so the same input gives the same bytes.
"""
from __future__ import annotations

import logging
import struct
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from fednlp_bench.io_utils import atomic_write
from fednlp_bench.leaderboard.tables import Table, number
from fednlp_bench.record_checks import safe_text

log = logging.getLogger(__name__)

DPI = 100
WIDE = (6.4, 3.4)  # inches, before the legend below the axes
_RC = {"text.parse_math": False, "font.size": 9}
LEGEND_CHARS = 60


def _label(text: str) -> str:
    text = textwrap.shorten(safe_text(text, 200), LEGEND_CHARS, placeholder=" ...")
    return " " + text if text.startswith("_") else text  # "_x" would be hidden from the legend


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    return struct.unpack(">II", head[16:24])


def _save(fig: Figure, path: Path) -> tuple[int, int]:
    FigureCanvasAgg(fig)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.08,
                                             metadata={"Software": None}))
    return png_size(path)


def _legend_below(ax, n: int) -> None:
    if n:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2 if n > 3 else 1, fontsize=8,
                  frameon=False)


def convergence_plot(table: Table, path: Path) -> tuple[int, int] | None:
    """Primary metric vs round, one line per row (mean over seeds, ±std band).

    Reference rows are dashed horizontal lines at their final mean. Returns the image size
    in pixels, or None when no row has a curve of at least two points.
    """
    rows = [r for r in table.rows if len(r.curve) >= 2]
    if not rows:
        return None
    split = "validation" if all(r.curve_split == "val" for r in rows) else "test"
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=WIDE, dpi=DPI)
        ax = fig.add_subplot()
        for i, row in enumerate(rows):
            x = np.array([p.round for p in row.curve])
            y = np.array([p.mean for p in row.curve])
            color = f"C{i % 10}"
            ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, lw=1.5, color=color, label=_label(row.label))
            sd = np.array([p.std if p.std is not None else 0.0 for p in row.curve])
            if sd.any():
                ax.fill_between(x, y - sd, y + sd, color=color, alpha=0.15, lw=0)
        if table.reference is not None and table.reference.primary.mean is not None:
            ax.axhline(table.reference.primary.mean, color="0.35", ls="--", lw=1.2, label="centralized (final)")
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{table.primary} ({split})")
        ax.grid(True, alpha=0.3)
        _legend_below(ax, len(rows) + (table.reference is not None))
        return _save(fig, path)


def _label_counts(stats: dict[str, Any]) -> np.ndarray | None:
    counts = stats.get("label_counts")
    if not isinstance(counts, list) or not counts or not all(isinstance(r, list) for r in counts):
        return None
    width = len(counts[0])
    if width == 0 or width > 10_000 or len(counts) > 100_000 or any(len(r) != width for r in counts):
        return None
    values = [[number(v) for v in r] for r in counts]
    if any(v is None or v < 0 for r in values for v in r):
        return None
    return np.asarray(values, dtype=np.float64)


def partition_heatmap(stats: dict[str, Any], title: str, path: Path) -> tuple[int, int] | None:
    """Clients x labels heatmap of each client's label distribution (rows sum to 1), with each
    client's number of training examples as a bar next to its row (quantity skew shows there).

    Returns the image size in pixels, or None when ``stats`` has no usable counts.
    """
    counts = _label_counts(stats)
    if counts is None:
        return None
    totals = counts.sum(axis=1)
    dist = np.divide(counts, totals[:, None], out=np.zeros_like(counts), where=totals[:, None] > 0)
    n_clients, n_labels = dist.shape
    names = stats.get("label_names")
    if not (isinstance(names, list) and len(names) == n_labels):
        names = [str(i) for i in range(n_labels)]
    mean_js = number(stats.get("mean_js"))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(6.4, 3.6), dpi=DPI)
        ax, bars = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [4, 1.2], "wspace": 0.05})
        im = ax.imshow(dist, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_xlabel("label")
        ax.set_ylabel("client")
        if n_labels <= 30:
            ax.set_xticks(range(n_labels))
            ax.set_xticklabels([safe_text(n, 16) for n in names], rotation=45 if n_labels > 6 else 0,
                               ha="right" if n_labels > 6 else "center", fontsize=7)
        if n_clients <= 30:
            ax.set_yticks(range(n_clients))
            ax.tick_params(axis="y", labelsize=6)
        bars.barh(np.arange(n_clients), totals, color="0.45", height=0.8)
        bars.set_xlabel("train examples")
        bars.tick_params(axis="x", labelsize=7)
        bars.grid(True, axis="x", alpha=0.3)
        heading = textwrap.shorten(safe_text(title, 200), 80, placeholder=" ...")
        if mean_js is not None:
            heading += f"\nmean JS divergence of client label distributions: {mean_js:.3f}"
        ax.set_title(heading, fontsize=9, loc="left")
        fig.colorbar(im, ax=[ax, bars], label="share of client's samples", location="bottom", shrink=0.6,
                     pad=0.2, aspect=40)
        return _save(fig, path)


def heterogeneity_plot(series: dict[str, list[tuple[float, float, float | None]]], metric: str,
                       reference: float | None, path: Path) -> tuple[int, int] | None:
    """Primary metric (mean, 95% CI bars) against the partition's mean JS divergence, one line per
    algorithm; ``series`` maps a label to (js, mean, ci half) points. None with fewer than two
    partitions."""
    if len({x for pts in series.values() for x, _, _ in pts}) < 2:
        return None
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=WIDE, dpi=DPI)
        ax = fig.add_subplot()
        for i, (label, pts) in enumerate(series.items()):
            pts = sorted(pts)
            x = [p[0] for p in pts]
            y = [p[1] for p in pts]
            err = [p[2] or 0.0 for p in pts]
            ax.errorbar(x, y, yerr=err, marker="o", ms=3.5, lw=1.4, capsize=2.5, color=f"C{i % 10}",
                        label=_label(label))
        if reference is not None:
            ax.axhline(reference, color="0.35", ls="--", lw=1.2, label="centralized")
        ax.set_xlabel("heterogeneity: mean JS divergence of client label distributions")
        ax.set_ylabel(f"final test {metric}")
        ax.grid(True, alpha=0.3)
        _legend_below(ax, len(series) + (reference is not None))
        return _save(fig, path)


def _deltas(points: Sequence[Any]) -> str:
    """``δ = 1e-05`` (or several, or ``δ not recorded``): an epsilon means nothing without its delta."""
    deltas = sorted({p.delta for p in points if p.delta is not None})
    text = "δ = " + ", ".join(f"{d:.2g}" for d in deltas) if deltas else ""
    if any(p.delta is None for p in points):
        text = f"{text}; δ not recorded" if text else "δ not recorded"
    return text


def privacy_plot(points: Sequence[Any], baselines: Sequence[tuple[str, float]], metric: str,
                 path: Path) -> tuple[int, int] | None:
    """Privacy-utility: epsilon (log scale) against the primary metric (mean, 95% CI bars), one
    marker per DP row (circle: user level, square: sample level), dotted lines for the same
    setup without DP."""
    if not points:
        return None
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=WIDE, dpi=DPI)
        ax = fig.add_subplot()
        for level, marker in (("user", "o"), ("sample", "s")):
            pts = sorted((p.epsilon, p.primary.mean, p.primary.half or 0.0) for p in points if p.level == level)
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker=marker,
                            ls="-" if level == "user" else "none", capsize=2.5, ms=5,
                            label=f"{level}-level DP" + (" (DP-SGD)" if level == "sample" else " (DP-FedAvg)")
                            + f", {_deltas([p for p in points if p.level == level])}")
        for j, (label, value) in enumerate(baselines):
            ax.axhline(value, color=f"C{(j + 2) % 10}", ls=":", lw=1.3, label=_label(label))
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # math text is off: no 10^x labels
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_xlabel("epsilon at the δ in the legend (log scale; smaller = more private)")
        ax.set_ylabel(f"final test {metric}")
        ax.grid(True, alpha=0.3, which="both")
        _legend_below(ax, 2 + len(baselines))
        return _save(fig, path)
