"""Sequence tagging (FedNLP's WikiNER/OntoNotes NER formulation) with a token-classification head.

Offline datasets (silver NER, see :mod:`tasks.ner_silver`; built on first use
and cached as Arrow; split by article so no article feeds both splits):

* ``news`` (default) - 200 BBC + 200 NewsArticles articles (fixed seeded
  subset, ~7k sentences, ~30 s to tag on 2 CPU cores); group = BBC topic or
  outlet (14 natural clients).
* ``bbc`` / ``newsarticles`` - 400 articles of one corpus (group = topic / outlet).
* ``news_full`` / ``bbc_full`` / ``newsarticles_full`` - every article (~100k
  sentences for ``news_full``; tagging takes several minutes, once).
* a CoNLL file (``token ... tag`` per line, blank line between sentences,
  ``-DOCSTART-`` starts a document; group = document) or a directory with
  ``train.*`` and ``test.*`` (or ``dev.*``) CoNLL files.
* ``hf:<id>[:<config>]`` or ``conll2003`` / ``wikiner`` / ``wikiann``: a hub
  dataset with ``tokens`` and ``ner_tags`` (ClassLabel) columns, for users with internet.

Canonical columns: ``words`` (list of str), ``tags`` (list of ClassLabel BIO
tags), ``group``, ``doc``. Labels go on the first sub-token of each word
(fast tokenizer ``word_ids``), -100 elsewhere. Metric: entity-level micro F1
(primary ``f1``), precision and recall with seqeval (the CoNLL-2000 chunk
scorer, Tjong Kim Sang and Buchholz 2000). The label a ``dirichlet_label``
partitioner sees is the sorted set of entity types of a sentence (``GPE|ORG``;
``O`` without entities), as in FedNLP (Lin et al. 2022).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from fednlp_bench.batching import Ragged, TokenizedData
from fednlp_bench.tasks import ner_silver, news_corpora
from fednlp_bench.tasks.base import DatasetError, TaskAdapter, cached_dataset_dict, fingerprint
from fednlp_bench.tasks.splits import split_rows
from fednlp_bench.tasks.user_files import need_rows, read_utf8

log = logging.getLogger(__name__)

# dataset name -> (news corpus, articles per source corpus or None for all)
PACKAGED: dict[str, tuple[str, int | None]] = {
    "news": ("news", 200),
    "bbc": ("bbc", 400),
    "newsarticles": ("newsarticles", 400),
    "news_full": ("news", None),
    "bbc_full": ("bbc", None),
    "newsarticles_full": ("newsarticles", None),
}
HUB_ALIASES = {
    "conll2003": ("eriktks/conll2003", None),
    "wikiner": ("mnaguib/WikiNER", "en"),
    "wikiann": ("unimelb-nlp/wikiann", "en"),
}
_CACHE_VERSION = 1


# --------------------------------------------------------------------------- label alignment
def align_labels(word_ids: list[list[int | None]], word_tags: Ragged) -> tuple[Ragged, Ragged]:
    """Token labels (tag of the word on its first sub-token, -100 elsewhere) and, per row,
    the indices of the words that got a first sub-token (words cut by truncation are absent).

    ``word_ids`` is the fast tokenizer's ``word_ids()`` per row (``None`` for special tokens).
    """
    n = len(word_ids)
    tok_len = np.fromiter((len(w) for w in word_ids), dtype=np.int64, count=n)
    tok_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(tok_len, out=tok_off[1:])
    wid = np.fromiter((-1 if w is None else w for row in word_ids for w in row), dtype=np.int64,
                      count=int(tok_off[-1]))
    row_of_tok = np.repeat(np.arange(n), tok_len)
    prev = np.empty_like(wid)
    prev[:1] = -1
    prev[1:] = wid[:-1]
    prev[tok_off[:-1][tok_len > 0]] = -1  # a row never continues the previous row's word
    first = (wid >= 0) & (wid != prev)
    labels = np.full(len(wid), -100, dtype=np.int64)
    labels[first] = word_tags.values[word_tags.offsets[row_of_tok[first]] + wid[first]]
    n_first = np.bincount(row_of_tok[first], minlength=n)
    first_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_first, out=first_off[1:])
    return Ragged(labels, tok_off), Ragged(wid[first].astype(np.int32), first_off)


# --------------------------------------------------------------------------- metric
def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Entity-level micro precision, recall and F1 (seqeval, CoNLL chunk rules)."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    if not gold:
        return {"f1": float("nan"), "precision": float("nan"), "recall": float("nan")}
    return {
        "f1": float(f1_score(gold, pred, zero_division=0)),
        "precision": float(precision_score(gold, pred, zero_division=0)),
        "recall": float(recall_score(gold, pred, zero_division=0)),
    }


def entity_type_sets(tag_ids: Ragged, names: list[str]) -> np.ndarray:
    """Per row, the sorted entity types of its tags joined by ``|`` (``O`` if none), vectorised."""
    type_of = [n[2:] if len(n) > 2 and n[1] == "-" else None for n in names]
    types = sorted({t for t in type_of if t is not None})
    if len(types) > 62:
        raise DatasetError(f"too many entity types ({len(types)}) for the partition label")
    type_index = {t: i for i, t in enumerate(types)}
    bit_of_tag = np.array([0 if t is None else 1 << type_index[t] for t in type_of], dtype=np.int64)
    masks = np.zeros(len(tag_ids), dtype=np.int64)
    rows = np.repeat(np.arange(len(tag_ids)), tag_ids.lengths)
    np.bitwise_or.at(masks, rows, bit_of_tag[tag_ids.values])
    uniq, inverse = np.unique(masks, return_inverse=True)
    label_of = np.array(["|".join(t for i, t in enumerate(types) if m >> i & 1) or "O" for m in uniq.tolist()])
    return label_of[inverse]


# --------------------------------------------------------------------------- CoNLL files
def read_conll(path: Path) -> tuple[list[list[str]], list[list[str]], list[str]]:
    """Sentences of a CoNLL file: words, tags (last column) and document id per sentence."""
    words, tags, docs = [], [], []
    cur_w: list[str] = []
    cur_t: list[str] = []
    doc = 0

    def flush() -> None:
        if cur_w:
            words.append(list(cur_w))
            tags.append(list(cur_t))
            docs.append(f"doc{doc}")
            cur_w.clear()
            cur_t.clear()

    for n, line in enumerate(read_utf8(path).split("\n"), 1):
        parts = line.split()
        if not parts:
            flush()
            continue
        if parts[0] == "-DOCSTART-":
            flush()
            doc += 1
            continue
        if len(parts) < 2:
            raise DatasetError(f"{path}:{n}: expected 'token ... tag', got {line.strip()!r}")
        tag = parts[-1]
        if tag != "O" and not (tag[:2] in ("B-", "I-", "E-", "S-") and len(tag) > 2):
            raise DatasetError(f"{path}:{n}: tag {tag!r} is not O or B-/I-/E-/S-<TYPE>")
        cur_w.append(parts[0])
        cur_t.append(tag)
    flush()
    if not words:
        raise DatasetError(f"CoNLL file '{path}' has no sentences")
    if all(t == "O" for row in tags for t in row):
        raise DatasetError(f"CoNLL file '{path}': every tag is O; tagging needs entity tags (B-/I-/E-/S-<TYPE>)")
    return words, tags, docs


def _tag_order(tags: list[str]) -> list[str]:
    """``O`` first, then tags grouped by type (B before I)."""
    rest = sorted(set(tags) - {"O"}, key=lambda t: (t[2:], t[:2]))
    return ["O"] + rest


class SequenceTagging(TaskAdapter):
    name = "st"
    primary_metric = "f1"
    head_modules = ("classifier",)
    default_dataset = "news"
    packaged = PACKAGED
    hub_aliases = HUB_ALIASES
    dataset_kind = "sequence-tagging"
    packaged_note = "offline, silver NER"
    files_note = "a CoNLL file or directory"
    capabilities = frozenset({"example_loss", "confidence", "encode_texts", "canary_rows", "word_tags", "encoder",
                              "counterfactual_copies"})

    def __init__(self) -> None:
        self._tag_names: list[str] | None = None  # set by featurize(); encode_texts() needs the tag vocabulary

    # --- loading --------------------------------------------------------------
    def _silver(self, dataset: str):
        """The tagged sentences of a packaged dataset (one split 'all'), built once and cached."""
        corpus, per_corpus = PACKAGED[dataset]
        key = f"st-silver-{dataset}-{fingerprint(per_corpus, ner_silver.SPACY_MODEL, _CACHE_VERSION)}"

        def build():
            from datasets import DatasetDict

            articles = news_corpora.seeded_subset(news_corpora.load_articles(corpus), per_corpus)
            log.info("st: tagging %d articles with %s (once, then cached)", len(articles), ner_silver.SPACY_MODEL)
            words, tags, groups, docs = [], [], [], []
            for art, sents in zip(articles, ner_silver.annotate_sentences([a.body for a in articles])):
                for w, t in sents:
                    words.append(w)
                    tags.append(t)
                    groups.append(art.group)
                    docs.append(art.doc)
            names = ner_silver.bio_tag_names()
            return DatasetDict(all=self._dataset(words, tags, groups, docs, names))

        return cached_dataset_dict(key, build)["all"]

    def _load_packaged(self, dataset: str, split_seed: int, test_fraction: float):
        key = f"st-{dataset}-{fingerprint(split_seed, test_fraction, ner_silver.SPACY_MODEL, _CACHE_VERSION)}"

        def build():
            from datasets import DatasetDict

            ds = self._silver(dataset)
            train, test = split_rows(len(ds), split_seed, test_fraction, ds.data.column("doc").to_pylist())
            return DatasetDict(train=ds.select(train).flatten_indices(), test=ds.select(test).flatten_indices())

        return cached_dataset_dict(key, build)

    @staticmethod
    def _dataset(words, tags, groups, docs, names):
        from datasets import ClassLabel, Dataset, Features, Sequence, Value

        index = {n: i for i, n in enumerate(names)}
        feats = {"words": Sequence(Value("string")), "tags": Sequence(ClassLabel(names=names))}
        cols = {"words": words, "tags": [[index[t] for t in row] for row in tags]}
        if groups is not None:
            feats.update(group=Value("string"), doc=Value("string"))
            cols.update(group=groups, doc=docs)
        return Dataset.from_dict(cols, features=Features(feats))

    def _load_files(self, path: Path, split_seed: int, test_fraction: float):
        from datasets import DatasetDict

        if path.is_dir():
            train_f = sorted(path.glob("train.*"))
            test_f = sorted(path.glob("test.*")) or sorted(path.glob("dev.*"))
            if not train_f or not test_f:
                raise DatasetError(f"CoNLL directory '{path}' needs train.* and test.* (or dev.*) files")
            tr, te = read_conll(train_f[0]), read_conll(test_f[0])
            names = _tag_order([t for row in tr[1] + te[1] for t in row])
            return DatasetDict(train=self._dataset(*tr, tr[2], names), test=self._dataset(*te, te[2], names))
        words, tags, docs = read_conll(path)
        need_rows(len(words), path)
        names = _tag_order([t for row in tags for t in row])
        ds = self._dataset(words, tags, docs, docs, names)
        train, test = split_rows(len(ds), split_seed, test_fraction, docs if len(set(docs)) > 4 else None)
        return DatasetDict(train=ds.select(train).flatten_indices(), test=ds.select(test).flatten_indices())

    def _load_hub(self, dataset: str, split_seed: int, test_fraction: float):
        from datasets import ClassLabel, DatasetDict

        hub_id, raw = self._hub_dataset(dataset)
        cols = raw["train"].column_names
        if "tokens" not in cols or "ner_tags" not in cols:
            raise DatasetError(f"hub dataset '{hub_id}' needs 'tokens' and 'ner_tags' columns, has {cols}")
        feat = raw["train"].features["ner_tags"]
        inner = getattr(feat, "feature", None)
        if not isinstance(inner, ClassLabel):
            raise DatasetError(f"hub dataset '{hub_id}': 'ner_tags' must be a sequence of ClassLabel (tag names)")
        names = list(inner.names)
        test_split = "test" if "test" in raw else "validation"

        def convert(split):
            return self._dataset(split["tokens"], [[names[i] for i in r] for r in split["ner_tags"]], None, None, names)

        return DatasetDict(train=convert(raw["train"]), test=convert(raw[test_split]))

    # --- partition views ---------------------------------------------------------
    def label_for_partition(self, ds) -> np.ndarray:
        return entity_type_sets(_ragged_column(ds, "tags"), self.info(ds)["label_names"])

    def texts_for_embedding(self, ds) -> list[str]:
        return [" ".join(w) for w in ds.data.column("words").to_pylist()]

    def info(self, ds) -> dict:
        return {"label_names": list(ds.features["tags"].feature.names)}

    # --- features -------------------------------------------------------------
    def featurize(self, ds, tokenizer, max_len: int, key: str) -> TokenizedData:
        self._tag_names = self.info(ds)["label_names"]
        return super().featurize(ds, tokenizer, max_len, key)

    def _featurize(self, ds, tokenizer, max_len: int) -> TokenizedData:
        return self._encode_words(ds.data.column("words").to_pylist(), _ragged_column(ds, "tags"), tokenizer,
                                  max_len, self.info(ds)["label_names"])

    def _encode_words(self, words: list[list[str]], word_tags: Ragged, tokenizer, max_len: int,
                      names: list[str]) -> TokenizedData:
        if not getattr(tokenizer, "is_fast", False):
            raise DatasetError("sequence tagging needs a fast tokenizer (word_ids) for label alignment")
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_len)
        labels, label_words = align_labels([enc.word_ids(i) for i in range(len(words))], word_tags)
        return TokenizedData(
            ragged={
                "input_ids": Ragged.from_lists(enc["input_ids"]),
                "labels": labels,
                "label_words": label_words,
                "word_tags": word_tags,
            },
            # not per row: the tag vocabulary, so that score() needs no other state
            columns={"tag_names": np.array(names, dtype=np.str_)},
        )

    def _names(self) -> list[str]:
        if self._tag_names is None:
            raise RuntimeError("sequence tagging encode_texts() needs featurize() to have been called (tag names)")
        return self._tag_names

    def encode_texts(self, texts: list[str], labels, tokenizer, max_len: int) -> TokenizedData:
        """White-space words of each text, every word tagged ``labels[i]`` (a tag id; ``None``: all ``O``)."""
        words = [t.split() for t in texts]
        tags = [[0 if labels is None else int(labels[i])] * len(w) for i, w in enumerate(words)]
        return self._encode_words(words, Ragged.from_lists(tags), tokenizer, max_len, self._names())

    def encode_canaries(self, prefixes: list[str], secrets: list[str], labels, tokenizer,
                        max_len: int) -> TokenizedData:
        """Prefix words tagged ``O``, the secret's words ``B-``/``I-CARDINAL`` when the tag set has them
        (a number, as OntoNotes tags it), else ``O``."""
        names = self._names()
        b, i = (names.index(t) if t in names else 0 for t in ("B-CARDINAL", "I-CARDINAL"))
        words, tags = [], []
        for p, sec in zip(prefixes, secrets):
            pw, sw = p.split(), sec.split()
            words.append(pw + sw)
            tags.append([0] * len(pw) + [b] + [i] * (len(sw) - 1))
        return self._encode_words(words, Ragged.from_lists(tags), tokenizer, max_len, names)

    def counterfactual_copies(self, ds, rows: np.ndarray, tokenizer, max_len: int, swap):
        """Sentences whose words ``swap`` changes (word by word, so tags stay aligned), same tags."""
        words = ds.data.column("words").to_pylist()
        tags = _ragged_column(ds, "tags")
        new, new_tags, src = [], [], []
        for r in np.asarray(rows).tolist():
            swapped = [swap(w) for w in words[r]]
            if any(n for _, n in swapped):
                new.append([w for w, _ in swapped])
                new_tags.append(tags.get(r).tolist())
                src.append(r)
        data = self._encode_words(new, Ragged.from_lists(new_tags), tokenizer, max_len, self._names())
        return data, np.asarray(src, dtype=np.int64)

    def collate(self, data: TokenizedData, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        ids, mask = data.ragged["input_ids"].pad_with_mask(rows, pad_id)
        labels = data.ragged["labels"].pad(rows, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.from_numpy(labels.astype(np.int64))}

    # --- model and metrics ----------------------------------------------------
    def build_model(self, model_path: str, data_info: dict) -> torch.nn.Module:
        from transformers import AutoModelForTokenClassification

        return self.labelled_head(AutoModelForTokenClassification, model_path, data_info["label_names"])

    def predict_batch(self, model, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """Predicted tag id of each word that has a first sub-token, in word order."""
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        pred = model(**inputs).logits.argmax(-1)
        keep = (labels != -100).cpu().numpy()
        pred = pred.cpu().numpy()
        return [p[k] for p, k in zip(pred, keep)]

    def score(self, predictions, data: TokenizedData, rows: np.ndarray) -> dict[str, float]:
        names = data.columns["tag_names"].tolist()
        o_id = names.index("O")
        word_tags, label_words = data.ragged["word_tags"], data.ragged["label_words"]
        gold, pred = [], []
        for r in np.asarray(rows).tolist():
            g = word_tags.get(r)
            p = np.full(len(g), o_id, dtype=np.int64)  # words cut by truncation count as O
            p[label_words.get(r)] = predictions[r]
            gold.append([names[i] for i in g])
            pred.append([names[i] for i in p])
        return entity_scores(gold, pred)


def _ragged_column(ds, column: str) -> Ragged:
    """A list column of a Dataset as a :class:`Ragged` (straight from Arrow, no Python rows)."""
    col = ds.data.column(column).combine_chunks()
    offsets = col.offsets.to_numpy().astype(np.int64)
    values = col.values.to_numpy(zero_copy_only=False)
    return Ragged(values[offsets[0]:offsets[-1]].astype(np.int32), offsets - offsets[0])
