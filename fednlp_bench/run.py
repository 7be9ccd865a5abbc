"""One benchmark run, end to end: data -> partition -> features -> trainer + callbacks -> record.

The data flow is one-directional: the task adapter loads and caches the dataset, the
partitioner splits row indices, the adapter tokenizes once (cached), a trainer (the FL
:class:`~fednlp_bench.engine.Simulator` or the :class:`~fednlp_bench.centralized.CentralizedTrainer`)
trains with its callbacks around it, and :func:`fednlp_bench.record.build_record` merges every
component's sections into the result record, written atomically. This module only wires
components together; each lives in its own module (docs/architecture.md).
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fednlp_bench import algorithms, checkpoint, partitioners, peft_methods, provenance, sampling, tasks
from fednlp_bench.audit import capabilities
from fednlp_bench.aggregation import make_aggregator
from fednlp_bench.algorithms import CENTRALIZED
from fednlp_bench.algorithms.base import read_only
from fednlp_bench.audit.callbacks import (
    CanaryAudit,
    CanaryInversion,
    ClientFairness,
    CounterfactualAugmentation,
    CounterfactualProbe,
    IntrinsicBias,
    MembershipAudit,
    PredictionSensitivity,
    RunEndAudit,
)
from fednlp_bench.audit.view import FinishedRun
from fednlp_bench.batching import TokenizedData
from fednlp_bench.callbacks import (
    CallbackList,
    CostReduction,
    EvaluationSchedule,
    FinalEvaluation,
    ProgressBar,
    Tracking,
)
from fednlp_bench.centralized import CentralizedTrainer, centralized_plan, fl_examples
from fednlp_bench.client_data import client_data
from fednlp_bench.config import ConfigError, RunConfig, stable_config
from fednlp_bench.engine import EngineConfig, RunError, Simulator
from fednlp_bench.evaluation import Evaluator
from fednlp_bench.io_utils import atomic_write_json
from fednlp_bench.local import LocalTraining
from fednlp_bench.models import load_tokenizer, resolve_model
from fednlp_bench.optim import OptimizerSpec
from fednlp_bench.partitioners.cache import load_or_split
from fednlp_bench.paths import cache_dir
from fednlp_bench.postprocess import algorithm_chain
from fednlp_bench.record import build_record
from fednlp_bench.state import TrainState
from fednlp_bench.tasks.base import fingerprint
from fednlp_bench.tracking import Tracker
from fednlp_bench.world import World, pick_device

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data
@dataclass
class Prepared:
    task: Any
    dsd: Any  # DatasetDict with train, validation (possibly empty) and test
    train: TokenizedData
    test: TokenizedData
    info: dict
    pad_id: int
    model_path: str
    tokenizer: Any = None
    val: TokenizedData | None = None  # None: no validation split (data.val_fraction = 0)


def _subsample_rows(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Sorted positions of a seeded subsample of ``limit`` of ``n`` rows (all rows without a limit)."""
    if limit is None or limit >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, limit]).choice(n, size=limit, replace=False))


def prepare(cfg: RunConfig) -> Prepared:
    """Load (cached), subsample and tokenize (cached) the run's dataset."""
    task, dsd = load_splits(cfg)
    model_path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(cfg.model.name)
    d = cfg.data
    key = f"{cfg.dataset}-{d.split_seed}-{d.test_fraction}-val{d.val_fraction}-{d.max_val}"
    train = task.featurize(dsd["train"], tokenizer, d.max_len, key + f"-train-{d.max_train}")
    test = task.featurize(dsd["test"], tokenizer, d.max_len, key + f"-test-{d.max_test}")
    val = task.featurize(dsd["validation"], tokenizer, d.max_len, key + "-val") if len(dsd["validation"]) else None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Prepared(task, dsd, train, test, task.info(dsd["train"]), pad_id, model_path, tokenizer, val)


def load_splits(cfg: RunConfig):
    """The task adapter and its (cached, subsampled) ``DatasetDict``: train, validation, test.

    The validation rows are held out of the whole train split first (stratified, seeded by
    ``data.split_seed``, so every run seed and every algorithm sees the same ones); ``data.max_train``
    then subsamples what is left.
    """
    from datasets import DatasetDict

    task = tasks.get(cfg.task)
    d = cfg.data
    full = task.load(cfg.dataset, split_seed=d.split_seed, test_fraction=d.test_fraction)
    rows = split_rows(task, full, d)
    dsd = DatasetDict({name: full[source] if len(rows[name]) == len(full[source])
                       # flatten so that Arrow column reads (ds.data) see only the selected rows
                       else full[source].select(rows[name]).flatten_indices()
                       for name, source in (("train", "train"), ("validation", "train"), ("test", "test"))})
    if cfg.dataset not in task.packaged:  # a user's data: state what the run leaves out
        _state_subsample(cfg, full, dsd)
    return task, dsd


def split_rows(task: Any, full: Any, d: Any) -> dict[str, np.ndarray]:
    """Positions, in the loaded ``full["train"]`` / ``full["test"]``, of a run's train, validation and
    test rows: validation held out of the whole train split, then ``data.max_train`` / ``max_test``."""
    n_train, n_test = len(full["train"]), len(full["test"])
    val = task.validation_rows(full["train"], d.val_fraction, d.split_seed, d.max_val)
    rest = np.setdiff1d(np.arange(n_train, dtype=np.int64), val)
    return {"train": rest[_subsample_rows(len(rest), d.max_train, d.split_seed)], "validation": val,
            "test": _subsample_rows(n_test, d.max_test, d.split_seed + 1)}


def _state_subsample(cfg: RunConfig, full: Any, dsd: Any) -> None:
    """Warn (stderr) when a user's file is cut by ``data.max_train`` / ``max_test`` (presets set them)."""
    d, n_val = cfg.data, len(dsd["validation"])
    kept = len(dsd["train"]) + n_val, len(dsd["test"])
    if kept == (len(full["train"]), len(full["test"])):
        return
    log.warning("%s: using %d of %d train rows (%d of them held out for validation) and %d of %d test rows "
                "(data.max_train=%s, data.max_test=%s%s); --set data.max_train=null --set data.max_test=null "
                "uses all", cfg.dataset, kept[0], len(full["train"]), n_val, kept[1], len(full["test"]),
                d.max_train, d.max_test, f" from --preset {cfg.preset}" if cfg.preset else "")


def _fednlp_partition(cfg: RunConfig, task: Any, p: Any, dsd: Any) -> partitioners.Partition:
    """A FedNLP partition file's clients over the run's rows: by ``X/<id>`` for a FedNLP data file,
    otherwise by position in the data as loaded (validation and subsampled rows leave their clients)."""
    train_ids, test_ids = task.file_ids(dsd["train"]), task.file_ids(dsd["test"])
    if train_ids is not None:
        return p.for_dataset(cfg.dataset, train_ids, test_ids)
    full = task.load(cfg.dataset, split_seed=cfg.data.split_seed, test_fraction=cfg.data.test_fraction)
    rows = split_rows(task, full, cfg.data)
    return p.for_positions(rows["train"], rows["test"], len(full["train"]), len(full["test"]))


def make_partition(cfg: RunConfig, task, dsd) -> partitioners.Partition:
    """Split train and test rows into clients with the configured partitioner (cached by spec)."""
    p = partitioners.make(cfg.partition.method, n_clients=cfg.partition.n_clients, seed=cfg.seed,
                          **cfg.partition.params)
    needs = set(getattr(p, "requires", ()))
    train_ds, test_ds = dsd["train"], dsd["test"]
    if cfg.partition.method == "fednlp":  # a FedNLP partition file: rows matched by data-file id (fednlp_file.py)
        return _fednlp_partition(cfg, task, p, dsd)
    kwargs: dict[str, Any] = {
        "train_labels": task.label_for_partition(train_ds),
        "test_labels": task.label_for_partition(test_ds),
    }
    if "groups" in needs:
        kwargs["train_groups"] = task.groups_for_partition(train_ds)
        kwargs["test_groups"] = task.groups_for_partition(test_ds)
        if kwargs["train_groups"] is None:
            raise ConfigError(f"partition 'natural' needs a group column; dataset '{cfg.dataset}' has none "
                              f"(add a 'group' column/key to every row, or choose another partition method)")
    if "features" in needs:
        from fednlp_bench.partitioners.embeddings import sentence_embeddings

        emb_dir = cache_dir() / "embeddings"
        model_dir = resolve_model("minilm-l6")
        kwargs["train_features"] = sentence_embeddings(task.texts_for_embedding(train_ds), model_dir, emb_dir)
        kwargs["test_features"] = sentence_embeddings(task.texts_for_embedding(test_ds), model_dir, emb_dir)
    return load_or_split(p, cache_dir() / "partitions", key_extra=f"{cfg.task}/{cfg.dataset}", **kwargs)


def partition_stats(task, train_ds, parts: list[np.ndarray]) -> dict[str, Any]:
    """Label counts per client (for heatmaps), sizes and the mean JS divergence to the prior."""
    from fednlp_bench.partitioners.stats import mean_js_divergence

    labels = np.asarray(task.label_for_partition(train_ds))
    names, codes = np.unique(labels, return_inverse=True)
    info = task.info(train_ds)
    label_names = info.get("label_names")
    if label_names is None or len(label_names) != len(names):
        label_names = [str(n) for n in names]
    counts = [np.bincount(codes[rows], minlength=len(names)).tolist() for rows in parts]
    return {"label_names": label_names, "label_counts": counts, "sizes": [int(len(r)) for r in parts],
            "mean_js": float(mean_js_divergence(parts, labels))}


@dataclass
class RunData:
    """Who trains on what: per-client train/test rows and the record's ``partition`` section;
    for the centralized reference, the FL budget it matches (``budget``)."""

    client_train: list[np.ndarray]
    client_test: list[np.ndarray]
    partition: dict[str, Any]
    budget: dict[str, Any] | None = None


def centralized_data(cfg: RunConfig, prep: Prepared) -> RunData:
    """One client holding every row, trained for as many examples as the configured FL run."""
    fl = cfg.fl
    part = make_partition(cfg, prep.task, prep.dsd)
    schedule = sampling.CohortSchedule(fl.sampler, min(fl.clients_per_round, len(part.train)), cfg.seed, fl.dropout)
    examples = fl_examples(client_data(fl, part.train, cfg.seed).sizes, schedule, fl.rounds, fl.local_epochs,
                           fl.local_steps, fl.batch_size)
    budget = {"examples": round(examples, 3), "steps": sum(centralized_plan(examples, fl.batch_size, fl.rounds)),
              "basis": f"examples the FL run trains on: partition {cfg.partition.method} "
                       f"({len(part.train)} clients), sampler {fl.sampler}, dropout {fl.dropout:g}"}
    return RunData([np.arange(len(prep.train))], [], {"method": "none", "n_clients": 1, "params": {}}, budget)


def assemble_data(cfg: RunConfig, prep: Prepared, centralized: bool) -> RunData:
    """The centralized pool (one client holding every row) or the configured partition."""
    if centralized:
        return centralized_data(cfg, prep)
    part = make_partition(cfg, prep.task, prep.dsd)
    if cfg.fl.clients_per_round > len(part.train):
        raise ConfigError(f"fl.clients_per_round ({cfg.fl.clients_per_round}) exceeds the {len(part.train)} "
                          f"clients the partition produced")
    return RunData(part.train, part.test, {
        "method": cfg.partition.method, "n_clients": len(part.train), "params": part.spec.get("params", {}),
        "stats": partition_stats(prep.task, prep.dsd["train"], part.train)})


# --------------------------------------------------------------------------- names and places
def checkpoint_dir(cfg: RunConfig) -> Path:
    """Where this configuration's checkpoint lives: keyed by everything that affects results."""
    name = f"{cfg.task}-{cfg.algorithm.name.replace('/', '_')}-{fingerprint(stable_config(cfg.to_dict()))}"
    return Path(cfg.results_dir) / "checkpoints" / name


def new_run_id(cfg: RunConfig) -> str:
    now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    alg = Path(cfg.algorithm.name.split(":")[-1]).stem if ":" in cfg.algorithm.name else cfg.algorithm.name
    return f"{now}-{cfg.task}-{alg}-{uuid.uuid4().hex[:8]}"


def is_centralized(cfg: RunConfig) -> bool:
    return cfg.algorithm.name == CENTRALIZED


def resolve_algorithm(cfg: RunConfig) -> algorithms.Algorithm | None:
    """The FL algorithm with its hyper-parameters; ``None`` for the centralized reference."""
    if is_centralized(cfg):
        if cfg.algorithm.params:
            raise ConfigError(f"algorithm 'centralized' takes no hyper-parameters, got {sorted(cfg.algorithm.params)}")
        return None
    return algorithms.get(cfg.algorithm.name).from_params(cfg.algorithm.params)


def validate_up_front(cfg: RunConfig) -> algorithms.Algorithm | None:
    """Checks that need registries, before any data is prepared or a file written."""
    tasks.get(cfg.task)
    capabilities.require(cfg)  # audits and probes the options ask for vs the capabilities the task declares
    sampling.get(cfg.fl.sampler)
    alg = resolve_algorithm(cfg)
    partitioners.make(cfg.partition.method, n_clients=cfg.partition.n_clients, seed=cfg.seed, **cfg.partition.params)
    make_aggregator(cfg.fl.aggregator, cfg.fl.trim_fraction)
    peft_methods.check_up_front(cfg.model, resolve_model(cfg.model.name))  # PEFT target names
    check_combination(cfg, alg)
    return alg


def check_combination(cfg: RunConfig, alg: algorithms.Algorithm | None) -> None:
    """Combinations a component declares it cannot support, refused before anything runs."""
    name = cfg.algorithm.name if alg is None else alg.name or cfg.algorithm.name
    if alg is not None and cfg.privacy.user_level and (alg.client_extras or alg.extra_broadcast_vectors):
        sent = ", ".join(alg.client_extras) or "extra broadcast vectors"
        raise ConfigError(f"privacy.user_level: algorithm '{name}' exchanges {sent} besides the model delta, which "
                          f"DP-FedAvg does not privatise; use fedavg, fedprox or a FedOpt variant")
    if cfg.privacy.user_level and cfg.fl.aggregator != "mean":
        raise ConfigError(f"privacy.user_level needs fl.aggregator=mean (the noise calibration assumes a sum of "
                          f"clipped updates), got {cfg.fl.aggregator!r}")
    if cfg.fl.client_momentum and cfg.fl.client_optimizer != "sgd":
        raise ConfigError(f"fl.client_momentum applies to fl.client_optimizer=sgd, not "
                          f"{cfg.fl.client_optimizer!r}")


# --------------------------------------------------------------------------- the run's components
@dataclass
class Parts:
    """Everything a run is made of, wired by :func:`build`; the checkpoint tree is their states."""

    cfg: RunConfig
    prep: Prepared
    data: RunData
    world: World
    device: torch.device
    algorithm: algorithms.Algorithm | None
    privacy: Any
    trainer: Simulator | CentralizedTrainer
    evaluation: EvaluationSchedule
    final: FinalEvaluation
    callbacks: CallbackList
    run_id: str
    tracker: Tracker
    progress: ProgressBar | None = None
    canary: RunEndAudit | None = None  # CanaryAudit (exposure) or CanaryInversion, inserted before training
    cda: CounterfactualAugmentation | None = None
    elapsed_before: float = 0.0
    t_start: float = field(default_factory=time.perf_counter)

    def state_dict(self) -> dict[str, Any]:
        return {"trainer": self.trainer.state_dict(), "callbacks": self.callbacks.state_dict(),
                "privacy": self.privacy.state_dict() if self.privacy is not None else {},
                "run": {"run_id": self.run_id, "elapsed": self.elapsed_before + time.perf_counter() - self.t_start}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state["trainer"])
        self.callbacks.load_state_dict(state["callbacks"])
        if self.privacy is not None:
            self.privacy.load_state_dict(state.get("privacy", {}))
        self.run_id, self.elapsed_before = state["run"]["run_id"], float(state["run"]["elapsed"])

    def finished(self, trainer: Any) -> FinishedRun:
        """The read-only view audits get of the finished run."""
        n = len(self.data.client_train)
        participation = np.ones(n, np.int64) if self.algorithm is None else trainer.state.participation(n)
        return FinishedRun(self.cfg, self.prep.task, self.prep.tokenizer, self.prep, trainer.local.model,
                           trainer.local.train_data, self.prep.test, self.data.client_train, self.data.client_test,
                           participation, self.algorithm is None, self.prep.pad_id, self.device,
                           lambda: trainer.local.params.copy_(trainer.global_params),
                           train_examples=int(trainer.state.costs.train_examples))


def build_model(cfg: RunConfig, prep: Prepared) -> torch.nn.Module:
    """The task's model with ``model.peft`` applied: its trainable parameters are what FL trains and sends."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # deterministic head (and adapter) initialisation
        model = peft_methods.build_model(prep.task, prep.model_path, prep.info, cfg.model)
    if cfg.privacy.model_dropout is not None:  # the dropout defence against canary extraction
        from fednlp_bench.audit.inversion_audit import set_model_dropout

        set_model_dropout(model, cfg.privacy.model_dropout)
    return model


def build_privacy(cfg: RunConfig, prep: Prepared, data: RunData, algorithm) -> Any:
    if not (cfg.privacy.user_level or cfg.privacy.sample_level):
        return None
    from fednlp_bench.privacy.runtime import from_config

    return from_config(cfg, client_sizes=[len(r) for r in data.client_train], n_train=len(prep.train),
                       task=prep.task, centralized=algorithm is None, algorithm=algorithm)


def local_training(cfg: RunConfig, task: Any, model: torch.nn.Module, train: TokenizedData, *, pad_id: int,
                   device: torch.device, privacy: Any = None) -> LocalTraining:
    """The worker's model, flat buffers, client optimiser and local schedule for ``cfg``."""
    fl = cfg.fl
    dp_loop = privacy.context_factory() if privacy is not None else None
    dp_batches = privacy.batcher() if privacy is not None else None  # DP-SGD: Poisson-sampled batches
    spec = OptimizerSpec(fl.client_optimizer, fl.client_lr, fl.weight_decay, fl.client_momentum)
    return LocalTraining(model, task, train, pad_id=pad_id, device=device, batch_size=fl.batch_size,
                         state=TrainState(), optimizer=spec, **({"make_context": dp_loop} if dp_loop else {}),
                         **({"batcher": dp_batches} if dp_batches else {}))


def fl_trainer(cfg: RunConfig, task: Any, model: torch.nn.Module, train: TokenizedData, val: TokenizedData | None,
               client_train: list[np.ndarray], client_test: list[np.ndarray], algorithm: algorithms.Algorithm, *,
               pad_id: int = 0, device: torch.device | None = None, world: World | None = None,
               privacy: Any = None, val_split: str | None = None) -> Simulator:
    """A :class:`Simulator` for ``cfg`` over prepared data, evaluating on ``val`` every ``fl.eval_every``
    rounds (what :func:`run` builds, minus tracking, checkpoints and audits; tests use it directly).
    ``val_split`` labels the per-round rows ("val" in a real run)."""
    device = device or torch.device("cpu")
    world = world or World()
    algorithm.config = read_only(cfg.to_dict())
    local = local_training(cfg, task, model, train, pad_id=pad_id, device=device, privacy=privacy)
    chain = algorithm_chain(algorithm, privacy.postprocessors() if privacy is not None else [])
    sim = Simulator(EngineConfig.from_run_config(cfg), local, client_data(cfg.fl, client_train, cfg.seed),
                    algorithm, world=world, postprocessors=chain, algorithm_spec=cfg.algorithm.name,
                    aggregator=make_aggregator(cfg.fl.aggregator, cfg.fl.trim_fraction))
    sim.callbacks.append(evaluation_schedule(cfg, task, local, sim.global_params, val, sim.state, world, val_split))
    sim.client_test = client_test
    return sim


def evaluation_schedule(cfg: RunConfig, task: Any, local: LocalTraining, global_params: torch.Tensor,
                        val: TokenizedData | None, state: TrainState, world: World,
                        split: str | None = "val") -> EvaluationSchedule:
    """Per-round evaluation on the validation split (none without one)."""
    evaluator = None if val is None else Evaluator(
        task, local.model, local.params, global_params, val, batch_size=cfg.fl.eval_batch_size,
        pad_id=local.pad_id, device=local.device, state=state, split=split)
    return EvaluationSchedule(evaluator, cfg.fl.eval_every, cfg.fl.rounds, world.is_main, task.primary_metric,
                              getattr(task, "higher_is_better", True), cfg.fl.best_val_test)


def build_trainer(cfg: RunConfig, prep: Prepared, data: RunData, algorithm, privacy, world: World,
                  device: torch.device) -> Simulator | CentralizedTrainer:
    """The FL simulator, or the centralized trainer, over one model and the run's data."""
    model = build_model(cfg, prep)
    if algorithm is not None:
        return fl_trainer(cfg, prep.task, model, prep.train, prep.val, data.client_train, data.client_test,
                          algorithm, pad_id=prep.pad_id, device=device, world=world, privacy=privacy, val_split="val")
    local = local_training(cfg, prep.task, model, prep.train, pad_id=prep.pad_id, device=device, privacy=privacy)
    plan = centralized_plan(data.budget["examples"], cfg.fl.batch_size, cfg.fl.rounds)
    trainer = CentralizedTrainer(local, plan, seed=cfg.seed)
    trainer.callbacks.append(evaluation_schedule(cfg, prep.task, local, trainer.global_params, prep.val,
                                                 trainer.state, world))
    return trainer


def build_callbacks(parts: Parts) -> None:
    """The callbacks around training, in the order they run; audits only on the main rank."""
    cfg, cb = parts.cfg, parts.callbacks
    parts.trainer.callbacks = cb
    cb.append(CostReduction(parts.world, parts.device))
    cb.append(parts.evaluation)
    if parts.progress is not None:
        cb.append(parts.progress)
    cb.append(Tracking(parts.tracker))
    if cfg.fl.checkpoint_every and parts.world.is_main:
        cb.append(checkpoint.Checkpointing(checkpoint_dir(cfg), cfg.fl.checkpoint_every, cfg.fl.rounds,
                                           parts.state_dict))
    if not parts.world.is_main:
        return
    cb.append(parts.final)
    cb.append(ClientFairness(parts.final, parts.prep.task.primary_metric))
    if parts.cda is not None:
        cb.append(parts.cda)
    if cfg.privacy.audit:
        cb.append(MembershipAudit(parts.finished, cfg.privacy.audit_reference_models))
    if parts.canary is not None:
        parts.canary.finished = parts.finished
        cb.append(parts.canary)
    if cfg.fairness.counterfactual:
        cb.append(CounterfactualProbe(parts.finished))
    if cfg.fairness.sensitivity:
        cb.append(PredictionSensitivity(parts.finished))
    if cfg.fairness.intrinsic:
        cb.append(IntrinsicBias(parts.finished))


def build(cfg: RunConfig, algorithm, world: World, device: torch.device) -> Parts:
    """Prepare the data and wire the run's components (nothing trains yet)."""
    prep = prepare(cfg)
    data = assemble_data(cfg, prep, algorithm is None)
    cda = None
    if cfg.fairness.cda:  # fairness mitigation: each client adds gender-swapped copies of its own rows
        cda = CounterfactualAugmentation()
        cda.apply(prep, data.client_train, cfg.data.max_len)
    canary = None
    if cfg.privacy.canaries:  # privacy audit: secret-carrying canaries in one client's data
        # measured at run end on the view build_callbacks hands it
        canary = CanaryInversion(finished=None) if cfg.privacy.canary_attack == "invert" else CanaryAudit(None)
        plan = None if algorithm is None else sampling.CohortSchedule(
            cfg.fl.sampler, cfg.fl.clients_per_round, cfg.seed).plan(cfg.fl.rounds, np.array(
                [len(c) for c in data.client_train]))
        canary.insert(cfg, prep, data.client_train, plan)
    privacy = build_privacy(cfg, prep, data, algorithm)
    trainer = build_trainer(cfg, prep, data, algorithm, privacy, world, device)
    evaluation = next(c for c in trainer.callbacks if isinstance(c, EvaluationSchedule))
    local = trainer.local
    tester = Evaluator(prep.task, local.model, local.params, trainer.global_params, prep.test,
                       batch_size=cfg.fl.eval_batch_size, pad_id=prep.pad_id, device=device, state=trainer.state)
    run_id = new_run_id(cfg)
    progress = ProgressBar(cfg.fl.rounds, f"{cfg.task}/{cfg.algorithm.name}", prep.task.primary_metric) \
        if cfg.progress and world.is_main else None
    parts = Parts(cfg, prep, data, world, device, algorithm, privacy, trainer, evaluation,
                  FinalEvaluation(tester, data.client_test, evaluation), CallbackList(), run_id,
                  Tracker(cfg.wandb if world.is_main else "disabled", cfg.results_dir, run_id, cfg.to_dict()),
                  progress=progress, canary=canary, cda=cda)
    build_callbacks(parts)
    return parts


def resume(parts: Parts) -> None:
    saved = checkpoint.load(checkpoint_dir(parts.cfg))
    if saved is None:
        log.warning("--resume: no checkpoint in %s; starting from round 1", checkpoint_dir(parts.cfg))
        return
    parts.load_state_dict(saved)
    log.info("resumed %s after round %d", parts.run_id, parts.trainer.state.round)


# --------------------------------------------------------------------------- the record
def training_sections(parts: Parts, wall: float) -> dict[tuple[str, ...], Any]:
    """The record sections the trainer and the evaluation callbacks own."""
    cfg, prep, trainer, algorithm = parts.cfg, parts.prep, parts.trainer, parts.algorithm
    fl, costs, state = cfg.fl, trainer.state.costs, trainer.state
    federated = algorithm is not None
    return {
        ("partition",): parts.data.partition,
        ("algorithm",): {"name": algorithm.name or cfg.algorithm.name if federated else CENTRALIZED,
                         "hparams": algorithm.hparams_dict() if federated else {}, "source": cfg.algorithm.name,
                         **({"deviations": deviations(cfg, algorithm)} if federated and deviations(cfg, algorithm)
                            else {})},
        ("fl",): {
            "rounds": fl.rounds, "clients_per_round": fl.clients_per_round if federated else 1,
            "local_epochs": fl.local_epochs, "local_steps": fl.local_steps, "batch_size": fl.batch_size,
            "client_lr": fl.client_lr, "weight_decay": fl.weight_decay, "client_optimizer": fl.client_optimizer,
            "client_momentum": fl.client_momentum, "aggregator": fl.aggregator,
            # the engine's exact row-sparse client path took the word embedding (fednlp_bench/sparse_rows.py)
            "row_sparse_embeddings": federated and trainer.row_sparse is not None,
            "sampler": fl.sampler, "setting": "continual" if federated and fl.continual else "static",
            "continual": trainer.clients.describe() if federated and fl.continual else None,
            "dropout": fl.dropout, "eval_every": fl.eval_every, "n_train": len(prep.train), "n_test": len(prep.test),
            "n_val": len(prep.val) if prep.val is not None else 0,
            **({"centralized_budget": parts.data.budget} if not federated else {})},
        ("metrics",): {
            "primary": prep.task.primary_metric,
            # round 0, evaluated where every round is (validation when there is one)
            "initial": {k: v for k, v in parts.evaluation.initial.items() if k not in ("round", "split")},
            "initial_split": parts.evaluation.initial.get("split", "test"),
            "final": parts.final.final, "final_split": "test", "per_round": state.per_round,
            "per_client": parts.final.per_client,
            **({"best_val": parts.final.best_val} if parts.final.best_val is not None else {}),
            "failed_clients": [vars(f) for f in state.failures], "dropped_clients": int(costs.dropped_clients),
            "resumed": parts.elapsed_before > 0},
        ("cost",): {
            "wall_seconds": round(wall, 3), "client_compute_seconds": round(costs.client_compute_seconds, 3),
            "train_seconds": round(costs.train_seconds, 3), "eval_seconds": round(costs.eval_seconds, 3),
            "bytes_up": int(costs.bytes_up), "bytes_down": int(costs.bytes_down),
            "bytes_up_per_round": int(costs.bytes_up // fl.rounds),
            "bytes_down_per_round": int(costs.bytes_down // fl.rounds),
            "train_examples": costs.train_examples, "train_tokens": costs.train_tokens,
            "padded_tokens": costs.padded_tokens, "local_steps": costs.local_steps,
            "n_params": int(trainer.global_params.numel()),  # trainable: what is communicated
            "n_params_total": sum(p.numel() for p in trainer.local.model.parameters()),
            "world_size": parts.world.size},
        ("peft",): peft_methods.record_section(cfg.model),
    }


def algorithm_identity(cfg: RunConfig) -> dict[str, Any]:
    """Which code the algorithm came from: built-in, an installed package's version, or a file's hash."""
    if is_centralized(cfg):
        return {"source": "builtin"}
    return algorithms.ALGORITHMS.identity(cfg.algorithm.name)


def deviations(cfg: RunConfig, algorithm: algorithms.Algorithm) -> list[str]:
    """Where this run departs from the algorithm's paper (shown on the leaderboard)."""
    out = []
    paper = algorithm.paper_client_optimizer
    if paper and paper != cfg.fl.client_optimizer:
        out.append(f"clients use {cfg.fl.client_optimizer}; the paper's analysis assumes {paper} "
                   f"(run it with --set fl.client_optimizer={paper})")
    return out


def write_record(parts: Parts, extra: dict[tuple[str, ...], Any] | None = None) -> tuple[dict, Path]:
    """Merge every component's sections (then ``extra``, e.g. a track's ``track``/``tuning``) into the record."""
    cfg, trainer = parts.cfg, parts.trainer
    wall = parts.elapsed_before + time.perf_counter() - parts.t_start
    sections = [training_sections(parts, wall),
                {("provenance",): {**provenance.collect(parts.device), "wandb_dir": parts.tracker.run_dir,
                                   "plugin": algorithm_identity(cfg)}},
                {("config",): cfg.to_dict()}]
    if parts.privacy is not None:
        sizes_at = trainer.clients.sizes if parts.algorithm is not None else None
        sections.append({("privacy",): parts.privacy.summary(trainer.state.cohorts, sizes_at,
                                                             trainer.state.costs.local_steps)})
    sections += [c.sections for c in parts.callbacks if hasattr(c, "sections")] + [extra or {}]
    parts.tracker.summary({f"final/{k}": v for k, v in parts.final.final.items()})
    header = {"run_id": parts.run_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "task": cfg.task, "dataset": cfg.dataset, "model": cfg.model.name, "preset": cfg.preset, "seed": cfg.seed}
    record = build_record(header, sections)
    return record, atomic_write_json(Path(cfg.results_dir) / f"{parts.run_id}.json", record)


# --------------------------------------------------------------------------- run
def run(cfg: RunConfig, extra: dict[tuple[str, ...], Any] | None = None) -> tuple[dict, Path | None]:
    """Run one configuration and write its result record. Returns (record, path).

    ``extra`` adds record sections the configuration does not hold (the suite runner's ``track``
    and ``tuning``: fednlp_bench/suite.py)."""
    t_start = time.perf_counter()
    algorithm = validate_up_front(cfg)
    world = World.init_from_env()
    device = pick_device(cfg.device)
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // world.size))
    parts = build(cfg, algorithm, world, device)
    parts.t_start = t_start
    if cfg.resume:
        resume(parts)
    try:
        if algorithm is None:
            parts.trainer.run()
        else:
            parts.trainer.run_federated()
    finally:
        if parts.progress is not None:
            parts.progress.close()
    if not world.is_main:
        parts.tracker.finish()
        return {}, None
    record, path = write_record(parts, extra)
    parts.tracker.finish()
    checkpoint.remove(checkpoint_dir(cfg))  # the record is safe; the checkpoint has done its job
    return record, path


__all__ = ["run", "prepare", "make_partition", "RunError", "ConfigError"]
