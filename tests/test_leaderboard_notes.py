"""What a leaderboard row must say besides its numbers: client failures (marker + count, and
`submit` flags them), departures from the paper's setup (marker + list), plugin identity (rows
split by file hash / package version; a plugin never takes a built-in's place), and the delta of
every epsilon."""
from __future__ import annotations

import re
from pathlib import Path

from test_leaderboard import loaded, make_record, write_record

from fednlp_bench.cli import main
from fednlp_bench.leaderboard import build
from fednlp_bench.leaderboard.notes import client_failures
from fednlp_bench.leaderboard.overview import overview
from fednlp_bench.leaderboard.render_text import render_text
from fednlp_bench.leaderboard.tables import make_tables
from fednlp_bench.record_checks import strict_problems

REASON = "FloatingPointError: client update is not finite (plugin.py:42)"


def failing(seed: int, n: int, **kw) -> dict:
    """A FedAvg record whose clients 1..n failed in round 2."""
    rec = make_record(seed=seed, run_id=f"fail-{seed}-{n}", **kw)
    rec["metrics"]["failed_clients"] = [{"round": 2, "client": c, "reason": REASON} for c in range(1, n + 1)]
    rec["metrics"]["dropped_clients"] = 0
    return rec


def site(tmp_path: Path, *records: dict) -> tuple[str, str]:
    results = tmp_path / "results"
    for r in records:
        write_record(results, r)
    report = build([results], tmp_path / "site", plots=False)
    assert report.ok, report.summary()
    return (tmp_path / "site" / "index.html").read_text(), (tmp_path / "site" / "README.md").read_text()


# --- client failures ---------------------------------------------------------------------------


def test_failures_are_counted_over_a_rows_seeds():
    recs = [failing(0, 2), failing(1, 1), make_record(seed=2, run_id="clean")]
    (table,) = make_tables(loaded(*recs))
    (row,) = table.rows
    assert (row.failures.failed, row.failures.runs, len(row.runs)) == (3, 2, 3)  # 2 + 1 + 0 by hand
    assert row.failures.summary() == "3 failed client updates"


def test_dropped_clients_count_as_failures_only_without_planned_dropout():
    rec = make_record()
    rec["metrics"]["dropped_clients"] = 4
    rec["fl"]["dropout"] = 0.0
    assert client_failures(rec).total == 4
    rec["fl"]["dropout"] = 0.2  # the dropout the run asked for: part of the experiment, not a failure
    assert client_failures(rec).total == 0


def test_failures_are_marked_on_the_row_in_html_markdown_and_text(tmp_path):
    html, md = site(tmp_path, failing(0, 2), make_record(seed=1, run_id="clean"),
                    make_record(algorithm="fedprox", hparams={"mu": 0.01}, run_id="prox"))
    detail = html[html.index('<table class="lb">'):]  # the detail table, after the overview matrix
    row_html = re.search(r"<tr>(?:(?!</tr>).)*?<span class=\"name\">fedavg</span>.*?</tr>", detail, re.S).group(0)
    assert '<span class="flag failures"' in row_html and "⚠ 2 failed" in row_html
    assert "fedprox" not in row_html
    assert detail.count('<span class="flag failures"') == 2  # the row's marker and its note under the table
    assert "⚠ 2 failed" in html[:html.index('<table class="lb">')]  # and on the overview matrix cell
    assert "2 failed client updates (1 of 2 seeds)" in html and "seed 0 round 2 client 1: FloatingPointError" in html
    md_detail = md[md.index("## Tables"):]  # the detail tables, after the overview
    fedavg_line = next(ln for ln in md_detail.splitlines() if ln.startswith("| ") and "| fedavg" in ln)
    assert "**⚠ 2 failed**" in fedavg_line
    assert "- **⚠ 2 failed** fedavg: 2 failed client updates (1 of 2 seeds)" in md
    prox_line = next(ln for ln in md_detail.splitlines() if ln.startswith("| ") and "| fedprox" in ln)
    assert "⚠" not in prox_line
    tables = make_tables(loaded(failing(0, 2)))
    text = render_text(tables, overview(tables))
    assert "fedavg [⚠ 2 failed]" in text and "2 failed client updates (1 of 1 seed)" in text


def test_submit_accepts_a_record_with_failures_and_flags_it(tmp_path, capsys):
    src = write_record(tmp_path / "in", failing(0, 3))
    capsys.readouterr()
    assert main(["submit", str(src), "--results-dir", str(tmp_path / "sub")]) == 0
    out, err = capsys.readouterr()
    (warning,) = err.strip().splitlines()
    assert warning.startswith("warning: ") and "3 failed client updates" in warning
    assert "round 2 client 1: FloatingPointError" in warning and "accepted" in warning
    assert out.startswith("submitted: ") and out.strip().endswith("(flagged: 3 failed client updates)")
    assert len(list((tmp_path / "sub").iterdir())) == 1

    clean = write_record(tmp_path / "in", make_record(seed=5, run_id="clean"))
    assert main(["submit", str(clean), "--results-dir", str(tmp_path / "sub")]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "flagged" not in out


def test_ill_formed_failed_clients_are_rejected_by_the_strict_checks():
    for bad, field in (("x", "metrics.failed_clients must be a list"),
                       (["x"], "metrics.failed_clients[0] must be an object"),
                       ([{"round": -1, "client": 0, "reason": "r"}], "metrics.failed_clients[0].round must be in"),
                       ([{"round": 1, "client": 0.5, "reason": "r"}], "metrics.failed_clients[0].client must be"),
                       ([{"round": 1, "client": 0}], "metrics.failed_clients[0].reason must be a string")):
        rec = make_record()
        rec["metrics"]["failed_clients"] = bad
        assert any(field in p for p in strict_problems(rec)), (bad, strict_problems(rec))
    assert strict_problems(failing(0, 2)) == []


# --- deviations ---------------------------------------------------------------------------------

DEVIATION = "clients use adamw; the paper's analysis assumes sgd (run it with --set fl.client_optimizer=sgd)"


def test_deviations_are_marked_and_listed_and_never_merged_with_the_paper_setup(tmp_path):
    dev = make_record(algorithm="scaffold", hparams={"server_lr": 1.0}, run_id="dev")
    dev["algorithm"]["deviations"] = [DEVIATION]
    paper = make_record(algorithm="scaffold", hparams={"server_lr": 1.0}, seed=1, run_id="paper")
    (table,) = make_tables(loaded(dev, paper))
    assert sorted((r.deviations, r.seeds) for r in table.rows) == [([], [1]), ([DEVIATION], [0])]
    html, md = site(tmp_path, dev, paper)
    assert html.count('<span class="flag deviations"') == 2  # one row's marker + its note
    assert "≠ paper setup" in html and "clients use adamw; the paper&#x27;s analysis assumes sgd" in html
    assert "- **≠ paper setup** scaffold (server\\_lr 1): deviates from the algorithm&#x27;s paper setup" in md
    assert ("  - clients use adamw; the paper&#x27;s analysis assumes sgd "
            "(run it with --set fl.client\\_optimizer=sgd)") in md
    marked = [ln for ln in md.splitlines() if ln.startswith("| ") and "scaffold" in ln and "≠ paper setup" in ln]
    assert len(marked) == 1 and "dev.json" in marked[0]


def test_ill_formed_deviations_are_rejected():
    for bad in ("x", [1], [""], ["x" * 1001], ["d"] * 33):
        rec = make_record()
        rec["algorithm"]["deviations"] = bad
        assert any("algorithm.deviations" in p for p in strict_problems(rec)), bad


# --- plugin identity ----------------------------------------------------------------------------


def test_a_plugin_named_like_a_builtin_is_its_own_row_never_the_baseline_or_the_reference():
    fake, fake1 = (make_record(algorithm="fedavg", value=0.99, seed=s, run_id=f"fake{s or ''}") for s in (0, 1))
    for f in (fake, fake1):  # more seeds than the built-in: it would be the baseline by seed count
        f["provenance"]["plugin"] = {"source": "file", "path": "fedavg.py", "sha256": "ef" * 32}
    real = make_record(algorithm="fedavg", value=0.7, run_id="real")
    real["provenance"]["plugin"] = {"source": "builtin"}
    central = make_record(algorithm="centralized", value=0.2, run_id="fake-central")
    central["provenance"]["plugin"] = {"source": "file", "path": "c.py", "sha256": "01" * 32}
    ref = make_record(algorithm="centralized", value=0.9, run_id="ref")
    tables = make_tables(loaded(fake, fake1, real, central, ref))
    (table,) = [t for t in tables if t.key.partition_method == "dirichlet_label"]
    (other,) = [t for t in tables if t is not table]  # no partition: the plugin "centralized" run is a row
    assert other.reference.runs[0].record["run_id"] == "ref"
    assert [(r.runs[0].record["run_id"], r.is_reference) for r in other.rows] == [("fake-central", False)]
    assert table.baseline is not None and table.baseline.runs[0].record["run_id"] == "real"
    assert table.reference is not None and table.reference.runs[0].record["run_id"] == "ref"
    fake_row = next(r for r in table.rows if r.runs[0].record["run_id"] == "fake")
    assert fake_row.detail == "file fedavg.py sha256 efefefefefef"
    assert round(fake_row.vs_baseline.mean, 6) == 0.29  # 0.99 - 0.7 (seed 0), against the built-in
    assert round(fake_row.gap.mean, 6) == 0.09  # 0.99 - 0.9, against the built-in centralized run


def test_entry_point_without_version_and_builtin_identity_are_accepted():
    rec = make_record()
    rec["provenance"]["plugin"] = {"source": "entry-point", "distribution": "x", "version": None, "target": "x:A"}
    assert strict_problems(rec) == []
    (table,) = make_tables(loaded(rec))
    assert table.rows[0].detail == "package x (version unknown)"
    builtin = make_record(run_id="b")
    builtin["provenance"]["plugin"] = {"source": "builtin"}
    (table,) = make_tables(loaded(builtin))
    assert table.rows[0].chips == []


# --- every epsilon states its delta -------------------------------------------------------------


def test_every_epsilon_shown_states_its_delta(tmp_path):
    recs = []
    for i, (eps, delta) in enumerate(((8.0, 1e-5), (2.0, 1e-5), (1.0, None))):
        rec = make_record(seed=0, run_id=f"dp{i}", value=0.5 + i / 10)
        level = {"noise_multiplier": 0.5 + i, "clip": 1.0, "epsilon": eps}
        if delta is not None:
            level["delta"] = delta
        rec["privacy"] = {"user_level": level}
        recs.append(rec)
    html, md = site(tmp_path, *recs, make_record(seed=0, run_id="plain"))
    for page in (html, md):
        shown = re.findall(r"user (\d+(?:\.\d+)?)( \((?:δ [^)]+)\))?", page)
        assert {e for e, _ in shown} == {"8", "2", "1"}, shown
        assert all(d for _, d in shown), shown  # no epsilon without its delta
        assert "user 8 (δ 1e-05)" in page and "user 1 (δ not recorded)" in page
