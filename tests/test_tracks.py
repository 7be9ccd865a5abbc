"""Tracks, tuning and the suite runner: files validated like configs, tuning never reads the test
split, and a killed suite resumes without redoing finished cells."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fednlp_bench import suite, tuning
from fednlp_bench import track as tracks
from fednlp_bench.cli import main
from fednlp_bench.errors import ConfigError
from fednlp_bench.leaderboard.verify import compare
from fednlp_bench.suite_summary import mean_ci

TINY = """\
name: tiny
version: 1
task: tc
dataset: bbc
model: minilm-l3
budget:
  data: {max_len: 32, max_train: 64, test_fraction: 0.05, val_fraction: 0.1, max_val: 24}
  fl: {rounds: 2, clients_per_round: 2, batch_size: 8, client_lr: 1.0e-4}
partitions:
  - {name: iid, method: uniform, n_clients: 4}
reference: null
algorithms: [fedavg]
seeds: [0, 1, 2]
tuning: {protocol: 1, partition: iid, seeds: [7]}
"""


@pytest.fixture
def tiny_track(tmp_path) -> Path:
    path = tmp_path / "track" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(TINY)
    return path


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------- track files
@pytest.mark.parametrize("name", ["tc", "st", "qa", "s2s"])
def test_packaged_tracks_load_and_score_the_full_test_split(name):
    t = tracks.load(name)
    assert t.name == name and len(t.seeds) >= 3 and t.reference == "centralized"
    for p in t.partitions:
        cfg = t.run_config("fedavg", p.name, t.seeds[0], wandb="disabled")
        assert cfg.data.max_test is None and cfg.data.val_fraction > 0
        assert cfg.preset == t.preset and cfg.fl.client_lr == t.budget["fl"]["client_lr"]


def test_tc_track_covers_the_partitions_the_benchmark_needs():
    t = tracks.load("tc")
    got = {(p.method, p.params.get("alpha"), p.dataset) for p in t.partitions}
    assert {("uniform", None, "bbc"), ("dirichlet_label", 1.0, "bbc"), ("dirichlet_label", 0.1, "bbc"),
            ("quantity", None, "bbc"), ("natural", None, "healthtweets")} == got


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("seeds: [0, 1, 2]", "seeds: [0, 1]"), "'seeds' must be a list of at least 3"),
    (lambda s: s.replace("seeds: [0, 1, 2]", "seeds: [0, 1, 1]"), "'seeds' must be a list of at least 3"),
    (lambda s: s.replace("max_val: 24}", "max_val: 24, max_test: 30}"), "'budget.data.max_test' must be null"),
    (lambda s: s.replace("rounds: 2", "rounds: 0"), "fl.rounds must be >= 1, got 0"),
    (lambda s: s.replace("client_lr:", "client_rl:"), "unknown config key 'fl.client_rl'"),
    (lambda s: s.replace("method: uniform", "method: unifrom"), "unifrom"),
    (lambda s: s.replace("partition: iid,", "partition: iid2,"), "'tuning.partition' is 'iid2'"),
    (lambda s: s.replace("version: 1", "verison: 1"), "unknown key 'verison'"),
    (lambda s: s + "extra: [1, 2\n", "not valid YAML at line"),
    (lambda s: "- just a list\n", "'<top level>' must be a mapping"),
])
def test_bad_track_files_give_one_line_and_exit_2(tiny_track, capsys, edit, message):
    tiny_track.write_text(edit(TINY))
    rc, out, err = _cli(capsys, "suite", "--track", str(tiny_track), "--list")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and message in err and str(tiny_track) in err, err


def test_unknown_packaged_track_names_the_choices(capsys):
    rc, _, err = _cli(capsys, "suite", "--track", "tcc", "--list")
    assert rc == 2 and "unknown track 'tcc'" in err and "did you mean 'tc'?" in err


def test_search_spaces_of_the_builtins():
    from fednlp_bench import algorithms

    spaces = {name: algorithms.get(name).search_space() for name in
              ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedavgm", "scaffold")}
    assert spaces["fedavg"] == {}
    assert set(spaces["fedprox"]) == {"mu"}
    for name in ("fedadam", "fedyogi", "fedadagrad"):
        assert set(spaces[name]) == {"server_lr", "tau"}
    assert set(spaces["fedavgm"]) == {"server_lr", "momentum"}
    assert set(spaces["scaffold"]) == {"server_lr"}
    for name, space in spaces.items():  # every grid value passes the field's own rules
        for values in tuning.Space(space, "algorithm").grid():
            algorithms.get(name).from_params(values)


# --------------------------------------------------------------------------- tuned-parameter files
def _valid_doc(track: tracks.Track) -> dict:
    space = tuning.search_space(track, "fedprox")
    scores = [{"params": p, "val": [0.5 + 0.1 * i], "mean": 0.5 + 0.1 * i} for i, p in enumerate(space.grid())]
    return {"format": 1, "track": track.identity, "protocol": 1, "algorithm": "fedprox", "target": "algorithm",
            "space": space.values, "chosen": scores[-1]["params"], "metric": "accuracy", "split": "validation",
            "partition": "iid", "seeds": [7], "scores": scores, "created": "2026-01-01T00:00:00+00:00",
            "code": {"git_commit": None, "git_dirty": False}}


def test_a_valid_tuned_file_is_read_and_applied(tiny_track, tmp_path):
    t = tracks.load(str(tiny_track))
    doc = _valid_doc(t)
    path = tuning.tuned_path(t, "fedprox")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    assert tuning.read_tuned(t, "fedprox") == doc
    cfg, extra = suite.cell_config(t, suite.Cell("fedprox", "iid", 1), suite.Options(tmp_path / "r"))
    assert cfg.algorithm.params == doc["chosen"] and extra[("tuning",)]["chosen"] == doc["chosen"]
    assert extra[("track",)] == {"name": "tiny", "version": 1}
    assert tuning.read_tuned(t, "fedavg") is None  # nothing to tune: no file needed


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(chosen={"mu": 0.001}), "'chosen' {\"mu\": 0.001} is not the best validation score"),
    (lambda d: d.update(track={"name": "tiny", "version": 2}), "the file is stale"),
    (lambda d: d.update(space={"mu": [0.5]}), "'space' is"),
    (lambda d: d["scores"][1].update(val=[float("nan")]), "'scores[1].val' must be 1 finite number(s)"),
    (lambda d: d["scores"][1].update(mean=0.9), "'scores[1].mean' is not the mean"),
    (lambda d: d["scores"].pop(), "one entry per candidate"),
    (lambda d: d.pop("metric"), "missing key 'metric'"),
    (lambda d: d.update(format=9), "format 9 is not supported"),
])
def test_bad_tuned_files_give_one_line_and_exit_2(tiny_track, tmp_path, capsys, edit, message):
    t = tracks.load(str(tiny_track))
    doc = _valid_doc(t)
    edit(doc)
    path = tuning.tuned_path(t, "fedprox")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    rc, out, err = _cli(capsys, "suite", "--track", str(tiny_track), "--algorithm", "fedprox", "--list",
                        "--results-dir", str(tmp_path / "r"))
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    assert message in err and str(path) in err, err


def test_missing_or_broken_tuned_file_says_what_to_run(tiny_track, tmp_path, capsys):
    args = ("suite", "--track", str(tiny_track), "--algorithm", "fedprox", "--list", "--results-dir",
            str(tmp_path / "r"))
    rc, _, err = _cli(capsys, *args)
    assert rc == 2 and "fednlp-bench tune --track tiny --algorithm fedprox" in err
    path = tuning.tuned_path(tracks.load(str(tiny_track)), "fedprox")
    path.parent.mkdir(parents=True)
    path.write_text('{"format": 1,')
    rc, _, err = _cli(capsys, *args)
    assert rc == 2 and "not readable JSON" in err and err.count("\n") == 1
    rc, out, _ = _cli(capsys, *args, "--untuned")
    assert rc == 0 and out.count("missing") == 3


def test_best_breaks_ties_towards_the_earlier_candidate_and_honours_direction():
    scores = [{"params": {"a": 1}, "mean": 0.7}, {"params": {"a": 2}, "mean": 0.9}, {"params": {"a": 3}, "mean": 0.9}]
    assert tuning.best(scores) == {"a": 2}
    assert tuning.best(scores, higher=False) == {"a": 1}


def test_mean_ci_matches_a_hand_computed_t_interval():
    # values 0.70, 0.74, 0.75: mean 0.73, s = sqrt((0.03^2 + 0.01^2 + 0.02^2) / 2) = sqrt(0.0007)
    # t_{0.975, 2} = 4.302652729911275 (tables), half = t * s / sqrt(3)
    mean, half = mean_ci([0.70, 0.74, 0.75])
    assert math.isclose(mean, 0.73, rel_tol=1e-12)
    assert math.isclose(half, 4.302652729911275 * math.sqrt(0.0007) / math.sqrt(3), rel_tol=1e-9)
    assert mean_ci([0.5]) == (0.5, None)


def test_simple_table_is_the_mean_and_t_interval_of_the_newest_record_per_seed(tiny_track, tmp_path):
    from fednlp_bench.suite_summary import simple_table

    t = tracks.load(str(tiny_track))
    results = tmp_path / "results"
    results.mkdir()
    cfg = t.run_config("fedavg", "iid", 0, wandb="disabled").to_dict()
    rows = [(0, 0.70, "2026-01-01"), (1, 0.74, "2026-01-01"), (2, 0.10, "2026-01-01"), (2, 0.75, "2026-01-02")]
    for i, (seed, acc, created) in enumerate(rows):  # seed 2 re-run later: the newer record counts
        rec = {"track": {"name": "tiny", "version": 1}, "config": cfg, "seed": seed, "created": created,
               "algorithm": {"name": "fedavg"}, "metrics": {"primary": "accuracy", "final": {"accuracy": acc}}}
        (results / f"r{i}.json").write_text(json.dumps(rec))
    other = {**rec, "track": {"name": "tiny", "version": 2}, "seed": 5}  # another track version: ignored
    (results / "other.json").write_text(json.dumps(other))
    (results / "broken.json").write_text("{")
    line = next(ln for ln in simple_table(t, results).splitlines() if ln.startswith("fedavg"))
    half = 4.302652729911275 * math.sqrt(0.0007) / math.sqrt(3)  # as in the hand computation above
    assert line.split()[1:] == ["0.7300", "±", f"{half:.4f}", "(3)"]


def test_partition_gap_pairs_seeds_and_uses_the_t_interval():
    from fednlp_bench.suite_summary import partition_gap

    # per-seed differences 0.20, 0.24, 0.25 (seed 3 only on one side: left out): mean 0.23 and the
    # hand-computed interval of test_mean_ci_matches_a_hand_computed_t_interval
    cells = {("fedavg", "iid"): {0: 0.90, 1: 0.94, 2: 0.95, 3: 0.99},
             ("fedavg", "dir0.1"): {0: 0.70, 1: 0.70, 2: 0.70}}
    mean, half, seeds = partition_gap(cells, "fedavg", "iid", "dir0.1")
    assert seeds == [0, 1, 2] and math.isclose(mean, 0.23, rel_tol=1e-12)
    assert math.isclose(half, 4.302652729911275 * math.sqrt(0.0007) / math.sqrt(3), rel_tol=1e-9)
    with pytest.raises(ConfigError, match="no seed has both fedavg / iid and fedavg / natural"):
        partition_gap(cells, "fedavg", "iid", "natural")


# --------------------------------------------------------------------------- test split never read
def _poison_test_labels(monkeypatch):
    """Every test row gets a wrong label: any score computed on test changes."""
    import fednlp_bench.run as run_module

    original = run_module.load_splits

    def poisoned(cfg):
        task, dsd = original(cfg)
        n_classes = dsd["test"].features["label"].num_classes
        dsd["test"] = dsd["test"].map(lambda row: {"label": (row["label"] + 1) % n_classes})
        return task, dsd

    monkeypatch.setattr(run_module, "load_splits", poisoned)


@pytest.mark.slow
def test_tuning_and_round_evaluation_never_read_the_test_split(tiny_track, tmp_path, monkeypatch):
    # the centralized reference tuned over two client learning rates: the cheapest real grid
    tiny_track.write_text(TINY.replace("seeds: [7]}", "seeds: [7], centralized_client_lr: [1.0e-4, 3.0e-4]}"))
    t = tracks.load(str(tiny_track))
    clean, _ = tuning.tune(t, "centralized", folder=tmp_path / "clean", threads=1)
    assert [s["params"] for s in clean["scores"]] == [{"client_lr": 1e-4}, {"client_lr": 3e-4}]
    from fednlp_bench.run import run

    cfg = t.run_config("fedavg", "iid", 0, wandb="disabled", progress=False, threads=1,
                       results_dir=str(tmp_path / "results"))
    clean_rec, _ = run(cfg)
    _poison_test_labels(monkeypatch)
    poisoned, _ = tuning.tune(t, "centralized", folder=tmp_path / "poisoned", threads=1)
    poisoned_rec, _ = run(cfg)
    # the poison reached the test split: the final test accuracy changed ...
    assert clean_rec["metrics"]["final"]["accuracy"] != poisoned_rec["metrics"]["final"]["accuracy"]
    # ... but no validation score, tuning choice or per-round curve did
    assert [s["val"] for s in clean["scores"]] == [s["val"] for s in poisoned["scores"]]
    assert clean["chosen"] == poisoned["chosen"]
    assert clean_rec["metrics"]["per_round"] == poisoned_rec["metrics"]["per_round"]
    assert clean_rec["metrics"]["initial"] == poisoned_rec["metrics"]["initial"]
    assert all(r["split"] == "val" for r in clean_rec["metrics"]["per_round"])


# --------------------------------------------------------------------------- resume after SIGKILL
def _records(results: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}


@pytest.mark.slow
def test_a_killed_suite_resumes_without_redoing_finished_cells(tiny_track, tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "fednlp_bench", "suite", "--track", str(tiny_track), "--results-dir", str(results),
           "--threads", "1", "--no-progress", "--no-overview"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while not list(results.glob("*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = _records(results)
    assert 1 <= len(first) < 3, f"kill came too late: {len(first)} records"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"3 cells, {len(first)} already done, {3 - len(first)} run" in done.stderr
    after = _records(results)
    assert len(after) == 3 and all(after[name] == first[name] for name in first)  # finished cells untouched
    seeds = sorted(json.loads((results / n).read_text())["seed"] for n in after)
    assert seeds == [0, 1, 2]
    overview = [c for c in cmd if c != "--no-overview"]  # nothing to run: rebuild the board, print the table
    again = subprocess.run(overview, env=env, capture_output=True, text=True, timeout=600)
    assert "3 cells, 3 already done, 0 run" in again.stderr and _records(results) == after
    assert (results / "leaderboard" / "README.md").is_file()
    # the leaderboard's text table: FedAvg's mean ± CI over the 3 seeds, then the seed count
    assert any(re.search(r"fedavg\s+[\d.]+ ± [\d.]+\s+3\s", ln) for ln in again.stdout.splitlines()), again.stdout
    # a different configuration is a different cell: one more seed runs one more cell
    listing = subprocess.run([*cmd, "--list", "--seeds", "0,1,2,3"], env=env, capture_output=True, text=True)
    assert [ln.split()[1] for ln in listing.stdout.splitlines()] == ["done"] * 3 + ["missing"]
    rec = json.loads((results / next(iter(after))).read_text())
    assert rec["track"] == {"name": "tiny", "version": 1} and "tuning" not in rec  # fedavg: nothing to tune
    assert np.isfinite(rec["metrics"]["final"]["accuracy"])


def test_plan_orders_seed_by_seed_with_the_reference_first():
    t = tracks.load("tc")
    cells = suite.plan(t, ["fedavg", "fedprox"], [0, 1, 2])
    assert cells[0] == suite.Cell("centralized", "iid", 0) and cells[1] == suite.Cell("centralized", "natural", 0)
    assert len(cells) == 3 * (2 + 2 * len(t.partitions))
    assert [c.seed for c in cells] == sorted(c.seed for c in cells)
    with pytest.raises(ConfigError, match="no partition"):
        t.partition("dir0.5")


def test_partition_filter_and_each_records_command_plan_exactly_its_cell(tiny_track, tmp_path, capsys):
    t = tracks.load("tc")
    assert suite.plan(t, ["fedprox"], [1], ["dir0.1"]) == [suite.Cell("fedprox", "dir0.1", 1)]
    assert suite.plan(t, ["centralized"], [2], ["natural"]) == [suite.Cell("centralized", "natural", 2)]
    with pytest.raises(ConfigError, match="no partition 'dir0.5'"):
        suite.plan(t, ["fedavg"], [0], ["dir0.5"])
    with pytest.raises(ConfigError, match="reference runs on iid, natural"):
        suite.plan(t, ["centralized"], [0], ["dir0.1"])
    # the command stored in each cell's record names the packaged track by name, a track file by its path
    opts = suite.Options(tmp_path / "r")
    cmd = suite.cell_command(t, suite.Cell("fedprox", "dir0.1", 1), opts)
    assert cmd == ["fednlp-bench", "suite", "--track", "tc", "--algorithm", "fedprox", "--partition", "dir0.1",
                   "--seeds", "1"]
    assert suite.cell_config(t, suite.Cell("fedprox", "dir0.1", 1), opts)[1][("provenance", "command")] == cmd
    untuned = suite.Options(tmp_path / "r", untuned=True)
    assert suite.cell_command(t, suite.Cell("fedprox", "dir0.1", 1), untuned)[-1] == "--untuned"
    tiny = tracks.load(str(tiny_track))
    cmd = suite.cell_command(tiny, suite.Cell("fedavg", "iid", 2), opts)
    assert cmd[3] == str(tiny_track)
    # typed back in, it lists exactly that one cell
    rc, out, _ = _cli(capsys, *cmd[1:], "--results-dir", str(tmp_path / "r"), "--list")
    assert rc == 0 and out.split() == ["0", "missing", "fedavg", "/", "iid", "/", "seed", "2"]


def test_budget_fairness_section_reaches_every_cell_and_unknown_sections_are_refused(tmp_path):
    t = tracks.load("tc")
    for p in t.partitions:
        cfg = t.run_config("fedavg", p.name, t.seeds[0], wandb="disabled")
        assert cfg.fairness.counterfactual is False and cfg.model.name == t.model
    text = Path(t.path).read_text(encoding="utf-8").replace("fairness: {counterfactual: false}",
                                                            "privacy: {user_level: true}")
    bad = tmp_path / "tc.yaml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'budget.privacy'"):
        tracks.load(str(bad))


def _records_by_seed(results: Path) -> dict[int, dict]:
    return {rec["seed"]: rec for rec in (json.loads(p.read_text()) for p in results.glob("*.json"))}


def test_parallel_workers_give_the_records_of_cells_run_alone(tiny_track, tmp_path):
    """`--jobs 2` runs 3 cells in 2 worker processes, so the third cell (seed 2) runs after another
    cell in the same process; its metrics must equal those of the same cell run in a fresh process."""
    env = {**os.environ, "WANDB_SILENT": "true"}
    base = [sys.executable, "-m", "fednlp_bench", "suite", "--track", str(tiny_track), "--threads", "1",
            "--no-progress", "--no-overview"]
    pooled, alone = tmp_path / "pooled", tmp_path / "alone"
    done = subprocess.run([*base, "--results-dir", str(pooled), "--jobs", "2"], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3 cells, 0 already done, 3 run" in done.stderr
    logs = sorted(p.name for p in (pooled / "suite-logs").iterdir())
    assert logs == ["cell-0.log", "cell-1.log", "cell-2.log", "worker-0.log", "worker-1.log"]
    single = subprocess.run([*base, "--results-dir", str(alone), "--cell", "2"], env=env, capture_output=True,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    pooled_r, alone_r = _records_by_seed(pooled), _records_by_seed(alone)
    assert sorted(pooled_r) == [0, 1, 2] and list(alone_r) == [2]
    # `fednlp-bench verify`'s comparison (partition, fl, metrics, privacy and audit sections; timings
    # excluded), here with zero tolerance: the same bits
    n, diffs = compare(alone_r[2], pooled_r[2], atol=0.0, rtol=0.0)
    assert n > 50 and not diffs, diffs[:5]
    assert pooled_r[0]["metrics"]["final"] != pooled_r[2]["metrics"]["final"]  # different seeds differ
    # both record the one-cell command, not the worker's or the --cell driver's command line
    want = ["fednlp-bench", "suite", "--track", str(tiny_track), "--algorithm", "fedavg", "--partition", "iid",
            "--seeds", "2"]
    assert pooled_r[2]["provenance"]["command"] == alone_r[2]["provenance"]["command"] == want


def test_a_failing_cell_in_a_worker_stops_the_suite_with_its_error(tiny_track, tmp_path, capsys):
    """A cell that raises inside a worker is reported with its error and log, and no later cell starts."""
    plugin = tmp_path / "boom.py"
    plugin.write_text(
        "from fednlp_bench.algorithms.fedavg import FedAvg\n\n"
        "class Boom(FedAvg):\n"
        "    name = 'boom'\n\n"
        "    def init_server(self, global_params):\n"
        "        raise RuntimeError('boom from init_server')\n")
    rc, _, err = _cli(capsys, "suite", "--track", str(tiny_track), "--algorithm", f"{plugin}:Boom",
                      "--results-dir", str(tmp_path / "r"), "--jobs", "2", "--threads", "1", "--no-progress",
                      "--no-overview")
    assert rc != 0
    assert "Boom / iid / seed 0) failed: boom from init_server (log: " in err and "cell-0.log)" in err, err
    logs = tmp_path / "r" / "suite-logs"
    assert "boom from init_server" in (logs / "cell-0.log").read_text()  # the traceback is in the cell's log
    assert not (logs / "cell-2.log").exists()  # the third cell never started
    assert not list((tmp_path / "r").glob("*.json"))
