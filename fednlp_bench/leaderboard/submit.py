"""Submit a result record: validate, then copy it under a content-addressed name.

The name is ``<task>-<dataset>-<algorithm>-<digest>.json`` where ``digest``
is the first 16 hex digits of the SHA-256 of the record's canonical JSON
(:func:`record_digest`: sorted keys, no whitespace, UTF-8). The file itself
is written pretty-printed with sorted keys, atomically.

A record is refused when it fails the strict checks
(:func:`fednlp_bench.record_checks.strict_problems`), is identical to a record already
there, reuses another record's run id, or reports a (configuration, seed) that already has
a record (:func:`fednlp_bench.leaderboard.keys.identity`) -- unless ``replace=True`` and the
new record is the later one by ``created``; the old file then stays and the leaderboard lists
it as superseded.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path
from typing import Any

from fednlp_bench.io_utils import atomic_write_json
from fednlp_bench.leaderboard.keys import identity
from fednlp_bench.leaderboard.load import read_raw, record_digest, record_files
from fednlp_bench.record import RecordError
from fednlp_bench.record_checks import normalize_names, safe_text

log = logging.getLogger(__name__)

__all__ = ["record_digest", "submission_name", "submit"]


def _component(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("._")[:40] or "x"


def submission_name(record: dict[str, Any]) -> str:
    """``<task>-<dataset>-<algorithm>-<sha256[:16]>.json`` (components made file-name safe)."""
    parts = [record["task"], record["dataset"], record["algorithm"]["name"]]
    return "-".join(_component(p) for p in parts) + f"-{record_digest(record)[:16]}.json"


def _read(path: Path) -> dict[str, Any]:
    record, reason = read_raw(path)
    if record is None:
        raise RecordError(f"{safe_text(str(path), 300)}: {reason}")
    return record


def _clash(results_dir: Path, record: dict[str, Any], replace: bool) -> str | None:
    """Why ``record`` cannot join ``results_dir`` (None when it can)."""
    digest, run_id = record_digest(record), record["run_id"]
    ident = identity(normalize_names(record))
    paths, _ = record_files(results_dir) if results_dir.is_dir() else ([], [])
    for other in paths:
        rec, _ = read_raw(other)
        if rec is None:
            continue
        where = safe_text(str(other), 300)
        if record_digest(rec) == digest:
            return f"duplicate of {where} (identical record already submitted)"
        if rec["run_id"] == run_id:
            return f"run_id {safe_text(run_id, 80)} already submitted as {where} with different content"
        if identity(normalize_names(rec)) != ident:
            continue
        if not replace:
            return (f"{where} already reports this configuration and seed {record['seed']}; "
                    f"pass --replace to supersede it")
        if not record["created"] > rec["created"]:
            return (f"--replace: the record must be newer than {where} (created {safe_text(rec['created'], 40)}), "
                    f"got created {safe_text(record['created'], 40)}")
    return None


def submit(path: Path, results_dir: Path, replace: bool = False) -> Path:
    """Validate ``path`` and copy it into ``results_dir``; return the new file.

    Raises :class:`RecordError` naming the file and the problem (see the module
    docstring). Nothing is written unless the whole file is.
    """
    path, results_dir = Path(path), Path(results_dir)
    record = _read(path)
    where = safe_text(str(path), 300)
    target = results_dir / submission_name(record)
    if target.exists() or target.is_symlink():
        raise RecordError(f"{where}: duplicate of {safe_text(str(target), 300)} (identical record already submitted)")
    problem = _clash(results_dir, record, replace)
    if problem:
        raise RecordError(f"{where}: {problem}")
    atomic_write_json(target, record)
    log.info("submitted %s -> %s", where, target)
    return target
