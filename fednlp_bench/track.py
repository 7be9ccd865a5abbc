"""Benchmark tracks: a versioned YAML file that fixes everything a comparison must share.

A track (``fednlp_bench/tracks/<name>.yaml``, or any YAML file given by path) states the
task, dataset, model and budget, the partitions it covers, the seeds every algorithm runs
with and the tuning protocol. Every algorithm on a track runs the same cells
(algorithm x partition x seed) with the same client learning rate, as Reddi et al. 2021
("Adaptive Federated Optimization") and FedScale (Lai et al. 2022) fix the budget and vary
only the algorithm and its own, tuned, server-side hyper-parameters.

A track file::

    name: tc
    version: 1                  # bump whenever anything below changes what a cell computes
    task: tc
    preset: quick               # the task preset the budget starts from (recorded as the preset)
    dataset: bbc
    model: minilm-l6
    budget:                     # shared by every algorithm and partition
      data: {max_len: 64, max_train: 500, max_test: null}
      fl: {rounds: 5, clients_per_round: 5, client_lr: 1.0e-4, ...}
      fairness: {counterfactual: false}   # optional: probes the track does not report
    partitions:                 # name -> one partition (a partition may change dataset and data keys)
      - {name: iid, method: uniform, n_clients: 10}
      - {name: natural, method: natural, n_clients: 0, dataset: healthtweets, data: {max_len: 32}}
    reference: centralized      # the upper bound, one cell per dataset (on its first partition) and seed
    algorithms: [fedavg, ...]   # what `fednlp-bench suite` runs when no --algorithm is given
    seeds: [0, 1, 2]            # at least 3
    tuning:                     # see fednlp_bench.tuning
      protocol: 1
      partition: dir1.0         # the partition the grid is scored on (validation only)
      seeds: [1000]             # tuning seeds, disjoint from the reported ones
      centralized_client_lr: [5.0e-5, 1.0e-4, 2.0e-4]   # optional: tune the reference's client lr

Loading validates the whole file, including every cell's run configuration, before anything
runs; each problem is one :class:`~fednlp_bench.errors.ConfigError` line naming the file and key.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fednlp_bench import config
from fednlp_bench.errors import ConfigError, UserError
from fednlp_bench.hparams import did_you_mean

TRACKS_PACKAGE = "fednlp_bench.tracks"
_TOP = ("name", "version", "task", "preset", "dataset", "model", "budget", "partitions", "reference",
        "algorithms", "seeds", "tuning", "description")
# the config sections a budget may set (fairness: to switch off probes a track does not report)
BUDGET_SECTIONS = ("data", "fl", "fairness")
_REQUIRED = ("name", "version", "task", "budget", "partitions", "seeds", "tuning")
_PARTITION = ("name", "method", "n_clients", "params", "dataset", "data")
_TUNING = ("protocol", "partition", "seeds", "centralized_client_lr")
_RUNTIME_KEYS = ("results_dir", "wandb", "progress", "resume", "device", "threads", "seed")


@dataclass(frozen=True)
class TrackPartition:
    """One partition of a track: the partitioner and, optionally, its own dataset and data keys."""

    name: str
    method: str
    n_clients: int
    params: dict[str, Any]
    dataset: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Tuning:
    """The tuning protocol: which partition and seeds score the grid on validation."""

    protocol: int
    partition: str
    seeds: tuple[int, ...]
    centralized_client_lr: tuple[float, ...] | None


@dataclass(frozen=True)
class Track:
    """A loaded, validated track; ``folder`` holds its YAML file and its ``tuned/`` parameters."""

    name: str
    version: int
    task: str
    preset: str | None
    dataset: str
    model: str
    budget: dict[str, dict[str, Any]]
    partitions: tuple[TrackPartition, ...]
    reference: str | None
    algorithms: tuple[str, ...]
    seeds: tuple[int, ...]
    tuning: Tuning
    path: Path

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def identity(self) -> dict[str, Any]:
        """The record's ``track`` section."""
        return {"name": self.name, "version": self.version}

    def partition(self, name: str) -> TrackPartition:
        for p in self.partitions:
            if p.name == name:
                return p
        raise ConfigError(f"track '{self.name}' has no partition '{name}' "
                          f"{did_you_mean(name, [p.name for p in self.partitions])}")

    def reference_partitions(self) -> list[TrackPartition]:
        """The partition the centralized reference runs on for each dataset: its first one."""
        seen: dict[str, TrackPartition] = {}
        for p in self.partitions:
            seen.setdefault(p.dataset, p)
        return list(seen.values())

    def run_config(self, algorithm: str, partition: str, seed: int, *, algorithm_params: dict | None = None,
                   fl_overrides: dict | None = None, **runtime: Any) -> config.RunConfig:
        """The validated :class:`RunConfig` of one cell; ``runtime`` sets results_dir, wandb, threads..."""
        p = self.partition(partition)
        top: dict[str, Any] = {"dataset": p.dataset, "model": self.model, "seed": seed, "algorithm.name": algorithm,
                               "partition.method": p.method, "partition.n_clients": p.n_clients}
        for section in BUDGET_SECTIONS:
            for key, value in self.budget.get(section, {}).items():
                top[f"{section}.{key}"] = value
        for key, value in p.data.items():
            top[f"data.{key}"] = value
        for key, value in (fl_overrides or {}).items():
            top[f"fl.{key}"] = value
        for key, value in p.params.items():
            top[f"partition.params.{key}"] = value
        for key, value in (algorithm_params or {}).items():
            top[f"algorithm.params.{key}"] = value
        top.update({k: v for k, v in runtime.items() if v is not None})
        # resolve() skips None options (unset CLI flags); an explicit null (max_test: null) must
        # still override the preset, so it travels as a --set override
        nulls = [f"{k}=null" for k, v in top.items() if v is None]
        return config.resolve(self.task, self.preset, nulls, **{k: v for k, v in top.items() if v is not None})


# --------------------------------------------------------------------------- loading
def packaged_tracks() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(TRACKS_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def track_path(name_or_path: str) -> Path:
    """A packaged track by name (``tc``) or a YAML file by path."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"track file '{name_or_path}' does not exist")
        return path
    if name_or_path not in packaged_tracks():
        raise ConfigError(f"unknown track '{name_or_path}' {did_you_mean(name_or_path, packaged_tracks(), 'packaged')}"
                          f" (or give a path to a track .yaml file)")
    return Path(str(resources.files(TRACKS_PACKAGE).joinpath(f"{name_or_path}.yaml")))


def load(name_or_path: str) -> Track:
    """Read and validate a track; every problem is one ``ConfigError`` line naming file and key."""
    path = track_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"track file '{path}': cannot read it ({exc.__class__.__name__})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"track file '{path}': not valid YAML{where}") from None
    try:
        track = _parse(raw, path)
        _check_cells(track)
    except ConfigError as exc:
        raise ConfigError(f"track file '{path}': {exc}") from None
    return track


def _expect(value: Any, kind: type | tuple[type, ...], key: str, what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"'{key}' must be {what}, got {json.dumps(value, default=str)[:80]}")
    return value


def _known(raw: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"unknown key '{where}{key}' {did_you_mean(str(key), allowed)}")


def _seeds(value: Any, key: str, minimum: int) -> tuple[int, ...]:
    _expect(value, list, key, f"a list of at least {minimum} distinct integers >= 0")
    if len(value) < minimum or len(set(map(str, value))) != len(value) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        raise ConfigError(f"'{key}' must be a list of at least {minimum} distinct integers >= 0, got {value!r}")
    return tuple(value)


def _parse(raw: Any, path: Path) -> Track:
    _expect(raw, dict, "<top level>", "a mapping")
    _known(raw, _TOP, "")
    for key in _REQUIRED:
        if key not in raw:
            raise ConfigError(f"missing key '{key}'")
    name = _expect(raw["name"], str, "name", "a string")
    version = _expect(raw["version"], int, "version", "an integer >= 1")
    if version < 1:
        raise ConfigError(f"'version' must be an integer >= 1, got {version}")
    budget = _expect(raw["budget"], dict, "budget", "a mapping with data and fl sections")
    _known(budget, BUDGET_SECTIONS, "budget.")
    for section in budget.values():
        _expect(section, dict, "budget.<section>", "a mapping")
    bad = [f"budget.{s}.{k}" for s in budget for k in budget[s] if s == "data" and k == "max_test"
           and budget[s][k] is not None]
    if bad:
        raise ConfigError(f"'{bad[0]}' must be null: tracks score the full test split, never a subsample")
    dataset = _expect(raw.get("dataset", config.RunConfig.dataset), str, "dataset", "a string")
    partitions = _partitions(raw["partitions"], dataset)
    reference = raw.get("reference")
    if reference not in (None, "centralized"):
        raise ConfigError(f"'reference' must be centralized or null, got {reference!r}")
    algorithms = raw.get("algorithms", [])
    _expect(algorithms, list, "algorithms", "a list of algorithm names")
    for a in algorithms:
        _expect(a, str, "algorithms[]", "an algorithm name")
    return Track(name=name, version=version, task=_expect(raw["task"], str, "task", "a task name"),
                 preset=raw.get("preset"), dataset=dataset,
                 model=_expect(raw.get("model", config.ModelConfig.name), str, "model", "a string"),
                 budget={s: dict(v) for s, v in budget.items()}, partitions=partitions, reference=reference,
                 algorithms=tuple(algorithms), seeds=_seeds(raw["seeds"], "seeds", 3),
                 tuning=_tuning(raw["tuning"], partitions), path=path)


def _partitions(raw: Any, dataset: str) -> tuple[TrackPartition, ...]:
    _expect(raw, list, "partitions", "a non-empty list of partitions")
    if not raw:
        raise ConfigError("'partitions' must be a non-empty list of partitions")
    out = []
    for i, p in enumerate(raw):
        where = f"partitions[{i}]"
        _expect(p, dict, where, "a mapping with name, method, n_clients")
        _known(p, _PARTITION, f"{where}.")
        for key in ("name", "method", "n_clients"):
            if key not in p:
                raise ConfigError(f"missing key '{where}.{key}'")
        out.append(TrackPartition(
            name=_expect(p["name"], str, f"{where}.name", "a string"),
            method=_expect(p["method"], str, f"{where}.method", "a partitioner name"),
            n_clients=_expect(p["n_clients"], int, f"{where}.n_clients", "an integer"),
            params=dict(_expect(p.get("params", {}), dict, f"{where}.params", "a mapping")),
            dataset=_expect(p.get("dataset", dataset), str, f"{where}.dataset", "a string"),
            data=dict(_expect(p.get("data", {}), dict, f"{where}.data", "a mapping"))))
        if out[-1].data.get("max_test") is not None:
            raise ConfigError(f"'{where}.data.max_test' must be null: tracks score the full test split")
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"partition names must be unique, got {names}")
    return tuple(out)


def _tuning(raw: Any, partitions: tuple[TrackPartition, ...]) -> Tuning:
    _expect(raw, dict, "tuning", "a mapping with protocol, partition, seeds")
    _known(raw, _TUNING, "tuning.")
    for key in ("protocol", "partition", "seeds"):
        if key not in raw:
            raise ConfigError(f"missing key 'tuning.{key}'")
    protocol = _expect(raw["protocol"], int, "tuning.protocol", "an integer >= 1")
    part = _expect(raw["partition"], str, "tuning.partition", "a partition name")
    names = [p.name for p in partitions]
    if part not in names:
        raise ConfigError(f"'tuning.partition' is '{part}', not a partition of this track {did_you_mean(part, names)}")
    lrs = raw.get("centralized_client_lr")
    if lrs is not None:
        _expect(lrs, list, "tuning.centralized_client_lr", "a list of client learning rates")
        if not lrs or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 10 for v in lrs):
            raise ConfigError(f"'tuning.centralized_client_lr' must be a non-empty list of numbers in (0, 10], "
                              f"got {lrs!r}")
        lrs = tuple(float(v) for v in lrs)
    return Tuning(protocol=protocol, partition=part, seeds=_seeds(raw["seeds"], "tuning.seeds", 1),
                  centralized_client_lr=lrs)


def _check_cells(track: Track) -> None:
    """Every partition's run configuration must resolve and name known components (task, partitioner
    and its parameters), checked as ``fednlp-bench run`` checks them before preparing any data."""
    for key in list(track.budget.get("data", {})) + list(track.budget.get("fl", {})):
        if key in _RUNTIME_KEYS:
            raise ConfigError(f"budget key '{key}' is set per run, not per track")
    from fednlp_bench.run import validate_up_front

    for p in track.partitions:
        try:
            validate_up_front(track.run_config("fedavg", p.name, track.seeds[0], wandb="disabled"))
        except UserError as exc:
            raise ConfigError(f"partition '{p.name}': {exc}") from None
