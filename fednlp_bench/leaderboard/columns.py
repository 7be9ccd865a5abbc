"""The leaderboard columns and cell formatting, shared by the Markdown, HTML and text renderers.

A column that no row of a table fills is left out of that table (a DP column in a table
without DP, a fairness column without per-client metrics). Time and byte columns use one unit
per column, chosen from the column's largest value, and say it in the header.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fednlp_bench.leaderboard.stats import CONFIDENCE, Diff
from fednlp_bench.leaderboard.tables import PROVENANCE_KEYS, TTA_FRACTION, Row, Table, record_link, tuning_text
from fednlp_bench.record_checks import safe_text

GROUP_METRIC = "Metric"
GROUP_SPEED = "Time to accuracy"
GROUP_FAIRNESS = "Per-client fairness"
GROUP_COST = "Cost"
GROUP_TRUST = "Privacy & probes"
CI_LABEL = f"{CONFIDENCE:.0%} CI"
RANK_RULE = ("rank = 1 + the number of rows significantly better (the 95% CI of the paired difference "
             "excludes 0); rows no other row beats significantly share rank 1")


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    group: str = ""
    numeric: bool = False
    help: str = ""
    lower_is_better: bool = False
    scale: float = 1.0  # the column's unit, for time and byte columns


@dataclass(frozen=True)
class Cell:
    """Display text, a sort value (None sorts last) and optional links, lines, commands or classes."""

    text: str
    sort: float | str | None = None
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, relative href)
    lines: list[tuple[str, str]] = field(default_factory=list)  # (label, value)
    commands: list[str] = field(default_factory=list)
    classes: tuple[str, ...] = ()
    title: str = ""


def fmt_metric(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"


def fmt_delta(delta: float | None) -> str:
    """How an epsilon's delta is shown next to it: ``δ 1e-05``, or that the record has none
    (an epsilon without its delta states no guarantee, so it is never shown bare)."""
    return f"δ {delta:.2g}" if delta is not None else "δ not recorded"


def fmt_signed(x: float | None) -> str:
    if x is None:
        return "–"
    return ("+" if x >= 0 else "-") + fmt_metric(abs(x))


def fmt_ci(mean: float | None, half: float | None) -> str:
    return fmt_metric(mean) if half is None or mean is None else f"{fmt_metric(mean)} ± {fmt_metric(half)}"


def fmt_diff(d: Diff | None) -> str:
    if d is None:
        return "–"
    text = fmt_signed(d.mean) if d.half is None else f"{fmt_signed(d.mean)} ± {fmt_metric(d.half)}"
    return text + (" *" if d.significant else "")


TIME_UNITS = ((1.0, "s"), (60.0, "min"), (3600.0, "h"))
BYTE_UNITS = ((1.0, "B"), (1024.0, "KiB"), (1024.0**2, "MiB"), (1024.0**3, "GiB"), (1024.0**4, "TiB"))


def overview_value(row: Row) -> str:
    """An overview cell's number: the gap to centralized when the row has one, else mean ± CI."""
    return fmt_diff(row.gap) if row.gap is not None else fmt_ci(row.primary.mean, row.primary.half)


def overview_rank(row: Row, empty: str = "") -> str:
    """The tie-aware rank ("2=" when tied with others), or ``empty`` for an unranked row."""
    return f"{row.rank}{'=' if row.tied else ''}" if row.rank is not None else empty


def column_unit(values: list[float | None], kind: str) -> tuple[float, str]:
    """One unit for a whole column, from its largest value: s / min / h, or B / KiB / ... / TiB."""
    top = max((v for v in values if v is not None), default=0.0)
    if kind == "time":
        return TIME_UNITS[0] if top < 120 else TIME_UNITS[1] if top < 7200 else TIME_UNITS[2]
    return next(((scale, name) for scale, name in reversed(BYTE_UNITS) if top >= scale), BYTE_UNITS[0])


def scaled(v: float | None, scale: float) -> str:
    """``v`` in the column's unit: whole bytes, else one decimal (thousands separated)."""
    if v is None:
        return "–"
    x = v / scale
    if scale == 1.0 and x >= 1000:
        return f"{x:,.0f}"
    return f"{x:,.1f}" if abs(x) < 1000 else f"{x:,.0f}"


def fmt_count(x: float | None) -> str:
    if x is None:
        return "–"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.1f}{suffix}"
    return f"{x:.0f}"


def _any(rows: list[Row], get) -> bool:
    return any(get(r) is not None for r in rows)


def _cost_columns(table: Table) -> list[Column]:
    rows = table.all_rows
    cols = []
    if any(r.cost.get("n_params_total") is not None for r in rows):
        cols.append(Column("params", "Trained / total params", GROUP_COST, True, "Parameters trained and sent "
                           "(cost.n_params) out of the model's total (cost.n_params_total, e.g. with PEFT)",
                           lower_is_better=True))
    for key, header, cost, kind, help_ in (
        ("wall", "Wall", "wall_seconds", "time", "Wall-clock time of the run"),
        ("compute", "Compute", "client_compute_seconds", "time", "Summed client training time"),
        ("up", "Up/round", "bytes_up_per_round", "bytes", "Bytes sent by clients per round"),
        ("down", "Down/round", "bytes_down_per_round", "bytes", "Bytes sent by the server per round"),
    ):
        values = [r.cost[cost] for r in rows]
        if any(v is not None for v in values):
            scale, unit = column_unit(values, kind)
            cols.append(Column(key, f"{header} ({unit})", GROUP_COST, True, f"{help_}, in {unit}; mean over seeds",
                               lower_is_better=True, scale=scale))
    return cols


def _speed_columns(table: Table) -> list[Column]:
    if table.tta_target is None:
        return []
    split = "validation" if table.tta_split == "val" else "per-round test"
    target = (f"the first round whose {split} {table.primary} reaches {TTA_FRACTION:.0%} of the centralized "
              f"reference ({table.tta_target:.4f}); mean over the seeds that reached it")
    cols = [Column("tta_rounds", f"Rounds to {TTA_FRACTION:.0%}", GROUP_SPEED, True, f"Rounds until {target}",
                   lower_is_better=True)]
    values = [r.tta.bytes if r.tta else None for r in table.rows]
    if any(v is not None for v in values):
        scale, unit = column_unit(values, "bytes")
        cols.append(Column("tta_bytes", f"Traffic ({unit})", GROUP_SPEED, True,
                           f"Bytes sent up and down until {target}, in {unit}", lower_is_better=True, scale=scale))
    return cols


def _trust_columns(table: Table) -> list[Column]:
    rows, p = table.all_rows, table.primary
    cols = []
    if table.dp:
        cols.append(Column("epsilon", "ε", GROUP_TRUST, True, "Differential privacy epsilon of the run (user or "
                           "sample level) at the delta in its record; mean over seeds", lower_is_better=True))
    if _any(rows, lambda r: r.probes.get("mia_auc")):
        cols.append(Column("mia", "MIA AUC", GROUP_TRUST, True, "Loss-threshold membership inference ROC-AUC on "
                           "the final model (privacy.audit=true); 0.5 = no leakage detected", lower_is_better=True))
    if _any(rows, lambda r: r.probes.get("canary_digits")):
        cols.append(Column("canary", "Canary digits", GROUP_TRUST, True, "Canary extraction by model inversion "
                           "(privacy.canary_attack=invert): share of the canaries' secret digits the best attack "
                           "method rebuilds from the final model; chance 0.1", lower_is_better=True))
    if _any(rows, lambda r: r.probes.get("flip_rate")):
        cols.append(Column("flip", "Gender flip", GROUP_TRUST, True, "Counterfactual probe: share of affected "
                           f"test texts whose prediction flips when gendered terms are swapped ({p} task)",
                           lower_is_better=True))
    return cols


def columns(table: Table) -> list[Column]:
    """Columns of ``table`` in display order (empty ones left out)."""
    p, rows = table.primary, table.all_rows
    cols = [
        Column("rank", "Rank", numeric=True, help="Tie-aware " + RANK_RULE, lower_is_better=True),
        Column("algorithm", "Algorithm", help="Algorithm name; its hyper-parameters as chips"),
        Column("primary", f"{p} ({CI_LABEL})", GROUP_METRIC, True,
               f"Final test {p}: mean over seeds ± half-width of the {CI_LABEL} (Student t)"),
        Column("n", "Seeds", GROUP_METRIC, True, "Number of seeds averaged"),
    ]
    if table.baseline is not None and len(table.rows) > 1:
        cols.append(Column("vs", "Δ FedAvg", GROUP_METRIC, True, f"Difference to FedAvg, paired by seed, ± {CI_LABEL};"
                           " * = significant (the interval excludes 0)"))
    if table.rows:
        cols.append(Column("gap", "Gap", GROUP_METRIC, True, f"{p} minus the centralized reference with the identical"
                           f" setup, paired by seed, ± {CI_LABEL}; 'no reference' when there is none"))
    cols += _speed_columns(table)
    cols += [Column(f"sec:{m}", m, GROUP_METRIC, True, f"Secondary metric {m}: mean over seeds")
             for m in table.secondary]
    if _any(rows, lambda r: r.fairness.mean):
        cols += [
            Column("f_mean", "Mean", GROUP_FAIRNESS, True, f"Unweighted mean of per-client {p}"),
            Column("f_std", "Std", GROUP_FAIRNESS, True, f"Standard deviation of per-client {p}", lower_is_better=True),
            Column("f_worst", "Worst 10%", GROUP_FAIRNESS, True, f"Mean {p} of the worst 10% of clients"),
        ]
    cols += _trust_columns(table)
    cols += _cost_columns(table)
    cols.append(Column("verified", "Verified", numeric=True, help="Seeds whose record `fednlp-bench verify` "
                       "re-ran and confirmed (a stamp next to the record matches its digest)"))
    cols.append(Column("records", "Records", help="Result record of each seed and the command that reproduces it"))
    if any(differing_provenance(table, r) for r in rows):
        cols.append(Column("provenance", "Provenance", help="Provenance of this row where it differs from the "
                           "table's (shown above the table)"))
    return cols


def differing_provenance(table: Table, row: Row) -> list[tuple[str, str]]:
    """(field, values) where the row's provenance differs from the table's most common values."""
    common = table.provenance()
    out = []
    for key in PROVENANCE_KEYS:
        vals = row.values_of(key)
        if vals and vals != [common.get(key)]:
            out.append((key, ", ".join(vals)))
    return out


def reproduce_commands(row: Row, out_dir: Path) -> list[str]:
    """Per seed: the stored command of the run when there is one, and the verify command (and how the
    hyper-parameters were tuned, when the record says)."""
    cmds = []
    for r in row.runs:
        tuned = tuning_text(r.record)
        if tuned:
            cmds.append("# " + safe_text(tuned, 300))
        argv = portable_command(r.record["provenance"].get("command"))
        if argv:
            cmds.append(safe_text(shlex.join(argv), 600))
        cmds.append("fednlp-bench verify " + shlex.quote(record_link(r.path, out_dir)))
    return cmds


def portable_command(argv: Any) -> list[str] | None:
    """A stored command as a reader can type it: the entry point (console script or
    ``.../fednlp_bench/__main__.py``) as ``fednlp-bench`` and a packaged track's path as its name.
    None for no command, and for a suite worker's (``--worker``: it runs the cells its driver sends on
    stdin, so its command line names no cell; ``fednlp-bench verify`` still re-runs the record)."""
    if not (isinstance(argv, list) and len(argv) > 1 and all(isinstance(a, str) for a in argv)):
        return None
    if "--worker" in argv:
        return None
    head = argv[0].replace("\\", "/")
    out = ["fednlp-bench" if head.endswith(("fednlp-bench", "fednlp_bench/__main__.py")) else argv[0], *argv[1:]]
    for i in [i for i, a in enumerate(out[:-1]) if a == "--track"]:
        packaged = re.fullmatch(r".*fednlp_bench/tracks/([A-Za-z0-9_-]+)\.yaml", out[i + 1].replace("\\", "/"))
        out[i + 1] = packaged.group(1) if packaged else out[i + 1]
    return out


@dataclass(frozen=True)
class Flag:
    """A visible warning on a row: a short ``marker``, one ``text`` line and its ``details``."""

    kind: str  # "failures" or "deviations"
    marker: str
    text: str
    details: list[str]


def row_flags(row: Row) -> list[Flag]:
    """Client failures (marker with the count) and departures from the paper's setup (the list)."""
    flags = []
    f = row.failures
    if f.total:
        seeds = f"{f.runs} of {len(row.runs)} seed{'s' * (len(row.runs) != 1)}"
        flags.append(Flag("failures", f"⚠ {f.total} failed", f"{f.summary()} ({seeds})", list(f.examples)))
    if row.deviations:
        flags.append(Flag("deviations", "≠ paper setup", "deviates from the algorithm's paper setup",
                          [safe_text(d, 400) for d in row.deviations]))
    return flags


def flag_notes(table: Table) -> list[tuple[Row, Flag]]:
    """Every flag of a table's rows, for the notes under the table."""
    return [(row, flag) for row in table.all_rows for flag in row_flags(row)]


def _rank_cell(row: Row, table: Table) -> Cell:
    if row.is_reference:
        return Cell("ref", None)
    if row.rank is None:
        return Cell("–" if not table.dp else "DP", None, title="DP rows are not ranked" if table.dp else "")
    return Cell(f"{row.rank}=" if row.tied else str(row.rank), row.rank,
                title="shares its rank: no significant difference" if row.tied else "")


def _diff_cell(d: Diff | None, empty: str) -> Cell:
    if d is None:
        return Cell(empty, None)
    cls = ("sig",) if d.significant else ()
    cls += ("pos",) if d.mean >= 0 else ("neg",)
    how = {"paired": f"paired over {d.n} seeds", "welch": "Welch (too few shared seeds to pair)",
           "means": "difference of means (one seed: no interval)"}[d.method]
    return Cell(fmt_diff(d), d.mean, classes=cls, title=how)


def _tta_cell(row: Row, col: Column) -> Cell:
    t = row.tta
    if t is None or t.n == 0:
        return Cell("–", None)
    if t.reached == 0:
        return Cell("not reached", None, title=f"0/{t.n} seeds reached the target")
    suffix = f" ({t.reached}/{t.n})" if t.reached < t.n else ""
    if col.key == "tta_rounds":
        return Cell(f"{t.rounds:g}{suffix}", t.rounds)
    return Cell(scaled(t.bytes, col.scale) + suffix, t.bytes)


def _cost_cell(row: Row, col: Column) -> Cell:
    if col.key == "params":
        n, total = row.cost.get("n_params"), row.cost.get("n_params_total")
        return Cell(f"{fmt_count(n)} / {fmt_count(total)}", n)
    key = {"wall": "wall_seconds", "compute": "client_compute_seconds", "up": "bytes_up_per_round",
           "down": "bytes_down_per_round"}[col.key]
    v = row.cost[key]
    return Cell(scaled(v, col.scale), v)


def _misc_cell(row: Row, col: Column, table: Table, out_dir: Path) -> Cell:
    k = col.key
    if k.startswith("sec:"):
        v = row.secondary.get(k[4:])
        return Cell(fmt_metric(v), v)
    if k in ("f_mean", "f_std", "f_worst"):
        v = {"f_mean": row.fairness.mean, "f_std": row.fairness.std, "f_worst": row.fairness.worst10}[k]
        return Cell(fmt_metric(v), v)
    if k == "epsilon":
        v, delta = row.probes.get("epsilon"), row.probes.get("delta")
        text = f"{row.epsilon_text} {v:.3g}".strip() if v is not None else "∞"
        return Cell(text + (f" ({fmt_delta(delta)})" if v is not None else ""), v)
    if k in ("mia", "canary", "flip"):
        v = row.probes.get({"mia": "mia_auc", "canary": "canary_digits", "flip": "flip_rate"}[k])
        return Cell(fmt_metric(v), v)
    if k == "verified":
        n = row.n_verified
        dates = sorted({r.verification.date for r in row.runs if r.verification and r.verification.date})
        return Cell(f"✓ {n}/{len(row.runs)}" if n else "–", n, title=f"verified {', '.join(dates)}" if n else "")
    if k == "records":
        links = [(f"seed {r.record['seed']}", record_link(r.path, out_dir)) for r in row.runs]
        return Cell(", ".join(label for label, _ in links), None, links=links,
                    commands=reproduce_commands(row, out_dir))
    if k == "provenance":
        lines = differing_provenance(table, row)
        return Cell("; ".join(f"{a}: {b}" for a, b in lines), None, lines=lines)
    raise KeyError(k)


def cell(row: Row, column: Column, table: Table, out_dir: Path) -> Cell:
    """The content of one cell."""
    k = column.key
    if k == "rank":
        return _rank_cell(row, table)
    if k == "algorithm":
        return Cell(row.algorithm, row.label.lower())
    if k == "primary":
        return Cell(fmt_ci(row.primary.mean, row.primary.half), row.primary.mean)
    if k == "n":
        return Cell(str(row.primary.n), row.primary.n)
    if k == "vs":
        return _diff_cell(row.vs_baseline, "baseline" if row is table.baseline else "–")
    if k == "gap":
        if row.is_reference:
            return Cell("reference", None)
        return _diff_cell(row.gap, "no reference")
    if k.startswith("tta_"):
        return _tta_cell(row, column)
    if k in ("wall", "compute", "up", "down", "params"):
        return _cost_cell(row, column)
    return _misc_cell(row, column, table, out_dir)
