"""Task adapters: one module per task formulation, behind the suite's registry.

A new task is one module with a :class:`TaskAdapter` subclass plus one registration line here
(or an entry point in the ``fednlp_bench.tasks`` group of an installed package); see
docs/adding-a-task.md.
"""
from __future__ import annotations

import inspect

from fednlp_bench.errors import DatasetError
from fednlp_bench.registry import Registry
from fednlp_bench.tasks.base import TaskAdapter


def _check_task(obj: object, label: str) -> type[TaskAdapter]:
    if not (inspect.isclass(obj) and issubclass(obj, TaskAdapter)):
        raise DatasetError(f"{label}: {obj!r} is not a subclass of fednlp_bench.tasks.TaskAdapter")
    return obj


TASKS: Registry[type[TaskAdapter]] = Registry("task", DatasetError, "fednlp_bench.tasks", _check_task)
TASKS.add("tc", "fednlp_bench.tasks.text_classification:TextClassification")
TASKS.add("st", "fednlp_bench.tasks.sequence_tagging:SequenceTagging")
TASKS.add("qa", "fednlp_bench.tasks.extractive_qa:ExtractiveQA")
TASKS.add("s2s", "fednlp_bench.tasks.seq2seq:Seq2Seq")
TASKS.add("lm", "fednlp_bench.tasks.language_modeling:LanguageModeling")


def available() -> list[str]:
    return TASKS.names()


def get(name: str) -> TaskAdapter:
    """A new adapter instance for task ``name`` (tc, st, qa, s2s, lm, or a plugin's)."""
    return TASKS.get(name)()


__all__ = ["TASKS", "TaskAdapter", "DatasetError", "available", "get"]
