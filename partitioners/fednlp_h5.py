"""FedNLP h5 interop (Lin et al. 2022): read and write partition files, read data files.

Partition file (``*_partition.h5``), as written by FedNLP's ``data/advanced_partition/*.py``
and read by its ``data_manager/base_data_manager.py``::

    /<method key, e.g. "uniform" or "niid_label_clients=100_alpha=1.0">/
        n_clients                      scalar dataset
        alpha, beta, ...               scalar datasets of the method's parameters (optional)
        partition_data/<client_id>/train   int id dataset
        partition_data/<client_id>/test    int id dataset

Ids in the file are keys of the data file's ``X/<id>``/``Y/<id>``, i.e. data-file ids.
A :class:`~partitioners.partition.Partition` holds row positions inside the train split and
inside the test split. The mapping between the two is ``train_ids``/``test_ids`` (the data
file's ``train_index_list``/``test_index_list``); by default train row ``i`` is id ``i`` and
test row ``j`` is id ``n_train + j`` (FedNLP numbers train examples first).

Reads are validated: client groups ``0..n_clients-1`` all present and no others, integer
ids, no row in two clients, no id in both train and test, and an exact cover of the
train (and test) ids; each problem is one :class:`PartitionError` naming the file and key.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fednlp_bench.partitioners.errors import PartitionError
from fednlp_bench.partitioners.partition import Partition

#: our partitioner -> (FedNLP method prefix, the parameter FedNLP puts in the key)
FEDNLP_METHODS = {"dirichlet_label": ("niid_label", "alpha"), "quantity": ("niid_quantity", "beta"),
                  "feature_cluster": ("niid_cluster", "alpha")}
_KEY = re.compile(r"^(?P<method>[A-Za-z0-9_]+?)_clients=(?P<k>[0-9.]+)(?P<rest>(?:_[A-Za-z_]+=[^_]+)*)$")


def _h5py() -> Any:
    import h5py

    return h5py


def key_number(value: float) -> str:
    """A parameter as FedNLP writes it (``%.1f``) where that is exact, else its shortest exact form.

    FedNLP's scripts format alpha with ``%.1f``, which turns 0.05 into ``0.1`` (colliding with a
    real 0.1) and 0.01 into ``0.0``; ``1.0``, ``0.5``, ``100.0`` stay FedNLP-exact here.
    """
    v = float(value)
    return f"{v:.1f}" if float(f"{v:.1f}") == v else repr(v)


def method_key(spec: dict[str, Any]) -> str:
    """FedNLP-style group name for a spec, e.g. ``niid_label_clients=100_alpha=1.0``."""
    name, k, params = spec["name"], spec["n_clients"], spec.get("params", {})
    if name == "fednlp" and params.get("key"):  # read from a FedNLP file: keep its key
        return str(params["key"])
    if name == "uniform":
        return "uniform"
    if name in FEDNLP_METHODS:
        prefix, param = FEDNLP_METHODS[name]
        return f"{prefix}_clients={k}_{param}={key_number(params[param])}"
    extra = "".join(
        f"_{key}={key_number(val) if isinstance(val, float) else val}" for key, val in sorted(params.items())
    )
    return f"{name}_clients={k}{extra}"


def parse_key(key: str) -> dict[str, Any]:
    """``niid_label_clients=10_alpha=0.5`` -> ``{"method": "niid_label", "alpha": 0.5}`` (best effort)."""
    m = _KEY.match(key)
    if not m:
        return {"method": key}
    out: dict[str, Any] = {"method": m["method"]}
    for part in filter(None, m["rest"].split("_")):
        name, _, value = part.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            out[name] = value
    return out


# --------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class StoredPartition:
    """One method key of a partition file, ids as stored, validated for shape and overlap."""

    path: str
    key: str
    train: list[np.ndarray]
    test: list[np.ndarray] | None  # None when the file stores no test ids at all
    params: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] | None = None  # fednlp-bench's own spec when we wrote the file

    @property
    def n_clients(self) -> int:
        return len(self.train)


def _open(path: str | os.PathLike) -> Any:
    try:
        return _h5py().File(path, "r")
    except FileNotFoundError:
        raise PartitionError(f"partition file '{path}' does not exist") from None
    except OSError as exc:
        raise PartitionError(f"{path}: not a readable HDF5 partition file ({exc})") from None


def list_keys(f: Any) -> list[str]:
    """Method keys of an open partition file (groups holding ``partition_data``)."""
    h5py = _h5py()
    return sorted(k for k in f if isinstance(f[k], h5py.Group) and "partition_data" in f[k])


def _ids(obj: Any, where: str) -> np.ndarray:
    """An id dataset as int64. Floats are accepted when integral: FedNLP's scripts store an
    empty client as ``[]``, which h5py writes as an empty float64 array."""
    h5py = _h5py()
    if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in "iuf":
        kind = obj.dtype if isinstance(obj, h5py.Dataset) else type(obj).__name__
        raise PartitionError(f"{where} must be an integer id array, got {kind}")
    raw = np.asarray(obj[()]).reshape(-1)
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
        raise PartitionError(f"{where} must hold integer ids, got {float(raw[~(raw == np.round(raw))][0])}")
    return raw.astype(np.int64)


def _n_clients(g: Any, where: str) -> int:
    raw = g["n_clients"][()] if "n_clients" in g else g.attrs.get("n_clients")
    try:
        n = int(np.asarray(raw).item())
    except (TypeError, ValueError):
        raise PartitionError(f"{where}: needs an integer n_clients dataset, got {raw!r:.40}") from None
    if n < 1:
        raise PartitionError(f"{where}: n_clients={n}; must be >= 1")
    return n


def _client_groups(data: Any, n: int, where: str) -> list[Any]:
    names = set(data)
    expected = {str(c) for c in range(n)}
    missing = sorted(expected - names, key=lambda s: int(s))
    if missing:
        raise PartitionError(
            f"{where}: client group partition_data/{missing[0]} is missing "
            f"({len(missing)} of n_clients={n} missing; clients are numbered 0..{n - 1})"
        )
    extra = sorted(names - expected)
    if extra:
        raise PartitionError(f"{where}: partition_data/{extra[0]} is not a client of n_clients={n} (allowed: 0..{n - 1})")
    return [data[str(c)] for c in range(n)]


def _params(g: Any) -> dict[str, Any]:
    h5py = _h5py()
    out = {}
    for k in g:
        obj = g[k]
        if k not in ("n_clients", "partition_data") and isinstance(obj, h5py.Dataset) and obj.shape == () \
                and obj.dtype.kind in "iuf":
            out[k] = obj[()].item()
    return out


def read_stored(path: str | os.PathLike, key: str) -> StoredPartition:
    """Read and structurally validate ``/<key>`` of a FedNLP partition file (ids as stored)."""
    with _open(path) as f:
        if key not in list_keys(f):
            raise PartitionError(f"{path}: no partition {key!r}; file holds: {', '.join(list_keys(f)) or 'none'}")
        g = f[key]
        where = f"{path} [{key}]"
        clients = _client_groups(g["partition_data"], _n_clients(g, where), where)
        train, test = [], []
        for c, client in enumerate(clients):
            if "train" not in client:
                raise PartitionError(f"{where}: partition_data/{c} has no 'train' ids")
            train.append(_ids(client["train"], f"{where}: partition_data/{c}/train"))
            if "test" in client:
                test.append(_ids(client["test"], f"{where}: partition_data/{c}/test"))
        if test and len(test) != len(train):
            raise PartitionError(f"{where}: {len(test)} of {len(train)} clients have 'test' ids; all or none may")
        spec = json.loads(g.attrs["fednlp_bench_spec"]) if "fednlp_bench_spec" in g.attrs else None
        stored = StoredPartition(str(path), key, train, test or None, _params(g), spec)
    _check_disjoint(stored)
    return stored


def _check_disjoint(stored: StoredPartition) -> None:
    where = f"{stored.path} [{stored.key}]"
    for split, parts in (("train", stored.train), ("test", stored.test or [])):
        if not parts:
            continue
        ids = np.concatenate(parts)
        owner = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
        if len(ids) and ids.min() < 0:
            raise PartitionError(f"{where}: {split} id {int(ids.min())} is negative; ids are >= 0")
        order = np.argsort(ids, kind="stable")
        dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
        if len(dup):
            a, b = order[dup[0]], order[dup[0] + 1]
            raise PartitionError(
                f"{where}: {split} id {int(ids[a])} is in client {owner[a]} and client {owner[b]}; "
                f"every row belongs to exactly one client"
            )
    if stored.test:
        both = np.intersect1d(np.concatenate(stored.train), np.concatenate(stored.test))
        if len(both):
            raise PartitionError(f"{where}: id {int(both[0])} is both a train and a test id")


def to_positions(parts: list[np.ndarray], ids: np.ndarray, split: str, where: str) -> list[np.ndarray]:
    """Row positions (into ``ids``) of stored ids; every stored id must be one of ``ids`` and
    every one of ``ids`` must be in some client (an exact cover)."""
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    pos = np.searchsorted(sorted_ids, flat)
    ok = (pos < len(ids)) & (sorted_ids[np.minimum(pos, max(len(ids) - 1, 0))] == flat) if len(ids) else pos < 0
    if not np.all(ok):
        bad = int(flat[~ok][0])
        span = f"{int(sorted_ids[0])}..{int(sorted_ids[-1])}" if len(ids) else "none"
        raise PartitionError(f"{where}: {split} id {bad} is not one of the data's {len(ids)} {split} ids ({span})")
    if len(flat) != len(ids):
        covered = np.zeros(len(ids), bool)
        covered[order[pos]] = True
        left = ids[~covered]
        raise PartitionError(
            f"{where}: {len(left)} of the data's {len(ids)} {split} ids are in no client (first: {int(left[0])}); "
            f"a partition must cover every row"
        )
    bounds = np.cumsum([len(p) for p in parts])[:-1]
    return [np.sort(x).astype(np.int64) for x in np.split(order[pos], bounds)]


def _spec(stored: StoredPartition) -> dict[str, Any]:
    if stored.spec is not None:
        return stored.spec
    return {"name": stored.key, "n_clients": stored.n_clients, "params": stored.params, "source": "fednlp"}


def read_partition_h5(
    path: str | os.PathLike,
    method_key: str,
    *,
    train_ids: np.ndarray | None = None,
    test_ids: np.ndarray | None = None,
    data_path: str | os.PathLike | None = None,
) -> Partition:
    """Read ``/<method_key>`` of a FedNLP partition file as row positions (validated, see module doc).

    ``train_ids``/``test_ids`` (or ``data_path``, a FedNLP data file whose attributes hold
    ``train_index_list``/``test_index_list``) map file ids to positions; otherwise the default
    layout of :func:`write_partition_h5` is assumed (train ids ``0..n_train-1``, then test ids).
    """
    stored = read_stored(path, method_key)
    if data_path is not None:
        data = read_data_h5(data_path, with_text=False)
        train_ids, test_ids = data.train_index_list, data.test_index_list
    n_train = sum(len(p) for p in stored.train)
    if train_ids is None:
        train_ids = np.arange(n_train)
    where = f"{path} [{method_key}]"
    train = to_positions(stored.train, train_ids, "train", where)
    test: list[np.ndarray] = []
    if stored.test is not None:
        if test_ids is None:
            test_ids = len(train_ids) + np.arange(sum(len(p) for p in stored.test))
        test = to_positions(stored.test, test_ids, "test", where)
    return Partition(train=train, test=test, spec=_spec(stored))


# --------------------------------------------------------------------------- writing
def write_partition_h5(
    path: str | os.PathLike,
    method_key: str,
    partition: Partition,
    *,
    train_ids: np.ndarray | None = None,
    test_ids: np.ndarray | None = None,
) -> bool:
    """Write ``partition`` under ``/<method_key>`` of a FedNLP partition file, atomically (mode 0644).

    An existing file keeps its other keys; an existing ``method_key`` is replaced (returns True
    then). Numeric params of the spec are stored as datasets (FedNLP stores ``alpha``/``beta``)
    and the whole spec as the ``fednlp_bench_spec`` attribute.
    """
    from fednlp_bench.io_utils import atomic_write

    n_train = sum(len(p) for p in partition.train)
    n_test = sum(len(p) for p in partition.test)
    train_ids = np.arange(n_train) if train_ids is None else np.asarray(train_ids)
    test_ids = n_train + np.arange(n_test) if test_ids is None else np.asarray(test_ids)
    existed = [False]

    def write(tmp: Path) -> None:
        if os.path.exists(path):  # keep the file's other keys: edit a copy, then rename it over
            shutil.copyfile(path, tmp)
        try:
            f = _h5py().File(tmp, "a" if os.path.exists(path) else "w")
        except OSError as exc:
            raise PartitionError(f"{path}: exists but is not an HDF5 file ({exc}); choose another path") from None
        with f:
            existed[0] = method_key in f
            if existed[0]:
                del f[method_key]
            _write_group(f.create_group(method_key), partition, train_ids, test_ids)

    atomic_write(path, write)
    return existed[0]


def _write_group(g: Any, partition: Partition, train_ids: np.ndarray, test_ids: np.ndarray) -> None:
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


# --------------------------------------------------------------------------- data files
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
    """Read a FedNLP data file: the validated ``attributes`` (index lists, ``label_vocab``) and,
    with ``with_text``, every ``X/<idx>`` and ``Y/<idx>`` decoded to str (token lists stay lists).
    Without ``train_index_list`` the first 90% of ``index_list`` is train, as FedNLP does."""
    from fednlp_bench.tasks.fednlp_data import open_h5, read_attributes, split_ids

    path = Path(path)
    with open_h5(path) as f:
        attributes = read_attributes(f, path)
        train, test = split_ids(attributes, path)
        index = np.asarray(attributes.get("index_list", np.concatenate([train, test]).tolist()), dtype=np.int64)
        x: dict[int, Any] = {}
        y: dict[int, Any] = {}
        if with_text:
            for name, out in (("X", x), ("Y", y)):
                if name in f:
                    for key in f[name]:
                        out[int(key)] = _decode(f[name][key][()])
    return FedNLPData(attributes, index, train, test, dict(attributes.get("label_vocab") or {}), x, y)


def write_data_h5(
    path: str | os.PathLike,
    x: list[Any],
    y: list[Any],
    train_index_list: list[int],
    test_index_list: list[int],
    label_vocab: dict[str, int] | None = None,
) -> None:
    """Write a minimal FedNLP data file (``attributes`` JSON, ``X/<idx>``, ``Y/<idx>``), atomically."""
    from fednlp_bench.io_utils import atomic_write

    attrs = {
        "index_list": list(range(len(x))),
        "train_index_list": [int(i) for i in train_index_list],
        "test_index_list": [int(i) for i in test_index_list],
        "label_vocab": label_vocab or {},
    }

    def write(tmp: Path) -> None:
        with _h5py().File(tmp, "w") as f:
            f["attributes"] = json.dumps(attrs)
            for i, (xi, yi) in enumerate(zip(x, y)):
                f[f"X/{i}"] = xi
                f[f"Y/{i}"] = yi

    atomic_write(path, write)
