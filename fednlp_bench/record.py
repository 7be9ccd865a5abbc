"""The result record: one JSON file per run, with full provenance.

Schema version 1 (``SCHEMA_VERSION``)::

    schema_version  int                  1
    run_id          str                  unique, sortable: <UTC time>-<task>-<algorithm>-<8 hex>
    created         str                  ISO-8601 UTC
    task            str                  tc | st | qa | s2s | plugin task name
    dataset         str
    model           str                  model name as given (alias or HF id/path)
    peft            {method, params{}}   (optional; absent = full) what is fine-tuned: full | lora | prefix |
                                         prompt | ia3 | bitfit | head and its model.* parameters
    preset          str | null
    seed            int
    partition       {method, n_clients, params{}, stats{}}
    algorithm       {name, hparams{}, source}
    fl              {rounds, clients_per_round, local_epochs, local_steps, batch_size,
                     client_lr, weight_decay, row_sparse_embeddings, sampler, eval_every, ...}
    metrics         {primary: str, initial{} (round 0, on initial_split), initial_split: "val"|"test",
                     final{} (on final_split: "test"), best_val{} (optional),
                     per_round[{round, split, ...}] (split "val": the validation split),
                     per_client{client_id: {...}}, fairness{mean, std, worst_10pct, ...},
                     failed_clients[{round, client, reason}], dropped_clients, resumed,
                     counterfactual{flip_rate, mean_abs_delta_prob, n_affected, ...} (tc)}
    cost            {wall_seconds, client_compute_seconds, eval_seconds, bytes_up, bytes_down,
                     bytes_up_per_round, bytes_down_per_round, n_params (trainable = communicated),
                     n_params_total, ...}
    provenance      {git_commit, git_dirty, packages{}, device, python, platform, command}
    config          the full resolved run configuration
    privacy         (optional) DP settings, epsilon/delta and the sampling assumption
    track           (optional) {name, version} of the benchmark track the run is a cell of
    tuning          (optional) {protocol, space{}, chosen{}, target, metric, split, partition, seeds[],
                    scores[{params, val[], mean}]}: how a track run's hyper-parameters were chosen
                    (on validation; fednlp_bench/tuning.py)
    audit           (optional) membership inference (loss threshold; lira with reference
                    models) and canary exposure {rank, exposure, ...} on the final model

Validation is hand-written (no jsonschema dependency) and returns every
problem found, each naming the offending field.
"""
from __future__ import annotations

import math
from typing import Any

from fednlp_bench.errors import RecordError  # noqa: F401 - re-exported

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)


_NUM = (int, float)

# field -> expected python type(s); nested dicts are checked by _SUB.
_TOP: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "run_id": (str,),
    "created": (str,),
    "task": (str,),
    "dataset": (str,),
    "model": (str,),
    "preset": (str, type(None)),
    "seed": (int,),
    "partition": (dict,),
    "algorithm": (dict,),
    "fl": (dict,),
    "metrics": (dict,),
    "cost": (dict,),
    "provenance": (dict,),
    "config": (dict,),
}
_SUB: dict[str, dict[str, tuple[type, ...]]] = {
    "partition": {"method": (str,), "n_clients": (int,), "params": (dict,)},
    "algorithm": {"name": (str,), "hparams": (dict,)},
    "fl": {
        "rounds": (int,),
        "clients_per_round": (int,),
        "batch_size": (int,),
        "client_lr": _NUM,
    },
    "metrics": {
        "primary": (str,),
        "final": (dict,),
        "per_round": (list,),
        "per_client": (dict,),
    },
    "cost": {
        "wall_seconds": _NUM,
        "client_compute_seconds": _NUM,
        "bytes_up": (int,),
        "bytes_down": (int,),
    },
    "provenance": {"git_commit": (str, type(None)), "packages": (dict,), "device": (str,)},
}


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # bool is an int subclass; a flag is never a count
    return isinstance(value, types)


def problems(record: Any) -> list[str]:
    """Return a list of human-readable schema violations (empty if valid)."""
    if not isinstance(record, dict):
        return [f"record must be a JSON object, got {type(record).__name__}"]
    out: list[str] = []
    version = record.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        return [
            f"schema_version {version!r} is not supported "
            f"(supported: {', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))})"
        ]
    for key, types in _TOP.items():
        if key not in record:
            out.append(f"missing field '{key}'")
        elif not _is(record[key], types):
            out.append(f"field '{key}' must be {_type_name(types)}, got {type(record[key]).__name__}")
    for section, fields in _SUB.items():
        sub = record.get(section)
        if not isinstance(sub, dict):
            continue
        for key, types in fields.items():
            if key not in sub:
                out.append(f"missing field '{section}.{key}'")
            elif not _is(sub[key], types):
                out.append(
                    f"field '{section}.{key}' must be {_type_name(types)}, "
                    f"got {type(sub[key]).__name__}"
                )
    metrics = record.get("metrics")
    if isinstance(metrics, dict) and isinstance(metrics.get("final"), dict):
        primary = metrics.get("primary")
        if isinstance(primary, str) and primary not in metrics["final"]:
            out.append(f"metrics.final has no value for the primary metric '{primary}'")
        for name, value in metrics["final"].items():
            if not _is(value, _NUM) or not math.isfinite(value):
                out.append(f"metrics.final.{name} must be a finite number, got {value!r}")
        for i, row in enumerate(metrics.get("per_round") or []):
            if not isinstance(row, dict) or not _is(row.get("round"), (int,)):
                out.append(f"metrics.per_round[{i}] must be an object with an integer 'round'")
    return out


def validate(record: Any) -> dict:
    """Raise :class:`RecordError` listing every problem, else return the record."""
    found = problems(record)
    if found:
        raise RecordError("invalid result record: " + "; ".join(found))
    return record


def set_path(record: dict, path: tuple[str, ...], value: Any) -> None:
    """``record[p0][p1]... = value``, creating the intermediate objects."""
    node = record
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def build_record(header: dict[str, Any], sections: list[dict[tuple[str, ...], Any]]) -> dict:
    """The result record: ``header`` (identity and configuration) plus every component's sections.

    Each component of a run (partition, algorithm, trainer, privacy, audits, probes...) reports
    ``{record path: value}``; they are merged in order, so a later, deeper path (``audit.canary``)
    extends an earlier section (``audit``). The result is validated against the schema.
    """
    record = {"schema_version": SCHEMA_VERSION, **header}
    for part in sections:
        for path, value in part.items():
            set_path(record, path, value)
    return validate(record)
