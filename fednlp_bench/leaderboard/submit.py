"""Submit a result record: validate, then copy it under a content-addressed name.

The name is ``<task>-<dataset>-<algorithm>-<digest>.json`` where ``digest``
is the first 16 hex digits of the SHA-256 of the record's canonical JSON
(:func:`record_digest`: sorted keys, no whitespace, UTF-8). The file itself
is written pretty-printed with sorted keys, atomically.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from fednlp_bench.io_utils import atomic_write_json
from fednlp_bench.leaderboard.load import MAX_RECORD_BYTES, parse_record_bytes
from fednlp_bench.record import RecordError, problems

log = logging.getLogger(__name__)


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 hex digest of the canonical JSON of ``record``."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _component(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("._")[:40] or "x"


def submission_name(record: dict[str, Any]) -> str:
    """``<task>-<dataset>-<algorithm>-<sha256[:16]>.json`` (components made file-name safe)."""
    parts = [record["task"], record["dataset"], record["algorithm"]["name"]]
    return "-".join(_component(p) for p in parts) + f"-{record_digest(record)[:16]}.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_RECORD_BYTES:
            raise RecordError(f"{path}: file too large ({size} bytes > {MAX_RECORD_BYTES})")
        data = path.read_bytes()
    except OSError as exc:
        raise RecordError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    try:
        record = parse_record_bytes(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordError(f"{path}: malformed JSON: {exc}") from exc
    found = problems(record)
    if found:
        raise RecordError(f"{path}: invalid result record: " + "; ".join(found))
    return record


def _existing(results_dir: Path, digest: str, run_id: str) -> tuple[str, Path] | None:
    """An already-submitted record with the same content or run id."""
    if not results_dir.is_dir():
        return None
    for other in sorted(results_dir.rglob("*.json")):
        if any(part.startswith(".") for part in other.relative_to(results_dir).parts):
            continue
        try:
            rec = parse_record_bytes(other.read_bytes())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if not isinstance(rec, dict):
            continue
        try:
            if record_digest(rec) == digest:
                return "duplicate", other
        except ValueError:
            continue
        if rec.get("run_id") == run_id:
            return "run_id", other
    return None


def submit(path: Path, results_dir: Path) -> Path:
    """Validate ``path`` and copy it into ``results_dir``; return the new file.

    Raises :class:`RecordError` naming the file and the problem for malformed
    JSON, an unsupported schema version, missing/ill-typed fields, an
    identical record already present ("duplicate of X") or another record
    with the same run id. Nothing is written unless the whole file is.
    """
    path, results_dir = Path(path), Path(results_dir)
    record = _read(path)
    digest = record_digest(record)
    target = results_dir / submission_name(record)
    if target.exists():
        raise RecordError(f"{path}: duplicate of {target} (identical record already submitted)")
    clash = _existing(results_dir, digest, record["run_id"])
    if clash is not None:
        kind, other = clash
        if kind == "duplicate":
            raise RecordError(f"{path}: duplicate of {other} (identical record already submitted)")
        raise RecordError(
            f"{path}: run_id {record['run_id']!r} already submitted as {other} with different content"
        )
    atomic_write_json(target, record)
    log.info("submitted %s -> %s", path, target)
    return target
