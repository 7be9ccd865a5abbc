"""Group records into leaderboard tables and compute the per-row statistics.

A table is one :class:`~fednlp_bench.leaderboard.keys.TableKey` (every setting that changes the
experiment); a row is one algorithm configuration whose runs differ only by seed
(:func:`~fednlp_bench.leaderboard.keys.row_key`). The reference of a table is the centralized
run with the identical setup (:func:`~fednlp_bench.leaderboard.keys.reference_key`); without
one, the table says "no reference" and shows no gap.

Per row (see :mod:`fednlp_bench.leaderboard.stats` for the interval and rank rules):

- primary metric (from the task, never from records): mean, 95% t interval, seeds;
- gap to the reference and difference to FedAvg: paired by seed, with their intervals;
- tie-aware rank: 1 + the number of rows significantly better (DP tables are not ranked:
  their rows trade privacy for utility and are compared on the privacy-utility plot);
- time to accuracy: rounds and bytes (up + down) until the per-round curve first reaches
  :data:`TTA_FRACTION` of the reference's accuracy. The curve is the validation curve
  (``per_round`` rows with ``"split": "val"``) when the record has one, compared with the
  reference's final validation value; otherwise the per-round test curve and the reference's
  final test value, and the table says so;
- secondary metrics and costs: mean over seeds; fairness: per run, the unweighted mean,
  population std and worst-10% mean (``ceil(0.1 n)`` lowest clients) of the per-client
  primary metric, then averaged over seeds.

If the same (configuration, seed) appears twice, the record with the later ``created`` time
(then the larger ``run_id``) is used and the other is listed as superseded.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fednlp_bench.leaderboard.keys import (
    TableKey,
    dp_levels,
    is_reference,
    plugin_identity,
    plugin_text,
    primary_metric,
    reference_key,
    row_key,
    setup_chips,
    short_value,
    task_rank,
)
from fednlp_bench.leaderboard.load import LoadedRecord, Skipped
from fednlp_bench.leaderboard.notes import ClientFailures, row_deviations, row_failures
from fednlp_bench.leaderboard.stats import Diff, Estimate, compare, mean_ci, rounds_to_target, tie_aware_ranks
from fednlp_bench.record_checks import TASK_PRIMARY

COST_KEYS = ("wall_seconds", "client_compute_seconds", "bytes_up_per_round", "bytes_down_per_round", "n_params",
             "n_params_total")
TTA_FRACTION = 0.9
BASELINE_ALGORITHM = "fedavg"


def number(value: Any) -> float | None:
    """``value`` as a finite float, else None (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def describe_params(params: dict[str, Any]) -> str:
    """``{"alpha": 0.5}`` -> ``alpha=0.5`` (sorted keys)."""
    return ", ".join(f"{k}={short_value(params[k])}" for k in sorted(params))


@dataclass(frozen=True)
class Stat:
    """Mean and sample std (ddof 1) of the values that are not None."""

    mean: float | None
    std: float | None
    n: int


def stat(values: Iterable[float | None]) -> Stat:
    vals = [v for v in values if v is not None]
    est = mean_ci(vals)
    return Stat(est.mean, est.std, est.n)


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
    vals = sorted(v for v in (number(c.get(metric)) for c in per_client.values() if isinstance(c, dict))
                  if v is not None)
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


@dataclass(frozen=True)
class TimeToAccuracy:
    """Rounds and bytes (mean over the seeds that reached the target) and how many reached it."""

    rounds: float | None
    bytes: float | None
    reached: int
    n: int


@dataclass
class Row:
    """One algorithm configuration in a table, aggregated over seeds."""

    algorithm: str
    chips: list[str]
    is_reference: bool
    runs: list[LoadedRecord]
    values: dict[int, float]  # seed -> final primary metric
    primary: Estimate
    secondary: dict[str, float | None]
    fairness: Fairness
    cost: dict[str, float | None]
    curve: list[CurvePoint]
    curve_split: str  # "val" or "test"
    probes: dict[str, float | None] = field(default_factory=dict)  # epsilon, mia_auc, canary_digits, flip_rate
    epsilon_text: str = ""
    gap: Diff | None = None
    vs_baseline: Diff | None = None
    tta: TimeToAccuracy | None = None
    rank: int | None = None
    tied: bool = False
    failures: ClientFailures = field(default_factory=ClientFailures)  # clients left out of rounds
    deviations: list[str] = field(default_factory=list)  # departures from the paper's setup

    @property
    def seeds(self) -> list[int]:
        return [r.record["seed"] for r in self.runs]

    @property
    def detail(self) -> str:
        return "; ".join(self.chips)

    @property
    def label(self) -> str:
        return f"{self.algorithm} ({self.detail})" if self.chips else self.algorithm

    @property
    def n_verified(self) -> int:
        return sum(1 for r in self.runs if r.verification is not None)

    def values_of(self, key: str) -> list[str]:
        """Distinct provenance values over the runs, in run order."""
        out: list[str] = []
        for r in self.runs:
            v = provenance_value(r.record, key)
            if v and v not in out:
                out.append(v)
        return out


def provenance_value(record: dict[str, Any], key: str) -> str:
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
    raise KeyError(key)


PROVENANCE_KEYS = ("commit", "torch", "transformers", "device", "date")


@dataclass
class Table:
    """One leaderboard table."""

    key: TableKey
    primary: str
    secondary: list[str]
    reference: Row | None
    rows: list[Row]
    heterogeneity: float | None = None  # mean JS divergence of the client label distributions
    heatmap: tuple[str, str, str, str, int] | None = None  # partition spec with stats
    tta_target: float | None = None
    tta_split: str = "test"
    baseline: Row | None = None
    notes: list[str] = field(default_factory=list)
    variant: str = ""  # what sets this table's setup apart from its task's main setup

    @property
    def id(self) -> str:
        return "t-" + self.key.id

    @property
    def dp(self) -> bool:
        return bool(self.key.setup_dict.get("privacy"))

    @property
    def partition_label(self) -> str:
        """Human label, e.g. ``dirichlet_label(alpha=0.5), 10 clients``."""
        k = self.key
        if k.partition_method == "none":
            return "centralized (no partition)"
        params = describe_params(json.loads(k.partition_params))
        method = f"{k.partition_method}({params})" if params else k.partition_method
        return f"{method}, {k.n_clients} client{'s' if k.n_clients != 1 else ''}"

    @property
    def title(self) -> str:
        k = self.key
        title = f"{k.task} / {k.dataset} / {self.partition_label} / {k.model}"
        return f"{title} — {self.variant}" if self.variant else title

    @property
    def references(self) -> list[Row]:
        return [self.reference] if self.reference else []

    @property
    def all_rows(self) -> list[Row]:
        return self.references + self.rows

    @property
    def runs(self) -> list[LoadedRecord]:
        return [r for row in self.all_rows for r in row.runs]

    def provenance(self) -> dict[str, str]:
        """The most common value of each provenance field over the table's runs."""
        out = {}
        for key in PROVENANCE_KEYS:
            counts = Counter(provenance_value(r.record, key) for r in self.runs)
            counts.pop("", None)
            if counts:
                out[key] = sorted(counts, key=lambda v: (-counts[v], v))[0]
        return out


def privacy_label(record: dict[str, Any]) -> str:
    """Short description of a run's differential privacy ('' without DP)."""
    priv = record.get("privacy") or {}
    parts = []
    for level, name in (("user_level", "DP user"), ("sample_level", "DP-SGD")):
        p = priv.get(level)
        if p:
            sigma = number(p.get("noise_multiplier"))
            clip = number(p.get("clip"))
            parts.append(f"{name} σ={sigma:.3g}" if sigma is not None else name)
            if clip is not None:
                parts[-1] += f" C={clip:g}"
    return ", ".join(parts)


def epsilon_of(record: dict[str, Any]) -> tuple[str, float | None]:
    """(level name, epsilon): user level first, then sample level; ("", None) without DP."""
    priv = record.get("privacy") or {}
    for level, name in (("user_level", "user"), ("sample_level", "sample")):
        p = priv.get(level)
        if p:
            return name, number(p.get("epsilon"))
    return "", None


def tuning_text(record: dict[str, Any]) -> str:
    """How the hyper-parameters were chosen (``tuning`` section), '' when the record has none."""
    t = record.get("tuning")
    if not isinstance(t, dict):
        return ""
    chosen = t.get("chosen") if isinstance(t.get("chosen"), dict) else {}
    space = t.get("space") if isinstance(t.get("space"), dict) else {}
    n = math.prod(len(v) for v in space.values() if isinstance(v, list)) if space else 0
    text = "tuned on validation"
    if t.get("protocol") is not None:
        text += f" (protocol {short_value(t['protocol'])})"
    if chosen:
        text += ": " + ", ".join(f"{k}={short_value(chosen[k])}" for k in sorted(chosen))
    return text + (f" from {n} candidates" if n else "")


def _chips(record: dict[str, Any]) -> list[str]:
    hp = record["algorithm"]["hparams"]
    chips = [f"{k} {short_value(hp[k])}" for k in sorted(hp)]
    if tuning_text(record):
        chips.append("tuned")
    if privacy_label(record):
        chips.append(privacy_label(record))
    if plugin_text(record):
        chips.append(plugin_text(record))
    return chips


def _dedupe_seeds(runs: list[LoadedRecord], superseded: list[tuple[Path, Path]]) -> list[LoadedRecord]:
    """Keep one run per seed: the newest by (created, run_id); list the others as superseded."""
    by_seed: dict[int, list[LoadedRecord]] = defaultdict(list)
    for r in runs:
        by_seed[r.record["seed"]].append(r)
    kept = []
    for seed in sorted(by_seed):
        group = sorted(by_seed[seed], key=lambda r: (r.record["created"], r.record["run_id"]))
        kept.append(group[-1])
        superseded += [(old.path, group[-1].path) for old in group[:-1]]
    return kept


def curve_rows(record: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """("val", validation rows) when the record has a validation curve, else ("test", the other rows)."""
    rows = [r for r in record["metrics"].get("per_round") or [] if isinstance(r, dict)]
    val = [r for r in rows if r.get("split") == "val"]
    if val:
        return "val", val
    return "test", [r for r in rows if r.get("split") in (None, "test")]


def run_curve(record: dict[str, Any], metric: str) -> list[tuple[int, float]]:
    _, rows = curve_rows(record)
    out = {}
    for item in rows:
        rnd, v = item.get("round"), number(item.get(metric))
        if isinstance(rnd, int) and not isinstance(rnd, bool) and v is not None:
            out[rnd] = v
    return sorted(out.items())


def _curve(runs: list[LoadedRecord], metric: str) -> list[CurvePoint]:
    per_round: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        for rnd, v in run_curve(r.record, metric):
            per_round[rnd].append(v)
    out = []
    for rnd in sorted(per_round):
        s = stat(per_round[rnd])
        out.append(CurvePoint(rnd, s.mean, s.std))  # type: ignore[arg-type]
    return out


def cost_of(record: dict[str, Any], key: str) -> float | None:
    cost = record["cost"]
    v = number(cost.get(key))
    if v is None and key.endswith("_per_round"):
        total = number(cost.get(key[: -len("_per_round")]))
        rounds = record["fl"]["rounds"]
        if total is not None and rounds > 0:
            v = total / rounds
    return v


def _delta_of(record: dict[str, Any]) -> float | None:
    priv = record.get("privacy") or {}
    p = priv.get("user_level") or priv.get("sample_level")
    return number(p.get("delta")) if isinstance(p, dict) else None


def _canary_digits(record: dict[str, Any]) -> float | None:
    """Per-digit accuracy of the best canary-inversion method (``audit.canary_inversion``), None without one."""
    audit = record.get("audit")
    inversion = audit.get("canary_inversion") if isinstance(audit, dict) else None
    methods = inversion.get("methods") if isinstance(inversion, dict) else None
    if not isinstance(methods, dict):
        return None
    values = [number(m.get("per_digit_accuracy")) for m in methods.values() if isinstance(m, dict)]
    return max((v for v in values if v is not None), default=None)


def _probes(recs: list[dict[str, Any]]) -> dict[str, float | None]:
    return {
        "epsilon": stat(epsilon_of(r)[1] for r in recs).mean,
        "delta": stat(_delta_of(r) for r in recs).mean,
        "mia_auc": stat(number(((r.get("audit") or {}).get("example") or {}).get("auc")) for r in recs).mean,
        "canary_digits": stat(_canary_digits(r) for r in recs).mean,
        "flip_rate": stat(number((r["metrics"].get("counterfactual") or {}).get("flip_rate")) for r in recs).mean,
    }


def _make_row(runs: list[LoadedRecord], primary: str, secondary: list[str]) -> Row:
    recs = [r.record for r in runs]
    fair = [client_fairness(r, primary) for r in recs]
    values = {r["seed"]: float(r["metrics"]["final"][primary]) for r in recs}
    splits = {curve_rows(r)[0] for r in recs}
    return Row(
        algorithm=recs[0]["algorithm"]["name"],
        chips=_chips(recs[0]),
        is_reference=is_reference(recs[0]),
        runs=runs,
        values=values,
        primary=mean_ci(list(values.values())),
        secondary={m: stat(number(r["metrics"]["final"].get(m)) for r in recs).mean for m in secondary},
        fairness=Fairness(stat(f.mean for f in fair).mean, stat(f.std for f in fair).mean,
                          stat(f.worst10 for f in fair).mean),
        cost={k: stat(cost_of(r, k) for r in recs).mean for k in COST_KEYS},
        curve=_curve(runs, primary),
        curve_split="val" if splits == {"val"} else "test",
        probes=_probes(recs),
        epsilon_text=epsilon_of(recs[0])[0],
        failures=row_failures(recs),
        deviations=row_deviations(recs),
    )


def _rows(runs: list[LoadedRecord], primary: str, secondary: list[str],
          superseded: list[tuple[Path, Path]]) -> list[Row]:
    groups: dict[str, list[LoadedRecord]] = defaultdict(list)
    for r in runs:
        groups[row_key(r.record)].append(r)
    return [_make_row(_dedupe_seeds(groups[k], superseded), primary, secondary) for k in sorted(groups)]


def _reference_base(ref: Row, primary: str, split: str) -> float | None:
    """The reference's mean final value on ``split`` (validation: its last validation round)."""
    vals = []
    for r in ref.runs:
        curve = run_curve(r.record, primary) if split == "val" and curve_rows(r.record)[0] == "val" else []
        vals.append(curve[-1][1] if curve else number(r.record["metrics"]["final"].get(primary)))
    return stat(vals).mean


def _time_to_accuracy(row: Row, primary: str, target: float) -> TimeToAccuracy:
    reached_rounds, reached_bytes = [], []
    for r in row.runs:
        rnd = rounds_to_target(run_curve(r.record, primary), target)
        if rnd is None:
            continue
        reached_rounds.append(float(rnd))
        up, down = cost_of(r.record, "bytes_up_per_round"), cost_of(r.record, "bytes_down_per_round")
        if up is not None and down is not None:
            reached_bytes.append(rnd * (up + down))
    return TimeToAccuracy(stat(reached_rounds).mean, stat(reached_bytes).mean, len(reached_rounds), len(row.runs))


def _baseline(rows: list[Row]) -> Row | None:
    """The built-in FedAvg row the others are compared with: most seeds, then fewest chips."""
    cands = [r for r in rows if r.algorithm == BASELINE_ALGORITHM and r.primary.n
             and plugin_identity(r.runs[0].record) is None]
    return sorted(cands, key=lambda r: (-r.primary.n, len(r.chips), r.label))[0] if cands else None


def _rank(table: Table) -> None:
    rows = [r for r in table.rows if r.primary.n]
    if table.dp:
        eps = {id(r): r.probes.get("epsilon") for r in table.rows}
        table.rows.sort(key=lambda r: (eps[id(r)] is None, -(eps[id(r)] or 0.0), r.label))
        return
    ranks = tie_aware_ranks([r.values for r in rows])
    counts = Counter(ranks)
    for row, rank in zip(rows, ranks):
        row.rank, row.tied = rank, counts[rank] > 1
    table.rows.sort(key=lambda r: (r.rank is None, r.rank or 0, -(r.primary.mean or 0.0), r.label))


def _compare_rows(table: Table) -> None:
    """Gap to the reference, difference to FedAvg, time to accuracy."""
    ref, primary = table.reference, table.primary
    table.baseline = _baseline(table.rows)
    for row in table.rows:
        if ref is not None:
            row.gap = compare(row.values, ref.values)
        if table.baseline is not None and row is not table.baseline:
            row.vs_baseline = compare(row.values, table.baseline.values)
    if ref is None:
        return
    splits = {row.curve_split for row in table.rows} or {"test"}
    table.tta_split = "val" if splits == {"val"} else "test"
    base = _reference_base(ref, primary, table.tta_split)
    if base is None:
        return
    table.tta_target = TTA_FRACTION * base
    for row in table.all_rows:
        row.tta = _time_to_accuracy(row, primary, table.tta_target)


def _has_stats(record: dict[str, Any]) -> bool:
    stats = record["partition"].get("stats")
    return isinstance(stats, dict) and isinstance(stats.get("label_counts"), list) and bool(stats["label_counts"])


def _heterogeneity(runs: list[LoadedRecord]) -> float | None:
    return stat(number((r.record["partition"].get("stats") or {}).get("mean_js")) for r in runs).mean


def _secondary(records: list[LoadedRecord], primary: str) -> list[str]:
    names = {m for r in records for m, v in r.record["metrics"]["final"].items() if number(v) is not None}
    return sorted(names - {primary})


def _usable(records: list[LoadedRecord], skipped: list) -> list[LoadedRecord]:
    """Records whose final metrics hold their task's primary metric."""
    out = []
    for r in records:
        metric = primary_metric(r.record)
        if number(r.record["metrics"]["final"].get(metric)) is None:
            skipped.append(Skipped(r.path, f"metrics.final has no value for the task's primary metric {metric}"))
        else:
            out.append(r)
    return out


def _make_table(key: TableKey, runs: list[LoadedRecord], refs: list[Row], superseded) -> Table:
    primary = TASK_PRIMARY.get(key.task) or key.setup_dict["primary"]
    everything = runs + [r for ref in refs for r in ref.runs]
    secondary = _secondary(everything, primary)
    rows = _rows(runs, primary, secondary, superseded)
    reference = sorted(refs, key=lambda r: (-r.primary.n, r.label))[0] if refs else None
    if reference is not None:  # re-make with this table's secondary metrics
        reference = _make_row(reference.runs, primary, secondary)
    table = Table(key, primary, secondary, reference, rows, heterogeneity=_heterogeneity(runs))
    if key.task not in TASK_PRIMARY:
        table.notes.append(f"Task {key.task} is not built in: the primary metric {primary} is the one its "
                           f"records declare (records declaring another metric form other tables)")
    _compare_rows(table)
    _rank(table)
    if any(_has_stats(r.record) for r in runs):
        table.heatmap = key.partition_spec
    return table


def _reference_rows(refs: list[LoadedRecord], superseded) -> dict[str, list[Row]]:
    by_key: dict[str, list[LoadedRecord]] = defaultdict(list)
    for r in refs:
        by_key[reference_key(r.record)].append(r)
    out = {}
    for k, runs in by_key.items():
        primary = primary_metric(runs[0].record)
        out[k] = _rows(runs, primary, [], superseded)
    return out


def make_tables(records: list[LoadedRecord], warnings: list[str] | None = None,
                superseded: list[tuple[Path, Path]] | None = None, skipped: list | None = None) -> list[Table]:
    """Group ``records`` into tables (benchmark order, see :func:`order_tables`), rows ranked."""
    warnings = warnings if warnings is not None else []
    superseded = superseded if superseded is not None else []
    records = _usable(records, skipped if skipped is not None else [])
    groups: dict[TableKey, list[LoadedRecord]] = defaultdict(list)
    refs = [r for r in records if is_reference(r.record)]
    for r in records:
        if not is_reference(r.record):
            groups[TableKey.of(r.record)].append(r)
    ref_rows = _reference_rows(refs, superseded)
    used: set[str] = set()
    tables = []
    for key in sorted(groups):
        rkey = reference_key(groups[key][0].record)
        if rkey in ref_rows:
            used.add(rkey)
        tables.append(_make_table(key, groups[key], ref_rows.get(rkey, []), superseded))
    for rkey, rows in sorted(ref_rows.items()):
        if rkey not in used:  # a reference with no federated table still gets a table of its own
            key = TableKey.of(rows[0].runs[0].record)
            tables.append(_make_table(key, [], rows, superseded))
    return order_tables(tables)


def order_tables(tables: list[Table]) -> list[Table]:
    """tc, st, qa, s2s, then other tasks; within a task the dataset and then the setup with most runs
    first, DP and reference-only tables last; partitions from the least to the most heterogeneous
    (mean JS divergence; unknown last)."""
    size: Counter = Counter()
    for t in tables:
        size[t.key.group] += len(t.runs)
        size[(t.key.task, t.key.dataset)] += len(t.runs)

    def order(t: Table) -> tuple:
        k = t.key
        return (task_rank(k.task), -size[(k.task, k.dataset)], k.dataset, k.model, t.dp, not t.rows, -size[k.group],
                k.setup,
                k.partition_method == "none", t.heterogeneity is None, t.heterogeneity or 0.0, t.partition_label)

    ordered = sorted(tables, key=order)
    main: dict[str, set[str]] = {}
    for t in ordered:  # the first table of a task has its main setup
        chips = setup_chips(t.key.setup_dict)
        base = main.setdefault(t.key.task, set(chips))
        t.variant = " · ".join(c for c in chips if c not in base)
    return ordered


def partition_stats_record(records: list[LoadedRecord], spec: tuple) -> dict[str, Any] | None:
    """The ``partition.stats`` used for a partition spec's heatmap (lowest seed, then run id)."""
    candidates = sorted(
        (r for r in records if TableKey.of(r.record).partition_spec == spec and _has_stats(r.record)),
        key=lambda r: (r.record["seed"], r.record["run_id"]),
    )
    return candidates[0].record["partition"]["stats"] if candidates else None


def record_link(path: Path, out_dir: Path) -> str:
    """Path of a record relative to the output directory, with forward slashes."""
    return Path(os.path.relpath(Path(path).absolute(), Path(out_dir).absolute())).as_posix()


def is_dp_record(record: dict[str, Any]) -> bool:
    return bool(dp_levels(record))
