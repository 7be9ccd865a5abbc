"""Plain-text rendering for the terminal (``fednlp-bench table``): the same tables and statistics
as the pages, every record string passed through :func:`~fednlp_bench.record_checks.safe_text`."""
from __future__ import annotations

from fednlp_bench.leaderboard.columns import (CI_LABEL, RANK_RULE, flag_notes, fmt_ci, fmt_diff, overview_rank,
                                              overview_value, row_flags)
from fednlp_bench.leaderboard.overview import Matrix, TaskOverview, other_setup_rows, setup_chips
from fednlp_bench.leaderboard.tables import TTA_FRACTION, Row, Table
from fednlp_bench.record_checks import safe_text


def _grid(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _tta(row: Row) -> str:
    t = row.tta
    if t is None or t.n == 0:
        return "-"
    if t.reached == 0:
        return "not reached"
    return f"{t.rounds:g}" + (f" ({t.reached}/{t.n})" if t.reached < t.n else "")


def table_text(t: Table) -> list[str]:
    """One table: title, setup, reference, then rank / algorithm / mean ± CI / seeds / Δ FedAvg / gap / TTA."""
    lines = [safe_text(t.title, 300), "  " + safe_text(" · ".join(setup_chips(t.key.setup_dict)), 600)]
    ref = t.reference
    if ref is not None:
        lines.append(f"  reference: centralized, {t.primary} {fmt_ci(ref.primary.mean, ref.primary.half)} "
                     f"({ref.primary.n} seed(s))")
    elif t.rows:
        lines.append("  no reference: no centralized run with the identical setup")
    header = ["rank", "algorithm", f"{t.primary} ({CI_LABEL})", "seeds", "Δ FedAvg", "gap",
              f"rounds to {TTA_FRACTION:.0%}"]
    rows = []
    for row in t.all_rows:
        rank = "ref" if row.is_reference else ("DP" if t.dp else f"{row.rank}{'=' if row.tied else ''}")
        vs = "baseline" if row is t.baseline else fmt_diff(row.vs_baseline)
        gap = "-" if row.is_reference else (fmt_diff(row.gap) if row.gap else "no reference")
        marks = "".join(f" [{f.marker}]" for f in row_flags(row))
        rows.append([rank, safe_text(row.label, 60) + marks, fmt_ci(row.primary.mean, row.primary.half),
                     str(row.primary.n), vs, gap, _tta(row)])
    lines += ["  " + ln for ln in _grid(header, rows, {2, 3, 4, 5, 6})]
    for row, flag in flag_notes(t):
        lines.append(f"  {flag.marker}: {safe_text(row.label, 60)}: {flag.text}")
        lines += [f"    - {d}" for d in flag.details]
    return lines


def matrix_text(m: Matrix) -> list[str]:
    """Algorithms x partitions: gap (or mean) ± CI and the tie-aware rank, then the mean rank."""
    what = "gap to centralized" if m.reference is not None else "mean"
    lines = [f"{safe_text(m.title, 200)}: {what} ± {CI_LABEL} [rank]",
             "  " + safe_text(" · ".join(m.chips), 600)]
    header = ["algorithm"] + [safe_text(t.partition_label, 60) + (f" JS={t.heterogeneity:.3f}"
                                                                  if t.heterogeneity is not None else "")
                              for t in m.tables] + ["mean rank"]
    rows = []
    for label in m.labels:
        cells = [safe_text(label, 80)]
        for t in m.tables:
            row = m.cells.get((label, t.id))
            if row is None:
                cells.append("-")
                continue
            main = overview_value(row)
            cells.append(f"{main} [{overview_rank(row)}]" if row.rank is not None else main)
        mr = m.mean_rank.get(label)
        cells.append(f"{mr[0]:.2f} ({mr[1]})" if mr else "-")
        rows.append(cells)
    return lines + ["  " + ln for ln in _grid(header, rows, set(range(1, len(header))))]


def render_text(tables: list[Table], overviews: list[TaskOverview], show_overview: bool = True) -> str:
    out = [f"Mean over seeds ± {CI_LABEL} (Student t); Δ FedAvg and gap paired by seed; * = significant. "
           f"Rank: {RANK_RULE}.", ""]
    if show_overview:
        for ov in overviews:
            if ov.matrices:
                out += matrix_text(ov.matrices[0]) + [""]
            others = other_setup_rows(ov)
            if others:
                rows = [[safe_text(diff, 200), safe_text(t.partition_label, 60), safe_text(row.label, 80),
                         overview_value(row)] for diff, t, row in others]
                out += [f"{ov.task}: other setups (gap or mean ± {CI_LABEL})"]
                out += ["  " + ln for ln in _grid(["setup (differs from the main one)", "partition", "algorithm",
                                                   "value"], rows, {3})] + [""]
    for t in tables:
        out += table_text(t) + [""]
    return "\n".join(out).rstrip() + "\n"
