"""What makes two runs comparable: the table key, the reference key and the row key.

- **Table key** (:class:`TableKey`): every setting that changes the experiment. Task, dataset,
  model; the partition (method, parameters without seed keys, number of clients); the budget
  (rounds, clients per round, local epochs / steps, batch size, client lr, weight decay, client
  optimizer and momentum, server aggregator, ``max_len``); the data sizes (``n_train``,
  ``n_val``, ``n_test``); the setting (static or continual, with its arrival parameters), the
  client sampler and dropout; the preset; the privacy mode (none, user-level or sample-level
  DP); and, when a record has them, its ``peft`` section and ``track``. For a task that is not
  built in, the primary metric the records declare is part of the key too (see
  :func:`primary_metric`).
- **Reference key** (:func:`reference_key`): what a centralized run must share with a table to
  be its reference: task, dataset, model, data sizes, ``max_len``, rounds, local epochs /
  steps, batch size, client lr, weight decay, client optimizer and momentum, peft and track.
  Client sampling settings and the aggregator do not apply to a centralized run. On a track the
  client lr is left out (the track tunes the reference's lr on validation). A gap is only
  shown against such a reference.
- **Row key** (:func:`row_key`): the algorithm name and hyper-parameters, the plugin's
  identity (:func:`plugin_id`: a file plugin's SHA-256, a package's distribution and version),
  the DP noise and clip, and the run's departures from the algorithm's paper setup
  (``algorithm.deviations``); runs with the same row key are seeds of one row, so two versions
  of a plugin are never averaged together.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from fednlp_bench.record_checks import TASK_ORDER, TASK_PRIMARY

REFERENCE_ALGORITHM = "centralized"
REFERENCE_PARTITION = "none"
SEED_KEYS = frozenset({"seed", "seeds", "partition_seed", "split_seed"})
BUDGET_FIELDS = ("rounds", "clients_per_round", "local_epochs", "local_steps", "batch_size", "client_lr",
                 "weight_decay", "client_optimizer", "client_momentum", "aggregator")
DATA_FIELDS = ("n_train", "n_val", "n_test")
REFERENCE_FL_FIELDS = ("rounds", "local_epochs", "local_steps", "batch_size", "client_lr", "weight_decay",
                       "client_optimizer", "client_momentum")


def canonical(obj: Any) -> str:
    """Stable compact JSON used for keys and hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def short_value(v: Any) -> str:
    """A parameter value as short text: ``0.0001``, ``adam``, compact JSON for anything else."""
    if isinstance(v, float):
        return f"{v:g}"
    return v if isinstance(v, str) else canonical(v)


def without_seed(d: Any) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in SEED_KEYS} if isinstance(d, dict) else {}


def task_rank(task: str) -> tuple[int, str]:
    """tc, st, qa, s2s first (the benchmark's order), then other tasks by name."""
    return (TASK_ORDER.index(task), "") if task in TASK_ORDER else (len(TASK_ORDER), task)


def primary_metric(record: dict[str, Any]) -> str:
    """The task's primary metric (:data:`TASK_PRIMARY`), never a record's choice.

    For a task that is not built in there is no fixed metric; the metric the record declares
    is used *and* is part of its table key, so records can only ever share a table with
    records that declare the same metric.
    """
    return TASK_PRIMARY.get(record["task"], record["metrics"]["primary"])


def dp_levels(record: dict[str, Any]) -> list[str]:
    """``["user"]``, ``["sample"]``, both or none: the DP levels the run used."""
    priv = record.get("privacy") or {}
    return [name for level, name in (("user_level", "user"), ("sample_level", "sample")) if priv.get(level)]


def privacy_mode(record: dict[str, Any]) -> str:
    """"" without DP, else e.g. "user-level DP" (part of the table key)."""
    levels = dp_levels(record)
    return " + ".join(f"{lv}-level DP" for lv in levels)


def privacy_row(record: dict[str, Any]) -> dict[str, Any]:
    """Noise multiplier and clip per DP level (part of the row key)."""
    priv = record.get("privacy") or {}
    out = {}
    for level in ("user_level", "sample_level"):
        p = priv.get(level)
        if p:
            out[level] = {"noise_multiplier": p.get("noise_multiplier"), "clip": p.get("clip")}
    return out


def max_len(record: dict[str, Any]) -> int | None:
    data = (record.get("config") or {}).get("data")
    v = data.get("max_len") if isinstance(data, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def is_reference(record: dict[str, Any]) -> bool:
    """A built-in centralized run without DP: the reference of tables with the same reference key
    (a plugin that calls itself "centralized" is an ordinary row)."""
    central = record["algorithm"]["name"] == REFERENCE_ALGORITHM or record["partition"]["method"] == REFERENCE_PARTITION
    return central and not dp_levels(record) and plugin_identity(record) is None


def setup(record: dict[str, Any]) -> dict[str, Any]:
    """Everything in the table key except task, dataset, model and partition."""
    fl = record["fl"]
    out: dict[str, Any] = {k: fl.get(k) for k in BUDGET_FIELDS + DATA_FIELDS}
    out["max_len"] = max_len(record)
    out["setting"] = fl.get("setting") or "static"
    out["continual"] = fl.get("continual") or None
    out["sampler"] = fl.get("sampler") or "uniform"
    out["dropout"] = fl.get("dropout") or 0.0
    out["preset"] = record["preset"]
    out["privacy"] = privacy_mode(record)
    for key in ("peft", "track"):
        if record.get(key):
            out[key] = record[key]
    if record["task"] not in TASK_PRIMARY:
        out["primary"] = record["metrics"]["primary"]
    return {k: v for k, v in out.items() if v is not None}


def reference_key(record: dict[str, Any]) -> str:
    """What a table and its centralized reference must share (see the module docstring).

    On a track the client lr is left out: the track fixes it for every FL algorithm and tunes the
    centralized reference's own lr on validation (its tuning protocol), so the reference of a track
    table is the tuned centralized run of the same track version, never a run of another budget.
    """
    fl = record["fl"]
    fields = REFERENCE_FL_FIELDS if not record.get("track") else tuple(f for f in REFERENCE_FL_FIELDS
                                                                       if f != "client_lr")
    parts = {k: fl.get(k) for k in fields + DATA_FIELDS}
    parts.update(task=record["task"], dataset=record["dataset"], model=record["model"], max_len=max_len(record),
                 peft=record.get("peft") or None, track=record.get("track") or None,
                 primary=primary_metric(record))
    return canonical(parts)


def plugin_identity(record: dict[str, Any]) -> dict[str, Any] | None:
    """``provenance.plugin`` when the algorithm's code is not built in (None for built-ins).

    Records written before plugins were identified have no such field; they count as built-in.
    """
    plugin = record["provenance"].get("plugin")
    if not isinstance(plugin, dict) or plugin.get("source") == "builtin":
        return None
    return plugin


def plugin_id(record: dict[str, Any]) -> str:
    """What tells two versions of a plugin apart ('' for built-ins): a file plugin's SHA-256
    (its path does not matter: the same bytes are the same code), an installed package's
    distribution name and version, otherwise the whole ``provenance.plugin`` section."""
    plugin = plugin_identity(record)
    if plugin is None:
        return ""
    if isinstance(plugin.get("sha256"), str):
        return f"sha256 {plugin['sha256']}"
    dist = plugin.get("distribution") or plugin.get("package")
    if isinstance(dist, str):
        return f"{dist} {plugin.get('version') or 'version unknown'}"
    return canonical(plugin)


def plugin_text(record: dict[str, Any]) -> str:
    """The plugin's identity as a short chip: ``file plugin.py sha256 1a2b3c4d5e6f`` or
    ``package my-fl 1.2.0`` ('' for built-ins)."""
    plugin = plugin_identity(record)
    if plugin is None:
        return ""
    if isinstance(plugin.get("sha256"), str):
        name = str(plugin.get("path") or "").replace("\\", "/").rpartition("/")[2]
        return f"file {name} sha256 {plugin['sha256'][:12]}".replace("  ", " ")
    dist = plugin.get("distribution") or plugin.get("package")
    if isinstance(dist, str):
        return f"package {dist} {plugin.get('version') or '(version unknown)'}"
    return f"plugin {short_value(plugin)}"[:120]


def deviations(record: dict[str, Any]) -> list[str]:
    """``algorithm.deviations``: where the run departs from the algorithm's paper setup."""
    devs = record["algorithm"].get("deviations")
    return [d for d in devs if isinstance(d, str)] if isinstance(devs, list) else []


def row_key(record: dict[str, Any]) -> str:
    return canonical([record["algorithm"]["name"], record["algorithm"]["hparams"], plugin_id(record),
                      privacy_row(record), sorted(deviations(record))])


@dataclass(frozen=True, order=True)
class TableKey:
    """What one table compares algorithms on (see the module docstring)."""

    task: str
    dataset: str
    model: str
    setup: str  # canonical JSON of :func:`setup`
    partition_method: str
    partition_params: str  # canonical JSON, seed keys removed
    n_clients: int

    @classmethod
    def of(cls, record: dict[str, Any]) -> TableKey:
        p = record["partition"]
        return cls(record["task"], record["dataset"], record["model"], canonical(setup(record)), p["method"],
                   canonical(without_seed(p["params"])), p["n_clients"])

    @property
    def setup_dict(self) -> dict[str, Any]:
        return json.loads(self.setup)

    @property
    def group(self) -> tuple[str, str, str, str]:
        """The key without the partition: tables of one group form one overview matrix."""
        return (self.task, self.dataset, self.model, self.setup)

    @property
    def partition_spec(self) -> tuple[str, str, str, str, int]:
        """The partition identity (data + spec), shared by all models and setups."""
        return (self.task, self.dataset, self.partition_method, self.partition_params, self.n_clients)

    @property
    def id(self) -> str:
        return hashlib.sha256(canonical(list(self.__dict__.values())).encode()).hexdigest()[:12]


def identity(record: dict[str, Any]) -> str:
    """(configuration, seed): two records with the same identity report the same experiment."""
    return canonical([list(TableKey.of(record).__dict__.values()), row_key(record), record["seed"]])


SETUP_LABELS = (
    ("rounds", "{} rounds"), ("clients_per_round", "{} clients/round"), ("local_epochs", "{} local epoch(s)"),
    ("local_steps", "{} local steps"), ("batch_size", "batch {}"), ("client_lr", "client lr {}"),
    ("weight_decay", "weight decay {}"), ("client_optimizer", "{} clients"), ("client_momentum", "momentum {}"),
    ("aggregator", "{} aggregation"), ("max_len", "max_len {}"), ("n_train", "n_train {}"),
    ("n_val", "n_val {}"), ("n_test", "n_test {}"), ("setting", "{}"), ("sampler", "{} sampler"),
    ("dropout", "dropout {}"), ("preset", "preset {}"), ("privacy", "{}"), ("primary", "metric {}"),
)


def setup_chips(setup: dict[str, Any]) -> list[str]:
    """Human-readable chips for a table's setup (budget, data sizes, setting, preset, ...)."""
    chips = []
    for key, fmt in SETUP_LABELS:
        v = setup.get(key)
        if v is None or (key in ("dropout", "weight_decay", "client_momentum") and not v) or v == "":
            continue
        chips.append(fmt.format(short_value(v)))
    cont = setup.get("continual")
    if isinstance(cont, dict):
        chips += [f"{k} {short_value(cont[k])}" for k in sorted(cont) if k != "setting"]
    peft = setup.get("peft")
    if isinstance(peft, dict):
        params = peft.get("params") if isinstance(peft.get("params"), dict) else {}
        chips.append(f"peft {short_value(peft.get('method'))}" +
                     "".join(f" {k}={short_value(params[k])}" for k in sorted(params)))
    track = setup.get("track")
    if isinstance(track, dict):
        chips.append(f"track {short_value(track.get('name'))} v{short_value(track.get('version'))}")
    return chips
