"""Group records into leaderboard tables and compute the per-row statistics.

A table is one (task, dataset, partition spec, model); a row is one algorithm
configuration (name, hyper-parameters, FL config, preset) whose runs differ
only by seed. Centralized runs (algorithm ``centralized`` or partition
``none``) form the reference rows of every table with the same
(task, dataset, model).

Statistics:
- primary metric: mean and sample standard deviation (ddof=1) over seeds;
- secondary metrics and costs: mean over seeds;
- gap: row mean minus the reference mean of the primary metric;
- fairness: per run, the unweighted mean, population std and worst-10% mean
  (mean of the ``ceil(0.1 * n)`` lowest clients) of the per-client primary
  metric, then averaged over seeds.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fednlp_bench.leaderboard.load import LoadedRecord

REFERENCE_ALGORITHM = "centralized"
REFERENCE_PARTITION = "none"
# Keys that vary with the seed; they must not split a row or a group.
_SEED_KEYS = frozenset({"seed", "seeds", "partition_seed", "split_seed"})
COST_KEYS = ("wall_seconds", "client_compute_seconds", "bytes_up_per_round", "bytes_down_per_round")


def canonical(obj: Any) -> str:
    """Stable compact JSON used for keys and hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def number(value: Any) -> float | None:
    """``value`` as a finite float, else None (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _without_seed(d: Any) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in _SEED_KEYS} if isinstance(d, dict) else {}


def _short_value(v: Any) -> str:
    return v if isinstance(v, str) else canonical(v)


def describe_params(params: dict[str, Any]) -> str:
    """``{"alpha": 0.5}`` -> ``alpha=0.5`` (sorted keys)."""
    return ", ".join(f"{k}={_short_value(params[k])}" for k in sorted(params))


def is_reference(record: dict[str, Any]) -> bool:
    return (
        record["algorithm"]["name"] == REFERENCE_ALGORITHM
        or record["partition"]["method"] == REFERENCE_PARTITION
    )


@dataclass(frozen=True, order=True)
class GroupKey:
    """What one table compares algorithms on."""

    task: str
    dataset: str
    model: str
    partition_method: str
    partition_params: str  # canonical JSON, seed keys removed
    n_clients: int

    @classmethod
    def of(cls, record: dict[str, Any]) -> GroupKey:
        p = record["partition"]
        return cls(
            record["task"],
            record["dataset"],
            record["model"],
            p["method"],
            canonical(_without_seed(p["params"])),
            p["n_clients"],
        )

    @property
    def partition_label(self) -> str:
        """Human label, e.g. ``dirichlet_label(alpha=0.5), 10 clients``."""
        params = describe_params(json.loads(self.partition_params))
        method = f"{self.partition_method}({params})" if params else self.partition_method
        unit = "client" if self.n_clients == 1 else "clients"
        return f"{method}, {self.n_clients} {unit}"

    @property
    def partition_spec(self) -> tuple[str, str, str, str, int]:
        """The partition identity (data + spec), shared by all models."""
        return (self.task, self.dataset, self.partition_method, self.partition_params, self.n_clients)

    @property
    def id(self) -> str:
        return hashlib.sha256(canonical(list(self.__dict__.values())).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Stat:
    mean: float | None
    std: float | None  # None when fewer than two values
    n: int


def stat(values: Iterable[float | None]) -> Stat:
    vals = [v for v in values if v is not None]
    if not vals:
        return Stat(None, None, 0)
    mean = math.fsum(vals) / len(vals)
    std = None
    if len(vals) > 1:
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return Stat(mean, std, len(vals))


@dataclass(frozen=True)
class Fairness:
    mean: float | None = None
    std: float | None = None
    worst10: float | None = None


def client_fairness(record: dict[str, Any], metric: str) -> Fairness:
    """Fairness summary of one run's per-client ``metric``."""
    per_client = record["metrics"].get("per_client")
    if not isinstance(per_client, dict):
        return Fairness()
    vals = sorted(
        v
        for v in (number(c.get(metric)) for c in per_client.values() if isinstance(c, dict))
        if v is not None
    )
    if not vals:
        return Fairness()
    n = len(vals)
    mean = math.fsum(vals) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / n)
    k = max(1, math.ceil(0.1 * n))
    return Fairness(mean, std, math.fsum(vals[:k]) / k)


@dataclass(frozen=True)
class CurvePoint:
    round: int
    mean: float
    std: float | None


@dataclass
class Row:
    """One algorithm configuration in a table, aggregated over seeds."""

    algorithm: str
    detail: str
    is_reference: bool
    runs: list[LoadedRecord]
    primary: Stat
    secondary: dict[str, float | None]
    fairness: Fairness
    cost: dict[str, float | None]
    curve: list[CurvePoint]
    probes: dict[str, float | None] = field(default_factory=dict)  # mean over seeds: epsilon, mia_auc, flip_rate
    epsilon_text: str = "inf"
    gap: float | None = None
    gap_reference: str | None = None
    rank: int | None = None

    @property
    def seeds(self) -> list[int]:
        return [r.record["seed"] for r in self.runs]

    @property
    def label(self) -> str:
        return f"{self.algorithm} ({self.detail})" if self.detail else self.algorithm

    def values(self, key: str) -> list[str]:
        """Distinct provenance values over the runs, in run order."""
        out: list[str] = []
        for r in self.runs:
            v = _provenance_value(r.record, key)
            if v and v not in out:
                out.append(v)
        return out


def _provenance_value(record: dict[str, Any], key: str) -> str:
    prov = record.get("provenance") or {}
    if key == "commit":
        commit = prov.get("git_commit")
        if not isinstance(commit, str) or not commit:
            return ""
        return commit[:10] + ("+dirty" if prov.get("git_dirty") is True else "")
    if key in ("torch", "transformers"):
        packages = prov.get("packages")
        v = packages.get(key) if isinstance(packages, dict) else None
        return v if isinstance(v, str) else ""
    if key == "device":
        return prov.get("device") if isinstance(prov.get("device"), str) else ""
    if key == "date":
        return record["created"][:10]
    if key == "preset":
        return record["preset"] or ""
    raise KeyError(key)


@dataclass
class Table:
    """One leaderboard table."""

    key: GroupKey
    primary: str
    secondary: list[str]
    references: list[Row]
    rows: list[Row]
    heatmap: tuple[str, str, str, str, int] | None = None  # partition spec with stats
    notes: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return "t-" + self.key.id

    @property
    def title(self) -> str:
        k = self.key
        return f"{k.task} / {k.dataset} / {k.partition_label} / {k.model}"

    @property
    def all_rows(self) -> list[Row]:
        return self.references + self.rows


def privacy_label(record: dict[str, Any]) -> str:
    """Short description of a run's differential privacy ('' without DP); part of the row key."""
    priv = record.get("privacy") or {}
    parts = []
    user, sample = priv.get("user_level"), priv.get("sample_level")
    if user:
        parts.append(f"DP user sigma={number(user.get('noise_multiplier')) or 0:.3g} C={user.get('clip')}")
    if sample:
        parts.append(f"DP-SGD sigma={number(sample.get('noise_multiplier')) or 0:.3g} C={sample.get('clip')}")
    return ", ".join(parts)


def peft_label(peft: Any) -> str:
    """Short description of a record's ``peft`` section ('' for full fine-tuning); part of the row key."""
    if not isinstance(peft, dict) or peft.get("method") in (None, "full"):
        return ""
    params = peft.get("params") if isinstance(peft.get("params"), dict) else {}
    shown = describe_params({k.removeprefix("lora_").removeprefix("prefix_").removeprefix("ia3_"): v
                             for k, v in params.items()})
    return f"{_short_value(peft.get('method'))}({shown})" if shown else _short_value(peft.get("method"))


def epsilon_of(record: dict[str, Any]) -> tuple[str, float | None]:
    """(display text, sort value) of a run's epsilon: user level first, then sample level; inf without DP."""
    priv = record.get("privacy") or {}
    for level, name in (("user_level", "user"), ("sample_level", "sample")):
        p = priv.get(level)
        if p:
            eps, delta = number(p.get("epsilon")), number(p.get("delta"))
            at = f" (δ={delta:.0e})" if delta is not None else ""  # an epsilon means nothing without its delta
            return (f"{name} {eps:.3g}{at}" if eps is not None else f"{name} inf"), eps
    return "inf", None


def _row_key(record: dict[str, Any]) -> str:
    return canonical(
        [
            record["algorithm"]["name"],
            record["algorithm"]["hparams"],
            _without_seed(record["fl"]),
            record["preset"],
            privacy_label(record),
            peft_label(record.get("peft")),  # full and PEFT runs are different rows
        ]
    )


def _dedupe_seeds(runs: list[LoadedRecord], warnings: list[str]) -> list[LoadedRecord]:
    """Keep one run per seed: the newest by (created, run_id)."""
    by_seed: dict[int, list[LoadedRecord]] = defaultdict(list)
    for r in runs:
        by_seed[r.record["seed"]].append(r)
    kept = []
    for seed in sorted(by_seed):
        group = sorted(by_seed[seed], key=lambda r: (r.record["created"], r.record["run_id"]))
        kept.append(group[-1])
        for old in group[:-1]:
            warnings.append(
                f"{old.path}: superseded by {group[-1].path} (same configuration and seed {seed})"
            )
    return kept


def _curve(runs: list[LoadedRecord], metric: str) -> list[CurvePoint]:
    per_round: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        rows = r.record["metrics"].get("per_round")
        for item in rows if isinstance(rows, list) else []:
            if not isinstance(item, dict):
                continue
            rnd, v = item.get("round"), number(item.get(metric))
            if isinstance(rnd, int) and not isinstance(rnd, bool) and v is not None:
                per_round[rnd].append(v)
    out = []
    for rnd in sorted(per_round):
        s = stat(per_round[rnd])
        out.append(CurvePoint(rnd, s.mean, s.std))  # type: ignore[arg-type]
    return out


def _cost(record: dict[str, Any], key: str) -> float | None:
    cost = record["cost"]
    v = number(cost.get(key))
    if v is None and key.endswith("_per_round"):
        total = number(cost.get(key[: -len("_per_round")]))
        rounds = record["fl"]["rounds"]
        if total is not None and rounds > 0:
            v = total / rounds
    return v


def _make_row(runs: list[LoadedRecord], primary: str, secondary: list[str], detail: str) -> Row:
    recs = [r.record for r in runs]
    fair = [client_fairness(r, primary) for r in recs]
    return Row(
        algorithm=recs[0]["algorithm"]["name"],
        detail=detail,
        is_reference=is_reference(recs[0]),
        runs=runs,
        primary=stat(number(r["metrics"]["final"].get(primary)) for r in recs),
        secondary={m: stat(number(r["metrics"]["final"].get(m)) for r in recs).mean for m in secondary},
        fairness=Fairness(
            stat(f.mean for f in fair).mean,
            stat(f.std for f in fair).mean,
            stat(f.worst10 for f in fair).mean,
        ),
        cost={k: stat(_cost(r, k) for r in recs).mean for k in COST_KEYS},
        curve=_curve(runs, primary),
        probes={
            "epsilon": stat(epsilon_of(r)[1] for r in recs).mean,
            "mia_auc": stat(number(((r.get("audit") or {}).get("example") or {}).get("auc")) for r in recs).mean,
            "flip_rate": stat(number((r["metrics"].get("counterfactual") or {}).get("flip_rate")) for r in recs).mean,
        },
        epsilon_text=epsilon_of(recs[0])[0],
    )


def _details(groups: dict[str, list[LoadedRecord]]) -> dict[str, str]:
    """Row detail: hparams, plus the FL/preset fields that tell same-named rows apart."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for key, runs in groups.items():
        by_name[runs[0].record["algorithm"]["name"]].append(key)
    out = {}
    for keys in by_name.values():
        fls = {k: _without_seed(groups[k][0].record["fl"]) for k in keys}
        presets = {k: groups[k][0].record["preset"] for k in keys}
        differing = sorted(
            {f for k in keys for f in fls[k] if len({canonical(fls[j].get(f)) for j in keys}) > 1}
        )
        for k in keys:
            rec = groups[k][0].record
            parts = [describe_params(rec["algorithm"]["hparams"]), privacy_label(rec), peft_label(rec.get("peft"))]
            parts += [f"{f}={_short_value(fls[k].get(f))}" for f in differing]
            if len(set(map(str, presets.values()))) > 1:
                parts.append(f"preset={presets[k]}")
            out[k] = "; ".join(p for p in parts if p)
    return out


def _rows(runs: list[LoadedRecord], primary: str, secondary: list[str], warnings: list[str]) -> list[Row]:
    groups: dict[str, list[LoadedRecord]] = defaultdict(list)
    for r in runs:
        groups[_row_key(r.record)].append(r)
    groups = {k: _dedupe_seeds(v, warnings) for k, v in groups.items()}
    details = _details(groups)
    rows = [_make_row(groups[k], primary, secondary, details[k]) for k in sorted(groups)]
    rows.sort(key=lambda row: (row.primary.mean is None, -(row.primary.mean or 0.0), row.label))
    return rows


def _majority(values: Iterable[str]) -> str:
    counts = Counter(values)
    return sorted(counts, key=lambda v: (-counts[v], v))[0]


def _has_stats(record: dict[str, Any]) -> bool:
    stats = record["partition"].get("stats")
    return isinstance(stats, dict) and isinstance(stats.get("label_counts"), list) and bool(
        stats["label_counts"]
    )


def make_tables(records: list[LoadedRecord], warnings: list[str] | None = None) -> list[Table]:
    """Group ``records`` into tables, sorted by key; rows ranked by the primary metric."""
    warnings = warnings if warnings is not None else []
    fl_groups: dict[GroupKey, list[LoadedRecord]] = defaultdict(list)
    ref_groups: dict[tuple[str, str, str], list[LoadedRecord]] = defaultdict(list)
    for r in records:
        key = GroupKey.of(r.record)
        if is_reference(r.record):
            ref_groups[(key.task, key.dataset, key.model)].append(r)
        else:
            fl_groups[key].append(r)
    # A reference with no FL table still gets a table of its own.
    for (task, dataset, model), runs in ref_groups.items():
        if not any((k.task, k.dataset, k.model) == (task, dataset, model) for k in fl_groups):
            fl_groups[GroupKey.of(runs[0].record)] = []

    tables = []
    for key in sorted(fl_groups):
        runs = fl_groups[key]
        refs = ref_groups.get((key.task, key.dataset, key.model), [])
        everything = runs + refs
        primary = _majority(r.record["metrics"]["primary"] for r in everything)
        secondary = sorted(
            {m for r in everything for m in r.record["metrics"]["final"] if m != primary}
        )
        references = _rows(refs, primary, secondary, warnings) if refs else []
        references.sort(key=lambda row: (-row.primary.n, row.label))
        rows = _rows(runs, primary, secondary, warnings)
        table = Table(key, primary, secondary, references, rows)
        _fill_gaps(table)
        for i, row in enumerate(r for r in rows if r.primary.mean is not None):
            row.rank = i + 1
        if any(_has_stats(r.record) for r in runs):
            table.heatmap = key.partition_spec
        if not refs and runs:
            table.notes.append("No centralized reference run for this task, dataset and model")
        for r in everything:
            if r.record["metrics"]["primary"] != primary:
                table.notes.append(
                    f"{r.path.name} reports primary metric {r.record['metrics']['primary']!r}; "
                    f"the table uses {primary!r}"
                )
        tables.append(table)
    # Shared across tables: warnings are reported once.
    warnings[:] = list(dict.fromkeys(warnings))
    return tables


def _fill_gaps(table: Table) -> None:
    """Gap to the reference with the same preset(s), else to the first reference."""
    if not table.references:
        return
    for row in table.rows:
        presets = row.values("preset")
        ref = next((r for r in table.references if r.values("preset") == presets), table.references[0])
        if row.primary.mean is not None and ref.primary.mean is not None:
            row.gap = row.primary.mean - ref.primary.mean
            row.gap_reference = ref.label


def partition_stats_record(records: list[LoadedRecord], spec: tuple) -> dict[str, Any] | None:
    """The ``partition.stats`` used for a partition spec's heatmap (lowest seed, then run id)."""
    candidates = sorted(
        (r for r in records if GroupKey.of(r.record).partition_spec == spec and _has_stats(r.record)),
        key=lambda r: (r.record["seed"], r.record["run_id"]),
    )
    return candidates[0].record["partition"]["stats"] if candidates else None


def record_link(path: Path, out_dir: Path) -> str:
    """Path of a record relative to the output directory, with forward slashes."""
    return Path(os.path.relpath(Path(path).resolve(), Path(out_dir).resolve())).as_posix()
