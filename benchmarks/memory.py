"""Memory in the number of clients: peak RSS of a full run (`fednlp_bench.run.run`, record
included) with 10 vs 10,000 clients over the same tiny per-client workload and the same model.
Floor: ratio <= 1.25 (the aggregate is a running sum; no per-client model copies).

    python benchmarks/memory.py
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile

from _common import machine


def child(n_clients: int, results_dir: str) -> None:
    import logging

    from fednlp_bench import config
    from fednlp_bench.run import run

    logging.basicConfig(level=logging.WARNING)
    cfg = config.resolve("tc", None, [
        "data.max_train=20000", "data.max_test=2000", "data.max_len=32", f"partition.n_clients={n_clients}",
        "fl.clients_per_round=10", "fl.rounds=2", "fl.local_steps=1", "fl.batch_size=2",
        "wandb=disabled", "progress=false", f"results_dir={results_dir}",
    ], dataset="healthtweets")
    rec, _ = run(cfg)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n_clients": n_clients, "peak_rss_mib": peak_mib,
                      "per_client_entries": len(rec["metrics"]["per_client"]),
                      "wall_seconds": rec["cost"]["wall_seconds"]}))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3])
        return
    print(f"machine: {machine()}")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (10, 10_000):
            proc = subprocess.run([sys.executable, __file__, "--child", str(n), tmp], capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-2000:])
            out[n] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{n:>6} clients: peak RSS {out[n]['peak_rss_mib']:8.1f} MiB "
                  f"({out[n]['per_client_entries']} per-client test entries, {out[n]['wall_seconds']:.1f} s)")
    ratio = out[10_000]["peak_rss_mib"] / out[10]["peak_rss_mib"]
    print(f"peak RSS ratio 10,000 / 10 clients = {ratio:.3f}   (floor <= 1.25)")


if __name__ == "__main__":
    main()
