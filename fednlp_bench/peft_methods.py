"""Parameter-efficient fine-tuning (PEFT): which parameters of the task model are trained and sent.

The engine flattens every parameter with ``requires_grad`` into one fp32 vector and
does everything federated on that vector (broadcast, deltas, aggregation, algorithm
state, DP, checkpoints, all-reduce). So a PEFT method is, for FL, only a model-building
step: it adds its few new parameters to the task model and freezes the rest *before*
the simulator is built. Frozen weights stay where ``from_pretrained`` put them, are
shared by every client and are never copied or communicated. See docs/peft.md.

Methods (``model.peft``):

* ``full`` - every parameter (the default; what FedNLP does).
* ``lora`` - low-rank updates ``W + (alpha / r) B A`` of the targeted linear layers (Hu et al.
  2022, "LoRA"), injected with Hugging Face ``peft`` (``inject_adapter_in_model``).
* ``ia3`` - learned rescaling vectors of keys, values and feed-forward activations (Liu et al.
  2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
  Learning"), injected with ``peft``.
* ``prompt`` - trainable soft-prompt vectors prepended to the input embeddings (Lester et al.
  2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"): ``peft.PromptEmbedding``.
* ``prefix`` - trainable key/value prefixes in every attention layer (Li & Liang 2021,
  "Prefix-Tuning"; Liu et al. 2022, "P-Tuning v2"): ``peft.PrefixEncoder``.
* ``bitfit`` - bias terms only (Ben Zaken et al. 2022, "BitFit").
* ``head`` - the task head only (linear probing of the pretrained encoder).

Under every method the task head - the modules the pretrained checkpoint does not have,
``TaskAdapter.head_modules`` - is trained in full, as peft does with ``modules_to_save``;
``model.train_modules`` adds more. This is the FedPETuning set-up (Zhang et al., Findings
of ACL 2023, "FedPETuning: When Federated Learning Meets the Parameter-Efficient Tuning
Methods of Pre-trained Language Models").

Why prompt and prefix tuning are wired here rather than through ``peft.get_peft_model``:
its wrappers prepend the virtual tokens to the *outputs* too, which breaks token
classification and span extraction (labels and logits no longer align), and BERT-family
encoders in transformers 5 accept no ``past_key_values`` argument for peft's prefix path.
We keep peft's trainable modules and their initialisation, and attach them with two hooks
on the encoder: the prompt is prepended to the input embeddings and removed again from
the encoder's output (the pooler is recomputed on the real first token); the prefix enters
every self-attention layer as a pre-filled key/value cache, the queries stay the real
tokens, so every head, loss and decoder sees the usual sequence length. For an
encoder-decoder (s2s), prompt and prefix adapt the encoder; LoRA, IA3 and BitFit adapt
encoder and decoder.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Iterable

import torch
from torch import nn

from fednlp_bench.config import ConfigError, ModelConfig

log = logging.getLogger(__name__)

#: method -> the ``model.*`` keys that parameterise it (recorded with the run)
METHOD_PARAMS: dict[str, tuple[str, ...]] = {
    "full": (),
    "lora": ("lora_r", "lora_alpha", "lora_dropout", "lora_targets"),
    "ia3": ("ia3_targets", "ia3_feedforward"),
    "prompt": ("prefix_tokens", "prompt_init"),
    "prefix": ("prefix_tokens", "prefix_projection"),
    "bitfit": (),
    "head": (),
}
ALL_LINEAR = "all-linear"


# --------------------------------------------------------------------------- entry points
def build_model(task: Any, model_path: str, data_info: dict, mcfg: ModelConfig) -> nn.Module:
    """The task's model with the configured PEFT method applied (trainable = what FL sends)."""
    model = task.build_model(model_path, data_info)
    apply(model, task, mcfg)
    return model


def apply(model: nn.Module, task: Any, mcfg: ModelConfig) -> None:
    """Apply ``mcfg.peft`` to ``model`` in place; raises :class:`ConfigError` for names that match nothing."""
    method = mcfg.peft
    if method == "full":
        return
    keep = _head_and_extra(model, task, mcfg)
    if method == "lora":
        _lora(model, mcfg, keep)
    elif method == "ia3":
        _ia3(model, mcfg, keep)
    elif method == "prompt":
        _prompt(model, mcfg)
    elif method == "prefix":
        _prefix(model, mcfg)
    new = {id(p) for name, p in model.named_parameters() if _is_adapter(name)}
    for name, p in model.named_parameters():
        trainable = id(p) in new or _in_subtree(name, keep) or (method == "bitfit" and _is_bias(name))
        p.requires_grad_(trainable)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"model.peft={method} leaves no trainable parameter in {type(model).__name__} "
                          f"(no task head found; add modules with model.train_modules)")


def check_up_front(mcfg: ModelConfig, model_path: str) -> None:
    """Target names against the pretrained backbone's modules, before any data is prepared.

    Targets must lie outside the task head, so every target that selects something in a task
    model selects something in its backbone (``AutoModel.from_config``, built on the meta
    device: no weights are read). Where that backbone cannot be built (a hub id offline, an
    unusual architecture) this check is skipped; the exact check on the built model remains.
    """
    key = {"lora": "lora_targets", "ia3": "ia3_targets"}.get(mcfg.peft)
    if key is None:
        return
    try:
        from transformers import AutoConfig, AutoModel

        with torch.device("meta"):
            backbone = AutoModel.from_config(AutoConfig.from_pretrained(model_path))
    except Exception as exc:  # noqa: BLE001 - only an early convenience; the build-time check is exact
        log.debug("target names not checked up front (%s)", exc)
        return
    names = [n for n, _ in backbone.named_modules() if n]
    for pattern in getattr(mcfg, key):
        if pattern != ALL_LINEAR and not any(_matches(n, pattern) for n in names):
            raise ConfigError(f"model.{key}: {pattern!r} matches no module of the pretrained {type(backbone).__name__} "
                              f"outside the task head {_examples(backbone)}")


def record_section(mcfg: ModelConfig) -> dict[str, Any]:
    """The record's ``peft`` section: the method and the ``model.*`` parameters it uses."""
    params = {k: getattr(mcfg, k) for k in METHOD_PARAMS[mcfg.peft]}
    if mcfg.train_modules and mcfg.peft != "full":
        params["train_modules"] = list(mcfg.train_modules)
    return {"method": mcfg.peft, "params": params}


def describe(model: nn.Module, mcfg: ModelConfig) -> dict[str, Any]:
    """:func:`record_section` plus trainable and total parameter counts of ``model``."""
    n_total = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {**record_section(mcfg), "n_trainable": n_trainable, "n_total": n_total,
            "trainable_fraction": n_trainable / max(n_total, 1)}


# --------------------------------------------------------------------------- module selection
def _matches(name: str, pattern: str) -> bool:
    """peft's rule for a list of target names: the module's name or a dotted suffix of it."""
    return name == pattern or name.endswith("." + pattern)


def _in_subtree(name: str, roots: Iterable[str]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def _is_bias(param_name: str) -> bool:
    return param_name == "bias" or param_name.endswith(".bias")


def _is_adapter(param_name: str) -> bool:
    return bool(_ADAPTER.search(param_name))


_ADAPTER = re.compile(r"(^|\.)(lora_[AB]|ia3_l|peft_prompt|peft_prefix)(\.|$)")


def _head_and_extra(model: nn.Module, task: Any, mcfg: ModelConfig) -> list[str]:
    """Names of the modules trained in full: the task head and ``model.train_modules``."""
    names = [n for n, _ in model.named_modules() if n]
    roots: list[str] = []
    for pattern in getattr(task, "head_modules", ()):
        roots += [n for n in names if _matches(n, pattern)]
    if not roots:
        log.info("task %s declares no head module present in %s", getattr(task, "name", "?"), type(model).__name__)
    for pattern in mcfg.train_modules:
        found = [n for n in names if _matches(n, pattern)]
        if not found:
            raise ConfigError(f"model.train_modules: {pattern!r} matches no module of {type(model).__name__} "
                              f"{_examples(model)}")
        roots += found
    # keep only the outermost roots
    return [r for r in roots if not any(r != o and r.startswith(o + ".") for o in roots)]


def _examples(model: nn.Module) -> str:
    leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                     if n and isinstance(m, (nn.Linear, nn.Embedding)) and not n.rsplit(".", 1)[-1].isdigit()})
    return f"(its linear/embedding layers are named {', '.join(leaves[:12])}{' ...' if len(leaves) > 12 else ''})"


def _targets(model: nn.Module, patterns: list[str], key: str, keep: list[str]) -> list[str]:
    """Full names of the modules ``patterns`` select, outside the fully trained modules.

    Every pattern must match at least one module (a typo is an error, not a silently smaller
    adapter); ``all-linear`` selects every ``nn.Linear`` outside the head.
    """
    names = [n for n, _ in model.named_modules() if n]
    chosen: list[str] = []
    for pattern in patterns:
        if pattern == ALL_LINEAR:
            found = [n for n, m in model.named_modules() if n and isinstance(m, nn.Linear)]
        else:
            found = [n for n in names if _matches(n, pattern)]
        if not found:
            raise ConfigError(f"model.{key}: {pattern!r} matches no module of {type(model).__name__} "
                              f"{_examples(model)}")
        chosen += [n for n in found if not _in_subtree(n, keep) and n not in chosen]
    if not chosen:
        raise ConfigError(f"model.{key} ({', '.join(patterns)}) selects only modules of the task head, "
                          f"which is trained in full anyway")
    return chosen


def _exact(names: list[str]) -> str:
    """A peft ``target_modules`` regex that selects exactly these module names."""
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


# --------------------------------------------------------------------------- peft-injected methods
def _inject(model: nn.Module, peft_config: Any, key: str) -> None:
    import peft

    try:
        peft.inject_adapter_in_model(peft_config, model)
    except ValueError as exc:  # e.g. a target that is a LayerNorm: peft cannot adapt it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model.{key}: peft cannot adapt the selected modules ({first})") from None


def _lora(model: nn.Module, mcfg: ModelConfig, keep: list[str]) -> None:
    import peft

    targets = _targets(model, mcfg.lora_targets, "lora_targets", keep)
    _inject(model, peft.LoraConfig(r=mcfg.lora_r, lora_alpha=mcfg.lora_alpha, lora_dropout=mcfg.lora_dropout,
                                   target_modules=_exact(targets)), "lora_targets")


def _ia3(model: nn.Module, mcfg: ModelConfig, keep: list[str]) -> None:
    import peft

    targets = _targets(model, mcfg.ia3_targets, "ia3_targets", keep)
    feedforward = [n for n in targets if any(_matches(n, p) for p in mcfg.ia3_feedforward)]
    _inject(model, peft.IA3Config(target_modules=_exact(targets),
                                  feedforward_modules=_exact(feedforward) if feedforward else "^$"), "ia3_targets")


# --------------------------------------------------------------------------- prompt and prefix tuning
def encoder_of(model: nn.Module) -> nn.Module:
    """The module that maps ``input_ids`` to ``last_hidden_state`` (the encoder of an encoder-decoder)."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return model.get_encoder()
    base = getattr(model, "base_model", None)
    if base is None or not hasattr(base, "get_input_embeddings"):
        raise ConfigError(f"prompt and prefix tuning need a Hugging Face transformer, got {type(model).__name__}")
    return base


def _virtual_ids(module: nn.Module, batch: int, n: int) -> torch.Tensor:
    weight = next(module.parameters())
    return torch.arange(n, device=weight.device).unsqueeze(0).expand(batch, n)


def _only_ids_positional(args: tuple) -> None:
    if len(args) > 1:
        raise ValueError("prompt/prefix tuning: the encoder must get everything but input_ids by keyword")


def _input_size(args: tuple, kwargs: dict) -> tuple[int, int, torch.device]:
    ids = kwargs.get("input_ids", args[0] if args else None)
    ref = ids if ids is not None else kwargs["inputs_embeds"]
    return ref.shape[0], ref.shape[1], ref.device


def _prompt(model: nn.Module, mcfg: ModelConfig) -> None:
    import peft

    encoder = encoder_of(model)
    words = encoder.get_input_embeddings()
    n = mcfg.prefix_tokens
    pcfg = peft.PromptTuningConfig(
        num_virtual_tokens=n, token_dim=words.embedding_dim, num_transformer_submodules=1,
        prompt_tuning_init="SAMPLE_VOCAB" if mcfg.prompt_init == "vocab" else "RANDOM")
    prompt = peft.PromptEmbedding(pcfg, words)
    model.peft_prompt = prompt  # a submodule of the model: its parameter joins the flat vector

    def before(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        _only_ids_positional(args)
        ids = kwargs.pop("input_ids", args[0] if args else None)
        embeds = kwargs.pop("inputs_embeds", None)
        if embeds is None:
            embeds = words(ids)
        b = embeds.shape[0]
        virtual = prompt(_virtual_ids(prompt, b, n)).to(embeds.dtype)
        kwargs["inputs_embeds"] = torch.cat([virtual, embeds], 1)
        for key, fill in (("attention_mask", 1), ("token_type_ids", 0)):
            if kwargs.get(key) is not None:
                value = kwargs[key]
                kwargs[key] = torch.cat([value.new_full((b, n), fill), value], 1)
        if kwargs.get("position_ids") is not None:
            raise ValueError("prompt tuning: explicit position_ids are not supported")
        return (), kwargs

    def after(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        hidden = output.last_hidden_state[:, n:]
        output.last_hidden_state = hidden
        pooler = getattr(module, "pooler", None)
        if pooler is not None and getattr(output, "pooler_output", None) is not None:
            output.pooler_output = pooler(hidden)  # pool the real first token, not a virtual one
        return output

    encoder.register_forward_pre_hook(before, with_kwargs=True)
    encoder.register_forward_hook(after, with_kwargs=True)


def _prefix(model: nn.Module, mcfg: ModelConfig) -> None:
    import peft
    from transformers import DynamicCache

    encoder = encoder_of(model)
    config = encoder.config
    layers, heads, hidden = config.num_hidden_layers, config.num_attention_heads, config.hidden_size
    n = mcfg.prefix_tokens
    pcfg = peft.PrefixTuningConfig(num_virtual_tokens=n, token_dim=hidden, num_layers=layers,
                                   num_attention_heads=heads, num_transformer_submodules=1,
                                   encoder_hidden_size=hidden, prefix_projection=mcfg.prefix_projection)
    prefix = peft.PrefixEncoder(pcfg)
    model.peft_prefix = prefix

    def before(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        _only_ids_positional(args)
        if args:
            kwargs["input_ids"], args = args[0], ()
        if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
            raise ValueError("prefix tuning: the encoder was called with a cache already")
        b, t, device = _input_size(args, kwargs)
        # (batch, n, layers * 2 * hidden) -> per layer: keys and values (batch, heads, n, head_dim)
        kv = prefix(_virtual_ids(prefix, b, n)).view(b, n, 2 * layers, heads, hidden // heads)
        kv = kv.permute(2, 0, 3, 1, 4)
        cache = DynamicCache(config=config)
        for layer in range(layers):
            cache.update(kv[2 * layer], kv[2 * layer + 1], layer)
        mask = kwargs.get("attention_mask")
        mask = torch.ones(b, t, dtype=torch.long, device=device) if mask is None else mask
        kwargs["attention_mask"] = torch.cat([mask.new_ones(b, n), mask], 1)
        if kwargs.get("position_ids") is None:  # the real tokens keep positions 0..t-1
            kwargs["position_ids"] = torch.arange(t, device=device).unsqueeze(0).expand(b, t)
        kwargs["cache"] = cache
        return args, kwargs

    encoder.register_forward_pre_hook(before, with_kwargs=True)


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the trainable parameters, in the order the engine's flat vector holds them."""
    return [n for n, p in model.named_parameters() if p.requires_grad]
