"""Next-word prediction (the Stack Overflow NWP formulation of TFF and FedJAX) with a causal MiniLM.

Every row is one document (a sentence, a snippet, a tweet) cut to ``data.max_len``
tokens; the model predicts each next token from the ones before it
(:mod:`tasks.causal_lm`: MiniLM run as a BERT decoder, as BERT2BERT's decoder is
built, with an output layer over a shortlist of the training split's most frequent
tokens plus an out-of-vocabulary class).

Offline datasets (:mod:`tasks.lm_corpora`): ``commons`` (default; House of
Commons sentences, natural client = speaker, 596 clients of 1-248 sentences),
``rotten_tomatoes`` (client = movie), ``healthtweets`` (client = agency); or a
user's file: ``.txt`` (one document per line), ``.tsv`` (``client<TAB>text``),
``.csv``/``.jsonl`` (``text`` and optional ``client``), or a directory with
``train.*`` and ``test.*``. ``hf:<id>[:<config>]`` loads a hub dataset with a
``text`` column (internet).

Metrics over the target tokens, padding excluded (every position whose next
token is a real token, the final [SEP] = end of sentence included), as in the
Stack Overflow NWP benchmark: ``accuracy`` (primary; top-1, a target outside
the shortlist counts as the out-of-vocabulary class), ``perplexity`` =
``exp(loss)`` with ``loss`` the mean token negative log-likelihood, and
``accuracy_no_oov_no_eos`` (targets that are neither out of vocabulary nor the
end of sentence; predicting OOV is wrong), TFF's headline accuracy.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from fednlp_bench.batching import Ragged, TokenizedData
from fednlp_bench.tasks import causal_lm, lm_corpora
from fednlp_bench.tasks.base import DatasetError, TaskAdapter, cached_dataset_dict, fingerprint, swapped_texts
from fednlp_bench.tasks.splits import split_rows

log = logging.getLogger(__name__)

SHORTLIST = 5000  # output classes besides OOV: ~97% of the commons tokens (docs/tasks.md)
ALWAYS_IN_VOCAB = tuple("0123456789")  # digits are always predictable (numbers; canary secrets)
_CACHE_VERSION = 1
# per-row evaluation statistics returned by predict_batch, summed by score()
_STATS = ("nll", "tokens", "correct", "tokens_iv", "correct_iv")


class LanguageModeling(TaskAdapter):
    name = "lm"
    primary_metric = "accuracy"
    default_dataset = "commons"
    packaged = lm_corpora.PACKAGED
    hub_aliases = {}
    dataset_kind = "language-modelling"
    packaged_note = "offline"
    files_note = "a .txt/.tsv/.csv/.jsonl file or directory"
    capabilities = frozenset({"example_loss", "confidence", "encode_texts", "canary_rows", "sequence_logprob",
                              "next_token_logits", "encoder", "counterfactual_copies"})

    def __init__(self) -> None:
        self._tokenizer = None  # set by featurize(); info() builds the shortlist with it
        self._vocab: dict[tuple, dict] = {}

    # --- loading --------------------------------------------------------------
    def _load_packaged(self, dataset: str, split_seed: int, test_fraction: float):
        key = f"lm-{dataset}-{fingerprint(split_seed, test_fraction, _CACHE_VERSION)}"
        return cached_dataset_dict(key, lambda: self._split(*self.packaged[dataset](), split_seed, test_fraction))

    def _split(self, texts, groups, split_seed: int, test_fraction: float, test=None):
        from datasets import DatasetDict

        if test is not None:
            return DatasetDict(train=_dataset(texts, groups), test=_dataset(*test))
        tr, te = split_rows(len(texts), split_seed, test_fraction)
        pick = lambda seq, idx: None if seq is None else [seq[i] for i in idx]  # noqa: E731
        return DatasetDict(train=_dataset(pick(texts, tr), pick(groups, tr)),
                           test=_dataset(pick(texts, te), pick(groups, te)))

    def _load_files(self, path: Path, split_seed: int, test_fraction: float):
        if path.is_dir():
            found = {s: sorted(p for p in path.glob(f"{s}.*") if p.is_file()) for s in ("train", "test")}
            if not found["train"] or not found["test"]:
                raise DatasetError(f"text directory '{path}' needs train.* and test.* files "
                                   f"(.txt, .tsv, .csv or .jsonl)")
            tr, te = lm_corpora.read_documents(found["train"][0]), lm_corpora.read_documents(found["test"][0])
            if (tr[1] is None) != (te[1] is None):
                raise DatasetError(f"text directory '{path}': train and test must both have clients or neither")
            return self._split(*tr, split_seed, test_fraction, test=te)
        return self._split(*lm_corpora.read_documents(path), split_seed, test_fraction)

    def _load_hub(self, dataset: str, split_seed: int, test_fraction: float):
        hub_id, raw = self._hub_dataset(dataset)
        if "text" not in raw["train"].column_names:
            raise DatasetError(f"hub dataset '{hub_id}' needs a 'text' column, has {raw['train'].column_names}")
        test_split = next((s for s in ("test", "validation") if s in raw), None)
        texts = [str(t) for t in raw["train"]["text"] if str(t).strip()]
        if test_split is None:
            return self._split(texts, None, split_seed, test_fraction)
        return self._split(texts, None, 0, 0.0, test=([str(t) for t in raw[test_split]["text"] if str(t).strip()],
                                                       None))

    # --- partition views ---------------------------------------------------------
    def label_for_partition(self, ds) -> np.ndarray:
        """No class label: label skew sees the natural client (speaker, movie, agency), like s2s."""
        groups = self.groups_for_partition(ds)
        return groups if groups is not None else np.zeros(len(ds), dtype=np.int64)

    def validation_rows(self, ds, fraction: float, seed: int, limit: int | None = None) -> np.ndarray:
        """A seeded uniform sample of documents, drawn as the test split is (``tasks.splits.split_rows``),
        so validation estimates what the test split measures.

        Not stratified by speaker (the base class's default): with ~600 speakers of mostly a few
        sentences, largest-remainder stratification gives no row to any speaker whose share rounds
        down, and on ``commons`` drops every speaker with <= 3 sentences (6% of the documents).
        Sentences of one speaker may fall on both sides, as they do between train and test.
        """
        n = len(ds)
        size = min(int(round(fraction * n)), limit if limit is not None else n, n - 1)
        if size <= 0:
            return np.zeros(0, dtype=np.int64)
        rng = np.random.default_rng([seed, 0x7A1])
        return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)

    # --- features -------------------------------------------------------------
    def featurize(self, ds, tokenizer, max_len: int, key: str) -> TokenizedData:
        self._tokenizer = tokenizer
        return super().featurize(ds, tokenizer, max_len, key)

    def _featurize(self, ds, tokenizer, max_len: int) -> TokenizedData:
        return self.encode_texts(ds.data.column("text").to_pylist(), None, tokenizer, max_len)

    def encode_texts(self, texts: list[str], labels, tokenizer, max_len: int) -> TokenizedData:
        """Documents as rows ([CLS] text [SEP], cut to ``max_len``); ``labels`` are not used."""
        enc = tokenizer(list(texts), truncation=True, max_length=max_len)
        return TokenizedData(ragged={"input_ids": Ragged.from_lists(enc["input_ids"])})

    def collate(self, data: TokenizedData, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        ids, mask = data.ragged["input_ids"].pad_with_mask(rows, pad_id)
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, causal_lm.IGNORE)}

    def info(self, ds) -> dict:
        """The output shortlist: the ``SHORTLIST`` most frequent target tokens of ``ds`` (plus digits)."""
        if self._tokenizer is None:
            raise RuntimeError("lm info() needs featurize() to have been called (it keeps the tokenizer)")
        key = (getattr(ds, "_fingerprint", None), len(ds), getattr(self._tokenizer, "name_or_path", ""))
        if key not in self._vocab:
            self._vocab[key] = shortlist(ds.data.column("text").to_pylist(), self._tokenizer, SHORTLIST)
        return self._vocab[key]

    # --- model and metrics ----------------------------------------------------
    def build_model(self, model_path: str, data_info: dict) -> torch.nn.Module:
        return causal_lm.build(model_path, data_info["vocab_ids"], data_info["counts"], data_info["oov_token"])

    def _token_stats(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 5) per-row sums: nll, target tokens, correct, in-vocabulary non-EOS targets, correct among them."""
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        targets = model.next_classes(batch["labels"])
        valid = targets != causal_lm.IGNORE
        pred = out.logits.argmax(-1)
        nll = causal_lm.token_nll(out.logits, targets)
        last = batch["attention_mask"].sum(1, keepdim=True) - 2  # the position that predicts [SEP]
        is_eos = torch.arange(targets.shape[1], device=targets.device)[None, :] == last
        iv = valid & (targets != model.oov_class) & ~is_eos
        hit = (pred == targets) & valid
        return torch.stack([nll.sum(1), valid.sum(1), hit.sum(1), iv.sum(1), (hit & iv).sum(1)], 1).double()

    def predict_batch(self, model, batch: dict[str, torch.Tensor]) -> np.ndarray:
        return self._token_stats(model, batch).cpu().numpy()

    def score(self, predictions, data: TokenizedData, rows: np.ndarray) -> dict[str, float]:
        if len(rows) == 0:
            return {"accuracy": float("nan"), "perplexity": float("nan"), "loss": float("nan"),
                    "accuracy_no_oov_no_eos": float("nan")}
        s = dict(zip(_STATS, np.sum([predictions[int(r)] for r in rows], axis=0)))
        loss = s["nll"] / max(s["tokens"], 1)
        return {"accuracy": float(s["correct"] / max(s["tokens"], 1)), "perplexity": float(np.exp(loss)),
                "loss": float(loss), "accuracy_no_oov_no_eos": float(s["correct_iv"] / max(s["tokens_iv"], 1))}

    # --- capabilities ------------------------------------------------------------
    def per_example_loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token negative log-likelihood of each row (the loss DP-SGD clips per example)."""
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        targets = model.next_classes(batch["labels"])
        n = (targets != causal_lm.IGNORE).sum(1).clamp(min=1)
        return causal_lm.token_nll(out.logits, targets).sum(1) / n

    def sequence_logprobs(self, model, data: TokenizedData, rows: np.ndarray, batch_size: int, pad_id: int,
                          device) -> np.ndarray:
        """Total log-likelihood of each row (sum over its target tokens)."""
        def fn(m, batch):
            out = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            return -causal_lm.token_nll(out.logits, m.next_classes(batch["labels"])).sum(1)

        return self.map_rows(model, data, rows, batch_size, pad_id, device, fn)

    def next_token_logits(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (B, tokenizer vocabulary) of the token after each right-padded sequence;
        tokens outside the shortlist get -inf (the model cannot name them)."""
        logp = torch.log_softmax(model(input_ids=input_ids, attention_mask=attention_mask).logits.float(), -1)
        last = logp[torch.arange(len(input_ids), device=input_ids.device), attention_mask.sum(1) - 1]
        full = torch.full((len(input_ids), model.to_class.numel()), float("-inf"), device=last.device)
        full[:, model.class_tokens] = last[:, :-1]
        return full

    def encoder(self, model) -> torch.nn.Module:
        return model.decoder

    def counterfactual_copies(self, ds, rows: np.ndarray, tokenizer, max_len: int, swap):
        """Rows whose text ``swap`` changes, rewritten; returns (TokenizedData, their source rows)."""
        new, src = swapped_texts(ds, rows, swap)
        return self.encode_texts(new, None, tokenizer, max_len), src


def shortlist(texts: list[str], tokenizer, size: int) -> dict:
    """``{"vocab_ids", "counts", "oov_token"}``: the ``size`` most frequent target tokens of ``texts`` (every
    token but the leading [CLS]; ties broken by token id) plus the digits, their counts and the OOV count last."""
    ids = tokenizer(list(texts), truncation=False)["input_ids"]
    counts = Counter(t for row in ids for t in row[1:])
    ranked = sorted(counts, key=lambda t: (-counts[t], t))[:size]
    digits = [t for t in tokenizer.convert_tokens_to_ids(list(ALWAYS_IN_VOCAB)) if t != tokenizer.unk_token_id]
    vocab = ranked + [t for t in digits if t not in set(ranked)]
    total = sum(counts.values())
    in_vocab = [counts.get(t, 0) for t in vocab]
    oov = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    return {"vocab_ids": [int(t) for t in vocab], "counts": in_vocab + [total - sum(in_vocab)],
            "oov_token": int(oov)}


def _dataset(texts, groups):
    from datasets import Dataset, Features, Value

    if not texts:
        raise DatasetError("language-modelling dataset has no documents")
    if groups is None:
        return Dataset.from_dict({"text": list(texts)}, features=Features({"text": Value("string")}))
    features = Features({"text": Value("string"), "group": Value("string")})
    return Dataset.from_dict({"text": list(texts), "group": list(groups)}, features=features)
