"""Seq2seq (FedNLP's Gigaword/CNN-DailyMail summarisation formulation) as headline generation.

Offline datasets (docs/data.md; the article body is the source, its
headline the target, as in Gigaword headline generation, Rush et al. 2015):

* ``news`` (default) - BBC News and NewsArticles, ~5.9k pairs; group = BBC
  topic or outlet (14 natural clients).
* ``bbc`` (2,225 pairs, group = topic) / ``newsarticles`` (~3.7k pairs, group = outlet).
* a JSONL file with ``source`` and ``target`` (optional ``group``) per line,
  or a directory with ``train.jsonl`` and ``test.jsonl``.
* ``hf:<id>[:<config>]`` or ``gigaword`` / ``cnn_dailymail`` (for users with internet).

Model: any HF encoder-decoder (``config.is_encoder_decoder``, e.g.
``facebook/bart-base`` as FedNLP used), otherwise BERT2BERT warm-started
from the encoder checkpoint on both sides (Rothe et al. 2020,
``EncoderDecoderModel.from_encoder_decoder_pretrained``; decoder start =
[CLS], end = [SEP]). Sources are cut to ``max_len`` tokens, targets to
``MAX_TARGET_TOKENS``. Evaluation decodes greedily up to ``MAX_NEW_TOKENS``
without repeated trigrams and reports ROUGE-1/2/L F-measures (Lin 2004, ``rouge-score`` with the Porter
stemmer; primary ``rougeL``).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from fednlp_bench.batching import Ragged, TokenizedData
from fednlp_bench.tasks import news_corpora
from fednlp_bench.tasks.base import DatasetError, TaskAdapter, cached_dataset_dict, fingerprint

# EncoderDecoderModel warns on every training batch that it builds decoder inputs from the
# labels, which is exactly what we rely on; the message is noise in logs.
warnings.filterwarnings("ignore", message="Version v4.12.0 introduces a better way to train encoder-decoder",
                        category=FutureWarning)
from fednlp_bench.tasks.splits import split_rows
from fednlp_bench.tasks.text_arrays import ragged_str, strings_to_ragged
from fednlp_bench.tasks.user_files import iter_jsonl, need_rows, optional_groups, text_cell

log = logging.getLogger(__name__)

PACKAGED = {"news": "news", "bbc": "bbc", "newsarticles": "newsarticles"}
HUB_ALIASES = {
    "gigaword": ("Harvard/gigaword", None, "document", "summary"),
    "cnn_dailymail": ("abisee/cnn_dailymail", "3.0.0", "article", "highlights"),
}
MAX_TARGET_TOKENS = 32
MAX_NEW_TOKENS = 24
NO_REPEAT_NGRAM = 3  # greedy decoding of an undertrained decoder loops ("' s ' s ' s"); block repeated trigrams
_CACHE_VERSION = 1


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (rouge-score, Porter stemmer), as fractions in [0, 1]."""
    from rouge_score import rouge_scorer

    keys = ("rouge1", "rouge2", "rougeL")
    if not predictions:
        return {k: float("nan") for k in keys}
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
    totals = dict.fromkeys(keys, 0.0)
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)
        for k in keys:
            totals[k] += scores[k].fmeasure
    return {k: v / len(predictions) for k, v in totals.items()}


def target_ids(tokenizer, targets: list[str]) -> list[list[int]]:
    """Decoder labels: the tokenized target ending in EOS/[SEP]; a leading [CLS] is dropped when the
    tokenizer has no BOS (BERT2BERT starts decoding from [CLS], so it must not be predicted)."""
    enc = tokenizer(text_target=targets, truncation=True, max_length=MAX_TARGET_TOKENS + 1)
    ids = enc["input_ids"]
    cls = tokenizer.cls_token_id
    if tokenizer.bos_token_id is None and cls is not None:
        ids = [row[1:] if row and row[0] == cls else row for row in ids]
    return [row[:MAX_TARGET_TOKENS] for row in ids]


class Seq2Seq(TaskAdapter):
    name = "s2s"
    primary_metric = "rougeL"
    # BERT2BERT: the decoder's cross-attention and LM-head transform are new (random) weights
    head_modules = ("crossattention", "cls.predictions")
    default_dataset = "news"
    packaged = PACKAGED
    hub_aliases = HUB_ALIASES
    dataset_kind = "seq2seq"
    packaged_note = "offline, headlines"
    files_note = "a .jsonl file or directory with source/target"
    capabilities = frozenset({"example_loss", "confidence", "canary_rows", "encoder", "counterfactual_copies"})

    def __init__(self) -> None:
        self._tokenizer = None  # set by featurize(); predict() decodes with it

    # --- loading --------------------------------------------------------------
    def _load_packaged(self, dataset: str, split_seed: int, test_fraction: float):
        key = f"s2s-{dataset}-{fingerprint(split_seed, test_fraction, _CACHE_VERSION)}"
        return cached_dataset_dict(key, lambda: self._packaged(dataset, split_seed, test_fraction))

    def _packaged(self, dataset: str, split_seed: int, test_fraction: float):
        arts = news_corpora.load_articles(PACKAGED[dataset])
        return self._split([a.body for a in arts], [a.title for a in arts], [a.group for a in arts],
                           split_seed, test_fraction)

    def _split(self, sources, targets, groups, split_seed: int, test_fraction: float, test=None):
        from datasets import DatasetDict

        if test is not None:
            return DatasetDict(train=_dataset(sources, targets, groups), test=_dataset(*test))
        tr, te = split_rows(len(sources), split_seed, test_fraction)
        pick = lambda seq, idx: None if seq is None else [seq[i] for i in idx]  # noqa: E731
        return DatasetDict(
            train=_dataset(pick(sources, tr), pick(targets, tr), pick(groups, tr)),
            test=_dataset(pick(sources, te), pick(targets, te), pick(groups, te)),
        )

    def _load_files(self, path: Path, split_seed: int, test_fraction: float):
        if path.is_dir():
            train_f, test_f = path / "train.jsonl", path / "test.jsonl"
            if not train_f.exists() or not test_f.exists():
                raise DatasetError(f"seq2seq directory '{path}' needs train.jsonl and test.jsonl")
            return self._split(*read_jsonl_pairs(train_f), split_seed, test_fraction, test=read_jsonl_pairs(test_f))
        pairs = read_jsonl_pairs(path)
        need_rows(len(pairs[0]), path)
        return self._split(*pairs, split_seed, test_fraction)

    def _load_hub(self, dataset: str, split_seed: int, test_fraction: float):
        src, tgt = HUB_ALIASES[dataset][2:] if dataset in HUB_ALIASES else ("source", "target")
        hub_id, raw = self._hub_dataset(dataset)
        cols = raw["train"].column_names
        if src not in cols or tgt not in cols:
            raise DatasetError(f"hub dataset '{hub_id}' needs '{src}' and '{tgt}' columns, has {cols}")
        test_split = "test" if "test" in raw else "validation"
        conv = lambda s: (s[src], s[tgt], None)  # noqa: E731
        return self._split(*conv(raw["train"]), 0, 0.0, test=conv(raw[test_split]))

    # --- partition views ---------------------------------------------------------
    def label_for_partition(self, ds) -> np.ndarray:
        """No class label in generation: label skew uses the natural group (outlet/topic);
        data without groups is one class, ``all``."""
        groups = self.groups_for_partition(ds)
        return np.full(len(ds), "all", dtype=object) if groups is None else groups

    def texts_for_embedding(self, ds) -> list[str]:
        return ds.data.column("source").to_pylist()

    # --- features -------------------------------------------------------------
    def featurize(self, ds, tokenizer, max_len: int, key: str) -> TokenizedData:
        self._tokenizer = tokenizer
        return super().featurize(ds, tokenizer, max_len, key)

    def _featurize(self, ds, tokenizer, max_len: int) -> TokenizedData:
        return self._pairs(ds.data.column("source").to_pylist(), ds.data.column("target").to_pylist(),
                           tokenizer, max_len)

    def collate(self, data: TokenizedData, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        ids, mask = data.ragged["input_ids"].pad_with_mask(rows, pad_id)
        labels = data.ragged["labels"].pad(rows, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.from_numpy(labels.astype(np.int64))}

    # --- model and metrics ----------------------------------------------------
    def build_model(self, model_path: str, data_info: dict) -> torch.nn.Module:
        from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel

        config = AutoConfig.from_pretrained(model_path)
        if getattr(config, "is_encoder_decoder", False):
            model = AutoModelForSeq2SeqLM.from_pretrained(model_path)
        else:
            tok = AutoTokenizer.from_pretrained(model_path)
            model = EncoderDecoderModel.from_encoder_decoder_pretrained(model_path, model_path)
            for cfg in (model.config, model.generation_config):
                cfg.decoder_start_token_id = tok.cls_token_id
                cfg.pad_token_id = tok.pad_token_id
                cfg.eos_token_id = tok.sep_token_id
            model.config.vocab_size = model.config.decoder.vocab_size
        gen = model.generation_config
        gen.max_new_tokens, gen.num_beams, gen.do_sample = MAX_NEW_TOKENS, 1, False
        gen.no_repeat_ngram_size = NO_REPEAT_NGRAM
        gen.max_length = None
        return model

    def predict_batch(self, model, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """Greedy decoding up to ``MAX_NEW_TOKENS`` (no repeated trigrams): generated token ids per row."""
        out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             max_new_tokens=MAX_NEW_TOKENS, num_beams=1, do_sample=False,
                             no_repeat_ngram_size=NO_REPEAT_NGRAM)
        return list(out.cpu().numpy())

    def predict(self, model, data: TokenizedData, rows: np.ndarray, batch_size: int, pad_id: int, device) -> dict:
        """Generated headlines as text (decoded once here, so ``score`` needs no tokenizer)."""
        if self._tokenizer is None:
            raise RuntimeError("seq2seq predict() needs featurize() to have been called (it keeps the tokenizer)")
        ids = super().predict(model, data, rows, batch_size, pad_id, device)
        keys = list(ids)
        texts = self._tokenizer.batch_decode([ids[k] for k in keys], skip_special_tokens=True)
        return dict(zip(keys, (t.strip() for t in texts)))

    # --- capabilities ------------------------------------------------------------
    def per_example_loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean token cross-entropy of each target (teacher forcing from the labels, as in training)."""
        import torch.nn.functional as F

        labels = batch["labels"]
        logits = model(**batch).logits.float()
        tok = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=-100)
        return tok.sum(1) / (labels != -100).sum(1).clamp(min=1)

    def encoder(self, model) -> torch.nn.Module:
        return model.get_encoder()

    def _pairs(self, sources: list[str], targets: list[str], tokenizer, max_len: int) -> TokenizedData:
        enc = tokenizer(list(sources), truncation=True, max_length=max_len)
        return TokenizedData(ragged={
            "input_ids": Ragged.from_lists(enc["input_ids"]),
            "labels": Ragged.from_lists(target_ids(tokenizer, list(targets))),
            "reference": strings_to_ragged(list(targets)),
        })

    def encode_canaries(self, prefixes: list[str], secrets: list[str], labels, tokenizer,
                        max_len: int) -> TokenizedData:
        """Source = the prefix, target = prefix + secret: only a model that memorised the secret
        can generate it (a canary in both source and target would be copied, not memorised)."""
        return self._pairs(prefixes, [f"{p} {s}" for p, s in zip(prefixes, secrets)], tokenizer, max_len)

    def counterfactual_copies(self, ds, rows: np.ndarray, tokenizer, max_len: int, swap):
        """Pairs whose source or target ``swap`` changes, both rewritten; (TokenizedData, source rows)."""
        sources, targets = ds.data.column("source").to_pylist(), ds.data.column("target").to_pylist()
        new_s, new_t, src = [], [], []
        for r in np.asarray(rows).tolist():
            (a, n1), (b, n2) = swap(sources[r]), swap(targets[r])
            if n1 or n2:
                new_s.append(a)
                new_t.append(b)
                src.append(r)
        return self._pairs(new_s, new_t, tokenizer, max_len), np.asarray(src, dtype=np.int64)

    def score(self, predictions, data: TokenizedData, rows: np.ndarray) -> dict[str, float]:
        rows = np.asarray(rows).tolist()
        refs = [ragged_str(data.ragged["reference"], r) for r in rows]
        return rouge_scores([predictions[r] for r in rows], refs)


def _dataset(sources, targets, groups):
    from datasets import Dataset, Features, Value

    if not sources:
        raise DatasetError("seq2seq dataset has no (source, target) pairs")
    groups = groups if groups is not None else [None] * len(sources)  # no groups: `natural` refuses
    features = Features({"source": Value("string"), "target": Value("string"), "group": Value("string")})
    return Dataset.from_dict({"source": list(sources), "target": list(targets), "group": list(groups)},
                             features=features)


def read_jsonl_pairs(path: Path) -> tuple[list[str], list[str], list[str] | None]:
    """``(sources, targets, groups)`` from a UTF-8 JSONL file with ``source`` and ``target`` keys.

    Both are required and non-empty on every line; ``group`` is optional, but once any line
    has one every line needs one (errors name the file and line).
    """
    if path.suffix not in (".jsonl", ".json"):
        raise DatasetError(f"seq2seq file '{path}' must be .jsonl (or a FedNLP .h5 data file), got '{path.suffix}'")
    rows = list(iter_jsonl(path))
    if not rows:
        raise DatasetError(f"seq2seq file '{path}' has no rows")
    sources = [text_cell(row, "source", path, line) for line, row in rows]
    targets = [text_cell(row, "target", path, line) for line, row in rows]
    return sources, targets, optional_groups(rows, path)
