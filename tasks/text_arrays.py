"""Strings stored inside :class:`~fednlp_bench.batching.TokenizedData` as code-point arrays.

Tokenized data is saved with ``np.savez`` (no pickles), so texts needed at
scoring time (QA contexts, s2s references) travel as a :class:`Ragged` of
Unicode code points; character offsets from fast tokenizers index the same
code points, so ``context[start:end]`` is exact.
"""
from __future__ import annotations

import numpy as np

from fednlp_bench.batching import Ragged


def strings_to_ragged(texts: list[str]) -> Ragged:
    """One row of int32 code points per string (vectorised through one UTF-32 encode)."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.frombuffer("".join(texts).encode("utf-32-le"), dtype="<u4").astype(np.int32)
    return Ragged(values, offsets)


def codepoints_to_str(values: np.ndarray) -> str:
    """Inverse of one row of :func:`strings_to_ragged`."""
    return np.asarray(values, dtype="<u4").tobytes().decode("utf-32-le")


def ragged_str(r: Ragged, row: int, start: int = 0, end: int | None = None) -> str:
    """``text[start:end]`` of row ``row``."""
    return codepoints_to_str(r.get(row)[start:end])
