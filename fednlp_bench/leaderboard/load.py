"""Read result records from directories; collect what cannot be used instead of failing."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fednlp_bench.record import problems

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class LoadedRecord:
    """A valid record and the file it came from."""

    path: Path
    record: dict[str, Any]


@dataclass(frozen=True)
class Skipped:
    """A file that was not used, and why."""

    path: Path
    reason: str


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def parse_record_bytes(data: bytes) -> Any:
    """Strict JSON parse: UTF-8, no NaN/Infinity (they are not JSON)."""
    return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)


def read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Return ``(record, None)`` for a valid record, else ``(None, reason)``."""
    try:
        size = path.stat().st_size
        if size > MAX_RECORD_BYTES:
            return None, f"file too large ({size} bytes > {MAX_RECORD_BYTES})"
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read file: {exc.strerror or exc}"
    try:
        record = parse_record_bytes(data)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"malformed JSON: {exc}"
    found = problems(record)
    if found:
        return None, "invalid record: " + "; ".join(found)
    return record, None


def _json_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*.json")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def load_records(dirs: Iterable[Path]) -> tuple[list[LoadedRecord], list[Skipped]]:
    """Read every ``*.json`` under ``dirs`` (recursively, hidden files ignored).

    Invalid files and repeated run ids are returned as :class:`Skipped`;
    a missing directory is reported the same way.
    """
    loaded: list[LoadedRecord] = []
    skipped: list[Skipped] = []
    seen_files: set[Path] = set()
    seen_runs: dict[str, Path] = {}
    for directory in dirs:
        directory = Path(directory)
        if not directory.is_dir():
            skipped.append(Skipped(directory, "results directory not found"))
            continue
        for path in _json_files(directory):
            real = path.resolve()
            if real in seen_files:
                continue
            seen_files.add(real)
            record, reason = read_record(path)
            if record is None:
                log.warning("skipping %s: %s", path, reason)
                skipped.append(Skipped(path, reason or "invalid"))
                continue
            run_id = record["run_id"]
            if run_id in seen_runs:
                reason = f"duplicate run_id {run_id!r} (already read from {seen_runs[run_id]})"
                log.warning("skipping %s: %s", path, reason)
                skipped.append(Skipped(path, reason))
                continue
            seen_runs[run_id] = path
            loaded.append(LoadedRecord(path, record))
    return loaded, skipped
