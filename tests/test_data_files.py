"""Users' data files through the real command line: every bad file is one line naming the file,
the line (or entry) and what is allowed, exit code 2, and nothing is written."""
from __future__ import annotations

import json
import os
import stat
import time

import fednlp_layout as fl
import h5py
import numpy as np
import pytest

from fednlp_bench.cli import main

CSV_OK = "text,label\n" + "".join(f"sentence {i} about {'sport' if i % 2 else 'politics'},{'ab'[i % 2]}\n"
                                  for i in range(12))


def _qa(paragraph: dict) -> str:
    return json.dumps({"data": [{"title": "t", "paragraphs": [paragraph]}]})


def _h5_tc(path, texts, labels, *, skip=None) -> None:
    """A FedNLP text-classification data file written with h5py; ``skip``: an id left without X/Y."""
    n = len(texts)
    with h5py.File(path, "w") as f:
        f["attributes"] = json.dumps({"index_list": list(range(n)), "train_index_list": list(range(n - 2)),
                                      "test_index_list": [n - 2, n - 1], "task_type": "text_classification"})
        for i, (x, y) in enumerate(zip(texts, labels)):
            if i != skip:
                f["X/" + str(i)] = x
                f["Y/" + str(i)] = y


def _h5_bytes(path, raw: bytes) -> None:
    """A data file whose X/1 holds raw (non-UTF-8) bytes in a variable-length bytes string."""
    with h5py.File(path, "w") as f:
        f["attributes"] = json.dumps({"index_list": [0, 1, 2, 3], "train_index_list": [0, 1, 2],
                                      "test_index_list": [3]})
        for i in range(4):
            f.create_dataset("X/" + str(i), data=raw if i == 1 else f"text {i}".encode(),
                             dtype=h5py.string_dtype("ascii"))
            f["Y/" + str(i)] = "ab"[i % 2]


def _qa_partial_docs(path) -> None:
    """A FedNLP QA data file whose doc_index misses one id."""
    fl.write_qa(path, 6, 2)
    with h5py.File(path, "a") as f:
        attrs = json.loads(f["attributes"][()])
        del attrs["doc_index"]["3"]
        del f["attributes"]
        f["attributes"] = json.dumps(attrs)


# (task, file name, content: str | bytes | callable(path), extra args, expected message fragments)
BAD_FILES = [
    ("tc", "x.csv", b"text,label\nfine,a\nbad \xff byte,b\n", [], ["x.csv:3: byte 0xff is not UTF-8"]),
    ("tc", "x.jsonl", b'{"text": "ok", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n', [],
     ["x.jsonl:2: byte 0xe9 is not UTF-8", "must be UTF-8"]),
    ("tc", "x.csv", "text,label\nhello,a\nworld\n", [], ["x.csv:3: no 'label' value", "every row needs a non-empty 'label'"]),
    ("tc", "x.csv", "text,label\nhello,a\nworld,\n", [], ["x.csv:3: 'label' is empty"]),
    ("tc", "x.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n', [], ["x.jsonl:2: no 'label' value"]),
    ("tc", "x.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"label": "y"}\n', [],
     ["x.jsonl:3: missing 'text'", "found: label"]),
    ("tc", "x.jsonl", '{"text": "a", "label": "x"}\n[1, 2]\n', [], ["x.jsonl:2: expected a JSON object"]),
    ("tc", "x.jsonl", '{"text": "a", "label": ["x"]}\n', [], ["x.jsonl:1: 'label' must be a string, got list"]),
    ("tc", "x.csv", "text,label\nhello,a\nworld,a\nagain,a\n", [],
     ["x.csv: every row has label 'a'; classification needs at least 2 classes"]),
    ("tc", "x.csv", "text,label\nhello,a\n  ,b\n", [], ["x.csv:3: 'text' is empty; every row needs a non-empty 'text'"]),
    ("tc", "x.csv", "text,label,group\nhello,a,g1\nworld,b,\n", [], ["x.csv:3: 'group' is empty"]),
    ("tc", "x.csv", "text,label\nhello,a,extra\n", [], ["x.csv:2: 3 cells but the header has 2"]),
    ("tc", "x.csv", 'text,label\n"unclosed,a\n', [], ["x.csv:2: not valid CSV (unexpected end of data)"]),
    ("tc", "x.csv", CSV_OK, ["--partition", "natural", "--set", "partition.n_clients=0"],
     ["partition 'natural' needs a group column", "x.csv' has none"]),
    ("tc", "x.txt", "hello", [], ["x.txt' must end in .csv or .jsonl (or be a FedNLP .h5 data file)"]),
    ("st", "x.conll", b"EU B-ORG\nrejects O\n\nGerman \xff B-MISC\n", [], ["x.conll:4: byte 0xff is not UTF-8"]),
    ("st", "x.conll", "the O\ncat O\n\nsat O\n", [], ["x.conll': every tag is O; tagging needs entity tags"]),
    ("s2s", "x.jsonl", '{"source": "a b", "target": "t"}\n{"source": "c d"}\n', [], ["x.jsonl:2: missing 'target'"]),
    ("s2s", "x.jsonl", '{"source": "a b", "target": "t"}\n{"source": "", "target": "u"}\n', [],
     ["x.jsonl:2: 'source' is empty"]),
    ("s2s", "x.jsonl", '{"source": "a", "target": "t", "group": "g"}\n{"source": "b", "target": "u"}\n', [],
     ["x.jsonl:2: missing 'group'"]),
    ("s2s", "x.jsonl", '{"source": "a", "target": "t"}\n' * 5, ["--partition", "natural", "--set", "partition.n_clients=0"],
     ["partition 'natural' needs a group column"]),
    ("s2s", "x.jsonl", '{"source": "a", "target": "t"}\n', [], ["x.jsonl: 1 row(s); a single data file needs at least 2"]),
    ("qa", "x.json", _qa({"qas": [{"question": "q?", "answers": [{"text": "a", "answer_start": 0}]}]}), [],
     ["x.json: data[0].paragraphs[0] needs a non-empty string 'context'"]),
    ("qa", "x.json", _qa({"context": "a b", "qas": [{"question": "q?", "answers": [{"text": "a", "answer_start": "0"}]}]}),
     [], ["data[0].paragraphs[0].qas[0].answers[0].answer_start must be a non-negative integer"]),
    ("qa", "x.json", b'{"data": [{"title": "\xff"}]}', [], ["x.json:1: byte 0xff is not UTF-8"]),
    ("tc", "x.h5", "plain text, not HDF5", [], ["x.h5: not a readable HDF5 file"]),
    ("tc", "x.h5", lambda p: _h5_tc(p, ["a", "b", "c", "d", "e"], list("ababa"), skip=2), [],
     ["x.h5: missing X/2; every id of the train/test lists needs one"]),
    ("tc", "x.h5", lambda p: _h5_tc(p, ["a", "", "c", "d", "e"], list("ababa")), [], ["x.h5: X/1 is empty"]),
    ("tc", "x.h5", lambda p: _h5_tc(p, ["a", "b", "c", "d", "e"], list("aaaab")), [],
     ["x.h5: every row has label (Y) 'a'; classification needs at least 2 classes"]),
    ("tc", "x.h5", lambda p: _h5_bytes(p, b"caf\xe9"), [], ["x.h5: X/1 holds byte 0xe9, which is not UTF-8"]),
    ("qa", "x.h5", lambda p: fl.write_tc(p, 6, 2), [], ["x.h5: a FedNLP text_classification data file, not span_extraction",
                                                        "run it with --task tc"]),
    ("st", "x.h5", lambda p: fl.write_s2s(p, 6, 2), [], ["x.h5: X/0 must be a 1-D array of strings"]),
    ("qa", "x.h5", _qa_partial_docs, [], ["x.h5: attributes.doc_index has no entry for id 3"]),
]


def _write(path, content) -> None:
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


@pytest.mark.parametrize("task, name, content, extra, fragments", BAD_FILES,
                         ids=[f"{t}-{n}-{i}" for i, (t, n, *_rest) in enumerate(BAD_FILES)])
def test_bad_file_is_one_line_exit_2_nothing_written(tmp_path, capsys, tiny_overrides, task, name, content, extra,
                                                     fragments) -> None:
    path = tmp_path / name
    _write(path, content)
    sets = [x for s in tiny_overrides() for x in ("--set", s)]
    rc = main(["run", "--task", task, "--dataset", str(path), *extra, *sets])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fednlp-bench: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not (tmp_path / "results").exists()


def test_every_data_problem_of_the_issue_is_in_the_table() -> None:
    """The data-file problems users met, each covered above (for every file format that has it)."""
    messages = " ".join(" ".join(case[4]) for case in BAD_FILES)
    for problem in ("is not UTF-8", "no 'label' value", "missing 'text'", "at least 2 classes", "'text' is empty",
                    "needs a group column", "missing 'target'", "missing X/2", "not a readable HDF5"):
        assert problem in messages
    formats = {(case[0], case[1].rsplit(".", 1)[1]) for case in BAD_FILES if "UTF-8" in " ".join(case[4])}
    assert {("tc", "csv"), ("tc", "jsonl"), ("st", "conll"), ("qa", "json"), ("tc", "h5")} <= formats


@pytest.mark.parametrize("dataset, hint", [
    ("bad/x.csv", "(hub datasets need the hf: prefix)"),
    ("owner/name", "(hub datasets need the hf: prefix, e.g. hf:owner/name)"),
    ("/nonexistent/dir/x.jsonl", "(hub datasets need the hf: prefix)"),
    ("./missing.csv", "(hub datasets need the hf: prefix)"),
])
def test_missing_local_path_is_never_sent_to_the_hub(capsys, dataset, hint) -> None:
    t0 = time.perf_counter()
    rc = main(["prepare", "--task", "tc", "--dataset", dataset])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == f"fednlp-bench: error: text-classification dataset '{dataset}': no such file or directory {hint}"
    assert time.perf_counter() - t0 < 5  # no retries against a hub


def test_long_csv_cells_and_bom_are_read(tmp_path, capsys) -> None:
    long_text = "word " * 40_000  # 200,000 characters, over the csv module's default limit of 131,072
    (tmp_path / "x.csv").write_text("\ufefftext,label\n" + f'"{long_text}",a\n' + "short text,b\n" * 4,
                                    encoding="utf-8")
    from fednlp_bench import tasks

    dsd = tasks.get("tc").load(str(tmp_path / "x.csv"), split_seed=0, test_fraction=0.2)
    texts = list(dsd["train"]["text"]) + list(dsd["test"]["text"])
    assert sorted(map(len, texts))[-1] == len(long_text) and len(texts) == 5
    assert dsd["train"].features["label"].names == ["a", "b"]  # the BOM did not become part of 'text'


def test_natural_uses_a_real_group_column_and_plots_name_it(tmp_path, capsys) -> None:
    rows = "".join(f"text {i},{['sport', 'tech'][i % 2]},outlet-{'xyz'[i % 3]}\n" for i in range(30))
    (tmp_path / "x.csv").write_text("text,label,group\n" + rows)
    rc = main(["partition", "--task", "tc", "--dataset", str(tmp_path / "x.csv"), "--partition", "natural",
               "--clients", "0", "--plot", str(tmp_path / "plots")])
    out = capsys.readouterr().out
    assert rc == 0 and "3 clients" in out
    summary = json.loads((tmp_path / "plots" / "summary.json").read_text())
    assert summary["client_names"] == ["outlet-x", "outlet-y", "outlet-z"]
    # what the plots are drawn from: labels by name, not class codes
    from fednlp_bench import config, tasks
    from fednlp_bench.cli import _named_partition_view

    cfg = config.resolve("tc", None, ["partition.n_clients=0", "fl.clients_per_round=1"], dataset=str(tmp_path / "x.csv"),
                         **{"partition.method": "natural"})
    task = tasks.get("tc")
    train = task.load(cfg.dataset)["train"]
    labels, names = _named_partition_view(cfg, task, train)
    assert set(labels.tolist()) == {"sport", "tech"} and names == ["outlet-x", "outlet-y", "outlet-z"]


def test_subsampling_a_users_file_is_stated_on_stderr(tmp_path) -> None:
    import subprocess
    import sys

    (tmp_path / "x.csv").write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(300)))
    env = {**os.environ, "FEDNLP_BENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "fednlp_bench", "partition", "--task", "tc", "--preset", "smoke",
                           "--dataset", str(tmp_path / "x.csv")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # 300 rows -> 240 train / 60 test; 24 train rows held out for validation, smoke keeps 200 of the
    # other 216 (max_test=100 keeps all 60)
    assert "x.csv: using 224 of 240 train rows (24 of them held out for validation) and 60 of 60 test rows " \
           "(data.max_train=200, data.max_test=100 from --preset smoke); --set data.max_train=null " \
           "--set data.max_test=null uses all" in proc.stderr


def test_partition_plots_name_labels_and_groups_with_integer_ticks(tmp_path) -> None:
    from fednlp_bench.partitioners import plots

    labels = np.array(["sport", "politics", "tech"] * 7, dtype=object)
    parts = [np.arange(0, 9), np.arange(9, 14), np.arange(14, 21)]
    names = plots.natural_client_names([["bbc.co.uk"], ["cnn.com", "npr.org"], ["a", "b", "c", "d"]])
    assert names == ["bbc.co.uk", "cnn.com + npr.org", "a + 3 pooled groups"]
    bars = plots.label_bars_figure(parts, labels, client_names=names).axes[0]
    assert [t.get_text() for t in bars.get_xticklabels()] == names
    assert sorted(t.get_text() for t in bars.get_legend().get_texts()) == ["politics", "sport", "tech"]
    heat = plots.label_heatmap_figure(parts, labels, client_names=names).axes[0]
    assert [t.get_text() for t in heat.get_xticklabels()] == ["politics", "sport", "tech"]
    assert [t.get_text() for t in heat.get_yticklabels()] == names
    for sizes in ([30, 30, 30], [3, 7, 7, 12, 30, 31], list(range(0, 400, 7))):
        ax = plots.client_sizes_figure([np.arange(n) for n in sizes]).axes[0]
        for ticks in (ax.get_xticks(), ax.get_yticks()):
            assert np.all(ticks == np.round(ticks)), ticks
        edges = plots.size_bins(np.array(sizes))
        assert np.all(edges % 1 == 0.5) and edges[0] < min(sizes) and edges[-1] > max(sizes)
    files = plots.write_report(parts, labels, tmp_path / "r", client_names=names)
    assert json.loads(files["summary"].read_text())["client_names"] == names
    for path in files.values():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, path


def test_partition_cache_and_dataset_cache_are_shared_readable(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FEDNLP_BENCH_CACHE", str(tmp_path / "cache"))
    fl.write_tc(tmp_path / "d.h5", 30, 6)
    rc = main(["partition", "--task", "tc", "--dataset", str(tmp_path / "d.h5"), "--partition", "dirichlet_label",
               "--set", "partition.alpha=0.5", "--clients", "3"])
    assert rc == 0
    written = [p for p in (tmp_path / "cache").rglob("*")]
    assert any(p.suffix == ".npz" for p in written) and any(p.suffix == ".arrow" for p in written)
    for p in written:
        assert stat.S_IMODE(os.stat(p).st_mode) == (0o755 if p.is_dir() else 0o644), p


def _st_dir(d) -> None:
    """CoNLL train/test files: 20 sentences with a person and a place, 10 with a place only."""
    two = "".join(f"Anna B-PER\nvisited O\nParis B-LOC\non O\nday{i} O\n\n" for i in range(20))
    one = "".join(f"Paris B-LOC\nslept O\non O\nday{i} O\n\n" for i in range(20, 30))
    (d / "train.conll").write_text(two + one)
    (d / "test.conll").write_text("Lima B-LOC\nwoke O\n\nBruno B-PER\nran O\n")


def _qa_dir(d) -> None:
    """SQuAD train/test files: 20 'where' and 10 'who' questions (the question word is the qa label)."""
    ctx = "Anna opened the fair in Paris."
    qas = [{"id": f"w{i}", "question": f"Where did Anna open fair {i}?", "answers": [{"text": "Paris", "answer_start": 24}]}
           for i in range(20)]
    qas += [{"id": f"h{i}", "question": f"Who opened fair {i}?", "answers": [{"text": "Anna", "answer_start": 0}]}
            for i in range(10)]
    (d / "train.json").write_text(_qa({"context": ctx, "qas": qas}))
    (d / "test.json").write_text(_qa({"context": ctx, "qas": qas[:2]}))


def _s2s_dir(d) -> None:
    """seq2seq train/test files: 20 rows of group g1, 10 of g2 (s2s stratifies by group)."""
    rows = [{"source": f"story {i} text", "target": f"t {i}", "group": "g1" if i < 20 else "g2"} for i in range(30)]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))


@pytest.mark.parametrize("task, write, column, held_out", [
    ("st", _st_dir, "words", {"LOC|PER": 2, "LOC": 1}),      # round(0.1 * 30) = 3 rows, 20:10 -> 2:1
    ("qa", _qa_dir, "id", {"where": 2, "who": 1}),
    ("s2s", _s2s_dir, "source", {"g1": 2, "g2": 1}),
    ("tc", lambda d: fl.write_tc(d / "x.h5", 90, 30), "file_id", {0: 3, 1: 3, 2: 3}),  # 30 per topic -> 3 each
    ("st", lambda d: fl.write_st(d / "x.h5", 40), "file_id", {"LOC|PER": 4}),        # 36 train rows -> 4
    ("qa", lambda d: fl.write_qa(d / "x.h5", 30, 10), "file_id", {"where": 3}),
    ("s2s", lambda d: fl.write_s2s(d / "x.h5", 30, 10), "file_id", {"all": 3}),     # no groups: one stratum
])
def test_validation_split_of_users_files_is_held_out_stratified(tmp_path, task, write, column, held_out) -> None:
    from fednlp_bench import config, tasks
    from fednlp_bench.run import load_splits

    write(tmp_path)
    files = [p for p in tmp_path.iterdir() if p.suffix == ".h5"]
    dataset = str(files[0] if files else tmp_path)
    full = tasks.get(task).load(dataset)["train"]
    cfg = config.resolve(task, None, ["partition.method=uniform", "partition.n_clients=2", "fl.clients_per_round=1"],
                         dataset=dataset)
    adapter, dsd = load_splits(cfg)
    key = (lambda v: tuple(v) if isinstance(v, list) else v)
    val, train = [key(v) for v in dsd["validation"][column]], [key(v) for v in dsd["train"][column]]
    assert not set(val) & set(train) and sorted(val + train) == sorted(key(v) for v in full[column])
    strata = adapter.label_for_partition(dsd["validation"])
    assert {s: int((np.asarray(strata) == s).sum()) for s in set(strata.tolist())} == held_out
