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
    with pytest.raises(PartitionError, match=r"train index \d+ is not among the 5 train ids"):
        read_partition_h5(path, "uniform", train_ids=np.arange(5), test_ids=np.arange(10, 14))
