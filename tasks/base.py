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
from typing import Any, Callable

import numpy as np
import torch

from fednlp_bench.batching import TokenizedData, eval_batches
from fednlp_bench.paths import cache_dir

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset name, file or column is invalid; the message says what is allowed."""


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
        try:
            os.replace(tmp, final)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return load_from_disk(str(final))


class TaskAdapter(ABC):
    """Base class of task adapters. Subclasses set ``name`` and ``primary_metric``."""

    name: str = ""
    primary_metric: str = ""
    default_dataset: str = ""

    # --- data -----------------------------------------------------------------
    @abstractmethod
    def datasets(self) -> list[str]:
        """Packaged dataset names usable offline."""

    @abstractmethod
    def load(self, dataset: str, split_seed: int = 0, test_fraction: float = 0.2):
        """Return a ``DatasetDict{train,test}`` with the task's canonical columns."""

    @abstractmethod
    def label_for_partition(self, ds) -> np.ndarray:
        """The label a label-skew partitioner sees, one per row."""

    def groups_for_partition(self, ds) -> np.ndarray | None:
        """The natural client id per row (movie, agency, outlet...), if the dataset has one."""
        if "group" in ds.column_names:
            return np.asarray(ds.data.column("group").to_numpy(zero_copy_only=False))
        return None

    def texts_for_embedding(self, ds) -> list[str]:
        """Texts used by the feature-cluster partitioner."""
        return ds.data.column("text").to_pylist()

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
    @abstractmethod
    def build_model(self, model_path: str, data_info: dict) -> torch.nn.Module:
        """Build the HF model with this task's head."""

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

    def info(self, ds) -> dict:
        """Facts the model builder needs (e.g. label names)."""
        return {}
