"""Static HTML rendering of the leaderboard (one page, inline CSS/JS, no network).

The page opens with the overview (per task: algorithms x partitions, plots), then the detail
tables. Every string that comes from a record passes through :func:`esc` (text and attributes
alike) after :func:`~fednlp_bench.record_checks.safe_text` where it is free text; record data
never enters the script. The page also sends a Content-Security-Policy that only allows the
inline script and style by hash, so even a missed escape could not run injected code (and
there are no inline ``style`` attributes: colours are classes).
"""
from __future__ import annotations

import base64
import hashlib
import html
from pathlib import Path
from urllib.parse import quote

from fednlp_bench.leaderboard.assets import CSS, JS
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
    fmt_diff,
    fmt_metric,
    row_flags,
)
from fednlp_bench.leaderboard.overview import Matrix, TaskOverview, other_setup_rows, privacy_id, setup_chips
from fednlp_bench.leaderboard.tables import TTA_FRACTION, Row, Table, record_link
from fednlp_bench.record_checks import safe_text


def esc(text: object) -> str:
    """HTML-escape for text and double- or single-quoted attributes."""
    return html.escape(str(text), quote=True)


def href(path: str) -> str:
    """A relative link: percent-encoded (so never a ``javascript:`` URL), then escaped."""
    return esc(quote(path, safe="/._-~"))


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode() + "'"


CSP = (
    "default-src 'none'; img-src 'self' data:; "
    f"style-src {_csp_hash(CSS)}; script-src {_csp_hash(JS)}; "
    "base-uri 'none'; form-action 'none'"
)


def _chips(chips: list[str], cls: str = "chip") -> str:
    return "".join(f'<span class="{cls}">{esc(c)}</span>' for c in chips)


def gap_class(row: Row | None) -> str:
    """Colour bucket of an overview cell: by gap to centralized, else by rank."""
    if row is None or row.primary.mean is None:
        return "c-none"
    if row.gap is not None:
        g = row.gap.mean
        for bound, name in ((0.01, "c-pos"), (-0.01, "c-0"), (-0.05, "c-1"), (-0.10, "c-2"), (-0.20, "c-3")):
            if g > bound:
                return name
        return "c-4"
    return "c-r1" if row.rank == 1 else "c-r2"


# --- detail tables ---------------------------------------------------------------------

def _sort_attr(c: Cell) -> str:
    if c.sort is None:
        return ' data-sort=""'
    value = repr(float(c.sort)) if isinstance(c.sort, (int, float)) else c.sort
    return f' data-sort="{esc(value)}"'


def _algo_body(row: Row, c: Cell) -> str:
    body = f'<span class="name">{esc(c.text)}</span>'
    if row.chips:
        body += f'<span class="chips">{_chips(row.chips)}</span>'
    for flag in row_flags(row):
        title = "; ".join([flag.text, *flag.details])
        body += f'<span class="flag {flag.kind}" title="{esc(title)}">{esc(flag.marker)}</span>'
    return body


def _flag_notes(table: Table) -> str:
    """The flags of the table's rows in full, under the table (a tooltip alone is easy to miss)."""
    items = []
    for row, flag in flag_notes(table):
        details = "".join(f"<li>{esc(d)}</li>" for d in flag.details)
        items.append(f'<li class="{flag.kind}"><b>{esc(row.label)}</b> <span class="flag {flag.kind}">'
                     f'{esc(flag.marker)}</span> {esc(flag.text)}{f"<ul>{details}</ul>" if details else ""}</li>')
    return f'<ul class="row-notes">{"".join(items)}</ul>\n' if items else ""


def _records_body(c: Cell) -> str:
    links = ", ".join(f'<a href="{href(h)}">{esc(label)}</a>' for label, h in c.links)
    cmds = "\n".join(esc(cmd) for cmd in c.commands)
    return f'{links}<details class="repro"><summary>reproduce</summary><pre>{cmds}</pre></details>'


def _td(c: Cell, col: Column, row: Row) -> str:
    classes = list(c.classes)
    if col.numeric:
        classes.append("num")
    body = esc(c.text)
    if col.key in ("rank", "algorithm"):
        classes.append("sticky " + col.key)
        if col.key == "algorithm":
            body = _algo_body(row, c)
    elif col.key == "records":
        classes.append("links")
        body = _records_body(c)
    elif col.key == "provenance":
        classes.append("prov")
        body = " ".join(f"<span><b>{esc(a)}</b> {esc(b)}</span>" for a, b in c.lines)
    elif col.key == "verified" and c.sort:
        classes.append("ok")
    cls = f' class="{" ".join(classes)}"' if classes else ""
    title = f' title="{esc(c.title)}"' if c.title else ""
    tag = "th scope=\"row\"" if col.key == "algorithm" else "td"
    return f"<{tag}{cls}{title}{_sort_attr(c)}>{body}</{tag.split()[0]}>"


def _thead(cols: list[Column]) -> str:
    groups: list[tuple[str, int]] = []
    for col in cols:
        if groups and groups[-1][0] == col.group:
            groups[-1] = (col.group, groups[-1][1] + 1)
        else:
            groups.append((col.group, 1))
    top = []
    for i, (g, n) in enumerate(groups):
        sticky = ' sticky-head' if i == 0 and not g else ""
        top.append(f'<th colspan="{n}" class="{"grp" if g else "blank"}{sticky}">{esc(g)}</th>')
    heads = []
    for col in cols:
        cls = ["num"] if col.numeric else []
        if col.key in ("rank", "algorithm"):
            cls.append("sticky " + col.key)
        attrs = f' data-type="{"num" if col.numeric else "text"}"'
        attrs += ' data-first="asc"' if col.lower_is_better or not col.numeric else ' data-first="desc"'
        attrs += f' class="{" ".join(cls)}"' if cls else ""
        heads.append(f'<th scope="col"{attrs} title="{esc(col.help)}"><button type="button">{esc(col.header)}'
                     f'</button></th>')
    return f'<thead><tr class="groups">{"".join(top)}</tr><tr>{"".join(heads)}</tr></thead>'


def _reference_text(table: Table) -> str:
    ref = table.reference
    if not table.rows:
        return "Centralized runs without a federated table of the identical setup."
    if ref is None:
        return ("<b>No reference</b>: no centralized run with the identical setup (dataset, model, data sizes, "
                "budget), so no gap is shown.")
    seeds = f"{ref.primary.n} seed{'s' if ref.primary.n != 1 else ''}"
    return (f"Reference: centralized with the identical setup, {esc(table.primary)} "
            f"{esc(fmt_ci(ref.primary.mean, ref.primary.half))} ({seeds}).")


def _meta(table: Table) -> str:
    seeds = sorted({s for row in table.all_rows for s in row.seeds})
    prov = table.provenance()
    parts = [f"Primary metric <b>{esc(table.primary)}</b> (task {esc(table.key.task)}, final test split).",
             f"Seeds: {esc(', '.join(map(str, seeds)))}.", _reference_text(table)]
    if table.dp:
        parts.append("DP rows are not ranked; they are compared on the privacy-utility plot in the overview.")
    elif len(table.rows) > 1:
        parts.append("Ranks are tie-aware (1= shared; see <i>How to read</i>); * marks a significant difference.")
    if table.tta_target is not None and table.tta_split != "val":
        parts.append(f"Time to {TTA_FRACTION:.0%} uses the per-round test curve (these records have no "
                     f"validation split).")
    notes = "".join(f'<span class="note">{esc(safe_text(n, 400))}.</span> ' for n in table.notes)
    provenance = " ".join(f"<span><b>{esc(k)}</b> {esc(v)}</span>" for k, v in prov.items())
    return (f'<p class="meta">{" ".join(parts)} {notes}</p>\n'
            f'<p class="prov-line">Provenance (all rows unless a row says otherwise): {provenance}</p>')


def _figures(table: Table, plots: dict[str, tuple[str, int, int]]) -> str:
    split = "validation" if table.tta_split == "val" else "test"
    figures = []
    for key, caption in (("curve", f"Convergence: {split} {table.primary} per round, mean over seeds (band: ± std); "
                                   "dashed: centralized"),
                         ("heatmap", "Partition: label distribution per client (left) and each client's number "
                                     "of training examples (right)")):
        if key in plots:
            figures.append(_figure(plots[key], caption, table.title))
    if "heatmap_in" in plots:
        figures.append(f'<p class="meta">Partition heat map: in <a href="#{esc(plots["heatmap_in"][0])}">the first '
                       f'table of this partition</a>.</p>')
    return f'<div class="plots">{"".join(figures)}</div>' if figures else ""


def _figure(plot: tuple[str, int, int], caption: str, title: str) -> str:
    src, w, h = plot
    return (f'<figure><img src="{href(src)}" alt="{esc(caption + " for " + title)}" width="{w}" height="{h}" '
            f'loading="lazy"><figcaption>{esc(caption)}</figcaption></figure>')


def _section(table: Table, out_dir: Path, plots: dict[str, tuple[str, int, int]]) -> str:
    k = table.key
    cols = columns(table)
    title = '<span class="sep">/</span>'.join(esc(p) for p in (k.task, k.dataset, table.partition_label, k.model))
    if table.variant:
        title += f' <span class="variant">{esc(table.variant)}</span>'
    rows = []
    for row in table.all_rows:
        tds = "".join(_td(cell(row, col, table, out_dir), col, row) for col in cols)
        rows.append(f'<tr{" class=ref" if row.is_reference else ""}>{tds}</tr>')
    return (
        f'<section class="board" id="{esc(table.id)}" data-task="{esc(k.task)}" '
        f'data-dataset="{esc(k.dataset)}" data-partition="{esc(table.partition_label)}">\n'
        f'<h3>{title}</h3>\n<p class="chips">{_chips(setup_chips(k.setup_dict))}</p>\n{_meta(table)}\n'
        f'<div class="scroll"><table class="lb">{_thead(cols)}\n<tbody>\n' + "\n".join(rows)
        + f"\n</tbody></table></div>\n{_flag_notes(table)}{_figures(table, plots)}\n</section>"
    )


# --- overview ------------------------------------------------------------------------------

def _matrix_cell(m: Matrix, label: str, t: Table) -> str:
    row = m.cells.get((label, t.id))
    if row is None:
        return '<td class="c-none">–</td>'
    main = fmt_diff(row.gap) if row.gap is not None else fmt_ci(row.primary.mean, row.primary.half)
    rank = f"rank {row.rank}{'=' if row.tied else ''}" if row.rank is not None else ""
    sub = " · ".join(p for p in (fmt_metric(row.primary.mean) if row.gap is not None else "", rank,
                                 f"{row.primary.n} seed{'s' if row.primary.n != 1 else ''}",
                                 *(f.marker for f in row_flags(row))) if p)
    return (f'<td class="{gap_class(row)}"><a href="#{esc(t.id)}">{esc(main)}</a>'
            f'<span class="sub">{esc(sub)}</span></td>')


def _row_header(m: Matrix, label: str) -> str:
    row = next(m.cells[(lab, t.id)] for t in m.tables for lab in (label,) if (lab, t.id) in m.cells)
    chips = f'<span class="chips">{_chips(row.chips)}</span>' if row.chips else ""
    return f'<span class="name">{esc(row.algorithm)}</span>{chips}'


def _matrix(m: Matrix) -> str:
    heads = []
    for t in m.tables:
        js = f"JS {t.heterogeneity:.3f}" if t.heterogeneity is not None else "JS unknown"
        heads.append(f'<th scope="col"><a href="#{esc(t.id)}">{esc(t.partition_label)}</a>'
                     f'<span class="sub">{esc(js)}</span></th>')
    body = []
    if m.reference is not None:
        ref = esc(fmt_ci(m.reference.primary.mean, m.reference.primary.half))
        body.append(f'<tr class="ref"><th scope="row" class="sticky algorithm">centralized <span class="sub">'
                    f'reference</span></th><td colspan="{len(m.tables)}">{esc(m.tables[0].primary)} {ref} '
                    f'(same for every partition: no partition)</td><td></td></tr>')
    for label in m.labels:
        cells = "".join(_matrix_cell(m, label, t) for t in m.tables)
        mr = m.mean_rank.get(label)
        mean_rank = f"{mr[0]:.2f} <span class=\"sub\">over {mr[1]}</span>" if mr else "–"
        body.append(f'<tr><th scope="row" class="sticky algorithm">{_row_header(m, label)}</th>{cells}'
                    f'<td class="num">{mean_rank}</td></tr>')
    what = "gap to centralized" if m.reference is not None else f"{m.tables[0].primary} (no centralized reference)"
    return (f'<div class="scroll"><table class="matrix">'
            f'<thead><tr><th scope="col" class="sticky algorithm">Algorithm</th>{"".join(heads)}'
            f'<th scope="col">Mean rank</th></tr></thead><tbody>{"".join(body)}</tbody></table></div>'
            f'<p class="caption">Cell: {esc(what)} ± {CI_LABEL} (* significant); below: mean, tie-aware rank, '
            f'seeds. Columns: least to most heterogeneous partition. Click a cell for its table.</p>')


def _matrix_block(m: Matrix, heading: str) -> str:
    return (f'<div class="mblock" id="{esc(m.id)}" data-dataset="{esc(m.key.dataset)}">{heading}'
            f'<p class="chips">{_chips(m.chips)}</p>{_matrix(m)}</div>')


def _hetero_figure(m: Matrix, plots: dict) -> str:
    if "hetero" not in plots.get(m.id, {}):
        return ""
    return _figure(plots[m.id]["hetero"], f"Overview: final test {m.tables[0].primary} against heterogeneity, "
                   "one line per algorithm (95% CI bars); dashed: centralized", m.title)


def _others_table(others: list) -> str:
    body = []
    for diff, t, row in others:
        main = fmt_diff(row.gap) if row.gap is not None else fmt_ci(row.primary.mean, row.primary.half)
        rank = f"{row.rank}{'=' if row.tied else ''}" if row.rank is not None else "–"
        body.append(f'<tr><td>{esc(diff)}</td><td><a href="#{esc(t.id)}">{esc(t.partition_label)}</a></td>'
                    f'<th scope="row" class="algorithm">{esc(row.label)}</th><td class="{gap_class(row)}">{esc(main)}'
                    f'<span class="sub">{esc(fmt_metric(row.primary.mean))} · {row.primary.n} seed(s)</span></td>'
                    f'<td class="num">{esc(rank)}</td></tr>')
    return ('<div class="scroll"><table class="matrix others"><thead><tr><th scope="col">Setup (differs from the '
            'main one)</th><th scope="col">Partition</th><th scope="col">Algorithm</th><th scope="col">Gap (or mean) '
            f'± {CI_LABEL}</th><th scope="col">Rank</th></tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _privacy_parts(ov: TaskOverview, plots: dict) -> tuple[list[str], list[str]]:
    """(figures, notes) of the task's privacy-utility plots, one per dataset and model."""
    figures, notes = [], []
    for (dataset, model), tables in sorted(ov.privacy_tables.items()):
        pid = privacy_id(ov.task, dataset, model)
        links = ", ".join(f'<a href="#{esc(t.id)}">{esc(t.partition_label)}, {esc(t.key.setup_dict.get("privacy"))}</a>'
                          for t in tables)
        deltas = sorted({fmt_delta(p.delta) for p in ov.privacy.get((dataset, model), [])})
        if "privacy" in plots.get(pid, {}):
            figures.append(_figure(plots[pid]["privacy"], f"Privacy-utility on {dataset} / {model}: epsilon "
                                   f"({', '.join(deltas)}) against final test {tables[0].primary}; DP rows are "
                                   "not ranked", dataset))
        base = "" if ov.privacy_baselines.get((dataset, model)) else (
            " No run without DP has the identical setup, so no no-DP line is drawn.")
        notes.append(f'<p class="meta">Privacy-utility, {esc(dataset)} / {esc(model)}: DP rows from {links}.'
                     f'{esc(base)}</p>')
    return figures, notes


def _task_overview(ov: TaskOverview, plots: dict) -> str:
    parts = [f'<section class="task-ov" data-task="{esc(ov.task)}"><h3>{esc(ov.task)}</h3>']
    figures = []
    if ov.matrices:
        main = ov.matrices[0]
        parts.append(_matrix_block(main, f"<h4>{esc(main.title)} (main setup)</h4>"))
        figures.append(_hetero_figure(main, plots))
    privacy_figures, notes = _privacy_parts(ov, plots)
    figures += privacy_figures
    if any(figures):
        parts.append(f'<div class="plots">{"".join(figures)}</div>')
    parts += notes
    others = other_setup_rows(ov)
    if others:
        parts.append(f'<details class="more"><summary>{len(ov.matrices) - 1} more setup(s) of {esc(ov.task)}: '
                     f'{len(others)} row(s)</summary>{_others_table(others)}</details>')
    parts.append("</section>")
    return "".join(parts)


# --- page --------------------------------------------------------------------------------------

def _select(name: str, label: str, values: list[str]) -> str:
    options = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)
    return (f'<label>{esc(label)} <select id="f-{name}" data-filter="{name}">'
            f'<option value="">all</option>{options}</select></label>')


HOWTO = f"""<details class="howto"><summary>How to read this page, and how to verify a row</summary>
<ul>
<li>Every number is the final test metric averaged over seeds, ± the half-width of its {CI_LABEL} (Student t over
seeds); with one seed there is no interval.</li>
<li><b>Gap</b>: the row minus the centralized run with the identical setup (dataset, model, data sizes, budget),
paired by seed. <b>Δ FedAvg</b>: the row minus FedAvg in the same table, paired by seed. * = the interval excludes 0.
</li>
<li><b>Rank</b>: {RANK_RULE}. <i>1=</i> means shared. DP rows are not ranked.</li>
<li><b>Rounds to {TTA_FRACTION:.0%}</b>: first round at which the validation curve (else the per-round test curve)
reaches {TTA_FRACTION:.0%} of the centralized reference; traffic = bytes up + down until then (FedScale's
time-to-accuracy).</li>
<li><b>Verified</b>: <code>fednlp-bench verify RECORD.json --stamp</code> re-ran the record's configuration and seed
and every metric matched; the stamp next to the record holds the record's digest, the commit and the date. Run it
yourself from the <i>reproduce</i> box of any row.</li>
</ul></details>"""


def _footer_lists(out_dir: Path, report) -> str:
    out = ""
    if report.superseded:
        items = "".join(f"<li><code>{esc(safe_text(record_link(old, out_dir), 300))}</code> superseded by "
                        f"<code>{esc(safe_text(record_link(new, out_dir), 300))}</code></li>"
                        for old, new in report.superseded)
        out += (f'<details class="skipped"><summary>{len(report.superseded)} superseded record(s) (same '
                f'configuration and seed; the later one is used)</summary><ul>{items}</ul></details>\n')
    if report.skipped:
        items = "".join(f"<li><code>{esc(safe_text(record_link(s.path, out_dir), 300))}</code>: "
                        f"{esc(safe_text(s.reason, 600))}</li>" for s in report.skipped)
        out += (f'<details class="skipped"><summary>{len(report.skipped)} file(s) skipped</summary><ul>{items}</ul>'
                f'</details>\n')
    return out


def render_html(tables: list[Table], overviews: list[TaskOverview], out_dir: Path, plots: dict, report) -> str:
    """The whole index.html. ``plots`` maps section id -> kind -> (relative src, width, height)."""
    tasks = sorted({t.key.task for t in tables})
    datasets = sorted({t.key.dataset for t in tables})
    partitions = sorted({t.partition_label for t in tables})
    dates = sorted(r.record["created"][:10] for t in tables for r in t.runs)
    span = f", dated {esc(dates[0])} to {esc(dates[-1])}" if dates else ""
    n_records = len({r.path for t in tables for r in t.runs})
    ov_html = "\n".join(_task_overview(ov, plots) for ov in overviews)
    sections = "\n".join(_section(t, out_dir, plots.get(t.id, {})) for t in tables)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>fednlp-bench leaderboard</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>fednlp-bench leaderboard</h1>
<p>{n_records} result records in {len(tables)} tables{span}. How much federated training loses against centralized
training, per task and kind of non-IID data: mean ± {CI_LABEL} over seeds.</p>
{HOWTO}
</header>
<nav class="filters" aria-label="Filters">
<a href="#overview">Overview</a> <a href="#tables">Tables</a>
{_select("task", "Task", tasks)}
{_select("dataset", "Dataset", datasets)}
{_select("partition", "Partition", partitions)}
<button type="button" id="f-reset">Reset</button>
<span id="f-count" aria-live="polite"></span>
</nav>
<main>
<section id="overview" class="overview"><h2>Overview</h2>
{ov_html if overviews else '<p class="empty">No results yet.</p>'}
</section>
<section id="tables"><h2>All tables</h2>
{sections if tables else '<p class="empty">No results yet.</p>'}
<p class="empty" id="f-empty" hidden>No table matches the filters.</p>
</section>
</main>
{_footer_lists(out_dir, report)}<footer>Generated by <code>fednlp-bench leaderboard</code> from the records linked
in each row. Columns are explained in docs/leaderboard.md.</footer>
<script>{JS}</script>
</body>
</html>
"""
