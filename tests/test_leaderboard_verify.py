"""`fednlp-bench verify`: a real run is confirmed, a hand-edited metric is not, stamps mark rows."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fednlp_bench import config, run
from fednlp_bench.cli import main
from fednlp_bench.leaderboard import build, record_digest
from fednlp_bench.leaderboard.load import stamp_path
from fednlp_bench.leaderboard.verify import DEFAULT_ATOL, compare


def test_compare_flags_edits_beyond_the_tolerance_and_ignores_timings():
    rec = {"task": "tc", "seed": 0, "algorithm": {"name": "fedavg", "hparams": {"mu": 0.1}, "source": "a.py"},
           "metrics": {"final": {"accuracy": 0.5}, "per_round": [{"round": 1, "accuracy": 0.25}],
                       "counterfactual": {"flip_rate": 0.0, "seconds": 2.0}},
           "cost": {"wall_seconds": 10.0}, "provenance": {"git_commit": "ab"}}
    same = copy.deepcopy(rec)
    same["metrics"]["final"]["accuracy"] += DEFAULT_ATOL / 2  # float noise
    same["metrics"]["counterfactual"]["seconds"] = 9.0  # timings differ between runs
    same["cost"]["wall_seconds"] = 99.0
    same["provenance"]["git_commit"] = "cd"
    same["algorithm"]["source"] = "elsewhere/a.py"
    n, diffs = compare(rec, same)
    assert diffs == [] and n == 8  # task, seed, 4 metrics, algorithm name + hparam
    edited = copy.deepcopy(rec)
    edited["metrics"]["per_round"][0]["accuracy"] = 0.25 + 1 / 300  # one test example of 300
    edited["metrics"]["final"]["extra"] = 1.0
    edited["algorithm"]["hparams"]["mu"] = 0.01
    _, diffs = compare(edited, rec)
    assert sorted(d.where for d in diffs) == ["algorithm.hparams.mu", "metrics.final.extra",
                                              "metrics.per_round[0].accuracy"]
    assert "re-run 0.25" in str(next(d for d in diffs if d.where.endswith("accuracy")))


@pytest.mark.slow
def test_verify_confirms_a_real_record_and_rejects_an_edited_metric(tmp_path, tiny_overrides, capsys, monkeypatch):
    cfg = config.resolve("tc", None, tiny_overrides("threads=1"))
    record, path = run.run(cfg)  # run 1: the record
    results = Path(path).parent
    capsys.readouterr()

    # run 2: the re-run; every value matches
    assert main(["verify", str(path), "--stamp", "--keep", str(tmp_path / "rerun")]) == 0
    out = capsys.readouterr().out
    assert "verified:" in out and "values match the re-run" in out
    stamp = json.loads(stamp_path(Path(path)).read_text())
    assert stamp["result"] == "pass" and stamp["record_sha256"] == record_digest(record)
    assert stamp["n_compared"] > 20 and stamp["tolerance"]["atol"] == DEFAULT_ATOL
    (kept,) = (tmp_path / "rerun").iterdir()
    rerun = json.loads(kept.read_text())
    assert rerun["metrics"]["final"] == record["metrics"]["final"]  # same machine: bit-identical

    # a metric edited by hand by one test example (1/32) is caught by the same re-run
    edited = copy.deepcopy(record)
    edited["run_id"] += "-edited"
    acc = record["metrics"]["final"]["accuracy"]
    edited["metrics"]["final"]["accuracy"] = acc + 1 / 32 if acc < 0.5 else acc - 1 / 32
    n, diffs = compare(edited, rerun)
    assert [d.where for d in diffs] == ["metrics.final.accuracy"] and n == stamp["n_compared"]
    # ... and the command says so, exit 1 (the re-run above stands in for a third identical run)
    edited_path = tmp_path / "edited.json"
    edited_path.write_text(json.dumps(edited))
    import fednlp_bench.leaderboard.verify as verify_module

    monkeypatch.setattr(verify_module, "verify",
                        lambda p, **kw: verify_module.VerifyResult(Path(p), False, n, diffs, 1.0, rerun))
    assert main(["verify", str(edited_path)]) == 1
    err = capsys.readouterr().err
    assert "verify FAILED" in err and "1 of" in err and "metrics.final.accuracy: record" in err

    # the page marks the verified row; a record changed after its stamp is not verified any more
    build([results], tmp_path / "site", plots=False)
    assert "✓ 1/1" in (tmp_path / "site" / "README.md").read_text()
    tampered = json.loads(Path(path).read_text())
    tampered["metrics"]["final"]["macro_f1"] = 0.0
    Path(path).write_text(json.dumps(tampered))
    build([results], tmp_path / "site", plots=False)
    assert "✓" not in (tmp_path / "site" / "README.md").read_text()


def test_verify_refuses_an_invalid_record_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1}')
    assert main(["verify", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing field" in err[0]


def test_compare_records_matches_by_configuration_and_reports_each_difference(tmp_path):
    """benchmarks/compare_records.py on real smoke records: an unchanged copy is identical, a copy
    with one test example flipped differs in exactly that field, another seed has no counterpart,
    and a broken file is reported, not a crash."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    data = root / "tests" / "data" / "records"
    ref, new = tmp_path / "ref", tmp_path / "new"
    ref.mkdir()
    new.mkdir()
    fedavg = json.loads((data / "tc-smoke-fedavg.json").read_text())
    central = json.loads((data / "tc-smoke-centralized.json").read_text())
    for rec in (fedavg, central):
        (ref / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    rerun = json.loads(json.dumps(fedavg))  # a re-run elsewhere: other folder and thread count, same experiment
    rerun["run_id"], rerun["config"]["results_dir"], rerun["config"]["threads"] = "rerun-a", "/elsewhere", 5
    (new / "a.json").write_text(json.dumps(rerun))
    flipped = json.loads(json.dumps(central))
    flipped["run_id"] = "rerun-b"
    flipped["metrics"]["final"]["accuracy"] = central["metrics"]["final"]["accuracy"] + 0.04  # 1 of 25 test rows
    (new / "b.json").write_text(json.dumps(flipped))
    other = json.loads(json.dumps(fedavg))
    other["run_id"], other["config"]["seed"], other["seed"] = "rerun-c", 7, 7
    (new / "c.json").write_text(json.dumps(other))
    (new / "d.json").write_text("{not json")
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "compare_records.py"), str(ref), str(new)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("2 records matched") and "1 identical, 1 differ; 1 without a counterpart, 1 invalid" \
        in lines[0], done.stdout
    assert lines[1].startswith("  1 differ in metrics.final.accuracy (e.g. rerun-b: metrics.final.accuracy 0.64 ->")
    assert lines[2] == "  rerun-c" and lines[3].startswith("  d.json: ")
    # the same records against themselves: all identical, exit 0
    same = subprocess.run([sys.executable, str(root / "benchmarks" / "compare_records.py"), str(ref), str(ref)],
                          capture_output=True, text=True, timeout=120)
    assert same.returncode == 0 and same.stdout.startswith("2 records matched") and "2 identical, 0 differ" \
        in same.stdout, same.stdout
