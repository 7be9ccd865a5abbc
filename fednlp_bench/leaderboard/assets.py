"""Static CSS and JavaScript inlined into index.html (no CDN, works offline).

The script reads everything it needs from the DOM; no record data is ever
placed inside it. Both are allowed by hash in the page's Content-Security-Policy.
"""
from __future__ import annotations

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dee8; --head:#eef1f6; --ref:#fff7e0; --accent:#2457c5;
        --bg:#f7f8fb; --card:#fff; --rankw:3.4em; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
html { scroll-padding-top: 64px; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); background: var(--bg); }
header, nav.filters, main, footer, details.skipped { max-width: 1440px; margin: 0 auto; padding: 0 12px; }
header h1 { font-size: 22px; margin: 16px 0 2px; }
header p { margin: 0 0 6px; color: var(--muted); }
details.howto { margin: 0 0 10px; font-size: 13px; color: var(--muted); }
details.howto summary { cursor: pointer; color: var(--accent); }
details.howto ul { margin: 6px 0; padding-left: 20px; }
nav.filters { position: sticky; top: 0; z-index: 5; display: flex; flex-wrap: wrap; gap: 6px 14px;
              align-items: center; padding-top: 8px; padding-bottom: 8px; background: var(--bg);
              border-bottom: 1px solid var(--line); }
nav.filters > a { font-weight: 600; color: var(--accent); text-decoration: none; font-size: 13px; }
nav.filters label { font-weight: 600; font-size: 13px; }
nav.filters select { margin-left: 4px; max-width: 240px; font: inherit; font-weight: 400; padding: 2px 4px; }
nav.filters button { font: inherit; padding: 2px 10px; }
#f-count { color: var(--muted); font-size: 13px; }
main h2 { font-size: 19px; margin: 18px 0 6px; }
section.task-ov, section.board { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
                margin: 12px 0; padding: 10px 12px 12px; min-width: 0; }
section.task-ov h3 { font-size: 18px; margin: 0 0 4px; text-transform: uppercase; letter-spacing: .04em; }
section.task-ov h4, div.pblock h4 { font-size: 15px; margin: 8px 0 2px; }
section.board h3 { font-size: 15px; margin: 0 0 4px; overflow-wrap: anywhere; }
section.board h3 .sep { color: var(--muted); font-weight: 400; padding: 0 4px; }
section.board h3 .variant { color: #8a4b00; font-weight: 600; font-size: 13px; }
p.chips { margin: 0 0 6px; display: flex; flex-wrap: wrap; gap: 4px; }
span.chip { display: inline-block; font-size: 12px; line-height: 1.3; padding: 1px 7px; border-radius: 10px;
            background: #eaeef6; color: #2c3547; white-space: nowrap; }
p.meta, p.prov-line { margin: 0 0 6px; color: var(--muted); font-size: 13px; }
p.prov-line span { display: inline-block; margin-right: 10px; }
p.prov-line b { color: var(--fg); font-weight: 600; }
p.meta .note { color: #8a4b00; }
div.scroll { overflow-x: auto; max-width: 100%; border: 1px solid var(--line); border-radius: 4px; }
table.lb, table.matrix { border-collapse: separate; border-spacing: 0; font-size: 13px; width: 100%; }
table.lb th, table.lb td, table.matrix th, table.matrix td { border-bottom: 1px solid var(--line); padding: 4px 6px;
            vertical-align: top; background: var(--card); }
table.lb thead th, table.matrix thead th { background: var(--head); text-align: left; white-space: nowrap;
            font-weight: 600; }
table.lb thead tr.groups th { text-align: center; font-size: 12px; color: var(--muted); border-bottom: 0; }
table.lb thead tr.groups th.grp { border-left: 2px solid #fff; border-right: 2px solid #fff; background: #e2e7f0; }
table.lb th button { all: unset; cursor: pointer; }
table.lb th button:focus-visible { outline: 2px solid var(--accent); }
table.lb th button::after { content: ""; display: inline-block; width: 0.9em; text-align: center; font-size: 11px; }
table.lb th button:hover::after, table.lb th button:focus-visible::after { content: "\\2195"; color: #9aa3b5; }
table.lb th[aria-sort=ascending] button::after { content: "\\25B2"; color: var(--accent); }
table.lb th[aria-sort=descending] button::after { content: "\\25BC"; color: var(--accent); }
table.lb td.num, table.lb th.num, table.matrix td.num { text-align: right; font-variant-numeric: tabular-nums;
            white-space: nowrap; }
table.lb tbody tr:hover td, table.lb tbody tr:hover th { background: #f2f6ff; }
table.lb tr.ref td, table.lb tr.ref th, table.matrix tr.ref td, table.matrix tr.ref th { background: var(--ref); }
table.lb tr.ref td.rank { font-weight: 600; color: #8a6100; }
.sticky { position: sticky; z-index: 1; }
.sticky.rank { left: 0; width: var(--rankw); min-width: var(--rankw); max-width: var(--rankw); }
table.lb .sticky.algorithm { left: var(--rankw); box-shadow: 1px 0 0 var(--line); }
table.matrix .sticky.algorithm { left: 0; box-shadow: 1px 0 0 var(--line); }
th.sticky-head { position: sticky; left: 0; z-index: 1; }
th.algorithm { text-align: left; font-weight: 400; min-width: 120px; max-width: 210px; overflow-wrap: anywhere; }
th.algorithm .name { font-weight: 600; display: block; }
th.algorithm .chips { display: flex; flex-wrap: wrap; gap: 2px; margin-top: 2px; }
th.algorithm .chip { font-size: 11px; padding: 0 5px; white-space: normal; overflow-wrap: anywhere; }
span.flag { display: inline-block; font-size: 11px; font-weight: 600; padding: 0 5px; margin: 2px 2px 0 0;
            border-radius: 3px; white-space: nowrap; }
span.flag.failures { background: #fde7e4; color: #b42318; }
span.flag.deviations { background: #fff1d6; color: #8a4b00; }
ul.row-notes { margin: 6px 0; padding-left: 18px; font-size: 13px; }
ul.row-notes ul { margin: 2px 0; padding-left: 16px; color: var(--muted); }
td.sig { font-weight: 600; }
td.pos { color: #1a7f37; } td.neg { color: #b42318; }
td.ok { color: #1a7f37; font-weight: 600; }
td.links { min-width: 90px; font-size: 12px; white-space: nowrap; }
td.links a { color: var(--accent); }
details.repro summary { cursor: pointer; color: var(--muted); font-size: 11px; }
details.repro pre { white-space: pre-wrap; overflow-wrap: anywhere; max-width: 420px; min-width: 260px;
                    font-size: 11px; margin: 2px 0; background: #f4f6fa; padding: 4px; }
td.prov { font-size: 12px; line-height: 1.35; color: var(--muted); min-width: 180px; max-width: 260px;
          overflow-wrap: anywhere; }
td.prov span { display: block; }
td.prov b { color: var(--fg); font-weight: 600; }
p.caption { margin: 4px 0 0; font-size: 12px; color: var(--muted); }
table.matrix th a, table.matrix td a { color: inherit; text-decoration: none; }
table.matrix thead th a { color: var(--accent); }
table.matrix td { min-width: 128px; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.matrix td a { font-weight: 600; }
table.matrix .sub { display: block; font-size: 11px; color: var(--muted); font-weight: 400; }
table.matrix td.c-pos { background: #d9f2e1; } table.matrix td.c-0 { background: #eef8ee; }
table.matrix td.c-1 { background: #fdf3dc; } table.matrix td.c-2 { background: #fde4c8; }
table.matrix td.c-3 { background: #f9cfc0; } table.matrix td.c-4 { background: #f2b0a8; }
table.matrix td.c-r1 { background: #e3effd; } table.matrix td.c-r2 { background: #fff; }
table.matrix td.c-none { color: var(--muted); }
div.mblock { margin-bottom: 10px; }
details.more { margin-top: 8px; }
details.more summary { cursor: pointer; color: var(--accent); font-weight: 600; }
div.plots { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 10px; }
div.plots figure { margin: 0; flex: 0 1 540px; min-width: 0; max-width: 100%; }
div.plots img { width: 100%; height: auto; border: 1px solid var(--line); background: #fff; }
div.plots figcaption { font-size: 12px; color: var(--muted); }
p.empty { color: var(--muted); font-style: italic; }
details.skipped { margin-bottom: 12px; }
details.skipped li { overflow-wrap: anywhere; }
footer { color: var(--muted); font-size: 12px; padding-bottom: 24px; }
@media (max-width: 640px) {
  :root { --rankw: 3.2em; }
  table.lb th, table.lb td { padding: 4px 4px; }
  body { font-size: 13px; }
  header h1 { font-size: 19px; }
  nav.filters { position: static; }
  nav.filters select { max-width: 150px; }
  section.task-ov, section.board { padding: 8px; }
  th.algorithm { min-width: 96px; max-width: 130px; }
  table.matrix td { min-width: 104px; }
}
"""

JS = """
(function () {
  "use strict";
  function each(list, fn) { Array.prototype.forEach.call(list, fn); }

  function sortKey(row, idx, numeric) {
    var cell = row.cells[idx];
    var raw = cell ? cell.getAttribute("data-sort") : null;
    if (raw === null || raw === "") { return null; }
    if (numeric) { var x = parseFloat(raw); return isNaN(x) ? null : x; }
    return raw;
  }

  function sortTable(table, th, idx) {
    var numeric = th.getAttribute("data-type") === "num";
    var current = th.getAttribute("aria-sort");
    var first = th.getAttribute("data-first") === "asc" ? "ascending" : "descending";
    var dir = current ? (current === "ascending" ? "descending" : "ascending") : first;
    each(table.tHead.querySelectorAll("th[aria-sort]"), function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var sign = dir === "ascending" ? 1 : -1;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var refs = rows.filter(function (r) { return r.classList.contains("ref"); });
    var others = rows.filter(function (r) { return !r.classList.contains("ref"); });
    others.sort(function (a, b) {
      var x = sortKey(a, idx, numeric), y = sortKey(b, idx, numeric);
      if (x === null && y === null) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      if (numeric) { return sign * (x - y); }
      return sign * x.localeCompare(y);
    });
    refs.concat(others).forEach(function (r) { body.appendChild(r); });
  }

  each(document.querySelectorAll("table.lb"), function (table) {
    var head = table.tHead.rows[table.tHead.rows.length - 1];
    each(head.cells, function (th, idx) {
      var btn = th.querySelector("button");
      if (btn) { btn.addEventListener("click", function () { sortTable(table, th, idx); }); }
    });
  });

  var selects = document.querySelectorAll("select[data-filter]");
  var boards = document.querySelectorAll("section.board");
  var filtered = document.querySelectorAll("section.board, section.task-ov, div.mblock");
  var count = document.getElementById("f-count");
  var empty = document.getElementById("f-empty");

  function matches(el) {
    var ok = true;
    each(selects, function (sel) {
      var attr = "data-" + sel.getAttribute("data-filter");
      if (sel.value !== "" && el.hasAttribute(attr) && el.getAttribute(attr) !== sel.value) { ok = false; }
    });
    return ok;
  }

  function applyFilters() {
    var shown = 0;
    each(filtered, function (el) { el.hidden = !matches(el); });
    each(boards, function (board) { if (!board.hidden) { shown += 1; } });
    if (count) { count.textContent = shown + " of " + boards.length + " tables shown"; }
    if (empty) { empty.hidden = shown !== 0 || boards.length === 0; }
  }

  each(selects, function (sel) { sel.addEventListener("change", applyFilters); });
  var reset = document.getElementById("f-reset");
  if (reset) {
    reset.addEventListener("click", function () {
      each(selects, function (sel) { sel.value = ""; });
      applyFilters();
    });
  }
  applyFilters();
})();
"""
