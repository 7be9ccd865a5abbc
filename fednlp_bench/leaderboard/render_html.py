"""Static HTML rendering of the leaderboard (one page, inline CSS/JS, no network).

Every string that comes from a record passes through :func:`esc` (text and
attributes alike); record data never enters the script. The page also sends
a Content-Security-Policy that only allows the inline script and style by
hash, so even a missed escape could not run injected code.
"""
from __future__ import annotations

import base64
import hashlib
import html
from pathlib import Path
from urllib.parse import quote

from fednlp_bench.leaderboard.assets import CSS, JS
from fednlp_bench.leaderboard.columns import Cell, Column, cell, columns
from fednlp_bench.leaderboard.load import Skipped
from fednlp_bench.leaderboard.tables import Table, record_link


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


def _sort_attr(c: Cell) -> str:
    if c.sort is None:
        return ' data-sort=""'
    value = repr(float(c.sort)) if isinstance(c.sort, (int, float)) else c.sort
    return f' data-sort="{esc(value)}"'


def _td(c: Cell, col: Column, row_is_ref: bool, detail: str) -> str:
    classes = []
    if col.numeric:
        classes.append("num")
    body = esc(c.text)
    if col.key == "rank":
        classes.append("rank")
    elif col.key == "algorithm":
        classes.append("algo")
        body = f'<span class="name">{esc(c.text)}</span>'
        if detail:
            body += f'<span class="detail">{esc(detail)}</span>'
    elif col.key == "gap" and isinstance(c.sort, float):
        classes.append("pos" if c.sort >= 0 else "neg")
    elif col.key == "records":
        classes.append("links")
        body = ", ".join(f'<a href="{href(h)}">{esc(label)}</a>' for label, h in c.links)
    elif col.key == "provenance":
        classes.append("prov")
        body = " ".join(f"<span><b>{esc(a)}</b> {esc(b)}</span>" for a, b in c.lines)
    cls = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{cls}{_sort_attr(c)}>{body}</td>"


def _thead(cols: list[Column]) -> str:
    groups: list[tuple[str, int]] = []
    for col in cols:
        if groups and groups[-1][0] == col.group:
            groups[-1] = (col.group, groups[-1][1] + 1)
        else:
            groups.append((col.group, 1))
    top = "".join(
        f'<th colspan="{n}"{" class=grp" if g else ""}>{esc(g)}</th>' for g, n in groups
    )
    heads = []
    for col in cols:
        attrs = ' data-type="num" class="num"' if col.numeric else ' data-type="text"'
        heads.append(
            f'<th scope="col"{attrs} title="{esc(col.help)}"><button type="button">{esc(col.header)}</button></th>'
        )
    return f'<thead><tr class="groups">{top}</tr><tr>{"".join(heads)}</tr></thead>'


def _section(table: Table, out_dir: Path, plots: dict[str, tuple[str, int, int]]) -> str:
    k = table.key
    cols = columns(table)
    title = '<span class="sep">/</span>'.join(
        esc(part) for part in (k.task, k.dataset, k.partition_label, k.model)
    )
    meta = [f"Primary metric: <b>{esc(table.primary)}</b>."]
    if table.references:
        meta.append("The highlighted row is the centralized reference; gaps are relative to it.")
    meta += [f'<span class="note">{esc(n)}.</span>' for n in table.notes]
    rows = []
    for row in table.all_rows:
        tds = "".join(_td(cell(row, col, table, out_dir), col, row.is_reference, row.detail) for col in cols)
        rows.append(f'<tr{" class=ref" if row.is_reference else ""}>{tds}</tr>')
    figures = []
    for key, caption in (("curve", "Convergence: mean over seeds (band: ± std); dashed: reference"),
                         ("heatmap", "Partition: label distribution per client")):
        if key in plots:
            src, w, h = plots[key]
            figures.append(
                f'<figure><img src="{href(src)}" alt="{esc(caption + " for " + table.title)}" '
                f'width="{w}" height="{h}" loading="lazy"><figcaption>{esc(caption)}</figcaption></figure>'
            )
    plot_html = f'<div class="plots">{"".join(figures)}</div>' if figures else ""
    return (
        f'<section class="board" id="{esc(table.id)}" data-task="{esc(k.task)}" '
        f'data-dataset="{esc(k.dataset)}" data-partition="{esc(k.partition_label)}">\n'
        f"<h2>{title}</h2>\n"
        f'<p class="meta">{" ".join(meta)}</p>\n'
        f'<div class="scroll"><table class="lb">{_thead(cols)}\n<tbody>\n'
        + "\n".join(rows)
        + f"\n</tbody></table></div>\n{plot_html}\n</section>"
    )


def _select(name: str, label: str, values: list[str]) -> str:
    options = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)
    return (
        f'<label>{esc(label)} <select id="f-{name}" data-filter="{name}">'
        f'<option value="">all</option>{options}</select></label>'
    )


def render_html(
    tables: list[Table],
    out_dir: Path,
    plots: dict[str, dict[str, tuple[str, int, int]]],
    skipped: list[Skipped],
    n_records: int,
) -> str:
    """The whole index.html. ``plots`` maps table id -> kind -> (relative src, width, height)."""
    tasks = sorted({t.key.task for t in tables})
    datasets = sorted({t.key.dataset for t in tables})
    partitions = sorted({t.key.partition_label for t in tables})
    dates = sorted(r.record["created"][:10] for t in tables for row in t.all_rows for r in row.runs)
    span = f" dated {esc(dates[0])} to {esc(dates[-1])}" if dates else ""
    sections = "\n".join(_section(t, out_dir, plots.get(t.id, {})) for t in tables)
    skipped_html = ""
    if skipped:
        items = "".join(
            f"<li><code>{esc(record_link(s.path, out_dir))}</code>: {esc(s.reason)}</li>" for s in skipped
        )
        skipped_html = (
            f'<details class="skipped"><summary>{len(skipped)} file(s) skipped</summary><ul>{items}</ul></details>\n'
        )
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
<p>{n_records} result records in {len(tables)} tables{span}. Primary metric: mean ± sample std over seeds.
Click a column header to sort; the centralized reference row stays on top.</p>
</header>
<nav class="filters" aria-label="Filters">
{_select("task", "Task", tasks)}
{_select("dataset", "Dataset", datasets)}
{_select("partition", "Partition", partitions)}
<button type="button" id="f-reset">Reset</button>
<span id="f-count" aria-live="polite"></span>
</nav>
<main>
{sections if tables else '<p class="empty">No results yet.</p>'}
<p class="empty" id="f-empty" hidden>No table matches the filters.</p>
</main>
{skipped_html}<footer>Generated by <code>fednlp-bench leaderboard</code> from the records linked in each row.
Columns are explained in docs/leaderboard.md.</footer>
<script>{JS}</script>
</body>
</html>
"""
