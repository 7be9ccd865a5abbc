"""Vectorised integer allocation of rows to clients, shared by all methods.

Every helper works on whole arrays (numpy sorts, repeats and cumulative sums);
loops are over classes or clients at most, never over rows.
"""

from __future__ import annotations

import numpy as np


def _owner_dtype(n_clients: int) -> np.dtype:
    # <= 16-bit keys make numpy's stable argsort a radix sort.
    return np.dtype(np.int16) if n_clients < 2**15 else np.dtype(np.int64)


def largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer counts proportional to ``weights`` summing exactly to ``total`` (Hamilton's method)."""
    w = np.asarray(weights, dtype=np.float64)
    s = w.sum()
    if total == 0 or s <= 0:
        out = np.zeros(len(w), dtype=np.int64)
        if total and len(w):
            out += largest_remainder(np.ones(len(w)), total)
        return out
    exact = w * (total / s)
    counts = np.floor(exact).astype(np.int64)
    short = int(total - counts.sum())
    if short > 0:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:short]] += 1
    elif short < 0:  # only through floating-point error
        order = np.argsort(exact - counts, kind="stable")
        order = order[counts[order] > 0]
        counts[order[:-short]] -= 1
    return counts


def largest_remainder_columns(shares: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Column-wise :func:`largest_remainder`: ``out[:, c]`` sums to ``totals[c]``.

    ``shares`` is (n_clients x n_classes), non-negative; a zero column is spread evenly.
    """
    shares = np.asarray(shares, dtype=np.float64)
    totals = np.asarray(totals, dtype=np.int64)
    k = shares.shape[0]
    col = shares.sum(axis=0)
    norm = np.where(col > 0, shares / np.where(col > 0, col, 1.0), 1.0 / k)
    exact = norm * totals
    counts = np.floor(exact).astype(np.int64)
    short = totals - counts.sum(axis=0)
    frac = exact - counts
    # rank of every entry inside its column by descending remainder (ties: lower client first)
    order = np.argsort(-frac, axis=0, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(k)[:, None].repeat(shares.shape[1], axis=1), axis=0)
    counts += rank < np.maximum(short, 0)[None, :]
    return counts


def round_matrix(x: np.ndarray, row_totals: np.ndarray, col_totals: np.ndarray) -> np.ndarray:
    """Round a non-negative real matrix whose margins are (nearly) ``row_totals``/``col_totals``.

    Column sums of the result equal ``col_totals`` exactly; row sums equal ``row_totals``
    whenever possible (each class hands its leftover units to the rows still most short,
    largest remainder first). Loops over columns only.
    """
    x = np.maximum(np.asarray(x, dtype=np.float64), 0.0)
    col_totals = np.asarray(col_totals, dtype=np.int64)
    counts = np.floor(x).astype(np.int64)
    # floating-point excess: never hand out more than a column has
    over = counts.sum(axis=0) - col_totals
    if np.any(over > 0):
        counts = largest_remainder_columns(x, col_totals)
        return counts
    frac = x - counts
    row_short = np.asarray(row_totals, dtype=np.int64) - counts.sum(axis=1)
    col_short = col_totals - counts.sum(axis=0)
    # Gale-Ryser style greedy: biggest column first, each unit to the rows with the largest
    # remaining shortage (ties: largest remainder); exact whenever a 0/1 completion exists.
    for c in np.argsort(-col_short, kind="stable"):
        need = int(col_short[c])
        if need <= 0:
            break
        key = row_short + 0.5 * frac[:, c]
        pick = np.argpartition(-key, need - 1)[:need] if need < len(key) else np.arange(len(key))
        counts[pick, c] += 1
        row_short[pick] -= 1
    return counts


def owner_from_sizes(sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Client id per row for client sizes ``sizes``, rows drawn uniformly at random."""
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    owner = np.empty(n, dtype=_owner_dtype(len(sizes)))
    owner[rng.permutation(n)] = np.repeat(np.arange(len(sizes), dtype=owner.dtype), sizes)
    return owner


def owner_from_class_counts(codes: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Client id per row so that client ``k`` holds ``counts[k, c]`` rows of class ``c``.

    ``codes`` are class ids in ``[0, n_classes)``; column sums of ``counts`` must equal
    the class frequencies. Rows of a class are taken in random order.
    """
    n_clients, n_classes = counts.shape
    n = len(codes)
    key_dtype = np.int16 if n_classes < 2**15 else np.int64
    perm = rng.permutation(n)
    by_class = perm[np.argsort(codes[perm].astype(key_dtype, copy=False), kind="stable")]
    owner = np.empty(n, dtype=_owner_dtype(n_clients))
    clients = np.tile(np.arange(n_clients, dtype=owner.dtype), n_classes)
    owner[by_class] = np.repeat(clients, counts.T.ravel())
    return owner


def parts_from_owner(owner: np.ndarray, n_clients: int) -> list[np.ndarray]:
    """Sorted int64 row indices per client from a client id per row."""
    order = np.argsort(owner, kind="stable").astype(np.int64, copy=False)
    bounds = np.cumsum(np.bincount(owner, minlength=n_clients))[:-1]
    return np.split(order, bounds)
