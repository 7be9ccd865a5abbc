"""Build the leaderboard: records -> tables -> README.md, index.html and plots/*.png."""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from fednlp_bench.io_utils import atomic_write_text
from fednlp_bench.leaderboard.load import Skipped, load_records
from fednlp_bench.leaderboard.plots import convergence_plot, partition_heatmap
from fednlp_bench.leaderboard.render_html import render_html
from fednlp_bench.leaderboard.render_md import render_markdown
from fednlp_bench.leaderboard.tables import Table, canonical, make_tables, partition_stats_record

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"


@dataclass
class BuildReport:
    """What a build read, skipped and wrote."""

    n_records: int = 0
    n_tables: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every file found was used."""
        return not self.skipped

    def summary(self) -> str:
        lines = [f"{self.n_records} records, {self.n_tables} tables, {len(self.skipped)} skipped"]
        lines += [f"skipped {s.path}: {s.reason}" for s in self.skipped]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:limit] or "x"


def _plot_name(kind: str, parts: list[str], key: object) -> str:
    digest = hashlib.sha256(canonical(key).encode()).hexdigest()[:10]
    return f"{kind}-{_slug('-'.join(parts))}-{digest}.png"


def _write_plots(
    tables: list[Table], records: list, out_dir: Path, report: BuildReport
) -> dict[str, dict[str, tuple[str, int, int]]]:
    plots_dir = out_dir / PLOTS_DIR
    out: dict[str, dict[str, tuple[str, int, int]]] = {}
    heatmaps: dict[tuple, tuple[str, int, int] | None] = {}
    for t in tables:
        entry: dict[str, tuple[str, int, int]] = {}
        k = t.key
        name = _plot_name("curve", [k.task, k.dataset, k.partition_method, k.model], t.key.id)
        size = convergence_plot(t, plots_dir / name)
        if size:
            entry["curve"] = (f"{PLOTS_DIR}/{name}", *size)
            report.written.append(plots_dir / name)
        if t.heatmap is not None:
            if t.heatmap not in heatmaps:
                stats = partition_stats_record(records, t.heatmap)
                name = _plot_name("partition", [k.task, k.dataset, k.partition_method], list(t.heatmap))
                size = partition_heatmap(stats or {}, f"{k.dataset}: {k.partition_label}", plots_dir / name)
                heatmaps[t.heatmap] = (f"{PLOTS_DIR}/{name}", *size) if size else None
                if size:
                    report.written.append(plots_dir / name)
                else:
                    report.warnings.append(f"unusable partition.stats for {k.dataset} {k.partition_label}")
            if heatmaps[t.heatmap]:
                entry["heatmap"] = heatmaps[t.heatmap]  # type: ignore[assignment]
        if entry:
            out[t.id] = entry
    return out


def _remove_stale_plots(out_dir: Path, keep: set[Path]) -> None:
    plots_dir = out_dir / PLOTS_DIR
    if not plots_dir.is_dir():
        return
    for png in plots_dir.glob("*.png"):
        if png not in keep and re.fullmatch(r"(curve|partition)-.*-[0-9a-f]{10}\.png", png.name):
            png.unlink()


def build(results_dirs: list[Path], out_dir: Path) -> BuildReport:
    """Read every record under ``results_dirs``; write README.md, index.html and plots/ in ``out_dir``.

    Unreadable or invalid files are skipped and listed in the report (and on
    the page), never fatal. The same input gives byte-identical output.
    """
    out_dir = Path(out_dir)
    report = BuildReport()
    records, report.skipped = load_records(Path(d) for d in results_dirs)
    report.n_records = len(records)
    tables = make_tables(records, report.warnings)
    report.n_tables = len(tables)
    plots = _write_plots(tables, records, out_dir, report)
    _remove_stale_plots(out_dir, set(report.written))
    readme = render_markdown(tables, out_dir, {t: {k: v[0] for k, v in p.items()} for t, p in plots.items()},
                             report.skipped, len(records))
    page = render_html(tables, out_dir, plots, report.skipped, len(records))
    report.written.append(atomic_write_text(out_dir / "README.md", readme))
    report.written.append(atomic_write_text(out_dir / "index.html", page))
    for w in report.warnings:
        log.warning("%s", w)
    log.info("leaderboard: %d records, %d tables, %d skipped -> %s",
             report.n_records, report.n_tables, len(report.skipped), out_dir)
    return report
