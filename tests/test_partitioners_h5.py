"""FedNLP h5 interop: partition files and data files in FedNLP's layout."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from fednlp_bench import partitioners
from fednlp_bench.partitioners import PartitionError
from fednlp_bench.partitioners.fednlp_h5 import method_key, read_data_h5, read_partition_h5, write_data_h5, write_partition_h5


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_round_trip_default_layout(tmp_path) -> None:
    rng = np.random.default_rng(0)
    p = partitioners.make("dirichlet_label", 5, 0, alpha=1.0)
    part = p.split_train_test(rng.integers(0, 3, 200), rng.integers(0, 3, 50))
    key = method_key(part.spec)
    assert key == "niid_label_clients=5_alpha=1.0"
    path = tmp_path / "toy_partition.h5"
    write_partition_h5(path, key, part)
    write_partition_h5(path, "uniform", partitioners.make("uniform", 3, 0).split_train_test(train_rows=200, test_rows=50))
    back = read_partition_h5(path, key)
    assert same(back.train, part.train) and same(back.test, part.test) and back.spec == part.spec
    # FedNLP's own reader idiom works on our file; test ids follow the train ids
    with h5py.File(path, "r") as f:
        assert f[key]["n_clients"][()] == 5
        assert f[key]["alpha"][()] == 1.0
        ids = f[key]["partition_data"]["0"]["test"][()]
        assert ids.min() >= 200
    write_partition_h5(path, key, part)  # rewriting a key replaces it
    assert same(read_partition_h5(path, key).train, part.train)


def test_read_fednlp_written_file_with_data_file(tmp_path) -> None:
    # a file laid out the way FedNLP's niid_label.py writes it, with shuffled data-file ids
    data = tmp_path / "toy_data.h5"
    texts = [f"sentence {i}" for i in range(12)]
    labels = ["pos", "neg"] * 6
    train_ids, test_ids = [0, 2, 4, 6, 8, 10, 1, 3], [5, 7, 9, 11]
    write_data_h5(data, texts, labels, train_ids, test_ids, {"neg": 0, "pos": 1})
    pfile = tmp_path / "toy_partition.h5"
    key = "niid_label_clients=2_alpha=0.5"
    with h5py.File(pfile, "w") as f:
        f[f"/{key}/n_clients"] = 2
        f[f"/{key}/alpha"] = 0.5
        f[f"/{key}/partition_data/0/train/"] = [8, 0, 1]
        f[f"/{key}/partition_data/0/test/"] = [11]
        f[f"/{key}/partition_data/1/train/"] = [2, 4, 6, 10, 3]
        f[f"/{key}/partition_data/1/test/"] = [5, 7, 9]
    d = read_data_h5(data)
    assert d.x[3] == "sentence 3" and d.y[3] == "neg" and d.label_vocab == {"neg": 0, "pos": 1}
    assert d.train_index_list.tolist() == train_ids
    part = read_partition_h5(pfile, key, data_path=data)
    assert part.spec == {"name": key, "n_clients": 2, "params": {"alpha": 0.5}, "source": "fednlp"}
    assert [np.asarray(train_ids)[p].tolist() for p in part.train] == [[0, 8, 1], [2, 4, 6, 10, 3]]
    assert [np.asarray(test_ids)[p].tolist() for p in part.test] == [[11], [5, 7, 9]]
    # explicit ids round-trip back to the same file ids
    out = tmp_path / "ours_partition.h5"
    write_partition_h5(out, key, part, train_ids=np.asarray(train_ids), test_ids=np.asarray(test_ids))
    with h5py.File(out, "r") as f:
        assert sorted(f[key]["partition_data"]["0"]["train"][()].tolist()) == [0, 1, 8]
    assert same(read_partition_h5(out, key, data_path=data).train, part.train)


def test_read_errors(tmp_path) -> None:
    path = tmp_path / "p.h5"
    write_partition_h5(path, "uniform", partitioners.make("uniform", 2, 0).split_train_test(train_rows=10, test_rows=4))
    with pytest.raises(PartitionError, match="no partition 'nope'; file holds: uniform"):
        read_partition_h5(path, "nope")
    with pytest.raises(PartitionError, match=r"train id \d+ is not one of the data's 5 train ids \(0..4\)"):
        read_partition_h5(path, "uniform", train_ids=np.arange(5), test_ids=np.arange(10, 14))


@pytest.mark.parametrize("alpha, key", [
    (0.05, "niid_label_clients=7_alpha=0.05"), (0.01, "niid_label_clients=7_alpha=0.01"),
    (0.1, "niid_label_clients=7_alpha=0.1"), (1, "niid_label_clients=7_alpha=1.0"),
    (0.5, "niid_label_clients=7_alpha=0.5"), (100.0, "niid_label_clients=7_alpha=100.0"),
    (1e-4, "niid_label_clients=7_alpha=0.0001"),
])
def test_method_key_is_fednlp_exact_and_never_rounds(alpha, key) -> None:
    # FedNLP formats "%.1f"; where that is exact the key is FedNLP's own, otherwise nothing is rounded
    assert method_key({"name": "dirichlet_label", "n_clients": 7, "params": {"alpha": alpha}}) == key
    assert method_key({"name": "quantity", "n_clients": 7, "params": {"beta": alpha, "min_size": 1}}) == \
        key.replace("niid_label", "niid_quantity").replace("alpha", "beta")


def test_nearby_alphas_do_not_overwrite_each_other(tmp_path) -> None:
    path = tmp_path / "p.h5"
    labels = np.arange(60) % 3
    parts = {a: partitioners.make("dirichlet_label", 4, 0, alpha=a).split_train_test(labels, labels[:12])
             for a in (0.05, 0.1, 0.01)}
    for part in parts.values():
        assert write_partition_h5(path, method_key(part.spec), part) is False  # a new key each time
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["niid_label_clients=4_alpha=0.01", "niid_label_clients=4_alpha=0.05",
                             "niid_label_clients=4_alpha=0.1"]
        assert f["niid_label_clients=4_alpha=0.05"]["alpha"][()] == 0.05
    for a, part in parts.items():
        assert same(read_partition_h5(path, method_key(part.spec)).train, part.train)


def _raw_partition(path, clients, n_clients=None, key="k", test=None) -> None:
    """A partition file written with h5py alone: ``clients`` = list of train id lists."""
    with h5py.File(path, "w") as f:
        if n_clients is not False:
            f[f"{key}/n_clients"] = len(clients) if n_clients is None else n_clients
        for c, ids in enumerate(clients):
            f[f"{key}/partition_data/{c}/train"] = np.asarray(ids)
            if test is not None:
                f[f"{key}/partition_data/{c}/test"] = np.asarray(test[c])


@pytest.mark.parametrize("clients, kwargs, message", [
    ([[0, 1, 2], [2, 3]], {}, r"train id 2 is in client 0 and client 1; every row belongs to exactly one client"),
    ([[0, -1], [1]], {}, r"train id -1 is negative"),
    ([[0, 1], [2, 9]], {}, r"train id 9 is not one of the data's 4 train ids \(0..3\)"),
    ([[0, 1], [2]], {"n_clients": 3}, r"client group partition_data/2 is missing \(1 of n_clients=3 missing"),
    ([[0], [1], [2]], {"n_clients": 2}, r"partition_data/2 is not a client of n_clients=2 \(allowed: 0..1\)"),
    ([[0, 1], [2]], {"n_clients": False}, r"needs an integer n_clients"),
    ([[0.0, 1.5], [2.0]], {}, r"must hold integer ids, got 1.5"),
    ([[0, 1], [3]], {}, r"train id 3 is not one of the data's 3 train ids"),
    ([[0, 1], [2]], {"test": [[3], [2]]}, r"id 2 is both a train and a test id"),
])
def test_invalid_partition_files_give_one_line(tmp_path, clients, kwargs, message) -> None:
    path = tmp_path / "p.h5"
    _raw_partition(path, clients, **kwargs)
    with pytest.raises(PartitionError, match=message) as info:
        read_partition_h5(path, "k")
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_cover_is_checked_against_given_ids(tmp_path) -> None:
    path = tmp_path / "p.h5"
    _raw_partition(path, [[10, 12], [14]])
    part = read_partition_h5(path, "k", train_ids=np.array([14, 12, 10]), test_ids=np.zeros(0, np.int64))
    assert [p.tolist() for p in part.train] == [[1, 2], [0]]
    with pytest.raises(PartitionError, match=r"1 of the data's 4 train ids are in no client \(first: 16\)"):
        read_partition_h5(path, "k", train_ids=np.array([10, 12, 14, 16]))


def test_empty_float_clients_as_fednlp_writes_them(tmp_path) -> None:
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f["k/n_clients"] = 2
        f["k/partition_data/0/train/"] = [0, 1, 2]
        f["k/partition_data/1/train/"] = []  # h5py stores [] as float64
    assert [p.tolist() for p in read_partition_h5(path, "k").train] == [[0, 1, 2], []]


def test_not_a_partition_file(tmp_path) -> None:
    bad = tmp_path / "x.h5"
    bad.write_text("not hdf5")
    with pytest.raises(PartitionError, match="not a readable HDF5 partition file"):
        read_partition_h5(bad, "k")
    with pytest.raises(PartitionError, match="does not exist"):
        read_partition_h5(tmp_path / "missing.h5", "k")


def test_written_files_are_0644_and_replace_atomically(tmp_path) -> None:
    import os
    import stat

    path = tmp_path / "p.h5"
    part = partitioners.make("uniform", 2, 0).split_train_test(train_rows=10, test_rows=4)
    assert write_partition_h5(path, "uniform", part) is False
    assert write_partition_h5(path, "uniform", part) is True  # replaced
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["p.h5"]  # no temporary file left behind
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(PartitionError, match="exists but is not an HDF5 file"):
        write_partition_h5(tmp_path / "text.h5", "uniform", part)
    assert (tmp_path / "text.h5").read_text() == "not hdf5"
