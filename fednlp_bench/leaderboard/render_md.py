"""Markdown rendering of the leaderboard (GitHub-flavoured tables): overview first, then tables."""
from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

from fednlp_bench.leaderboard.columns import (
    CI_LABEL,
    RANK_RULE,
    Cell,
    Column,
    cell,
    columns,
    flag_notes,
    fmt_ci,
    fmt_delta,
    overview_rank,
    overview_value,
    row_flags,
)
from fednlp_bench.leaderboard.overview import Matrix, TaskOverview, other_setup_rows, privacy_id, setup_chips
from fednlp_bench.leaderboard.tables import TTA_FRACTION, Table, record_link
from fednlp_bench.record_checks import safe_text

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|~"})


def md_escape(text: str) -> str:
    """Escape a record string for Markdown (tables included): HTML, ``|``, emphasis, newlines."""
    text = safe_text(" ".join(str(text).split()), 2000)
    return html.escape(text, quote=True).translate(_MD_SPECIAL)


def md_href(path: str) -> str:
    return quote(path, safe="/._-~")


def _cell_md(c: Cell) -> str:
    if c.links:
        return ", ".join(f"[{md_escape(label)}]({md_href(href)})" for label, href in c.links)
    if c.lines:
        return "; ".join(f"{md_escape(label)}: {md_escape(value)}" for label, value in c.lines)
    return md_escape(c.text)


def _header(col: Column) -> str:
    return md_escape(f"{col.group}: {col.header}" if col.group and col.group != "Metric" else col.header)


def _meta(table: Table) -> list[str]:
    seeds = sorted({s for row in table.all_rows for s in row.seeds})
    ref = table.reference
    if not table.rows:
        ref_text = "Centralized runs without a federated table of the identical setup."
    elif ref is None:
        ref_text = ("**No reference**: no centralized run with the identical setup (dataset, model, data sizes, "
                    "budget), so no gap is shown.")
    else:
        ref_value = md_escape(fmt_ci(ref.primary.mean, ref.primary.half))
        ref_text = f"Reference: centralized with the identical setup, {ref_value}."
    meta = [f"Primary metric **{md_escape(table.primary)}** (final test split). Seeds: {', '.join(map(str, seeds))}.",
            ref_text]
    if table.dp:
        meta.append("DP rows are not ranked (see the privacy-utility plot).")
    if table.tta_target is not None and table.tta_split != "val":
        meta.append(f"Time to {TTA_FRACTION:.0%} uses the per-round test curve (no validation split in these records).")
    meta += [md_escape(n) + "." for n in table.notes]
    prov = table.provenance()
    return [" ".join(meta), "",
            "Provenance: " + "; ".join(f"{md_escape(k)} {md_escape(v)}" for k, v in prov.items()) + ".", ""]


def _reproduce(table: Table, cols: list[Column], out_dir: Path) -> list[str]:
    col = next(c for c in cols if c.key == "records")
    lines = ["<details><summary>Reproduce</summary>", ""]
    for row in table.all_rows:
        for cmd in cell(row, col, table, out_dir).commands:
            lines.append(f"- {md_escape(row.label)}: <code>{md_escape(cmd)}</code>")
    return lines + ["", "</details>", ""]


def _flag_lines(table: Table) -> list[str]:
    """Each flagged row in full under its table: failures with examples, deviations listed."""
    lines = []
    for row, flag in flag_notes(table):
        lines.append(f"- **{md_escape(flag.marker)}** {md_escape(row.label)}: {md_escape(flag.text)}")
        lines += [f"  - {md_escape(d)}" for d in flag.details]
    return lines + [""] if lines else []


def render_table(table: Table, out_dir: Path, plots: dict[str, tuple[str, int, int]]) -> str:
    cols = columns(table)
    lines = [f"### {md_escape(table.title)}", "",
             " · ".join(md_escape(c) for c in setup_chips(table.key.setup_dict)), ""]
    lines += _meta(table)
    lines.append("| " + " | ".join(_header(c) for c in cols) + " |")
    lines.append("|" + "|".join("---:" if c.numeric else "---" for c in cols) + "|")
    for row in table.all_rows:
        cells = []
        for col in cols:
            text = _cell_md(cell(row, col, table, out_dir))
            if col.key == "algorithm" and row.chips:
                text += f"<br>{md_escape(row.detail)}"
            if col.key == "algorithm":
                text += "".join(f"<br>**{md_escape(f.marker)}**" for f in row_flags(row))
            if col.key == "rank" and row.is_reference:
                text = "*ref*"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += _flag_lines(table)
    lines += _reproduce(table, cols, out_dir)
    for key, alt in (("curve", "Convergence"), ("heatmap", "Partition")):
        if key in plots:
            lines.append(f"![{md_escape(alt + ': ' + table.title)}]({md_href(plots[key][0])})")
    if plots:
        lines.append("")
    return "\n".join(lines)


def _matrix_md(m: Matrix, plots: dict) -> list[str]:
    heads = ["Algorithm"] + [f"{t.partition_label} (JS {t.heterogeneity:.3f})" if t.heterogeneity is not None
                             else t.partition_label for t in m.tables] + ["Mean rank"]
    lines = [" · ".join(md_escape(c) for c in m.chips), "",
             "| " + " | ".join(md_escape(h) for h in heads) + " |",
             "|---|" + "---:|" * (len(m.tables) + 1)]
    if m.reference is not None:
        ref = md_escape(fmt_ci(m.reference.primary.mean, m.reference.primary.half))
        lines.append("| centralized (reference) | " + " | ".join([ref] * len(m.tables)) + " | |")
    for label in m.labels:
        cells = []
        for t in m.tables:
            row = m.cells.get((label, t.id))
            if row is None:
                cells.append("–")
                continue
            main = overview_value(row)
            rank = f"rank {overview_rank(row)}" if row.rank is not None else ""
            marks = "".join(f" {f.marker}" for f in row_flags(row))
            cells.append(f"{md_escape(main)}<br>{md_escape(rank + marks)}")
        mr = m.mean_rank.get(label)
        cells.append(f"{mr[0]:.2f} ({mr[1]})" if mr else "–")
        lines.append(f"| {md_escape(label)} | " + " | ".join(cells) + " |")
    what = "gap to centralized" if m.reference is not None else "mean (no centralized reference)"
    lines += ["", f"Cell: {what} ± {CI_LABEL} (\\* significant) and the tie-aware rank; mean rank over the "
                  "partitions run (count in brackets).", ""]
    if "hetero" in plots.get(m.id, {}):
        alt = md_escape("Metric against heterogeneity: " + m.title)
        lines += [f"![{alt}]({md_href(plots[m.id]['hetero'][0])})", ""]
    return lines


def _overview_md(overviews: list[TaskOverview], plots: dict) -> list[str]:
    out = ["## Overview", ""]
    for ov in overviews:
        if ov.matrices:
            out += [f"### {md_escape(ov.task)}: {md_escape(ov.matrices[0].title)} (main setup)", ""]
            out += _matrix_md(ov.matrices[0], plots)
        others = other_setup_rows(ov)
        if others:
            out += [f"#### {md_escape(ov.task)}: other setups", "",
                    "| Setup (differs from the main one) | Partition | Algorithm | "
                    f"Gap (or mean) ± {CI_LABEL} | Rank |",
                    "|---|---|---|---:|---:|"]
            for diff, t, row in others:
                out.append(f"| {md_escape(diff)} | {md_escape(t.partition_label)} | {md_escape(row.label)} | "
                           f"{md_escape(overview_value(row))} | {overview_rank(row, '–')} |")
            out.append("")
        for (dataset, model), points in sorted(ov.privacy.items()):
            pid = privacy_id(ov.task, dataset, model)
            out += [f"### {md_escape(ov.task)}: privacy-utility, {md_escape(dataset)} / {md_escape(model)}", "",
                    "| DP row | ε | " + md_escape(ov.privacy_tables[(dataset, model)][0].primary) + " |",
                    "|---|---:|---:|"]
            for p in sorted(points, key=lambda p: -p.epsilon):
                out.append(f"| {md_escape(p.label)} | {p.level} {p.epsilon:.3g} ({fmt_delta(p.delta)}) | "
                           f"{md_escape(fmt_ci(p.primary.mean, p.primary.half))} |")
            out.append("")
            if "privacy" in plots.get(pid, {}):
                out += [f"![Privacy-utility: {md_escape(dataset)}]({md_href(plots[pid]['privacy'][0])})", ""]
    return out


def render_markdown(tables: list[Table], overviews: list[TaskOverview], out_dir: Path, plots: dict, report) -> str:
    """The whole README.md. ``plots`` maps section id -> kind -> (relative path, width, height)."""
    n_records = len({r.path for t in tables for r in t.runs})
    out = [
        "# fednlp-bench leaderboard", "",
        "<!-- Generated by `fednlp-bench leaderboard`; do not edit by hand. -->", "",
        f"{n_records} result records, {len(tables)} tables. Every number is the final test metric: mean over "
        f"seeds ± the half-width of its {CI_LABEL} (Student t). Gap = the row minus the centralized run with the "
        "identical setup, Δ FedAvg = the row minus FedAvg, both paired by seed; \\* = the interval excludes 0. "
        f"Rank: {RANK_RULE}. Columns are explained in docs/leaderboard.md; `index.html` is the interactive "
        "version. Verify a row with `fednlp-bench verify RECORD.json`.", "",
    ]
    if not tables:
        return "\n".join(out + ["No results yet.", ""])
    out += _overview_md(overviews, plots)
    out += ["## Tables", ""]
    for t in tables:
        out.append(render_table(t, out_dir, plots.get(t.id, {})))
    if report.superseded:
        out += ["## Superseded records", ""]
        out += [f"- {md_escape(record_link(old, out_dir))} superseded by {md_escape(record_link(new, out_dir))}"
                for old, new in report.superseded]
        out.append("")
    if report.skipped:
        out += ["## Skipped files", ""]
        out += [f"- {md_escape(record_link(s.path, out_dir))}: {md_escape(s.reason)}" for s in report.skipped]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
