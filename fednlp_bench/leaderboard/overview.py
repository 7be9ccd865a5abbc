"""The overview at the top of the leaderboard: per task, algorithms x partitions.

HELM opens with an aggregate view (Liang et al. 2022); here each task gets one matrix per setup
(the table key without the partition): rows are algorithm configurations, columns are the
partitions ordered from the least to the most heterogeneous (mean Jensen-Shannon divergence
of the client label distributions, ``partition.stats.mean_js``), and each cell holds the gap
to the centralized reference with its 95% interval (or, without a reference, the mean with
its interval) and the row's tie-aware rank in that table. The last column is the mean rank
over the partitions the row was run on. DP tables are not part of a matrix (they are not
ranked); their rows feed the privacy-utility plot instead.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field

from fednlp_bench.leaderboard.keys import canonical, setup_chips, task_rank
from fednlp_bench.leaderboard.stats import Estimate
from fednlp_bench.leaderboard.tables import Row, Table


def privacy_id(task: str, dataset: str, model: str) -> str:
    """The id of a task's privacy-utility block for one dataset and model."""
    return "p-" + hashlib.sha256(canonical([task, dataset, model]).encode()).hexdigest()[:12]


@dataclass
class Matrix:
    """Algorithms x partitions of one setup."""

    tables: list[Table]  # columns, least heterogeneous first
    labels: list[str]  # rows, best mean rank first
    cells: dict[tuple[str, str], Row]  # (row label, table id) -> row
    mean_rank: dict[str, tuple[float, int]]  # row label -> (mean rank, partitions)
    reference: Row | None

    @property
    def key(self):
        return self.tables[0].key

    @property
    def id(self) -> str:
        return "m-" + self.tables[0].key.id

    @property
    def title(self) -> str:
        k = self.key
        return f"{k.task} / {k.dataset} / {k.model}"

    @property
    def chips(self) -> list[str]:
        return setup_chips(self.key.setup_dict)

    @property
    def n_runs(self) -> int:
        return sum(len(t.runs) for t in self.tables)


@dataclass
class PrivacyPoint:
    label: str
    level: str
    epsilon: float
    primary: Estimate
    delta: float | None = None


@dataclass
class TaskOverview:
    """Everything the overview shows for one task."""

    task: str
    matrices: list[Matrix]  # the first is the main setup (most runs)
    privacy: dict[tuple[str, str], list[PrivacyPoint]] = field(default_factory=dict)  # (dataset, model)
    privacy_baselines: dict[tuple[str, str], list[tuple[str, float]]] = field(default_factory=dict)
    privacy_tables: dict[tuple[str, str], list[Table]] = field(default_factory=dict)


def setup_difference(main: Matrix, other: Matrix) -> str:
    """What sets ``other``'s setup apart from the main one, as chips text."""
    parts = []
    if (other.key.dataset, other.key.model) != (main.key.dataset, main.key.model):
        parts.append(f"{other.key.dataset} / {other.key.model}")
    base = set(main.chips)
    parts += [c for c in other.chips if c not in base]
    return " · ".join(parts) or "same setup"


def other_setup_rows(ov: TaskOverview) -> list[tuple[str, Table, Row]]:
    """(setup difference, table, row) of every row outside the task's main matrix."""
    if len(ov.matrices) < 2:
        return []
    main = ov.matrices[0]
    out = []
    for m in ov.matrices[1:]:
        diff = setup_difference(main, m)
        out += [(diff, t, row) for t in m.tables for row in t.rows]
    return out


def _matrix(tables: list[Table]) -> Matrix:
    cells: dict[tuple[str, str], Row] = {}
    ranks: dict[str, list[int]] = defaultdict(list)
    for t in tables:
        for row in t.rows:
            cells[(row.label, t.id)] = row
            if row.rank is not None:
                ranks[row.label].append(row.rank)
    labels = sorted({label for label, _ in cells})
    mean_rank = {label: (sum(r) / len(r), len(r)) for label, r in ranks.items() if r}
    labels.sort(key=lambda label: (mean_rank.get(label, (1e9, 0))[0], -mean_rank.get(label, (0, 0))[1], label))
    reference = next((t.reference for t in tables if t.reference is not None), None)
    return Matrix(tables, labels, cells, mean_rank, reference)


def _without_privacy(t: Table) -> tuple:
    setup = {k: v for k, v in t.key.setup_dict.items() if k != "privacy"}
    return (t.key.task, t.key.dataset, t.key.model, json.dumps(setup, sort_keys=True), t.key.partition_spec)


def _privacy(ov: TaskOverview, dp_tables: list[Table], plain: list[Table]) -> None:
    plain_by = {_without_privacy(t): t for t in plain}
    for t in dp_tables:
        where = (t.key.dataset, t.key.model)
        ov.privacy_tables.setdefault(where, []).append(t)
        for row in t.rows:
            eps = row.probes.get("epsilon")
            if eps is not None and row.primary.mean is not None:
                ov.privacy.setdefault(where, []).append(
                    PrivacyPoint(row.label, row.epsilon_text, eps, row.primary, row.probes.get("delta")))
        twin = plain_by.get(_without_privacy(t))
        if twin is not None:
            lines = ov.privacy_baselines.setdefault(where, [])
            for row in twin.rows:
                if row.primary.mean is not None and (row.label, row.primary.mean) not in lines:
                    lines.append((f"{row.label} (no DP)", row.primary.mean))


def overview(tables: list[Table]) -> list[TaskOverview]:
    """One :class:`TaskOverview` per task, in benchmark order (tc, st, qa, s2s, others)."""
    by_task: dict[str, list[Table]] = defaultdict(list)
    for t in tables:
        by_task[t.key.task].append(t)
    out = []
    for task in sorted(by_task, key=task_rank):
        plain = [t for t in by_task[task] if not t.dp and t.rows]
        groups: dict[tuple, list[Table]] = defaultdict(list)
        for t in plain:
            groups[t.key.group].append(t)
        matrices = [_matrix(ts) for ts in groups.values()]  # tables arrive in display order
        matrices.sort(key=lambda m: (-m.n_runs, m.key.dataset, m.key.model, m.key.setup))
        ov = TaskOverview(task, matrices)
        _privacy(ov, [t for t in by_task[task] if t.dp and t.rows], plain)
        if ov.matrices or ov.privacy:
            out.append(ov)
    return out
