"""Partition statistics and pictures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fednlp_bench import partitioners
from fednlp_bench.partitioners import stats


def test_label_matrix_and_js_bounds() -> None:
    labels = np.array(["a", "a", "b", "b", "c", "c"])
    parts = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5])]
    counts = stats.label_matrix(parts, labels)
    assert counts.tolist() == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    # one-hot client vs uniform 3-class prior, base 2
    js = stats.client_js_divergence(parts, labels)
    p, m = np.array([1, 0, 0.0]), np.array([2 / 3, 1 / 6, 1 / 6])
    q = np.full(3, 1 / 3)
    expected = 0.5 * np.sum(p[p > 0] * np.log2(p[p > 0] / m[p > 0])) + 0.5 * np.sum(q * np.log2(q / m))
    assert np.allclose(js, expected)
    assert stats.mean_js_divergence([np.arange(6)], labels) == pytest.approx(0.0)
    assert stats.js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    pair = stats.pairwise_js_divergence(parts, labels)
    assert pair.shape == (3, 3) and np.allclose(np.diag(pair), 0) and np.allclose(pair, pair.T)
    assert np.allclose(pair[0, 1], 1.0)


def test_empty_client_is_ignored_in_mean_js() -> None:
    labels = np.array([0, 1, 0, 1])
    parts = [np.array([0, 1, 2, 3]), np.zeros(0, np.int64)]
    assert stats.mean_js_divergence(parts, labels) == pytest.approx(0.0)
    assert stats.summary(parts, labels)["empty_clients"] == 1


def test_summary_fields() -> None:
    labels = np.random.default_rng(0).integers(0, 5, 1000)
    parts = partitioners.make("quantity", 10, 0, beta=0.5).split(labels=labels)
    s = stats.summary(parts, labels)
    assert s["n_clients"] == 10 and s["n_rows"] == 1000 and s["n_classes"] == 5
    sizes = np.array([len(p) for p in parts])
    assert s["size_min"] == sizes.min() and s["size_max"] == sizes.max()
    assert s["size_mean"] == pytest.approx(100.0) and s["size_std"] == pytest.approx(sizes.std())
    assert 0 <= s["mean_js"] <= 1 and 1 <= s["classes_per_client_mean"] <= 5
    json.dumps(s)
    assert "mean_js" not in stats.summary(parts)


def test_plots_and_report_write_pngs(tmp_path) -> None:
    labels = np.random.default_rng(0).integers(0, 6, 600)
    parts = partitioners.make("dirichlet_label", 12, 0, alpha=0.3).split(labels=labels)
    assert stats.plot_label_heatmap(parts, labels, tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert stats.plot_client_sizes(parts, tmp_path / "sub" / "s.png").read_bytes()[:4] == b"\x89PNG"
    files = stats.write_report(parts, labels, tmp_path / "report")
    assert set(files) == {"sizes", "label_bars", "label_heatmap", "js_heatmap", "summary"}
    for path in files.values():
        assert path.stat().st_size > 0
    assert json.loads(files["summary"].read_text())["n_clients"] == 12
    assert not list(tmp_path.rglob("*.tmp"))
