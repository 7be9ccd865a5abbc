"""The suite runner: every (algorithm, partition, seed) cell of a track, resumable, one progress bar.

A cell is one ordinary run (:func:`fednlp_bench.run.run`) of the track's configuration for that
algorithm, partition and seed, with the algorithm's tuned parameters (fednlp_bench/tuning.py);
its record gains a ``track`` section (name, version) and, when tuned, a ``tuning`` section.

Resuming is by content, not by bookkeeping: a cell is done when the results folder holds a
record with the same stable configuration (everything but where/how it ran: results folder,
tracking, progress, threads, device), the same track and tuning, and the same code (git
commit and dirty flag, plugin version or file hash). Records are written atomically at the
end of a run, so a suite killed at any moment (Ctrl-C, SIGKILL, a cluster's time limit)
leaves only finished cells behind and the next invocation runs exactly the missing ones.
On a dirty tree the commit cannot tell two edits apart: commit before a run you publish.

Cells are independent, so ``--jobs N`` runs N at once (each in its own process with
``threads = cores / N``) and a cluster can run them as separate jobs (``--cell INDEX``, e.g.
one Slurm array task per cell, all writing to one shared results folder).
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fednlp_bench import provenance, tuning
from fednlp_bench.algorithms import CENTRALIZED
from fednlp_bench.config import RunConfig
from fednlp_bench.errors import ConfigError, RunError
from fednlp_bench.track import Track

log = logging.getLogger(__name__)

# configuration keys that say where and how a run ran, not what it computed (as run.checkpoint_dir)
VOLATILE = ("results_dir", "wandb", "progress", "resume", "device", "threads")


@dataclass(frozen=True)
class Cell:
    """One run of a track."""

    algorithm: str
    partition: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.algorithm} / {self.partition} / seed {self.seed}"


@dataclass
class Options:
    """How the suite runs: where records go, which tuned parameters, threads per cell, parallel cells."""

    results_dir: Path
    tuned_folder: Path | None = None
    untuned: bool = False
    threads: int | None = None
    jobs: int = 1
    progress: bool = True


@dataclass
class Planned:
    """A cell with its resolved configuration, extra record sections and identity key."""

    index: int
    cell: Cell
    cfg: RunConfig
    extra: dict[tuple[str, ...], Any]
    key: str


@dataclass
class Report:
    total: int = 0
    skipped: int = 0
    ran: list[Cell] = field(default_factory=list)


# --------------------------------------------------------------------------- cells
def plan(track: Track, algorithms: list[str] | None = None, seeds: list[int] | None = None) -> list[Cell]:
    """Every cell, seed by seed (so a partial suite holds whole seeds first): the reference on each
    dataset's first partition, then each partition x algorithm."""
    algs = [a for a in (algorithms or list(track.algorithms)) if a != CENTRALIZED]
    if not algs and not (algorithms and CENTRALIZED in algorithms):
        raise ConfigError(f"track '{track.name}' lists no algorithms; pass --algorithm NAME")
    seeds = list(seeds) if seeds else list(track.seeds)
    out = []
    for seed in seeds:
        if track.reference is not None:
            out += [Cell(CENTRALIZED, p.name, seed) for p in track.reference_partitions()]
        out += [Cell(a, p.name, seed) for p in track.partitions for a in algs]
    return out


def cell_config(track: Track, cell: Cell, opts: Options) -> tuple[RunConfig, dict[tuple[str, ...], Any]]:
    """The cell's run configuration (tuned values applied) and its ``track``/``tuning`` record sections."""
    doc = None if opts.untuned else tuning.read_tuned(track, cell.algorithm, opts.tuned_folder)
    chosen = doc["chosen"] if doc else {}
    on_fl = doc is not None and doc["target"] == "fl"
    cfg = track.run_config(cell.algorithm, cell.partition, cell.seed, algorithm_params=None if on_fl else chosen,
                           fl_overrides=chosen if on_fl else None, results_dir=str(opts.results_dir),
                           wandb="disabled", progress=False, threads=opts.threads)
    extra: dict[tuple[str, ...], Any] = {("track",): track.identity}
    if doc is not None:
        extra[("tuning",)] = tuning.record_section(doc)
    return cfg, extra


def identity(config: dict[str, Any], track: Any, tuned: Any, code: dict[str, Any]) -> str:
    """What makes two runs the same cell: stable config (seed included), track, tuning and code."""
    stable = {k: v for k, v in config.items() if k not in VOLATILE}
    if isinstance(stable.get("fl"), dict):
        stable["fl"] = {k: v for k, v in stable["fl"].items() if k != "checkpoint_every"}
    return json.dumps({"config": stable, "track": track, "tuning": tuned, "code": code}, sort_keys=True, default=str)


def current_code(cfg: RunConfig) -> dict[str, Any]:
    from fednlp_bench.run import algorithm_identity

    commit, dirty = provenance.git_state()
    return {"git_commit": commit, "git_dirty": dirty, "plugin": algorithm_identity(cfg)}


def record_key(record: dict[str, Any]) -> str | None:
    """The identity key of a result record, ``None`` if it is not a track record."""
    try:
        prov = record["provenance"]
        code = {"git_commit": prov.get("git_commit"), "git_dirty": prov.get("git_dirty"), "plugin": prov.get("plugin")}
        if "track" not in record:
            return None
        return identity(record["config"], record["track"], record.get("tuning"), code)
    except (KeyError, TypeError, AttributeError):
        return None


def finished_keys(results_dir: Path) -> set[str]:
    """Keys of the records already in ``results_dir`` (unreadable files are ignored, never fatal)."""
    keys = set()
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            key = record_key(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError):
            log.debug("suite: ignoring unreadable %s", path)
            continue
        if key is not None:
            keys.add(key)
    return keys


def prepare_cells(track: Track, cells: list[Cell], opts: Options) -> list[Planned]:
    """Resolve every cell before any runs: a bad tuned file or config stops the suite up front."""
    out, code = [], {}
    for i, cell in enumerate(cells):
        cfg, extra = cell_config(track, cell, opts)
        if cell.algorithm not in code:
            code[cell.algorithm] = current_code(cfg)
        out.append(Planned(i, cell, cfg, extra, identity(cfg.to_dict(), extra[("track",)], extra.get(("tuning",)),
                                                          code[cell.algorithm])))
    return out


# --------------------------------------------------------------------------- running
def run_one(planned: Planned) -> None:
    from fednlp_bench.run import run

    run(planned.cfg, planned.extra)


def _die_with_parent() -> None:
    """Child processes end when the suite does (SIGKILL included), so no orphan writes a record later."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_suite(track: Track, cells: list[Cell], opts: Options, child_args: list[str] | None = None) -> Report:
    """Run every missing cell; ``child_args`` re-create this suite's cell list in a child process."""
    from tqdm.auto import tqdm

    planned = prepare_cells(track, cells, opts)
    done = finished_keys(opts.results_dir)
    todo = [p for p in planned if p.key not in done]
    report = Report(total=len(planned), skipped=len(planned) - len(todo))
    log.info("suite %s: %d cells, %d already done", track.name, report.total, report.skipped)
    bar = tqdm(total=report.total, initial=report.skipped, unit="cell", desc=f"track {track.name}",
               disable=not opts.progress, dynamic_ncols=True)
    try:
        if opts.jobs <= 1 or len(todo) <= 1:
            for p in todo:
                bar.set_postfix_str(p.cell.label)
                run_one(p)
                report.ran.append(p.cell)
                bar.update(1)
        else:
            _run_parallel(todo, opts, child_args or [], bar, report)
    finally:
        bar.close()
    return report


def _child_command(p: Planned, opts: Options, child_args: list[str]) -> list[str]:
    threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.jobs)
    return [sys.executable, "-m", "fednlp_bench", "suite", *child_args, "--cell", str(p.index),
            "--threads", str(threads), "--no-progress", "--no-overview"]


def _run_parallel(todo: list[Planned], opts: Options, child_args: list[str], bar: Any, report: Report) -> None:
    """Up to ``opts.jobs`` cells at once, each a child process; the first failure stops new starts."""
    logs = Path(opts.results_dir) / "suite-logs"
    logs.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []

    def one(p: Planned) -> Planned:
        log_path = logs / f"cell-{p.index}.log"
        with open(log_path, "w") as fh:
            rc = subprocess.run(_child_command(p, opts, child_args), stdout=fh, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent).returncode
        if rc != 0:
            last = (log_path.read_text(errors="replace").strip().splitlines() or ["(no output)"])[-1]
            failures.append(f"cell {p.index} ({p.cell.label}) exited {rc}: {last} (log: {log_path})")
        return p

    with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
        pending = {pool.submit(one, p) for p in todo[:opts.jobs]}
        queue = list(todo[opts.jobs:])
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                p = f.result()
                if not any(m.startswith(f"cell {p.index} ") for m in failures):
                    report.ran.append(p.cell)
                    bar.update(1)
            while queue and not failures and len(pending) < opts.jobs:
                pending.add(pool.submit(one, queue.pop(0)))
    if failures:
        raise RunError("; ".join(failures))
