"""``fednlp-bench leaderboard``, ``submit``, ``verify`` and ``table`` subcommands.

The main CLI calls :func:`register` with its ``add_subparsers()`` object,
then dispatches with ``return args.func(args)`` (each handler returns an
exit code; a :class:`fednlp_bench.errors.UserError` such as ``RecordError`` is
reported by the main CLI as one line with exit code 2). Everything printed that
comes from a record or a file name passes through
:func:`~fednlp_bench.record_checks.safe_text` (no terminal escapes), once.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fednlp_bench.record_checks import safe_text

DEFAULT_RESULTS = Path("leaderboard/results")
DEFAULT_OUT = Path("leaderboard")


def _leaderboard(args: argparse.Namespace) -> int:
    from fednlp_bench.leaderboard.build import build

    dirs = args.results or [DEFAULT_RESULTS]
    report = build(dirs, args.out, plots=not args.no_plots)
    for s in report.skipped:
        print(f"skipped {safe_text(str(s.path), 300)}: {safe_text(s.reason, 600)}", file=sys.stderr)
    for old, new in report.superseded:
        print(f"superseded {safe_text(str(old), 300)} by {safe_text(str(new), 300)}", file=sys.stderr)
    for w in report.warnings:
        print(f"warning: {safe_text(w, 600)}", file=sys.stderr)
    print(f"leaderboard: {report.n_records} records, {report.n_tables} tables, {len(report.skipped)} skipped -> "
          f"{safe_text(str(args.out / 'index.html'), 300)}, {safe_text(str(args.out / 'README.md'), 300)}")
    return 1 if args.strict and not report.ok else 0


def _submit(args: argparse.Namespace) -> int:
    """Submit one record; a record with client failures is accepted with a warning on stderr and
    ``(flagged: ...)`` on the ``submitted:`` line."""
    from fednlp_bench.leaderboard.load import read_raw
    from fednlp_bench.leaderboard.notes import client_failures, submit_warning
    from fednlp_bench.leaderboard.submit import submit

    target = submit(args.result, args.results_dir, replace=args.replace)  # RecordError -> exit 2
    record, _ = read_raw(target)
    failures = client_failures(record) if record is not None else None
    flagged = f" (flagged: {failures.summary()})" if failures is not None and failures.total else ""
    if flagged:
        print(f"warning: {safe_text(str(args.result), 300)}: {safe_text(submit_warning(record), 900)}",
              file=sys.stderr)
    print(f"submitted: {safe_text(str(target), 300)}{flagged}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from fednlp_bench.errors import ConfigError
    from fednlp_bench.leaderboard.verify import verify, write_stamp

    if not (args.atol >= 0 and args.rtol >= 0):
        raise ConfigError(f"--atol and --rtol must be >= 0, got {args.atol!r} and {args.rtol!r}")
    result = verify(args.record, atol=args.atol, rtol=args.rtol, threads=args.threads, device=args.device,
                    keep=args.keep)
    name = safe_text(str(args.record), 300)
    if args.stamp:
        stamp = write_stamp(result, args.atol, args.rtol)
        print(f"stamp: {safe_text(str(stamp), 300)}")
    if result.passed:
        print(f"verified: {name}: all {result.n_compared} values match the re-run within atol {args.atol:g}, "
              f"rtol {args.rtol:g} (re-run {result.seconds:.1f} s)")
        return 0
    print(f"verify FAILED: {name}: {len(result.differences)} of {result.n_compared} values differ "
          f"(atol {args.atol:g}, rtol {args.rtol:g}):", file=sys.stderr)
    for d in result.differences[:10]:
        print(f"  {d}", file=sys.stderr)
    if len(result.differences) > 10:
        print(f"  ... and {len(result.differences) - 10} more", file=sys.stderr)
    return 1


def _table(args: argparse.Namespace) -> int:
    from fednlp_bench.leaderboard.load import load_records
    from fednlp_bench.leaderboard.overview import overview
    from fednlp_bench.leaderboard.render_text import render_text
    from fednlp_bench.leaderboard.tables import make_tables

    records, skipped = load_records(args.results or [Path("results")])
    if args.task:
        records = [r for r in records if r.record["task"] == args.task]
    tables = make_tables(records, skipped=skipped)
    for s in skipped:
        print(f"skipped {safe_text(str(s.path), 300)}: {safe_text(s.reason, 600)}", file=sys.stderr)
    if not tables:
        print(f"no result records in {', '.join(safe_text(str(d), 200) for d in args.results or ['results'])}")
        return 0
    print(render_text(tables, overview(tables), show_overview=not args.no_overview), end="")
    return 0


def _add_leaderboard(subparsers) -> None:
    p = subparsers.add_parser(
        "leaderboard", help="build leaderboard/README.md, index.html and plots from result records",
        description="Build the leaderboard (Markdown, static HTML, PNG plots) from result records.")
    p.add_argument("--results", action="append", type=Path, metavar="DIR",
                   help=f"directory of result records, repeatable (default: {DEFAULT_RESULTS})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help=f"output directory (default: {DEFAULT_OUT})")
    p.add_argument("--strict", action="store_true", help="exit 1 if any record file was skipped")
    p.add_argument("--no-plots", action="store_true", help="write the pages only (quick check; plots/ untouched)")
    p.set_defaults(func=_leaderboard)


def _add_submit(subparsers) -> None:
    s = subparsers.add_parser(
        "submit", help="validate a result record and add it to the leaderboard results",
        description="Validate RESULT.json and copy it into the results directory under a content-addressed name.")
    s.add_argument("result", type=Path, metavar="RESULT.json")
    s.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS, metavar="DIR",
                   help=f"destination directory (default: {DEFAULT_RESULTS})")
    s.add_argument("--replace", action="store_true",
                   help="accept a newer record for a configuration and seed that already has one (the old one "
                        "stays and is listed as superseded)")
    s.set_defaults(func=_submit)


def _add_verify(subparsers) -> None:
    from fednlp_bench.leaderboard.verify import DEFAULT_ATOL, DEFAULT_RTOL

    v = subparsers.add_parser(
        "verify", help="re-run a record's configuration and seed and compare every metric",
        description="Re-run RECORD.json's configuration and seed in a temporary folder and compare every metric "
                    "(exit 0: all match, 1: some differ, 2: the record is invalid).")
    v.add_argument("record", type=Path, metavar="RECORD.json")
    v.add_argument("--stamp", action="store_true",
                   help="write RECORD.verification.json next to the record (digest, commit, date, result)")
    v.add_argument("--atol", type=float, default=DEFAULT_ATOL, help=f"absolute tolerance (default {DEFAULT_ATOL:g})")
    v.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help=f"relative tolerance (default {DEFAULT_RTOL:g})")
    v.add_argument("--threads", type=int, default=None, help="torch threads of the re-run (default: the record's)")
    v.add_argument("--device", default=None, help="device of the re-run (default: the record's config)")
    v.add_argument("--keep", type=Path, default=None, metavar="DIR", help="keep the re-run's record in DIR")
    v.set_defaults(func=_verify)


def _add_table(subparsers) -> None:
    t = subparsers.add_parser(
        "table", help="print the leaderboard tables of result records (mean ± 95%% CI, ranks, gaps)",
        description="Print the overview and the tables of the records in --results: mean ± 95%% CI over seeds, "
                    "tie-aware ranks, difference to FedAvg and gap to centralized (paired by seed).")
    t.add_argument("--results", action="append", type=Path, metavar="DIR",
                   help="directory of result records, repeatable (default: results)")
    t.add_argument("--task", default=None, help="only this task")
    t.add_argument("--no-overview", action="store_true", help="print the tables only")
    t.set_defaults(func=_table)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``leaderboard``, ``submit``, ``verify`` and ``table`` subcommands; each sets ``func``."""
    _add_leaderboard(subparsers)
    _add_submit(subparsers)
    _add_verify(subparsers)
    _add_table(subparsers)
