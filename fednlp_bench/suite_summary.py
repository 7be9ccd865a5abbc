"""What the suite prints when it is done: the leaderboard's overview, or a plain mean ± CI table.

When the leaderboard package provides its text overview (``fednlp_bench.leaderboard.overview``
and ``render_text``: statistics over seeds, paired differences, tie-aware ranks), the suite
prints that. Otherwise it prints a simple algorithm x partition table of the test primary
metric: mean over seeds ± the half-width of the 95% Student-t confidence interval,
``t_{0.975, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation (n = 1: no interval).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from fednlp_bench.algorithms import CENTRALIZED
from fednlp_bench.errors import ConfigError
from fednlp_bench.track import Track


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float | None]:
    """Mean and the half-width of its two-sided Student-t interval (``None`` for one value)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + level / 2, n - 1)) * s / math.sqrt(n)


def _partition_names(track: Track) -> dict[str, str]:
    """Canonical (dataset, partition config) of each track partition -> its name."""
    out = {}
    for p in track.partitions:
        cfg = track.run_config("fedavg", p.name, track.seeds[0], wandb="disabled").to_dict()
        out[json.dumps([cfg["dataset"], cfg["partition"]], sort_keys=True)] = p.name
    return out


def track_results(track: Track, results_dir: Path) -> dict[tuple[str, str], dict[int, float]]:
    """(algorithm, partition name) -> {seed: test primary metric}, newest record per seed, this track version."""
    names = _partition_names(track)
    newest: dict[tuple[str, str, int], tuple[str, float]] = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            if rec.get("track") != track.identity:
                continue
            part = names.get(json.dumps([rec["config"]["dataset"], rec["config"]["partition"]], sort_keys=True))
            value = float(rec["metrics"]["final"][rec["metrics"]["primary"]])
            key = (rec["algorithm"]["name"], part, int(rec["seed"]))
            created = str(rec["created"])
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            continue
        if part is not None and math.isfinite(value) and (key not in newest or created >= newest[key][0]):
            newest[key] = (created, value)
    out: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for (alg, part, seed), (_, value) in newest.items():
        out[(alg, part)][seed] = value
    return dict(out)


def simple_table(track: Track, results_dir: Path) -> str:
    """Algorithm x partition: mean ± 95% t-CI half-width over seeds, with the number of seeds."""
    cells = track_results(track, results_dir)
    if not cells:
        return f"no records of track {track.name} v{track.version} in {results_dir}\n"
    parts = [p.name for p in track.partitions]
    algs = sorted({a for a, _ in cells}, key=lambda a: (a != CENTRALIZED, a))
    lines = [f"track {track.name} v{track.version}: test {_primary(track)}, mean ± 95% CI half-width "
             f"(Student t over seeds), (n seeds)", ""]
    header = [f"{'algorithm':<14}"] + [f"{p:>22}" for p in parts]
    lines.append(" ".join(header))
    for alg in algs:
        row = [f"{alg:<14}"]
        for p in parts:
            values = list(cells.get((alg, p), {}).values())
            row.append(f"{_cell_text(values):>22}")
        lines.append(" ".join(row))
    return "\n".join(lines) + "\n"


def partition_gap(cells: dict[tuple[str, str], dict[int, float]], algorithm: str, a: str,
                  b: str) -> tuple[float, float | None, list[int]]:
    """``algorithm`` on partition ``a`` minus on ``b``, paired by seed: mean, 95% t half-width, seeds.

    Seed s of both cells shares the model initialisation and client sampling stream, so the
    per-seed difference removes that source of noise (the partitions still differ by seed).
    Only seeds present on both sides count.
    """
    left, right = cells.get((algorithm, a), {}), cells.get((algorithm, b), {})
    seeds = sorted(set(left) & set(right))
    if not seeds:
        raise ConfigError(f"no seed has both {algorithm} / {a} and {algorithm} / {b} records")
    mean, half = mean_ci([left[s] - right[s] for s in seeds])
    return mean, half, seeds


def _cell_text(values: list[float]) -> str:
    if not values:
        return "-"
    mean, half = mean_ci(values)
    return f"{mean:.4f} ± {half:.4f} ({len(values)})" if half is not None else f"{mean:.4f} (1)"


def _primary(track: Track) -> str:
    from fednlp_bench import tasks

    return tasks.get(track.task).primary_metric


def leaderboard_overview(results_dir: Path, task: str) -> str | None:
    """The leaderboard's text overview of ``results_dir`` when the leaderboard provides one."""
    try:
        from fednlp_bench.leaderboard.load import load_records
        from fednlp_bench.leaderboard.overview import overview
        from fednlp_bench.leaderboard.render_text import render_text
        from fednlp_bench.leaderboard.tables import make_tables
    except ImportError:
        return None
    records, skipped = load_records([Path(results_dir)])
    records = [r for r in records if r.record["task"] == task]
    tables = make_tables(records, skipped=skipped)
    return render_text(tables, overview(tables)) if tables else None


def summary(track: Track, results_dir: Path) -> str:
    return leaderboard_overview(results_dir, track.task) or simple_table(track, results_dir)


def rebuild_board(results_dir: Path, out_dir: Path) -> Any:
    """Rebuild a leaderboard (README.md, index.html, plots) from the suite's results folder."""
    from fednlp_bench.leaderboard import build

    return build([Path(results_dir)], Path(out_dir))
