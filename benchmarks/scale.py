"""Scale-out: clients per second with 1 rank vs 2 ranks under torchrun (1 thread each).

Each rank simulates its shard of the round's cohort and one all-reduce combines the
weighted sums (gloo on CPU). Also checks that both give the same final metrics.

    python benchmarks/scale.py [--clients-per-round 40] [--rounds 3]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

from _common import machine


def run_ranks(n: int, args, results: str) -> dict:
    overrides = [
        "data.max_train=2000", "data.max_test=200", "data.max_len=32", "partition.n_clients=200",
        f"fl.clients_per_round={args.clients_per_round}", f"fl.rounds={args.rounds}", "fl.local_steps=1",
        "fl.batch_size=8", f"fl.eval_every={args.rounds}", "threads=1", "wandb=disabled", "progress=false",
        f"results_dir={results}",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "fednlp_bench", "run", "--task", "tc", "--dataset", "healthtweets"]
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    (path,) = glob.glob(os.path.join(results, "*.json"))
    return json.load(open(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients-per-round", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    recs = {}
    for n in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            recs[n] = run_ranks(n, args, tmp)
        c = recs[n]["cost"]
        cps = args.rounds * args.clients_per_round / c["train_seconds"]
        recs[n]["cps"] = cps
        print(f"{n} rank(s): {c['train_seconds']:.2f} s for {args.rounds} rounds x {args.clients_per_round} clients "
              f"-> {cps:.1f} clients/s; final {recs[n]['metrics']['final']}")
    print(f"speed-up 2 ranks / 1 rank = {recs[2]['cps'] / recs[1]['cps']:.2f}x")
    diff = max(abs(recs[1]["metrics"]["final"][k] - recs[2]["metrics"]["final"][k]) for k in recs[1]["metrics"]["final"])
    print(f"max |final metric difference| 1 vs 2 ranks = {diff:.2e}")


if __name__ == "__main__":
    main()
