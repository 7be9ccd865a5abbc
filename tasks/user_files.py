"""Reading users' data files: UTF-8 text, CSV and JSONL rows, and the checks every task shares.

A user's file is hostile input until proven otherwise. Every problem here ends as one
:class:`~fednlp_bench.errors.DatasetError` line that names the file, the line (or row) and
what is allowed, never as a traceback from ``csv``, ``json`` or the UTF-8 codec, and never
as a silently wrong dataset (a ``None`` label becoming a class named "None", an empty text).

Conventions, as in Hugging Face ``datasets`` and pandas: files are UTF-8 (a leading byte
order mark, as Excel writes it, is skipped); CSV follows RFC 4180 with a header row and
cells up to :data:`MAX_CELL_CHARS` characters (Python's ``csv`` stops at 131,072 by default);
JSONL is one JSON object per line, blank lines skipped.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterator

from fednlp_bench.errors import DatasetError

#: longest CSV cell accepted (characters); the csv module's own default is 131,072
MAX_CELL_CHARS = 1 << 27


def read_utf8(path: Path) -> str:
    """The file's text; bytes that are not UTF-8 give an error naming the line and the byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start:exc.start + 1].hex()
        raise DatasetError(
            f"{path}:{line}: byte 0x{bad} is not UTF-8; data files must be UTF-8 text "
            f"(re-save the file as UTF-8)"
        ) from None


class _CellLimit:
    """Raise the csv module's cell limit for one read and restore it after (it is process-global)."""

    def __enter__(self) -> None:
        self._old = csv.field_size_limit()
        csv.field_size_limit(max(self._old, MAX_CELL_CHARS))

    def __exit__(self, *exc: object) -> None:
        csv.field_size_limit(self._old)


def read_csv_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line, row)`` for every data row of a CSV file with a header (line = the row's first line).

    A short row leaves ``None`` in its missing cells (checked by :func:`text_cell` and friends);
    a row with more cells than the header is an error.
    """
    text = read_utf8(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # an unclosed quote is an error, not a cell
    rows: list[tuple[int, dict[str, Any]]] = []
    start = 1
    with _CellLimit():
        try:
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{path}: empty file; a CSV file needs a header row (e.g. text,label)")
            start = reader.line_num + 1
            for cells in reader:
                if cells:
                    if len(cells) > len(header):
                        raise DatasetError(
                            f"{path}:{start}: {len(cells)} cells but the header has {len(header)} "
                            f"({', '.join(header)}); quote cells that contain commas"
                        )
                    rows.append((start, dict(zip(header, cells + [None] * (len(header) - len(cells))))))
                start = reader.line_num + 1
        except csv.Error as exc:
            limit = f" (cells may hold up to {MAX_CELL_CHARS:,} characters)" if "field larger" in str(exc) else ""
            raise DatasetError(f"{path}:{start}: not valid CSV ({exc}){limit}") from None
    return rows


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, object)`` for every non-blank line of a JSONL file; each line must be a JSON object."""
    for n, line in enumerate(read_utf8(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{n}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{n}: expected a JSON object ({{...}}), got {type(row).__name__}")
        yield n, row


def text_cell(row: dict[str, Any], key: str, path: Path, line: int) -> str:
    """A required non-empty text field (str; JSON numbers are taken as their text)."""
    if key not in row:
        raise DatasetError(f"{path}:{line}: missing '{key}'; every row needs {key!r} (found: {', '.join(map(str, row))})")
    value = row[key]
    if value is None:
        raise DatasetError(f"{path}:{line}: no '{key}' value (null or a missing cell); every row needs a non-empty {key!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DatasetError(f"{path}:{line}: '{key}' must be a string, got {type(value).__name__}")
    text = value if isinstance(value, str) else json.dumps(value)
    if not text.strip():
        raise DatasetError(f"{path}:{line}: '{key}' is empty; every row needs a non-empty {key!r}")
    return text


def label_cell(row: dict[str, Any], key: str, path: Path, line: int) -> str:
    """A required class label: a non-empty string, number or boolean (``null`` is not a class)."""
    if key in row and isinstance(row[key], bool):
        return str(row[key]).lower()
    return text_cell(row, key, path, line).strip()


def optional_groups(rows: list[tuple[int, dict[str, Any]]], path: Path) -> list[str] | None:
    """The ``group`` of every row, or None when no row has one; a group column must be filled everywhere."""
    if not any(row.get("group") not in (None, "") for _, row in rows):
        return None
    return [text_cell(row, "group", path, line).strip() for line, row in rows]


def need_classes(labels: list[str], path: Path | str, what: str = "label") -> None:
    """Classification needs two classes; one class trains to a meaningless accuracy of 1.0."""
    classes = set(labels)
    if len(classes) < 2:
        only = next(iter(classes), None)
        raise DatasetError(
            f"{path}: every row has {what} {only!r}; classification needs at least 2 classes"
        )


def need_rows(n: int, path: Path) -> None:
    """A single file is split into train and test, so it needs at least two rows."""
    if n < 2:
        raise DatasetError(f"{path}: {n} row(s); a single data file needs at least 2 (split into train and test "
                           f"by data.test_fraction), or give a directory with train and test files")


def missing_path(dataset: str, kind: str) -> DatasetError:
    """The error for a local path that does not exist (it is never tried as a hub id)."""
    hub_like = dataset.count("/") == 1 and not dataset.startswith(("/", ".", "~")) and not Path(dataset).suffix
    hint = f", e.g. hf:{dataset}" if hub_like else ""
    return DatasetError(f"{kind} dataset '{dataset}': no such file or directory (hub datasets need the hf: prefix{hint})")
