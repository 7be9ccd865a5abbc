"""``fednlp-bench verify``: re-run a record's configuration and seed, compare every result.

The configuration is rebuilt from the record's own ``config`` section with
:func:`fednlp_bench.config.build` (only where results go and how progress is shown are
changed: a temporary results folder, no tracking, no progress bar, no resume) and run with
:func:`fednlp_bench.run.run`. Runs are deterministic: the same configuration and seed give
the same partition, initialisation, client sampling and batches.

What is compared: the identity of the run (task, dataset, model, preset, seed, algorithm name
and hyper-parameters, the ``fl`` section, the partition with its statistics) and every value
under ``metrics`` (final, initial, per round, per client, fairness, counterfactual probe),
``privacy`` and ``audit``. Timings (keys ending in ``seconds``) are not compared, nor are
``cost``, ``provenance``, ``run_id``, ``created``, ``config`` and ``tuning`` (a re-run does not
repeat the tuning that chose the hyper-parameters). Numbers match when
``|record - rerun| <= atol + rtol * |rerun|`` (:data:`DEFAULT_ATOL`, :data:`DEFAULT_RTOL`);
everything else must be equal.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fednlp_bench.errors import ConfigError, RecordError
from fednlp_bench.io_utils import atomic_write_json
from fednlp_bench.leaderboard.load import read_raw, record_digest, stamp_path
from fednlp_bench.record_checks import safe_text

# Measured (docs/leaderboard.md): re-running a tc smoke record on the machine that made it, with its
# thread count, reproduced all 98 compared values bit for bit; with one thread instead of two, 96
# were identical and two probe probabilities moved by 5.5e-9 and 3.4e-10 (float summation order).
# 1e-6 absolute + 1e-6 relative leaves ~180x headroom over that and stays far below one test
# example (1/n_test >= 1e-4 for any test split under 10,000 rows): an edit that changes the
# outcome of a single example, or any edit of a continuous value by more than 1e-6, is caught.
DEFAULT_ATOL = 1e-6
DEFAULT_RTOL = 1e-6
COMPARED = ("task", "dataset", "model", "preset", "seed", "partition", "fl", "metrics", "privacy", "audit")
STAMP_KIND = "fednlp-bench verification"


@dataclass
class Difference:
    where: str
    expected: Any
    actual: Any

    def __str__(self) -> str:
        return (f"{safe_text(self.where, 120)}: record {safe_text(self.expected, 60)}, "
                f"re-run {safe_text(self.actual, 60)}")


@dataclass
class VerifyResult:
    path: Path
    passed: bool
    n_compared: int
    differences: list[Difference] = field(default_factory=list)
    seconds: float = 0.0
    rerun: dict[str, Any] = field(default_factory=dict)


def _volatile(key: str) -> bool:
    return key.endswith("seconds") or key == "wandb_dir"


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Comparer:
    def __init__(self, atol: float, rtol: float) -> None:
        self.atol, self.rtol = atol, rtol
        self.n = 0
        self.diffs: list[Difference] = []

    def walk(self, a: Any, b: Any, where: str) -> None:
        if a is None and b is None:
            return  # absent on both sides (a section the run does not have)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                if _volatile(str(key)):
                    continue
                if key not in a or key not in b:
                    self.diffs.append(Difference(f"{where}.{key}", a.get(key, "<absent>"), b.get(key, "<absent>")))
                else:
                    self.walk(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                self.diffs.append(Difference(f"{where} (length)", len(a), len(b)))
            for i, (x, y) in enumerate(zip(a, b)):
                self.walk(x, y, f"{where}[{i}]")
        elif _num(a) and _num(b):
            self.n += 1
            if not math.isclose(a, b, rel_tol=self.rtol, abs_tol=self.atol):
                self.diffs.append(Difference(where, a, b))
        else:
            self.n += 1
            if a != b:
                self.diffs.append(Difference(where, a, b))


def compare(expected: dict[str, Any], actual: dict[str, Any], atol: float = DEFAULT_ATOL,
            rtol: float = DEFAULT_RTOL) -> tuple[int, list[Difference]]:
    """(number of values compared, differences) between a record and its re-run."""
    c = _Comparer(atol, rtol)
    for key in COMPARED:
        c.walk(expected.get(key), actual.get(key), key)
    alg_a, alg_b = expected["algorithm"], actual["algorithm"]
    c.walk(alg_a.get("name"), alg_b.get("name"), "algorithm.name")
    c.walk(alg_a.get("hparams"), alg_b.get("hparams"), "algorithm.hparams")
    return c.n, c.diffs


def rerun_config(record: dict[str, Any], results_dir: Path, threads: int | None = None,
                 device: str | None = None):
    """The record's configuration, rebuilt and pointed at ``results_dir``."""
    from fednlp_bench import config

    raw = {k: v for k, v in record["config"].items()}
    raw.update(results_dir=str(results_dir), wandb="disabled", progress=False, resume=False)
    if threads is not None:
        raw["threads"] = threads
    if device is not None:
        raw["device"] = device
    try:
        return config.build(raw)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"cannot rebuild the record's configuration: {safe_text(str(exc), 300)}") from None


def verify(path: Path, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL, threads: int | None = None,
           device: str | None = None, keep: Path | None = None) -> VerifyResult:
    """Re-run the record at ``path`` and compare (see the module docstring).

    ``keep``: a folder that receives the re-run's own record (to inspect a failed verification).
    """
    from fednlp_bench.run import run

    path = Path(path)
    record, reason = read_raw(path)
    if record is None:
        raise RecordError(f"{safe_text(str(path), 300)}: {reason}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fednlp-verify-") as tmp:
        cfg = rerun_config(record, Path(tmp), threads, device)
        if cfg.seed != record["seed"]:
            raise RecordError(f"{safe_text(str(path), 300)}: config.seed {cfg.seed} differs from seed {record['seed']}")
        rerun, rerun_path = run(cfg)
        if keep is not None and rerun_path is not None:
            atomic_write_json(Path(keep) / Path(rerun_path).name, rerun)
    n, diffs = compare(record, rerun, atol, rtol)
    return VerifyResult(path, not diffs, n, diffs, time.perf_counter() - start, rerun)


def write_stamp(result: VerifyResult, atol: float, rtol: float) -> Path:
    """Write the verification next to the record: its digest, the code, the date, the result."""
    record, reason = read_raw(result.path)
    if record is None:
        raise RecordError(f"{safe_text(str(result.path), 300)}: {reason}")
    prov = result.rerun.get("provenance") or {}
    stamp = {
        "kind": STAMP_KIND,
        "version": 1,
        "record": result.path.name,
        "record_sha256": record_digest(record),
        "result": "pass" if result.passed else "fail",
        "commit": prov.get("git_commit"),
        "git_dirty": prov.get("git_dirty"),
        "packages": prov.get("packages"),
        "device": prov.get("device"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tolerance": {"atol": atol, "rtol": rtol},
        "n_compared": result.n_compared,
        "differences": [str(d) for d in result.differences[:50]],
        "rerun_seconds": round(result.seconds, 1),
    }
    return atomic_write_json(stamp_path(result.path), stamp)
