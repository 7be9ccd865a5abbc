"""Hostile records: none may crash the build or `submit`, fool a reader, or replace a real result.

Each test is one case found by trying the leaderboard as a hostile submitter would. The build
must exit 0, write both pages and list the file as skipped (once, without terminal escapes);
`submit` must exit 2 with one line.
"""
from __future__ import annotations

import copy
import json
import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import pytest

from fednlp_bench.cli import main
from fednlp_bench.leaderboard import build, submit
from fednlp_bench.leaderboard.load import read_record
from fednlp_bench.record import RecordError

DATA = Path(__file__).resolve().parent / "data" / "records"
FEDAVG = DATA / "tc-smoke-fedavg.json"  # a real smoke run: FedAvg, uniform, seed 0
CENTRAL = DATA / "tc-smoke-centralized.json"  # its centralized reference


def real(path: Path = FEDAVG) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def dump(record: Any) -> str:
    return json.dumps(record, indent=1, ensure_ascii=True)


def board(tmp_path: Path, files: dict[str, str], capsys, plots: bool = False) -> tuple[str, str, str, str]:
    """Build from the real FedAvg + centralized records plus ``files``; return (stdout, stderr, html, md).

    Pages only unless ``plots`` (drawing takes most of a build's time; plots have their own tests)."""
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    for src in (FEDAVG, CENTRAL):
        (results / src.name).write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    for name, text in files.items():
        (results / name).write_text(text, encoding="utf-8", errors="surrogatepass")
    out = tmp_path / "site"
    capsys.readouterr()
    assert main(["leaderboard", "--results", str(results), "--out", str(out), *([] if plots else ["--no-plots"])]) == 0
    captured = capsys.readouterr()
    html = (out / "index.html").read_text(encoding="utf-8")
    md = (out / "README.md").read_text(encoding="utf-8")
    return captured.out, captured.err, html, md


def submit_cli(tmp_path: Path, text: str, capsys, *extra: str) -> tuple[int, str]:
    src = tmp_path / "submission.json"
    src.write_text(text, encoding="utf-8", errors="surrogatepass")
    capsys.readouterr()
    code = main(["submit", str(src), "--results-dir", str(tmp_path / "sub"), *extra])
    captured = capsys.readouterr()
    return code, captured.err


def assert_skipped(err: str, html: str, md: str, name: str, reason: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("skipped") and name in ln]
    assert len(lines) == 1, err  # printed once
    assert reason in lines[0], lines[0]
    assert "\x1b" not in err and name in html and name in md
    assert "2 records" in html or "2 result records" in html  # the real rows are still there


def mutated(fn: Callable[[dict[str, Any]], Any], base: Path = FEDAVG) -> str:
    rec = real(base)
    rec["run_id"] += "-hostile"
    fn(rec)
    return dump(rec)


CASES = {
    "privacy-string": (lambda r: r.update(privacy="yes"), "privacy must be an object"),
    "privacy-level-int": (lambda r: r.update(privacy={"user_level": 1}), "privacy.user_level must be an object"),
    "audit-list": (lambda r: r.update(audit=["x"]), "audit must be an object"),
    "counterfactual-string": (lambda r: r["metrics"].update(counterfactual="none"),
                              "metrics.counterfactual must be an object"),
    "accuracy-1e308": (lambda r: r["metrics"]["final"].update(accuracy=1e308), "metrics.final.accuracy must be in"),
    "per-client-1e300": (lambda r: r["metrics"]["per_client"]["0"].update(macro_f1=-1e300),
                         "metrics.per_client.0.macro_f1 must be in"),
    "accuracy-7.5": (lambda r: r["metrics"]["final"].update(accuracy=7.5),
                     "metrics.final.accuracy must be in [0.0, 1.0]"),
    "negative-clients": (lambda r: r["partition"].update(n_clients=-3), "partition.n_clients must be in"),
    "negative-wall": (lambda r: r["cost"].update(wall_seconds=-100), "cost.wall_seconds must be in"),
    "negative-bytes": (lambda r: r["cost"].update(bytes_up=-5), "cost.bytes_up must be in"),
    "negative-seed": (lambda r: r.update(seed=-7), "seed must be in"),
    "future-date": (lambda r: r.update(created="2099-01-01T00:00:00+00:00"), "created is in the future"),
    "primary-score": (lambda r: r["metrics"].update(primary="score", final={**r["metrics"]["final"], "score": 0.99}),
                      "the primary metric of task tc is accuracy"),
    "zero-width-algorithm": (lambda r: r["algorithm"].update(name="fedavg\u200b"), "U+200B"),
    "bidi-algorithm": (lambda r: r["algorithm"].update(name="fed\u202egva\u202c"), "U+202E"),
    "zero-width-dataset": (lambda r: r.update(dataset="bbc\u200b"), "U+200B"),
    "cyrillic-lookalike": (lambda r: r["algorithm"].update(name="f\u0435davg"), "mixes Latin with Greek or Cyrillic"),
    "escape-in-metric-key": (lambda r: r["metrics"]["final"].update({"acc\x1b[31mred": 0.5}), "U+001B"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_field_is_skipped_by_build_and_refused_by_submit(tmp_path, capsys, case):
    fn, reason = CASES[case]
    text = mutated(fn)
    _, err, html, md = board(tmp_path, {f"{case}.json": text}, capsys)
    assert_skipped(err, html, md, f"{case}.json", reason)
    code, err = submit_cli(tmp_path, text, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and reason in err and "\x1b" not in err


X = '"__X__"'  # a field set to this string is then replaced by raw JSON text json.dumps cannot produce
RAW_CASES = {
    "int-10e400-cost": (lambda r: r["cost"].update(wall_seconds="__X__"), "1" + "0" * 400, "integer with 401 digits"),
    "int-10e400-metric": (lambda r: r["metrics"]["final"].update(accuracy="__X__"), "1" + "0" * 400,
                          "integer with 401 digits"),
    "float-1e400": (lambda r: r["metrics"]["final"].update(accuracy="__X__"), "1e400", "overflows a float"),
    "deep-nesting": (lambda r: r.update(x="__X__"), "[" * 200_000 + "]" * 200_000, "nested too deeply"),
    "lone-surrogate": (lambda r: r["algorithm"].update(name="__X__"), '"fedavg\\ud800"', "lone surrogate"),
}


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_hostile_json_text_is_skipped_by_build_and_refused_by_submit(tmp_path, capsys, case):
    fn, raw, reason = RAW_CASES[case]
    text = mutated(fn).replace(X, raw)
    assert raw in text
    _, err, html, md = board(tmp_path, {f"{case}.json": text}, capsys)
    assert_skipped(err, html, md, f"{case}.json", reason)
    code, err = submit_cli(tmp_path, text, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and reason in err


def test_overlong_name_is_rejected_fast(tmp_path, capsys):
    text = mutated(lambda r: r["algorithm"].update(name="x" * 1_000_000))
    start = time.perf_counter()
    _, err, html, md = board(tmp_path, {"long.json": text}, capsys)
    assert time.perf_counter() - start < 30
    assert_skipped(err, html, md, "long.json", "algorithm.name is 1000000 characters long")
    assert "x" * 1000 not in html and "x" * 1000 not in err


def test_fullwidth_name_is_the_same_algorithm(tmp_path):
    rec = real()
    rec["algorithm"]["name"] = "ｆｅｄａｖｇ"
    rec["run_id"] += "-fullwidth"
    path = tmp_path / "fw.json"
    path.write_text(dump(rec), encoding="utf-8")
    record, reason = read_record(path)
    assert reason is None and record["algorithm"]["name"] == "fedavg"
    # ... so it is the same (configuration, seed) as the real FedAvg record
    results = tmp_path / "results"
    results.mkdir()
    (results / FEDAVG.name).write_text(FEDAVG.read_text())
    with pytest.raises(RecordError, match="already reports this configuration and seed 0"):
        submit(path, results)


def test_same_configuration_and_seed_needs_replace_and_a_later_date(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / CENTRAL.name).write_text(CENTRAL.read_text())
    fake = real(CENTRAL)
    fake["run_id"] += "-better"
    fake["metrics"]["final"]["accuracy"] = 0.30
    src = tmp_path / "fake.json"
    src.write_text(dump(fake))
    with pytest.raises(RecordError, match="already reports this configuration and seed 0; pass --replace"):
        submit(src, results)
    created = datetime.fromisoformat(fake["created"])
    older = copy.deepcopy(fake)
    older["created"] = (created - timedelta(days=1)).isoformat()
    src.write_text(dump(older))
    with pytest.raises(RecordError, match="must be newer"):
        submit(src, results, replace=True)
    newer = copy.deepcopy(fake)
    newer["created"] = (created + timedelta(seconds=1)).isoformat()
    src.write_text(dump(newer))
    target = submit(src, results, replace=True)
    report = build([results], tmp_path / "site")
    assert report.superseded == [(results / CENTRAL.name, target)]
    html = (tmp_path / "site" / "index.html").read_text()
    assert "1 superseded record(s)" in html and CENTRAL.name in html
    assert "superseded" in (tmp_path / "site" / "README.md").read_text()


def test_symlinked_records_are_not_followed(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = real()
    secret["run_id"] += "-secret"
    secret["algorithm"]["name"] = "leakedname"
    (outside / "secret.json").write_text(dump(secret))
    (outside / "invalid.json").write_text('{"schema_version": 1, "task": "SECRETVALUE"}')
    results = tmp_path / "results"
    results.mkdir()
    os.symlink(outside / "secret.json", results / "link.json")
    os.symlink(outside / "invalid.json", results / "badlink.json")
    os.symlink(outside, results / "linkdir")
    _, err, html, md = board(tmp_path, {}, capsys)
    for text in (err, html, md):
        assert "leakedname" not in text and "SECRETVALUE" not in text
    assert err.count("symbolic link") == 3
    assert "link.json" in html and "badlink.json" in html and "linkdir" in html


def test_symlinked_plots_folder_is_not_followed(tmp_path, capsys):
    target = tmp_path / "elsewhere"
    target.mkdir()
    victim = target / "curve-x-0123456789.png"
    victim.write_bytes(b"precious")
    site = tmp_path / "site"
    site.mkdir()
    os.symlink(target, site / "plots")
    out, err, html, md = board(tmp_path, {}, capsys, plots=True)
    assert victim.read_bytes() == b"precious" and sorted(p.name for p in target.iterdir()) == [victim.name]
    assert "symbolic link or not a folder" in err and "<img" not in html


def test_terminal_escapes_in_file_names_are_not_printed(tmp_path, capsys):
    _, err, html, _ = board(tmp_path, {"evil\x1b[2J.json": "{not json"}, capsys)
    assert "\x1b" not in err and "\\x1b[2J" in err
    assert "\x1b" not in html


def test_unknown_task_cannot_switch_another_records_metric(tmp_path, capsys):
    files = {}
    for i in range(12):
        rec = real()
        rec.update(task="mytask", run_id=f"r{i}", seed=i)
        rec["metrics"].update(primary="score", final={**rec["metrics"]["final"], "score": 0.5})
        files[f"score{i}.json"] = dump(rec)
    honest = real()
    honest.update(task="mytask", run_id="honest", seed=0)
    files["honest.json"] = dump(honest)
    _, _, html, md = board(tmp_path, files, capsys)
    # the honest record keeps its own metric in its own table, the 12 others form another
    assert md.count("### mytask / bbc") == 2
    assert "Primary metric **score**" in md and "Primary metric **accuracy**" in md
