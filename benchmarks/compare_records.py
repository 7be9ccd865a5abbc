"""Did a re-run reproduce a folder of records? Match every record of NEW to the record of REFERENCE
with the same configuration (stable config, seed included, and track) and compare them with
`fednlp-bench verify`'s comparison (identity, fl, partition, metrics, privacy, audit; timings,
cost and provenance excluded), by default at zero tolerance.

    python benchmarks/compare_records.py leaderboard/results results

prints how many records are identical, which differ (the differing fields, grouped, with the
first values) and which have no counterpart; exit 0 when every new record has an identical
counterpart, 1 otherwise. `verify` re-runs one record; this compares a whole suite that has
already been re-run, e.g. `make bench-tc` on a fresh clone.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fednlp_bench.config import stable_config
from fednlp_bench.leaderboard.load import read_raw
from fednlp_bench.leaderboard.verify import Difference, compare


def config_key(record: dict[str, Any]) -> str:
    """What makes two records runs of the same configuration (where and how they ran left out)."""
    return json.dumps({"config": stable_config(record.get("config") or {}), "track": record.get("track")},
                      sort_keys=True, default=str)


def load_folder(folder: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """{config key: newest record} of a folder, and the files that are not valid records (with why)."""
    out: dict[str, dict[str, Any]] = {}
    bad = []
    for path in sorted(folder.glob("*.json")):
        record, reason = read_raw(path)
        if reason is not None:
            bad.append(f"{path.name}: {reason}")
            continue
        key = config_key(record)
        if key not in out or str(record.get("created")) >= str(out[key].get("created")):
            out[key] = record
    return out, bad


def compare_folders(reference: Path, new: Path, atol: float = 0.0,
                    rtol: float = 0.0) -> tuple[int, int, dict[tuple[str, ...], list[tuple[str, list[Difference]]]],
                                                list[str], list[str]]:
    """(records compared, values compared, {differing fields: [(run id, differences)]}, unmatched
    new records, invalid files)."""
    ref, bad_ref = load_folder(reference)
    runs, bad_new = load_folder(new)
    n_records = n_values = 0
    differing: dict[tuple[str, ...], list[tuple[str, list[Difference]]]] = {}
    unmatched = []
    for key, record in runs.items():
        if key not in ref:
            unmatched.append(str(record.get("run_id")))
            continue
        n, diffs = compare(ref[key], record, atol=atol, rtol=rtol)
        n_records, n_values = n_records + 1, n_values + n
        if diffs:
            differing.setdefault(tuple(d.where for d in diffs), []).append((str(record.get("run_id")), diffs))
    return n_records, n_values, differing, unmatched, bad_ref + bad_new


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", type=Path, help="folder of the records to reproduce")
    ap.add_argument("new", type=Path, help="folder of the re-run's records")
    ap.add_argument("--atol", type=float, default=0.0)
    ap.add_argument("--rtol", type=float, default=0.0)
    args = ap.parse_args(argv)
    for folder in (args.reference, args.new):
        if not folder.is_dir():
            print(f"compare_records: {folder} is not a folder", file=sys.stderr)
            return 2
    n_records, n_values, differing, unmatched, bad = compare_folders(args.reference, args.new, args.atol, args.rtol)
    n_diff = sum(len(v) for v in differing.values())
    print(f"{n_records} records matched, {n_values} values compared (atol {args.atol:g}, rtol {args.rtol:g}): "
          f"{n_records - n_diff} identical, {n_diff} differ; {len(unmatched)} without a counterpart, "
          f"{len(bad)} invalid files")
    for fields, runs in sorted(differing.items(), key=lambda kv: -len(kv[1])):
        first = runs[0][1][0]
        print(f"  {len(runs)} differ in {', '.join(fields[:4])}{' ...' if len(fields) > 4 else ''} "
              f"(e.g. {runs[0][0]}: {first.where} {first.expected!r} -> {first.actual!r})")
    for name in unmatched + bad:
        print(f"  {name}")
    return 1 if n_diff or unmatched or bad else 0


if __name__ == "__main__":
    sys.exit(main())
