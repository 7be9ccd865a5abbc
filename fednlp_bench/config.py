"""Run configuration: dataclasses, YAML presets and ``--set key=value`` overrides.

A run is fully described by :class:`RunConfig`. Presets live in
``fednlp_bench/presets/<task>.yaml`` as ``{preset_name: {section: {key: value}}}``;
command-line ``--set fl.rounds=5`` overrides win over the preset, which wins
over the dataclass defaults. Everything is validated up front, before any data
is prepared or any file written.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from fednlp_bench.errors import ConfigError  # noqa: F401 - re-exported


@dataclass
class DataConfig:
    max_len: int = 128
    split_seed: int = 0
    test_fraction: float = 0.2
    max_train: int | None = None  # subsample the train split (seeded) for quick presets
    max_test: int | None = None


@dataclass
class PartitionConfig:
    method: str = "uniform"
    n_clients: int = 10
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class FLConfig:
    rounds: int = 10
    clients_per_round: int = 5
    local_epochs: int = 1
    local_steps: int | None = None  # if set, exactly this many optimiser steps per client
    batch_size: int = 16
    client_lr: float = 5e-5
    weight_decay: float = 0.0
    sparse_embeddings: bool = True  # exact row-sparse client updates of vocabulary embeddings (sparse_rows.py)
    sampler: str = "uniform"
    eval_every: int = 1
    eval_batch_size: int = 128
    checkpoint_every: int | None = None  # rounds between checkpoints (None: no checkpoints)
    dropout: float = 0.0  # fraction of each round's sampled clients that fail to report
    continual: bool = False  # client data arrive over rounds (fednlp_bench.continual)
    arrival: str = "fixed"  # continual: fixed rows per round, or poisson
    arrival_per_round: float = 10.0  # continual: rows (mean rows for poisson) arriving per client per round
    arrival_order: str = "chronological"  # continual: chronological (row order) or random
    storage_cap: int | None = None  # continual: rows a client keeps, oldest deleted first (None: all)


@dataclass
class AlgorithmConfig:
    name: str = "fedavg"
    params: dict[str, Any] = field(default_factory=dict)


# --- privacy (issue 8; fednlp_bench/privacy) -----------------------------------------
@dataclass
class PrivacyConfig:
    """Differential privacy of a run; everything off by default (see docs/privacy.md)."""

    user_level: bool = False  # DP-FedAvg (McMahan et al. 2018): clip client deltas, noise the sum
    user_clip: float = 1.0  # initial clip norm C when adaptive_clip
    user_noise: float | None = None  # noise multiplier; default 1.0 unless user_target_epsilon is set
    user_target_epsilon: float | None = None  # solve the noise multiplier for this epsilon
    adaptive_clip: bool = False  # Andrew et al. 2021: track the clip_quantile of update norms
    clip_quantile: float = 0.5
    clip_lr: float = 0.2
    clip_count_noise: float | None = None  # stddev of the clipped-count noise; default clients_per_round / 20
    sample_level: bool = False  # DP-SGD inside clients (Abadi et al. 2016)
    sample_clip: float = 1.0
    sample_noise: float = 1.0
    per_sample_method: str = "ghost"  # ghost | vmap
    delta: float | None = None  # user level; default 1 / number of clients
    sample_delta: float | None = None  # sample level; default 1 / training examples
    accountant: str = "pld"  # pld | rdp (dp-accounting)
    audit: bool = False  # loss-threshold membership inference on the final model (fednlp_bench/audit)
    audit_reference_models: int = 0  # > 0 adds offline LiRA with this many reference models (tc)
    canaries: int = 0  # > 0 inserts this many copies of a secret-carrying canary into one client (tc)
    canary_candidates: int = 1000  # random secrets the true one is ranked against (exposure)
# --- end privacy ------------------------------------------------------------------------


@dataclass
class FairnessConfig:
    """Fairness probes of the final model (per-client distribution is always in the record)."""

    counterfactual: bool = True  # gender-term swap probe on the test set (tasks with encode_texts: tc)


@dataclass
class RunConfig:
    task: str = "tc"
    dataset: str = "bbc"
    model: str = "minilm-l6"
    preset: str | None = None
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    fl: FLConfig = field(default_factory=FLConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    fairness: FairnessConfig = field(default_factory=FairnessConfig)
    results_dir: str = "results"
    wandb: str = "offline"
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    resume: bool = False  # continue from this config's last checkpoint if there is one

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "partition": PartitionConfig, "fl": FLConfig, "algorithm": AlgorithmConfig,
             "privacy": PrivacyConfig, "fairness": FairnessConfig}
# Keys whose value is a free-form dict (validated later by the partitioner/algorithm).
_FREE_DICTS = {("partition", "params"), ("algorithm", "params")}
# Aliases so users can write --set partition.alpha=0.1 / algorithm.mu=0.01.
_PASSTHROUGH = {"partition": "params", "algorithm": "params"}


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"(allowed: {', '.join(sorted(options))}){hint}"


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value with YAML rules (``5`` -> int, ``1e-3`` -> float, ``null``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        # YAML 1.1 reads 1e-3 as a string; accept it as a float.
        try:
            return float(value)
        except ValueError:
            return value
    return value


def set_key(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw[section][key] = value`` for a dotted key, checking the names exist."""
    parts = dotted.split(".")
    top = _field_names(RunConfig)
    if parts[0] not in top:
        raise ConfigError(f"unknown config key '{dotted}' {_did_you_mean(parts[0], top)}")
    if parts[0] not in _SECTIONS:
        if len(parts) != 1:
            raise ConfigError(f"config key '{parts[0]}' has no sub-keys (got '{dotted}')")
        raw[parts[0]] = value
        return
    if len(parts) == 1:
        raise ConfigError(f"config key '{dotted}' needs a sub-key, e.g. '{dotted}.{_field_names(_SECTIONS[dotted])[0]}'")
    section = raw.setdefault(parts[0], {})
    names = _field_names(_SECTIONS[parts[0]])
    if len(parts) == 2 and parts[1] in names and (parts[0], parts[1]) not in _FREE_DICTS:
        section[parts[1]] = value
        return
    if parts[0] in _PASSTHROUGH:
        # partition.alpha=0.1 or partition.params.alpha=0.1 -> partition.params.alpha
        rest = parts[2:] if parts[1] == _PASSTHROUGH[parts[0]] else parts[1:]
        if len(rest) != 1:
            raise ConfigError(f"config key '{dotted}' is too deep")
        section.setdefault(_PASSTHROUGH[parts[0]], {})[rest[0]] = value
        return
    raise ConfigError(f"unknown config key '{dotted}' {_did_you_mean(parts[1], names)}")


def load_preset(task: str, preset: str) -> dict[str, Any]:
    """Return the raw dict of ``preset`` for ``task`` from the packaged YAML."""
    try:
        text = resources.files("fednlp_bench.presets").joinpath(f"{task}.yaml").read_text()
    except FileNotFoundError:
        return {} if preset is None else _missing_preset(task, preset, [])
    presets = yaml.safe_load(text) or {}
    if preset is None:
        return {}
    if preset not in presets:
        _missing_preset(task, preset, list(presets))
    return presets[preset] or {}


def _missing_preset(task: str, preset: str, options: list[str]) -> dict:
    if not options:
        raise ConfigError(f"task '{task}' has no presets; run without --preset")
    raise ConfigError(f"unknown preset '{preset}' for task '{task}' {_did_you_mean(preset, options)}")


def _expect(name: str, value: Any, kind: type | tuple, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        names = " or ".join(k.__name__ for k in kinds) + (" or null" if allow_none else "")
        raise ConfigError(f"{name} must be {names}, got {value!r}")


def _range(name: str, value: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> None:
    if value is None:
        return
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name} must be <= {hi}, got {value!r}")


def build(raw: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from a nested dict, rejecting unknown keys."""
    kwargs: dict[str, Any] = {}
    top = _field_names(RunConfig)
    for key, value in raw.items():
        if key not in top:
            raise ConfigError(f"unknown config key '{key}' {_did_you_mean(key, top)}")
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"config section '{key}' must be a mapping, got {value!r}")
            names = _field_names(_SECTIONS[key])
            for sub in value:
                if sub not in names:
                    raise ConfigError(f"unknown config key '{key}.{sub}' {_did_you_mean(sub, names)}")
            kwargs[key] = _SECTIONS[key](**value)
        else:
            kwargs[key] = value
    cfg = RunConfig(**kwargs)
    check(cfg)
    return cfg


def check(cfg: RunConfig) -> None:
    """Type and range checks for every field; raises :class:`ConfigError`."""
    for name in ("task", "dataset", "model", "results_dir", "device"):
        _expect(name, getattr(cfg, name), str)
    _expect("seed", cfg.seed, int)
    _range("seed", cfg.seed, 0)
    _expect("threads", cfg.threads, int, allow_none=True)
    _range("threads", cfg.threads, 1)
    _expect("progress", cfg.progress, bool)
    if cfg.wandb not in ("offline", "online", "disabled"):
        raise ConfigError(f"wandb must be one of offline, online, disabled, got {cfg.wandb!r}")
    d = cfg.data
    _expect("data.max_len", d.max_len, int)
    _range("data.max_len", d.max_len, 8, 8192)
    _expect("data.split_seed", d.split_seed, int)
    _expect("data.test_fraction", d.test_fraction, float)
    _range("data.test_fraction", d.test_fraction, 0.0, 0.9, lo_open=True)
    for name in ("max_train", "max_test"):
        _expect(f"data.{name}", getattr(d, name), int, allow_none=True)
        _range(f"data.{name}", getattr(d, name), 1)
    p = cfg.partition
    _expect("partition.method", p.method, str)
    _expect("partition.n_clients", p.n_clients, int)
    if not (p.method == "natural" and p.n_clients == 0):  # natural: 0 = one client per group
        if p.n_clients < 1:
            raise ConfigError(f"partition.n_clients must be >= 1 (or 0 with --partition natural: one client "
                              f"per group), got {p.n_clients}")
    _expect("partition.params", p.params, dict)
    f = cfg.fl
    for name in ("rounds", "clients_per_round", "local_epochs", "batch_size", "eval_every", "eval_batch_size"):
        _expect(f"fl.{name}", getattr(f, name), int)
        _range(f"fl.{name}", getattr(f, name), 1)
    _expect("fl.checkpoint_every", f.checkpoint_every, int, allow_none=True)
    _range("fl.checkpoint_every", f.checkpoint_every, 1)
    _expect("resume", cfg.resume, bool)
    _expect("fl.local_steps", f.local_steps, int, allow_none=True)
    _range("fl.local_steps", f.local_steps, 1)
    _expect("fl.client_lr", f.client_lr, float)
    _range("fl.client_lr", f.client_lr, 0.0, 10.0, lo_open=True)
    _expect("fl.weight_decay", f.weight_decay, float)
    _range("fl.weight_decay", f.weight_decay, 0.0, 1.0)
    _expect("fl.sampler", f.sampler, str)
    _expect("fl.sparse_embeddings", f.sparse_embeddings, bool)
    _expect("fl.dropout", f.dropout, float)
    if not 0.0 <= f.dropout < 1.0:
        raise ConfigError(f"fl.dropout must be in [0, 1), got {f.dropout!r}")
    _expect("fl.continual", f.continual, bool)
    _expect("fl.arrival", f.arrival, str)
    if f.arrival not in ("fixed", "poisson"):
        raise ConfigError(f"fl.arrival must be fixed or poisson, got {f.arrival!r}")
    _expect("fl.arrival_per_round", f.arrival_per_round, float)
    _range("fl.arrival_per_round", f.arrival_per_round, 0.0, lo_open=True)
    _expect("fl.arrival_order", f.arrival_order, str)
    if f.arrival_order not in ("chronological", "random"):
        raise ConfigError(f"fl.arrival_order must be chronological or random, got {f.arrival_order!r}")
    _expect("fl.storage_cap", f.storage_cap, int, allow_none=True)
    _range("fl.storage_cap", f.storage_cap, 1)
    if f.storage_cap is not None and not f.continual:
        raise ConfigError("fl.storage_cap applies to the continual setting only; add --set fl.continual=true")
    if p.n_clients and f.clients_per_round > p.n_clients:  # natural with 0: checked against the groups
        raise ConfigError(
            f"fl.clients_per_round ({f.clients_per_round}) must be <= partition.n_clients ({p.n_clients})"
        )
    _expect("algorithm.name", cfg.algorithm.name, str)
    _expect("algorithm.params", cfg.algorithm.params, dict)
    check_privacy(cfg)


def check_privacy(cfg: RunConfig) -> None:
    """Checks of the ``privacy`` section (issue 8)."""
    pv = cfg.privacy
    for name in ("user_level", "adaptive_clip", "sample_level", "audit"):
        _expect(f"privacy.{name}", getattr(pv, name), bool)
    for name in ("user_clip", "clip_lr", "sample_clip"):
        _expect(f"privacy.{name}", getattr(pv, name), float)
        _range(f"privacy.{name}", getattr(pv, name), 0.0, lo_open=True)
    for name in ("user_noise", "sample_noise"):
        _expect(f"privacy.{name}", getattr(pv, name), float, allow_none=name == "user_noise")
        _range(f"privacy.{name}", getattr(pv, name), 0.0)
    for name in ("user_target_epsilon", "clip_count_noise"):
        _expect(f"privacy.{name}", getattr(pv, name), float, allow_none=True)
        _range(f"privacy.{name}", getattr(pv, name), 0.0, lo_open=True)
    _expect("privacy.clip_quantile", pv.clip_quantile, float)
    _range("privacy.clip_quantile", pv.clip_quantile, 0.0, 1.0, lo_open=True)
    for name in ("delta", "sample_delta"):
        _expect(f"privacy.{name}", getattr(pv, name), float, allow_none=True)
        _range(f"privacy.{name}", getattr(pv, name), 0.0, 0.5, lo_open=True)
    for name in ("audit_reference_models", "canaries", "canary_candidates"):
        _expect(f"privacy.{name}", getattr(pv, name), int)
        _range(f"privacy.{name}", getattr(pv, name), 0)
    if pv.canaries and not 1 <= pv.canary_candidates < 10 ** 6:
        raise ConfigError(f"privacy.canary_candidates must be in [1, 999999] (secrets are 6 digits), "
                          f"got {pv.canary_candidates}")
    if pv.audit_reference_models and not pv.audit:
        raise ConfigError("privacy.audit_reference_models needs privacy.audit=true")
    if (pv.canaries or pv.audit_reference_models) and cfg.task != "tc":
        raise ConfigError(f"privacy.canaries and privacy.audit_reference_models support task tc, "
                          f"not {cfg.task!r}")
    if pv.canaries and cfg.fl.continual:
        raise ConfigError("privacy.canaries needs the static setting (fl.continual=false)")
    _expect("fairness.counterfactual", cfg.fairness.counterfactual, bool)
    if pv.per_sample_method not in ("ghost", "vmap"):
        raise ConfigError(f"privacy.per_sample_method must be ghost or vmap, got {pv.per_sample_method!r}")
    if pv.accountant not in ("pld", "rdp"):
        raise ConfigError(f"privacy.accountant must be pld or rdp, got {pv.accountant!r}")
    if pv.user_noise is not None and pv.user_target_epsilon is not None:
        raise ConfigError("set privacy.user_noise or privacy.user_target_epsilon, not both")
    if pv.adaptive_clip and not pv.user_level:
        raise ConfigError("privacy.adaptive_clip needs privacy.user_level=true")
    if pv.user_level and cfg.algorithm.name == "centralized":
        raise ConfigError("privacy.user_level needs federated clients; the centralized baseline has none "
                          "(use privacy.sample_level for DP-SGD)")
    if pv.user_level and cfg.fl.sampler != "uniform":
        raise ConfigError(f"privacy.user_level accounting assumes uniform client sampling; "
                          f"fl.sampler is {cfg.fl.sampler!r}")


def resolve(task: str, preset: str | None, overrides: list[str] | None = None, **top: Any) -> RunConfig:
    """Preset -> top-level options -> ``--set`` overrides -> validated :class:`RunConfig`."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in load_preset(task, preset).items()}
    for section in _SECTIONS:
        if section in raw:
            raw[section] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw[section].items()}
    raw["task"] = task
    raw["preset"] = preset
    for key, value in top.items():
        if value is not None:
            set_key(raw, key, value)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, _, text = item.partition("=")
        set_key(raw, key.strip(), parse_value(text.strip()))
    return build(raw)
