"""Sample-level DP-SGD inside a client (Abadi et al. 2016, "Deep Learning with Differential Privacy").

Each local step: per-example gradients clipped to norm ``C`` and summed (in
batch, :mod:`fednlp_bench.privacy.per_sample`), plus ``N(0, (sigma C)^2)`` noise,
divided by the *expected* batch size; then the client's usual optimiser step.
AdamW on the privatised gradient is post-processing, so the guarantee is unchanged.

Batches are Poisson samples (:func:`fednlp_bench.batching.poisson_batches`):
every row joins a step's batch independently with rate ``q = batch_size / n``,
the sampling the accountant analyses. The batch size is then random, and
dividing by it would make the scale data-dependent, so the noisy sum is
divided by the expected size ``q n`` (as Opacus does); an empty batch still
takes a step with noise only (skipping it would reveal the empty batch).

:class:`DPSGDClientContext` replaces :meth:`ClientContext.train` with this loop
when sample-level DP is configured; algorithms keep their hooks. An
algorithm's ``client_loss`` hook is assumed to *add* a data-independent term
(FedProx's proximal term): it is evaluated on a zero loss and its gradient is
added after the noise, which keeps the guarantee. Noise comes from a
``torch.Generator`` seeded by (run seed, round, client): deterministic.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from fednlp_bench.algorithms.base import ClientContext
from fednlp_bench.privacy.per_sample import (GhostClipper, PerExampleLoss, UnsupportedModelError, per_example_loss,
                                               vmap_clipped_sum)

log = logging.getLogger(__name__)

METHODS = ("ghost", "vmap")


@dataclass(frozen=True)
class SampleDPParams:
    """Clip norm ``C``, noise multiplier ``sigma``, the per-example clipping method and the
    batch size ``b`` of the Poisson sampler (the expected batch is ``min(b, n)`` for ``n`` rows)."""

    clip: float = 1.0
    noise_multiplier: float = 1.0
    method: str = "ghost"
    batch_size: int | None = None  # None: divide by the actual batch size (a fixed-size batch)


class DPSGD:
    """Computes privatised mini-batch gradients into a model's flat gradient buffer."""

    def __init__(self, model: nn.Module, params: SampleDPParams, loss_fn: PerExampleLoss = per_example_loss) -> None:
        if params.method not in METHODS:
            raise ValueError(f"per-example clipping method must be one of {', '.join(METHODS)}, got {params.method!r}")
        self.model = model
        self.params = params
        self.loss_fn = loss_fn
        self.method, self.fallback_reason = params.method, None
        self.clipper = None
        if params.method == "ghost":
            try:
                self.clipper = GhostClipper(model)
            except UnsupportedModelError as exc:  # e.g. peft's IA3 layers: the exact vmap path instead
                self.method, self.fallback_reason = "vmap", str(exc)
                log.warning("ghost clipping cannot handle this model (%s); clipping per example with vmap", exc)
        self._noise: torch.Tensor | None = None

    def gradient(
        self,
        batch: Mapping[str, torch.Tensor],
        grads: torch.Tensor,
        generator: torch.Generator,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        denominator: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fill ``grads`` (flat; every trainable ``.grad`` is a view of it) with the DP-SGD gradient
        ``(sum_i clip(g_i) + N(0, (sigma C)^2)) / denominator`` (default: the batch size).

        Returns the per-example losses and pre-clipping gradient norms (empty for an empty batch).
        """
        p = self.params
        size = len(next(iter(batch.values())))
        denominator = float(denominator if denominator is not None else size)
        if size == 0:  # a Poisson batch can be empty: the step is noise only
            grads.zero_()
            empty = torch.zeros(0, device=grads.device)
            norms, loss = empty, empty
        elif self.clipper is not None:
            def losses() -> torch.Tensor:
                with autocast():
                    return self.loss_fn(self.model, batch)

            norms, loss = self.clipper.clipped_sum(losses, p.clip, scale=1.0 / denominator)
        else:
            norms, loss = vmap_clipped_sum(self.model, self.loss_fn, batch, p.clip, scale=1.0 / denominator)
        if p.noise_multiplier > 0:
            if self._noise is None or self._noise.shape != grads.shape:
                self._noise = torch.empty_like(grads)
            torch.randn(grads.shape, generator=generator, out=self._noise, dtype=grads.dtype, device=grads.device)
            grads.add_(self._noise, alpha=p.noise_multiplier * p.clip / denominator)
        return loss, norms


def noise_generator(seed: int, round: int, client: int, device: torch.device) -> torch.Generator:
    """The DP-SGD noise stream of one client in one round (independent of ranks)."""
    state = np.random.SeedSequence([seed, round, client, 0xD95D]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


class DPSGDClientContext(ClientContext):
    """A :class:`ClientContext` whose local loop is DP-SGD."""

    def __init__(
        self,
        *,
        dpsgd: DPSGD,
        seed: int,
        on_done: Callable[["DPSGDClientContext"], None] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dpsgd = dpsgd
        self.seed = seed
        self.on_done = on_done
        self.clip_fraction: float = 0.0

    def train(
        self,
        loss_hook: Callable[[ClientContext, torch.Tensor], torch.Tensor] | None = None,
        after_step: Callable[[ClientContext], None] | None = None,
    ) -> tuple[int, float]:
        """DP-SGD local training; returns (steps, mean loss). Raises on a non-finite loss."""
        optimizer = self.make_optimizer()
        self.model.train()
        generator = noise_generator(self.seed, self.round, self.client_id, self.grads.device)
        b = self.dpsgd.params.batch_size
        expected = float(min(b, self.n_examples)) if b is not None else None  # q n with q = min(1, b / n)
        steps, total, clipped, seen, batches_with_rows = 0, 0.0, 0, 0, 0
        for batch in self.batches():
            losses, norms = self.dpsgd.gradient(batch, self.grads, generator, self.autocast, expected)
            loss = losses.mean() if len(losses) else torch.zeros(())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at local step {steps}")
            if loss_hook is not None:
                # a zero "data loss" that requires grad, so hooks built as autograd functions
                # (FedProx's proximal term) run their backward and add their gradient
                extra = loss_hook(self, torch.zeros((), device=self.grads.device, requires_grad=True))
                if extra.requires_grad:
                    extra.backward()  # accumulates into the (view) .grad tensors
            optimizer.step()
            if after_step is not None:
                after_step(self)
            steps += 1
            batches_with_rows += len(losses) > 0
            total += float(loss)
            clipped += int((norms > self.dpsgd.params.clip).sum())
            seen += len(norms)
        self.clip_fraction = clipped / max(seen, 1)
        if self.on_done is not None:
            self.on_done(self)
        return steps, total / max(batches_with_rows, 1)
