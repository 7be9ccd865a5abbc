"""Sliding windows over long QA contexts, kept as one row per example.

The usual recipe (Devlin et al. 2019, BERT on SQuAD; the HF ``run_qa``
script) splits a long context into windows of ``max_len`` tokens that overlap
by ``stride`` tokens, trains on every window (a window without the answer
points at [CLS]) and, at inference, takes the best-scoring span over all
windows of an example and maps it back to characters with the offset mapping.

Partitioners and the engine index *examples*, so :class:`TokenizedData` keeps
one row per example: ``input_ids`` (and the other token columns) hold the
example's windows back to back, ``window_lens`` their lengths, and
``start_positions``/``end_positions`` one entry per window. :func:`collate`
expands the requested examples into their windows. Scoring is per example.
"""
from __future__ import annotations

import numpy as np
import torch

from fednlp_bench.batching import Ragged, TokenizedData, _ranges
from fednlp_bench.tasks.base import DatasetError
from fednlp_bench.tasks.text_arrays import strings_to_ragged

MAX_ANSWER_TOKENS = 30
_TOKEN_COLUMNS = ("input_ids", "token_type_ids", "ctx_start", "ctx_end")


def default_stride(max_len: int) -> int:
    """Overlap between consecutive windows: a quarter of the window."""
    return max(4, max_len // 4)


def answer_token_span(ctx_start: np.ndarray, ctx_end: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """Token positions of the character span ``[start, end)`` inside one window, ``(0, 0)`` if not fully inside.

    ``ctx_start``/``ctx_end`` are the window's character offsets, -1 on non-context tokens.
    """
    ctx = np.flatnonzero(ctx_start >= 0)
    if len(ctx) == 0 or ctx_start[ctx[0]] > start or ctx_end[ctx[-1]] < end:
        return 0, 0
    s_tok = ctx[np.searchsorted(ctx_start[ctx], start, side="right") - 1]
    e_tok = ctx[min(np.searchsorted(ctx_end[ctx], end, side="left"), len(ctx) - 1)]
    return int(s_tok), int(e_tok)


def featurize(
    tokenizer,
    questions: list[str],
    contexts: list[str],
    answer_starts: list[list[int]],
    answer_ends: list[list[int]],
    max_len: int,
    stride: int | None = None,
) -> TokenizedData:
    """Tokenize (question, context) pairs into overlapping windows, one row per example."""
    if not getattr(tokenizer, "is_fast", False):
        raise DatasetError("extractive QA needs a fast tokenizer (offset mapping)")
    stride = default_stride(max_len) if stride is None else stride
    try:
        enc = tokenizer(
            questions, contexts, truncation="only_second", max_length=max_len, stride=stride,
            return_overflowing_tokens=True, return_offsets_mapping=True,
        )
    except Exception as exc:  # e.g. a question longer than max_len
        raise DatasetError(f"cannot split QA contexts into windows of {max_len} tokens: {exc}") from None
    owner = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
    if len(owner) and np.any(np.diff(owner) < 0):
        raise DatasetError("tokenizer returned windows out of example order")
    n, n_win = len(questions), len(owner)
    win_len = np.fromiter((len(x) for x in enc["input_ids"]), dtype=np.int64, count=n_win)
    seq = np.fromiter((-1 if s is None else s for i in range(n_win) for s in enc.sequence_ids(i)),
                      dtype=np.int64, count=int(win_len.sum()))
    offs = np.fromiter((o for row in enc["offset_mapping"] for pair in row for o in pair), dtype=np.int64,
                       count=2 * int(win_len.sum())).reshape(-1, 2)
    is_ctx = seq == 1
    ctx_start = np.where(is_ctx, offs[:, 0], -1).astype(np.int32)
    ctx_end = np.where(is_ctx, offs[:, 1], -1).astype(np.int32)
    win_off = np.zeros(n_win + 1, dtype=np.int64)
    np.cumsum(win_len, out=win_off[1:])
    starts = np.zeros(n_win, dtype=np.int64)
    ends = np.zeros(n_win, dtype=np.int64)
    for w in range(n_win):
        ex = owner[w]
        if answer_starts[ex]:
            sl = slice(win_off[w], win_off[w + 1])
            starts[w], ends[w] = answer_token_span(ctx_start[sl], ctx_end[sl], answer_starts[ex][0], answer_ends[ex][0])
    wins_per_ex = np.bincount(owner, minlength=n)
    ex_win_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(wins_per_ex, out=ex_win_off[1:])
    ex_tok_off = win_off[ex_win_off]  # windows of an example are contiguous
    ragged = {
        "input_ids": Ragged(np.concatenate(enc["input_ids"]).astype(np.int32) if n_win else np.zeros(0, np.int32),
                            ex_tok_off),
        "ctx_start": Ragged(ctx_start, ex_tok_off),
        "ctx_end": Ragged(ctx_end, ex_tok_off),
        "window_lens": Ragged(win_len, ex_win_off),
        "start_positions": Ragged(starts, ex_win_off),
        "end_positions": Ragged(ends, ex_win_off),
        "context": strings_to_ragged(contexts),
        "answer_starts": Ragged.from_lists(answer_starts),
        "answer_ends": Ragged.from_lists(answer_ends),
    }
    if "token_type_ids" in enc and "token_type_ids" in getattr(tokenizer, "model_input_names", ()):
        ragged["token_type_ids"] = Ragged(np.concatenate(enc["token_type_ids"]).astype(np.int32), ex_tok_off)
    return TokenizedData(ragged=ragged)


def windows_of(data: TokenizedData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global window indices of ``rows`` and, per window, its position in ``rows``."""
    wl = data.ragged["window_lens"]
    counts = wl.lengths[rows]
    return np.repeat(wl.offsets[rows], counts) + _ranges(counts), np.repeat(np.arange(len(rows)), counts)


def _window_offsets(data: TokenizedData) -> np.ndarray:
    """Token offsets of every window (cached in ``data.meta``; windows are stored back to back)."""
    off = data.meta.get("window_offsets")
    if off is None:
        lens = data.ragged["window_lens"].values
        off = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=off[1:])
        off += data.ragged["input_ids"].offsets[0]
        data.meta["window_offsets"] = off
    return off


def window_column(data: TokenizedData, name: str, windows: np.ndarray, pad_value: int) -> np.ndarray:
    """A token column gathered per window, padded to the longest window."""
    return Ragged(data.ragged[name].values, _window_offsets(data)).pad(windows, pad_value)


def collate(data: TokenizedData, rows: np.ndarray, pad_id: int, labels: bool = True) -> dict[str, torch.Tensor]:
    """All windows of ``rows`` as one batch (dynamic padding); with answer positions when ``labels``."""
    windows, _ = windows_of(data, rows)
    ids = window_column(data, "input_ids", windows, pad_id)
    lens = data.ragged["window_lens"].values[windows]
    mask = np.arange(ids.shape[1])[None, :] < lens[:, None]
    batch = {"input_ids": torch.from_numpy(ids.astype(np.int64)), "attention_mask": torch.from_numpy(mask.astype(np.int64))}
    if "token_type_ids" in data.ragged:
        batch["token_type_ids"] = torch.from_numpy(window_column(data, "token_type_ids", windows, 0).astype(np.int64))
    if labels:
        batch["start_positions"] = torch.from_numpy(data.ragged["start_positions"].values[windows].astype(np.int64))
        batch["end_positions"] = torch.from_numpy(data.ragged["end_positions"].values[windows].astype(np.int64))
    return batch


def best_spans(
    start_logits: torch.Tensor, end_logits: torch.Tensor, ctx_mask: torch.Tensor, max_answer_tokens: int = MAX_ANSWER_TOKENS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window, the context span ``start <= end < start + max_answer_tokens`` maximising
    ``start_logit + end_logit``: ``(start, end, score)``; score -inf where a window has no context."""
    start_logits, end_logits = start_logits.detach(), end_logits.detach()
    neg = torch.finfo(start_logits.dtype).min / 4
    s = start_logits.masked_fill(~ctx_mask, neg)
    e = end_logits.masked_fill(~ctx_mask, neg)
    length = s.shape[1]
    idx = torch.arange(length, device=s.device)
    band = (idx[None, :] >= idx[:, None]) & (idx[None, :] < idx[:, None] + max_answer_tokens)
    scores = (s[:, :, None] + e[:, None, :]).masked_fill(~band, neg)
    best = scores.reshape(len(s), -1).argmax(-1)
    top = scores.reshape(len(s), -1).gather(1, best[:, None])[:, 0]
    has_ctx = ctx_mask.any(-1)
    top = torch.where(has_ctx, top, torch.full_like(top, float("-inf")))
    return (best // length).cpu().numpy(), (best % length).cpu().numpy(), top.float().cpu().numpy()


def predict(model, data: TokenizedData, rows: np.ndarray, batch_size: int, pad_id: int, device) -> dict[int, np.ndarray]:
    """Best character span ``[start, end)`` per example over all its windows.

    Examples are taken in length order until a batch holds ``batch_size`` windows.
    """
    rows = np.asarray(rows)
    rows = rows[np.argsort(data.lengths[rows], kind="stable")]
    n_win = data.ragged["window_lens"].lengths[rows]
    preds: dict[int, np.ndarray] = {}
    model.eval()
    with torch.inference_mode():
        start = 0
        while start < len(rows):
            stop = start + max(1, int(np.searchsorted(np.cumsum(n_win[start:]), batch_size, side="right")))
            batch_rows = rows[start:stop]
            start = stop
            windows, owner = windows_of(data, batch_rows)
            batch = {k: v.to(device) for k, v in collate(data, batch_rows, pad_id, labels=False).items()}
            out = model(**batch)
            cs = window_column(data, "ctx_start", windows, -1)
            ce = window_column(data, "ctx_end", windows, -1)
            ctx_mask = torch.from_numpy(cs >= 0).to(device)
            s_tok, e_tok, score = best_spans(out.start_logits.float(), out.end_logits.float(), ctx_mask)
            w = np.arange(len(windows))
            char_s, char_e = cs[w, s_tok], ce[w, e_tok]
            order = np.lexsort((-score, owner))  # best window first within each example
            first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]]
            for pos in first.tolist():
                ok = np.isfinite(score[pos]) and char_s[pos] >= 0
                preds[int(batch_rows[owner[pos]])] = np.array([char_s[pos], char_e[pos]] if ok else [0, 0], np.int64)
    return preds
