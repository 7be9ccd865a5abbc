"""Text classification: loaders on files the test writes, and real end-to-end runs."""
import json
import subprocess
import sys

import pytest

from fednlp_bench import tasks
from fednlp_bench import config, record
from fednlp_bench.run import run

TC = tasks.get("tc")


def _write_csv(path, rows):
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_csv_loader_seeded_split(tmp_path):
    rows = [{"text": f"doc {i}", "label": "ab"[i % 2], "group": f"g{i % 3}"} for i in range(50)]
    _write_csv(tmp_path / "d.csv", rows)
    dsd = TC.load(str(tmp_path / "d.csv"), split_seed=1, test_fraction=0.2)
    assert len(dsd["train"]) == 40 and len(dsd["test"]) == 10
    assert dsd["train"].features["label"].names == ["a", "b"]
    again = TC.load(str(tmp_path / "d.csv"), split_seed=1, test_fraction=0.2)
    assert again["test"]["text"] == dsd["test"]["text"]
    other = TC.load(str(tmp_path / "d.csv"), split_seed=2, test_fraction=0.2)
    assert other["test"]["text"] != dsd["test"]["text"]
    assert set(TC.groups_for_partition(dsd["train"])) <= {"g0", "g1", "g2"}


def test_jsonl_dir_loader(tmp_path):
    for split, n in (("train", 6), ("test", 3)):
        with open(tmp_path / f"{split}.jsonl", "w") as fh:
            for i in range(n):
                fh.write(json.dumps({"text": f"{split} {i}", "label": i % 3}) + "\n")
    dsd = TC.load(str(tmp_path))
    assert (len(dsd["train"]), len(dsd["test"])) == (6, 3)
    assert TC.label_for_partition(dsd["train"]).tolist() == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize(
    "content, name, message",
    [
        ("words,label\nx,1\n", "bad.csv", "needs a 'text' column; found: words, label"),
        ("{not json\n", "bad.jsonl", "bad.jsonl:1: not valid JSON"),
        ("text,label\n", "empty.csv", "has no rows"),
        ("x", "bad.txt", "must end in .csv or .jsonl"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, content, name, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(tasks.DatasetError, match=message):
        TC.load(str(tmp_path / name))


def test_unknown_dataset_lists_choices():
    with pytest.raises(tasks.DatasetError, match="bbc, healthtweets, rotten_tomatoes"):
        TC.load("nonexistent_corpus")


def test_healthtweets_labels_are_agencies_without_urls():
    dsd = TC.load("healthtweets")
    names = dsd["train"].features["label"].names
    assert len(names) == 16 and "bbchealth" in names
    texts = dsd["train"].data.column("text").to_pylist()[:2000]
    assert not any("http" in t for t in texts)


@pytest.mark.slow
def test_smoke_fedavg_and_centralized_learn(tiny_overrides):
    cfg = config.resolve("tc", "smoke", tiny_overrides("fl.rounds=3", "fl.client_lr=3e-4", "data.max_train=120"))
    rec, path = run(cfg)
    assert path.exists() and record.problems(rec) == []
    m = rec["metrics"]
    assert [r["round"] for r in m["per_round"]] == [1, 2, 3]
    assert set(m["per_client"]) <= {"0", "1", "2", "3"} and m["per_client"]
    assert rec["cost"]["bytes_up"] == 3 * 2 * rec["cost"]["n_params"] * 4
    assert rec["partition"]["stats"]["sizes"] == [30, 30, 30, 30]
    cen_cfg = config.resolve("tc", "smoke", tiny_overrides("fl.rounds=3", "fl.client_lr=3e-4", "data.max_train=120",
                                                            "algorithm.name=centralized"))
    cen, _ = run(cen_cfg)
    assert cen["partition"]["method"] == "none"
    # same example passes: 3 rounds x 2 of 4 clients x 30 rows = 180 = 1.5 epochs of 120
    assert cen["cost"]["train_examples"] == 180 or abs(cen["cost"]["train_examples"] - 180) < 8
    assert cen["metrics"]["final"]["accuracy"] > cen["metrics"]["initial"]["accuracy"]


@pytest.mark.slow
def test_same_seed_same_metrics_different_seed_differs(tiny_overrides):
    a, _ = run(config.resolve("tc", "smoke", tiny_overrides("seed=1")))
    b, _ = run(config.resolve("tc", "smoke", tiny_overrides("seed=1")))
    c, _ = run(config.resolve("tc", "smoke", tiny_overrides("seed=2")))
    assert a["metrics"]["per_round"] == b["metrics"]["per_round"]
    assert a["metrics"]["per_client"] == b["metrics"]["per_client"]
    assert a["run_id"] != b["run_id"]
    assert a["metrics"]["per_round"] != c["metrics"]["per_round"]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fednlp_bench", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--set", "fl.rounds=-2"], "fl.rounds must be >= 1, got -2"),
        (["run", "--algorithm", "fedavgg"], "unknown algorithm 'fedavgg'"),
        (["run", "--task", "tx"], "unknown task 'tx'"),
        (["run", "--partition", "dirichlet", "--dry-run"], "dirichlet"),
        (["run", "--partition", "dirichlet_label", "--set", "partition.alpha=-1", "--dry-run"], "alpha"),
        (["run", "--model", "./no/such/model", "--preset", "smoke"], "model path './no/such/model' does not exist"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, message):
    out = _cli(*args, "--results-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert message in out.stderr
    assert not (tmp_path / "r").exists()  # nothing written on bad input


def test_cli_list_shows_builtins():
    out = _cli("list")
    assert out.returncode == 0
    assert "fedavg" in out.stdout and "centralized" in out.stdout and "dirichlet_label" in out.stdout


@pytest.mark.slow
def test_wandb_offline_run_directory_has_metrics(tiny_overrides, tmp_path):
    cfg = config.resolve("tc", "smoke", tiny_overrides("fl.rounds=1", "wandb=offline"))
    rec, _ = run(cfg)
    run_dir = rec["provenance"]["wandb_dir"]
    assert run_dir and "offline-run" in run_dir
    from pathlib import Path

    import time

    files = list(Path(run_dir).glob("*.wandb"))
    assert files and files[0].stat().st_size > 0
    # the offline transaction log holds the logged history and summary keys; wandb's service process
    # writes it, and on a loaded machine its last records can land a moment after finish() returns
    deadline = time.time() + 30
    blob = files[0].read_bytes()
    while not (b"final/accuracy" in blob and b"macro_f1" in blob) and time.time() < deadline:
        time.sleep(0.5)
        blob = files[0].read_bytes()
    assert b"final/accuracy" in blob and b"macro_f1" in blob
