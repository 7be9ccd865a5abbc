"""Flower half of ``vs_flower.py``: runs in the peers venv (``flwr[simulation]``, Ray backend).

Not meant to be run by hand: ``vs_flower.py`` writes a work directory with
``spec.json`` (model directory, optimiser settings, rounds, clients) and
``batches.npz`` (the exact padded batch every client trains on in every round,
taken from our engine's schedule) and starts::

    <peers python> benchmarks/flower_side.py --work DIR --num-cpus N

The workload is the one our engine runs: FedAvg (Flower's own ``FedAvg``
strategy, ``fraction_fit=1.0``) over all clients, each ``fit()`` loading the
broadcast into the model, taking one AdamW step on its batch and returning the
trainable parameters with its number of examples as the weight. To give Flower
its best case, each Ray actor builds its model once and reuses it (weights are
copied in place), evaluation is off, and only the trainable parameters travel
(the same set our engine averages). Timestamps come from the strategy:
``configure_fit`` (round start) and the end of ``aggregate_fit`` (round end).
The result is written to ``DIR/flower_<client>_cpus<N>.json``. ``--client template``
instead builds a new model in every ``client_fn`` call, as Flower's HuggingFace app
template (``flwr new``) does; vs_flower.py reports it only as a secondary figure.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from collections import OrderedDict

T_PROCESS = time.perf_counter()
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402

WORK_ENV = "FEDNLP_VSFLOWER_WORK"  # read by the Ray actors (environment is inherited)
THREADS_ENV = "FEDNLP_VSFLOWER_THREADS"

_ACTOR: dict = {}  # per Ray actor process: the one model, its parameters, the batches


def _spec(work: str) -> dict:
    with open(os.path.join(work, "spec.json")) as f:
        return json.load(f)


def build_model(spec: dict, names: bool = False):
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(spec["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(spec["model_path"], num_labels=spec["num_labels"])
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if names:
        return model, [p for _, p in named], [n for n, _ in named]
    return model, [p for _, p in named]


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and all its live descendants (Ray GCS, raylet, actors), from /proc."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(name)] = int(fields[1])
        cpu[int(name)] = (int(fields[11]) + int(fields[12])) / tick
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0.0)
        stack.extend(children.get(pid, ()))
    return total


def _optimizer_kwargs(spec: dict) -> dict:
    """Our engine's AdamW settings (lr, weight decay, betas, eps, foreach/fused), as vs_flower.py read them."""
    kw = dict(spec["optimizer"])
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    return kw


def _actor_state() -> dict:
    if not _ACTOR:
        t_first = time.time()  # wall clock: compared with the driver's across processes
        work = os.environ[WORK_ENV]
        spec = _spec(work)
        torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1")))
        model, params, names = build_model(spec, names=True)
        with np.load(os.path.join(work, "batches.npz")) as z:
            batches = {k: z[k] for k in z.files}
        _ACTOR.update(spec=spec, model=model, params=params, names=names, batches=batches)
        os.makedirs(os.path.join(work, "actors"), exist_ok=True)
        with open(os.path.join(work, "actors", f"{os.getpid()}.json"), "w") as f:
            json.dump({"first_message": t_first, "ready": time.time()}, f)
    return _ACTOR


def _make_client(cid: int, fresh_model: bool):
    from flwr.client import NumPyClient

    st = _actor_state()
    # "template": a new model per client_fn call, as in Flower's HuggingFace app template
    # (`flwr new`, huggingface): `net = AutoModelForSequenceClassification.from_pretrained(...)`
    model, params = build_model(st["spec"]) if fresh_model else (st["model"], st["params"])

    class BenchClient(NumPyClient):
        def get_parameters(self, config):
            return [p.detach().numpy() for p in params]

        def fit(self, parameters, config):
            _local_training(st, model, params, [torch.from_numpy(a) for a in parameters],
                            int(config["server_round"]), cid)
            return [p.detach().numpy() for p in params], int(st["spec"]["n_examples"][cid]), {}

    return BenchClient()


def _local_training(st: dict, model, params: list, weights: list, round: int, cid: int) -> None:
    """Load the broadcast into the model in place and take the client's local step(s): the same
    batch, dropout seed and AdamW settings as our engine used for (round, client)."""
    spec = st["spec"]
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(w)
    key = f"r{round}_c{cid}"
    batch = {name: torch.from_numpy(st["batches"][f"{key}_{name}"]) for name in ("input_ids", "attention_mask", "labels")}
    torch.manual_seed(int(st["batches"][f"{key}_seed"]))  # same dropout masks as our engine
    model.train()
    opt = torch.optim.AdamW(params, **_optimizer_kwargs(spec))
    for _ in range(spec["local_steps"]):
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()


def _train_message(msg, context):
    """Message-API ClientApp ``@app.train()`` handler (Flower >= 1.21's recommended API)."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    st = _actor_state()
    cid = int(context.node_config["partition-id"])
    weights = list(msg.content["arrays"].to_torch_state_dict().values())
    _local_training(st, st["model"], st["params"], weights, int(msg.content["config"]["server-round"]), cid)
    arrays = ArrayRecord(OrderedDict((n, p.detach()) for n, p in zip(st["names"], st["params"])))
    metrics = MetricRecord({"num-examples": int(st["spec"]["n_examples"][cid])})
    return Message(content=RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


def message_client_app():
    from flwr.clientapp import ClientApp

    app = ClientApp()
    app.train()(_train_message)
    return app


def client_fn(context):
    return _make_client(int(context.node_config["partition-id"]), False).to_client()


def client_fn_template(context):
    return _make_client(int(context.node_config["partition-id"]), True).to_client()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--num-cpus", type=float, default=1.0, help="Ray client_resources num_cpus per client")
    ap.add_argument("--client", choices=["cached", "template"], default="cached",
                    help="cached: one model per Ray actor, reused (Flower's best case); template: a new model "
                         "per client_fn call, as Flower's HuggingFace app template does")
    ap.add_argument("--api", choices=["legacy", "message"], default="legacy",
                    help="legacy: NumPyClient + flwr.server.strategy.FedAvg; message: Message-API ClientApp "
                         "(@app.train) + flwr.serverapp.strategy.FedAvg")
    ap.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 1, help="CPUs Ray may use")
    args = ap.parse_args()

    import flwr
    from flwr.simulation import run_simulation

    spec = _spec(args.work)
    n_clients, rounds = spec["n_clients"], spec["rounds"]
    threads = max(1, int(args.num_cpus))
    os.environ[WORK_ENV] = args.work
    os.environ[THREADS_ENV] = str(threads)
    t_imported = time.perf_counter()

    torch.set_num_threads(max(1, args.ray_cpus))
    _, params, names = build_model(spec, names=True)
    t_model = time.perf_counter()

    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    n_results: dict[int, int] = {}
    n_failures: dict[int, int] = {}
    final: list = [None]  # the last global model as a list of numpy arrays
    cpu_at_end: dict[int, float] = {}  # CPU seconds of the whole process tree (driver + Ray) at each round end

    if args.api == "legacy":
        from flwr.client import ClientApp
        from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
        from flwr.server import ServerApp, ServerAppComponents, ServerConfig
        from flwr.server.strategy import FedAvg

        class TimedFedAvg(FedAvg):
            def configure_fit(self, server_round, parameters, client_manager):
                starts[server_round] = time.perf_counter()
                return super().configure_fit(server_round, parameters, client_manager)

            def aggregate_fit(self, server_round, results, failures):
                out = super().aggregate_fit(server_round, results, failures)
                ends[server_round] = time.perf_counter()
                cpu_at_end[server_round] = tree_cpu_seconds(os.getpid())
                if out[0] is not None and server_round == rounds:
                    final[0] = parameters_to_ndarrays(out[0])
                n_results[server_round] = len(results)
                n_failures[server_round] = len(failures)
                return out

        strategy = TimedFedAvg(
            fraction_fit=1.0, min_fit_clients=n_clients, min_available_clients=n_clients,
            fraction_evaluate=0.0, min_evaluate_clients=0,
            initial_parameters=ndarrays_to_parameters([p.detach().numpy() for p in params]),
            on_fit_config_fn=lambda r: {"server_round": r},
        )

        def server_fn(context):
            return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

        server_app = ServerApp(server_fn=server_fn)
        client_app = ClientApp(client_fn=client_fn if args.client == "cached" else client_fn_template)
    else:
        if args.client != "cached":
            raise SystemExit("--api message supports --client cached only")
        from flwr.app import ArrayRecord
        from flwr.serverapp import ServerApp
        from flwr.serverapp.strategy import FedAvg as MessageFedAvg

        class TimedMessageFedAvg(MessageFedAvg):
            def configure_train(self, server_round, arrays, config, grid):
                starts[server_round] = time.perf_counter()
                return super().configure_train(server_round, arrays, config, grid)

            def aggregate_train(self, server_round, replies):
                replies = list(replies)
                out = super().aggregate_train(server_round, replies)
                ends[server_round] = time.perf_counter()
                cpu_at_end[server_round] = tree_cpu_seconds(os.getpid())
                n_failures[server_round] = sum(1 for m in replies if m.has_error())
                n_results[server_round] = len(replies) - n_failures[server_round]
                return out

        server_app = ServerApp()

        @server_app.main()
        def _server_main(grid, context):
            strategy = TimedMessageFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n_clients,
                                          min_evaluate_nodes=0, min_available_nodes=n_clients)
            initial = ArrayRecord(OrderedDict((n, p.detach()) for n, p in zip(names, params)))
            result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds)
            final[0] = result.arrays.to_numpy_ndarrays()

        client_app = message_client_app()

    backend_config = {
        "client_resources": {"num_cpus": args.num_cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": args.ray_cpus, "logging_level": "ERROR", "log_to_driver": True},
    }
    shutil.rmtree(os.path.join(args.work, "actors"), ignore_errors=True)
    t_call, t_call_wall = time.perf_counter(), time.time()
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n_clients, backend_name="ray",
                   backend_config=backend_config)
    t_done = time.perf_counter()

    done = sorted(ends)
    actors = []
    if os.path.isdir(os.path.join(args.work, "actors")):
        for name in sorted(os.listdir(os.path.join(args.work, "actors"))):
            with open(os.path.join(args.work, "actors", name)) as f:
                actors.append(json.load(f))
    first_msg = min((a["first_message"] for a in actors), default=None)
    result = {
        "flwr_version": flwr.__version__,
        "ray_version": __import__("ray").__version__,
        "torch_version": torch.__version__,
        "api": args.api,
        "client": args.client,
        "num_cpus_per_client": args.num_cpus,
        "ray_cpus": args.ray_cpus,
        "threads_per_client": threads,
        "rounds_completed": len(done),
        "results_per_round": [n_results[r] for r in done],
        "failures_per_round": [n_failures[r] for r in done],
        # round r (r >= 2): from the end of round r-1's aggregation to the end of round r's
        "round_periods": [ends[r] - ends[r - 1] for r in done if r - 1 in ends],
        # CPU seconds used by the driver and every Ray process over the same periods
        "round_cpu_seconds": [cpu_at_end[r] - cpu_at_end[r - 1] for r in done if r - 1 in cpu_at_end],
        # configure_fit(r) -> end of aggregate_fit(r)
        "round_fit_seconds": [ends[r] - starts[r] for r in done],
        "first_round_seconds": ends[done[0]] - starts[done[0]] if done else None,
        "import_seconds": t_imported - T_PROCESS,
        "model_build_seconds": t_model - t_imported,
        "n_actors": len(actors),
        # run_simulation() called -> the first client message reaches a Ray actor (Ray start,
        # actor pool, SuperLink/ServerApp set-up, first broadcast)
        "startup_seconds": (first_msg - t_call_wall) if first_msg is not None else None,
        # run_simulation() called -> end of the warm-up round (start-up + first round, model
        # built once per actor)
        "startup_and_warmup_seconds": (ends[done[0]] - t_call) if done else None,
        "shutdown_seconds": (t_done - ends[done[-1]]) if done else None,
        "run_simulation_seconds": t_done - t_call,
        "process_seconds": t_done - T_PROCESS,
        # the driver holds every client's reply of a round before aggregating: O(clients x model)
        "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    tag = f"flower_{args.api}_{args.client}_cpus{args.num_cpus:g}"
    if final[0] is not None:  # the last global model, flat, for the parity check in vs_flower.py
        flat = np.concatenate([a.reshape(-1) for a in final[0]]).astype(np.float32)
        np.save(os.path.join(args.work, f"{tag}_final.npy"), flat)
    out = os.path.join(args.work, f"{tag}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result), flush=True)
    if len(done) < rounds or any(n_failures.values()):
        sys.exit(f"flower run incomplete: {len(done)}/{rounds} rounds, failures {n_failures}")


if __name__ == "__main__":
    # run the module as ``flower_side`` (not ``__main__``) so that Ray actors import the client
    # code by reference instead of unpickling copies of a ``__main__`` module
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import flower_side

    flower_side.T_PROCESS = T_PROCESS
    flower_side.main()
