"""vs_flower.py's workload on our engine split over torchrun ranks (started by vs_flower.py).

Each rank builds the simulator exactly as ``fednlp-bench run`` does under torchrun (its shard of
every round's cohort, one all-reduce of the weighted sums per round, gloo on CPU) and runs the
rounds; a round is timed from a barrier before it to a barrier after it. Rank 0 writes the
per-round wall times, the CPU seconds of all ranks and the final global weights to ``--out``.

    python -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/ours_ranks.py \\
        --model DIR --clients 100 --rounds 6 --work /tmp/vsflower --out /tmp/vsflower/ours_ranks2
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

import vs_flower as V
from fednlp_bench.world import World


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    ap.add_argument("--dense", action="store_true", help="fl.sparse_embeddings=false")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True, help="output prefix: <out>.json and <out>_final.npy (rank 0)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    world = World.init_from_env()
    import torch.distributed as dist

    cfg = V.make_config(args, args.model, sparse=not args.dense)
    times, cpu, sim, _, _, setup = V.run_ours(cfg, False, sync=dist.barrier if world.size > 1 else None)
    cpu_all = torch.tensor(cpu, dtype=torch.float64)
    world.all_reduce(cpu_all)
    if world.is_main:
        out = Path(args.out)
        np.save(f"{out}_final.npy", sim.global_params.detach().cpu().numpy())
        Path(f"{out}.json").write_text(json.dumps({
            "ranks": world.size, "threads": args.threads, "setup_seconds": setup, "rounds": times,
            "cpu": cpu_all.tolist(), "row_sparse_path": sim.row_sparse is not None,
        }))
    if world.size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
