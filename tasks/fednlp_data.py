"""FedNLP data files (``*_data.h5``, Lin et al. 2022) as a task's canonical ``DatasetDict``.

FedNLP stores a dataset in one HDF5 file (its ``data/raw_data_loader`` writes it, its
``data_manager`` reads it)::

    attributes                 JSON string: index_list, train_index_list / test_index_list
                               (optional), label_vocab, task_type, doc_index (QA), ...
    X/<id>, Y/<id>             text classification: text, label (strings)
                               sequence tagging: word array, tag array (UTF-8 string arrays)
                               seq2seq: source, target (strings)
    context_X/<id>, question_X/<id>, Y/<id> = (start, end), question_ids/<id>
                               span extraction (SQuAD): character span of the answer

The train/test split is the file's ``train_index_list``/``test_index_list``; files without
them (WikiNER, CNN/DailyMail) use the first 90% of ``index_list`` for training, the rule of
FedNLP's own partition scripts, so that FedNLP partition files line up with the rows.
Every row keeps its data-file id in a ``file_id`` column: a FedNLP partition file lists
these ids (:mod:`partitioners.fednlp_file`). Every problem is one :class:`DatasetError`
naming the file and the ``X/<id>``-style entry.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fednlp_bench.tasks.base import cached_dataset_dict

from fednlp_bench.errors import DatasetError

#: our task name -> FedNLP's ``task_type`` attribute
TASK_TYPES = {"tc": "text_classification", "st": "seq_tagging", "qa": "span_extraction", "s2s": "seq2seq"}
_CACHE_VERSION = 1


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (cache keys and the record's identity of a file)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def open_h5(path: Path):
    """``h5py.File`` opened read-only, or a one-line error for a file that is not HDF5."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable HDF5 file ({exc})") from None


def read_attributes(f, path: Path) -> dict[str, Any]:
    """The ``attributes`` JSON object of a FedNLP data file."""
    if "attributes" not in f:
        raise DatasetError(f"{path}: not a FedNLP data file (no 'attributes' dataset; found: {', '.join(f)})")
    raw = f["attributes"][()]
    try:
        attrs = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: 'attributes' is not UTF-8 JSON ({exc})") from None
    if not isinstance(attrs, dict):
        raise DatasetError(f"{path}: 'attributes' must be a JSON object, got {type(attrs).__name__}")
    return attrs


def _id_list(attrs: dict[str, Any], key: str, path: Path) -> np.ndarray:
    values = attrs.get(key)
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise DatasetError(f"{path}: attributes.{key} must be a list of integer ids")
    ids = np.asarray(values, dtype=np.int64)
    if len(ids) and ids.min() < 0:
        raise DatasetError(f"{path}: attributes.{key} holds the negative id {int(ids.min())}; ids are >= 0")
    uniq, counts = np.unique(ids, return_counts=True)
    if np.any(counts > 1):
        raise DatasetError(f"{path}: attributes.{key} lists id {int(uniq[counts > 1][0])} twice; ids are unique")
    return ids


def split_ids(attrs: dict[str, Any], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(train ids, test ids)`` of a data file (FedNLP's 90% rule without explicit lists)."""
    if "train_index_list" in attrs or "test_index_list" in attrs:
        train, test = _id_list(attrs, "train_index_list", path), _id_list(attrs, "test_index_list", path)
        both = np.intersect1d(train, test)
        if len(both):
            raise DatasetError(f"{path}: id {int(both[0])} is in both train_index_list and test_index_list")
    else:
        index = _id_list(attrs, "index_list", path)
        cut = int(len(index) * 0.9)
        train, test = index[:cut], index[cut:]
    if not len(train) or not len(test):
        raise DatasetError(f"{path}: needs train and test rows, has {len(train)} train and {len(test)} test ids")
    return train, test


def check_task(task: str, f, attrs: dict[str, Any], path: Path) -> None:
    """The file's ``task_type`` (when present) and groups must fit ``task``."""
    kind = attrs.get("task_type")
    ours = {v: k for k, v in TASK_TYPES.items()}
    if kind is not None and kind != TASK_TYPES[task]:
        hint = f"; run it with --task {ours[kind]}" if kind in ours else "; fednlp-bench has no such task"
        raise DatasetError(f"{path}: a FedNLP {kind} data file, not {TASK_TYPES[task]}{hint}")
    need = ("context_X", "question_X", "Y") if task == "qa" else ("X", "Y")
    missing = [g for g in need if g not in f]
    if missing:
        raise DatasetError(
            f"{path}: a FedNLP {TASK_TYPES[task]} data file needs the groups {', '.join(need)}; "
            f"missing {', '.join(missing)} (found: {', '.join(f)})"
        )


def entry(f, group: str, idx: int, path: Path) -> Any:
    """``f[group][str(idx)][()]``, or an error naming the missing entry."""
    try:
        return f[group][str(int(idx))][()]
    except (KeyError, TypeError, AttributeError):
        raise DatasetError(f"{path}: missing {group}/{idx}; every id of the train/test lists needs one") from None


def as_str(value: Any, where: str, path: Path) -> str:
    """A scalar string entry (h5py gives bytes), UTF-8 checked."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path}: {where} holds byte 0x{bytes(value)[exc.start:exc.start + 1].hex()}, "
                               f"which is not UTF-8; strings must be UTF-8") from None
    if isinstance(value, str):
        return value
    raise DatasetError(f"{path}: {where} must be a string, got {type(value).__name__}")


def non_empty(text: str, where: str, path: Path) -> str:
    if not text.strip():
        raise DatasetError(f"{path}: {where} is empty; every row needs a non-empty text")
    return text


def as_str_list(value: Any, where: str, path: Path) -> list[str]:
    """A string-array entry (sequence tagging words or tags)."""
    if not isinstance(value, np.ndarray) or value.ndim != 1:
        raise DatasetError(f"{path}: {where} must be a 1-D array of strings, got {type(value).__name__}")
    return [as_str(v, f"{where}[{i}]", path) for i, v in enumerate(value.tolist())]


def load_fednlp_h5(task: str, path: Path):
    """The ``DatasetDict{train,test}`` of a FedNLP data file for ``task`` (cached by file content)."""
    from fednlp_bench.tasks import fednlp_rows

    if task not in fednlp_rows.BUILDERS:
        raise DatasetError(f"{path}: FedNLP data files are read for the tasks {', '.join(sorted(fednlp_rows.BUILDERS))}; "
                           f"task '{task}' has no FedNLP reader (tasks/fednlp_rows.py)")
    key = f"{task}-fednlp-{file_sha256(path)[:20]}-{_CACHE_VERSION}"
    build: Callable = fednlp_rows.BUILDERS[task]

    def make():
        from datasets import DatasetDict

        with open_h5(path) as f:
            attrs = read_attributes(f, path)
            check_task(task, f, attrs, path)
            train, test = split_ids(attrs, path)
            return DatasetDict(build(f, attrs, path, train, test))

    return cached_dataset_dict(key, make)


def write_fednlp_h5(task: str, dsd, path: str | Path, train_ids: np.ndarray, test_ids: np.ndarray) -> Path:
    """Write ``dsd`` as a FedNLP data file (atomically, mode 0644): train rows get ``train_ids``,
    test rows ``test_ids`` (the ids a partition file written alongside refers to)."""
    import h5py
    from fednlp_bench.tasks.fednlp_rows import WRITERS

    from fednlp_bench.io_utils import atomic_write

    train_ids, test_ids = np.asarray(train_ids, np.int64), np.asarray(test_ids, np.int64)
    attrs: dict[str, Any] = {
        "task_type": TASK_TYPES[task],
        "index_list": sorted(train_ids.tolist() + test_ids.tolist()),
        "train_index_list": train_ids.tolist(),
        "test_index_list": test_ids.tolist(),
    }

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            WRITERS[task](f, dsd["train"], train_ids, attrs)
            WRITERS[task](f, dsd["test"], test_ids, attrs)
            f["attributes"] = json.dumps(attrs)

    return atomic_write(path, write)
