"""Task adapters: one module per task formulation, behind a small registry."""
from __future__ import annotations

import difflib
import importlib

from fednlp_bench.tasks.base import DatasetError, TaskAdapter

# task name -> "module:Class" (imported lazily so `fednlp-bench list` stays fast)
_REGISTRY: dict[str, str] = {
    "tc": "fednlp_bench.tasks.text_classification:TextClassification",
    "st": "fednlp_bench.tasks.sequence_tagging:SequenceTagging",
    "qa": "fednlp_bench.tasks.extractive_qa:ExtractiveQA",
    "s2s": "fednlp_bench.tasks.seq2seq:Seq2Seq",
}


def available() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> TaskAdapter:
    """Instantiate the adapter for ``name`` (tc, st, qa, s2s)."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise DatasetError(f"unknown task '{name}' (available: {', '.join(available())}){hint}")
    module, _, cls = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["TaskAdapter", "DatasetError", "available", "get"]
