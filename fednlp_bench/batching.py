"""Tokenized data held as flat numpy arrays, length-grouped batches, dynamic padding.

Tokenization happens once per (dataset, tokenizer, max_len) and is cached on
disk (docs/architecture.md, performance rule 3). Inside the round loop a batch is built from
numpy slices: no tokenizer, no Arrow row access, padding only to the longest
sequence of the batch (performance rule 4).

Under sample-level DP the batches must be what the privacy accountant assumes,
so local training uses :func:`poisson_pass` there instead of
:func:`length_grouped_batches` (whose length sorting lets one example move
others between batches).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from fednlp_bench.io_utils import atomic_write


@dataclass
class Ragged:
    """A list of int sequences stored as one flat array plus offsets."""

    values: np.ndarray  # int32/int64, all sequences concatenated
    offsets: np.ndarray  # int64, len n+1

    @classmethod
    def from_lists(cls, seqs: list[list[int]], dtype=np.int32) -> "Ragged":
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter((t for s in seqs for t in s), dtype=dtype, count=int(offsets[-1]))
        return cls(values, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def get(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def pad(self, rows: np.ndarray, pad_value: int) -> np.ndarray:
        """Gather ``rows`` into a (len(rows), longest) array padded with ``pad_value``."""
        lengths = self.lengths[rows]
        width = int(lengths.max()) if len(rows) else 0
        out = np.full((len(rows), width), pad_value, dtype=self.values.dtype)
        mask = np.arange(width)[None, :] < lengths[:, None]
        out[mask] = self.values[np.repeat(self.offsets[rows], lengths) + _ranges(lengths)]
        return out


    def pad_with_mask(self, rows: np.ndarray, pad_value: int) -> tuple["torch.Tensor", "torch.Tensor"]:
        """Padded int64 ids and the matching attention mask, as torch tensors."""
        import torch

        ids = self.pad(rows, pad_value)
        mask = np.arange(ids.shape[1])[None, :] < self.lengths[rows][:, None]
        return torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(n) for n in lengths, vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - starts


@dataclass
class TokenizedData:
    """Columns of a featurized split: ragged token columns plus fixed per-row columns."""

    ragged: dict[str, Ragged]
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        any_col = next(iter(self.ragged.values()))
        return len(any_col)

    @property
    def lengths(self) -> np.ndarray:
        return self.ragged["input_ids"].lengths

    def concat(self, other: "TokenizedData") -> "TokenizedData":
        """Rows of ``self`` followed by the rows of ``other`` (same columns), as a new object."""
        if set(self.ragged) != set(other.ragged) or set(self.columns) != set(other.columns):
            raise ValueError(f"cannot concatenate tokenized data with columns {sorted(self.ragged) + sorted(self.columns)} "
                             f"and {sorted(other.ragged) + sorted(other.columns)}")
        ragged = {}
        for name, r in self.ragged.items():
            o = other.ragged[name]
            ragged[name] = Ragged(np.concatenate([r.values, o.values.astype(r.values.dtype)]),
                                  np.concatenate([r.offsets, o.offsets[1:] + r.offsets[-1]]))
        columns = {name: np.concatenate([c, other.columns[name].astype(c.dtype)]) for name, c in self.columns.items()}
        return TokenizedData(ragged, columns, dict(self.meta))

    def save(self, path: Path) -> None:
        arrays = {}
        for name, r in self.ragged.items():
            arrays[f"ragged.{name}.values"] = r.values
            arrays[f"ragged.{name}.offsets"] = r.offsets
        for name, c in self.columns.items():
            arrays[f"col.{name}"] = c

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: Path) -> "TokenizedData":
        with np.load(path, allow_pickle=False) as z:
            ragged: dict[str, dict] = {}
            cols = {}
            for key in z.files:
                kind, _, rest = key.partition(".")
                if kind == "ragged":
                    name, _, part = rest.rpartition(".")
                    ragged.setdefault(name, {})[part] = z[key]
                else:
                    cols[rest] = z[key]
        return cls({n: Ragged(d["values"], d["offsets"]) for n, d in ragged.items()}, cols)


def length_grouped_batches(
    rows: np.ndarray,
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    group_size: int = 50,
) -> list[np.ndarray]:
    """Shuffle ``rows``, sort each window of ``group_size`` batches by length, shuffle batch order.

    Every row appears once; which rows share a window is random, so sampling
    stays unbiased while padding waste drops (performance rule 4).
    """
    rows = rng.permutation(rows)
    window = batch_size * group_size
    batches: list[np.ndarray] = []
    for start in range(0, len(rows), window):
        chunk = rows[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (Steele, Lea & Flood 2014): a bijection of uint64 with good avalanche."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def row_uniforms(rows: np.ndarray, key: int, step: int) -> np.ndarray:
    """A uniform in [0, 1) per row id, a pure function of (key, step, row id)."""
    step_key = _mix(_mix(np.array([key], dtype=np.uint64)) ^ _mix(np.array([step], dtype=np.uint64)))
    bits = _mix(np.asarray(rows).astype(np.uint64) ^ step_key)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def poisson_batches(rows: np.ndarray, rate: float, n_batches: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``n_batches`` Poisson-sampled batches: each row joins each batch independently with probability ``rate``.

    The sampling DP-SGD's accountants analyse (Abadi et al. 2016; Mironov, Talwar & Zhang 2019; Opacus'
    ``UniformWithReplacementSampler``): batch sizes are Binomial(len(rows), rate) and may be 0. Whether
    row ``i`` is in batch ``s`` depends only on (a key drawn once from ``rng``, ``s``, ``i``): adding or
    removing one example never moves another between batches. No length grouping.
    """
    rows = np.asarray(rows)
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"Poisson sampling rate must be in (0, 1], got {rate}")
    key = int(rng.integers(0, 2**63))
    for step in range(n_batches):
        yield rows[row_uniforms(rows, key, step) < rate]


def poisson_pass(rows: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One pass of DP-SGD's batches: ``ceil(n / batch_size)`` Poisson batches at rate ``batch_size / n``.

    A :data:`fednlp_bench.local.Batcher` (``lengths`` is unused: no length grouping); each pass
    draws a fresh key from ``rng``, so a local schedule of several passes is still independent
    Poisson sampling at every step.
    """
    rows = np.asarray(rows)
    if len(rows) == 0:
        return []
    return list(poisson_batches(rows, min(1.0, batch_size / len(rows)), math.ceil(len(rows) / batch_size), rng))


def eval_batches(rows: np.ndarray, lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Length-sorted batches for inference (order does not matter there)."""
    rows = rows[np.argsort(lengths[rows], kind="stable")]
    for i in range(0, len(rows), batch_size):
        yield rows[i : i + batch_size]
