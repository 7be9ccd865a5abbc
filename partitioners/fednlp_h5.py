"""FedNLP h5 interop (Lin et al. 2022): read/write partition files and read data files.

Partition file (``*_partition.h5``), as written by FedNLP's ``data/advanced_partition/*.py``
and read by its ``data_manager/base_data_manager.py``::

    /<method key, e.g. "uniform" or "niid_label_clients=100_alpha=1.0">/
        n_clients                      scalar dataset
        alpha, ...                     scalar datasets of the method's parameters (optional)
        partition_data/<client_id>/train   int index dataset
        partition_data/<client_id>/test    int index dataset

Indices in the file are keys of the data file's ``X/<idx>``/``Y/<idx>``, i.e. data-file ids.
A :class:`~partitioners.partition.Partition` holds row positions inside the train split and
inside the test split. The mapping between the two is ``train_ids``/``test_ids`` (the data
file's ``train_index_list``/``test_index_list``); by default train row ``i`` is id ``i`` and
test row ``j`` is id ``n_train + j`` (FedNLP numbers train examples first).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fednlp_bench.partitioners.errors import PartitionError
from fednlp_bench.partitioners.partition import Partition


def _h5py() -> Any:
    import h5py

    return h5py


def method_key(spec: dict[str, Any]) -> str:
    """FedNLP-style group name for a spec, e.g. ``niid_label_clients=100_alpha=1.0``."""
    name, k, params = spec["name"], spec["n_clients"], spec.get("params", {})
    if name == "uniform":
        return "uniform"
    if name == "dirichlet_label":
        return f"niid_label_clients={k}_alpha={params['alpha']:.1f}"
    if name == "quantity":
        return f"niid_quantity_clients={k}_beta={params['beta']:.1f}"
    if name == "feature_cluster":
        return f"niid_cluster_clients={k}_alpha={params['alpha']:.1f}"
    extra = "".join(f"_{key}={val}" for key, val in sorted(params.items()))
    return f"{name}_clients={k}{extra}"


def _positions(stored: np.ndarray, ids: np.ndarray, what: str, path: str) -> np.ndarray:
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pos = np.searchsorted(sorted_ids, stored)
    ok = (pos < len(ids)) & (sorted_ids[np.minimum(pos, len(ids) - 1)] == stored) if len(ids) else np.zeros(len(stored), bool)
    if not np.all(ok):
        bad = stored[~ok][0]
        raise PartitionError(f"{path}: {what} index {bad} is not among the {len(ids)} {what} ids")
    return np.sort(order[pos]).astype(np.int64)


def write_partition_h5(
    path: str | os.PathLike,
    method_key: str,
    partition: Partition,
    *,
    train_ids: np.ndarray | None = None,
    test_ids: np.ndarray | None = None,
) -> None:
    """Write ``partition`` under ``/<method_key>`` of a FedNLP partition file (appends to an
    existing file, replacing that group). Numeric params of the spec are stored as datasets
    (FedNLP stores ``alpha``) and the whole spec as the ``fednlp_bench_spec`` attribute."""
    h5py = _h5py()
    n_train = sum(len(p) for p in partition.train)
    n_test = sum(len(p) for p in partition.test)
    train_ids = np.arange(n_train) if train_ids is None else np.asarray(train_ids)
    test_ids = n_train + np.arange(n_test) if test_ids is None else np.asarray(test_ids)
    with h5py.File(path, "a") as f:
        if method_key in f:
            del f[method_key]
        g = f.create_group(method_key)
        g["n_clients"] = partition.n_clients
        for k, v in partition.spec.get("params", {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                g[k] = v
        g.attrs["fednlp_bench_spec"] = json.dumps(partition.spec, sort_keys=True)
        data = g.create_group("partition_data")
        for c in range(partition.n_clients):
            client = data.create_group(str(c))
            client["train"] = train_ids[partition.train[c]].astype(np.int64)
            test = partition.test[c] if partition.test else np.zeros(0, np.int64)
            client["test"] = test_ids[test].astype(np.int64)


def read_partition_h5(
    path: str | os.PathLike,
    method_key: str,
    *,
    train_ids: np.ndarray | None = None,
    test_ids: np.ndarray | None = None,
    data_path: str | os.PathLike | None = None,
) -> Partition:
    """Read ``/<method_key>`` of a FedNLP partition file as row positions.

    ``train_ids``/``test_ids`` (or ``data_path``, a FedNLP data file whose attributes hold
    ``train_index_list``/``test_index_list``) map file ids to positions; otherwise the default
    layout of :func:`write_partition_h5` is assumed.
    """
    h5py = _h5py()
    if data_path is not None:
        data = read_data_h5(data_path, with_text=False)
        train_ids, test_ids = data.train_index_list, data.test_index_list
    with h5py.File(path, "r") as f:
        if method_key not in f:
            keys = ", ".join(k for k in f.keys() if "partition_data" in f[k]) or "none"
            raise PartitionError(f"{path}: no partition {method_key!r}; file holds: {keys}")
        g = f[method_key]
        n_clients = int(g["n_clients"][()]) if "n_clients" in g else int(g.attrs["n_clients"])
        clients = g["partition_data"]
        train_raw = [np.asarray(clients[str(c)]["train"][()], dtype=np.int64).reshape(-1) for c in range(n_clients)]
        test_raw = [
            np.asarray(clients[str(c)]["test"][()], dtype=np.int64).reshape(-1) if "test" in clients[str(c)] else np.zeros(0, np.int64)
            for c in range(n_clients)
        ]
        if "fednlp_bench_spec" in g.attrs:
            spec = json.loads(g.attrs["fednlp_bench_spec"])
        else:
            params = {k: g[k][()].item() for k in g if k not in ("n_clients", "partition_data") and isinstance(g[k], h5py.Dataset) and g[k].shape == ()}
            spec = {"name": method_key, "n_clients": n_clients, "params": params, "source": "fednlp"}
    n_train = sum(len(p) for p in train_raw)
    if train_ids is None:
        train = [np.sort(p) for p in train_raw]
    else:
        train = [_positions(p, np.asarray(train_ids, dtype=np.int64), "train", str(path)) for p in train_raw]
    if test_ids is None:
        test = [np.sort(p - n_train) for p in test_raw]
        if any(len(p) and p.min() < 0 for p in test):
            raise PartitionError(f"{path}: test ids overlap train ids; pass test_ids= or data_path=")
    else:
        test = [_positions(p, np.asarray(test_ids, dtype=np.int64), "test", str(path)) for p in test_raw]
    return Partition(train=train, test=test, spec=spec)


@dataclass(frozen=True)
class FedNLPData:
    """Contents of a FedNLP data file (``*_data.h5``)."""

    attributes: dict[str, Any]
    index_list: np.ndarray
    train_index_list: np.ndarray
    test_index_list: np.ndarray
    label_vocab: dict[str, Any] = field(default_factory=dict)
    x: dict[int, Any] = field(default_factory=dict)
    y: dict[int, Any] = field(default_factory=dict)


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        return [_decode(v) for v in value.tolist()]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def read_data_h5(path: str | os.PathLike, with_text: bool = True) -> FedNLPData:
    """Read a FedNLP data file: the ``attributes`` JSON (index lists, ``label_vocab``) and,
    with ``with_text``, every ``X/<idx>`` and ``Y/<idx>`` decoded to str (token lists stay lists).
    Without ``train_index_list`` the first 90% of ``index_list`` is train, as FedNLP does."""
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        raw = f["attributes"][()]
        attributes = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        index = np.asarray(attributes["index_list"], dtype=np.int64)
        if "train_index_list" in attributes:
            train = np.asarray(attributes["train_index_list"], dtype=np.int64)
            test = np.asarray(attributes["test_index_list"], dtype=np.int64)
        else:
            cut = int(len(index) * 0.9)
            train, test = index[:cut], index[cut:]
        x: dict[int, Any] = {}
        y: dict[int, Any] = {}
        if with_text:
            for name, out in (("X", x), ("Y", y)):
                if name in f:
                    for key in f[name]:
                        out[int(key)] = _decode(f[name][key][()])
    return FedNLPData(attributes, index, train, test, dict(attributes.get("label_vocab", {})), x, y)


def write_data_h5(
    path: str | os.PathLike,
    x: list[Any],
    y: list[Any],
    train_index_list: list[int],
    test_index_list: list[int],
    label_vocab: dict[str, int] | None = None,
) -> None:
    """Write a minimal FedNLP data file (``attributes`` JSON, ``X/<idx>``, ``Y/<idx>``)."""
    h5py = _h5py()
    attrs = {
        "index_list": list(range(len(x))),
        "train_index_list": [int(i) for i in train_index_list],
        "test_index_list": [int(i) for i in test_index_list],
        "label_vocab": label_vocab or {},
    }
    with h5py.File(path, "w") as f:
        f["attributes"] = json.dumps(attrs)
        for i, (xi, yi) in enumerate(zip(x, y)):
            f[f"X/{i}"] = xi
            f[f"Y/{i}"] = yi
