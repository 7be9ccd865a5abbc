"""``fednlp``: the partition stored in a FedNLP partition file, e.g. FedNLP's own
``20news_partition.h5`` key ``niid_label_clients=100_alpha=1.0`` (Lin et al. 2022).

``--partition fednlp --set partition.file=p.h5 --set partition.key=niid_label_clients=10_alpha=0.5``
runs exactly the clients of the file instead of drawing new ones, and the record keeps the
file, its sha256, the key and the method and parameters the key and file state (``alpha``).

Rows are matched by data-file id: with a FedNLP data file (``--dataset data.h5``) every row
carries its ``X/<id>`` id, the file must cover the data file's train and test ids exactly
(validated against the data file's own lists), and rows the run holds out for validation
(``data.val_fraction``) or drops by ``data.max_train`` / ``data.max_test`` subsampling simply
leave their clients. With any other data, train row ``i`` of the data as loaded is id ``i`` and
test row ``j`` is id ``n_train + j`` (what ``fednlp-bench export`` writes), so the file must be
written for the same rows (the same validation and subsampling rule applies).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fednlp_bench.partitioners.base import Partitioner, PartitionerParams
from fednlp_bench.partitioners.errors import PartitionError
from fednlp_bench.partitioners.fednlp_h5 import StoredPartition, parse_key, read_stored, to_positions
from fednlp_bench.partitioners.partition import Partition

from fednlp_bench.hparams import param


@dataclass(frozen=True)
class FedNLPFileParams(PartitionerParams):
    """``file``: a FedNLP partition file (``*_partition.h5``); ``key``: its method key."""

    _prefix = "fednlp: "
    file: str | None = param(None, doc="FedNLP partition file (*_partition.h5)")
    key: str | None = param(None, doc="method key in the file, e.g. niid_label_clients=100_alpha=1.0")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.file:
            raise PartitionError(
                "fednlp: set partition.file=PATH, a FedNLP partition file (e.g. 20news_partition.h5), "
                "and partition.key=KEY (e.g. niid_label_clients=100_alpha=1.0)"
            )


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FedNLPFile(Partitioner):
    """The clients of one key of a FedNLP partition file (read and validated on construction).

    ``n_clients`` must be 0 (as many as the file holds) or the file's number of clients.
    """

    name = "fednlp"
    Params = FedNLPFileParams
    auto_clients = True

    def __init__(self, n_clients: int | None, seed: int = 0, **params: Any) -> None:
        super().__init__(n_clients, seed, **params)
        self.path = str(Path(self.params.file).expanduser())
        if not self.params.key:
            from fednlp_bench.partitioners.fednlp_h5 import _open, list_keys

            with _open(self.path) as f:
                keys = ", ".join(list_keys(f)) or "none"
            raise PartitionError(f"fednlp: set partition.key=KEY; {self.params.file} holds: {keys}")
        self.stored: StoredPartition = read_stored(self.path, self.params.key)
        if self.n_clients not in (0, self.stored.n_clients):
            raise PartitionError(
                f"fednlp: partition.n_clients={self.n_clients} but {self.params.key!r} in {self.params.file} "
                f"holds {self.stored.n_clients} clients; pass partition.n_clients=0 (as many as the file holds)"
            )
        self.n_clients = self.stored.n_clients
        self.sha256 = _sha256(self.path)

    def spec(self) -> dict[str, Any]:
        """The base spec, its params extended by what the file states: method, alpha/beta, sha256."""
        spec = super().spec()
        stated = {**parse_key(self.params.key), **self.stored.params}
        spec["params"] = {**stated, "file": self.params.file, "key": self.params.key, "file_sha256": self.sha256}
        return spec

    # ------------------------------------------------------------------ rows
    def for_dataset(self, dataset: str, train_ids: np.ndarray, test_ids: np.ndarray) -> Partition:
        """The partition over a run's rows of a FedNLP data file: ``train_ids``/``test_ids`` are the
        ``X/<id>`` ids of the run's rows, checked against the data file's full id lists."""
        from fednlp_bench.tasks.fednlp_data import open_h5, read_attributes, split_ids

        path = Path(dataset).expanduser()
        with open_h5(path) as f:
            full_train, full_test = split_ids(read_attributes(f, path), path)
        return self.for_ids(train_ids, test_ids, full_train, full_test,
                            f"{self.params.file} [{self.params.key}] with {dataset}")

    def for_positions(self, train_rows: np.ndarray, test_rows: np.ndarray, n_train: int, n_test: int) -> Partition:
        """The partition over a run's rows of data that is not a FedNLP data file: train row ``i`` of
        the loaded data is id ``i``, test row ``j`` id ``n_train + j`` (what ``fednlp-bench export``
        writes); ``train_rows``/``test_rows`` are the positions the run keeps (validation and
        subsampled rows leave their clients)."""
        n_train, n_test = int(n_train), int(n_test)
        try:
            return self.for_ids(np.asarray(train_rows), n_train + np.asarray(test_rows), np.arange(n_train),
                                n_train + np.arange(n_test), f"{self.params.file} [{self.params.key}]")
        except PartitionError as exc:
            raise PartitionError(
                f"{exc} (the data is not a FedNLP data file, so train row i is id i and test row j is id "
                f"n_train + j of the data as loaded: the file must be written for these rows, e.g. by "
                f"fednlp-bench export with the same dataset, data.split_seed and data.test_fraction)"
            ) from None

    def for_ids(self, train_ids: np.ndarray, test_ids: np.ndarray, full_train: np.ndarray, full_test: np.ndarray,
                where: str) -> Partition:
        """Check that the file covers ``full_train``/``full_test`` exactly, then each client's rows
        among the run's ``train_ids``/``test_ids`` (ids the run does not use are dropped)."""
        to_positions(self.stored.train, full_train, "train", where)
        train = _rows_of(self.stored.train, train_ids)
        test: list[np.ndarray] = []
        if self.stored.test is not None:
            to_positions(self.stored.test, full_test, "test", where)
            test = _rows_of(self.stored.test, test_ids)
        return Partition(train=train, test=test, spec=self.spec())

    def split_train_test(self, train_labels: Any = None, test_labels: Any = None, *,
                         train_rows: int | None = None, test_rows: int | None = None, **_: Any) -> Partition:
        """The file's partition over rows by position (see :meth:`for_dataset` for FedNLP data files)."""
        n_train = len(train_labels) if train_labels is not None else int(train_rows or 0)
        n_test = len(test_labels) if test_labels is not None else int(test_rows or 0)
        return self.for_positions(np.arange(n_train), np.arange(n_test), n_train, n_test)

    def split(self, labels: Any = None, groups: Any = None, features: Any = None, n_rows: int | None = None):
        return self.split_train_test(labels, train_rows=n_rows).train


def _rows_of(parts: list[np.ndarray], row_ids: np.ndarray) -> list[np.ndarray]:
    """Row positions of each client's ids among ``row_ids`` (ids subsampled away are dropped)."""
    row_ids = np.asarray(row_ids, dtype=np.int64)
    order = np.argsort(row_ids, kind="stable")
    sorted_ids = row_ids[order]
    out = []
    for p in parts:
        pos = np.searchsorted(sorted_ids, p)
        hit = (pos < len(row_ids)) & (sorted_ids[np.minimum(pos, max(len(row_ids) - 1, 0))] == p) \
            if len(row_ids) else np.zeros(len(p), bool)
        out.append(np.sort(order[pos[hit]]).astype(np.int64))
    return out
