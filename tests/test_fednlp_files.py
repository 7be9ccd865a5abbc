"""FedNLP h5 files on the command line: data files of every task, partition files replayed
exactly (``--partition fednlp``), ``fednlp-bench export``, and the record naming file and alpha.

The files are written by ``tests/fednlp_layout.py`` with h5py alone, in FedNLP's layout, and
what we read is compared with what that script wrote (read back with h5py directly)."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import fednlp_layout as fl
import h5py
import numpy as np
import pytest

from fednlp_bench import config, tasks
from fednlp_bench.cli import main
from fednlp_bench.run import load_splits, make_partition


def _clients_in_file(path: Path, key: str, split: str = "train") -> list[list[int]]:
    with h5py.File(path, "r") as f:
        g = f[key]["partition_data"]
        return [sorted(np.asarray(g[str(c)][split][()], dtype=np.int64).tolist()) for c in range(len(g))]


def _partition(task: str, data: Path, pfile: Path, key: str, *sets: str):
    cfg = config.resolve(task, None, [f"partition.file={pfile}", f"partition.key={key}", "partition.n_clients=0",
                                      "fl.clients_per_round=1", *sets], dataset=str(data), **{"partition.method": "fednlp"})
    t, dsd = load_splits(cfg)
    return t, dsd, make_partition(cfg, t, dsd)


@pytest.fixture
def tc_files(tmp_path):
    data, pfile = tmp_path / "agnews_data.h5", tmp_path / "agnews_partition.h5"
    train, test, labels = fl.write_tc(data, 90, 30)
    key = fl.write_label_partition(pfile, labels[:90], labels[90:], 4, 0.5, seed=3)
    fl.write_uniform_partition(pfile, 90, 30, 3)
    return data, pfile, key, labels


def test_data_files_of_every_task_read_as_written(tmp_path) -> None:
    fl.write_tc(tmp_path / "tc.h5", 9, 3)
    fl.write_st(tmp_path / "st.h5", 20)
    fl.write_qa(tmp_path / "qa.h5", 8, 4)
    fl.write_s2s(tmp_path / "s2s.h5", 6, 2)
    tc = tasks.get("tc").load(str(tmp_path / "tc.h5"))
    names = tc["train"].features["label"].names
    assert tc["train"]["file_id"] == list(range(9)) and tc["test"]["file_id"] == [9, 10, 11]
    assert [names[y] for y in tc["test"]["label"]] == ["politics", "sport", "tech"]  # sorted(TOPICS)[i % 3]
    assert tc["test"]["text"][0] == f"story 9: {fl.TOPICS['politics']} (report number {9 * 7 % 13})"
    st = tasks.get("st").load(str(tmp_path / "st.h5"))  # no train/test lists: FedNLP's first 90% train
    assert st["train"]["file_id"] == list(range(18)) and st["test"]["file_id"] == [18, 19]
    tag_names = st["train"].features["tags"].feature.names
    assert st["test"]["words"][1][:4] == ["Dalia", "Smith", "visited", "Oslo"]
    assert [tag_names[t] for t in st["test"]["tags"][1]] == ["B-PER", "I-PER", "O", "B-LOC", "O", "O", "O"]
    qa = tasks.get("qa").load(str(tmp_path / "qa.h5"))
    assert qa["test"]["answer_texts"][0] == ["Oslo"] and qa["test"]["id"][0] == "q0008"  # city of id 8: 8 % 5
    assert qa["test"]["group"][0] == "doc0" and qa["test"]["label"][0] == "where"
    s2s = tasks.get("s2s").load(str(tmp_path / "s2s.h5"))
    assert s2s["test"]["target"] == ["<s> politics news 6 </s>", "<s> sport news 7 </s>"]
    assert tasks.get("s2s").groups_for_partition(s2s["train"]) is None


def test_partition_file_is_replayed_exactly(tc_files) -> None:
    data, pfile, key, labels = tc_files
    task, dsd, part = _partition("tc", data, pfile, key, "data.val_fraction=0")
    ids = {s: np.asarray(dsd[s]["file_id"]) for s in ("train", "test")}
    assert [sorted(ids["train"][p].tolist()) for p in part.train] == _clients_in_file(pfile, key, "train")
    assert [sorted(ids["test"][p].tolist()) for p in part.test] == _clients_in_file(pfile, key, "test")
    assert part.spec["params"]["alpha"] == 0.5 and part.spec["params"]["method"] == "niid_label"
    assert part.spec["params"]["file"] == str(pfile) and part.spec["params"]["key"] == key
    # the same partition again (deterministic), and FedNLP's uniform key of the same file
    assert all(np.array_equal(a, b) for a, b in zip(part.train, _partition("tc", data, pfile, key,
                                                                           "data.val_fraction=0")[2].train))
    assert _partition("tc", data, pfile, "uniform")[2].n_clients == 3


def test_shuffled_data_file_ids_map_to_the_right_rows(tmp_path) -> None:
    data, pfile = tmp_path / "d.h5", tmp_path / "p.h5"
    rng = np.random.default_rng(5)
    ids = rng.permutation(np.arange(100, 140)).tolist()  # ids far from row positions, train/test interleaved
    with h5py.File(data, "w") as f:
        f["attributes"] = json.dumps({"index_list": ids, "train_index_list": ids[:30], "test_index_list": ids[30:]})
        for i in ids:
            f["X/" + str(i)] = f"text of id {i}"
            f["Y/" + str(i)] = "ab"[i % 2]
    fl.write_uniform_partition(pfile, 0, 0, 4, train_ids=ids[:30], test_ids=ids[30:])
    _, dsd, part = _partition("tc", data, pfile, "uniform", "data.val_fraction=0")
    for c, members in enumerate(_clients_in_file(pfile, "uniform")):
        assert sorted(dsd["train"].select(part.train[c])["text"]) == sorted(f"text of id {i}" for i in members)


def test_validation_rows_leave_their_clients(tc_files) -> None:
    data, pfile, key, labels = tc_files
    _, dsd, part = _partition("tc", data, pfile, key)  # default data.val_fraction=0.1
    held = dsd["validation"]["file_id"]
    # 90 train rows, 30 per topic: 9 held out, 3 per topic (stratified)
    assert sorted(labels[i] for i in held) == ["politics"] * 3 + ["sport"] * 3 + ["tech"] * 3
    kept = np.asarray(dsd["train"]["file_id"])
    assert sorted([*kept.tolist(), *held]) == list(range(90))
    for rows, members in zip(part.train, _clients_in_file(pfile, key)):
        assert sorted(kept[rows].tolist()) == sorted(set(members) - set(held))
    test_ids = np.asarray(dsd["test"]["file_id"])
    assert [sorted(test_ids[p].tolist()) for p in part.test] == _clients_in_file(pfile, key, "test")


def test_subsampled_rows_leave_their_clients(tc_files) -> None:
    data, pfile, key, _ = tc_files
    _, dsd, part = _partition("tc", data, pfile, key, "data.max_train=40", "data.max_test=10")
    kept = np.asarray(dsd["train"]["file_id"])
    assert sum(len(p) for p in part.train) == 40 and sum(len(p) for p in part.test) == 10
    for rows, members in zip(part.train, _clients_in_file(pfile, key)):
        assert set(kept[rows].tolist()) == set(members) & set(kept.tolist())


def _bad_partition(path: Path, clients: list[list[int]], n_clients: int | None = None) -> None:
    with h5py.File(path, "w") as f:
        f["k/n_clients"] = len(clients) if n_clients is None else n_clients
        for c, members in enumerate(clients):
            f[f"k/partition_data/{c}/train"] = np.asarray(members, dtype=np.int64)


@pytest.mark.parametrize("clients, sets, message", [
    ([list(range(0, 50)), list(range(49, 90))], [], "train id 49 is in client 0 and client 1"),
    ([list(range(0, 50)), list(range(50, 89))], [], "1 of the data's 90 train ids are in no client (first: 89)"),
    ([list(range(0, 50)), [*range(50, 90), 95]], [], "train id 95 is not one of the data's 90 train ids (0..89)"),
    ([list(range(0, 50)), list(range(50, 90))], ["partition.n_clients=3", "fl.clients_per_round=1"],
     "fednlp: partition.n_clients=3 but 'k' in"),
    ([list(range(0, 50)), list(range(50, 90))], ["partition.key=nope"], "no partition 'nope'; file holds: k"),
    ([list(range(0, 50)), list(range(50, 90))], ["partition.key="], "fednlp: set partition.key=KEY;"),
])
def test_bad_partition_files_on_the_command_line(tmp_path, capsys, clients, sets, message) -> None:
    fl.write_tc(tmp_path / "d.h5", 90, 30)
    _bad_partition(tmp_path / "p.h5", clients)
    args = ["run", "--task", "tc", "--dataset", str(tmp_path / "d.h5"), "--partition", "fednlp",
            "--set", f"partition.file={tmp_path / 'p.h5'}", "--set", "partition.key=k", "--set", "partition.n_clients=0",
            "--set", f"results_dir={tmp_path / 'results'}", "--set", "wandb=disabled"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not (tmp_path / "results").exists()


def test_export_writes_fednlp_layout_and_replays(tmp_path, capsys) -> None:
    rows = "".join(f"row {i} text,{'abc'[i % 3]}\n" for i in range(60))
    (tmp_path / "x.csv").write_text("text,label\n" + rows)
    out, data = tmp_path / "out" / "x_partition.h5", tmp_path / "out" / "x_data.h5"
    base = ["--task", "tc", "--dataset", str(tmp_path / "x.csv"), "--partition", "dirichlet_label",
            "--set", "partition.alpha=0.05", "--clients", "3"]
    assert main(["export", *base, "--partition-file", str(out), "--data-file", str(data)]) == 0
    assert "key niid_label_clients=3_alpha=0.05" in capsys.readouterr().out
    assert main(["export", *base, "--set", "partition.alpha=0.1", "--partition-file", str(out)]) == 0
    with h5py.File(out, "r") as f, h5py.File(data, "r") as d:
        assert sorted(f) == ["niid_label_clients=3_alpha=0.05", "niid_label_clients=3_alpha=0.1"]
        g = f["niid_label_clients=3_alpha=0.05"]
        assert g["n_clients"][()] == 3 and g["alpha"][()] == 0.05
        train = np.concatenate([g["partition_data"][str(c)]["train"][()] for c in range(3)])
        test = np.concatenate([g["partition_data"][str(c)]["test"][()] for c in range(3)])
        attrs = json.loads(d["attributes"][()])
        assert sorted(train.tolist()) == attrs["train_index_list"] == list(range(48))
        assert sorted(test.tolist()) == attrs["test_index_list"] == list(range(48, 60))
        texts = {d["X"][str(i)][()].decode("utf-8") for i in attrs["index_list"]}  # FedNLP's reading idiom
        assert texts == {f"row {i} text" for i in range(60)}
        sizes = [len(g["partition_data"][str(c)]["train"][()]) for c in range(3)]
    for stored in (out, data):
        assert stat.S_IMODE(os.stat(stored).st_mode) == 0o644
    # the exported files replay the same clients (same texts), from the data file and from the CSV itself
    cfg = config.resolve("tc", None, ["partition.alpha=0.05", "partition.n_clients=3", "fl.clients_per_round=1",
                                      "data.val_fraction=0"],
                         dataset=str(tmp_path / "x.csv"), **{"partition.method": "dirichlet_label"})
    task, orig_dsd = load_splits(cfg)
    original = make_partition(cfg, task, orig_dsd)
    _, dsd, part = _partition("tc", data, out, "niid_label_clients=3_alpha=0.05", "data.val_fraction=0")
    _, csv_dsd, again = _partition("tc", tmp_path / "x.csv", out, "niid_label_clients=3_alpha=0.05",
                                   "data.val_fraction=0")
    assert part.sizes("train").tolist() == again.sizes("train").tolist() == sizes
    for c in range(3):
        want = sorted(orig_dsd["train"].select(original.train[c])["text"])
        assert sorted(dsd["train"].select(part.train[c])["text"]) == want
        assert sorted(csv_dsd["train"].select(again.train[c])["text"]) == want
        assert sorted(dsd["test"].select(part.test[c])["text"]) == sorted(orig_dsd["test"].select(original.test[c])["text"])
    # with a validation split (the default), from the CSV (rows by position) and from the data file
    # (rows by id): the held-out rows, and only they, leave their clients
    for source in (tmp_path / "x.csv", data):
        _, v_dsd, v_part = _partition("tc", source, out, "niid_label_clients=3_alpha=0.05")
        held = set(v_dsd["validation"]["text"])
        assert len(held) == 5  # round(0.1 * 48)
        for c in range(3):
            want = sorted(set(orig_dsd["train"].select(original.train[c])["text"]) - held)
            assert sorted(v_dsd["train"].select(v_part.train[c])["text"]) == want


def test_export_keeps_data_file_ids_and_refuses_subsamples(tmp_path, capsys) -> None:
    data = tmp_path / "d.h5"
    fl.write_tc(data, 90, 30)
    with h5py.File(data, "a") as f:  # ids 1000.. instead of 0..: the export must keep them
        attrs = json.loads(f["attributes"][()])
        for g in ("X", "Y"):
            for i in range(120):
                f.move(f"{g}/{i}", f"{g}/{1000 + i}")
        attrs.update({k: [1000 + i for i in attrs[k]] for k in ("index_list", "train_index_list", "test_index_list")})
        del f["attributes"]
        f["attributes"] = json.dumps(attrs)
    out = tmp_path / "p.h5"
    assert main(["export", "--task", "tc", "--dataset", str(data), "--partition", "uniform", "--clients", "2",
                 "--partition-file", str(out), "--key", "mine"]) == 0
    assert sorted(sum(_clients_in_file(out, "mine"), [])) == list(range(1000, 1090))
    assert main(["export", "--task", "tc", "--dataset", str(data), "--preset", "smoke", "--set", "data.max_train=50",
                 "--partition-file", str(tmp_path / "q.h5")]) == 2
    err = capsys.readouterr().err
    assert "keep 50 of 90 train" in err and "--data-file" in err and not (tmp_path / "q.h5").exists()
    assert main(["export", "--task", "tc", "--dataset", str(data), "--partition-file", str(out), "--key", "a/b"]) == 2
    assert "--key 'a/b' must be a non-empty name without '/'" in capsys.readouterr().err


@pytest.mark.slow
def test_fednlp_files_run_end_to_end_and_the_record_names_file_and_alpha(tc_files, tiny_overrides, capsys) -> None:
    data, pfile, key, labels = tc_files
    sets = [x for s in tiny_overrides("partition.n_clients=0", "data.max_train=null", "data.max_test=null",
                                      f"partition.file={pfile}", f"partition.key={key}") for x in ("--set", s)]
    assert main(["run", "--task", "tc", "--dataset", str(data), "--partition", "fednlp", *sets]) == 0
    record_path = Path(capsys.readouterr().out.strip().rsplit("record: ", 1)[1])
    record = json.loads(record_path.read_text())
    part = record["partition"]
    assert part["method"] == "fednlp" and part["n_clients"] == 4
    assert part["params"]["file"] == str(pfile) and part["params"]["key"] == key == "niid_label_clients=4_alpha=0.5"
    assert part["params"]["alpha"] == 0.5 and part["params"]["method"] == "niid_label"
    assert len(part["params"]["file_sha256"]) == 64
    # per-client label counts in the record, against the file's ids and labels counted here
    names = part["stats"]["label_names"]
    held = set(_partition("tc", data, pfile, key)[1]["validation"]["file_id"])  # default data.val_fraction=0.1
    expected = [[sum(labels[i] == n for i in set(members) - held) for n in names]
                for members in _clients_in_file(pfile, key)]
    assert part["stats"]["label_counts"] == expected
    assert (record["fl"]["n_train"], record["fl"]["n_val"], record["fl"]["n_test"]) == (81, 9, 30)


@pytest.mark.parametrize("method", ["20news_partition.h5", "niid_label_clients=10_alpha=0.5"])
def test_partition_file_or_key_as_method_points_to_fednlp(capsys, method) -> None:
    assert main(["run", "--task", "tc", "--partition", method, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"unknown partition method '{method}'; a FedNLP partition file is --partition fednlp " \
           f"--set partition.file=FILE --set partition.key=KEY" in err


def test_task_without_a_fednlp_reader_is_one_line(tmp_path) -> None:
    from fednlp_bench.tasks.fednlp_data import load_fednlp_h5

    from fednlp_bench.errors import DatasetError

    fl.write_s2s(tmp_path / "d.h5", 4, 2)
    with pytest.raises(DatasetError, match=r"d.h5: FedNLP data files are read for the tasks qa, s2s, st, tc; "
                                           r"task 'lm' has no FedNLP reader"):
        load_fednlp_h5("lm", tmp_path / "d.h5")
