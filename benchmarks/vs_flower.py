"""Per-round wall time of the same FedAvg workload under our engine and under Flower's
simulation engine (``flwr[simulation]``, Ray backend), same machine, same invocation.

Workload: BBC News text classification, 100 clients (uniform partition of 1,600 training
rows, 16 each), all 100 clients in every round, 1 local AdamW step per client on a batch of
8 x <=32 tokens, FedAvg weighted by client size, no evaluation; 1 warm-up round + 5 timed
rounds. Both sides train the same model from the same initial weights on the same padded
batches (taken from our engine's schedule) with the same per-client dropout seeds, so
their final global weights agree (the "parity" line).

* ours: our ``Simulator`` built as ``fednlp-bench run`` builds it, ``run_round(r)`` timed
  in-process (once before and once after the Flower runs, so that machine load hits both);
* Flower: ``benchmarks/flower_side.py`` run as a subprocess with the peers venv's Python
  (``flwr.simulation.run_simulation``, a ``NumPyClient`` whose ``fit`` loads the broadcast,
  takes the step and returns the trainable parameters; legacy ``FedAvg`` strategy with
  ``fraction_fit=1.0``), once per ``--num-cpus`` value (Ray ``client_resources``); the best
  setting is used for the ratio. Round time = end of ``aggregate_fit(r-1)`` -> end of
  ``aggregate_fit(r)``; Flower's start-up (Ray, actor pool) is reported separately.
  ``--template`` adds a secondary Flower figure with a new model per ``client_fn`` call,
  as Flower's HuggingFace app template does.

Our side is timed as users run it (default config: the exact row-sparse update of the word
embedding, ``fednlp_bench/sparse_rows.py``, which leaves the rows a client never looked up alone
and gives bit-identical weights) and, as a secondary figure, with the dense client path
(``fl.sparse_embeddings=false``), each with each of ``--threads`` (torch intra-op threads);
and under ``torchrun`` with ``--ranks`` processes of 1 thread each (``benchmarks/ours_ranks.py``:
each rank trains its shard of the cohort, one all-reduce per round), as Flower runs one Ray actor
per core. The headline ratio is Flower's fastest timed round over ours (each side's best setting;
load from other processes only adds time, and overhead.py quotes minima too); the ratio of medians,
the one-process ratio and the dense-path ratio are printed beside it. Both sides build the client's AdamW with the same
keyword arguments (read from our engine's optimiser), so the comparison isolates what
each framework adds around the identical local step.

Model: ``tiny`` (default) is a 2-layer BERT (hidden 128) with MiniLM-L6's tokenizer, saved
once and loaded by both sides; ``minilm-l6`` is our packaged MiniLM-L6 (22.7M parameters).
Flower's driver holds every reply of a round before aggregating (about 2.5 copies: 5.2 GB
peak RSS measured for 100 tiny-model clients of 16.7 MiB each), so ``minilm-l6`` with 100
clients needs ~22 GB of RAM for Flower alone (our engine: O(model)).

    make bench-peers        # creates .venv-peers (flwr[simulation]) and runs this script
    .venv/bin/python benchmarks/vs_flower.py [--peers-python .venv-peers/bin/python]
        [--model tiny|minilm-l6] [--num-cpus 1,2] [--rounds 6] [--clients 100] [--ranks 2]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import build, machine, record_batches
from fednlp_bench import config
from fednlp_bench.state import client_seed

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FLOOR = 5.0


def tiny_model(work: Path, label_names: list[str]) -> str:
    """A 2-layer BERT (hidden 128) classifier with MiniLM-L6's tokenizer, saved once."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from fednlp_bench.models import resolve_model

    path = work / f"tiny-bert-{len(label_names)}"
    if (path / "config.json").exists():
        return str(path)
    tok = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))
    cfg = BertConfig(vocab_size=len(tok), hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=512, max_position_embeddings=512, num_labels=len(label_names),
                     id2label=dict(enumerate(label_names)), label2id={n: i for i, n in enumerate(label_names)})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForSequenceClassification(cfg)
    tmp = path.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(path)
    return str(path)


def make_config(args, model: str, sparse: bool = True):
    return config.resolve("tc", "smoke", [
        f"fl.sparse_embeddings={str(sparse).lower()}",
        f"model={model}",
        f"partition.n_clients={args.clients}", f"fl.clients_per_round={args.clients}",
        "fl.local_steps=1", "fl.batch_size=8", "data.max_len=32", f"data.max_train={16 * args.clients}",
        f"fl.rounds={args.rounds}", f"fl.eval_every={args.rounds}",
        "wandb=disabled", "progress=false", f"results_dir={args.work}",
    ])


def run_ours(cfg, record: bool, sync=None):
    """(seconds per round, CPU seconds per round, simulator, prepared data, partition, setup seconds).

    ``sync`` (e.g. ``torch.distributed.barrier`` under torchrun) runs before and after every
    timed round, so that a round's time is the slowest rank's."""
    t0 = time.perf_counter()
    sim, prep, part = build(cfg)
    sim.seen = record_batches(sim) if record else None
    sim.start_server()
    setup = time.perf_counter() - t0
    times, cpu = [], []
    for r in range(1, cfg.fl.rounds + 1):
        if sync is not None:
            sync()
        t, c = time.perf_counter(), time.process_time()
        sim.run_round(r)
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return times, cpu, sim, prep, part, setup


def run_ours_ranks(n: int, args, model: str, work: Path, tag: str) -> dict:
    """Our engine under ``torchrun --nproc_per_node n`` (1 thread per rank): benchmarks/ours_ranks.py."""
    out = work / f"ours_ranks{n}_{tag}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           str(HERE / "ours_ranks.py"), "--model", model, "--clients", str(args.clients), "--rounds", str(args.rounds),
           "--work", str(work), "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE, timeout=args.timeout)
    if proc.returncode != 0:
        raise SystemExit(f"our engine under torchrun ({n} ranks) failed:\n{proc.stderr[-3000:]}")
    res = json.loads(Path(f"{out}.json").read_text())
    res["final"] = np.load(f"{out}_final.npy")
    return res


def optimizer_settings(sim) -> dict:
    """The keyword arguments of the AdamW our engine builds per client, so that Flower's client builds the
    same one (including the implementation choice: foreach/fused)."""
    opt = sim.local.optimizer.fresh()
    if type(opt) is not torch.optim.AdamW:
        raise SystemExit(f"our engine's client optimiser is {type(opt).__name__}; flower_side.py mirrors AdamW only")
    keys = ("lr", "betas", "eps", "weight_decay", "amsgrad", "foreach", "fused", "maximize", "capturable",
            "differentiable")
    out = {}
    for k in keys:
        if k in opt.defaults:
            v = opt.defaults[k]
            out[k] = float(v) if isinstance(v, torch.Tensor) else (list(v) if isinstance(v, tuple) else v)
    return out


def write_flower_inputs(work: Path, cfg, sim, prep, part) -> None:
    arrays: dict[str, np.ndarray] = {}
    for (r, c), batches in sim.seen.items():
        if len(batches) != cfg.fl.local_steps:
            raise SystemExit(f"round {r} client {c}: {len(batches)} batches, expected {cfg.fl.local_steps}")
        batch = prep.task.collate(prep.train, batches[0], prep.pad_id)
        for name in ("input_ids", "attention_mask", "labels"):
            arrays[f"r{r}_c{c}_{name}"] = batch[name].numpy()
        arrays[f"r{r}_c{c}_seed"] = np.array(client_seed(cfg.seed, r, c), dtype=np.int64)
    expected = cfg.fl.rounds * cfg.fl.clients_per_round
    if len(sim.seen) != expected:
        raise SystemExit(f"recorded {len(sim.seen)} client batches, expected {expected}")
    np.savez(work / "batches.npz", **arrays)
    spec = {
        "model_path": str(Path(prep.model_path).resolve()) if os.path.isdir(prep.model_path) else prep.model_path,
        "num_labels": len(prep.info["label_names"]),
        "seed": cfg.seed,
        "optimizer": optimizer_settings(sim),
        "local_steps": cfg.fl.local_steps,
        "n_clients": cfg.partition.n_clients,
        "rounds": cfg.fl.rounds,
        "n_examples": [int(len(rows)) for rows in part.train],
    }
    (work / "spec.json").write_text(json.dumps(spec, indent=1))


def run_flower(peers_python: str, work: Path, num_cpus: float, timeout: float, client: str = "cached",
               api: str = "legacy") -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", FLWR_TELEMETRY_ENABLED="0")
    env.pop("PYTHONPATH", None)
    name = f"flower_{api}_{client}_cpus{num_cpus:g}"
    log_path = work / f"{name}.log"
    cmd = [peers_python, str(HERE / "flower_side.py"), "--work", str(work), "--num-cpus", f"{num_cpus:g}",
           "--client", client, "--api", api]
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"Flower run (num_cpus={num_cpus:g}) failed with exit code {proc.returncode}; "
                         f"log {log_path}:\n{tail}")
    result = json.loads((work / f"{name}.json").read_text())
    result["subprocess_seconds"] = wall
    final = np.load(work / f"{name}_final.npy")
    result["final"] = final
    return result


def check_peers(peers_python: str) -> None:
    if not (shutil.which(peers_python) or os.access(peers_python, os.X_OK)):
        raise SystemExit(f"peers python {peers_python!r} not found: run `make bench-peers` "
                         f"(or pass --peers-python)")
    probe = subprocess.run([peers_python, "-c", "import flwr, ray, torch, transformers; print(flwr.__version__)"],
                           capture_output=True, text=True, env=dict(os.environ, FLWR_TELEMETRY_ENABLED="0"))
    if probe.returncode != 0:
        raise SystemExit(f"{peers_python} cannot import flwr[simulation]/torch/transformers: "
                         f"install benchmarks/requirements-peers.txt there (see `make bench-peers`)\n{probe.stderr[-2000:]}")


def ours_key(threads: int, sparse: bool) -> str:
    return f"threads={threads}" + ("" if sparse else ",dense")


def fmt(xs) -> str:
    return ", ".join(f"{x:.3f}" for x in xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers-python", default=os.environ.get("PEERS_PYTHON", str(REPO / ".venv-peers/bin/python")))
    ap.add_argument("--model", default="tiny", help="tiny (2-layer BERT, default), minilm-l6, or a model dir")
    ap.add_argument("--flower-api", default="legacy,message",
                    help="Flower APIs to time: legacy (NumPyClient + flwr.server.strategy.FedAvg), message "
                         "(Message-API ClientApp + flwr.serverapp.strategy.FedAvg)")
    ap.add_argument("--num-cpus", default="1,2", help="Ray client_resources num_cpus values to try for Flower")
    ap.add_argument("--template", type=float, nargs="?", const=1.0, default=None, metavar="NUM_CPUS",
                    help="also time Flower's HuggingFace-template client (new model per client_fn call) at this "
                         "num_cpus (default 1); a secondary figure, not used for the ratio")
    ap.add_argument("--threads", default="1,2", help="torch thread counts to try for our engine")
    ap.add_argument("--ranks", default="2",
                    help="also time our engine under torchrun with these rank counts, 1 thread per rank (as "
                         "Flower runs one Ray actor per core); empty: skip")
    ap.add_argument("--no-dense", dest="dense", action="store_false",
                    help="skip the secondary timing of our engine with the dense client path (fl.sparse_embeddings=false)")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=6,
                    help="rounds per run; the first is a warm-up (Flower's rounds keep getting faster over the "
                         "first few, so its minimum needs several)")
    ap.add_argument("--work", default="/tmp/vsflower")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per Flower run")
    ap.add_argument("--json", help="also write all figures to this JSON file")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the ratio is below the floor")
    args = ap.parse_args()
    if args.rounds < 2:
        ap.error("--rounds must be >= 2 (one warm-up round)")
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if os.sep in args.peers_python:
        args.peers_python = os.path.abspath(args.peers_python)  # not resolve(): keep the venv's symlink
    check_peers(args.peers_python)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)

    model = args.model
    if model == "tiny":
        from fednlp_bench import tasks

        from fednlp_bench.run import load_splits

        _, dsd = load_splits(make_config(args, "minilm-l6"))
        model = tiny_model(work, tasks.get("tc").info(dsd["train"])["label_names"])
    cfg = make_config(args, model)
    configs = {True: cfg, False: make_config(args, model, sparse=False)}
    timed = slice(1, None)  # round 1 is the warm-up

    load = {"before": os.getloadavg()}
    threads = [int(x) for x in args.threads.split(",") if x.strip()]
    # our engine as users run it (row-sparse embedding updates, the default), then with the dense
    # client path (fl.sparse_embeddings=false) as a secondary figure
    settings = [(t, True) for t in threads] + ([(t, False) for t in threads] if args.dense else [])
    ours: dict[str, dict] = {}
    ours_final = None
    dense_final = None
    for i, (t, sparse) in enumerate(settings):  # first pass, before Flower
        torch.set_num_threads(t)
        times, cpu, sim, prep, part, setup = run_ours(configs[sparse], record=i == 0)
        if i == 0:
            write_flower_inputs(work, cfg, sim, prep, part)
            ours_final = sim.global_params.detach().cpu().numpy().copy()
            n_params = int(sim.global_params.numel())
        elif not sparse and dense_final is None:
            dense_final = sim.global_params.detach().cpu().numpy().copy()
        ours[ours_key(t, sparse)] = {"setup_seconds": setup, "rounds_pass1": times, "cpu_pass1": cpu,
                                     "threads": t, "sparse_embeddings": sparse,
                                     "row_sparse_path": sim.row_sparse is not None}
        del sim
    rank_counts = [int(x) for x in args.ranks.split(",") if x.strip()]
    for n in rank_counts:
        res = run_ours_ranks(n, args, model, work, "pass1")
        ours[f"{n} ranks x 1 thread"] = {"setup_seconds": res["setup_seconds"], "rounds_pass1": res["rounds"],
                                         "cpu_pass1": res["cpu"], "threads": 1, "ranks": n, "sparse_embeddings": True,
                                         "row_sparse_path": res["row_sparse_path"],
                                         "parity_vs_one_process": float(np.max(np.abs(res["final"] - ours_final)))}
    load["after_ours_1"] = os.getloadavg()

    flower: dict[str, dict] = {}
    for api in [x.strip() for x in args.flower_api.split(",") if x.strip()]:
        for n in [float(x) for x in args.num_cpus.split(",") if x.strip()]:
            key = f"{api} num_cpus={n:g}"
            flower[key] = run_flower(args.peers_python, work, n, args.timeout, api=api)
            load[f"after flower {key}"] = os.getloadavg()
    template = None
    if args.template is not None:
        template = run_flower(args.peers_python, work, args.template, args.timeout, client="template")
        load["after_flower_template"] = os.getloadavg()
    for res in [*flower.values(), *([template] if template else [])]:
        final = res.pop("final")
        res["parity_max_abs_diff"] = float(np.max(np.abs(final - ours_final))) if final.shape == ours_final.shape else None
        res["median"] = statistics.median(res["round_periods"])

    for t, sparse in settings:  # second pass, after Flower, so that changing machine load hits both sides
        torch.set_num_threads(t)
        times, cpu, sim, *_ = run_ours(configs[sparse], record=False)
        res = ours[ours_key(t, sparse)]
        res["rounds_pass2"] = times
        res["cpu_pass2"] = cpu
        res["cpu_timed"] = res["cpu_pass1"][timed] + cpu[timed]
        res["timed"] = res["rounds_pass1"][timed] + times[timed]
        res["median"] = statistics.median(res["timed"])
        del sim
    for n in rank_counts:
        res = run_ours_ranks(n, args, model, work, "pass2")
        r = ours[f"{n} ranks x 1 thread"]
        r["rounds_pass2"], r["cpu_pass2"] = res["rounds"], res["cpu"]
        r["cpu_timed"] = r["cpu_pass1"][timed] + res["cpu"][timed]
        r["timed"] = r["rounds_pass1"][timed] + res["rounds"][timed]
        r["median"] = statistics.median(r["timed"])
    load["after_ours_2"] = os.getloadavg()

    for res in ours.values():
        res["min"] = min(res["timed"])
    for res in [*flower.values(), *([template] if template else [])]:
        res["min"] = min(res["round_periods"])
    # headline: the fastest timed round of each side's best setting (load from other processes only
    # ever adds time; overhead.py quotes minima too); the ratio of medians is printed beside it
    default = {k: v for k, v in ours.items() if v["sparse_embeddings"]}
    best_ours = min(default, key=lambda k: ours[k]["min"])
    best_flower = min(flower, key=lambda k: flower[k]["min"])
    ours_min, flower_min = ours[best_ours]["min"], flower[best_flower]["min"]
    ratio = flower_min / ours_min
    med_ours = min(default, key=lambda k: ours[k]["median"])
    med_flower = min(flower, key=lambda k: flower[k]["median"])
    ratio_median = flower[med_flower]["median"] / ours[med_ours]["median"]

    print(f"machine: {machine()}; load average (1/5/15 min) before: {', '.join(f'{x:.2f}' for x in load['before'])}")
    print(f"workload: {cfg.partition.n_clients} clients, {cfg.fl.clients_per_round}/round, {cfg.fl.local_steps} AdamW "
          f"step x batch {cfg.fl.batch_size} x <={cfg.data.max_len} tokens, model {args.model} ({n_params:,} params, "
          f"{n_params * 4 / 2**20:.1f} MiB), {cfg.fl.rounds} rounds (1 warm-up)")
    for t, res in ours.items():
        print(f"ours   {t}: row-sparse path {'on' if res['row_sparse_path'] else 'off'}; set-up {res['setup_seconds']:.2f} s; warm-up round {res['rounds_pass1'][0]:.3f} s; "
              f"timed rounds {fmt(res['rounds_pass1'][timed])} | after Flower {fmt(res['rounds_pass2'][timed])}; "
              f"min {res['min']:.3f}, median {res['median']:.3f} s/round; CPU {statistics.median(res['cpu_timed']):.2f} "
              f"CPU-s/round (median)" + (f"; final weights vs one process: max diff {res['parity_vs_one_process']:.1e} "
                                         f"(all-reduce summation order)" if "ranks" in res else ""))
    for k, res in flower.items():
        print(f"flower {k} ({res['n_actors']} Ray actors): start-up {res['startup_seconds']:.2f} s "
              f"(+ imports {res['import_seconds']:.2f} s); start-up + warm-up round {res['startup_and_warmup_seconds']:.2f} s; "
              f"timed rounds {fmt(res['round_periods'])}; min {res['min']:.3f}, median {res['median']:.3f} s/round; "
              f"CPU {statistics.median(res['round_cpu_seconds']):.2f} CPU-s/round (median, driver + all Ray processes); "
              f"driver peak RSS {res.get('driver_peak_rss_mib', float('nan')):.0f} MiB; "
              f"parity max|w_flower - w_ours| = {res['parity_max_abs_diff']:.2e}")
    if template:
        print(f"flower legacy template client (new model per client_fn call, as Flower's HuggingFace template), "
              f"num_cpus={args.template:g}: timed rounds {fmt(template['round_periods'])}; min {template['min']:.3f}, "
              f"median {template['median']:.3f} s/round; min ratio to ours {template['min'] / ours_min:.2f}x "
              f"(secondary figure; parity {template['parity_max_abs_diff']:.2e})")
    print(f"flwr {next(iter(flower.values()))['flwr_version']}, ray {next(iter(flower.values()))['ray_version']}")
    print(f"per-round ratio (fastest rounds) flower({best_flower}) / ours({best_ours}) = "
          f"{flower_min:.3f} / {ours_min:.3f} = {ratio:.2f}x (floor >= {FLOOR:g}x: {'PASS' if ratio >= FLOOR else 'FAIL'}); "
          f"ratio of medians flower({med_flower}) / ours({med_ours}) = {ratio_median:.2f}x")
    single = {k: v for k, v in default.items() if "ranks" not in v}
    best_single = min(single, key=lambda k: ours[k]["min"])
    ratio_single = flower_min / ours[best_single]["min"]
    print(f"  one process ({best_single}): {flower_min:.3f} / {ours[best_single]['min']:.3f} = {ratio_single:.2f}x"
          + "".join(f"; torchrun {k}: {flower_min:.3f} / {v['min']:.3f} = {flower_min / v['min']:.2f}x"
                    for k, v in default.items() if "ranks" in v))
    dense = {k: v for k, v in ours.items() if not v["sparse_embeddings"]}
    ratio_dense = None
    if dense:
        best_dense = min(dense, key=lambda k: ours[k]["min"])
        ratio_dense = flower_min / ours[best_dense]["min"]
        same = float(np.max(np.abs(dense_final - ours_final))) if dense_final is not None else float("nan")
        speedup = ours[best_dense]["min"] / ours[best_dense.replace(",dense", "")]["min"]
        print(f"secondary: ours with the dense client path ({best_dense}) {ours[best_dense]['min']:.3f} s/round: "
              f"flower / ours-dense = {ratio_dense:.2f}x; row-sparse speed-up at the same threads {speedup:.2f}x; "
              f"max|w_dense - w_row_sparse| = {same:.1e}")
    cpu_ours = min(statistics.median(r["cpu_timed"]) for r in default.values())
    cpu_flower = min(statistics.median(r["round_cpu_seconds"]) for r in flower.values())
    print(f"CPU-seconds per round (median; least of each side's settings): flower {cpu_flower:.2f} / ours "
          f"{cpu_ours:.2f} = {cpu_flower / cpu_ours:.2f}x (less sensitive to load than wall time)")
    print(f"load average after (1/5/15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": machine(), "model": args.model, "n_params": n_params, "config": cfg.to_dict(),
            "ours": ours, "flower": flower, "flower_template": template, "best_threads": best_ours,
            "best_flower": best_flower, "ratio": ratio, "ratio_median": ratio_median, "ratio_dense": ratio_dense,
            "ratio_one_process": ratio_single,
            "cpu_ratio": cpu_flower / cpu_ours, "floor": FLOOR, "load": load,
        }, indent=1))
    if args.strict and ratio < FLOOR:
        sys.exit(1)


if __name__ == "__main__":
    main()
