"""FL simulation overhead: the same optimiser steps on the same batches, as (a) our FL
simulation and (b) a plain centralized loop. Prints the wall-time ratio (a)/(b),
evaluation excluded. Floor: <= 1.10 at the smoke and quick presets.

(a) runs with the dense client path (``fl.sparse_embeddings=false``), so that both sides do
the same arithmetic and the ratio measures what the simulation adds (loading the broadcast,
deltas, aggregation, sampling, bookkeeping). The engine's default, the exact row-sparse update
of the word embedding (fednlp_bench/sparse_rows.py; same weights to the bit), is timed too, as
(a'): its ratio to (b) is below 1 because it skips work the plain loop does.

    python benchmarks/overhead.py [--preset smoke|quick] [--repeats 2]
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from _common import build, machine, record_batches
from fednlp_bench import config


def run_fl(cfg):
    """(seconds, simulator, prepared data, the row batches it trained on in order)."""
    sim, prep, _ = build(cfg)
    seen = record_batches(sim)
    sim.start_server()
    t0 = time.perf_counter()
    for r in range(1, cfg.fl.rounds + 1):
        sim.run_round(r)
    return time.perf_counter() - t0, sim, prep, [b for batches in seen.values() for b in batches]


def run_plain(cfg, batches, prep, sim):
    """A textbook loop: one model, one AdamW (built like our clients'), the same batches in the same order."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = prep.task.build_model(prep.model_path, prep.info)
    model.train()
    # the same AdamW implementation as our clients (fused where available), so only the FL plumbing differs
    same = {k: v for k, v in sim.local.optimizer.new().defaults.items()
            if k in ("lr", "weight_decay", "fused", "foreach")}
    opt = torch.optim.AdamW(model.parameters(), **same)
    t0 = time.perf_counter()
    for rows in batches:
        batch = prep.task.collate(prep.train, rows, prep.pad_id)
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    base = ["wandb=disabled", "progress=false"]
    cfg = config.resolve("tc", args.preset, [*base, "fl.sparse_embeddings=false"])
    cfg_default = config.resolve("tc", args.preset, base)
    fl_times, plain_times, default_times = [], [], []
    for _ in range(args.repeats):  # interleaved so that machine load hits all alike
        t_fl, sim, prep, seen = run_fl(cfg)
        fl_times.append(t_fl)
        plain_times.append(run_plain(cfg, seen, prep, sim))
        t_default, sim_default, _, seen_default = run_fl(cfg_default)
        default_times.append(t_default)
        if len(seen_default) != len(seen) or not all(np.array_equal(x, y) for x, y in zip(seen_default, seen)):
            raise SystemExit("the default engine trained on other batches than the dense one")
        same = bool(torch.equal(sim_default.global_params, sim.global_params))
    steps = len(seen)
    a, b, c = min(fl_times), min(plain_times), min(default_times)
    print(f"machine: {machine()}")
    print(f"preset {args.preset}: {cfg.fl.rounds} rounds x {cfg.fl.clients_per_round} clients, {steps} optimiser steps")
    print(f"(a) FL simulation  : {a:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in fl_times)})")
    print(f"(b) plain loop     : {b:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in plain_times)})")
    print(f"overhead ratio (a)/(b) = {a / b:.3f}   (floor <= 1.10)")
    print(f"(a') FL simulation, default row-sparse embedding path "
          f"({'on' if sim_default.row_sparse is not None else 'off'}): {c:8.2f} s   "
          f"(runs: {', '.join(f'{t:.2f}' for t in default_times)}); (a')/(b) = {c / b:.3f}; "
          f"final weights identical to (a): {same}")


if __name__ == "__main__":
    main()
