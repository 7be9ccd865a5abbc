"""Appending extra rows (canaries, counterfactual copies) to a tokenized training split."""
from __future__ import annotations

import numpy as np

from fednlp_bench.batching import TokenizedData


def append_rows(data: TokenizedData, extra: TokenizedData) -> TokenizedData:
    """``data`` followed by the rows of ``extra``, as a new object.

    Per-row columns are concatenated; a column that is not per row (its length differs from
    the number of rows, e.g. sequence tagging's tag vocabulary) is kept from ``data``.
    """
    n = len(data)
    meta = {k: v for k, v in data.columns.items() if len(v) != n}
    rows_a = TokenizedData(data.ragged, {k: v for k, v in data.columns.items() if k not in meta}, dict(data.meta))
    rows_b = TokenizedData(extra.ragged, {k: v for k, v in extra.columns.items() if k not in meta}, {})
    out = rows_a.concat(rows_b)
    out.columns.update(meta)
    return out


def new_row_ids(before: int, data: TokenizedData) -> np.ndarray:
    """Ids of the rows appended after the first ``before`` rows."""
    return np.arange(before, len(data), dtype=np.int64)
