"""Small FedNLP data and partition files, written with h5py alone in FedNLP's layout.

Independent of fednlp-bench's own readers and writers on purpose: the layout follows what
FedNLP's raw data loaders (``data/raw_data_loader/*``) and partition scripts
(``data/advanced_partition/niid_label.py``, ``uniform``) write, so that tests check our
reader against FedNLP's format rather than against our own writer:

* data file: ``attributes`` (a JSON string dataset), then per task ``X/<id>``/``Y/<id>``
  (text classification and seq2seq: plain strings; sequence tagging: UTF-8 string arrays) or
  ``context_X``/``question_X``/``Y`` = (start, end)/``question_ids`` (span extraction).
  WikiNER-like files have no train/test lists (FedNLP splits ``index_list`` 90/10), and
  FedNLP's seq2seq loader writes no ``task_type``.
* partition file: ``/niid_label_clients=<K>_alpha=<a:.1f>/{n_clients, alpha}`` and
  ``partition_data/<c>/{train,test}``; train entries are positions in the train list and
  test entries positions in the test list plus the number of train examples.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

TOPICS = {
    "sport": "the team won the match after a late goal and the coach praised the players",
    "politics": "the minister told parliament the new bill would change tax rules next year",
    "tech": "the company released a faster phone chip and new software for its computers",
}


def write_tc(path: Path, n: int = 90, n_test: int = 30) -> tuple[list[int], list[int], list[str]]:
    """A 20news-like data file: ids 0..n-1 train, then n_test test ids. Returns (train, test, labels)."""
    names = sorted(TOPICS)
    labels = [names[i % 3] for i in range(n + n_test)]
    train, test = list(range(n)), list(range(n, n + n_test))
    attrs = {"index_list": train + test, "train_index_list": train, "test_index_list": test,
             "num_labels": 3, "label_vocab": {k: i for i, k in enumerate(names)},
             "task_type": "text_classification"}
    with h5py.File(path, "w") as f:
        f["attributes"] = json.dumps(attrs)
        for i, label in enumerate(labels):
            f["X/" + str(i)] = f"story {i}: {TOPICS[label]} (report number {i * 7 % 13})"
            f["Y/" + str(i)] = label
    return train, test, labels


def write_st(path: Path, n: int = 40) -> None:
    """A WikiNER-like file: token and tag arrays, no train/test lists (FedNLP splits 90/10)."""
    utf8 = h5py.string_dtype("utf-8", None)
    people, places = ["Anna", "Bruno", "Chen", "Dalia"], ["Paris", "Lagos", "Lima", "Oslo"]
    with h5py.File(path, "w") as f:
        f["attributes"] = json.dumps({"index_list": list(range(n)), "num_labels": 5, "task_type": "seq_tagging",
                                      "label_vocab": {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}})
        for i in range(n):
            words = [people[i % 4], "Smith", "visited", places[i % 4], "in", "spring", "."]
            tags = ["B-PER", "I-PER", "O", "B-LOC", "O", "O", "O"]
            f["X/" + str(i)] = np.array(words, dtype=utf8)
            f["Y/" + str(i)] = np.array(tags, dtype=utf8)


def write_qa(path: Path, n: int = 30, n_test: int = 10) -> None:
    """A SQuAD-1.1-like file: context, question, (start, end) answer span, question ids, doc_index."""
    cities = ["Paris", "Lagos", "Lima", "Oslo", "Quito"]
    train, test = list(range(n)), list(range(n, n + n_test))
    with h5py.File(path, "w") as f:
        doc_index = {}
        for i in train + test:
            city = cities[i % 5]
            context = f"In year {1900 + i} the fair opened in {city}. Crowds came from far away."
            start = context.index(city)
            f["context_X/" + str(i)] = context
            f["question_X/" + str(i)] = f"Where did the fair open in {1900 + i}?"
            f["Y/" + str(i)] = (start, start + len(city))
            f["question_ids/" + str(i)] = f"q{i:04d}"
            doc_index[i] = i % 4
        f["attributes"] = json.dumps({"index_list": train + test, "train_index_list": train,
                                      "test_index_list": test, "doc_index": doc_index,
                                      "task_type": "span_extraction"})


def write_s2s(path: Path, n: int = 30, n_test: int = 10) -> None:
    """A CNN/DailyMail-like file: X article, Y summary; attributes without task_type."""
    with h5py.File(path, "w") as f:
        f["attributes"] = json.dumps({"index_list": list(range(n + n_test)), "train_index_list": list(range(n)),
                                      "test_index_list": list(range(n, n + n_test))})
        for i in range(n + n_test):
            topic = sorted(TOPICS)[i % 3]
            f["X/" + str(i)] = f"Article {i}. {TOPICS[topic]}. More details followed later in the day."
            f["Y/" + str(i)] = f"<s> {topic} news {i} </s>"


def dirichlet_clients(labels: list[str], n_clients: int, alpha: float, seed: int) -> list[list[int]]:
    """Positions per client: each class's positions split by a Dirichlet(alpha) draw (Hsu et al. 2019)."""
    rng = np.random.default_rng(seed)
    clients: list[list[int]] = [[] for _ in range(n_clients)]
    labels_arr = np.asarray(labels)
    for label in sorted(set(labels)):
        pos = rng.permutation(np.flatnonzero(labels_arr == label))
        cuts = (np.cumsum(rng.dirichlet([alpha] * n_clients))[:-1] * len(pos)).astype(int)
        for c, chunk in enumerate(np.split(pos, cuts)):
            clients[c].extend(int(p) for p in chunk)
    return clients


def write_label_partition(path: Path, train_labels: list[str], test_labels: list[str], n_clients: int,
                          alpha: float, seed: int = 0) -> str:
    """A niid_label partition the way FedNLP's niid_label.py stores it; returns the key."""
    key = "niid_label_clients=%d_alpha=%.1f" % (n_clients, alpha)
    train = dirichlet_clients(train_labels, n_clients, alpha, seed)
    test = dirichlet_clients(test_labels, n_clients, alpha, seed + 1)
    with h5py.File(path, "a") as f:
        f["/" + key + "/n_clients"] = n_clients
        f["/" + key + "/alpha"] = alpha
        for c in range(n_clients):
            f["/" + key + "/partition_data/" + str(c) + "/train/"] = train[c]
            f["/" + key + "/partition_data/" + str(c) + "/test/"] = [p + len(train_labels) for p in test[c]]
    return key


def write_uniform_partition(path: Path, n_train: int, n_test: int, n_clients: int, seed: int = 0,
                            train_ids: list[int] | None = None, test_ids: list[int] | None = None) -> str:
    """FedNLP's ``uniform`` key: shuffled ids dealt in ceil(n / K) blocks."""
    rng = np.random.default_rng(seed)
    train = rng.permutation(train_ids if train_ids is not None else np.arange(n_train)).tolist()
    test = rng.permutation(test_ids if test_ids is not None else n_train + np.arange(n_test)).tolist()
    bt, bs = -(-len(train) // n_clients), -(-len(test) // n_clients)
    with h5py.File(path, "a") as f:
        f["/uniform/n_clients"] = n_clients
        for c in range(n_clients):
            f["/uniform/partition_data/" + str(c) + "/train/"] = train[c * bt:(c + 1) * bt]
            f["/uniform/partition_data/" + str(c) + "/test/"] = test[c * bs:(c + 1) * bs]
    return "uniform"
