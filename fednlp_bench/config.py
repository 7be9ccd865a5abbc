"""Run configuration: dataclasses, YAML presets and ``--set key=value`` overrides.

A run is fully described by :class:`RunConfig`. Presets live in
``fednlp_bench/presets/<task>.yaml`` as ``{preset_name: {section: {key: value}}}``;
command-line ``--set fl.rounds=5`` overrides win over the preset, which wins
over the dataclass defaults. Everything is validated up front, before any data
is prepared or any file written.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from fednlp_bench.aggregation import AGGREGATORS
from fednlp_bench.errors import ConfigError
from fednlp_bench.hparams import Checked, did_you_mean, param


@dataclass
class DataConfig(Checked):
    _prefix = "data."
    max_len: int = param(128, low=8, high=8192)
    split_seed: int = 0
    test_fraction: float = param(0.2, low=0.0, low_open=True, high=0.9)
    val_fraction: float = param(0.1, low=0.0, high=0.5, high_open=True, interval=True,
                                doc="share of the train split held out (stratified) for per-round evaluation and "
                                    "tuning; 0: no validation split, no per-round curves")
    max_val: int | None = param(None, low=1, doc="cap on the validation rows")
    max_train: int | None = param(None, low=1, doc="subsample the train split (seeded) for quick presets")
    max_test: int | None = param(None, low=1)


@dataclass
class PartitionConfig(Checked):
    _prefix = "partition."
    method: str = "uniform"
    n_clients: int = 10  # >= 1, or 0 with natural (one client per group): checked in check()
    params: dict[str, Any] = param(default_factory=dict)


@dataclass
class FLConfig(Checked):
    _prefix = "fl."
    rounds: int = param(10, low=1)
    clients_per_round: int = param(5, low=1)
    local_epochs: int = param(1, low=1)
    local_steps: int | None = param(None, low=1, doc="if set, exactly this many optimiser steps per client")
    batch_size: int = param(16, low=1)
    client_lr: float = param(5e-5, low=0.0, low_open=True, high=10.0)
    weight_decay: float = param(0.0, low=0.0, high=1.0)
    client_optimizer: str = param("adamw", choices=("adamw", "sgd"),
                                  doc="local optimiser of every client (and of the centralized reference)")
    client_momentum: float = param(0.0, low=0, high=1, high_open=True, interval=True,
                                   doc="sgd: heavy-ball momentum (0 = plain SGD, as SCAFFOLD's analysis assumes)")
    sparse_embeddings: bool = param(True, doc="exact row-sparse client updates of vocabulary embeddings")
    aggregator: str = param("mean", choices=AGGREGATORS, doc="mean (weighted), trimmed_mean or median")
    trim_fraction: float = param(0.1, low=0.0, high=0.5, high_open=True, interval=True,
                                 doc="trimmed_mean: fraction cut from each end per coordinate")
    sampler: str = "uniform"
    eval_every: int = param(1, low=1, doc="rounds between validation evaluations")
    best_val_test: bool = param(False, doc="also test the best-validation round's model (recorded separately)")
    eval_batch_size: int = param(128, low=1)
    checkpoint_every: int | None = param(None, low=1, doc="rounds between checkpoints (None: no checkpoints)")
    dropout: float = param(0.0, low=0.0, high=1.0, high_open=True, interval=True,
                           doc="fraction of each round's sampled clients that fail to report")
    continual: bool = param(False, doc="client data arrive over rounds (fednlp_bench.continual)")
    arrival: str = param("fixed", choices=("fixed", "poisson"), doc="continual: fixed or poisson arrivals")
    arrival_per_round: float = param(10.0, low=0.0, low_open=True,
                                     doc="continual: rows (mean rows for poisson) arriving per client per round")
    arrival_order: str = param("chronological", choices=("chronological", "random"))
    storage_cap: int | None = param(None, low=1, doc="continual: rows a client keeps, oldest deleted first")


@dataclass
class AlgorithmConfig(Checked):
    _prefix = "algorithm."
    name: str = "fedavg"
    params: dict[str, Any] = param(default_factory=dict)


@dataclass
class PrivacyConfig(Checked):
    """Differential privacy of a run; everything off by default (see docs/privacy.md)."""

    _prefix = "privacy."
    user_level: bool = param(False, doc="DP-FedAvg (McMahan et al. 2018): clip client deltas, noise the sum")
    user_clip: float = param(1.0, low=0.0, low_open=True, doc="clip norm C (initial C when adaptive_clip)")
    user_noise: float | None = param(None, low=0.0, doc="noise multiplier; default 1.0 unless user_target_epsilon")
    user_target_epsilon: float | None = param(None, low=0.0, low_open=True,
                                              doc="solve the noise multiplier for this epsilon")
    adaptive_clip: bool = param(False, doc="Andrew et al. 2021: track the clip_quantile of update norms")
    clip_quantile: float = param(0.5, low=0.0, low_open=True, high=1.0)
    clip_lr: float = param(0.2, low=0.0, low_open=True)
    clip_count_noise: float | None = param(None, low=0.0, low_open=True,
                                           doc="stddev of the clipped-count noise; default clients_per_round / 20")
    sample_level: bool = param(False, doc="DP-SGD inside clients (Abadi et al. 2016)")
    sample_clip: float = param(1.0, low=0.0, low_open=True)
    sample_noise: float = param(1.0, low=0.0)
    per_sample_method: str = param("ghost", choices=("ghost", "vmap"))
    delta: float | None = param(None, low=0.0, low_open=True, high=0.5,
                                doc="user level; default min(1e-5, clients^-1.1)")
    sample_delta: float | None = param(None, low=0.0, low_open=True, high=0.5,
                                       doc="sample level; default min(1e-5, training examples^-1.1)")
    accountant: str = param("pld", choices=("pld", "rdp"), doc="dp-accounting accountant")
    audit: bool = param(False, doc="loss-threshold membership inference on the final model")
    audit_reference_models: int = param(0, low=0, doc="> 0 adds offline LiRA with this many reference models")
    canaries: int = param(0, low=0, doc="> 0 inserts this many copies of a secret-carrying canary into one client")
    canary_candidates: int = param(1000, low=0, doc="random secrets the true one is ranked against (exposure)")
    canary_attack: str = param("exposure", choices=("exposure", "invert"),
                               doc="exposure: rank the secret by loss; invert: white-box model inversion")
    canary_count: int = param(10, low=1, high=24, doc="invert: distinct 4-digit canaries (one per prefix key), "
                                                      "each inserted privacy.canaries times")
    model_dropout: float | None = param(None, low=0.0, high=1.0, high_open=True, interval=True,
                                        doc="hidden/attention dropout while training (None: the checkpoint's)")


@dataclass
class FairnessConfig(Checked):
    """Fairness probes of the final model (per-client distribution is always in the record)."""

    _prefix = "fairness."
    counterfactual: bool = param(True, doc="gender-term swap probe on the test set (tc, st, lm; docs/privacy.md)")
    cda: bool = param(False, doc="counterfactual data augmentation: each client adds gender-swapped copies of its rows")
    sensitivity: bool = param(False, doc="prediction sensitivity (Krishna et al. 2022) on the test set")
    intrinsic: bool = param(False, doc="SEAT-style association test over the encoder's sentence representations")


# --- model and parameter-efficient fine-tuning (fednlp_bench/peft_methods.py, docs/peft.md) ---
PEFT_METHODS = ("full", "lora", "prefix", "prompt", "ia3", "bitfit", "head")
_MODULE_LISTS = ("lora_targets", "ia3_targets", "ia3_feedforward", "train_modules")


@dataclass
class ModelConfig(Checked):
    """The pretrained model and which of its parameters are trained and communicated."""

    _prefix = "model."
    name: str = param("minilm-l6", doc="packaged alias, local path or HF hub id (--model)")
    peft: str = param("full", choices=PEFT_METHODS, doc="what is fine-tuned and sent (--peft)")
    lora_r: int = param(8, low=1, doc="lora: rank")
    lora_alpha: float = param(16.0, low=0.0, low_open=True, finite=True, doc="lora: scale alpha / r")
    lora_dropout: float = param(0.0, low=0.0, high=1.0, high_open=True, interval=True, doc="lora: input dropout")
    lora_targets: list[str] = param(default_factory=lambda: ["query", "value"],
                                    doc="lora: module names or dotted suffixes; all-linear")
    prefix_tokens: int = param(10, low=1, high=512, doc="prefix and prompt: virtual tokens")
    prefix_projection: bool = param(False, doc="prefix: Li & Liang's MLP reparameterisation")
    prompt_init: str = param("vocab", choices=("vocab", "random"), doc="prompt: sampled-vocabulary or random init")
    ia3_targets: list[str] = param(default_factory=lambda: ["key", "value", "output.dense"], doc="ia3: modules")
    ia3_feedforward: list[str] = param(default_factory=lambda: ["output.dense"],
                                       doc="ia3: targets whose input (not output) is rescaled")
    train_modules: list[str] = param(default_factory=list,
                                     doc="modules trained in full besides the task head (peft's modules_to_save)")

    def __post_init__(self) -> None:
        for name in _MODULE_LISTS:  # --set model.lora_targets=query,value
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, [t.strip() for t in value.split(",") if t.strip()])
        super().__post_init__()
        for name in _MODULE_LISTS:
            value = getattr(self, name)
            if not all(isinstance(t, str) and t for t in value):
                raise ConfigError(f"model.{name} must be a list of module names, got {value!r}")
        for name in ("lora_targets", "ia3_targets"):
            if not getattr(self, name):
                raise ConfigError(f"model.{name} must name at least one module")
        stray = sorted(set(self.ia3_feedforward) - set(self.ia3_targets))
        if stray:
            raise ConfigError(f"model.ia3_feedforward must be a subset of model.ia3_targets; {stray} are not targets")
# --- end model ---------------------------------------------------------------------------------

#: top-level keys that say where and how a run ran, not what it computed (so not part of its identity)
VOLATILE = ("results_dir", "wandb", "progress", "resume", "device", "threads")


def stable_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a :meth:`RunConfig.to_dict`) without what does not change the results: the
    :data:`VOLATILE` keys and ``fl.checkpoint_every``. Two runs with equal stable configs compute the
    same thing; the checkpoint folder and the suite's cell identity are keyed by it."""
    stable = {k: v for k, v in config.items() if k not in VOLATILE}
    if isinstance(stable.get("fl"), dict):
        stable["fl"] = {k: v for k, v in stable["fl"].items() if k != "checkpoint_every"}
    return stable


@dataclass
class RunConfig(Checked):
    task: str = "tc"
    dataset: str = "bbc"
    model: ModelConfig = field(default_factory=ModelConfig)
    preset: str | None = None
    seed: int = param(0, low=0)
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    fl: FLConfig = field(default_factory=FLConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    fairness: FairnessConfig = field(default_factory=FairnessConfig)
    results_dir: str = "results"
    wandb: str = param("offline", choices=("offline", "online", "disabled"))
    device: str = "auto"
    threads: int | None = param(None, low=1)
    progress: bool = True
    resume: bool = param(False, doc="continue from this config's last checkpoint if there is one")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "partition": PartitionConfig, "fl": FLConfig, "algorithm": AlgorithmConfig,
             "privacy": PrivacyConfig, "fairness": FairnessConfig, "model": ModelConfig}
# A section given a plain value sets this key of it: ``--model X`` / ``model: X`` -> model.name.
_SHORTHAND = {"model": "name"}
# Keys whose value is a free-form dict (validated later by the partitioner/algorithm).
_FREE_DICTS = {("partition", "params"), ("algorithm", "params")}
# Aliases so users can write --set partition.alpha=0.1 / algorithm.mu=0.01.
_PASSTHROUGH = {"partition": "params", "algorithm": "params"}


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
        raise ConfigError(f"unknown config key '{dotted}' {did_you_mean(parts[0], top)}")
    if parts[0] not in _SECTIONS:
        if len(parts) != 1:
            raise ConfigError(f"config key '{parts[0]}' has no sub-keys (got '{dotted}')")
        raw[parts[0]] = value
        return
    if len(parts) == 1 and parts[0] in _SHORTHAND:
        raw.setdefault(parts[0], {})[_SHORTHAND[parts[0]]] = value
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
    raise ConfigError(f"unknown config key '{dotted}' {did_you_mean(parts[1], names)}")


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
    raise ConfigError(f"unknown preset '{preset}' for task '{task}' {did_you_mean(preset, options)}")


def build(raw: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from a nested dict, rejecting unknown keys."""
    kwargs: dict[str, Any] = {}
    top = _field_names(RunConfig)
    for key, value in raw.items():
        if key not in top:
            raise ConfigError(f"unknown config key '{key}' {did_you_mean(key, top)}")
        if key in _SHORTHAND and not isinstance(value, dict):
            value = {_SHORTHAND[key]: value}
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"config section '{key}' must be a mapping, got {value!r}")
            names = _field_names(_SECTIONS[key])
            for sub in value:
                if sub not in names:
                    raise ConfigError(f"unknown config key '{key}.{sub}' {did_you_mean(sub, names)}")
            kwargs[key] = _SECTIONS[key](**value)
        else:
            kwargs[key] = value
    cfg = RunConfig(**kwargs)
    check(cfg)
    return cfg


def check(cfg: RunConfig) -> None:
    """Rules across fields (each field's own type and range are checked when it is set)."""
    p, f = cfg.partition, cfg.fl
    if not (p.method in ("natural", "fednlp") and p.n_clients == 0):  # 0 = one client per group / as in the file
        if p.n_clients < 1:
            raise ConfigError(f"partition.n_clients must be >= 1 (or 0 with --partition natural: one client "
                              f"per group, or fednlp: the file's clients), got {p.n_clients}")
    if f.storage_cap is not None and not f.continual:
        raise ConfigError("fl.storage_cap applies to the continual setting only; add --set fl.continual=true")
    if p.n_clients and f.clients_per_round > p.n_clients:  # natural with 0: checked against the groups
        raise ConfigError(
            f"fl.clients_per_round ({f.clients_per_round}) must be <= partition.n_clients ({p.n_clients})"
        )
    check_privacy(cfg)


def check_privacy(cfg: RunConfig) -> None:
    """Rules across the ``privacy`` section and the rest of the run."""
    pv = cfg.privacy
    if pv.canaries and not 1 <= pv.canary_candidates < 10 ** 6:
        raise ConfigError(f"privacy.canary_candidates must be in [1, 999999] (secrets are 6 digits), "
                          f"got {pv.canary_candidates}")
    if pv.audit_reference_models and not pv.audit:
        raise ConfigError("privacy.audit_reference_models needs privacy.audit=true")
    if cfg.fairness.cda and cfg.fl.continual:
        raise ConfigError("fairness.cda needs the static setting (fl.continual=false): augmented copies "
                          "would arrive out of the clients' order")
    if pv.canaries and cfg.fl.continual:
        raise ConfigError("privacy.canaries needs the static setting (fl.continual=false)")
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
    for key, sub in _SHORTHAND.items():
        if key in raw and not isinstance(raw[key], dict):
            raw[key] = {sub: raw[key]}
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
