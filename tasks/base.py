"""The task adapter interface shared by tc, st, qa and s2s.

An adapter knows how to load a dataset into canonical columns, what label a
partitioner should see, how to tokenize once (cached), how to collate a batch
with dynamic padding, which HF head to build and how to score predictions.
The FL engine only talks to this interface: nothing task-specific lives there.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch

from fednlp_bench.batching import TokenizedData, eval_batches
from fednlp_bench.errors import DatasetError  # noqa: F401 - re-exported
from fednlp_bench.paths import cache_dir

log = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    """Stable short hash of JSON-serialisable parts (cache keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_dataset_dict(key: str, build: Callable[[], "Any"]):
    """Load a DatasetDict from the cache, or build it and save it atomically (temp dir + rename)."""
    from datasets import load_from_disk

    root = cache_dir() / "datasets"
    final = root / key
    if (final / "dataset_dict.json").exists():
        try:
            return load_from_disk(str(final))
        except Exception as exc:  # corrupt cache: rebuild it
            log.warning("cached dataset %s unreadable (%s); rebuilding", final, exc)
            shutil.rmtree(final, ignore_errors=True)
    dsd = build()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        dsd.save_to_disk(str(tmp))
        _share(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return load_from_disk(str(final))


#: suffixes of FedNLP data files (``*_data.h5``)
FEDNLP_SUFFIXES = (".h5", ".hdf5")


def swapped_texts(ds, rows: np.ndarray, swap: Callable[[str], tuple[str, int]],
                  column: str = "text") -> tuple[list[str], np.ndarray]:
    """``(rewritten texts, their source rows)`` for the ``rows`` whose ``column`` text ``swap`` changes
    (the counterfactual copies of the probes and of counterfactual data augmentation)."""
    texts = ds.data.column(column).to_pylist()
    new, src = [], []
    for r in np.asarray(rows).tolist():
        text, n = swap(texts[r])
        if n:
            new.append(text)
            src.append(r)
    return new, np.asarray(src, dtype=np.int64)


def looks_like_path(dataset: str) -> bool:
    """Whether a dataset name that is neither packaged nor ``hf:`` was meant as a local path."""
    return any(sep in dataset for sep in ("/", "\\")) or dataset.startswith(("~", ".")) or Path(dataset).suffix != ""


def _share(directory: Path) -> None:
    """Caches are shared like records: directories 0755, files 0644 (mkdtemp makes 0700)."""
    for sub in [directory, *directory.rglob("*")]:
        os.chmod(sub, 0o755 if sub.is_dir() else 0o644)


#: The optional capabilities a task adapter can declare in ``TaskAdapter.capabilities``, each with the
#: method(s) it promises. Audits, probes and data transformations ask for capabilities, never for task
#: names (docs/tasks.md, "Task capabilities"); a run that needs one the task lacks stops with a
#: ConfigError naming it.
CAPABILITIES: dict[str, str] = {
    "example_loss": "per_example_loss(model, batch) -> (B,) training loss of each example of a collated batch; "
                    "example_losses(model, data, rows, batch_size, pad_id, device) -> (len(rows),) per row",
    "confidence": "example_confidences(model, data, rows, batch_size, pad_id, device) -> (len(rows),) LiRA's "
                  "logit-scaled confidence phi = log p - log(1 - p)",
    "encode_texts": "encode_texts(texts, labels, tokenizer, max_len) -> TokenizedData: free texts as rows of "
                    "this task (probes, canaries), tokenized exactly as the training data",
    "canary_rows": "encode_canaries(prefixes, secrets, labels, tokenizer, max_len) -> TokenizedData: training "
                   "rows that carry a secret after a non-sensitive prefix",
    "class_logits": "logits(model, data, rows, batch_size, pad_id, device) -> (len(rows), classes)",
    "embedding_logits": "embedding_logits(model, inputs_embeds, attention_mask) -> (B, classes) from word "
                        "embeddings (white-box attacks, prediction sensitivity); input_embeddings(model)",
    "sequence_logprob": "sequence_logprobs(model, data, rows, batch_size, pad_id, device) -> (len(rows),) total "
                        "log-likelihood of each text",
    "next_token_logits": "next_token_logits(model, input_ids, attention_mask) -> (B, vocab) log-probabilities "
                         "of the token after each (right-padded) sequence, over the tokenizer's ids",
    "word_tags": "predict() gives one tag id per word of encode_texts' whitespace-split texts",
    "encoder": "encoder(model) -> the module mapping (input_ids, attention_mask) to last_hidden_state",
    "counterfactual_copies": "counterfactual_copies(ds, rows, tokenizer, max_len, swap) -> (TokenizedData, "
                             "source rows): rows with every text field rewritten by swap(text) -> (text, n)",
}


class TaskAdapter(ABC):
    """Base class of task adapters. Subclasses set ``name`` and ``primary_metric``."""

    name: str = ""
    primary_metric: str = ""
    default_dataset: str = ""
    #: optional capabilities (keys of :data:`CAPABILITIES`) this adapter implements
    capabilities: ClassVar[frozenset[str]] = frozenset()
    # what load() dispatches on: packaged dataset names (offline) and hub aliases (value[:2] = id, config)
    packaged: ClassVar[Mapping[str, Any]] = {}
    hub_aliases: ClassVar[Mapping[str, tuple]] = {}
    # wording of the unknown-dataset error ("unknown {dataset_kind} dataset ...")
    dataset_kind: ClassVar[str] = ""
    packaged_note: ClassVar[str] = "offline"
    files_note: ClassVar[str] = "a file or directory"

    # --- data -----------------------------------------------------------------
    def datasets(self) -> list[str]:
        """Packaged dataset names usable offline."""
        return sorted(self.packaged)

    def load(self, dataset: str, split_seed: int = 0, test_fraction: float = 0.2):
        """Return a ``DatasetDict{train,test}`` with the task's canonical columns.

        ``dataset`` is a packaged name, a hub dataset (``hf:<id>[:<config>]`` or an alias),
        or a local file or directory; a FedNLP ``.h5`` data file is read by
        :mod:`tasks.fednlp_data`. A path that does not exist is an error, never a hub id:
        ``bad/x.csv`` would otherwise be retried against the hub for half a minute.
        """
        if dataset in self.packaged:
            return self._load_packaged(dataset, split_seed, test_fraction)
        if dataset.startswith("hf:") or dataset in self.hub_aliases:
            return self._load_hub(dataset, split_seed, test_fraction)
        path = Path(dataset).expanduser()
        if path.exists():
            if path.is_file() and path.suffix in FEDNLP_SUFFIXES:
                from fednlp_bench.tasks.fednlp_data import load_fednlp_h5

                return load_fednlp_h5(self.name, path)
            return self._load_files(path, split_seed, test_fraction)
        if looks_like_path(dataset):
            from fednlp_bench.tasks.user_files import missing_path

            raise missing_path(dataset, self.dataset_kind)
        raise DatasetError(
            f"unknown {self.dataset_kind} dataset '{dataset}': use one of {', '.join(sorted(self.packaged))} "
            f"({self.packaged_note}), {self.files_note}, a FedNLP .h5 data file, or hf:<hub id> / "
            f"{', '.join(self.hub_aliases)} (needs internet)"
        )

    @abstractmethod
    def _load_packaged(self, dataset: str, split_seed: int, test_fraction: float):
        """A packaged dataset (a key of ``packaged``), built once and cached."""

    @abstractmethod
    def _load_files(self, path: Path, split_seed: int, test_fraction: float):
        """A local dataset file, or a directory with train and test files."""

    @abstractmethod
    def _load_hub(self, dataset: str, split_seed: int, test_fraction: float):
        """A Hugging Face hub dataset (needs internet); see :meth:`_hub_dataset`."""

    def _hub_dataset(self, dataset: str) -> tuple[str, Any]:
        """``(hub id, raw DatasetDict)`` of a hub alias or ``hf:<id>[:<config>]``."""
        from datasets import load_dataset

        alias = self.hub_aliases.get(dataset)
        hub_id, config = alias[:2] if alias else (dataset.removeprefix("hf:"), None)
        if ":" in hub_id:
            hub_id, config = hub_id.split(":", 1)
        try:
            raw = load_dataset(hub_id, config)
        except Exception as exc:
            raise DatasetError(f"cannot load hub dataset '{hub_id}' ({exc.__class__.__name__}: {exc})") from None
        return hub_id, raw

    @abstractmethod
    def label_for_partition(self, ds) -> np.ndarray:
        """The label a label-skew partitioner sees, one per row."""

    def groups_for_partition(self, ds) -> np.ndarray | None:
        """The natural client id per row (movie, agency, outlet...), or None if the dataset has none
        (no ``group`` column, or one that is null on every row: a file without groups)."""
        if "group" not in ds.column_names:
            return None
        col = ds.data.column("group")
        if len(ds) and col.null_count == len(ds):
            return None
        return np.asarray(col.to_numpy(zero_copy_only=False))

    def file_ids(self, ds) -> np.ndarray | None:
        """The data-file id of every row (``X/<id>`` of a FedNLP data file), or None for other data."""
        if "file_id" not in ds.column_names:
            return None
        return ds.data.column("file_id").to_numpy().astype(np.int64)

    def texts_for_embedding(self, ds) -> list[str]:
        """Texts used by the feature-cluster partitioner."""
        return ds.data.column("text").to_pylist()

    def validation_rows(self, ds, fraction: float, seed: int, limit: int | None = None) -> np.ndarray:
        """Sorted rows of ``ds`` (a train split) held out for validation: seeded, stratified by
        :meth:`label_for_partition` (each label keeps its share, by largest remainder), at most
        ``limit`` rows. Model selection and per-round curves use these, never the test split."""
        n = len(ds)
        size = min(int(round(fraction * n)), limit if limit is not None else n, n - 1)
        if size <= 0:
            return np.zeros(0, dtype=np.int64)
        from fednlp_bench.partitioners.allocation import largest_remainder

        codes = np.unique(np.asarray(self.label_for_partition(ds)).astype(str), return_inverse=True)[1]
        counts = np.bincount(codes)
        take = largest_remainder(counts.astype(np.float64), size)
        rng = np.random.default_rng([seed, 0x7A1])
        picked = [rng.choice(np.flatnonzero(codes == c), size=k, replace=False) for c, k in enumerate(take) if k]
        return np.sort(np.concatenate(picked)).astype(np.int64)

    # --- features -------------------------------------------------------------
    @abstractmethod
    def _featurize(self, ds, tokenizer, max_len: int) -> TokenizedData:
        """Tokenize a split (called once; the result is cached)."""

    def featurize(self, ds, tokenizer, max_len: int, key: str) -> TokenizedData:
        """Tokenize once per (dataset split, tokenizer, max_len) and cache on disk."""
        tok_id = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        fp = fingerprint(self.name, key, getattr(ds, "_fingerprint", len(ds)), tok_id, len(tokenizer), max_len)
        path = cache_dir() / "features" / f"{self.name}-{fp}.npz"
        if path.exists():
            try:
                return TokenizedData.load(path)
            except Exception as exc:
                log.warning("feature cache %s unreadable (%s); rebuilding", path, exc)
        data = self._featurize(ds, tokenizer, max_len)
        data.save(path)
        return TokenizedData.load(path)

    @abstractmethod
    def collate(self, data: TokenizedData, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        """Build one training batch for ``rows`` padded to its longest sequence."""

    # --- model ----------------------------------------------------------------
    #: the task head: modules the pretrained checkpoint does not have, trained in full under
    #: every PEFT method (peft's ``modules_to_save``); a module matches by name or dotted suffix
    head_modules: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def build_model(self, model_path: str, data_info: dict) -> torch.nn.Module:
        """Build the HF model with this task's head."""

    @staticmethod
    def labelled_head(auto_class: Any, model_path: str, names: list[str]) -> torch.nn.Module:
        """``auto_class.from_pretrained`` with one output per label name and the id/label maps set."""
        return auto_class.from_pretrained(
            model_path,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
        )

    # --- evaluation -----------------------------------------------------------
    @abstractmethod
    def predict_batch(self, model, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """Predictions for one batch (any per-row numpy representation)."""

    @abstractmethod
    def score(self, predictions: dict[int, Any], data: TokenizedData, rows: np.ndarray) -> dict[str, float]:
        """Metrics over ``rows`` given per-row predictions."""

    def predict(self, model, data: TokenizedData, rows: np.ndarray, batch_size: int, pad_id: int, device) -> dict[int, Any]:
        """Run inference once over ``rows`` (length-sorted big batches, inference mode)."""
        model.eval()
        preds: dict[int, Any] = {}
        with torch.inference_mode():
            for batch_rows in eval_batches(rows, data.lengths, batch_size):
                batch = self.collate(data, batch_rows, pad_id)
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                out = self.predict_batch(model, batch)
                for r, p in zip(batch_rows.tolist(), out):
                    preds[r] = p
        return preds

    def map_rows(self, model, data: TokenizedData, rows: np.ndarray, batch_size: int, pad_id: int, device,
                 fn: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]) -> np.ndarray:
        """``fn(model, batch)`` (one output row per example) over ``rows``, stacked in ``rows`` order.

        Length-sorted batches, eval mode and inference mode; the model's train/eval mode is restored.
        """
        rows = np.asarray(rows)
        chunks, order = [], []
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for b in eval_batches(rows, data.lengths, batch_size):
                    batch = {k: v.to(device) for k, v in self.collate(data, b, pad_id).items()}
                    chunks.append(fn(model, batch).float().cpu().numpy().astype(np.float64))
                    order.append(b)
        finally:
            model.train(was_training)
        if not chunks:
            return np.zeros(0)
        position = {int(r): i for i, r in enumerate(rows)}
        out = np.empty((len(rows),) + chunks[0].shape[1:])
        out[[position[int(r)] for r in np.concatenate(order)]] = np.concatenate(chunks)
        return out

    def info(self, ds) -> dict:
        """Facts the model builder needs (e.g. label names)."""
        return {}

    # --- optional capabilities (see CAPABILITIES) -------------------------------
    @classmethod
    def supports(cls, capability: str) -> bool:
        """Whether this adapter declares ``capability`` (a key of :data:`CAPABILITIES`)."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown task capability '{capability}' (known: {', '.join(sorted(CAPABILITIES))})")
        return capability in cls.capabilities

    def example_losses(self, model, data: TokenizedData, rows: np.ndarray, batch_size: int, pad_id: int,
                       device) -> np.ndarray:
        """``per_example_loss`` over ``rows`` ("example_loss"; one collated row = one example here)."""
        return self.map_rows(model, data, rows, batch_size, pad_id, device, self.per_example_loss)

    def per_example_loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Default "example_loss": the classification / token-classification losses of
        :func:`fednlp_bench.privacy.per_sample.per_example_loss`."""
        from fednlp_bench.privacy.per_sample import per_example_loss

        return per_example_loss(model, batch)

    def example_confidences(self, model, data: TokenizedData, rows: np.ndarray, batch_size: int, pad_id: int,
                            device) -> np.ndarray:
        """Default "confidence": ``phi = log p - log(1 - p)`` with ``p = exp(-loss)``.

        For a classifier ``p`` is the probability of the true label (LiRA's statistic, Carlini et
        al. 2022); for a sequence it is the geometric mean of the token probabilities, the
        per-token likelihood whose logit LiRA uses for language models.
        """
        loss = np.maximum(self.example_losses(model, data, rows, batch_size, pad_id, device), 1e-12)
        return -loss - np.log(-np.expm1(-loss))

    def encoder(self, model) -> torch.nn.Module:
        """Default "encoder": the HF base model (BertModel inside a BertFor... head)."""
        return model.base_model

    def encode_canaries(self, prefixes: list[str], secrets: list[str], labels, tokenizer,
                        max_len: int) -> TokenizedData:
        """Default "canary_rows": ``prefix + " " + secret`` through ``encode_texts``."""
        texts = [f"{p} {s}" for p, s in zip(prefixes, secrets)]
        return self.encode_texts(texts, labels, tokenizer, max_len)
