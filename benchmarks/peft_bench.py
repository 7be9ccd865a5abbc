"""Parameter-efficient federated fine-tuning, measured side by side (`make bench-peft`).

    python benchmarks/peft_bench.py [--seeds 3] [--jobs 2] [--out results/peft] [--parts abc]

(a) Text classification, quick preset (BBC, 10 clients, 5 per round, 5 rounds), IID and
    Dirichlet label skew alpha 0.1, ``--seeds`` seeds: full fine-tuning vs LoRA, prefix,
    prompt, IA3, BitFit and head-only. Final accuracy mean with a 95% Student-t interval over
    seeds, bytes per round (one client's upload; the download is the same), client seconds per
    local step, peak RSS of the run's process.
(b) DP-FedAvg where cohorts are large enough for it: health tweets split into 1,000 clients,
    100 per round, LoRA vs full at user-level epsilon 1, 4, 8 and inf (clipping only) with
    delta = 1e-5 (< 1/N^1.1 = 5.0e-4 for N = 1,000), the noise multiplier solved for the target
    epsilon (``privacy.user_target_epsilon``). Final accuracy per seed, mean and interval.
(c) Floors: LoRA (r = 8, query/value) bytes per round <= 2% of full fine-tuning's, and its client
    step <= 0.75x full fine-tuning's time on this CPU, timed in one process with the two
    simulators' rounds interleaved (so both see the same machine load).

Every run is a child process (``--child``) that calls ``fednlp_bench.run.run`` and reports its
own peak RSS; ``--jobs`` children run at once, one thread each. Records land in ``--out``. The
learning rate of each method is fixed in ``LR`` and not tuned here: full fine-tuning keeps the
quick preset's 1e-4; the PEFT methods, which train a few new or rescaling parameters from their
initial values, use 1e-2 (see benchmarks/RESULTS.md for what that means for the comparison).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import machine

METHODS = ("full", "lora", "prefix", "ia3", "bitfit", "head")  # prompt: --methods to add it
#: client learning rate per method on the quick tc preset (full: the preset's own)
LR = {"full": 1e-4, "lora": 1e-2, "prefix": 1e-2, "prompt": 1e-2, "ia3": 1e-2, "bitfit": 1e-2, "head": 1e-2}
PARTITIONS = {"IID": [], "Dirichlet 0.1": ["partition.method=dirichlet_label", "partition.alpha=0.1"]}

DP_EPSILONS = (1.0, 4.0, 8.0, None)  # None: clipping only, no noise (epsilon = inf)
DP_DELTA = 1e-5
DP_LR = {"full": 1e-4, "lora": 1e-2}
#: clip norm C = lr x sqrt(trainable parameters), rounded: AdamW's first step moves every coordinate
#: by about lr whatever the data, so this is a client update's norm, set from public quantities only
DP_CLIP = {"full": 0.5, "lora": 3.0}
DP_SETTINGS = [  # 16 tweets per client: one local epoch = 2 steps of 8
    "data.max_train=16000", "data.max_test=1000", "data.max_len=32",
    "partition.n_clients=1000", "fl.clients_per_round=100", "fl.rounds=5", "fl.local_epochs=1",
    "fl.batch_size=8", "fl.eval_every=5", "privacy.user_level=true", f"privacy.delta={DP_DELTA}",
]
COMMON = ["wandb=disabled", "progress=false", "threads=1", "fairness.counterfactual=false"]

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


# --------------------------------------------------------------------------- one run per process
def child(spec: dict) -> None:
    import logging

    from fednlp_bench import config
    from fednlp_bench.run import run

    logging.basicConfig(level=logging.WARNING)
    cfg = config.resolve("tc", spec.get("preset"), spec["overrides"], dataset=spec.get("dataset"))
    rec, path = run(cfg)
    print(json.dumps({"record": str(path),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"run failed: {spec}\n{out.stderr[-2000:]}")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    rec = json.loads(Path(info["record"]).read_text())
    return {**spec, "record": rec, "path": info["record"], "peak_rss_mib": info["peak_rss_mib"]}


def run_all(specs: list[dict], jobs: int, log: Path) -> list[dict]:
    """Run ``specs`` (``jobs`` at a time); runs already in ``log`` (same spec) are read back, not rerun."""
    finished = {}
    if log.exists():
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            finished[json.dumps(entry["spec"], sort_keys=True)] = entry
    todo = [sp for sp in specs if json.dumps(sp, sort_keys=True) not in finished]
    print(f"  {len(specs) - len(todo)} of {len(specs)} runs already done ({log})", flush=True)
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(jobs) as pool:
        for n, r in enumerate(pool.map(run_child, todo), 1):
            entry = {"spec": {k: v for k, v in r.items() if k not in ("record", "peak_rss_mib", "path")},
                     "path": r["path"], "peak_rss_mib": r["peak_rss_mib"]}
            with open(log, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
            finished[json.dumps(entry["spec"], sort_keys=True)] = entry
            rec = r["record"]
            print(f"  [{n}/{len(todo)} {time.perf_counter() - t0:.0f}s] {r['tag']}: "
                  f"accuracy {rec['metrics']['final']['accuracy']:.3f}, {rec['cost']['wall_seconds']:.0f}s",
                  flush=True)
    out = []
    for sp in specs:
        entry = finished[json.dumps(sp, sort_keys=True)]
        out.append({**sp, "record": json.loads(Path(entry["path"]).read_text()), "peak_rss_mib": entry["peak_rss_mib"]})
    return out


# --------------------------------------------------------------------------- statistics and tables
def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (nan with one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, T95.get(n - 1, 1.96) * sd / math.sqrt(n)


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.3f} MB" if n_bytes < 1e7 else f"{n_bytes / 1e6:.1f} MB"


def table_a(runs: list[dict]) -> str:
    lines = ["| partition | method | trainable params | accuracy (mean ± 95% CI) | seeds | bytes per round "
             "(one client, each way) | client s / step | peak RSS |", "|---|---|---|---|---|---|---|---|"]
    for part in PARTITIONS:
        for method in LR:
            cell = [r for r in runs if r["partition"] == part and r["method"] == method]
            if not cell:
                continue
            acc = mean_ci([r["record"]["metrics"]["final"]["accuracy"] for r in cell])
            rec = cell[0]["record"]
            per_client = rec["cost"]["bytes_up_per_round"] / rec["fl"]["clients_per_round"]
            step = [r["record"]["cost"]["client_compute_seconds"] / max(r["record"]["cost"]["local_steps"], 1)
                    for r in cell]
            rss = [r["peak_rss_mib"] for r in cell]
            lines.append(
                f"| {part} | {method} | {rec['cost']['n_params']:,} ({rec['cost']['n_params'] / rec['cost']['n_params_total']:.2%}) "
                f"| {acc[0]:.3f} ± {acc[1]:.3f} | {len(cell)} | {_mb(per_client)} | {sum(step) / len(step):.3f} "
                f"| {sum(rss) / len(rss):.0f} MiB |")
    return "\n".join(lines)


def table_b(runs: list[dict]) -> str:
    lines = ["| method | target epsilon (delta 1e-5) | noise multiplier | accuracy (mean ± 95% CI) | seeds "
             "| per seed |", "|---|---|---|---|---|---|"]
    for method in ("full", "lora"):
        for eps in DP_EPSILONS:
            cell = [r for r in runs if r["method"] == method and r["epsilon"] == eps]
            if not cell:
                continue
            accs = [r["record"]["metrics"]["final"]["accuracy"] for r in cell]
            m, h = mean_ci(accs)
            user = cell[0]["record"]["privacy"]["user_level"]
            got = user["epsilon"]
            eps_text = "inf (clip only)" if eps is None else f"{eps:g} (accounted {got:.2f})"
            lines.append(f"| {method} | {eps_text} | {user['noise_multiplier']:.3f} | {m:.3f} ± {h:.3f} | {len(cell)} "
                         f"| {', '.join(f'{a:.3f}' for a in accs)} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- parts
def part_a(args) -> list[dict]:
    specs = []
    for seed in range(args.seeds):
        for part, extra in PARTITIONS.items():
            if part not in args.partitions.split(","):
                continue
            for method in args.methods.split(","):
                specs.append({"tag": f"{part} {method} seed {seed}", "partition": part, "method": method,
                              "preset": args.preset, "overrides": [*COMMON, f"seed={seed}", f"model.peft={method}",
                                                               f"fl.client_lr={LR[method]}", "fl.eval_every=5", *extra,
                                                               *args.set, f"results_dir={args.out}/a"]})
    return run_all(specs, args.jobs, Path(args.out) / "a-runs.jsonl")


def part_b(args) -> list[dict]:
    specs = []
    for seed in range(args.seeds):
        for eps in DP_EPSILONS:
            for method in ("full", "lora"):
                noise = ["privacy.user_noise=0"] if eps is None else [f"privacy.user_target_epsilon={eps}"]
                specs.append({"tag": f"DP {method} eps {eps} seed {seed}", "method": method, "epsilon": eps,
                              "dataset": "healthtweets", "preset": None,
                              "overrides": [*COMMON, *DP_SETTINGS, *args.dp_extra, *noise, f"seed={seed}",
                                            f"model.peft={method}",
                                            f"fl.client_lr={DP_LR[method]}", f"privacy.user_clip={DP_CLIP[method]}",
                                            f"results_dir={args.out}/b"]})
    return run_all(specs, args.jobs, Path(args.out) / "b-runs.jsonl")


def step_times(rounds: int, preset: str, extra: list[str]) -> dict[str, float]:
    """Client seconds per local step of full and LoRA (r = 8, q/v), rounds interleaved in one process."""
    import torch
    from transformers.utils import logging as hf_logging

    from _common import build
    from fednlp_bench import config

    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    sims = {}
    for method in ("full", "lora"):
        cfg = config.resolve("tc", preset, [*COMMON, f"model.peft={method}", f"fl.client_lr={LR[method]}", *extra])
        sim, _, _ = build(cfg)
        sim.start_server()
        sims[method] = sim
    for r in range(1, rounds + 1):
        for sim in sims.values():
            sim.run_round(r)
    return {m: s.state.costs.client_compute_seconds / s.state.costs.local_steps for m, s in sims.items()}


def part_c(args, a_runs: list[dict]) -> str:
    lines = []
    if args.timing_rounds > 0:
        times = step_times(args.timing_rounds, args.preset, args.set)
        ratio_t = times["lora"] / times["full"]
        lines.append(f"client s / step, {args.timing_rounds} interleaved {args.preset}-preset rounds each "
                     f"{' '.join(args.set)}: full {times['full']:.3f}, LoRA {times['lora']:.3f} -> "
                     f"LoRA / full = **{ratio_t:.3f}** (floor <= 0.75: {'met' if ratio_t <= 0.75 else 'NOT met'})")
    full = [r for r in a_runs if r["method"] == "full"]
    lora = [r for r in a_runs if r["method"] == "lora"]
    if full and lora:
        bf = full[0]["record"]["cost"]["bytes_up_per_round"]
        bl = lora[0]["record"]["cost"]["bytes_up_per_round"]
        lines.append(f"bytes up per round (all clients; down is the same): full {_mb(bf)}, LoRA {_mb(bl)} "
                     f"-> LoRA / full = **{bl / bf:.4%}** "
                     f"(floor <= 2%: {'met' if bl / bf <= 0.02 else 'NOT met'})")
        for part in PARTITIONS:
            f_acc = [r["record"]["metrics"]["final"]["accuracy"] for r in full if r["partition"] == part]
            l_acc = [r["record"]["metrics"]["final"]["accuracy"] for r in lora if r["partition"] == part]
            if len(f_acc) == len(l_acc) and f_acc:
                d = mean_ci([b - a for a, b in zip(f_acc, l_acc)])  # paired by seed
                lines.append(f"accuracy cost of LoRA, {part}: LoRA - full = {d[0]:+.3f} ± {d[1]:.3f} "
                             f"(95% CI, paired over {len(f_acc)} seeds)")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="results/peft")
    ap.add_argument("--parts", default="abc")
    ap.add_argument("--timing-rounds", type=int, default=3, help="rounds of the part (c) step timing; 0 skips it")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for parts (a) and (c), e.g. a reduced budget (repeatable)")
    ap.add_argument("--partitions", default=",".join(PARTITIONS), help="partitions of part (a), comma-separated")
    ap.add_argument("--methods", default=",".join(METHODS), help="PEFT methods of part (a)")
    ap.add_argument("--smoke", action="store_true", help="a minutes-long check of this script, not a measurement")
    args = ap.parse_args()
    args.out = str(Path(args.out).resolve())
    args.preset, args.dp_extra = "quick", []
    if args.smoke:
        args.preset, args.timing_rounds = "smoke", 1
        args.dp_extra = ["data.max_train=1600", "data.max_test=100", "partition.n_clients=100",
                         "fl.clients_per_round=10", "fl.rounds=1", "fl.eval_every=1"]
    t0 = time.perf_counter()
    print(f"machine: {machine()}; {args.jobs} runs at a time, 1 thread each", flush=True)
    a_runs: list[dict] = []
    if "a" in args.parts:
        a_runs = part_a(args)
        print("\n(a) tc quick preset\n" + table_a(a_runs), flush=True)
    if "b" in args.parts:
        b_runs = part_b(args)
        print("\n(b) DP-FedAvg, health tweets, 1,000 clients, 100 per round\n" + table_b(b_runs), flush=True)
    if "c" in args.parts:
        print("\n(c) floors\n" + part_c(args, a_runs), flush=True)
    print(f"\nbench-peft wall time: {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
