"""On-disk cache of train/test partitions keyed by spec hash + input-array hashes (.npz, atomic)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from fednlp_bench.partitioners.base import Partitioner
from fednlp_bench.partitioners.partition import Partition

log = logging.getLogger(__name__)


def array_digest(value: Any) -> str:
    """sha256 of an input array (dtype, shape and content) or scalar; stable across processes."""
    h = hashlib.sha256()
    if value is None or isinstance(value, (int, float, str, bool, np.integer, np.floating)):
        h.update(repr(value).encode())
        return h.hexdigest()
    arr = np.asarray(value)
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    if arr.dtype.kind == "O":
        h.update(json.dumps(arr.tolist(), default=repr, ensure_ascii=False).encode())
    else:
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def cache_key(partitioner: Partitioner, key_extra: str = "", **arrays: Any) -> str:
    """Hex key combining the spec hash, ``key_extra`` (e.g. dataset name) and the array digests."""
    h = hashlib.sha256(partitioner.spec_hash().encode())
    h.update(b"\0" + key_extra.encode())
    for name in sorted(arrays):
        h.update(f"\0{name}={array_digest(arrays[name])}".encode())
    return h.hexdigest()


def _pack(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    flat = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return flat, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _unpack(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[a:b].copy() for a, b in zip(offsets[:-1], offsets[1:])]


def save_partition(path: str | os.PathLike, partition: Partition) -> None:
    """Write ``partition`` to ``path`` (.npz) atomically (temp file + os.replace), mode 0644 like records."""
    from fednlp_bench.io_utils import atomic_write

    train, train_off = _pack(partition.train)
    test, test_off = _pack(partition.test)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                train=train,
                train_offsets=train_off,
                test=test,
                test_offsets=test_off,
                has_test=np.array(bool(partition.test)),
                spec=np.array(json.dumps(partition.spec, sort_keys=True)),
            )

    atomic_write(path, write)


def load_partition(path: str | os.PathLike) -> Partition:
    """Read a partition written by :func:`save_partition`."""
    with np.load(path, allow_pickle=False) as z:
        test = _unpack(z["test"], z["test_offsets"]) if bool(z["has_test"]) else []
        return Partition(train=_unpack(z["train"], z["train_offsets"]), test=test, spec=json.loads(str(z["spec"])))


def load_or_split(
    partitioner: Partitioner, cache_dir: str | os.PathLike, key_extra: str = "", **arrays: Any
) -> Partition:
    """Cached :meth:`Partitioner.split_train_test`; ``arrays`` are its keyword arguments
    (``train_labels=``, ``test_labels=``, ``train_groups=``, ...). An unreadable cache file is
    recomputed and overwritten."""
    path = Path(cache_dir) / f"{partitioner.name}-{cache_key(partitioner, key_extra, **arrays)[:40]}.npz"
    if path.exists():
        try:
            part = load_partition(path)
            if part.spec == json.loads(json.dumps(partitioner.spec())):
                return part
            log.warning("partition cache %s holds another spec; recomputing", path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("partition cache %s unreadable (%s); recomputing", path, exc)
    part = partitioner.split_train_test(**arrays)
    save_partition(path, part)
    return part
