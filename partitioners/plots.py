"""Partition pictures (matplotlib Agg, no display), written atomically as PNG, mode 0644.

Uses ``matplotlib.figure.Figure`` directly, so no pyplot state or global backend is touched.
Classes are shown by name (pass label names, not codes) and clients by name where they have
one (``client_names``: the group values of a ``natural`` partition); counts use integer ticks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: at most this many tick labels on a client or class axis (beyond that they are unreadable)
MAX_TICK_LABELS = 40


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig: Any, path: str | os.PathLike) -> Path:
    from fednlp_bench.io_utils import atomic_write

    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _class_names(labels: Any) -> list[str]:
    from fednlp_bench.partitioners.inputs import encode

    return [str(c) for c in encode(labels)[0]]


def _client_axis(ax: Any, which: str, n: int, client_names: Sequence[str] | None) -> None:
    """Name the client ticks when the clients have names and are few enough; integer ticks otherwise."""
    from matplotlib.ticker import MaxNLocator

    axis = ax.xaxis if which == "x" else ax.yaxis
    if client_names is not None and n <= MAX_TICK_LABELS:
        names = [_short(str(c)) for c in list(client_names)[:n]]
        if which == "x":
            ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        else:
            ax.set_yticks(range(n), names, fontsize=7)
    else:
        axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _short(name: str, width: int = 24) -> str:
    return name if len(name) <= width else name[: width - 1] + "\u2026"


def label_heatmap_figure(parts: Sequence[np.ndarray], labels: Any, client_names: Sequence[str] | None = None) -> Any:
    """Clients x classes heat map of each client's normalised label distribution."""
    from fednlp_bench.partitioners.stats import _normalise, label_matrix

    dist = _normalise(label_matrix(parts, labels))
    fig = _figure(max(4.0, 0.3 * dist.shape[1] + 2), 5.0)
    ax = fig.add_subplot()
    im = ax.imshow(dist, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    names = _class_names(labels)
    if len(names) <= MAX_TICK_LABELS:
        ax.set_xticks(range(len(names)), [_short(n) for n in names], rotation=90, fontsize=7)
    _client_axis(ax, "y", len(dist), client_names)
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    fig.colorbar(im, ax=ax, label="share of client's rows")
    return fig


def plot_label_heatmap(parts: Sequence[np.ndarray], labels: Any, path: str | os.PathLike,
                       client_names: Sequence[str] | None = None) -> Path:
    """Write :func:`label_heatmap_figure` as PNG."""
    return _save(label_heatmap_figure(parts, labels, client_names), path)


def label_bars_figure(parts: Sequence[np.ndarray], labels: Any, max_clients: int = 100,
                      client_names: Sequence[str] | None = None) -> Any:
    """Per-client stacked bars of the label distribution (first ``max_clients`` clients)."""
    from fednlp_bench.partitioners.stats import _normalise, label_matrix

    dist = _normalise(label_matrix(parts, labels))[:max_clients]
    fig = _figure(max(5.0, 0.08 * len(dist) + 3), 4.0)
    ax = fig.add_subplot()
    bottom = np.zeros(len(dist))
    names = _class_names(labels)
    cmap = __import__("matplotlib").colormaps["tab20"]
    for c in range(dist.shape[1]):
        ax.bar(np.arange(len(dist)), dist[:, c], bottom=bottom, width=1.0, color=cmap(c % 20), label=names[c])
        bottom += dist[:, c]
    ax.set_xlim(-0.5, len(dist) - 0.5)
    ax.set_ylim(0, 1)
    _client_axis(ax, "x", len(dist), client_names)
    ax.set_xlabel("client")
    ax.set_ylabel("label share")
    if len(names) <= 20:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_label_bars(parts: Sequence[np.ndarray], labels: Any, path: str | os.PathLike, max_clients: int = 100,
                    client_names: Sequence[str] | None = None) -> Path:
    """Write :func:`label_bars_figure` as PNG."""
    return _save(label_bars_figure(parts, labels, max_clients, client_names), path)


def js_heatmap_figure(parts: Sequence[np.ndarray], labels: Any, max_clients: int = 500,
                      client_names: Sequence[str] | None = None) -> Any:
    """Client x client JS-divergence heat map (FedNLP Figure 2 style), first ``max_clients``."""
    from fednlp_bench.partitioners.stats import pairwise_js_divergence

    js = pairwise_js_divergence(list(parts)[:max_clients], labels)
    fig = _figure(5.5, 4.5)
    ax = fig.add_subplot()
    im = ax.imshow(js, interpolation="nearest", cmap="magma_r", vmin=0, vmax=1)
    _client_axis(ax, "x", len(js), client_names)
    _client_axis(ax, "y", len(js), client_names)
    ax.set_xlabel("client")
    ax.set_ylabel("client")
    fig.colorbar(im, ax=ax, label="JS divergence (base 2)")
    return fig


def plot_js_heatmap(parts: Sequence[np.ndarray], labels: Any, path: str | os.PathLike, max_clients: int = 500,
                    client_names: Sequence[str] | None = None) -> Path:
    """Write :func:`js_heatmap_figure` as PNG."""
    return _save(js_heatmap_figure(parts, labels, max_clients, client_names), path)


def size_bins(sizes: np.ndarray, max_bins: int = 50) -> np.ndarray:
    """Histogram edges on half-integers, so every bar covers whole row counts."""
    lo, hi = (int(sizes.min()), int(sizes.max())) if len(sizes) else (0, 0)
    if hi - lo + 1 <= max_bins:
        return np.arange(lo, hi + 2) - 0.5
    return np.unique(np.round(np.linspace(lo, hi + 1, max_bins + 1))) - 0.5


def client_sizes_figure(parts: Sequence[np.ndarray]) -> Any:
    """Histogram of client sizes (rows per client), integer ticks on both axes."""
    from matplotlib.ticker import MaxNLocator

    sizes = np.array([len(p) for p in parts])
    fig = _figure(5.0, 3.5)
    ax = fig.add_subplot()
    ax.hist(sizes, bins=size_bins(sizes), color="#4c72b0")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("rows per client")
    ax.set_ylabel("clients")
    return fig


def plot_client_sizes(parts: Sequence[np.ndarray], path: str | os.PathLike) -> Path:
    """Write :func:`client_sizes_figure` as PNG."""
    return _save(client_sizes_figure(parts), path)


def write_report(parts: Sequence[np.ndarray], labels: Any, out_dir: str | os.PathLike,
                 client_names: Sequence[str] | None = None) -> dict[str, Path]:
    """Write all pictures plus ``summary.json`` into ``out_dir`` (what ``fednlp-bench partition --plot`` emits).

    ``labels``: the label of every row by name (e.g. ``sport``, not a class code);
    ``client_names``: a name per client (e.g. its natural group), or None to number them.
    """
    from fednlp_bench.io_utils import atomic_write_text
    from fednlp_bench.partitioners.stats import summary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"sizes": plot_client_sizes(parts, out / "client_sizes.png")}
    if labels is not None:
        files["label_bars"] = plot_label_bars(parts, labels, out / "label_bars.png", client_names=client_names)
        files["label_heatmap"] = plot_label_heatmap(parts, labels, out / "label_heatmap.png", client_names=client_names)
        files["js_heatmap"] = plot_js_heatmap(parts, labels, out / "js_heatmap.png", client_names=client_names)
    report = summary(parts, labels)
    if client_names is not None:
        report["client_names"] = [str(c) for c in client_names]
    files["summary"] = atomic_write_text(out / "summary.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    return files


def natural_client_names(groups_per_client: Sequence[Sequence[Any]]) -> list[str]:
    """A name per client of a ``natural`` partition: its group, or the groups pooled into it."""
    names = []
    for groups in groups_per_client:
        values = [str(g) for g in groups]
        if len(values) == 1:
            names.append(values[0])
        elif len(values) == 2:
            names.append(" + ".join(values))
        else:
            names.append(f"{values[0]} + {len(values) - 1} pooled groups")
    return names
