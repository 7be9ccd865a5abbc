"""Build the leaderboard: records -> tables + overview -> README.md, index.html and plots/*.png.

No record can stop a build: every file is checked before use (:mod:`.load`), files that fail
are skipped and listed with the reason, and a plot that cannot be drawn is reported and left
out. The ``plots`` folder is never followed if it is a symbolic link (nothing is written into
or deleted from it then).
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from fednlp_bench.io_utils import atomic_write_text
from fednlp_bench.leaderboard.keys import canonical
from fednlp_bench.leaderboard.load import Skipped, load_records
from fednlp_bench.leaderboard.overview import TaskOverview, overview, privacy_id
from fednlp_bench.leaderboard.plots import convergence_plot, heterogeneity_plot, partition_heatmap, privacy_plot
from fednlp_bench.leaderboard.render_html import render_html
from fednlp_bench.leaderboard.render_md import render_markdown
from fednlp_bench.leaderboard.tables import Table, make_tables, partition_stats_record
from fednlp_bench.record_checks import safe_text

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"
PLOT_KINDS = ("curve", "partition", "hetero", "privacy")
Plots = dict[str, dict[str, tuple[str, int, int]]]  # section id -> kind -> (relative src, width, height)


@dataclass
class BuildReport:
    """What a build read, skipped and wrote."""

    n_records: int = 0
    n_tables: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    superseded: list[tuple[Path, Path]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every file found was used."""
        return not self.skipped

    def summary(self) -> str:
        lines = [f"{self.n_records} records, {self.n_tables} tables, {len(self.skipped)} skipped"]
        lines += [f"skipped {safe_text(str(s.path), 300)}: {s.reason}" for s in self.skipped]
        lines += [f"warning: {safe_text(w, 400)}" for w in self.warnings]
        return "\n".join(lines)


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:limit] or "x"


def _plot_name(kind: str, parts: list[str], key: object) -> str:
    digest = hashlib.sha256(canonical(key).encode()).hexdigest()[:10]
    return f"{kind}-{_slug('-'.join(parts))}-{digest}.png"


class _Plotter:
    """Draws each plot once, records what was written, turns drawing errors into warnings."""

    def __init__(self, out_dir: Path, report: BuildReport, wanted: bool = True) -> None:
        self.dir = out_dir / PLOTS_DIR
        self.report = report
        self.enabled = wanted and not self.dir.is_symlink() and (not self.dir.exists() or self.dir.is_dir())
        if wanted and not self.enabled:
            report.warnings.append(f"{self.dir} is a symbolic link or not a folder: not followed, no plots written")

    def draw(self, name: str, what: str, fn, *args) -> tuple[str, int, int] | None:
        if not self.enabled:
            return None
        path = self.dir / name
        try:
            size = fn(*args, path)
        except (ValueError, RuntimeError, OverflowError, MemoryError) as exc:
            self.report.warnings.append(f"plot {what} not drawn: {safe_text(str(exc), 160)}")
            return None
        if not size:
            return None
        self.report.written.append(path)
        return (f"{PLOTS_DIR}/{name}", *size)


def _table_plots(tables: list[Table], records: list, plotter: _Plotter, plots: Plots) -> None:
    heatmaps: dict[tuple, tuple[str, int, int] | None] = {}
    first: dict[tuple, str] = {}  # partition spec -> id of the first table that shows its heatmap
    for t in tables:
        entry: dict[str, tuple[str, int, int]] = {}
        k = t.key
        curve = plotter.draw(_plot_name("curve", [k.task, k.dataset, k.partition_method, k.model], k.id),
                             f"curve of {t.title}", convergence_plot, t)
        if curve:
            entry["curve"] = curve
        if t.heatmap is not None:
            if t.heatmap not in heatmaps:
                stats = partition_stats_record(records, t.heatmap) or {}
                name = _plot_name("partition", [k.task, k.dataset, k.partition_method], list(t.heatmap))
                heatmaps[t.heatmap] = plotter.draw(name, f"partition {t.partition_label}", partition_heatmap, stats,
                                                   f"{k.dataset}: {t.partition_label}")
                if heatmaps[t.heatmap] is None and plotter.enabled:
                    plotter.report.warnings.append(f"unusable partition.stats for {k.dataset} {t.partition_label}")
            if heatmaps[t.heatmap] and t.heatmap not in first:
                entry["heatmap"] = heatmaps[t.heatmap]  # type: ignore[assignment]
                first[t.heatmap] = t.id
            elif heatmaps[t.heatmap]:
                entry["heatmap_in"] = (first[t.heatmap], 0, 0)  # shown once, in the first table
        if entry:
            plots[t.id] = entry


def _overview_plots(overviews: list[TaskOverview], plotter: _Plotter, plots: Plots) -> None:
    for ov in overviews:
        for m in ov.matrices[:1]:  # the main setup; the others are listed as rows
            series: dict[str, list[tuple[float, float, float | None]]] = {}
            for label in m.labels:
                for t in m.tables:
                    row = m.cells.get((label, t.id))
                    if row is not None and t.heterogeneity is not None and row.primary.mean is not None:
                        series.setdefault(label, []).append((t.heterogeneity, row.primary.mean, row.primary.half))
            ref = m.reference.primary.mean if m.reference else None
            drawn = plotter.draw(_plot_name("hetero", [m.key.task, m.key.dataset], m.key.group), f"overview {m.title}",
                                 heterogeneity_plot, series, m.tables[0].primary, ref)
            if drawn:
                plots.setdefault(m.id, {})["hetero"] = drawn
        for (dataset, model), points in sorted(ov.privacy.items()):
            pid = privacy_id(ov.task, dataset, model)
            primary = ov.privacy_tables[(dataset, model)][0].primary
            drawn = plotter.draw(_plot_name("privacy", [ov.task, dataset], [ov.task, dataset, model]),
                                 f"privacy-utility {ov.task}/{dataset}", privacy_plot, points,
                                 ov.privacy_baselines.get((dataset, model), []), primary)
            if drawn:
                plots.setdefault(pid, {})["privacy"] = drawn


def _remove_stale_plots(plotter: _Plotter, keep: set[Path]) -> None:
    if not plotter.enabled or not plotter.dir.is_dir():
        return
    pattern = re.compile(rf"({'|'.join(PLOT_KINDS)})-.*-[0-9a-f]{{10}}\.png")
    for png in plotter.dir.iterdir():
        if png not in keep and pattern.fullmatch(png.name) and png.is_file() and not png.is_symlink():
            png.unlink()


def build(results_dirs: list[Path], out_dir: Path, plots: bool = True) -> BuildReport:
    """Read every record under ``results_dirs``; write README.md, index.html and plots/ in ``out_dir``.

    Unreadable or invalid files are skipped and listed in the report (and on
    the page), never fatal. The same input gives byte-identical output.
    ``plots=False`` writes the pages only (no plots drawn, ``plots/`` untouched).
    """
    out_dir = Path(out_dir)
    report = BuildReport()
    records, report.skipped = load_records(Path(d) for d in results_dirs)
    tables = make_tables(records, report.warnings, report.superseded, report.skipped)
    report.n_records = len(records) - sum(1 for s in report.skipped if s.path in {r.path for r in records})
    report.n_tables = len(tables)
    overviews = overview(tables)
    plotter = _Plotter(out_dir, report, wanted=plots)
    drawn: Plots = {}
    _table_plots(tables, records, plotter, drawn)
    _overview_plots(overviews, plotter, drawn)
    _remove_stale_plots(plotter, set(report.written))
    page = render_html(tables, overviews, out_dir, drawn, report)
    readme = render_markdown(tables, overviews, out_dir, drawn, report)
    report.written.append(atomic_write_text(out_dir / "README.md", readme))
    report.written.append(atomic_write_text(out_dir / "index.html", page))
    log.info("leaderboard: %d records, %d tables, %d skipped -> %s",
             report.n_records, report.n_tables, len(report.skipped), out_dir)
    return report
