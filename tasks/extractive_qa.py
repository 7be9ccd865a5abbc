"""Extractive QA (FedNLP's SQuAD/MRQA formulation) with a span head and sliding windows.

Offline datasets (cloze QA, see :mod:`tasks.cloze_qa`; one question per
article, built on first use with spaCy over the headlines and cached):

* ``news`` (default) - BBC News and NewsArticles, ~3.3k questions; group =
  BBC topic or outlet (14 natural clients).
* ``bbc`` / ``newsarticles`` - one corpus.
* a UTF-8 SQuAD v1.1 JSON file (``{"data": [{"title", "paragraphs": [{"context",
  "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}``;
  group = title; unanswerable v2 questions are skipped) or a directory with
  ``train.json`` and ``test.json`` (or ``dev.json``).
* ``hf:<id>[:<config>]`` or ``squad`` / ``mrqa``: hub datasets with
  ``question``, ``context`` and ``answers`` (SQuAD dict or a list of strings),
  for users with internet.

Canonical columns: ``id``, ``question``, ``context``, ``answer_starts``,
``answer_texts``, ``label`` (what ``dirichlet_label`` sees: the answer's
entity type for cloze data, the question word for SQuAD files) and ``group``.
Model: ``AutoModelForQuestionAnswering`` over windows of ``max_len`` tokens
with a stride of ``max_len // 4`` (:mod:`tasks.qa_windows`); one featurized row
is one example with all its windows, so client partitions and per-client
scores are per example. Metrics: SQuAD exact match and token F1 (primary
``f1``; Rajpurkar et al. 2016), as fractions in [0, 1].
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from fednlp_bench.batching import TokenizedData
from fednlp_bench.tasks import cloze_qa, news_corpora, qa_windows
from fednlp_bench.tasks.base import DatasetError, TaskAdapter, cached_dataset_dict, fingerprint
from fednlp_bench.tasks.splits import split_rows
from fednlp_bench.tasks.squad_metric import squad_scores
from fednlp_bench.tasks.text_arrays import ragged_str
from fednlp_bench.tasks.user_files import need_rows, read_utf8

log = logging.getLogger(__name__)

PACKAGED = {"news": "news", "bbc": "bbc", "newsarticles": "newsarticles"}
HUB_ALIASES = {"squad": ("rajpurkar/squad", None), "mrqa": ("mrqa-workshop/mrqa", None)}
_WH = ("what", "who", "whom", "whose", "when", "where", "which", "why", "how")
_CACHE_VERSION = 1


def question_word(question: str) -> str:
    """The first wh-word of a question (``other`` if none): the label-skew view of SQuAD data."""
    for tok in question.lower().replace("?", " ").split()[:6]:
        if tok in _WH:
            return tok
    return "other"


class ExtractiveQA(TaskAdapter):
    name = "qa"
    primary_metric = "f1"
    head_modules = ("qa_outputs",)
    default_dataset = "news"
    packaged = PACKAGED
    hub_aliases = HUB_ALIASES
    dataset_kind = "QA"
    packaged_note = "offline, cloze QA"
    files_note = "a SQuAD .json file or directory"
    capabilities = frozenset({"example_loss", "confidence", "canary_rows", "encoder"})

    # --- loading --------------------------------------------------------------
    def _cloze(self, dataset: str) -> list[dict]:
        from fednlp_bench.tasks import ner_silver

        articles = news_corpora.load_articles(PACKAGED[dataset])
        log.info("qa: finding headline entities in %d articles (once, then cached)", len(articles))
        rows = []
        for art, ents in zip(articles, ner_silver.entities([a.title for a in articles])):
            ex = cloze_qa.make_cloze(art.title, art.body, ents)
            if ex is not None:
                rows.append({
                    "id": art.doc, "question": ex.question, "context": ex.context,
                    "answer_starts": [ex.answer_start], "answer_texts": [ex.answer_text],
                    "label": ex.answer_type, "group": art.group,
                })
        return rows

    def _load_packaged(self, dataset: str, split_seed: int, test_fraction: float):
        from fednlp_bench.tasks import ner_silver

        key = f"qa-{dataset}-{fingerprint(split_seed, test_fraction, ner_silver.SPACY_MODEL, cloze_qa.MAX_CONTEXT_CHARS, _CACHE_VERSION)}"
        return cached_dataset_dict(key, lambda: self._split(self._cloze(dataset), split_seed, test_fraction))

    def _split(self, rows: list[dict], split_seed: int, test_fraction: float, test: list[dict] | None = None):
        from datasets import DatasetDict

        if test is not None:
            return DatasetDict(train=self._dataset(rows), test=self._dataset(test))
        tr, te = split_rows(len(rows), split_seed, test_fraction)
        return DatasetDict(train=self._dataset([rows[i] for i in tr]), test=self._dataset([rows[i] for i in te]))

    @staticmethod
    def _dataset(rows: list[dict]):
        from datasets import Dataset, Features, Sequence, Value

        if not rows:
            raise DatasetError("QA dataset has no answerable questions")
        features = Features({
            "id": Value("string"), "question": Value("string"), "context": Value("string"),
            "answer_starts": Sequence(Value("int64")), "answer_texts": Sequence(Value("string")),
            "label": Value("string"), "group": Value("string"),
        })
        return Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)

    def _load_files(self, path: Path, split_seed: int, test_fraction: float):
        if path.is_dir():
            train_f = path / "train.json"
            test_f = next((p for p in (path / "test.json", path / "dev.json") if p.exists()), None)
            if not train_f.exists() or test_f is None:
                raise DatasetError(f"SQuAD directory '{path}' needs train.json and test.json (or dev.json)")
            return self._split(read_squad(train_f), split_seed, test_fraction, test=read_squad(test_f))
        rows = read_squad(path)
        need_rows(len(rows), path)
        return self._split(rows, split_seed, test_fraction)

    def _load_hub(self, dataset: str, split_seed: int, test_fraction: float):
        hub_id, raw = self._hub_dataset(dataset)
        test_split = "test" if "test" in raw else "validation"
        return self._split(_hub_rows(raw["train"], hub_id), 0, 0.0, test=_hub_rows(raw[test_split], hub_id))

    # --- partition views ---------------------------------------------------------
    def label_for_partition(self, ds) -> np.ndarray:
        return np.asarray(ds.data.column("label").to_numpy(zero_copy_only=False))

    def texts_for_embedding(self, ds) -> list[str]:
        return ds.data.column("context").to_pylist()

    # --- features -------------------------------------------------------------
    def _featurize(self, ds, tokenizer, max_len: int) -> TokenizedData:
        contexts = ds.data.column("context").to_pylist()
        starts = ds.data.column("answer_starts").to_pylist()
        texts = ds.data.column("answer_texts").to_pylist()
        ends = [[s + len(t) for s, t in zip(ss, tt)] for ss, tt in zip(starts, texts)]
        return qa_windows.featurize(tokenizer, ds.data.column("question").to_pylist(), contexts, starts, ends, max_len)

    def collate(self, data: TokenizedData, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        return qa_windows.collate(data, rows, pad_id)

    # --- model and metrics ----------------------------------------------------
    def build_model(self, model_path: str, data_info: dict) -> torch.nn.Module:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering.from_pretrained(model_path)

    def predict_batch(self, model, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """Best token span ``(start, end)`` per *window* of a collated batch (context = token type 1)."""
        inputs = {k: v for k, v in batch.items() if k not in ("start_positions", "end_positions")}
        out = model(**inputs)
        ctx = batch.get("token_type_ids", batch["attention_mask"]).bool() & batch["attention_mask"].bool()
        s, e, _ = qa_windows.best_spans(out.start_logits.float(), out.end_logits.float(), ctx)
        return np.stack([s, e], axis=1)

    def predict(self, model, data: TokenizedData, rows: np.ndarray, batch_size: int, pad_id: int, device) -> dict:
        """Per example (row): the best character span over all its windows."""
        return qa_windows.predict(model, data, rows, batch_size, pad_id, device)

    # --- capabilities ------------------------------------------------------------
    def per_example_loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per *window*: the mean of the start and end cross-entropies (the HF QA training loss)."""
        import torch.nn.functional as F

        inputs = {k: v for k, v in batch.items() if k not in ("start_positions", "end_positions")}
        out = model(**inputs)
        start = F.cross_entropy(out.start_logits.float(), batch["start_positions"], reduction="none")
        end = F.cross_entropy(out.end_logits.float(), batch["end_positions"], reduction="none")
        return (start + end) / 2

    def example_losses(self, model, data: TokenizedData, rows: np.ndarray, batch_size: int, pad_id: int,
                       device) -> np.ndarray:
        """Per question: the mean window loss over all its windows (the loss training minimises)."""
        rows = np.asarray(rows)
        out = np.zeros(len(rows))
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(rows), max(1, batch_size // 4)):
                    chunk = rows[start : start + max(1, batch_size // 4)]
                    _, owner = qa_windows.windows_of(data, chunk)
                    batch = {k: v.to(device) for k, v in qa_windows.collate(data, chunk, pad_id).items()}
                    per_window = self.per_example_loss(model, batch).double().cpu().numpy()
                    out[start : start + len(chunk)] = (np.bincount(owner, per_window, minlength=len(chunk))
                                                       / np.bincount(owner, minlength=len(chunk)))
        finally:
            model.train(was_training)
        return out

    def encode_canaries(self, prefixes: list[str], secrets: list[str], labels, tokenizer,
                        max_len: int) -> TokenizedData:
        """Cloze rows: context ``prefix secret .``, question ``prefix @placeholder``, answer = the secret.

        Extractive QA reads the answer from the context, so a canary can only be memorised through
        the question/context association; exposure is expected to stay low (docs/privacy.md)."""
        contexts = [f"{p} {s} ." for p, s in zip(prefixes, secrets)]
        questions = [f"{p} {cloze_qa.PLACEHOLDER}" for p in prefixes]
        starts = [[len(p) + 1] for p in prefixes]
        ends = [[len(p) + 1 + len(s)] for p, s in zip(prefixes, secrets)]
        return qa_windows.featurize(tokenizer, questions, contexts, starts, ends, max_len)

    def score(self, predictions, data: TokenizedData, rows: np.ndarray) -> dict[str, float]:
        ctx, a_s, a_e = data.ragged["context"], data.ragged["answer_starts"], data.ragged["answer_ends"]
        preds, golds = [], []
        for r in np.asarray(rows).tolist():
            s, e = (int(x) for x in predictions[r])
            preds.append(ragged_str(ctx, r, s, e))
            golds.append([ragged_str(ctx, r, int(gs), int(ge)) for gs, ge in zip(a_s.get(r), a_e.get(r))])
        return squad_scores(preds, golds)


# --------------------------------------------------------------------------- readers
def read_squad(path: Path) -> list[dict]:
    """Answerable questions of a UTF-8 SQuAD-format JSON file (answer spans checked against the context).

    Structural problems (a paragraph without ``context``, a question without text, an
    ``answer_start`` that is not an integer) name the file and the place, e.g.
    ``data[0].paragraphs[2].qas[1]``; answers whose span does not match are dropped with a warning.
    """
    try:
        data = json.loads(read_utf8(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DatasetError(f"{path}: expected SQuAD JSON with a top-level 'data' list")
    rows, bad = [], 0
    for a_i, article in enumerate(data["data"]):
        where = f"data[{a_i}]"
        title = str(_squad_get(article, "title", dict, path, where, f"article{a_i}"))
        for p_i, paragraph in enumerate(_squad_get(article, "paragraphs", list, path, where, [])):
            p_where = f"{where}.paragraphs[{p_i}]"
            context = _squad_text(paragraph, "context", path, p_where)
            for q_i, qa in enumerate(_squad_get(paragraph, "qas", list, path, p_where, [])):
                q_where = f"{p_where}.qas[{q_i}]"
                question = _squad_text(qa, "question", path, q_where)
                starts, texts = [], []
                for n_i, ans in enumerate(_squad_get(qa, "answers", list, path, q_where, [])):
                    s, t = _squad_answer(ans, path, f"{q_where}.answers[{n_i}]")
                    if context[s : s + len(t)] == t:
                        starts.append(s)
                        texts.append(t)
                    else:
                        bad += 1
                if starts:
                    rows.append({"id": str(qa.get("id", len(rows))), "question": question, "context": context,
                                 "answer_starts": starts, "answer_texts": texts,
                                 "label": question_word(question), "group": title})
    if bad:
        log.warning("%s: %d answers do not match their context span and were dropped", path, bad)
    if not rows:
        raise DatasetError(f"{path}: no answerable questions")
    return rows


def _squad_get(obj, key: str, kind: type, path: Path, where: str, default):
    """``obj[key]`` of a SQuAD node, checked to be a JSON object and ``kind``."""
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: {where} must be a JSON object, got {type(obj).__name__}")
    value = obj.get(key, default)
    if kind is dict:  # titles: any scalar
        return value
    if not isinstance(value, kind):
        raise DatasetError(f"{path}: {where}.{key} must be a list, got {type(value).__name__}")
    return value


def _squad_text(obj, key: str, path: Path, where: str) -> str:
    value = _squad_get(obj, key, dict, path, where, None)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{path}: {where} needs a non-empty string '{key}', got {value!r:.40}")
    return value


def _squad_answer(ans, path: Path, where: str) -> tuple[int, str]:
    text = _squad_text(ans, "text", path, where)
    start = _squad_get(ans, "answer_start", dict, path, where, None)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise DatasetError(f"{path}: {where}.answer_start must be a non-negative integer, got {start!r:.40}")
    return start, text


def _hub_rows(split, hub_id: str) -> list[dict]:
    cols = split.column_names
    for need in ("question", "context", "answers"):
        if need not in cols:
            raise DatasetError(f"hub dataset '{hub_id}' needs a '{need}' column, has {cols}")
    rows = []
    for i, ex in enumerate(split):
        answers, context = ex["answers"], ex["context"]
        if isinstance(answers, dict):  # SQuAD: {"text": [...], "answer_start": [...]}
            pairs = list(zip(answers["answer_start"], answers["text"]))
        else:  # MRQA: a list of answer strings; take each one's first occurrence
            pairs = [(context.find(t), t) for t in answers]
        pairs = [(int(s), t) for s, t in pairs if s >= 0 and context[s : s + len(t)] == t]
        if pairs:
            rows.append({"id": str(ex.get("id", ex.get("qid", i))), "question": ex["question"], "context": context,
                         "answer_starts": [s for s, _ in pairs], "answer_texts": [t for _, t in pairs],
                         "label": question_word(ex["question"]), "group": str(ex.get("title", ex.get("subset", "hub")))})
    return rows
