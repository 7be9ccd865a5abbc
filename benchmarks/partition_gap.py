"""How much a partition costs one algorithm on a track: the per-seed difference of the final test
metric between two partitions, mean and 95% Student-t interval over the seeds both have.

    python benchmarks/partition_gap.py --track tc --results results --algorithm fedavg iid dir0.1

Add seeds to narrow the interval (`fednlp-bench suite --track tc --algorithm fedavg --seeds
3,4,5,6`); the leaderboard's own tables compare algorithms within one partition, this script
compares partitions within one algorithm.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fednlp_bench import track as tracks
from fednlp_bench.errors import UserError
from fednlp_bench.suite_summary import partition_gap, track_results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--track", required=True, help="a packaged track name or path/to/track.yaml")
    ap.add_argument("--results", type=Path, action="append", required=True, help="folder of records (repeatable)")
    ap.add_argument("--algorithm", default="fedavg")
    ap.add_argument("partitions", nargs=2, metavar="PARTITION", help="two partition names of the track")
    args = ap.parse_args(argv)
    try:
        track = tracks.load(args.track)
        names = [p.name for p in track.partitions]
        bad = [p for p in args.partitions if p not in names]
        if bad:
            raise UserError(f"partition {bad[0]!r} is not in track {track.name}; choose from {', '.join(names)}")
        cells: dict = {}
        for folder in args.results:
            for key, seeds in track_results(track, folder).items():
                cells.setdefault(key, {}).update(seeds)
        a, b = args.partitions
        mean, half, seeds = partition_gap(cells, args.algorithm, a, b)
    except UserError as exc:
        print(f"partition_gap: error: {exc}", file=sys.stderr)
        return 2
    ci = f"± {half:.4f}" if half is not None else "(one seed: no interval)"
    verdict = "" if half is None else ("  significant (the interval excludes 0)" if abs(mean) > half
                                       else "  not significant")
    print(f"{track.name} v{track.version}, {args.algorithm}: {a} - {b} = {mean:+.4f} {ci} over seeds "
          f"{seeds}{verdict}")
    for s in seeds:
        print(f"  seed {s}: {cells[(args.algorithm, a)][s]:.4f} - {cells[(args.algorithm, b)][s]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
