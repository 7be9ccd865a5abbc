"""Tuning on validation: a grid over an algorithm's declared search space, scored on the validation split only.

The protocol (``protocol: 1`` in a track's ``tuning`` section), after Reddi et al. 2021 (tune the
server-side hyper-parameters per task on held-out data) with the client learning rate fixed by
the track and shared by every algorithm:

* the grid is the product of the ``search`` values an algorithm declares on its ``HParams`` fields
  (:meth:`~fednlp_bench.algorithms.Algorithm.search_space`); the centralized reference is tuned
  over the track's ``tuning.centralized_client_lr`` grid when the track gives one;
* each candidate trains on the track's tuning partition with each tuning seed (seeds disjoint
  from the reported ones, so the reported runs are not the runs the choice was made on);
* its score is the validation primary metric of the final global model, averaged over the
  tuning seeds; the best mean wins, ties going to the earlier candidate in grid order;
* the test split is never scored: a candidate runs the trainer and its per-round validation
  schedule only, no final evaluation (``tests/test_tracks.py`` poisons the test labels to show it).

The result is a tuned-parameters file, ``<track folder>/tuned/<track>/<algorithm>.json``, written
atomically with the space, the choice and every validation score; :func:`read_tuned` validates
it like a config (one line, naming the file, on any problem) before a final run uses it.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from fednlp_bench import algorithms, provenance
from fednlp_bench.algorithms import CENTRALIZED
from fednlp_bench.errors import ConfigError, UserError
from fednlp_bench.io_utils import atomic_write_json
from fednlp_bench.track import Track


FILE_FORMAT = 1
_KEYS = ("format", "track", "protocol", "algorithm", "target", "space", "chosen", "metric", "split", "partition",
         "seeds", "scores", "created", "code")


class TunedFileError(ConfigError):
    """A tuned-parameters file is missing pieces, stale or inconsistent."""


@dataclass(frozen=True)
class Space:
    """What is tuned: ``target`` ``algorithm`` (its hyper-parameters) or ``fl`` (the client lr)."""

    values: dict[str, list[Any]]
    target: str

    def grid(self) -> list[dict[str, Any]]:
        """Every candidate, in declared order (the first field varies slowest)."""
        names = list(self.values)
        return [dict(zip(names, combo)) for combo in itertools.product(*(self.values[n] for n in names))]


def search_space(track: Track, algorithm: str) -> Space:
    """The grid of ``algorithm`` on ``track`` (empty: nothing to tune)."""
    if algorithm == CENTRALIZED:
        lrs = track.tuning.centralized_client_lr
        return Space({"client_lr": list(lrs)} if lrs else {}, "fl")
    return Space({k: list(v) for k, v in algorithms.get(algorithm).search_space().items()}, "algorithm")


def slug(algorithm: str) -> str:
    """A file name for an algorithm name (a plugin path such as ``dir/x.py:Class`` included)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", algorithm).strip("._") or "algorithm"


def tuned_path(track: Track, algorithm: str, folder: Path | None = None) -> Path:
    return Path(folder or track.folder / "tuned") / track.name / f"{slug(algorithm)}.json"


# --------------------------------------------------------------------------- scoring one candidate
def validation_curve(cfg: Any) -> list[dict[str, Any]]:
    """Train ``cfg`` and return its per-round validation rows; the test split is never scored.

    The same trainer and evaluation schedule as :func:`fednlp_bench.run.run`, without the final
    (test) evaluation, audits, tracking or a record.
    """
    from fednlp_bench.run import assemble_data, build_trainer, prepare, validate_up_front
    from fednlp_bench.world import World, pick_device

    algorithm = validate_up_front(cfg)
    torch.set_num_threads(cfg.threads or max(1, os.cpu_count() or 1))
    prep = prepare(cfg)
    if prep.val is None:
        raise ConfigError("tuning needs a validation split; the track sets data.val_fraction = 0")
    data = assemble_data(cfg, prep, algorithm is None)
    trainer = build_trainer(cfg, prep, data, algorithm, None, World(), pick_device(cfg.device))
    if algorithm is None:
        trainer.run()
    else:
        trainer.run_federated()
    return list(trainer.state.per_round)


def _final_value(rows: list[dict[str, Any]], metric: str) -> float:
    if not rows or metric not in rows[-1]:
        raise ConfigError(f"the tuning run produced no validation score for '{metric}'")
    return float(rows[-1][metric])


def candidate_config(track: Track, algorithm: str, space: Space, params: dict[str, Any], seed: int,
                     **runtime: Any) -> Any:
    """The run configuration of one candidate on the tuning partition."""
    on_alg = params if space.target == "algorithm" else {}
    on_fl = params if space.target == "fl" else {}
    return track.run_config(algorithm, track.tuning.partition, seed, algorithm_params=on_alg, fl_overrides=on_fl,
                            wandb="disabled", progress=False, **runtime)


# --------------------------------------------------------------------------- the grid
def tune(track: Track, algorithm: str, *, folder: Path | None = None, threads: int | None = None,
         on_candidate: Callable[[dict[str, Any], float], None] | None = None) -> tuple[dict[str, Any], Path]:
    """Score every candidate on validation, pick the best mean, write the tuned-parameters file."""
    from fednlp_bench import tasks

    space = search_space(track, algorithm)
    if not space.values:
        raise ConfigError(f"algorithm '{algorithm}' declares no search space on track '{track.name}': nothing to "
                          f"tune (its defaults are used as they are)")
    metric, higher = tasks.get(track.task).primary_metric, _higher_is_better(track)
    scores = []
    for params in space.grid():
        values = [_final_value(validation_curve(candidate_config(track, algorithm, space, params, seed,
                                                                  threads=threads)), metric)
                  for seed in track.tuning.seeds]
        scores.append({"params": params, "val": values, "mean": sum(values) / len(values)})
        if on_candidate is not None:
            on_candidate(params, scores[-1]["mean"])
    chosen = best(scores, higher)
    commit, dirty = provenance.git_state()
    doc = {"format": FILE_FORMAT, "track": track.identity, "protocol": track.tuning.protocol,
           "algorithm": algorithm, "target": space.target, "space": space.values, "chosen": chosen,
           "metric": metric, "split": "validation", "partition": track.tuning.partition,
           "seeds": list(track.tuning.seeds), "scores": scores,
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "code": {"git_commit": commit, "git_dirty": dirty}}
    return doc, atomic_write_json(tuned_path(track, algorithm, folder), doc)


def best(scores: list[dict[str, Any]], higher: bool = True) -> dict[str, Any]:
    """The params of the best mean score; ties go to the earliest candidate."""
    pick = scores[0]
    for s in scores[1:]:
        if (s["mean"] > pick["mean"]) if higher else (s["mean"] < pick["mean"]):
            pick = s
    return dict(pick["params"])


# --------------------------------------------------------------------------- reading
def read_tuned(track: Track, algorithm: str, folder: Path | None = None) -> dict[str, Any] | None:
    """The validated tuned-parameters document, or ``None`` when the algorithm has nothing to tune.

    Raises :class:`TunedFileError` (one line naming the file) when the algorithm has a search
    space but the file is missing, unreadable, for another track version or protocol, for another
    search space, or inconsistent (a choice that is not the best score, a missing candidate).
    """
    space = search_space(track, algorithm)
    if not space.values:
        return None
    path = tuned_path(track, algorithm, folder)
    if not path.is_file():
        raise TunedFileError(f"no tuned parameters for '{algorithm}' on track {track.name} v{track.version} "
                             f"({path}); run `fednlp-bench tune --track {track.name} --algorithm {algorithm}` "
                             f"or pass --untuned to run its defaults")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TunedFileError(f"tuned-parameters file '{path}': not readable JSON ({exc.__class__.__name__})") from None
    try:
        _check_doc(doc, track, algorithm, space)
    except UserError as exc:
        raise TunedFileError(f"tuned-parameters file '{path}': {exc}") from None
    return doc


def _check_doc(doc: Any, track: Track, algorithm: str, space: Space) -> None:
    if not isinstance(doc, dict):
        raise ConfigError(f"must be a JSON object, got {type(doc).__name__}")
    missing = [k for k in _KEYS if k not in doc]
    if missing:
        raise ConfigError(f"missing key '{missing[0]}'")
    if doc["format"] != FILE_FORMAT:
        raise ConfigError(f"format {doc['format']!r} is not supported (supported: {FILE_FORMAT})")
    expect = {"track": track.identity, "protocol": track.tuning.protocol, "algorithm": algorithm,
              "target": space.target, "space": space.values, "partition": track.tuning.partition,
              "seeds": list(track.tuning.seeds), "split": "validation"}
    for key, want in expect.items():
        if doc[key] != want:
            raise ConfigError(f"'{key}' is {json.dumps(doc[key])[:120]}, but the track and algorithm now give "
                              f"{json.dumps(want)[:120]}: the file is stale; re-run `fednlp-bench tune`")
    _check_scores(doc, space, _higher_is_better(track))


def _higher_is_better(track: Track) -> bool:
    from fednlp_bench import tasks

    return getattr(tasks.get(track.task), "higher_is_better", True)


def _check_scores(doc: dict[str, Any], space: Space, higher: bool) -> None:
    scores, n_seeds = doc["scores"], len(doc["seeds"])
    if not isinstance(scores, list) or [s.get("params") if isinstance(s, dict) else None for s in scores] \
            != space.grid():
        raise ConfigError("'scores' must hold one entry per candidate of the space, in grid order")
    for i, s in enumerate(scores):
        val = s.get("val")
        if not isinstance(val, list) or len(val) != n_seeds or not all(_finite(v) for v in val):
            raise ConfigError(f"'scores[{i}].val' must be {n_seeds} finite number(s), got {val!r}"[:200])
        if not _finite(s.get("mean")) or not math.isclose(s["mean"], sum(val) / n_seeds, rel_tol=1e-9,
                                                              abs_tol=1e-12):
            raise ConfigError(f"'scores[{i}].mean' is not the mean of its validation scores")
    if doc["chosen"] != best(scores, higher):
        raise ConfigError(f"'chosen' {json.dumps(doc['chosen'])[:120]} is not the best validation score "
                          f"{json.dumps(best(scores, higher))[:120]}")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def record_section(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``tuning`` section of a final run's record (``None``: the algorithm was not tuned)."""
    if doc is None:
        return None
    return {"protocol": doc["protocol"], "space": doc["space"], "chosen": doc["chosen"], "target": doc["target"],
            "metric": doc["metric"], "split": doc["split"], "partition": doc["partition"], "seeds": doc["seeds"],
            "scores": doc["scores"]}
