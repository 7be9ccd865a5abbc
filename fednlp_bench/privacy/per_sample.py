"""Per-example gradient clipping for DP-SGD, computed in batch (no per-example loop).

DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy") needs
``sum_i min(1, C / ||g_i||) g_i`` over the per-example gradients ``g_i`` of a
batch. Two exact ways to get it without a Python loop over examples:

* :class:`GhostClipper` ("book-keeping" ghost clipping: Li et al. 2022, "Large
  Language Models Can Be Strong Differentially Private Learners"; Bu et al.
  2023, "Differentially Private Optimization on Large Model at Small Cost").
  One forward and one backward that computes activation gradients only (the
  trainable weights are switched to ``requires_grad=False`` for the pass).
  Tensor hooks keep each layer's input ``a`` and output gradient ``g``; the
  per-example squared norms come from them layer by layer (for a Linear layer
  on sequences ``||sum_t g_t a_t^T||^2 = sum_{t,s} (a_t.a_s)(g_t.g_s)``, or the
  explicit per-example gradient when that is cheaper, Bu et al. 2022 "mixed
  ghost clipping"); the clipped weight gradient is then one matmul of the
  re-weighted ``g`` with ``a``, the same cost as the weight gradient of a
  normal backward. Supports ``nn.Linear``, ``nn.Embedding`` (``padding_idx``
  rows get no gradient, as in PyTorch - the case Opacus 1.6 gets wrong),
  ``nn.LayerNorm`` and HF ``Conv1D``; that covers BERT/MiniLM/RoBERTa/GPT-2.
* :func:`vmap_clipped_sum`: ``torch.func.vmap(grad(...))`` over
  ``functional_call`` - works for any module but materialises a
  (batch x parameters) gradient; the generic fallback.

:func:`reference_clipped_sum` is the naive per-example loop, kept as the
ground truth for tests and the overhead benchmark only.

Both fast paths write ``sum_i c_i g_i`` into each trainable parameter's existing
``.grad`` tensor in place (the engine's ``.grad`` tensors are views of one flat
buffer) and return the per-example gradient norms before clipping.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

#: ``loss_fn(model, batch) -> (B,)`` per-example losses (not reduced).
PerExampleLoss = Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]


class UnsupportedModelError(ValueError):
    """The model has trainable parameters in layers ghost clipping cannot handle."""


def per_example_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-example losses of an HF classification/token-classification head.

    Sequence logits ``(B, K)``: cross-entropy per example (``(B, 1)`` with float
    labels: squared error). Token logits ``(B, T, K)``: mean cross-entropy over
    the example's labelled tokens (label ``-100`` ignored). The batch loss the
    HF model would report is the mean of these for sequence classification.
    """
    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    if logits.dim() == 2:
        if logits.shape[-1] == 1 and labels.is_floating_point():
            return (logits.squeeze(-1).float() - labels.float()) ** 2
        return F.cross_entropy(logits.float(), labels, reduction="none")
    if logits.dim() == 3:
        tok = F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none", ignore_index=-100)
        n = (labels != -100).sum(1).clamp(min=1)
        return tok.sum(1) / n
    raise UnsupportedModelError(f"per_example_loss: cannot handle logits of shape {tuple(logits.shape)}")


def clip_factors(norms: torch.Tensor, clip: float) -> torch.Tensor:
    """``min(1, C / ||g_i||)`` (1 for a zero gradient)."""
    return (clip / norms).clamp(max=1.0)


# --------------------------------------------------------------------------- ghost clipping rules
@dataclass
class _Calls:
    """Inputs and output gradients of one module over the forward calls of a step."""

    inputs: list[torch.Tensor] = field(default_factory=list)
    grads: list[torch.Tensor | None] = field(default_factory=list)

    def pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(a, g) for a, g in zip(self.inputs, self.grads) if g is not None]


def _seq(x: torch.Tensor, batch: int) -> torch.Tensor:
    """View ``(B, ..., d)`` as ``(B, T, d)``."""
    return x.reshape(batch, -1, x.shape[-1])


def _cat_seq(parts: list[torch.Tensor], batch: int, dtype: torch.dtype) -> torch.Tensor:
    """Concatenate calls along the sequence axis (no copy for the usual single call)."""
    if len(parts) == 1:
        return _seq(parts[0], batch).to(dtype)
    return torch.cat([_seq(x, batch) for x in parts], 1).to(dtype)


class _Gram:
    """Per-example Gram matrices ``a a^T`` shared by layers reading the same input (Q, K, V)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, torch.Tensor] = {}

    def __call__(self, a: torch.Tensor, key: tuple | None) -> torch.Tensor:
        if key is not None and key in self._cache:
            return self._cache[key]
        gram = torch.bmm(a, a.transpose(1, 2))
        if key is not None:
            self._cache[key] = gram
        return gram


class _LinearRule:
    """y = a W^T + b (``transposed``: HF Conv1D, y = a W + b)."""

    def __init__(self, transposed: bool = False) -> None:
        self.transposed = transposed

    def sq_norms(self, module: nn.Module, calls: _Calls, batch: int, gram: _Gram) -> tuple[torch.Tensor, object]:
        w = module.weight
        pairs = calls.pairs()
        sq = torch.zeros(batch, dtype=w.dtype, device=w.device)
        if not pairs:
            return sq, None
        a = _cat_seq([x for x, _ in pairs], batch, w.dtype)
        g = _cat_seq([y for _, y in pairs], batch, w.dtype)
        t, d_in, d_out = a.shape[1], a.shape[2], g.shape[2]
        if w.requires_grad:
            if t == 1:
                sq += a.square().sum((1, 2)) * g.square().sum((1, 2))
            elif t * (d_in + d_out) <= d_in * d_out:  # ghost norm: O(T^2 (d_in + d_out))
                key = (pairs[0][0].data_ptr(), pairs[0][0].stride(), tuple(a.shape), a.dtype) if len(pairs) == 1 else None
                gg = torch.bmm(g, g.transpose(1, 2))
                sq += gram(a, key).reshape(batch, 1, -1).bmm(gg.reshape(batch, -1, 1)).reshape(batch)
            else:  # explicit per-example gradient: O(T d_in d_out)
                sq += torch.bmm(g.transpose(1, 2), a).square().sum((1, 2))
        b = getattr(module, "bias", None)
        gb = None
        if b is not None and b.requires_grad:
            gb = g.sum(1)
            sq += gb.square().sum(1)
        return sq, (a, g, gb)

    def write_grads(self, module: nn.Module, state: object, factors: torch.Tensor) -> None:
        w, b = module.weight, getattr(module, "bias", None)
        if state is None:
            for p in (w, b):
                if p is not None and p.requires_grad:
                    p.grad.zero_()
            return
        a, g, gb = state
        f = factors.to(g.dtype)
        if w.requires_grad:
            # scale the smaller of the two operands by the clip factors
            if a.shape[-1] <= g.shape[-1]:
                a, g = a * f[:, None, None], g
            else:
                a, g = a, g * f[:, None, None]
            a2, g2 = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
            if self.transposed:
                torch.mm(a2.t(), g2, out=w.grad)
            else:
                torch.mm(g2.t(), a2, out=w.grad)
        if gb is not None:
            torch.mv(gb.t(), f, out=b.grad)


class _EmbeddingRule:
    """Row lookup; per-example norms by summing gradients of repeated ids within each example."""

    def sq_norms(self, module: nn.Embedding, calls: _Calls, batch: int, gram: _Gram) -> tuple[torch.Tensor, object]:
        w = module.weight
        pairs = calls.pairs()
        if not pairs:
            return torch.zeros(batch, dtype=w.dtype, device=w.device), None
        d = w.shape[1]
        ids = torch.cat([i.expand(batch, *i.shape[1:]).reshape(batch, -1) for i, _ in pairs], 1)
        g = _cat_seq([y for _, y in pairs], batch, w.dtype)
        n_rows = w.shape[0]
        keys = (torch.arange(batch, device=ids.device)[:, None] * n_rows + ids).reshape(-1)
        g = g.reshape(-1, d)
        if module.padding_idx is not None:  # PyTorch gives the padding row no gradient
            keep = ids.reshape(-1) != module.padding_idx
            keys, g = keys[keep], g[keep]
        uniq, inverse = torch.unique(keys, return_inverse=True)
        # index_put_(accumulate=True): CPU index_add_ is ~100x slower here (torch 2.13)
        rows = torch.zeros(len(uniq), d, dtype=w.dtype, device=w.device).index_put_((inverse,), g, accumulate=True)
        example = uniq // n_rows
        sq = torch.zeros(batch, dtype=w.dtype, device=w.device).index_put_(
            (example,), rows.square().sum(1), accumulate=True)
        return sq, (uniq % n_rows, example, rows)

    def write_grads(self, module: nn.Embedding, state: object, factors: torch.Tensor) -> None:
        w = module.weight
        w.grad.zero_()
        if state is not None:
            ids, example, rows = state
            w.grad.index_put_((ids,), rows * factors.to(rows.dtype)[example, None], accumulate=True)


class _LayerNormRule:
    """Affine LayerNorm: explicit per-example gradients (they are only (B, d))."""

    def sq_norms(self, module: nn.LayerNorm, calls: _Calls, batch: int, gram: _Gram) -> tuple[torch.Tensor, object]:
        p = module.weight if module.weight is not None else module.bias
        pairs = calls.pairs()
        sq = torch.zeros(batch, dtype=p.dtype, device=p.device)
        if not pairs:
            return sq, None
        shape = module.normalized_shape
        gw = gb = None
        for x, g in pairs:
            x, g = x.to(p.dtype), g.to(p.dtype)
            dims = tuple(range(1, x.dim() - len(shape)))
            if module.weight is not None and module.weight.requires_grad:
                xhat = F.layer_norm(x, shape, None, None, module.eps)
                part = (g * xhat).sum(dims) if dims else g * xhat
                gw = part if gw is None else gw + part
            if module.bias is not None and module.bias.requires_grad:
                part = g.sum(dims) if dims else g
                gb = part if gb is None else gb + part
        for per in (gw, gb):
            if per is not None:
                sq += per.reshape(batch, -1).square().sum(1)
        return sq, (gw, gb)

    def write_grads(self, module: nn.LayerNorm, state: object, factors: torch.Tensor) -> None:
        gw, gb = state if state is not None else (None, None)
        for p, per in ((module.weight, gw), (module.bias, gb)):
            if p is None or not p.requires_grad:
                continue
            if per is None:
                p.grad.zero_()
            else:
                torch.tensordot(factors.to(per.dtype), per, dims=1, out=p.grad)


def _rule_for(module: nn.Module):
    if isinstance(module, nn.Linear):
        return _LinearRule()
    if isinstance(module, nn.Embedding):
        if module.sparse or module.scale_grad_by_freq or module.max_norm is not None:
            return None
        return _EmbeddingRule()
    if isinstance(module, nn.LayerNorm):
        return _LayerNormRule()
    if type(module).__name__ == "Conv1D" and type(module).__module__.startswith("transformers"):
        return _LinearRule(transposed=True)
    return None


# --------------------------------------------------------------------------- ghost clipper
class GhostClipper:
    """Exact batched per-example clipping for Linear/Embedding/LayerNorm models.

    Example::

        clipper = GhostClipper(model)
        norms, losses = clipper.clipped_sum(lambda: per_example_loss(model, batch), clip=1.0)
        # every trainable p.grad now holds sum_i min(1, C/||g_i||) g_i

    Raises :class:`UnsupportedModelError` at construction if a trainable
    parameter lives in another kind of layer or is shared between layers
    (then use :func:`vmap_clipped_sum`).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers: list[tuple[nn.Module, object, list[nn.Parameter]]] = []
        owner: dict[int, str] = {}
        unsupported = []
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            for p in own:
                if id(p) in owner:
                    raise UnsupportedModelError(
                        f"parameter shared by '{owner[id(p)]}' and '{name}' (tied weights); use method 'vmap'"
                    )
                owner[id(p)] = name
            rule = _rule_for(module)
            if rule is None:
                unsupported.append(f"{name} ({type(module).__name__})")
                continue
            self.layers.append((module, rule, own))
        if unsupported:
            raise UnsupportedModelError(
                "ghost clipping supports Linear, Embedding, LayerNorm and HF Conv1D layers; trainable parameters in "
                + ", ".join(unsupported[:5]) + (" ..." if len(unsupported) > 5 else "") + "; use method 'vmap'"
            )
        self.params = [p for _, _, own in self.layers for p in own]

    def clipped_sum(
        self, compute_losses: Callable[[], torch.Tensor], clip: float, scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``compute_losses()`` (-> (B,) per-example losses), write ``scale`` x the clipped gradient sum.

        Returns ``(norms, losses)``: per-example gradient norms before clipping, and the detached losses.
        """
        calls: dict[nn.Module, _Calls] = {m: _Calls() for m, _, _ in self.layers}
        batch_size: list[int] = []

        def forward_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            rec = calls[module]
            x = args[0]
            if isinstance(module, nn.Embedding) and batch_size and output.shape[0] != batch_size[0]:
                # a broadcast lookup (BERT's position ids are (1, T)): make it per-example
                output = output.expand(batch_size[0], *output.shape[1:])
                x = x.expand(batch_size[0], *x.shape[1:])
            if not output.requires_grad:
                # nothing upstream needs gradients: a fresh leaf carries this layer's output gradient
                output = output.detach().requires_grad_()
            index = len(rec.inputs)
            rec.inputs.append(x.detach())
            rec.grads.append(None)

            def keep(grad: torch.Tensor) -> None:
                rec.grads[index] = grad

            output.register_hook(keep)
            return output

        handles = [m.register_forward_hook(forward_hook) for m, _, _ in self.layers]
        handles.append(self.model.register_forward_pre_hook(_batch_pre_hook(batch_size), with_kwargs=True))
        for p in self.params:
            p.requires_grad_(False)
        try:
            losses = compute_losses()
            if losses.dim() != 1:
                raise ValueError(f"compute_losses must return per-example losses (B,), got {tuple(losses.shape)}")
            if losses.requires_grad:
                losses.sum().backward()
        finally:
            for h in handles:
                h.remove()
            for p in self.params:
                p.requires_grad_(True)
        batch = losses.shape[0]
        states = []
        gram = _Gram()
        sq = torch.zeros(batch, dtype=torch.float64 if self.params[0].dtype == torch.float64 else torch.float32,
                         device=losses.device)
        for module, rule, _ in self.layers:
            for a in calls[module].inputs:
                if a.dim() == 0 or a.shape[0] != batch:
                    raise UnsupportedModelError(
                        f"layer {type(module).__name__} saw a batch of {a.shape[0]}, expected {batch}"
                    )
            part, state = rule.sq_norms(module, calls[module], batch, gram)
            sq += part.to(sq.dtype)
            states.append(state)
        del gram
        _ensure_grads(self.params)
        norms = sq.sqrt()
        factors = clip_factors(norms, clip) * scale
        for (module, rule, _), state in zip(self.layers, states):
            rule.write_grads(module, state, factors)
        return norms, losses.detach()


def _ensure_grads(params: list[torch.Tensor]) -> None:
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def _batch_pre_hook(batch_size: list[int]):
    """Model forward pre-hook that records the batch size (first tensor argument, kwargs included)."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        tensors += [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
        if tensors and not batch_size:
            batch_size.append(tensors[0].shape[0])

    return hook


# --------------------------------------------------------------------------- vmap and reference
def vmap_clipped_sum(
    model: nn.Module,
    loss_fn: PerExampleLoss,
    batch: Mapping[str, torch.Tensor],
    clip: float,
    chunk_size: int | None = None,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example gradients with ``torch.func.vmap(grad(...))``, clipped and summed into ``.grad``.

    Works for any module (no per-layer rules) at the price of a (B x params)
    gradient tensor; ``chunk_size`` bounds that memory. Dropout draws
    different masks per example (``randomness='different'``).
    """
    from torch.func import functional_call, grad_and_value, vmap

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())
    batch = _vmappable(model, batch)
    keys = list(batch)

    def one(p: dict[str, torch.Tensor], *row: torch.Tensor) -> torch.Tensor:
        example = {k: v.unsqueeze(0) for k, v in zip(keys, row)}
        proxy = _Functional(model, {**p, **frozen}, buffers, functional_call)
        return loss_fn(proxy, example).squeeze(0)

    per = vmap(grad_and_value(one), in_dims=(None, *([0] * len(keys))), randomness="different",
               chunk_size=chunk_size)(params, *(batch[k] for k in keys))
    grads, losses = per
    sq = sum(grads[n].reshape(grads[n].shape[0], -1).square().sum(1) for n in names)
    norms = sq.sqrt()
    factors = clip_factors(norms, clip) * scale
    _ensure_grads([p for p in model.parameters() if p.requires_grad])
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.tensordot(factors.to(grads[n].dtype), grads[n], dims=1, out=p.grad)
    return norms, losses.detach()


def _vmappable(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF models skip the mask when ``mask.all()`` - data-dependent control flow vmap rejects.

    A prepared 4D mask is used as-is by HF, so pass one: boolean for SDPA attention,
    additive (0 / dtype min) otherwise.
    """
    out = dict(batch)
    mask = out.get("attention_mask")
    config = getattr(model, "config", None)
    if mask is not None and mask.dim() == 2 and config is not None:
        keep = mask.bool()[:, None, None, :].expand(-1, 1, mask.shape[1], -1)
        if getattr(config, "_attn_implementation", None) == "sdpa":
            out["attention_mask"] = keep
        else:
            dtype = next(model.parameters()).dtype
            out["attention_mask"] = torch.zeros(keep.shape, dtype=dtype, device=mask.device).masked_fill(
                ~keep, torch.finfo(dtype).min)
    return out


class _Functional(nn.Module):
    """Calls ``model`` through ``functional_call`` with given tensors; exposes only ``forward``."""

    def __init__(self, model: nn.Module, tensors: dict, buffers: dict, functional_call) -> None:
        super().__init__()
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_tensors", {**tensors, **buffers})
        object.__setattr__(self, "_call", functional_call)

    def forward(self, *args, **kwargs):
        return self._call(self._model, self._tensors, args, kwargs)


def reference_clipped_sum(
    model: nn.Module, loss_fn: PerExampleLoss, batch: Mapping[str, torch.Tensor], clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The naive per-example loop (ground truth for tests and benchmarks only)."""
    params = [p for p in model.parameters() if p.requires_grad]
    n = next(iter(batch.values())).shape[0]
    total = [torch.zeros_like(p) for p in params]
    norms, losses = [], []
    for i in range(n):
        example = {k: v[i : i + 1] for k, v in batch.items()}
        loss = loss_fn(model, example).sum()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        norm = torch.sqrt(sum(g.square().sum() for g in grads))
        factor = clip_factors(norm, clip)
        for t, g in zip(total, grads):
            t.add_(g * factor)
        norms.append(norm.detach())
        losses.append(loss.detach())
    for p, t in zip(params, total):
        if p.grad is None:
            p.grad = t
        else:
            p.grad.copy_(t)
    return torch.stack(norms), torch.stack(losses)
