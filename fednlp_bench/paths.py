"""Where caches and results live."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of on-disk caches (prepared datasets, tokenized data, partitions, embeddings).

    ``$FEDNLP_BENCH_CACHE`` if set, else ``~/.cache/fednlp_bench``.
    """
    root = os.environ.get("FEDNLP_BENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fednlp_bench")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
