"""Command line: ``fednlp-bench run|list|prepare|partition|export|leaderboard|submit|verify|table``.

Every user error (bad config value, unknown name, missing data package) ends
as one clear line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

import numpy as np

from fednlp_bench import __version__


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="tc", help="task adapter: tc, st, qa, s2s (default tc)")
    p.add_argument("--preset", default=None, help="preset of the task: smoke, quick, paper")
    p.add_argument("--dataset", default=None, help="packaged name, data file/dir, or hf:<hub id>")
    p.add_argument("--model", default=None, help="minilm-l6 (packaged), a local path, or a HF hub id")
    p.add_argument("--peft", default=None,
                   help="what is fine-tuned and sent: full (default), lora, prefix, prompt, ia3, bitfit, head")
    p.add_argument("--algorithm", default=None,
                   help="fedavg, centralized, ... (see `fednlp-bench list`) or path/to/file.py:ClassName")
    p.add_argument("--partition", default=None, help="partitioner: uniform, dirichlet_label, quantity, ...")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--results-dir", "--out", dest="results_dir", default=None,
                   help="where the result record goes (default results/)")
    p.add_argument("--wandb", default=None, choices=("offline", "online", "disabled"),
                   help="Weights & Biases mode (default offline)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set fl.rounds=5 --set partition.alpha=0.1")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--resume", action="store_true",
                   help="continue this configuration from its last checkpoint (see fl.checkpoint_every)")


def _resolve(args):
    from fednlp_bench import config

    top = {
        "dataset": args.dataset, "model": args.model, "seed": args.seed, "results_dir": args.results_dir,
        "wandb": args.wandb, "device": args.device,
        "algorithm.name": args.algorithm, "partition.method": args.partition, "model.peft": args.peft,
    }
    if args.no_progress:
        top["progress"] = False
    if getattr(args, "resume", False):
        top["resume"] = True
    return config.resolve(args.task, args.preset, args.overrides, **top)


def cmd_run(args) -> int:
    from fednlp_bench.run import run

    cfg = _resolve(args)
    if args.dry_run:
        from fednlp_bench.run import validate_up_front

        validate_up_front(cfg)
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    record, path = run(cfg)
    if path is not None:
        primary = record["metrics"]["primary"]
        final = record["metrics"]["final"]
        initial = record["metrics"].get("initial", {})
        print(f"{record['algorithm']['name']} on {record['task']}/{record['dataset']}: "
              f"{primary} {initial.get(primary, float('nan')):.4f} -> {final[primary]:.4f} "
              f"in {record['cost']['wall_seconds']:.1f}s; record: {path}")
    return 0


def cmd_prepare(args) -> int:
    from fednlp_bench.run import prepare

    cfg = _resolve(args)
    prep = prepare(cfg)
    print(f"prepared {cfg.task}/{cfg.dataset}: {len(prep.train)} train, {len(prep.test)} test rows")
    return 0


def _listing(title: str, entries: dict, describe) -> None:
    """One section of ``fednlp-bench list``: every name with its source; broken plugins say why."""
    print(f"{title}:")
    for name, entry in entries.items():
        if entry.error:
            print(f"  {entry.name:<16} {entry.source:<24} [BROKEN: {entry.error}]")
        else:
            print(f"  {entry.name:<16} {entry.source:<24} {describe(entry.name, entry)}")


def cmd_list(args) -> int:
    from fednlp_bench import algorithms, sampling, tasks
    from fednlp_bench.partitioners.registry import PARTITIONERS

    def task_line(name, entry):
        t = tasks.get(name)
        return f"primary={t.primary_metric:<10} datasets: {', '.join(t.datasets())}"

    def target(name, entry):
        return entry.target

    _listing("tasks", tasks.TASKS.discover(), task_line)
    _listing("algorithms", algorithms.discover(), target)
    _listing("partitioners", PARTITIONERS.discover(), target)
    _listing("samplers", sampling.SAMPLERS.discover(), target)
    from fednlp_bench.config import PEFT_METHODS

    print("fine-tuning (--peft / model.peft, docs/peft.md):\n  " + ", ".join(PEFT_METHODS))
    return 0


def cmd_partition(args) -> int:
    """Partition a dataset and write statistics + pictures (no training)."""
    from fednlp_bench.partitioners.stats import write_report
    from fednlp_bench.run import load_splits, make_partition

    if args.clients is not None:
        args.overrides.append(f"partition.n_clients={args.clients}")
    args.overrides.append("fl.clients_per_round=1")
    cfg = _resolve(args)
    task, dsd = load_splits(cfg)
    part = make_partition(cfg, task, dsd)
    sizes = part.sizes("train")
    print(f"{cfg.partition.method} on {cfg.task}/{cfg.dataset}: {part.n_clients} clients, "
          f"train sizes min/median/max {sizes.min()}/{int(np.median(sizes))}/{sizes.max()}")
    if args.plot:
        labels, names = _named_partition_view(cfg, task, dsd["train"])
        paths = write_report(part.train, labels, args.plot, client_names=names)
        for name, path in sorted(paths.items()):
            print(f"  {name}: {path}")
    return 0


def _named_partition_view(cfg, task, train):
    """The partition label of every train row by name (not class code) and, for ``natural``,
    the group name of every client: what the partition plots show."""
    from fednlp_bench import partitioners
    from fednlp_bench.partitioners.plots import natural_client_names

    labels = np.asarray(task.label_for_partition(train))
    names = task.info(train).get("label_names")
    if names and labels.dtype.kind in "iu":
        labels = np.asarray(names, dtype=object)[labels]
    clients = None
    if cfg.partition.method == "natural":
        natural = partitioners.make("natural", cfg.partition.n_clients, cfg.seed, **cfg.partition.params)
        clients = natural_client_names(natural.client_groups(task.groups_for_partition(train)))
    return labels, clients


def cmd_export(args) -> int:
    """Write a partition (any method) as a FedNLP partition file, and the data as a FedNLP data file."""
    from fednlp_bench.errors import ConfigError
    from fednlp_bench.partitioners.fednlp_h5 import method_key, write_partition_h5
    from fednlp_bench.run import load_splits, make_partition

    for path in filter(None, (args.partition_file, args.data_file)):
        if os.path.isdir(path):
            raise ConfigError(f"export: {path} is a directory; give a file path such as {path}/x_partition.h5")
    if args.key is not None and (not args.key.strip() or "/" in args.key):
        raise ConfigError(f"export: --key {args.key!r} must be a non-empty name without '/'")
    if args.clients is not None:
        args.overrides.append(f"partition.n_clients={args.clients}")
    # a FedNLP file holds the whole train split: runs hold out their validation rows from it later
    args.overrides += ["fl.clients_per_round=1", "data.val_fraction=0"]
    cfg = _resolve(args)
    task, dsd = load_splits(cfg)
    _refuse_subsample_without_data(cfg, task, dsd, args.data_file)
    part = make_partition(cfg, task, dsd)
    train_ids, test_ids = task.file_ids(dsd["train"]), task.file_ids(dsd["test"])
    if train_ids is None:  # not FedNLP data: FedNLP numbers train rows first, then test rows
        train_ids = np.arange(len(dsd["train"]))
        test_ids = len(dsd["train"]) + np.arange(len(dsd["test"]))
    key = args.key or method_key(part.spec)
    if args.data_file:
        from fednlp_bench.tasks.fednlp_data import write_fednlp_h5

        write_fednlp_h5(cfg.task, dsd, args.data_file, train_ids, test_ids)
        print(f"data: {len(dsd['train'])} train + {len(dsd['test'])} test rows -> {args.data_file}")
    replaced = write_partition_h5(args.partition_file, key, part, train_ids=train_ids, test_ids=test_ids)
    print(f"partition: {cfg.partition.method} ({part.n_clients} clients) -> {args.partition_file} "
          f"key {key}{' (replaced the old one)' if replaced else ''}")
    return 0


def _refuse_subsample_without_data(cfg, task, dsd, data_file) -> None:
    """A partition of subsampled rows only fits a data file of those rows."""
    from fednlp_bench.errors import ConfigError

    if data_file or (cfg.data.max_train is None and cfg.data.max_test is None):
        return
    full = task.load(cfg.dataset, split_seed=cfg.data.split_seed, test_fraction=cfg.data.test_fraction)
    if (len(full["train"]), len(full["test"])) != (len(dsd["train"]), len(dsd["test"])):
        raise ConfigError(
            f"export: data.max_train/max_test keep {len(dsd['train'])} of {len(full['train'])} train and "
            f"{len(dsd['test'])} of {len(full['test'])} test rows, so the partition fits no existing data file; "
            f"--set data.max_train=null --set data.max_test=null, or add --data-file to write those rows too"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fednlp-bench", description="Federated NLP benchmark suite.")
    parser.add_argument("--version", action="version", version=f"fednlp-bench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--debug", action="store_true",
                        help="log at DEBUG level with full tracebacks (failing clients, user errors)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run one benchmark configuration")
    _add_run_args(p)
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved config only")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("prepare", help="prepare and cache a dataset (download/convert + tokenize)")
    _add_run_args(p)
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser("partition", help="partition a dataset and write statistics and plots")
    _add_run_args(p)
    p.add_argument("--clients", type=int, default=None, help="number of clients (partition.n_clients)")
    p.add_argument("--plot", default=None, metavar="DIR",
                   help="write label bars, client x client JSD heat map, size histogram and summary.json here")
    p.set_defaults(func=cmd_partition)
    p = sub.add_parser("export", help="write a partition as a FedNLP partition file (and the data as a FedNLP data file)")
    _add_run_args(p)
    p.add_argument("--clients", type=int, default=None, help="number of clients (partition.n_clients)")
    p.add_argument("--partition-file", required=True, metavar="PATH",
                   help="FedNLP partition file to write (other keys in an existing file are kept)")
    p.add_argument("--key", default=None,
                   help="method key in the file (default FedNLP's, e.g. niid_label_clients=10_alpha=0.5)")
    p.add_argument("--data-file", default=None, metavar="PATH",
                   help="also write the rows as a FedNLP data file (X/<id>, Y/<id>, attributes)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("list", help="list tasks, algorithms (with plugin sources), partitioners, samplers")
    p.set_defaults(func=cmd_list)
    from fednlp_bench.suite_cli import register as register_tracks

    register_tracks(sub)  # tune, suite
    try:
        from fednlp_bench.leaderboard.cli import register
    except ImportError:
        pass
    else:
        register(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from fednlp_bench.errors import UserError

    return (UserError,)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("fednlp_bench").setLevel(level)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
    try:
        return args.func(args) or 0
    except _user_errors() as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"fednlp-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fednlp-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
