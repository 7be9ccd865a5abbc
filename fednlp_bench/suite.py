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

Cells are independent, so ``--jobs N`` runs N at once (in N worker processes with
``threads = cores / N``, each running cell after cell) and a cluster can run them as separate
jobs (``--cell INDEX``, e.g. one Slurm array task per cell, all writing to one shared results
folder).
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from fednlp_bench import provenance, tuning
from fednlp_bench.algorithms import CENTRALIZED
from fednlp_bench.config import RunConfig, stable_config
from fednlp_bench.errors import ConfigError, RunError
from fednlp_bench.track import Track, packaged_tracks, track_path

log = logging.getLogger(__name__)


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
def plan(track: Track, algorithms: list[str] | None = None, seeds: list[int] | None = None,
         partitions: list[str] | None = None) -> list[Cell]:
    """Every cell, seed by seed (so a partial suite holds whole seeds first): the reference on each
    dataset's first partition, then each partition x algorithm; ``partitions`` (names) keeps only
    the cells on those partitions."""
    algs = [a for a in (algorithms or list(track.algorithms)) if a != CENTRALIZED]
    if not algs and not (algorithms and CENTRALIZED in algorithms):
        raise ConfigError(f"track '{track.name}' lists no algorithms; pass --algorithm NAME")
    keep = {track.partition(name).name for name in partitions} if partitions else None
    seeds = list(seeds) if seeds else list(track.seeds)
    out = []
    for seed in seeds:
        if track.reference is not None:
            out += [Cell(CENTRALIZED, p.name, seed) for p in track.reference_partitions()]
        out += [Cell(a, p.name, seed) for p in track.partitions for a in algs]
    out = [c for c in out if keep is None or c.partition in keep]
    if not out:
        raise ConfigError(f"no cell of track '{track.name}' runs on partition(s) {', '.join(partitions or [])}; "
                          f"the reference runs on {', '.join(p.name for p in track.reference_partitions())}")
    return out


def cell_command(track: Track, cell: Cell, opts: Options) -> list[str]:
    """The command that runs exactly this cell, stored as the record's ``provenance.command``: the
    driver's own command line (``--jobs``, worker flags, local paths) cannot be re-run by a reader."""
    packaged = track.name in packaged_tracks() and track.path == track_path(track.name)
    cmd = ["fednlp-bench", "suite", "--track", track.name if packaged else str(track.path),
           "--algorithm", cell.algorithm, "--partition", cell.partition, "--seeds", str(cell.seed)]
    if opts.untuned:
        cmd.append("--untuned")
    elif opts.tuned_folder is not None:
        cmd += ["--tuned-dir", str(opts.tuned_folder)]
    return cmd


def cell_config(track: Track, cell: Cell, opts: Options) -> tuple[RunConfig, dict[tuple[str, ...], Any]]:
    """The cell's run configuration (tuned values applied) and its ``track``/``tuning`` record sections."""
    doc = None if opts.untuned else tuning.read_tuned(track, cell.algorithm, opts.tuned_folder)
    chosen = doc["chosen"] if doc else {}
    on_fl = doc is not None and doc["target"] == "fl"
    cfg = track.run_config(cell.algorithm, cell.partition, cell.seed, algorithm_params=None if on_fl else chosen,
                           fl_overrides=chosen if on_fl else None, results_dir=str(opts.results_dir),
                           wandb="disabled", progress=False, threads=opts.threads)
    extra: dict[tuple[str, ...], Any] = {("track",): track.identity,
                                         ("provenance", "command"): cell_command(track, cell, opts)}
    if doc is not None:
        extra[("tuning",)] = tuning.record_section(doc)
    return cfg, extra


def identity(config: dict[str, Any], track: Any, tuned: Any, code: dict[str, Any]) -> str:
    """What makes two runs the same cell: stable config (seed included), track, tuning and code."""
    return json.dumps({"config": stable_config(config), "track": track, "tuning": tuned, "code": code},
                      sort_keys=True, default=str)


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


def _worker_command(opts: Options, child_args: list[str]) -> list[str]:
    threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.jobs)
    return [sys.executable, "-m", "fednlp_bench", "suite", *child_args, "--worker",
            "--threads", str(threads), "--no-progress", "--no-overview"]


class _Worker:
    """One long-lived child process that runs the cells it is sent, one at a time.

    Starting Python, torch and transformers and building the first model costs ~15 s, a quarter
    of a quick tc cell; a worker pays it once for all its cells instead of once per cell. Each cell
    still starts from the same seeded state (:func:`fednlp_bench.run.run` seeds every generator and
    builds its own model), so its record does not depend on which cells ran before it in the worker.
    """

    def __init__(self, command: list[str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "w") as log_fh:
            self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_fh,
                                         text=True, bufsize=1, preexec_fn=_die_with_parent)

    def run(self, p: Planned, cell_log: Path) -> str | None:
        """Run one cell; ``None`` when it finished, else a one-line reason."""
        try:
            self.proc.stdin.write(f"{p.index}\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            reply = ""
        if reply.strip() == f"ok {p.index}":
            return None
        if reply.startswith(f"fail {p.index} "):
            return reply[len(f"fail {p.index} "):].strip()
        rc = self.proc.wait()
        return f"the worker process exited {rc}: {_last_line(cell_log) or _last_line(self.log_path)}"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.wait()


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def serve_cells(planned: list[Planned], logs: Path) -> None:
    """The worker side (``suite --worker``): read cell indices on stdin, run each, answer on stdout.

    The cell's own output (stdout and stderr, warnings and tracebacks included) goes to
    ``suite-logs/cell-<index>.log``, as when every cell was its own process; the answer is
    ``ok <index>`` or ``fail <index> <last line of the error>``.
    """
    import traceback

    reply = os.fdopen(os.dup(1), "w", buffering=1)
    by_index = {p.index: p for p in planned}
    for line in sys.stdin:
        index = int(line)
        with open(logs / f"cell-{index}.log", "w") as fh, _output_to(fh.fileno()):
            try:
                run_one(by_index[index])
                answer = f"ok {index}"
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the suite
                traceback.print_exc()
                answer = f"fail {index} " + (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        reply.write(answer + "\n")


@contextlib.contextmanager
def _output_to(fd: int) -> Iterator[None]:
    """Point fds 1 and 2 (so Python's sys.stdout/stderr and any C library output) at ``fd``."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    os.dup2(fd, 1), os.dup2(fd, 2)
    try:
        yield
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        for target, old in zip((1, 2), saved):
            os.dup2(old, target)
            os.close(old)


def _run_parallel(todo: list[Planned], opts: Options, child_args: list[str], bar: Any, report: Report) -> None:
    """Up to ``opts.jobs`` cells at once, each in one of ``opts.jobs`` worker processes; the first
    failure stops new starts."""
    logs = Path(opts.results_dir) / "suite-logs"
    logs.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    queue = list(todo)
    lock = threading.Lock()

    def next_cell() -> Planned | None:
        with lock:
            return queue.pop(0) if queue and not failures else None

    def drive(worker: _Worker) -> None:
        try:
            p = next_cell()
            while p is not None:
                cell_log = logs / f"cell-{p.index}.log"
                error = worker.run(p, cell_log)
                with lock:
                    if error is None:
                        report.ran.append(p.cell)
                        bar.update(1)
                    else:
                        failures.append(f"cell {p.index} ({p.cell.label}) failed: {error} (log: {cell_log})")
                p = next_cell()  # None once any cell failed
        finally:
            worker.close()

    # workers start here, in the main thread: forking from the driver threads would run
    # ``preexec_fn`` in a child forked while another thread may hold a lock
    workers = [_Worker(_worker_command(opts, child_args), logs / f"worker-{slot}.log")
               for slot in range(min(opts.jobs, len(todo)))]
    threads = [threading.Thread(target=drive, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)  # wake up for Ctrl-C
    if failures:
        raise RunError("; ".join(failures))
