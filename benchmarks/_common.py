"""Shared set-up for the benchmark scripts: a Simulator built exactly as `fednlp-bench run` builds it."""
from __future__ import annotations

import os
import platform

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build(cfg):
    """(simulator, prepared data, partition) for a resolved config; no record, no tracker."""
    from fednlp_bench import algorithms
    from fednlp_bench.run import build_model, fl_trainer, make_partition, prepare
    from fednlp_bench.world import World, pick_device

    prep = prepare(cfg)
    part = make_partition(cfg, prep.task, prep.dsd)
    alg = algorithms.get(cfg.algorithm.name).from_params(cfg.algorithm.params)
    sim = fl_trainer(cfg, prep.task, build_model(cfg, prep), prep.train, prep.val, part.train, part.test, alg,
                     pad_id=prep.pad_id, device=pick_device(cfg.device), world=World.current(), val_split="val")
    return sim, prep, part


def record_batches(sim) -> dict:
    """Make ``sim`` record the row batches each (round, client) trains on; returns the dict it fills.

    The engine is unchanged: its local-training object is wrapped, not subclassed.
    """
    import numpy as np

    local, seen, current = sim.local, {}, {}
    context, batches = local.context, local.batches

    def record_context(client, round, *args, **kwargs):
        current["key"] = (round, client)
        return context(client, round, *args, **kwargs)

    def record_batches_of(row_batches):
        key = current["key"]

        def tap():
            for rows in row_batches:
                seen.setdefault(key, []).append(np.asarray(rows).copy())
                yield rows

        return batches(tap())

    local.context, local.batches = record_context, record_batches_of
    return seen


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
