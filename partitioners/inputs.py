"""Validation and normalisation of the arrays handed to a partitioner."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fednlp_bench.partitioners.errors import PartitionError


@dataclass(frozen=True)
class Inputs:
    """Validated inputs of one split: every array has ``n_rows`` rows.

    ``labels`` are int64 codes into ``classes`` (the sorted distinct label values).
    """

    n_rows: int
    labels: np.ndarray | None = None
    classes: np.ndarray | None = None
    groups: np.ndarray | None = None
    features: np.ndarray | None = None


def _column(name: str, values: object) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise PartitionError(f"{name} must be 1-D (one value per row), got shape {arr.shape}")
    return arr


def encode(values: np.ndarray, name: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(classes, codes)``: sorted distinct values and an int64 code per row.

    Works for integers (fast bincount path), strings and other mutually comparable values.
    """
    arr = _column(name, values)
    if arr.dtype.kind in "iub" and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= max(4 * arr.size, 1 << 16):
            present = np.bincount(arr.astype(np.int64, copy=False), minlength=hi + 1) > 0
            classes = np.flatnonzero(present).astype(arr.dtype)
            remap = np.cumsum(present, dtype=np.int64) - 1
            return classes, remap[arr]
    try:
        classes, codes = np.unique(arr, return_inverse=True)
    except TypeError as exc:
        raise PartitionError(f"{name} values must be mutually comparable (e.g. all int or all str): {exc}") from None
    return classes, codes.astype(np.int64, copy=False).reshape(-1)


def validate(
    method: str,
    requires: tuple[str, ...],
    labels: object = None,
    groups: object = None,
    features: object = None,
    n_rows: int | None = None,
) -> Inputs:
    """Check shapes and required inputs and return normalised :class:`Inputs`."""
    given: dict[str, np.ndarray] = {}
    if labels is not None:
        given["labels"] = _column("labels", labels)
    if groups is not None:
        given["groups"] = _column("groups", groups)
    if features is not None:
        feats = np.asarray(features)
        if feats.ndim != 2:
            raise PartitionError(f"features must be 2-D (n_rows x dim), got shape {feats.shape}")
        if feats.dtype.kind not in "fiub":
            raise PartitionError(f"features must be numeric, got dtype {feats.dtype}")
        if not np.all(np.isfinite(feats)):
            raise PartitionError("features contain NaN or inf")
        given["features"] = feats
    for need in requires:
        if need not in given:
            raise PartitionError(f"{method} needs {need}=...; got {need}=None")
    lengths = {k: len(v) for k, v in given.items()}
    if n_rows is not None:
        if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 0:
            raise PartitionError(f"n_rows must be a non-negative int, got {n_rows!r}")
        lengths["n_rows"] = int(n_rows)
    if not lengths:
        raise PartitionError(f"{method} needs n_rows=... or an input array (labels/groups/features)")
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise PartitionError(f"row counts disagree: {shown}; all inputs must have the same number of rows")
    n = next(iter(lengths.values()))
    classes = codes = None
    if "labels" in given:
        classes, codes = encode(given["labels"])
    return Inputs(n_rows=n, labels=codes, classes=classes, groups=given.get("groups"), features=given.get("features"))
