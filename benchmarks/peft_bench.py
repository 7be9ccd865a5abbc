"""Parameter-efficient federated fine-tuning, measured side by side (`make bench-peft`).

    python benchmarks/peft_bench.py [--seeds 0,1,2] [--jobs 2] [--out results/peft] [--parts abc]

(a) The tc track's budget (``fednlp_bench/tracks/tc.yaml``: BBC News, the 3-layer MiniLM at 32
    tokens, 10 clients, 5 per round, 5 rounds, full test split), FedAvg on its IID and Dirichlet
    alpha 0.1 partitions, the track's seeds: full fine-tuning vs LoRA, prefix, prompt, IA3,
    BitFit and head-only. Final accuracy mean with a 95% Student-t interval over seeds, bytes
    per round (one client's upload; the download is the same), client seconds per local step,
    peak RSS of the run's process.
(b) DP-FedAvg where cohorts are large enough for it: health tweets split into 1,000 clients,
    100 per round, same model, LoRA vs full at user-level epsilon 1, 4, 8 and inf (clipping
    only) with delta = 1e-5 (< 1/N^1.1 = 5.0e-4 for N = 1,000), the noise multiplier solved for
    the target epsilon (``privacy.user_target_epsilon``). Final accuracy per seed, mean and interval.
(c) Floors: LoRA (r = 8, query/value) bytes per round <= 2% of full fine-tuning's, and its client
    step <= 0.75x full fine-tuning's time on this CPU, timed in one process with the two
    simulators' rounds interleaved (so both see the same machine load), on the quick preset's
    6-layer MiniLM at 64 tokens (the 22.7 M-parameter model the floors were stated for).

Learning rates follow the track's tuning protocol: a method's client learning rate is chosen
on the validation split of the track's tuning partition with its tuning seeds (disjoint from
the reported seeds), never on test. Full fine-tuning keeps the track's shared client lr (chosen
that way for FedAvg, see tc.yaml); each PEFT method, which trains a few new or rescaling
parameters from their initial values, picks from ``PEFT_LRS``. The choices and every
validation score are written to ``<out>/a-tuning.json`` and into each record's ``tuning``
section. Part (b) uses the rates part (a) chose (no DP run is tuned: tuning on private data
would itself cost privacy).

Every run is a child process (``--child``) and reports its own peak RSS; ``--jobs`` children
run at once, one thread each. Runs already in ``<out>/*-runs.jsonl`` are read back, not rerun,
so an interrupted benchmark resumes. Records land in ``--out``.
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

TRACK = "tc"
ALGORITHM = "fedavg"
METHODS = ("full", "lora", "prefix", "prompt", "ia3", "bitfit", "head")
PARTITIONS = ("iid", "dir0.1")
#: client-lr grid of every PEFT method (full fine-tuning uses the track's own client lr)
PEFT_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
#: client lr of part (c)'s timing on the quick preset (a speed measurement: the rate does not change the cost)
TIMING_LR = {"full": 1e-4, "lora": 1e-2}

DP_EPSILONS = (1.0, 4.0, 8.0, None)  # None: clipping only, no noise (epsilon = inf)
DP_DELTA = 1e-5
DP_SETTINGS = [  # 16 tweets per client: one local epoch = 2 steps of 8; validation: 300 of the held-out 10%
    "data.max_train=16000", "data.max_test=1000", "data.max_val=300", "data.max_len=32",
    "partition.n_clients=1000", "fl.clients_per_round=100", "fl.rounds=5", "fl.local_epochs=1",
    "fl.batch_size=8", "fl.eval_every=5", "privacy.user_level=true", f"privacy.delta={DP_DELTA}",
]
COMMON = ["wandb=disabled", "progress=false", "threads=1", "fairness.counterfactual=false"]

# --------------------------------------------------------------------------- one run per process
def make_config(spec: dict):
    """The run configuration a spec describes: a tc-track cell with a PEFT method, or a plain override list."""
    from fednlp_bench import config
    from fednlp_bench import track as tracks

    if spec.get("track"):
        track = tracks.load(spec["track"])
        return track.run_config(ALGORITHM, spec["partition"], spec["seed"], fl_overrides={"client_lr": spec["lr"]},
                                wandb="disabled", progress=False, threads=1, results_dir=spec.get("results_dir"),
                                **{"model.peft": spec["method"]})
    return config.resolve("tc", spec.get("preset"), spec["overrides"], dataset=spec.get("dataset"))


def child(spec: dict) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    cfg = make_config(spec)
    if spec["kind"] == "tune":  # validation only: the test split is never scored
        from fednlp_bench import tasks, tuning

        rows = tuning.validation_curve(cfg)
        out = {"val": float(rows[-1][tasks.get(cfg.task).primary_metric])}
    elif spec["kind"] == "count":
        from fednlp_bench.run import build_model, prepare

        model = build_model(cfg, prepare(cfg))
        out = {"n_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    else:
        from fednlp_bench import track as tracks
        from fednlp_bench.run import run

        extra = {}
        if spec.get("track"):
            extra[("track",)] = tracks.load(spec["track"]).identity
        if spec.get("tuning"):
            extra[("tuning",)] = spec["tuning"]
        _, path = run(cfg, extra)
        out = {"record": str(path)}
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"run failed: {spec}\n{out.stderr[-2000:]}")
    return {"spec": spec, **json.loads(out.stdout.strip().splitlines()[-1])}


def _key(spec: dict) -> str:
    return json.dumps({k: v for k, v in spec.items() if k != "tag"}, sort_keys=True)


def run_all(specs: list[dict], jobs: int, log: Path) -> list[dict]:
    """Run ``specs`` (``jobs`` at a time); runs already in ``log`` (same spec) are read back, not rerun."""
    finished = {}
    if log.exists():
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            finished[_key(entry["spec"])] = entry
    todo = [sp for sp in specs if _key(sp) not in finished]
    print(f"  {len(specs) - len(todo)} of {len(specs)} runs already done ({log})", flush=True)
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(jobs) as pool:
        for n, entry in enumerate(pool.map(run_child, todo), 1):
            with open(log, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
            finished[_key(entry["spec"])] = entry
            what = (f"validation {entry['val']:.3f}" if "val" in entry else
                    f"{entry['n_params']:,} trainable" if "n_params" in entry else
                    f"accuracy {_record(entry)['metrics']['final']['accuracy']:.3f}")
            print(f"  [{n}/{len(todo)} {time.perf_counter() - t0:.0f}s] {entry['spec']['tag']}: {what}", flush=True)
    out = []
    for sp in specs:
        entry = dict(finished[_key(sp)])
        if "record" in entry:
            entry["record"] = _record(entry)
        out.append(entry)
    return out


def _record(entry: dict) -> dict:
    return json.loads(Path(entry["record"]).read_text()) if isinstance(entry["record"], str) else entry["record"]


# --------------------------------------------------------------------------- statistics and tables
def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (nan with one value), as the leaderboard computes it."""
    from fednlp_bench.leaderboard.stats import mean_ci as estimate

    est = estimate(values)
    return est.mean, math.nan if est.half is None else est.half


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.3f} MB" if n_bytes < 1e7 else f"{n_bytes / 1e6:.1f} MB"


def _acc(run: dict) -> float:
    return run["record"]["metrics"]["final"]["accuracy"]


def _cell(runs: list[dict], **match) -> list[dict]:
    return sorted((r for r in runs if all(r["spec"].get(k) == v for k, v in match.items())),
                  key=lambda r: r["spec"]["seed"])


def table_a(runs: list[dict], lrs: dict[str, float]) -> str:
    lines = ["| partition | method | client lr | trainable params | accuracy (mean ± 95% CI) | seeds | bytes per round "
             "(one client, each way) | client s / step | peak RSS |", "|---|---|---|---|---|---|---|---|---|"]
    for part in PARTITIONS:
        for method in METHODS:
            cell = _cell(runs, partition=part, method=method)
            if not cell:
                continue
            acc = mean_ci([_acc(r) for r in cell])
            cost = cell[0]["record"]["cost"]
            per_client = cost["bytes_up_per_round"] / cell[0]["record"]["fl"]["clients_per_round"]
            step = [r["record"]["cost"]["client_compute_seconds"] / max(r["record"]["cost"]["local_steps"], 1)
                    for r in cell]
            rss = [r["peak_rss_mib"] for r in cell]
            lines.append(
                f"| {part} | {method} | {lrs[method]:g} | {cost['n_params']:,} "
                f"({cost['n_params'] / cost['n_params_total']:.2%}) | {acc[0]:.3f} ± {acc[1]:.3f} | {len(cell)} "
                f"| {_mb(per_client)} | {sum(step) / len(step):.3f} | {sum(rss) / len(rss):.0f} MiB |")
    return "\n".join(lines)


def paired_cell(runs: list[dict], base: dict, other: dict) -> str | None:
    """``| mean ± CI | seeds | separated? |`` of ``other`` minus ``base`` (spec matches), paired by seed;
    ``None`` below two common seeds."""
    a = {r["spec"]["seed"]: _acc(r) for r in _cell(runs, **base)}
    b = {r["spec"]["seed"]: _acc(r) for r in _cell(runs, **other)}
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    m, h = mean_ci([b[s] - a[s] for s in seeds])
    return f"{m:+.3f} ± {h:.3f} | {len(seeds)} | {'yes' if abs(m) > h else 'no'} |"


def paired_a(runs: list[dict]) -> str:
    """Each method minus full fine-tuning, paired by seed (same partition, same client sample)."""
    lines = ["| partition | difference | mean ± 95% CI | seeds | separated from 0? |", "|---|---|---|---|---|"]
    for part in PARTITIONS:
        for method in METHODS[1:]:
            cell = paired_cell(runs, {"partition": part, "method": "full"}, {"partition": part, "method": method})
            if cell:
                lines.append(f"| {part} | {method} - full | {cell}")
    return "\n".join(lines)


def table_tuning(docs: dict[str, dict], grid: tuple[float, ...]) -> str:
    lines = ["| method | " + " | ".join(f"lr {lr:g}" for lr in grid) + " | chosen |",
             "|---|" + "---|" * (len(grid) + 1)]
    for method, doc in docs.items():
        vals = " | ".join(f"{s['mean']:.3f}" for s in doc["scores"])
        lines.append(f"| {method} | {vals} | {doc['chosen']['client_lr']:g} |")
    return "\n".join(lines)


def table_b(runs: list[dict]) -> str:
    lines = ["| method | client lr | clip C | target epsilon (delta 1e-5) | noise multiplier "
             "| accuracy (mean ± 95% CI) | seeds | per seed |", "|---|---|---|---|---|---|---|---|"]
    for method in ("full", "lora"):
        for eps in DP_EPSILONS:
            cell = _cell(runs, method=method, epsilon=eps)
            if not cell:
                continue
            accs = [_acc(r) for r in cell]
            m, h = mean_ci(accs)
            user = cell[0]["record"]["privacy"]["user_level"]
            eps_text = "inf (clip only)" if eps is None else f"{eps:g} (accounted {user['epsilon']:.2f})"
            spec = cell[0]["spec"]
            lines.append(f"| {method} | {spec['lr']:g} | {spec['clip']:g} | {eps_text} "
                         f"| {user['noise_multiplier']:.3f} "
                         f"| {m:.3f} ± {h:.3f} | {len(cell)} | {', '.join(f'{a:.3f}' for a in accs)} |")
    return "\n".join(lines)


def paired_b(runs: list[dict]) -> str:
    """LoRA minus full fine-tuning at each epsilon, paired by seed (same clients, cohorts and noise seed)."""
    lines = ["| target epsilon | LoRA - full, mean ± 95% CI | seeds | separated from 0? |", "|---|---|---|---|"]
    for eps in DP_EPSILONS:
        cell = paired_cell(runs, {"method": "full", "epsilon": eps}, {"method": "lora", "epsilon": eps})
        if cell:
            lines.append(f"| {'inf (clip only)' if eps is None else f'{eps:g}'} | {cell}")
    return "\n".join(lines)


def plot_b(runs: list[dict], path: Path) -> Path:
    """The privacy-utility curve of part (b): accuracy (mean, 95% t interval) against epsilon, per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = list(range(len(DP_EPSILONS)))
    for offset, method in ((-0.06, "full"), (0.06, "lora")):
        stats = [mean_ci([_acc(r) for r in _cell(runs, method=method, epsilon=eps)] or [math.nan])
                 for eps in DP_EPSILONS]
        ax.errorbar([x + offset for x in xs], [m for m, _ in stats], yerr=[0 if math.isnan(h) else h for _, h in stats],
                    marker="o", capsize=3, label=method)
    ax.set_xticks(xs, ["inf (clip only)" if e is None else f"{e:g}" for e in DP_EPSILONS])
    ax.set_xlabel(f"user-level epsilon (delta {DP_DELTA:g})")
    ax.set_ylabel("test accuracy (95% CI)")
    ax.set_title("DP-FedAvg, 1,000 clients, 100 per round", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


# --------------------------------------------------------------------------- parts
def _track():
    from fednlp_bench import track as tracks

    return tracks.load(TRACK)


def tune_lrs(args, methods: list[str]) -> tuple[dict[str, float], dict[str, dict]]:
    """Client lr per method (full: the track's) and, per PEFT method, its tuning section (grid on validation)."""
    from fednlp_bench import tuning

    track = _track()
    peft = [m for m in methods if m != "full"]
    specs = [{"kind": "tune", "tag": f"tune {m} lr {lr:g} seed {s}", "track": TRACK,
              "partition": track.tuning.partition, "seed": s, "lr": lr, "method": m}
             for m in peft for lr in args.lrs for s in track.tuning.seeds]
    runs = run_all(specs, args.jobs, Path(args.out) / "a-tuning-runs.jsonl")
    lrs, docs = {"full": track.budget["fl"]["client_lr"]}, {}
    for m in peft:
        scores = []
        for lr in args.lrs:
            vals = [r["val"] for r in runs if r["spec"]["method"] == m and r["spec"]["lr"] == lr]
            scores.append({"params": {"client_lr": lr}, "val": vals, "mean": sum(vals) / len(vals)})
        docs[m] = {"protocol": track.tuning.protocol, "space": {"client_lr": list(args.lrs)},
                   "chosen": tuning.best(scores), "target": "fl", "metric": "accuracy", "split": "validation",
                   "partition": track.tuning.partition, "seeds": list(track.tuning.seeds), "scores": scores}
        lrs[m] = docs[m]["chosen"]["client_lr"]
    (Path(args.out) / "a-tuning.json").write_text(json.dumps(docs, indent=1) + "\n")
    return lrs, docs


def part_a(args) -> tuple[list[dict], dict[str, float], dict[str, dict]]:
    methods = args.methods.split(",")
    lrs, docs = tune_lrs(args, methods)
    specs = [{"kind": "run", "tag": f"{part} {m} seed {seed}", "track": TRACK, "partition": part, "seed": seed,
              "lr": lrs[m], "method": m, "tuning": docs.get(m), "results_dir": f"{args.out}/a"}
             for seed in args.seeds for part in args.partitions.split(",") for m in methods]
    return run_all(specs, args.jobs, Path(args.out) / "a-runs.jsonl"), lrs, docs


def part_b(args) -> list[dict]:
    lrs, _ = tune_lrs(args, ["full", "lora"])
    base = [*COMMON, f"model.name={_track().model}", *DP_SETTINGS, *args.dp_extra]
    counts = run_all([{"kind": "count", "tag": f"count {m}", "dataset": "healthtweets", "preset": None,
                       "overrides": [*base, f"model.peft={m}"], "method": m} for m in ("full", "lora")],
                     1, Path(args.out) / "b-count.jsonl")
    # clip norm C = lr x sqrt(trainable parameters), 2 significant digits: AdamW's first step moves every
    # coordinate by about lr whatever the data, so this is a client update's norm, from public quantities only
    clip = {r["spec"]["method"]: float(f"{lrs[r['spec']['method']] * math.sqrt(r['n_params']):.2g}") for r in counts}
    specs = []
    for seed in args.seeds:
        for eps in DP_EPSILONS:
            for m in ("full", "lora"):
                noise = ["privacy.user_noise=0"] if eps is None else [f"privacy.user_target_epsilon={eps}"]
                specs.append({"kind": "run", "tag": f"DP {m} eps {eps} seed {seed}", "method": m, "epsilon": eps,
                              "seed": seed, "lr": lrs[m], "clip": clip[m], "dataset": "healthtweets", "preset": None,
                              "overrides": [*base, *noise, f"seed={seed}", f"model.peft={m}", f"fl.client_lr={lrs[m]}",
                                            f"privacy.user_clip={clip[m]}", f"results_dir={args.out}/b"]})
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
        cfg = config.resolve("tc", preset, [*COMMON, f"model.peft={method}", f"fl.client_lr={TIMING_LR[method]}",
                                            *extra])
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
    full = _cell(a_runs, method="full")
    lora = _cell(a_runs, method="lora")
    if full and lora:
        bf = full[0]["record"]["cost"]["bytes_up_per_round"]
        bl = lora[0]["record"]["cost"]["bytes_up_per_round"]
        lines.append(f"bytes up per round on the tc track (all clients; down is the same): full {_mb(bf)}, LoRA "
                     f"{_mb(bl)} -> LoRA / full = **{bl / bf:.4%}** "
                     f"(floor <= 2%: {'met' if bl / bf <= 0.02 else 'NOT met'})")
    return "\n".join(lines)


def _args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: the tc track's)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="results/peft")
    ap.add_argument("--parts", default="abc")
    ap.add_argument("--timing-rounds", type=int, default=3, help="rounds of the part (c) step timing; 0 skips it")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for part (c)'s quick-preset timing (repeatable)")
    ap.add_argument("--partitions", default=",".join(PARTITIONS), help="tc-track partitions of part (a)")
    ap.add_argument("--methods", default=",".join(METHODS), help="PEFT methods of part (a)")
    ap.add_argument("--smoke", action="store_true", help="a minutes-long check of this script, not a measurement")
    args = ap.parse_args()
    args.out = str(Path(args.out).resolve())
    args.seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(_track().seeds)
    args.preset, args.dp_extra, args.lrs = "quick", [], PEFT_LRS
    if args.smoke:
        args.preset, args.timing_rounds, args.lrs, args.seeds = "smoke", 1, PEFT_LRS[2:3], args.seeds[:1]
        args.methods, args.partitions = "full,lora", PARTITIONS[0]
        args.dp_extra = ["data.max_train=1600", "data.max_test=100", "partition.n_clients=100",
                         "fl.clients_per_round=10", "fl.rounds=1", "fl.eval_every=1"]
    return args


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
        return
    args = _args()
    t0 = time.perf_counter()
    print(f"machine: {machine()}; {args.jobs} runs at a time, 1 thread each", flush=True)
    a_runs: list[dict] = []
    if "a" in args.parts:
        a_runs, lrs, docs = part_a(args)
        print(f"\n(a) client lr chosen on validation ({TRACK} track tuning partition and seeds)\n"
              + table_tuning(docs, args.lrs))
        print(f"\n(a) {TRACK} track, FedAvg\n" + table_a(a_runs, lrs) + "\n\n" + paired_a(a_runs), flush=True)
    if "b" in args.parts:
        b_runs = part_b(args)
        budget = "smoke budget: 100 clients, 10 per round" if args.smoke else "1,000 clients, 100 per round"
        print(f"\n(b) DP-FedAvg, health tweets, {budget}\n" + table_b(b_runs) + "\n\n"
              + paired_b(b_runs), flush=True)
        print(f"privacy-utility curve: {plot_b(b_runs, Path(args.out) / 'b-privacy-utility.png')}")
    if "c" in args.parts:
        print("\n(c) floors\n" + part_c(args, a_runs), flush=True)
    print(f"\nbench-peft wall time: {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
