"""Checkpoints: global weights and server/algorithm state in safetensors, the rest as JSON.

A checkpoint is a directory written atomically (temp dir + rename) holding

* ``tensors.safetensors`` - the global weights, algorithm/optimiser tensors;
* ``state.json`` - round, metrics so far, costs, failures, run id and the JSON
  part of the algorithm state.

Loading never unpickles anything: safetensors and JSON only.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fednlp_bench.callbacks import Callback

_SEP = "\x1f"  # nested-key separator inside safetensors names (never in user keys)


def split_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Separate tensors (flattened by key path) from the JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[path] = obj.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(obj, dict):
            return {str(k): walk(v, f"{path}{_SEP}{k}") for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [walk(v, f"{path}{_SEP}{i}") for i, v in enumerate(obj)]
        return obj

    return tensors, walk(state, prefix)


def join_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`split_state`."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__tensor__"}:
            return tensors[skeleton["__tensor__"]]
        return {k: join_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [join_state(v, tensors) for v in skeleton]
    return skeleton


def save(directory: str | os.PathLike, parts: dict[str, Any]) -> Path:
    """Write ``parts`` (any nesting of tensors and JSON values) atomically to ``directory``."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tensors, skeleton = split_state(parts, "root")
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_file(tensors, str(tmp / "tensors.safetensors"))
        (tmp / "state.json").write_text(json.dumps(skeleton, allow_nan=True))
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def load(directory: str | os.PathLike) -> dict[str, Any] | None:
    """Read a checkpoint, or ``None`` if there is none (a half-replaced one is recovered)."""
    directory = Path(directory)
    if not (directory / "state.json").exists():
        old = directory.with_name(f".{directory.name}.old")
        if (old / "state.json").exists():
            directory = old
        else:
            return None
    skeleton = json.loads((directory / "state.json").read_text())
    tensors = load_file(str(directory / "tensors.safetensors"))
    return join_state(skeleton, tensors)


def remove(directory: str | os.PathLike) -> None:
    """Delete a checkpoint and any half-replaced leftover of it."""
    directory = Path(directory)
    shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(directory.with_name(f".{directory.name}.old"), ignore_errors=True)


class Checkpointing(Callback):
    """Callback: every ``every`` rounds (not after the last) save the run's state tree atomically.

    ``collect()`` returns the tree: every stateful component's ``state_dict()`` under its name.
    """

    name = "checkpointing"

    def __init__(self, directory: str | os.PathLike, every: int, rounds: int, collect) -> None:
        self.directory, self.every, self.rounds, self.collect = Path(directory), every, rounds, collect

    def on_round_end(self, trainer: Any, round: int) -> None:
        if round % self.every == 0 and round < self.rounds:
            save(self.directory, self.collect())
