"""The leaderboard columns and cell formatting, shared by the Markdown and HTML renderers."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fednlp_bench.leaderboard.tables import Row, Table, record_link

GROUP_METRIC = "Metric"
GROUP_FAIRNESS = "Per-client fairness"
GROUP_COST = "Cost"
GROUP_TRUST = "Privacy & probes"


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    group: str = ""
    numeric: bool = False
    help: str = ""


@dataclass(frozen=True)
class Cell:
    """Display text, a sort value (None sorts last) and optional links or lines."""

    text: str
    sort: float | str | None = None
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, relative href)
    lines: list[tuple[str, str]] = field(default_factory=list)  # (label, value)


def fmt_metric(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"


def fmt_gap(x: float | None) -> str:
    if x is None:
        return "–"
    return ("+" if x >= 0 else "-") + fmt_metric(abs(x))


def fmt_seconds(x: float | None) -> str:
    if x is None:
        return "–"
    if x < 120:
        return f"{x:.1f} s"
    if x < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.1f} h"


def fmt_bytes(x: float | None) -> str:
    if x is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(x) < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    raise AssertionError  # pragma: no cover


def columns(table: Table) -> list[Column]:
    """Columns of ``table`` in display order."""
    p = table.primary
    cols = [
        Column("rank", "Rank", numeric=True, help="Rank by mean primary metric (reference rows unranked)"),
        Column("algorithm", "Algorithm", help="Algorithm name; hyper-parameters below it"),
        Column("primary", f"{p} ± std", GROUP_METRIC, True, f"Primary metric {p}: mean ± sample std over seeds"),
        Column("n", "Seeds", GROUP_METRIC, True, "Number of seeds averaged"),
        Column("gap", "Gap", GROUP_METRIC, True, f"Gap to centralized: mean {p} minus the reference mean"),
    ]
    cols += [
        Column(f"sec:{m}", m, GROUP_METRIC, True, f"Secondary metric {m}: mean over seeds")
        for m in table.secondary
    ]
    cols += [
        Column("f_mean", "Mean", GROUP_FAIRNESS, True, f"Unweighted mean of per-client {p}"),
        Column("f_std", "Std", GROUP_FAIRNESS, True, f"Standard deviation of per-client {p}"),
        Column("f_worst", "Worst 10%", GROUP_FAIRNESS, True, f"Mean {p} of the worst 10% of clients"),
        Column("epsilon", "ε", GROUP_TRUST, True, "Differential privacy: epsilon of the run (user or sample "
               "level, at the delta in its record); inf = no DP"),
        Column("mia", "MIA AUC", GROUP_TRUST, True, "Loss-threshold membership inference ROC-AUC on the final "
               "model (privacy.audit=true); 0.5 = no leakage detected"),
        Column("flip", "Gender flip", GROUP_TRUST, True, "Counterfactual probe: share of affected test texts whose "
               "prediction flips when gendered terms are swapped (tc)"),
        Column("wall", "Wall", GROUP_COST, True, "Wall-clock time of the run"),
        Column("compute", "Compute", GROUP_COST, True, "Summed client training time"),
        Column("up", "Up/round", GROUP_COST, True, "Bytes sent by clients per round"),
        Column("down", "Down/round", GROUP_COST, True, "Bytes sent by the server per round"),
        Column("records", "Records", help="Result record files, one per seed"),
        Column("provenance", "Provenance", help="git commit, torch / transformers, device, date, preset, seeds"),
    ]
    return cols


PROVENANCE_FIELDS = (
    ("commit", "commit"),
    ("torch", "torch"),
    ("transformers", "transformers"),
    ("device", "device"),
    ("date", "date"),
    ("preset", "preset"),
)


def cell(row: Row, column: Column, table: Table, out_dir: Path) -> Cell:
    """The content of one cell."""
    k = column.key
    if k == "rank":
        return Cell("ref" if row.is_reference else str(row.rank or "–"), row.rank if row.rank else None)
    if k == "algorithm":
        return Cell(row.algorithm, row.label.lower())
    if k == "primary":
        m, s = row.primary.mean, row.primary.std
        text = fmt_metric(m) if s is None or m is None else f"{fmt_metric(m)} ± {fmt_metric(s)}"
        return Cell(text, m)
    if k == "n":
        return Cell(str(row.primary.n), row.primary.n)
    if k == "gap":
        if row.is_reference:
            return Cell("reference", None)
        return Cell(fmt_gap(row.gap), row.gap)
    if k.startswith("sec:"):
        v = row.secondary.get(k[4:])
        return Cell(fmt_metric(v), v)
    if k in ("f_mean", "f_std", "f_worst"):
        v = {"f_mean": row.fairness.mean, "f_std": row.fairness.std, "f_worst": row.fairness.worst10}[k]
        return Cell(fmt_metric(v), v)
    if k == "epsilon":
        v = row.probes.get("epsilon")
        at = row.epsilon_text[row.epsilon_text.find(" ("):] if " (" in row.epsilon_text else ""  # the delta
        text = row.epsilon_text if v is None else f"{row.epsilon_text.split()[0]} {v:.3g}{at}"
        return Cell(text.replace("inf", "∞"), v)
    if k in ("mia", "flip"):
        v = row.probes.get("mia_auc" if k == "mia" else "flip_rate")
        return Cell(fmt_metric(v), v)
    if k in ("wall", "compute"):
        v = row.cost["wall_seconds" if k == "wall" else "client_compute_seconds"]
        return Cell(fmt_seconds(v), v)
    if k in ("up", "down"):
        v = row.cost["bytes_up_per_round" if k == "up" else "bytes_down_per_round"]
        return Cell(fmt_bytes(v), v)
    if k == "records":
        links = [(f"seed {r.record['seed']}", record_link(r.path, out_dir)) for r in row.runs]
        return Cell(", ".join(label for label, _ in links), None, links=links)
    if k == "provenance":
        lines = [(label, ", ".join(row.values(key))) for key, label in PROVENANCE_FIELDS]
        lines.append(("seeds", ", ".join(map(str, row.seeds))))
        lines = [(label, value) for label, value in lines if value]
        return Cell("; ".join(f"{a}: {b}" for a, b in lines), None, lines=lines)
    raise KeyError(k)
