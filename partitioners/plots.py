"""Partition pictures (matplotlib Agg, no display), written atomically as PNG.

Uses ``matplotlib.figure.Figure`` directly, so no pyplot state or global backend is touched.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _class_names(labels: Any) -> list[str]:
    from fednlp_bench.partitioners.inputs import encode

    return [str(c) for c in encode(labels)[0]]


def plot_label_heatmap(parts: Sequence[np.ndarray], labels: Any, path: str | os.PathLike) -> Path:
    """Clients x classes heat map of each client's normalised label distribution."""
    from fednlp_bench.partitioners.stats import _normalise, label_matrix

    dist = _normalise(label_matrix(parts, labels))
    fig = _figure(max(4.0, 0.3 * dist.shape[1] + 2), 5.0)
    ax = fig.add_subplot()
    im = ax.imshow(dist, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    names = _class_names(labels)
    if len(names) <= 40:
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    fig.colorbar(im, ax=ax, label="share of client's rows")
    return _save(fig, path)


def plot_label_bars(parts: Sequence[np.ndarray], labels: Any, path: str | os.PathLike, max_clients: int = 100) -> Path:
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
    ax.set_xlabel("client")
    ax.set_ylabel("label share")
    if len(names) <= 20:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def plot_js_heatmap(parts: Sequence[np.ndarray], labels: Any, path: str | os.PathLike, max_clients: int = 500) -> Path:
    """Client x client JS-divergence heat map (FedNLP Figure 2 style), first ``max_clients``."""
    from fednlp_bench.partitioners.stats import pairwise_js_divergence

    js = pairwise_js_divergence(list(parts)[:max_clients], labels)
    fig = _figure(5.5, 4.5)
    ax = fig.add_subplot()
    im = ax.imshow(js, interpolation="nearest", cmap="magma_r", vmin=0, vmax=1)
    ax.set_xlabel("client")
    ax.set_ylabel("client")
    fig.colorbar(im, ax=ax, label="JS divergence (base 2)")
    return _save(fig, path)


def plot_client_sizes(parts: Sequence[np.ndarray], path: str | os.PathLike) -> Path:
    """Histogram of client sizes (rows per client)."""
    sizes = np.array([len(p) for p in parts])
    fig = _figure(5.0, 3.5)
    ax = fig.add_subplot()
    ax.hist(sizes, bins=min(50, max(1, len(np.unique(sizes)))), color="#4c72b0")
    ax.set_xlabel("rows per client")
    ax.set_ylabel("clients")
    return _save(fig, path)


def write_report(parts: Sequence[np.ndarray], labels: Any, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write all pictures plus ``summary.json`` into ``out_dir`` (what ``fednlp-bench partition --plot`` emits)."""
    from fednlp_bench.partitioners.stats import summary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"sizes": plot_client_sizes(parts, out / "client_sizes.png")}
    if labels is not None:
        files["label_bars"] = plot_label_bars(parts, labels, out / "label_bars.png")
        files["label_heatmap"] = plot_label_heatmap(parts, labels, out / "label_heatmap.png")
        files["js_heatmap"] = plot_js_heatmap(parts, labels, out / "js_heatmap.png")
    text = json.dumps(summary(parts, labels), indent=2, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix="summary.json.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, out / "summary.json")
    files["summary"] = out / "summary.json"
    return files
