"""Read result records from directories; collect what cannot be used instead of failing.

A results folder is untrusted input. Reading never follows a symbolic link (a linked file
or folder is reported, not read), never reads a file over :data:`MAX_RECORD_BYTES`, parses
JSON strictly (no NaN/Infinity, no number that overflows a float, no integer over 19 digits,
no nesting deep enough to exhaust the parser) and applies
:func:`fednlp_bench.record_checks.strict_problems` before a value is used. Names are then
NFKC-normalised. Verification stamps (``*.verification.json``, written by
``fednlp-bench verify --stamp``) sit next to the records and are read with them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fednlp_bench.record_checks import normalize_names, safe_text, strict_problems

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 16 * 1024 * 1024
MAX_STAMP_BYTES = 64 * 1024
MAX_INT_DIGITS = 19
VERIFICATION_SUFFIX = ".verification.json"


@dataclass(frozen=True)
class Verification:
    """A passed ``fednlp-bench verify --stamp`` of the exact record content."""

    commit: str
    date: str


@dataclass(frozen=True)
class LoadedRecord:
    """A valid record (names normalised), the file it came from, its digest and verification."""

    path: Path
    record: dict[str, Any]
    digest: str = ""
    verification: Verification | None = None


@dataclass(frozen=True)
class Skipped:
    """A file that was not used, and why (both safe to print)."""

    path: Path
    reason: str


def record_digest(record: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of ``record`` (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"integer with {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {safe_text(text, 40)} overflows a float")
    return value


def parse_record_bytes(data: bytes) -> Any:
    """Strict JSON parse: UTF-8, no NaN/Infinity, bounded numbers; ValueError says why not."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant,
                          parse_int=_parse_int, parse_float=_parse_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_bytes_safely(path: Path, limit: int) -> tuple[bytes | None, str | None]:
    """The bytes of a regular file that is not a symbolic link and not over ``limit`` bytes."""
    try:
        info = path.lstat()
    except OSError as exc:
        return None, f"cannot read file: {exc.strerror or exc}"
    if stat.S_ISLNK(info.st_mode):
        return None, "symbolic link (not followed)"
    if not stat.S_ISREG(info.st_mode):
        return None, "not a regular file"
    if info.st_size > limit:
        return None, f"file too large ({info.st_size} bytes > {limit})"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        return None, f"cannot read file: {exc.strerror or exc}"
    if len(data) > limit:
        return None, f"file too large (> {limit} bytes)"
    return data, None


def read_raw(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The record exactly as stored (names not normalised) or ``(None, reason)``."""
    data, reason = read_bytes_safely(path, MAX_RECORD_BYTES)
    if data is None:
        return None, reason
    try:
        record = parse_record_bytes(data)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"malformed JSON: {safe_text(str(exc), 160)}"
    found = strict_problems(record)
    if found:
        more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
        return None, "invalid record: " + "; ".join(found[:3]) + more
    return record, None


def read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Return ``(record, None)`` for a valid record (names normalised), else ``(None, reason)``."""
    record, reason = read_raw(path)
    return (normalize_names(record), None) if record is not None else (None, reason)


def stamp_path(record_path: Path) -> Path:
    """Where ``fednlp-bench verify --stamp`` writes the verification of ``record_path``."""
    name = record_path.name[:-5] if record_path.name.endswith(".json") else record_path.name
    return record_path.with_name(name + VERIFICATION_SUFFIX)


def read_verification(record_path: Path, digest: str) -> Verification | None:
    """The passed verification of this exact record content, if a valid stamp says so."""
    data, _ = read_bytes_safely(stamp_path(record_path), MAX_STAMP_BYTES)
    if data is None:
        return None
    try:
        stamp = parse_record_bytes(data)
    except (UnicodeDecodeError, ValueError):
        return None
    if not (isinstance(stamp, dict) and stamp.get("record_sha256") == digest and stamp.get("result") == "pass"):
        return None
    commit, date = stamp.get("commit"), stamp.get("date")
    commit = commit[:10] if isinstance(commit, str) and commit.isalnum() else "unknown"
    date = date[:10] if isinstance(date, str) and len(date) >= 10 and date[:10].replace("-", "").isdigit() else ""
    return Verification(commit, date)


def record_files(directory: Path) -> tuple[list[Path], list[Skipped]]:
    """``*.json`` records under ``directory`` (hidden names and stamps ignored, links reported)."""
    found: list[Path] = []
    links: list[Skipped] = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        base = Path(root)
        for d in sorted(dirs):
            if not d.startswith(".") and (base / d).is_symlink():
                links.append(Skipped(base / d, "symbolic link to a folder (not followed)"))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (base / d).is_symlink())
        for name in sorted(files):
            if name.endswith(".json") and not name.startswith(".") and not name.endswith(VERIFICATION_SUFFIX):
                found.append(base / name)
    return sorted(found), links


def load_records(dirs: Iterable[Path]) -> tuple[list[LoadedRecord], list[Skipped]]:
    """Read every record under ``dirs`` (recursively, hidden files ignored).

    Invalid files, links and repeated run ids are returned as :class:`Skipped`;
    a missing directory is reported the same way.
    """
    loaded: list[LoadedRecord] = []
    skipped: list[Skipped] = []
    seen_files: set[Path] = set()
    seen_runs: dict[str, Path] = {}
    for directory in dirs:
        directory = Path(directory)
        if directory.is_symlink() or not directory.is_dir():
            skipped.append(Skipped(directory, "results directory not found (or a symbolic link)"))
            continue
        paths, links = record_files(directory)
        skipped += links
        for path in paths:
            real = path.resolve()
            if real in seen_files:
                continue
            seen_files.add(real)
            raw, reason = read_raw(path)
            if raw is None:
                log.debug("skipping %s: %s", path, reason)
                skipped.append(Skipped(path, reason or "invalid"))
                continue
            run_id = raw["run_id"]
            if run_id in seen_runs:
                skipped.append(Skipped(path, f"duplicate run_id {safe_text(run_id, 80)} "
                                             f"(already read from {safe_text(str(seen_runs[run_id]), 200)})"))
                continue
            seen_runs[run_id] = path
            digest = record_digest(raw)
            loaded.append(LoadedRecord(path, normalize_names(raw), digest, read_verification(path, digest)))
    return loaded, skipped
