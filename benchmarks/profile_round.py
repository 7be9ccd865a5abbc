"""Where one round of the vs_flower.py workload spends its time in our engine.

Builds the same workload as ``vs_flower.py`` (100 clients x 1 AdamW step, the ``tiny`` 2-layer
BERT with MiniLM's vocabulary), times a few rounds, prints the torch profiler's top operators
for one round, and times one AdamW step on the model's trainable parameters with each
implementation (per-tensor loop, foreach, fused) and the in-place reset of its moments.

    python benchmarks/profile_round.py [--threads 2] [--rows 25]
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

import vs_flower as V
from fednlp_bench.run import load_splits


def optimizer_micro(sim, repeats: int = 20) -> None:
    params = [p for p in sim.model.parameters() if p.requires_grad]
    for p in params:
        p.grad.normal_(0, 1e-3)
    for kw in ({"foreach": False}, {"foreach": True}, {"fused": True}):
        opt = torch.optim.AdamW(params, lr=1e-4, **kw)
        for _ in range(3):
            opt.step()
        t = time.perf_counter()
        for _ in range(repeats):
            opt.step()
        step = (time.perf_counter() - t) / repeats
        t = time.perf_counter()
        for _ in range(repeats):
            for state in opt.state.values():
                for v in state.values():
                    v.zero_()
        reset = (time.perf_counter() - t) / repeats
        print(f"AdamW {kw}: step {step * 1e3:.2f} ms, in-place state reset {reset * 1e3:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=25, help="profiler rows to print")
    ap.add_argument("--work", type=Path, default=V.REPO / ".cache" / "vs_flower")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    wl = argparse.Namespace(clients=100, rounds=3, work=args.work)
    _, dsd = load_splits(V.make_config(wl, "minilm-l6"))
    cfg = V.make_config(wl, V.tiny_model(args.work, list(dsd["train"].features["label"].names)))
    times, _, sim, _, _, _ = V.run_ours(cfg, False)
    print(f"threads={args.threads}: rounds {', '.join(f'{t:.3f}' for t in times)} s "
          f"({min(times) / cfg.fl.clients_per_round * 1e3:.1f} ms per client, best round)")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        sim.run_round(cfg.fl.rounds + 1)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    optimizer_micro(sim)


if __name__ == "__main__":
    main()
