"""One benchmark run, end to end: data -> partition -> features -> rounds -> record.

The data flow is one-directional (ARCHITECTURE.md): the task adapter loads and
caches the dataset, the partitioner splits row indices, the adapter tokenizes
once (cached), the simulator trains, and a result record is written atomically.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fednlp_bench import partitioners
from fednlp_bench import tasks
from fednlp_bench import algorithms, checkpoint, provenance, sampling
from fednlp_bench.algorithms import CENTRALIZED
from fednlp_bench.batching import TokenizedData
from fednlp_bench.config import ConfigError, RunConfig
from fednlp_bench.engine import RunError, Simulator, World, pick_device
from fednlp_bench.io_utils import atomic_write_json
from fednlp_bench.models import load_tokenizer, resolve_model
from fednlp_bench.paths import cache_dir
from fednlp_bench.record import SCHEMA_VERSION, validate
from fednlp_bench.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    task: Any
    dsd: Any
    train: TokenizedData
    test: TokenizedData
    info: dict
    pad_id: int
    model_path: str
    tokenizer: Any = None


def _subsample(ds, limit: int | None, seed: int):
    if limit is None or limit >= len(ds):
        return ds
    rows = np.sort(np.random.default_rng([seed, limit]).choice(len(ds), size=limit, replace=False))
    # flatten so that Arrow column reads (ds.data) see only the selected rows
    return ds.select(rows).flatten_indices()


def prepare(cfg: RunConfig) -> Prepared:
    """Load (cached), subsample and tokenize (cached) the run's dataset."""
    task, dsd = load_splits(cfg)
    model_path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(cfg.model)
    key = f"{cfg.dataset}-{cfg.data.split_seed}-{cfg.data.test_fraction}"
    train = task.featurize(dsd["train"], tokenizer, cfg.data.max_len, key + f"-train-{cfg.data.max_train}")
    test = task.featurize(dsd["test"], tokenizer, cfg.data.max_len, key + f"-test-{cfg.data.max_test}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Prepared(task, dsd, train, test, task.info(dsd["train"]), pad_id, model_path, tokenizer)


def load_splits(cfg: RunConfig):
    """The task adapter and its (cached, subsampled) ``DatasetDict``."""
    task = tasks.get(cfg.task)
    dsd = task.load(cfg.dataset, split_seed=cfg.data.split_seed, test_fraction=cfg.data.test_fraction)
    dsd["train"] = _subsample(dsd["train"], cfg.data.max_train, cfg.data.split_seed)
    dsd["test"] = _subsample(dsd["test"], cfg.data.max_test, cfg.data.split_seed + 1)
    return task, dsd


def make_partition(cfg: RunConfig, task, dsd) -> partitioners.Partition:
    """Split train and test rows into clients with the configured partitioner (cached by spec)."""
    from fednlp_bench.partitioners.cache import load_or_split

    p = partitioners.make(cfg.partition.method, n_clients=cfg.partition.n_clients, seed=cfg.seed,
                          **cfg.partition.params)
    needs = set(getattr(p, "requires", ()))
    train_ds, test_ds = dsd["train"], dsd["test"]
    kwargs: dict[str, Any] = {
        "train_labels": task.label_for_partition(train_ds),
        "test_labels": task.label_for_partition(test_ds),
    }
    if "groups" in needs:
        kwargs["train_groups"] = task.groups_for_partition(train_ds)
        kwargs["test_groups"] = task.groups_for_partition(test_ds)
        if kwargs["train_groups"] is None:
            raise ConfigError(f"partition 'natural' needs a group column; dataset '{cfg.dataset}' has none")
    if "features" in needs:
        from fednlp_bench.partitioners.embeddings import sentence_embeddings

        emb_dir = cache_dir() / "embeddings"
        model_dir = resolve_model("minilm-l6")
        kwargs["train_features"] = sentence_embeddings(task.texts_for_embedding(train_ds), model_dir, emb_dir)
        kwargs["test_features"] = sentence_embeddings(task.texts_for_embedding(test_ds), model_dir, emb_dir)
    return load_or_split(p, cache_dir() / "partitions", key_extra=f"{cfg.task}/{cfg.dataset}", **kwargs)


def partition_stats(task, train_ds, parts: list[np.ndarray]) -> dict[str, Any]:
    """Label counts per client (for heatmaps), sizes and the mean JS divergence to the prior."""
    labels = np.asarray(task.label_for_partition(train_ds))
    names, codes = np.unique(labels, return_inverse=True)
    info = task.info(train_ds)
    label_names = info.get("label_names")
    if label_names is None or len(label_names) != len(names):
        label_names = [str(n) for n in names]
    counts = [np.bincount(codes[rows], minlength=len(names)).tolist() for rows in parts]
    stats: dict[str, Any] = {"label_names": label_names, "label_counts": counts,
                             "sizes": [int(len(r)) for r in parts]}
    try:
        from fednlp_bench.partitioners.stats import mean_js_divergence

        stats["mean_js"] = float(mean_js_divergence(parts, labels))
    except ImportError:
        pass
    return stats


_VOLATILE = ("results_dir", "wandb", "progress", "resume", "device", "threads")


def checkpoint_dir(cfg: RunConfig) -> Path:
    """Where this configuration's checkpoint lives: keyed by everything that affects results."""
    from fednlp_bench.tasks.base import fingerprint

    stable = {k: v for k, v in cfg.to_dict().items() if k not in _VOLATILE}
    stable["fl"] = {k: v for k, v in stable["fl"].items() if k != "checkpoint_every"}
    return Path(cfg.results_dir) / "checkpoints" / f"{cfg.task}-{cfg.algorithm.name.replace('/', '_')}-{fingerprint(stable)}"


def new_run_id(cfg: RunConfig) -> str:
    now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    alg = Path(cfg.algorithm.name.split(":")[-1]).stem if ":" in cfg.algorithm.name else cfg.algorithm.name
    return f"{now}-{cfg.task}-{alg}-{uuid.uuid4().hex[:8]}"


def resolve_algorithm(cfg: RunConfig) -> algorithms.Algorithm | None:
    if cfg.algorithm.name == CENTRALIZED:
        if cfg.algorithm.params:
            raise ConfigError(f"algorithm 'centralized' takes no hyper-parameters, got {sorted(cfg.algorithm.params)}")
        return None
    return algorithms.get(cfg.algorithm.name).from_params(cfg.algorithm.params)


def validate_up_front(cfg: RunConfig) -> algorithms.Algorithm | None:
    """Checks that need registries, before any data is prepared or a file written."""
    tasks.get(cfg.task)
    sampling.get(cfg.fl.sampler)
    alg = resolve_algorithm(cfg)
    if alg is not None:
        partitioners.make(cfg.partition.method, n_clients=cfg.partition.n_clients, seed=cfg.seed,
                          **cfg.partition.params)
    return alg


def run(cfg: RunConfig) -> tuple[dict, Path | None]:
    """Run one configuration and write its result record. Returns (record, path)."""
    t_start = time.perf_counter()
    algorithm = validate_up_front(cfg)
    world = World.init_from_env()
    device = pick_device(cfg.device)
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // world.size))
    prep = prepare(cfg)
    run_id = new_run_id(cfg)

    if algorithm is None:
        client_train, client_test = [np.arange(len(prep.train))], []
        part_rec = {"method": "none", "n_clients": 1, "params": {}}
    else:
        part = make_partition(cfg, prep.task, prep.dsd)
        client_train, client_test = part.train, part.test
        part_rec = {
            "method": cfg.partition.method,
            "n_clients": len(client_train),
            "params": part.spec.get("params", {}),
            "stats": partition_stats(prep.task, prep.dsd["train"], client_train),
        }
        if cfg.fl.clients_per_round > len(client_train):
            raise ConfigError(
                f"fl.clients_per_round ({cfg.fl.clients_per_round}) exceeds the {len(client_train)} clients "
                f"the partition produced"
            )

    canary = None
    if cfg.privacy.canaries:  # privacy audit: a secret-carrying canary in one client's data
        from fednlp_bench.audit.run_audit import insert_canary

        canary = insert_canary(cfg, prep, client_train, centralized=algorithm is None)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # deterministic head initialisation
        model = prep.task.build_model(prep.model_path, prep.info)

    tracker = Tracker(cfg.wandb if world.is_main else "disabled", cfg.results_dir, run_id, cfg.to_dict())
    progress = None
    if cfg.progress and world.is_main:
        from tqdm.auto import tqdm

        progress = tqdm(total=cfg.fl.rounds, desc=f"{cfg.task}/{cfg.algorithm.name}", unit="round", leave=False)

    primary = prep.task.primary_metric

    def on_eval(row: dict) -> None:
        tracker.log(row)
        if progress is not None:
            progress.set_postfix({primary: f"{row[primary]:.4f}"})

    privacy = None
    if cfg.privacy.user_level or cfg.privacy.sample_level:  # privacy (issue 8): fednlp_bench/privacy
        from fednlp_bench.privacy.runtime import from_config as privacy_from_config

        privacy = privacy_from_config(cfg, client_sizes=[len(r) for r in client_train], n_train=len(prep.train),
                                      task=prep.task, centralized=algorithm is None, algorithm=algorithm)
    sim = Simulator(cfg, prep.task, model, prep.train, prep.test, client_train, client_test,
                    algorithm, prep.pad_id, device, world, on_eval=on_eval,
                    on_round=(lambda r: progress.update(1)) if progress is not None else None,
                    privacy=privacy)
    ckpt_dir = checkpoint_dir(cfg)
    elapsed_before = 0.0
    initial: dict = {}
    if cfg.resume:
        saved = checkpoint.load(ckpt_dir)
        if saved is None:
            log.warning("--resume: no checkpoint in %s; starting from round 1", ckpt_dir)
        else:
            sim.restore(saved["sim"])
            run_id = saved["run_id"]
            elapsed_before = float(saved["elapsed"])
            initial = saved["initial"]
            if privacy is not None:  # privacy: adaptive clip norm and per-round history
                privacy.load_state_dict(saved.get("privacy", {}))
            log.info("resumed %s after round %d", run_id, sim.state.round)
    if cfg.fl.checkpoint_every and world.is_main:
        after_round = sim.on_round

        def on_round(round: int) -> None:
            if after_round is not None:
                after_round(round)
            if round % cfg.fl.checkpoint_every == 0 and round < cfg.fl.rounds:
                checkpoint.save(ckpt_dir, {
                    "sim": sim.checkpoint_state(), "run_id": run_id, "initial": initial,
                    "elapsed": elapsed_before + time.perf_counter() - t_start,
                    "privacy": privacy.state_dict() if privacy is not None else {},
                })

        sim.on_round = on_round
    try:
        if world.is_main and sim.state.round == 0:
            initial = sim.evaluate(0)
        if algorithm is None:
            sim.run_centralized()
        else:
            sim.run_federated()
        sim.reduce_costs()
        final, per_client = sim.per_client_metrics() if world.is_main else ({}, {})
    finally:
        if progress is not None:
            progress.close()
    if not world.is_main:
        tracker.finish()
        return {}, None

    costs = sim.state.costs
    wall = elapsed_before + time.perf_counter() - t_start
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": cfg.task,
        "dataset": cfg.dataset,
        "model": cfg.model,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "partition": part_rec,
        "algorithm": {
            "name": CENTRALIZED if algorithm is None else (algorithm.name or cfg.algorithm.name),
            "hparams": {} if algorithm is None else algorithm.hparams_dict(),
            "source": cfg.algorithm.name,
        },
        "fl": {
            "rounds": cfg.fl.rounds,
            "clients_per_round": 1 if algorithm is None else cfg.fl.clients_per_round,
            "local_epochs": cfg.fl.local_epochs,
            "local_steps": cfg.fl.local_steps,
            "batch_size": cfg.fl.batch_size,
            "client_lr": cfg.fl.client_lr,
            "weight_decay": cfg.fl.weight_decay,
            # the engine's exact row-sparse client path took the word embedding (fednlp_bench/sparse_rows.py)
            "row_sparse_embeddings": sim.row_sparse is not None,
            "sampler": cfg.fl.sampler,
            "setting": "continual" if algorithm is not None and cfg.fl.continual else "static",
            "continual": sim.clients.describe() if algorithm is not None and cfg.fl.continual else None,
            "dropout": cfg.fl.dropout,
            "eval_every": cfg.fl.eval_every,
            "n_train": len(prep.train),
            "n_test": len(prep.test),
        },
        "metrics": {
            "primary": primary,
            "initial": {k: v for k, v in initial.items() if k != "round"},
            "final": final,
            "per_round": sim.state.per_round,
            "per_client": per_client,
            "failed_clients": [vars(f) for f in sim.state.failures],
            "dropped_clients": int(costs.dropped_clients),
            "resumed": elapsed_before > 0,
        },
        "cost": {
            "wall_seconds": round(wall, 3),
            "client_compute_seconds": round(costs.client_compute_seconds, 3),
            "train_seconds": round(costs.train_seconds, 3),
            "eval_seconds": round(costs.eval_seconds, 3),
            "bytes_up": int(costs.bytes_up),
            "bytes_down": int(costs.bytes_down),
            "bytes_up_per_round": int(costs.bytes_up // cfg.fl.rounds),
            "bytes_down_per_round": int(costs.bytes_down // cfg.fl.rounds),
            "train_examples": costs.train_examples,
            "train_tokens": costs.train_tokens,
            "padded_tokens": costs.padded_tokens,
            "local_steps": costs.local_steps,
            "n_params": int(sim.global_params.numel()),
            "world_size": world.size,
        },
        "provenance": provenance.collect(device),
        "config": cfg.to_dict(),
    }
    # privacy and fairness (issue 8): fednlp_bench/privacy, fednlp_bench/audit
    from fednlp_bench.audit.fairness import client_fairness

    record["metrics"]["fairness"] = client_fairness(per_client, primary)
    if privacy is not None:
        record["privacy"] = privacy.summary(sizes_at=sim.clients.sizes, centralized_steps=costs.local_steps)
    if cfg.privacy.audit:
        from fednlp_bench.audit.run_audit import lira_audit, participated, run_membership_audit

        record["audit"] = run_membership_audit(sim, cfg, centralized=algorithm is None)
        if cfg.privacy.audit_reference_models:
            record["audit"]["lira"] = lira_audit(sim, cfg, prep, participated(sim, cfg, algorithm is None),
                                                 cfg.privacy.audit_reference_models)
    if canary is not None:
        from fednlp_bench.audit.run_audit import canary_exposure

        record.setdefault("audit", {})["canary"] = canary_exposure(sim, cfg, prep, canary)
    if cfg.fairness.counterfactual:
        from fednlp_bench.audit.run_audit import counterfactual_audit

        record["metrics"]["counterfactual"] = counterfactual_audit(sim, cfg, prep)
    tracker.summary({f"final/{k}": v for k, v in final.items()})
    record["provenance"]["wandb_dir"] = tracker.run_dir
    tracker.finish()
    validate(record)
    path = atomic_write_json(Path(cfg.results_dir) / f"{run_id}.json", record)
    checkpoint.remove(ckpt_dir)  # the record is safe; the checkpoint has done its job
    return record, path


__all__ = ["run", "prepare", "make_partition", "RunError", "ConfigError"]
