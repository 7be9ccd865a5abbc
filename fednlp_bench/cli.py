"""Command line: ``fednlp-bench run|list|prepare|leaderboard|submit``.

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

from fednlp_bench import __version__


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="tc", help="task adapter: tc, st, qa, s2s (default tc)")
    p.add_argument("--preset", default=None, help="preset of the task: smoke, quick, paper")
    p.add_argument("--dataset", default=None, help="packaged name, data file/dir, or hf:<hub id>")
    p.add_argument("--model", default=None, help="minilm-l6 (packaged), a local path, or a HF hub id")
    p.add_argument("--algorithm", default=None,
                   help="fedavg, centralized, ... (see `fednlp-bench list`) or path/to/file.py:ClassName")
    p.add_argument("--partition", default=None, help="partitioner: uniform, dirichlet_label, quantity, ...")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--results-dir", default=None, help="where the result record goes (default results/)")
    p.add_argument("--wandb", default=None, choices=("offline", "online", "disabled"),
                   help="Weights & Biases mode (default offline)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set fl.rounds=5 --set partition.alpha=0.1")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _resolve(args):
    from fednlp_bench import config

    top = {
        "dataset": args.dataset, "model": args.model, "seed": args.seed, "results_dir": args.results_dir,
        "wandb": args.wandb, "device": args.device,
        "algorithm.name": args.algorithm, "partition.method": args.partition,
    }
    if args.no_progress:
        top["progress"] = False
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


def cmd_list(args) -> int:
    import partitioners
    import tasks
    from fednlp_bench import algorithms, sampling

    print("tasks:")
    for name in tasks.available():
        t = tasks.get(name)
        print(f"  {name:<8} primary={t.primary_metric:<10} datasets: {', '.join(t.datasets())}")
    print("algorithms:")
    for name, entry in sorted(algorithms.discover().items()):
        status = f"  [BROKEN: {entry.error}]" if entry.error else ""
        print(f"  {entry.name:<12} {entry.source:<24} {entry.target}{status}")
    print("partitioners:\n  " + ", ".join(partitioners.available()))
    print("samplers:\n  " + ", ".join(sampling.available()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fednlp-bench", description="Federated NLP benchmark suite.")
    parser.add_argument("--version", action="version", version=f"fednlp-bench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run one benchmark configuration")
    _add_run_args(p)
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved config only")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("prepare", help="prepare and cache a dataset (download/convert + tokenize)")
    _add_run_args(p)
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser("list", help="list tasks, algorithms (with plugin sources), partitioners, samplers")
    p.set_defaults(func=cmd_list)
    try:
        from fednlp_bench.leaderboard.cli import register
    except ImportError:
        pass
    else:
        register(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    import partitioners
    import tasks
    from fednlp_bench import algorithms, config, engine, models, record, sampling

    return (config.ConfigError, partitioners.PartitionError, tasks.DatasetError, algorithms.PluginError,
            models.ModelNotFound, sampling.SamplerError, engine.RunError, record.RecordError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        return args.func(args) or 0
    except _user_errors() as exc:
        print(f"fednlp-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fednlp-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
