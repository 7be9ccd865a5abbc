"""Row-sparse client updates of vocabulary embeddings (an exact fast path of the engine).

A client's local update touches few rows of a vocabulary-sized embedding table:
eight 32-token sentences use at most 256 of BERT's 30,522 word vectors, yet the
word embedding holds most of a small transformer's parameters (89% of a 2-layer
BERT with hidden size 128; 52% of MiniLM-L6). The dense path spends most of a short
client update on passes over those untouched rows: zeroing their gradient, the
dense embedding gradient autograd builds and adds, AdamW over them, resetting their
optimiser moments, copying the broadcast back over them, the delta and the weighted
sum.

When the client optimiser is AdamW with **zero weight decay starting from zero
moments** (every client in our engine), a row that no batch of this client has
looked up keeps a zero gradient, zero moments and therefore an update of exactly
``0 / (sqrt(0) + eps) = 0`` at every step. So restricting every one of those passes
to the rows the client has looked up so far (the union over its steps, kept in
step order like the dense optimiser keeps updating a row whose gradient is zero
again) gives the same numbers as the dense path, not an approximation: the same
fused AdamW kernel runs on the same values, gathered into a compact block.

Same values is not enough for the same bits: the fused CPU kernel computes the
body of each tensor it is handed with SIMD instructions and the last
``numel % width`` elements with scalar code, which rounds differently (the SIMD
``exp_avg`` update is a fused multiply-add). So :meth:`RowSparseClient.step`
hands the kernel tensors on which every element takes the path it takes in the
dense optimiser: each non-table parameter as its own tensor (as the dense
optimiser does, never merged ranges); the looked-up rows of a table in a compact
block padded to a multiple of ``UNIT`` elements (all SIMD; in the dense table
they are SIMD too, since they lie before the table's last ``lcm(dim, UNIT)``-
aligned boundary); and the table's rows from that boundary on as one view of
the table's end, so that its scalar tail is the dense table's scalar tail.
``UNIT = 64`` is a multiple of every float32 SIMD width PyTorch uses (4 to 16)
and the kernel's thread chunks are multiples of 16 elements, so this holds for
any thread count. (On CUDA the fused kernel computes every element alike.)

What it takes, per eligible table (``type(module) is nn.Embedding``, trainable,
used by no other module, no ``max_norm``/``scale_grad_by_freq``/``sparse``, at
least ``MIN_ROWS`` rows):

* while a client trains, the table's ``forward`` records the looked-up ids and its
  backward adds the compact gradient into the looked-up rows of the flat gradient
  buffer (no dense ``num_embeddings x dim`` gradient is built);
* ``zero_grad``/``step`` of :class:`RowSparseClient` act on the dense rest of the
  model plus the looked-up rows;
* between clients, only those rows (and the dense rest) are restored, zeroed and
  aggregated. Once per round everything is reset in full.

If the weight nevertheless receives a gradient through some other use (model code
that reads ``module.weight`` directly), a hook on the weight notices it and the
table is treated as dense for the rest of that client: still exact, only slower.

The engine uses this path only where it is exact (``client_runner.choose_runner``): the
algorithm's client hooks leave rows nobody looked up alone (FedAvg, the FedOpt family and FedProx,
whose proximal gradient is 0 on a row that still holds the broadcast), no component needs the
dense update (update postprocessors such as DP, a non-default local loop, a robust
aggregator), the client optimiser is the fused AdamW with ``fl.weight_decay == 0``;
``--set fl.sparse_embeddings=false`` turns it off.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.optim.adamw import adamw as adamw_step

#: tables with fewer rows are left to the dense path (position/token-type embeddings)
MIN_ROWS = 4096
#: compact blocks are padded to, and table tails start at, multiples of this many elements (see module doc)
UNIT = 64


@dataclass
class _Table:
    module: torch.nn.Embedding
    offset: int  # start of the weight in the flat buffers
    rows: int
    dim: int
    #: sorted unique row ids this client has looked up so far; None: every row (dense fallback)
    touched: torch.Tensor | None = None
    hook: object = None
    saved_forward: tuple | None = None  # (had an instance-level forward, that forward) while patched

    def view(self, flat: torch.Tensor) -> torch.Tensor:
        return flat[self.offset : self.offset + self.rows * self.dim].view(self.rows, self.dim)

    @property
    def tail_row(self) -> int:
        """First row of the table's tail: rows from here on are stepped as one view of the table's end."""
        aligned = math.lcm(self.dim, UNIT)
        return (self.rows * self.dim // aligned) * aligned // self.dim

    def tail(self, flat: torch.Tensor) -> torch.Tensor:
        return flat[self.offset + self.tail_row * self.dim : self.offset + self.rows * self.dim]


class _LookupRows(torch.autograd.Function):
    """``F.embedding`` whose backward adds the compact gradient into the looked-up rows of ``grad2d``."""

    @staticmethod
    def forward(ctx, weight, ids, uniq, inverse, grad2d, padding_idx):
        ctx.save_for_backward(uniq, inverse)
        ctx.grad2d = grad2d
        ctx.padding_idx = padding_idx
        return F.embedding(ids, weight)

    @staticmethod
    def backward(ctx, grad_out):
        uniq, inverse = ctx.saved_tensors
        compact = torch.ops.aten.embedding_dense_backward(grad_out, inverse, uniq.numel(), -1, False)
        if ctx.padding_idx is not None:  # nn.Embedding never updates its padding row
            compact.masked_fill_((uniq == ctx.padding_idx).unsqueeze(1), 0.0)
        ctx.grad2d.index_add_(0, uniq, compact.to(ctx.grad2d.dtype))
        return None, None, None, None, None, None


def eligible_tables(model: torch.nn.Module, min_rows: int = MIN_ROWS) -> list[torch.nn.Embedding]:
    """The embedding modules the row-sparse path can take over (see the module docstring)."""
    owners: dict[int, int] = {}
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None:
                owners[id(p)] = owners.get(id(p), 0) + 1
    out = []
    for module in model.modules():
        if type(module) is not torch.nn.Embedding:
            continue
        w = module.weight
        if (w.requires_grad and owners.get(id(w)) == 1 and module.max_norm is None
                and not module.scale_grad_by_freq and not module.sparse and module.num_embeddings >= min_rows):
            out.append(module)
    return out


class RowSparseClient:
    """The client half of the fast path: AdamW state, resets, delta and aggregation over touched rows.

    ``params``/``grads``/``global_params`` are the engine's flat buffers (``params`` and
    ``grads`` are viewed by the model's parameters); ``parameters`` are the trainable
    parameters the dense optimiser steps (views of ``params``); ``hparams`` are the keyword
    arguments of the dense client AdamW (``lr``, ``betas``, ``eps``, ``weight_decay`` = 0,
    ``fused`` = True).
    """

    def __init__(self, params: torch.Tensor, grads: torch.Tensor, global_params: torch.Tensor,
                 tables: list[torch.nn.Embedding], hparams: dict, parameters: list[torch.Tensor]) -> None:
        if hparams.get("weight_decay", 0.0) != 0.0:
            raise ValueError("the row-sparse path is exact only with weight_decay == 0")
        if not hparams.get("fused"):
            raise ValueError("the row-sparse path is exact only with the fused AdamW kernel")
        self.params, self.grads, self.global_params = params, grads, global_params
        self.hparams = hparams
        self.tables = [_Table(m, self._offset(m.weight), m.num_embeddings, m.embedding_dim) for m in tables]
        starts = {t.offset for t in self.tables}
        # the non-table parameters, one flat range each: the tensors the dense optimiser hands the kernel
        self.segments = sorted((o, o + p.numel()) for p in parameters if (o := self._offset(p)) not in starts)
        spans = sorted((t.offset, t.offset + t.rows * t.dim) for t in self.tables)
        self.dense: list[tuple[int, int]] = []  # the flat ranges outside the tables
        start = 0
        for a, b in spans:
            if a > start:
                self.dense.append((start, a))
            start = b
        if start < params.numel():
            self.dense.append((start, params.numel()))
        self.exp_avg = torch.zeros_like(params)
        self.exp_avg_sq = torch.zeros_like(params)
        # AdamW step counters, one per tensor handed to the kernel (views of one buffer, set together)
        self._counter = torch.zeros(len(self.segments) + 2 * len(self.tables), dtype=torch.float32,
                                    device=params.device)
        self._counters = list(self._counter.unbind())
        self._n_steps = 0
        self._full_reset = True
        for t in self.tables:
            t.touched = self._empty()

    def _offset(self, weight: torch.Tensor) -> int:
        """Where ``weight`` starts in the flat buffer it is a view of (local.flatten_model)."""
        if weight.untyped_storage().data_ptr() != self.params.untyped_storage().data_ptr():
            raise ValueError("embedding weight is not a view of the flat parameter buffer")
        return (weight.data_ptr() - self.params.data_ptr()) // self.params.element_size()

    @property
    def n_sparse_parameters(self) -> int:
        return sum(t.rows * t.dim for t in self.tables)

    def _empty(self) -> torch.Tensor:
        return torch.empty(0, dtype=torch.long, device=self.params.device)

    # ---- resets ---------------------------------------------------------------
    def start_round(self) -> None:
        """The global weights changed (server step): the next client resets every buffer in full."""
        self._full_reset = True

    def start_client(self) -> None:
        """Put params, grads and optimiser state in the state the dense path starts a client in."""
        if self._full_reset:
            self.params.copy_(self.global_params)
            self.grads.zero_()
            self.exp_avg.zero_()
            self.exp_avg_sq.zero_()
            self._full_reset = False
        else:
            for a, b in self.dense:
                self.params[a:b].copy_(self.global_params[a:b])
            for t in self.tables:
                if t.touched is None:
                    t.view(self.params).copy_(t.view(self.global_params))
                elif t.touched.numel():
                    rows = t.touched
                    t.view(self.params).index_copy_(0, rows, t.view(self.global_params).index_select(0, rows))
            for buf in (self.grads, self.exp_avg, self.exp_avg_sq):
                self._zero_touched(buf)
        for t in self.tables:
            t.touched = self._empty()
        self._n_steps = 0

    # ---- local training ---------------------------------------------------------
    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """While a client trains: the tables record their look-ups and write compact gradients."""
        for t in self.tables:
            own = t.module.__dict__
            t.saved_forward = ("forward" in own, own.get("forward"))
            t.module.forward = self._make_forward(t)
            t.hook = t.module.weight.register_hook(self._make_dense_hook(t))
        try:
            yield
        finally:
            for t in self.tables:
                had, previous = t.saved_forward
                if had:
                    t.module.forward = previous
                else:
                    del t.module.forward  # back to the class's forward
                t.hook.remove()
                t.hook = t.saved_forward = None

    def _make_forward(self, t: _Table):
        grad2d = t.view(self.grads)
        module = t.module

        def forward(ids: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                return F.embedding(ids, module.weight, module.padding_idx)
            uniq, inverse = torch.unique(ids, sorted=True, return_inverse=True)
            if t.touched is not None:
                t.touched = torch.unique(torch.cat([t.touched, uniq]), sorted=True)
            return _LookupRows.apply(module.weight, ids, uniq, inverse, grad2d, module.padding_idx)

        return forward

    @staticmethod
    def _make_dense_hook(t: _Table):
        def hook(grad: torch.Tensor | None) -> None:
            if grad is not None:  # (our lookup's backward reports None for the weight)
                t.touched = None  # a dense gradient reached the weight: every row takes part from now on

        return hook

    def _zero_touched(self, buf: torch.Tensor) -> None:
        """Zero ``buf`` (a flat buffer) where it can be non-zero: the dense rest and the touched rows."""
        for a, b in self.dense:
            buf[a:b].zero_()
        for t in self.tables:
            if t.touched is None:
                t.view(buf).zero_()
            elif t.touched.numel():
                t.view(buf).index_fill_(0, t.touched, 0.0)

    def zero_grad(self) -> None:
        self._zero_touched(self.grads)

    def step(self) -> None:
        """One AdamW step (the dense optimiser's kernel and settings) over the dense rest and touched rows."""
        bufs = (self.params, self.grads, self.exp_avg, self.exp_avg_sq)
        lists: tuple[list, list, list, list] = ([], [], [], [])
        for a, b in self.segments:
            for lst, buf in zip(lists, bufs):
                lst.append(buf[a:b])
        back = [self._add_table(t, lists) for t in self.tables]
        n = len(lists[0])
        self._counter[:n].fill_(self._n_steps)  # the kernel adds 1 to each before it steps
        h = self.hparams
        beta1, beta2 = h.get("betas", (0.9, 0.999))
        adamw_step(
            *lists, [], self._counters[:n], foreach=h.get("foreach"), fused=h.get("fused"),
            amsgrad=False, beta1=beta1, beta2=beta2, lr=h["lr"], weight_decay=0.0, eps=h.get("eps", 1e-8),
            maximize=h.get("maximize", False),
        )
        self._n_steps += 1
        for item in back:
            if item is not None:
                t, rows, block = item
                for i in (0, 2, 3):  # params, exp_avg, exp_avg_sq
                    t.view(bufs[i]).index_copy_(0, rows, block[i, : rows.numel() * t.dim].view(-1, t.dim))

    def _add_table(self, t: _Table, lists: tuple[list, ...]) -> tuple | None:
        """Append the tensors that step table ``t`` to ``lists``; returns what to copy back, if anything.

        Touched rows before ``t.tail_row`` are gathered into a block padded to ``UNIT`` elements;
        the rows from ``t.tail_row`` on are handed over as a view (see the module doc for why).
        """
        bufs = (self.params, self.grads, self.exp_avg, self.exp_avg_sq)
        if t.touched is None:
            for lst, buf in zip(lists, bufs):
                lst.append(t.view(buf).view(-1))
            return None
        if t.tail_row < t.rows:
            for lst, buf in zip(lists, bufs):
                lst.append(t.tail(buf))
        rows = t.touched[: int(torch.searchsorted(t.touched, t.tail_row))]
        if rows.numel() == 0:
            return None
        used = rows.numel() * t.dim
        block = torch.empty(4, -(-used // UNIT) * UNIT, dtype=self.params.dtype, device=self.params.device)
        block[:, used:].zero_()
        for i, buf in enumerate(bufs):
            torch.index_select(t.view(buf), 0, rows, out=block[i, :used].view(-1, t.dim))
            lists[i].append(block[i])
        return t, rows, block

    # ---- the update -------------------------------------------------------------
    def delta(self) -> list[tuple[object, torch.Tensor]]:
        """The client's delta as (where, values) parts; raises FloatingPointError if not finite."""
        parts: list[tuple[object, torch.Tensor]] = []
        for a, b in self.dense:
            parts.append(((a, b), self.params[a:b] - self.global_params[a:b]))
        for t in self.tables:
            if t.touched is None:
                parts.append(((t.offset, t.offset + t.rows * t.dim),
                              (t.view(self.params) - t.view(self.global_params)).view(-1)))
            elif t.touched.numel():
                rows = t.touched
                parts.append(((t, rows), t.view(self.params).index_select(0, rows)
                              - t.view(self.global_params).index_select(0, rows)))
        total = sum(v.sum() for _, v in parts) if parts else torch.zeros(())
        if not torch.isfinite(total):
            raise FloatingPointError("non-finite model update")
        return parts

    @staticmethod
    def add_to(agg_sum: torch.Tensor, parts: list[tuple[object, torch.Tensor]], weight: float) -> None:
        """``agg_sum += weight * delta`` touching only the parts the client changed."""
        for where, values in parts:
            if isinstance(where[0], _Table):
                t, rows = where
                t.view(agg_sum).index_add_(0, rows, values, alpha=weight)
            else:
                a, b = where
                agg_sum[a:b].add_(values, alpha=weight)

    def touched_rows(self) -> list[int | None]:
        """Rows each table's client update touched (None: all); for tests and diagnostics."""
        return [None if t.touched is None else int(t.touched.numel()) for t in self.tables]
