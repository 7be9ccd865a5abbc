"""Shared fixtures: offline hub, a tiny run configuration factory."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def tiny_overrides(tmp_path):
    """--set overrides for a seconds-long real run (real MiniLM, real BBC data)."""

    def make(*extra: str) -> list[str]:
        return [
            "data.max_train=64", "data.max_test=32", "data.max_len=32",
            "partition.n_clients=4", "fl.rounds=2", "fl.clients_per_round=2", "fl.batch_size=8",
            "wandb=disabled", "progress=false", f"results_dir={tmp_path / 'results'}", *extra,
        ]

    return make
