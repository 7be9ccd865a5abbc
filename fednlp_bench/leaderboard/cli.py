"""``fednlp-bench leaderboard`` and ``fednlp-bench submit`` subcommands.

The main CLI calls :func:`register` with its ``add_subparsers()`` object,
then dispatches with ``return args.func(args)`` (each handler returns an
exit code; ``submit`` raises :class:`fednlp_bench.record.RecordError`, which
the main CLI reports as a user error).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_RESULTS = Path("leaderboard/results")
DEFAULT_OUT = Path("leaderboard")


def _leaderboard(args: argparse.Namespace) -> int:
    from fednlp_bench.leaderboard.build import build

    dirs = args.results or [DEFAULT_RESULTS]
    report = build(dirs, args.out)
    for s in report.skipped:
        print(f"skipped {s.path}: {s.reason}", file=sys.stderr)
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(
        f"leaderboard: {report.n_records} records, {report.n_tables} tables, "
        f"{len(report.skipped)} skipped -> {args.out / 'index.html'}, {args.out / 'README.md'}"
    )
    return 1 if args.strict and not report.ok else 0


def _submit(args: argparse.Namespace) -> int:
    from fednlp_bench.leaderboard.submit import submit

    target = submit(args.result, args.results_dir)  # RecordError -> main() prints it, exit 2
    print(f"submitted: {target}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``leaderboard`` and ``submit`` subcommands; each sets ``func``."""
    p = subparsers.add_parser(
        "leaderboard",
        help="build leaderboard/README.md, index.html and plots from result records",
        description="Build the leaderboard (Markdown, static HTML, PNG plots) from result records.",
    )
    p.add_argument(
        "--results", action="append", type=Path, metavar="DIR",
        help=f"directory of result records, repeatable (default: {DEFAULT_RESULTS})",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help=f"output directory (default: {DEFAULT_OUT})")
    p.add_argument("--strict", action="store_true", help="exit 1 if any record file was skipped")
    p.set_defaults(func=_leaderboard)

    s = subparsers.add_parser(
        "submit",
        help="validate a result record and add it to the leaderboard results",
        description="Validate RESULT.json and copy it into the results directory under a content-addressed name.",
    )
    s.add_argument("result", type=Path, metavar="RESULT.json")
    s.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS, metavar="DIR",
                   help=f"destination directory (default: {DEFAULT_RESULTS})")
    s.set_defaults(func=_submit)
