"""Time dirichlet_label against flwr-datasets' DirichletPartitioner on the same labels.

    python benchmarks/partition_speed.py                      # ours only (flwr_datasets absent)
    .venv-peers/bin/python benchmarks/partition_speed.py   # side by side (make peers-install)

flwr-datasets pins datasets<5, so it lives in a separate venv (.venv-peers) with this repo
installed without dependencies. Both sides get the same 1,000,000 labels (20 classes) and 1,000 clients; best of 3.

What is timed, to be fair to both:
* ours: ``make("dirichlet_label", ...).split(labels=...)`` from a numpy label column to one
  sorted index array per client (label encoding included);
* flwr-datasets: ``DirichletPartitioner._determine_partition_id_to_indices_if_needed()`` on a
  ``datasets.Dataset`` with a ``label`` column, i.e. the work that computes the index lists of
  all partitions (it runs lazily on the first ``load_partition``); ``min_partition_size=0`` so
  that it never resamples. Also reported: loading all 1,000 partitions with ``load_partition``
  (index computation + 1,000 ``Dataset.select`` calls).
The two methods differ in model (ours: per-client q ~ Dir(alpha p), equal client sizes; theirs:
per-class Dir(alpha) over clients, unequal sizes), so the script also prints size CV and mean JS.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fednlp_bench import partitioners
from fednlp_bench.partitioners import stats


def best_of(repeats: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    labels = np.random.default_rng(args.seed).integers(0, args.classes, args.rows)
    print(f"{args.rows:,} labels, {args.classes} classes, {args.clients:,} clients, alpha={args.alpha}, best of {args.repeats}")

    ours_s, ours_parts = best_of(
        args.repeats,
        lambda: partitioners.make("dirichlet_label", args.clients, args.seed, alpha=args.alpha).split(labels=labels),
    )
    s = stats.summary(ours_parts, labels)
    print(f"ours   dirichlet_label.split          {ours_s:8.3f} s   size cv {s['size_cv']:.3f}  mean JS {s['mean_js']:.3f}")

    try:
        import datasets
        from flwr_datasets.partitioner import DirichletPartitioner
    except ImportError:
        print("flwr_datasets not importable: peer timing skipped (see the module docstring)")
        return

    ds = datasets.Dataset.from_dict({"label": labels})

    def flwr_indices() -> list[np.ndarray]:
        p = DirichletPartitioner(args.clients, "label", args.alpha, min_partition_size=0, seed=args.seed)
        p.dataset = ds
        p._determine_partition_id_to_indices_if_needed()  # all partitions' index lists
        return [np.sort(np.asarray(p._partition_id_to_indices[i], dtype=np.int64)) for i in range(args.clients)]

    def flwr_load_all() -> int:
        p = DirichletPartitioner(args.clients, "label", args.alpha, min_partition_size=0, seed=args.seed)
        p.dataset = ds
        return sum(p.load_partition(i).num_rows for i in range(args.clients))

    flwr_s, flwr_parts = best_of(args.repeats, flwr_indices)
    s = stats.summary(flwr_parts, labels)
    print(f"flwr   DirichletPartitioner indices   {flwr_s:8.3f} s   size cv {s['size_cv']:.3f}  mean JS {s['mean_js']:.3f}")
    load_s, n = best_of(args.repeats, flwr_load_all)
    assert n == args.rows
    print(f"flwr   load_partition x {args.clients:<5}         {load_s:8.3f} s")
    print(f"ratio  flwr indices / ours            {flwr_s / ours_s:8.1f} x")
    print(f"ratio  flwr load all / ours           {load_s / ours_s:8.1f} x")
    print(f"versions: flwr-datasets {__import__('importlib.metadata').metadata.version('flwr-datasets')}, "
          f"datasets {datasets.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
