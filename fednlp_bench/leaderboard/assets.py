"""Static CSS and JavaScript inlined into index.html (no CDN, works offline).

The script reads everything it needs from the DOM; no record data is ever
placed inside it. Both are allowed by hash in the page's Content-Security-Policy.
"""
from __future__ import annotations

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dee8; --head:#eef1f6; --ref:#fff7e0; --accent:#2457c5; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
html { scroll-padding-top: 60px; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); background: #f7f8fb; }
header, nav.filters, main, footer, details.skipped { max-width: 1720px; margin: 0 auto; padding: 0 12px; }
header h1 { font-size: 22px; margin: 16px 0 2px; }
header p { margin: 0 0 8px; color: var(--muted); }
nav.filters { position: sticky; top: 0; z-index: 5; display: flex; flex-wrap: wrap; gap: 8px 16px;
              align-items: center; padding-top: 8px; padding-bottom: 8px; background: #f7f8fb;
              border-bottom: 1px solid var(--line); }
nav.filters label { font-weight: 600; font-size: 13px; }
nav.filters select { margin-left: 4px; max-width: 340px; font: inherit; font-weight: 400; padding: 2px 4px; }
nav.filters button { font: inherit; padding: 2px 10px; }
#f-count { color: var(--muted); font-size: 13px; }
section.board { background: #fff; border: 1px solid var(--line); border-radius: 6px;
                margin: 14px 0; padding: 10px 10px 12px; }
section.board h2 { font-size: 16px; margin: 0 0 2px; overflow-wrap: anywhere; }
section.board h2 .sep { color: var(--muted); font-weight: 400; padding: 0 4px; }
p.meta { margin: 0 0 8px; color: var(--muted); font-size: 13px; }
p.meta .note { color: #8a4b00; }
div.scroll { overflow-x: auto; }
table.lb { border-collapse: collapse; font-size: 13px; width: 100%; }
table.lb th, table.lb td { border-bottom: 1px solid var(--line); padding: 4px 6px; vertical-align: top; }
table.lb thead th { background: var(--head); text-align: left; white-space: nowrap; font-weight: 600; }
table.lb thead tr.groups th { text-align: center; font-size: 12px; color: var(--muted); border-bottom: 0; }
table.lb thead tr.groups th.grp { border-left: 2px solid #fff; border-right: 2px solid #fff; background: #e2e7f0; }
table.lb th button { all: unset; cursor: pointer; }
table.lb th button:focus-visible { outline: 2px solid var(--accent); }
table.lb th button::after { content: ""; display: inline-block; width: 0.9em; text-align: center; font-size: 11px; }
table.lb th button:hover::after, table.lb th button:focus-visible::after { content: "\\2195"; color: #9aa3b5; }
table.lb th[aria-sort=ascending] button::after { content: "\\25B2"; color: var(--accent); }
table.lb th[aria-sort=descending] button::after { content: "\\25BC"; color: var(--accent); }
table.lb td.num, table.lb th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.lb tbody tr:hover { background: #f2f6ff; }
table.lb tr.ref { background: var(--ref); }
table.lb tr.ref td.rank { font-weight: 600; color: #8a6100; }
td.algo { min-width: 100px; max-width: 220px; overflow-wrap: anywhere; }
td.algo .name { font-weight: 600; }
td.algo .detail { display: block; color: var(--muted); font-size: 12px; }
td.pos { color: #1a7f37; } td.neg { color: #b42318; }
td.links { min-width: 56px; max-width: 120px; font-size: 12px; }
td.links a { color: var(--accent); white-space: nowrap; }
td.prov { font-size: 12px; line-height: 1.35; color: var(--muted); min-width: 250px; max-width: 320px;
          overflow-wrap: anywhere; }
td.prov span { display: inline-block; }
td.prov span:not(:last-child)::after { content: " ·"; color: #9aa3b5; }
td.prov b { color: var(--fg); font-weight: 600; }
div.plots { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 10px; }
div.plots figure { margin: 0; flex: 0 1 560px; min-width: 280px; }
div.plots img { width: 100%; height: auto; border: 1px solid var(--line); background: #fff; }
div.plots figcaption { font-size: 12px; color: var(--muted); }
p.empty { color: var(--muted); font-style: italic; }
details.skipped { margin-bottom: 16px; }
details.skipped li { overflow-wrap: anywhere; }
footer { color: var(--muted); font-size: 12px; padding-bottom: 24px; }
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
    var dir = current ? (current === "ascending" ? "descending" : "ascending")
                      : (numeric ? "descending" : "ascending");
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
  var count = document.getElementById("f-count");
  var empty = document.getElementById("f-empty");

  function applyFilters() {
    var shown = 0;
    each(boards, function (board) {
      var ok = true;
      each(selects, function (sel) {
        if (sel.value !== "" && board.getAttribute("data-" + sel.getAttribute("data-filter")) !== sel.value) {
          ok = false;
        }
      });
      board.hidden = !ok;
      if (ok) { shown += 1; }
    });
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
