"""A run's differential privacy, built from ``cfg.privacy``: what the engine gets and what the record says.

Privacy reaches training only through the engine's two general mechanisms:

1. an update postprocessor (:class:`UserLevelClipping`): DP-FedAvg's client-side clipping and
   equal client weights, then server-side Gaussian noise, adaptive clip update and fixed
   denominator on the all-reduced sum;
2. a client-context factory (:meth:`PrivacyRuntime.context_factory`): sample-level DP-SGD as
   the local loop (the centralized baseline included), reading Poisson-sampled batches
   (:meth:`PrivacyRuntime.batcher`).

:meth:`PrivacyRuntime.summary` is the result record's ``privacy`` section: parameters, (epsilon,
delta) with the accountant and sampling assumption used, computed from the cohorts the engine
recorded in its training state.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from fednlp_bench.algorithms.base import ClientContext, ClientResult
from fednlp_bench.batching import poisson_pass
from fednlp_bench.postprocess import RoundSum, UpdatePostprocessor
from fednlp_bench.privacy import accounting
from fednlp_bench.privacy.dp_sgd import DPSGD, DPSGDClientContext, SampleDPParams
from fednlp_bench.privacy.per_sample import per_example_loss
from fednlp_bench.privacy.user_level import UserDPParams, UserLevelDP

USER_SAMPLING_NOTE = (
    "The engine samples a fixed-size cohort uniformly without replacement among the clients that hold data in "
    "the round; epsilon is computed for Poisson sampling with the same rate, clients_per_round / clients holding "
    "data as recorded with each round's cohort, round by round (an approximation, standard practice); a round "
    "that sampled nobody releases nothing and is not counted. epsilon_fixed_size is the exact RDP analysis of "
    "sampling without replacement under replace-one neighbours (Wang et al. 2019)."
)
SAMPLE_SAMPLING_NOTE = (
    "Clients read Poisson-sampled batches (each row independently with rate batch_size / client size, variable "
    "batch size, gradient sum divided by the expected batch size), the sampling the accountant assumes (Abadi et "
    "al. 2016; Opacus); epsilon is composed over the local steps of the rounds the client took part in (the "
    "cohorts the engine recorded; a dropped client counts as having trained); no amplification by client sampling "
    "is claimed. Reported: the worst client."
)

CENTRAL_SAMPLING_NOTE = (
    "Poisson-sampled batches over the whole training set (each row independently with rate batch_size / "
    "training examples, variable batch size); epsilon is computed for that sampling over all steps of the run."
)
DELTA_NOTE = "delta defaults to min(1e-5, N^-1.1), well below 1/N (N = {unit}); set privacy.{key} to choose another"


class PrivacyRuntime:
    """User-level DP-FedAvg and/or sample-level DP-SGD for one run."""

    def __init__(
        self,
        pcfg: Any,
        *,
        seed: int,
        client_sizes: list[int],
        clients_per_round: int,
        rounds: int,
        batch_size: int,
        local_epochs: int,
        local_steps: int | None,
        sampler: str,
        n_train: int,
        task: Any = None,
        centralized: bool = False,
    ) -> None:
        self.cfg = pcfg
        self.seed = seed
        self.client_sizes = np.asarray(client_sizes, dtype=np.int64)
        self.n_clients = len(client_sizes)
        self.clients_per_round = clients_per_round
        self.rounds = rounds
        self.batch_size = batch_size
        self.local_epochs = local_epochs
        self.local_steps = local_steps
        self.sampler = sampler
        self.n_train = n_train
        self.centralized = centralized
        self.loss_fn = getattr(task, "per_example_loss", None) or per_example_loss
        self.user: UserLevelDP | None = None
        self.user_noise_source = None
        if pcfg.user_level:
            if centralized:
                raise ValueError("privacy.user_level needs federated clients; the centralized baseline has none")
            noise = pcfg.user_noise
            self.user_noise_source = "given"
            if pcfg.user_target_epsilon is not None:
                noise = accounting.noise_for_epsilon(
                    pcfg.user_target_epsilon, self.user_rate, rounds, self.user_delta, pcfg.accountant)
                self.user_noise_source = f"solved for epsilon {pcfg.user_target_epsilon:g} ({pcfg.accountant})"
            elif noise is None:
                noise = 1.0
            self.user = UserLevelDP(
                UserDPParams(
                    clip=pcfg.user_clip, noise_multiplier=float(noise), expected_clients=clients_per_round,
                    adaptive=pcfg.adaptive_clip, target_quantile=pcfg.clip_quantile, clip_lr=pcfg.clip_lr,
                    count_stddev=pcfg.clip_count_noise,
                ),
                seed,
            )
        self.sample = SampleDPParams(pcfg.sample_clip, pcfg.sample_noise, pcfg.per_sample_method, batch_size) \
            if pcfg.sample_level else None
        self._dpsgd: DPSGD | None = None
        self._clip_fractions: list[float] = []

    # ---- derived quantities ----------------------------------------------------
    @property
    def user_rate(self) -> float:
        """clients_per_round / clients that can be sampled (the uniform sampler skips clients without rows)."""
        return min(1.0, self.clients_per_round / max(int((self.client_sizes > 0).sum()), 1))

    def user_rounds(self, cohorts: list, sizes_at: Callable[[int], np.ndarray] | None) -> list[tuple[float, int]]:
        """(sampling rate, clients that could be sampled) of every round that sampled someone.

        The population is what each recorded cohort says held data when it was drawn (it changes
        in the continual setting); rounds without a recorded population fall back to the client
        sizes. A round that sampled nobody releases nothing computed from client data (no update,
        no noise) and is not a step of the mechanism.
        """
        recorded = {c.round: c for c in cohorts}
        out = []
        for r in range(1, self.rounds + 1):
            cohort = recorded.get(r)
            if cohort is not None and cohort.eligible is not None:
                eligible = int(cohort.eligible)
            else:
                eligible = int((np.asarray(sizes_at(r) if sizes_at is not None else self.client_sizes) > 0).sum())
            if eligible == 0 or (cohort is not None and not cohort.sampled):
                continue
            out.append((min(1.0, self.clients_per_round / eligible), eligible))
        return out

    @property
    def user_delta(self) -> float:
        return self.cfg.delta if self.cfg.delta is not None else accounting.default_delta(self.n_clients)

    @property
    def sample_delta(self) -> float:
        return self.cfg.sample_delta if self.cfg.sample_delta is not None else accounting.default_delta(self.n_train)

    # ---- what the engine gets -------------------------------------------------------
    def postprocessors(self) -> list[UpdatePostprocessor]:
        """User-level DP as an update postprocessor (empty without user-level DP)."""
        return [UserLevelClipping(self.user)] if self.user is not None else []

    def context_factory(self) -> Callable[..., ClientContext] | None:
        """The DP-SGD client context when sample-level DP is on, else None (the plain loop)."""
        if self.sample is None:
            return None
        return self._make_dpsgd_context

    def batcher(self) -> Callable | None:
        """DP-SGD's Poisson batches (:func:`fednlp_bench.batching.poisson_pass`) when sample-level DP is
        on, else None (length-grouped batches): the sampling the accountant assumes."""
        return poisson_pass if self.sample is not None else None

    def _make_dpsgd_context(self, **kwargs: Any) -> ClientContext:
        if self._dpsgd is None:
            self._dpsgd = DPSGD(kwargs["model"], self.sample, self.loss_fn)
        return DPSGDClientContext(dpsgd=self._dpsgd, seed=self.seed,
                                  on_done=lambda ctx: self._clip_fractions.append(ctx.clip_fraction), **kwargs)

    # ---- record -------------------------------------------------------------------
    def _client_steps(self, cohorts: list, sizes_at: Callable[[int], np.ndarray] | None) -> list[tuple[float, int]]:
        """Per client (largest sampling rate, local DP-SGD steps) over the rounds it was sampled in.

        ``cohorts`` are the rounds' recorded cohorts; a dropped client counts as having trained
        (an upper bound).
        """
        b = self.batch_size
        rate = np.zeros(self.n_clients)
        steps = np.zeros(self.n_clients, dtype=np.int64)
        for cohort in cohorts:
            sizes = np.asarray(sizes_at(cohort.round) if sizes_at is not None else self.client_sizes)
            for c in cohort.sampled:
                n = int(sizes[c])
                if n == 0:
                    continue
                rate[c] = max(rate[c], min(1.0, b / n))
                steps[c] += self.local_steps if self.local_steps is not None else self.local_epochs * math.ceil(n / b)
        return [(float(q), int(k)) for q, k in zip(rate, steps) if k > 0]

    def _sample_guarantee(self, cohorts: list, sizes_at, centralized_steps: int | None) -> dict[str, Any]:
        p, b, acc = self.sample, self.batch_size, self.cfg.accountant
        if self.centralized:
            pairs = {(min(1.0, b / max(self.n_train, 1)), int(centralized_steps or 0))}
        else:
            pairs = set(self._client_steps(cohorts, sizes_at))
        # epsilon grows with both the rate and the steps: only undominated pairs can be the worst
        front = [x for x in pairs if not any(y != x and y[0] >= x[0] and y[1] >= x[1] for y in pairs)]
        worst = None
        for q, steps in front:
            g = accounting.epsilon(p.noise_multiplier, q, steps, self.sample_delta, acc)
            if worst is None or g.epsilon > worst.epsilon:
                worst = g
        out: dict[str, Any] = {
            "clip": p.clip,
            "noise_multiplier": p.noise_multiplier,
            "method": self._dpsgd.method if self._dpsgd is not None else p.method,  # ghost may fall back to vmap
            "method_fallback": self._dpsgd.fallback_reason if self._dpsgd is not None else None,
            "delta": self.sample_delta,
            "delta_note": None if self.cfg.sample_delta is not None else DELTA_NOTE.format(
                unit="training examples", key="sample_delta"),
            "accountant": acc,
            "sampling": "poisson",
            "sampling_note": CENTRAL_SAMPLING_NOTE if self.centralized else SAMPLE_SAMPLING_NOTE,
            "clipped_fraction": float(np.mean(self._clip_fractions)) if self._clip_fractions else None,
        }
        if worst is not None:
            g = worst.to_dict()
            out.update(epsilon=g["epsilon"], worst_client_sampling_rate=worst.sampling_rate,
                       worst_client_steps=worst.steps)
        else:
            out["epsilon"] = 0.0
        return out

    def _user_guarantee(self, cohorts: list, sizes_at: Callable[[int], np.ndarray] | None) -> dict[str, Any]:
        u, acc = self.user.params, self.cfg.accountant
        rounds = self.user_rounds(cohorts, sizes_at)
        main = accounting.epsilon_of_rounds(u.noise_multiplier, rounds, self.user_delta, acc)
        fixed = accounting.epsilon_of_rounds(u.noise_multiplier, rounds, self.user_delta, "rdp", "fixed_size")
        out = {
            "mechanism": "DP-FedAvg (McMahan et al. 2018)" + (
                ", adaptive clipping (Andrew et al. 2021)" if u.adaptive else ""),
            "clip": u.clip,
            "final_clip": self.user.clip,
            "noise_multiplier": u.noise_multiplier,
            "noise_source": self.user_noise_source,
            "update_noise_multiplier": u.delta_noise_multiplier,
            "adaptive": u.adaptive,
            "target_quantile": u.target_quantile if u.adaptive else None,
            "clip_lr": u.clip_lr if u.adaptive else None,
            "clipped_count_stddev": u.count_noise if u.adaptive else None,
            "clipped_count": "centred bits b_i - 1/2 (sensitivity 1/2), clamped to [0, 1]" if u.adaptive else None,
            "weighting": "uniform, fixed denominator = clients_per_round",
            "expected_clients": u.expected_clients,
            "sampling_rate": main.sampling_rate,
            "sampled_from": min((pop for _, pop in rounds), default=None),
            "rounds": self.rounds,
            "accounted_rounds": len(rounds),  # rounds that sampled someone
            "epsilon": main.to_dict()["epsilon"],
            "delta": self.user_delta,
            "delta_note": None if self.cfg.delta is not None else DELTA_NOTE.format(unit="clients", key="delta"),
            "accountant": acc,
            "sampling": "poisson (approximation)",
            "epsilon_fixed_size": fixed.to_dict()["epsilon"],
            "sampling_note": USER_SAMPLING_NOTE,
            "per_round": [vars(s) for s in self.user.history],
        }
        if main.sampling_rate > self.user_rate + 1e-12:
            out["rate_note"] = (f"some rounds had fewer clients holding data than the run started with: sampling "
                                f"rate up to {main.sampling_rate:.3g} (noise was set for {self.user_rate:.3g}); "
                                "epsilon composes the actual rate of every round")
        if self.sampler != "uniform":
            out["warning"] = f"sampler '{self.sampler}' is not uniform: epsilon does not apply"
        return out

    def summary(
        self, cohorts: list | None = None, sizes_at: Callable[[int], np.ndarray] | None = None,
        centralized_steps: int | None = None,
    ) -> dict[str, Any]:
        """The record's ``privacy`` section: ``cohorts`` as recorded in the training state,
        ``sizes_at(round)`` the client sizes (continual setting)."""
        out: dict[str, Any] = {"user_level": None, "sample_level": None}
        if self.user is not None:
            out["user_level"] = self._user_guarantee(cohorts or [], sizes_at)
        if self.sample is not None:
            out["sample_level"] = self._sample_guarantee(cohorts or [], sizes_at, centralized_steps)
        return out

    def state_dict(self) -> dict:
        """JSON-able state for checkpoints: adaptive clip norm and per-round history."""
        state: dict[str, Any] = {"clip_fractions": list(self._clip_fractions)}
        if self.user is not None:
            state.update(user=self.user.state_dict(), history=[vars(s) for s in self.user.history])
        return state

    def load_state_dict(self, state: dict) -> None:
        if self.user is not None and "user" in state:
            from fednlp_bench.privacy.user_level import RoundStats

            self.user.load_state_dict(state["user"])
            self.user.history = [RoundStats(**row) for row in state.get("history", [])]
        self._clip_fractions = list(state.get("clip_fractions", []))


class UserLevelClipping(UpdatePostprocessor):
    """DP-FedAvg as an update postprocessor: clip each client's delta, noise the round's sum."""

    name = "user_level_dp"

    def __init__(self, user: UserLevelDP) -> None:
        self.user = user

    def client(self, delta: torch.Tensor, ctx: ClientContext, result: ClientResult) -> None:
        """Clip the delta in place to norm C and give every client weight 1."""
        if result.extras:
            raise RuntimeError(
                f"user-level DP does not privatise algorithm extras ({', '.join(result.extras)}); "
                "use an algorithm without them (e.g. fedavg, fedprox, fedadam)"
            )
        self.user.clip_update(delta)
        result.weight = 1.0

    def server(self, agg: RoundSum, world: Any) -> None:
        """Noise the all-reduced sum; the mean's denominator is the expected cohort size."""
        unclipped = self.user.unclipped_count
        if getattr(world, "size", 1) > 1:
            count = torch.tensor([float(unclipped)], dtype=torch.float64)
            world.all_reduce(count)
            unclipped = int(count.item())
        agg.total_weight = self.user.noise_sum(agg.sum, agg.round, agg.n_clients, unclipped)


def from_config(
    cfg: Any, *, client_sizes: list[int], n_train: int, task: Any, centralized: bool, algorithm: Any = None
) -> PrivacyRuntime | None:
    """The run's privacy runtime, or ``None`` when ``cfg.privacy`` asks for nothing."""
    from fednlp_bench.config import ConfigError

    p = cfg.privacy
    if not (p.user_level or p.sample_level):
        return None
    if p.user_level and getattr(algorithm, "extra_broadcast_vectors", 0):
        raise ConfigError(
            f"privacy.user_level: algorithm '{cfg.algorithm.name}' exchanges extra vectors (e.g. control variates) "
            "that DP-FedAvg does not privatise; use fedavg, fedprox or a FedOpt variant"
        )
    try:
        return PrivacyRuntime(
            p, seed=cfg.seed, client_sizes=client_sizes,
            clients_per_round=1 if centralized else cfg.fl.clients_per_round, rounds=cfg.fl.rounds,
            batch_size=cfg.fl.batch_size, local_epochs=cfg.fl.local_epochs, local_steps=cfg.fl.local_steps,
            sampler=cfg.fl.sampler, n_train=n_train, task=task, centralized=centralized,
        )
    except (ValueError, accounting.AccountingError) as exc:
        raise ConfigError(f"privacy: {exc}") from None
