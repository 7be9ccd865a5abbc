"""Partition statistics: per-client label counts, Jensen-Shannon divergence, summaries.

JS divergence is base 2 (in [0, 1]), the heterogeneity measure of FedNLP's Figure 2
(Lin et al. 2022). Plot functions live in :mod:`partitioners.plots` and are re-exported here.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from fednlp_bench.partitioners.errors import PartitionError
from fednlp_bench.partitioners.inputs import encode


def _codes(parts: Sequence[np.ndarray], labels: Any) -> tuple[np.ndarray, int]:
    classes, codes = encode(labels)
    n = len(codes)
    for p in parts:
        if len(p) and (int(np.max(p)) >= n or int(np.min(p)) < 0):
            raise PartitionError(f"partition holds row index {int(np.max(p))} but labels has {n} rows")
    return codes, len(classes)


def label_matrix(parts: Sequence[np.ndarray], labels: Any) -> np.ndarray:
    """(n_clients x n_classes) int64 counts; classes in sorted label order."""
    codes, n_classes = _codes(parts, labels)
    if not parts:
        return np.zeros((0, n_classes), dtype=np.int64)
    owner = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    rows = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
    flat = np.bincount(owner * n_classes + codes[rows], minlength=len(parts) * n_classes)
    return flat.reshape(len(parts), n_classes)


def _normalise(counts: np.ndarray) -> np.ndarray:
    tot = counts.sum(axis=-1, keepdims=True).astype(np.float64)
    return np.divide(counts, tot, out=np.zeros(counts.shape, np.float64), where=tot > 0)


def _kl2(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    ratio = np.divide(p, m, out=np.ones_like(p), where=p > 0)
    return np.sum(p * np.log2(ratio), axis=-1)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Base-2 Jensen-Shannon divergence along the last axis (broadcasting); in [0, 1]."""
    p, q = np.broadcast_arrays(np.asarray(p, np.float64), np.asarray(q, np.float64))
    m = 0.5 * (p + q)
    return np.clip(0.5 * _kl2(p, m) + 0.5 * _kl2(q, m), 0.0, 1.0)


def client_js_divergence(parts: Sequence[np.ndarray], labels: Any) -> np.ndarray:
    """JS divergence of each client's label distribution from the global prior (NaN if empty)."""
    counts = label_matrix(parts, labels)
    prior = _normalise(counts.sum(axis=0))
    js = js_divergence(_normalise(counts), prior[None, :])
    js[counts.sum(axis=1) == 0] = np.nan
    return js


def mean_js_divergence(parts: Sequence[np.ndarray], labels: Any) -> float:
    """Mean over non-empty clients of JS(client label distribution || global prior), base 2."""
    js = client_js_divergence(parts, labels)
    return float(np.nanmean(js)) if np.any(~np.isnan(js)) else 0.0


def pairwise_js_divergence(parts: Sequence[np.ndarray], labels: Any, chunk: int = 64) -> np.ndarray:
    """(n_clients x n_clients) JS divergence between client label distributions (FedNLP Fig. 2)."""
    dist = _normalise(label_matrix(parts, labels))
    k = len(dist)
    out = np.empty((k, k), dtype=np.float64)
    for start in range(0, k, chunk):
        out[start : start + chunk] = js_divergence(dist[start : start + chunk, None, :], dist[None, :, :])
    return out


def summary(parts: Sequence[np.ndarray], labels: Any = None) -> dict[str, Any]:
    """JSON-able statistics: client sizes (min/mean/max/std/cv) and, with labels, mean JS
    divergence to the prior and the mean number of classes per client."""
    sizes = np.array([len(p) for p in parts], dtype=np.float64)
    mean = float(sizes.mean()) if len(sizes) else 0.0
    out: dict[str, Any] = {
        "n_clients": len(parts),
        "n_rows": int(sizes.sum()),
        "size_min": int(sizes.min()) if len(sizes) else 0,
        "size_mean": mean,
        "size_max": int(sizes.max()) if len(sizes) else 0,
        "size_std": float(sizes.std()) if len(sizes) else 0.0,
        "size_cv": float(sizes.std() / mean) if mean > 0 else 0.0,
        "empty_clients": int(np.sum(sizes == 0)),
    }
    if labels is not None:
        counts = label_matrix(parts, labels)
        out["n_classes"] = int(counts.shape[1])
        out["mean_js"] = mean_js_divergence(parts, labels)
        out["classes_per_client_mean"] = float((counts > 0).sum(axis=1).mean()) if len(parts) else 0.0
    return out


from fednlp_bench.partitioners.plots import (  # noqa: E402  (re-export; plots imports matplotlib lazily)
    plot_client_sizes,
    plot_js_heatmap,
    plot_label_bars,
    plot_label_heatmap,
    write_report,
)

__all__ = [
    "client_js_divergence",
    "js_divergence",
    "label_matrix",
    "mean_js_divergence",
    "pairwise_js_divergence",
    "plot_client_sizes",
    "plot_js_heatmap",
    "plot_label_bars",
    "plot_label_heatmap",
    "summary",
    "write_report",
]
