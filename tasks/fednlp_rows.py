"""Each task's rows in FedNLP's data-file layout, both ways: read into canonical columns, write out.

Reading (``BUILDERS``) turns the ``X/<id>``, ``Y/<id>``... entries of a FedNLP data file into
the columns the task adapter expects, plus ``file_id``; writing (``WRITERS``) stores a
``DatasetDict`` the way FedNLP's raw data loaders do, so FedNLP's data managers can read
what ``fednlp-bench export --data-file`` writes. See :mod:`tasks.fednlp_data` for the layout.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fednlp_bench.errors import DatasetError
from fednlp_bench.tasks.fednlp_data import as_str, as_str_list, entry, non_empty
from fednlp_bench.tasks.user_files import need_classes

Ids = np.ndarray


# --------------------------------------------------------------------------- reading
def _label(value: Any, where: str, path: Path) -> str:
    """A class label: FedNLP stores strings; an integer label is taken as its digits."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return str(int(value))
    return as_str(value, where, path)


def _tc(f, attrs: dict, path: Path, train: Ids, test: Ids) -> dict[str, Any]:
    from datasets import ClassLabel, Dataset, Features, Value

    def rows(ids: Ids) -> tuple[list[str], list[str]]:
        texts = [non_empty(as_str(entry(f, "X", i, path), f"X/{i}", path), f"X/{i}", path) for i in ids]
        labels = [non_empty(_label(entry(f, "Y", i, path), f"Y/{i}", path), f"Y/{i}", path).strip() for i in ids]
        return texts, labels

    (tr_x, tr_y), (te_x, te_y) = rows(train), rows(test)
    need_classes(tr_y, path, "label (Y)")
    names = sorted(set(tr_y) | set(te_y))
    index = {n: i for i, n in enumerate(names)}
    feats = Features({"text": Value("string"), "label": ClassLabel(names=names), "group": Value("string"),
                      "file_id": Value("int64")})

    def make(x, y, ids):
        return Dataset.from_dict({"text": x, "label": [index[v] for v in y], "group": [None] * len(x),
                                  "file_id": ids.tolist()}, features=feats)

    return {"train": make(tr_x, tr_y, train), "test": make(te_x, te_y, test)}


def _st(f, attrs: dict, path: Path, train: Ids, test: Ids) -> dict[str, Any]:
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    from fednlp_bench.tasks.sequence_tagging import _tag_order

    def rows(ids: Ids) -> tuple[list[list[str]], list[list[str]]]:
        words, tags = [], []
        for i in ids:
            w = as_str_list(entry(f, "X", i, path), f"X/{i}", path)
            t = as_str_list(entry(f, "Y", i, path), f"Y/{i}", path)
            if not w or len(w) != len(t):
                raise DatasetError(f"{path}: X/{i} has {len(w)} words and Y/{i} {len(t)} tags; "
                                   f"a sentence needs one tag per word and at least one word")
            bad = next((x for x in t if x != "O" and not (x[:2] in ("B-", "I-", "E-", "S-") and len(x) > 2)), None)
            if bad is not None:
                raise DatasetError(f"{path}: Y/{i} holds tag {bad!r}; tags are O or B-/I-/E-/S-<TYPE>")
            words.append(w)
            tags.append(t)
        return words, tags

    (tr_w, tr_t), (te_w, te_t) = rows(train), rows(test)
    names = _tag_order([t for row in tr_t + te_t for t in row])
    if names == ["O"]:
        raise DatasetError(f"{path}: every tag is O; tagging needs entity tags (B-/I-/E-/S-<TYPE>)")
    index = {n: i for i, n in enumerate(names)}
    feats = Features({"words": Sequence(Value("string")), "tags": Sequence(ClassLabel(names=names)),
                      "file_id": Value("int64")})

    def make(w, t, ids):
        return Dataset.from_dict({"words": w, "tags": [[index[x] for x in row] for row in t],
                                  "file_id": ids.tolist()}, features=feats)

    return {"train": make(tr_w, tr_t, train), "test": make(te_w, te_t, test)}


def _qa_row(f, attrs: dict, path: Path, i: int) -> dict[str, Any]:
    from fednlp_bench.tasks.extractive_qa import question_word

    context = non_empty(as_str(entry(f, "context_X", i, path), f"context_X/{i}", path), f"context_X/{i}", path)
    question = non_empty(as_str(entry(f, "question_X", i, path), f"question_X/{i}", path), f"question_X/{i}", path)
    span = np.asarray(entry(f, "Y", i, path))
    if span.shape != (2,) or span.dtype.kind not in "iu":
        raise DatasetError(f"{path}: Y/{i} must be an integer pair (start, end), got {span.tolist()!r:.40}")
    start, end = int(span[0]), int(span[1])
    if not 0 <= start < end <= len(context):
        raise DatasetError(f"{path}: Y/{i} = ({start}, {end}) is not a span of context_X/{i} "
                           f"({len(context)} characters); need 0 <= start < end <= length")
    qid = as_str(entry(f, "question_ids", i, path), f"question_ids/{i}", path) if "question_ids" in f else str(i)
    docs = attrs.get("doc_index") or {}
    doc = docs.get(str(i))
    if docs and doc is None:  # groups on some rows only would make `natural` compare None with str
        raise DatasetError(f"{path}: attributes.doc_index has no entry for id {i}; it must cover every id or be absent")
    return {"id": qid, "question": question, "context": context, "answer_starts": [start],
            "answer_texts": [context[start:end]], "label": question_word(question),
            "group": None if doc is None else f"doc{doc}", "file_id": int(i)}


def _qa(f, attrs: dict, path: Path, train: Ids, test: Ids) -> dict[str, Any]:
    from datasets import Dataset, Features, Sequence, Value

    feats = Features({
        "id": Value("string"), "question": Value("string"), "context": Value("string"),
        "answer_starts": Sequence(Value("int64")), "answer_texts": Sequence(Value("string")),
        "label": Value("string"), "group": Value("string"), "file_id": Value("int64"),
    })

    def make(ids):
        rows = [_qa_row(f, attrs, path, i) for i in ids]
        return Dataset.from_dict({k: [r[k] for r in rows] for k in feats}, features=feats)

    return {"train": make(train), "test": make(test)}


def _s2s(f, attrs: dict, path: Path, train: Ids, test: Ids) -> dict[str, Any]:
    from datasets import Dataset, Features, Value

    feats = Features({"source": Value("string"), "target": Value("string"), "group": Value("string"),
                      "file_id": Value("int64")})

    def make(ids):
        src = [non_empty(as_str(entry(f, "X", i, path), f"X/{i}", path), f"X/{i}", path) for i in ids]
        tgt = [non_empty(as_str(entry(f, "Y", i, path), f"Y/{i}", path), f"Y/{i}", path) for i in ids]
        return Dataset.from_dict({"source": src, "target": tgt, "group": [None] * len(src),
                                  "file_id": ids.tolist()}, features=feats)

    return {"train": make(train), "test": make(test)}


BUILDERS = {"tc": _tc, "st": _st, "qa": _qa, "s2s": _s2s}


# --------------------------------------------------------------------------- writing
def _write_tc(f, ds, ids: Ids, attrs: dict) -> None:
    names = ds.features["label"].names
    attrs["label_vocab"] = {n: i for i, n in enumerate(names)}
    attrs["num_labels"] = len(names)
    for i, text, label in zip(ids.tolist(), ds.data.column("text").to_pylist(), ds.data.column("label").to_pylist()):
        f[f"X/{i}"] = text
        f[f"Y/{i}"] = names[label]


def _write_st(f, ds, ids: Ids, attrs: dict) -> None:
    import h5py

    utf8 = h5py.string_dtype("utf-8", None)
    names = ds.features["tags"].feature.names
    attrs["label_vocab"] = {n: i for i, n in enumerate(names)}
    attrs["num_labels"] = len(names)
    for i, words, tags in zip(ids.tolist(), ds.data.column("words").to_pylist(), ds.data.column("tags").to_pylist()):
        f[f"X/{i}"] = np.array(words, dtype=utf8)
        f[f"Y/{i}"] = np.array([names[t] for t in tags], dtype=utf8)


def _write_qa(f, ds, ids: Ids, attrs: dict) -> None:
    cols = {c: ds.data.column(c).to_pylist() for c in ("id", "question", "context", "answer_starts", "answer_texts")}
    for n, i in enumerate(ids.tolist()):
        start, text = cols["answer_starts"][n][0], cols["answer_texts"][n][0]  # FedNLP keeps one answer
        f[f"context_X/{i}"] = cols["context"][n]
        f[f"question_X/{i}"] = cols["question"][n]
        f[f"Y/{i}"] = (start, start + len(text))
        f[f"question_ids/{i}"] = cols["id"][n]


def _write_s2s(f, ds, ids: Ids, attrs: dict) -> None:
    for i, src, tgt in zip(ids.tolist(), ds.data.column("source").to_pylist(), ds.data.column("target").to_pylist()):
        f[f"X/{i}"] = src
        f[f"Y/{i}"] = tgt


WRITERS = {"tc": _write_tc, "st": _write_st, "qa": _write_qa, "s2s": _write_s2s}
