"""User-level DP-FedAvg: clip each client's update, noise the sum on the server.

McMahan, Ramage, Talwar & Zhang 2018, "Learning Differentially Private
Recurrent Language Models" (DP-FedAvg): every client's model delta is clipped
to L2 norm ``C``; the server sums the clipped deltas with equal weights, adds
``N(0, (sigma C)^2)`` per coordinate and divides by the *expected* cohort size
(a fixed denominator, so the sensitivity of the mean is ``C / m``).

Adaptive clipping (Andrew, Thakkar, McMahan & Ramaswamy 2021, "Differentially
Private Learning with Adaptive Clipping"): each client also reports the bit
``b_i = [||update_i|| <= C]``. As in the paper and TF-Privacy's
``QuantileEstimatorQuery``, the server sums the *centred* bits ``b_i - 1/2``
(so one client moves the sum by at most 1/2), adds ``N(0, sigma_b^2)``,
divides by the expected cohort size ``m``, adds 1/2 back and clamps to
[0, 1]: ``b_hat = clamp((sum_i (b_i - 1/2) + N(0, sigma_b^2)) / m + 1/2)``.
``C`` then moves geometrically towards the target quantile ``gamma``:
``C <- C * exp(-eta (b_hat - gamma))``. With sensitivity 1/2 the count is a
Gaussian mechanism with noise multiplier ``2 sigma_b``; the delta noise is
raised to ``sigma_delta = (sigma^-2 - (2 sigma_b)^-2)^-1/2`` so that the pair
has overall noise multiplier ``sigma`` (their Theorem 1): two Gaussian
mechanisms on the same record compose to one with
``sigma^-2 = sigma_delta^-2 + (2 sigma_b)^-2``.

Noise is drawn from a ``torch.Generator`` seeded by (run seed, round): the same
on every rank (each adds it once, to the all-reduced sum) and reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class UserDPParams:
    """``clip`` (initial ``C`` if adaptive), ``noise_multiplier`` (sigma), fixed denominator ``expected_clients``."""

    clip: float
    noise_multiplier: float
    expected_clients: int
    adaptive: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    count_stddev: float | None = None  # sigma_b; default expected_clients / 20 (Andrew et al. 2021)

    @property
    def count_noise(self) -> float:
        return self.count_stddev if self.count_stddev is not None else self.expected_clients / 20

    @property
    def delta_noise_multiplier(self) -> float:
        """Noise multiplier of the update sum (raised when the clipped count takes some of the budget)."""
        z = self.noise_multiplier
        if not self.adaptive or z == 0:
            return z
        rest = z**-2 - (2 * self.count_noise) ** -2
        if rest <= 0:
            raise ValueError(
                f"adaptive clipping: clipped-count noise {self.count_noise:g} is too small for noise multiplier "
                f"{z:g}; it must exceed noise_multiplier / 2 = {z / 2:g}"
            )
        return rest**-0.5


@dataclass
class RoundStats:
    round: int
    clip: float
    n_clients: int
    unclipped_fraction: float
    mean_update_norm: float


class UserLevelDP:
    """DP-FedAvg mechanism; :meth:`clip_update` per client, :meth:`noise_sum` once per round."""

    def __init__(self, params: UserDPParams, seed: int) -> None:
        if params.clip <= 0:
            raise ValueError(f"user-level clip must be > 0, got {params.clip}")
        params.delta_noise_multiplier  # noqa: B018 - validates the adaptive noise split
        self.params = params
        self.seed = seed
        self.clip = float(params.clip)
        self.history: list[RoundStats] = []
        self._unclipped = 0
        self._norms: list[float] = []

    def clip_update(self, delta: torch.Tensor) -> float:
        """Clip ``delta`` in place to norm ``C``; returns its norm before clipping."""
        norm = float(torch.linalg.vector_norm(delta))
        if not math.isfinite(norm):
            raise FloatingPointError("non-finite model update")  # the engine drops the client
        if norm > self.clip:
            delta.mul_(self.clip / norm)
        else:
            self._unclipped += 1
        self._norms.append(norm)
        return norm

    def generator(self, round: int, device: torch.device) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, round, 0x05E2]).generate_state(2, dtype=np.uint32)
        return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))

    def noise_sum(self, total: torch.Tensor, round: int, n_clients: int, unclipped: int | None = None) -> float:
        """Add Gaussian noise to the (all-reduced) sum of clipped updates; returns the fixed denominator.

        ``n_clients`` is the number of clipped updates in the sum and ``unclipped``
        the cohort-wide count of unclipped ones (after an all-reduce; defaults to
        this process's count). Updates the clip norm if adaptive.
        """
        p = self.params
        gen = self.generator(round, total.device)
        sigma = p.delta_noise_multiplier * self.clip
        if sigma > 0:
            total.add_(torch.randn(total.shape, generator=gen, dtype=total.dtype, device=total.device), alpha=sigma)
        count = self._unclipped if unclipped is None else unclipped
        norms = self._norms
        self.history.append(RoundStats(round, self.clip, n_clients, count / max(n_clients, 1),
                                       float(np.mean(norms)) if norms else float("nan")))
        if p.adaptive:
            noise = float(torch.randn((), generator=gen, dtype=torch.float64, device=total.device)) * p.count_noise
            self.clip *= math.exp(-p.clip_lr * (self.unclipped_estimate(count, n_clients, noise) - p.target_quantile))
        self._unclipped = 0
        self._norms = []
        return float(p.expected_clients)

    def unclipped_estimate(self, unclipped: int, n_clients: int, noise: float) -> float:
        """``b_hat``: the noised fraction of unclipped updates from centred bits, clamped to [0, 1]."""
        centred = unclipped - 0.5 * n_clients  # sum of (b_i - 1/2): one client moves it by 1/2
        return min(1.0, max(0.0, (centred + noise) / self.params.expected_clients + 0.5))

    @property
    def unclipped_count(self) -> int:
        return self._unclipped

    def state_dict(self) -> dict:
        return {"clip": self.clip}

    def load_state_dict(self, state: dict) -> None:
        self.clip = float(state["clip"])
