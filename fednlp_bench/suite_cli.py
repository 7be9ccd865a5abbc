"""Command line of tracks: ``fednlp-bench tune`` and ``fednlp-bench suite`` (see docs/contributing-results.md)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fednlp_bench.errors import ConfigError


def _track_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", required=True, help="a packaged track (tc, st, qa, s2s) or path/to/track.yaml")
    p.add_argument("--algorithm", action="append", default=None, metavar="NAME",
                   help="algorithm (repeatable; default: the track's list); a plugin name or path/to/file.py:Class")
    p.add_argument("--tuned-dir", type=Path, default=None, metavar="DIR",
                   help="folder of tuned-parameter files (default: the track folder's tuned/)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: all cores / jobs)")


def cmd_tune(args) -> int:
    from fednlp_bench import track as tracks
    from fednlp_bench import tuning

    track = tracks.load(args.track)
    names = args.algorithm or [*track.algorithms, *(["centralized"] if track.reference else [])]
    for name in names:
        if not tuning.search_space(track, name).values:
            print(f"{name}: no search space on track {track.name}; its defaults are used", file=sys.stderr)
            continue

        def show(params, mean, name=name):
            print(f"  {name} {params}: validation {mean:.4f}", file=sys.stderr)

        doc, path = tuning.tune(track, name, folder=args.tuned_dir, threads=args.threads, on_candidate=show)
        print(f"{name}: chose {doc['chosen']} on validation ({track.tuning.partition}, seeds "
              f"{list(track.tuning.seeds)}); written to {path}")
    return 0


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct integers >= 0, got {text!r}")
    return seeds


def _child_args(args) -> list[str]:
    """The options that re-create this suite's cell list in a child process (--jobs, --cell)."""
    out = ["--track", str(args.track_path), "--results-dir", str(args.results_dir)]
    for a in args.algorithm or []:
        out += ["--algorithm", a]
    for name in args.partition or []:
        out += ["--partition", name]
    if args.seeds:
        out += ["--seeds", args.seeds]
    if args.tuned_dir:
        out += ["--tuned-dir", str(args.tuned_dir)]
    if args.untuned:
        out.append("--untuned")
    return out


def cmd_suite(args) -> int:
    from fednlp_bench import suite, suite_summary
    from fednlp_bench import track as tracks

    track = tracks.load(args.track)
    args.track_path = track.path
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        raise ConfigError(f"--jobs and --threads must be >= 1, got {args.jobs} and {args.threads}")
    cells = suite.plan(track, args.algorithm, _seeds(args.seeds), args.partition)
    opts = suite.Options(Path(args.results_dir), args.tuned_dir, args.untuned, args.threads, args.jobs,
                         not args.no_progress)
    if args.list:
        done = suite.finished_keys(opts.results_dir)
        for p in suite.prepare_cells(track, cells, opts):
            state = "done" if p.key in done else "missing"
            print(f"{p.index:>4}  {state:<8} {p.cell.label}")
        return 0
    if args.worker:  # a child of `--jobs N`: runs the cells its parent sends on stdin
        suite.serve_cells(suite.prepare_cells(track, cells, opts), opts.results_dir / "suite-logs")
        return 0
    if args.cell is not None:
        if not 0 <= args.cell < len(cells):
            raise ConfigError(f"--cell must be in [0, {len(cells) - 1}] for this suite, got {args.cell}")
        cells = [cells[args.cell]]
    report = suite.run_suite(track, cells, opts, _child_args(args))
    print(f"track {track.name} v{track.version}: {report.total} cells, {report.skipped} already done, "
          f"{len(report.ran)} run; records in {opts.results_dir}", file=sys.stderr)
    if args.cell is None and not args.no_overview:
        board = suite_summary.rebuild_board(opts.results_dir, args.board or opts.results_dir / "leaderboard")
        print(f"leaderboard: {board.summary().splitlines()[0]} -> {args.board or opts.results_dir / 'leaderboard'}",
              file=sys.stderr)
        print(suite_summary.summary(track, opts.results_dir), end="")
    return 0


def register(sub) -> None:
    p = sub.add_parser("tune", help="tune an algorithm's search space on a track's validation split")
    _track_args(p)
    p.set_defaults(func=cmd_tune)
    p = sub.add_parser("suite", help="run every missing (algorithm, partition, seed) cell of a track")
    _track_args(p)
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the track's)")
    p.add_argument("--partition", action="append", default=None, metavar="NAME",
                   help="only the cells on this track partition (repeatable; default: all)")
    p.add_argument("--results-dir", "--out", dest="results_dir", default="results", type=Path,
                   help="where records go; cells whose record is already there are skipped (default results/)")
    p.add_argument("--jobs", type=int, default=1, help="cells run at once, in as many worker processes (default 1)")
    p.add_argument("--untuned", action="store_true", help="run the algorithms' default hyper-parameters")
    p.add_argument("--cell", type=int, default=None, metavar="INDEX",
                   help="run only this cell of the list (`--list` shows it), e.g. $SLURM_ARRAY_TASK_ID")
    p.add_argument("--list", action="store_true", help="list the cells with their index and state, run nothing")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--board", type=Path, default=None, metavar="DIR",
                   help="where the rebuilt leaderboard goes (default RESULTS/leaderboard)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--no-overview", action="store_true", help="skip the leaderboard rebuild and overview")
    p.set_defaults(func=cmd_suite)
