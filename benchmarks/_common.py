"""Shared set-up for the benchmark scripts: a Simulator built exactly as `fednlp-bench run` builds it."""
from __future__ import annotations

import os
import platform

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build(cfg, simulator_cls=None):
    """(simulator, prepared data, partition) for a resolved config; no record, no tracker."""
    from fednlp_bench import algorithms
    from fednlp_bench.engine import Simulator, World, pick_device
    from fednlp_bench.run import make_partition, prepare

    simulator_cls = simulator_cls or Simulator
    prep = prepare(cfg)
    part = make_partition(cfg, prep.task, prep.dsd)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = prep.task.build_model(prep.model_path, prep.info)
    alg = algorithms.get(cfg.algorithm.name).from_params(cfg.algorithm.params)
    sim = simulator_cls(cfg, prep.task, model, prep.train, prep.test, part.train, part.test, alg,
                        prep.pad_id, pick_device(cfg.device), World.current())
    return sim, prep, part


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
