"""The (epsilon, delta) each `make bench-privacy` run reports, computed without training.

    python benchmarks/privacy_epsilons.py [--set privacy.delta=0.1 ...]

`make bench-privacy` trains and audits five models (each about 15-30 minutes on a busy 2-core
CPU). Its guarantees do not depend on the training, only on the data sizes, the cohorts and the
noise, so this script builds each run exactly as ``fednlp-bench run`` does up to training (data,
validation split, partition, canary copies, privacy runtime), draws the cohorts the engine draws
(same seed, sampler and dropout) and prints the privacy section the run's record would hold.
Next to it, the same guarantee from dp-accounting called directly (PLD with a finer
discretisation, and RDP), so a wrapper bug would show as a mismatch.

Extra ``--set`` overrides apply to every setting; ``--at-delta D`` adds a column with the same
mechanism's epsilon at delta ``D`` (dp-accounting PLD). The old default delta (1/N) is
``--set privacy.delta=0.1 --set privacy.sample_delta=<1/training examples> --at-delta 1e-5``.
"""
from __future__ import annotations

import argparse
import sys

SETTINGS = [  # the privacy runs of `make bench-privacy` (Makefile: PRIVACY_EPSILONS, the DP-SGD run)
    ("DP-FedAvg, target epsilon 50", ["privacy.user_level=true", "privacy.user_target_epsilon=50"]),
    ("DP-FedAvg, target epsilon 8", ["privacy.user_level=true", "privacy.user_target_epsilon=8"]),
    ("DP-FedAvg, target epsilon 1", ["privacy.user_level=true", "privacy.user_target_epsilon=1"]),
    ("FedAvg + DP-SGD, sigma 1", ["privacy.sample_level=true", "privacy.sample_noise=1.0"]),
]
AUDIT = ["privacy.audit=true", "privacy.audit_reference_models=2", "privacy.canaries=10"]  # PRIVACY_AUDIT


def direct_epsilon(sigma: float, q: float, steps: int, delta: float, accountant: str) -> float:
    """``steps`` Poisson-subsampled Gaussians, composed by dp-accounting directly."""
    import logging

    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    acc = (pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4) if accountant == "pld"
           else rdp_privacy_accountant.RdpAccountant())
    logging.getLogger("absl").setLevel(logging.ERROR)  # RDP warns about the small orders it drops
    return float(acc.compose(event).get_epsilon(delta))


def guarantee(overrides: list[str]) -> dict:
    """The record's privacy section for ``tc``/``quick``/``fedavg`` with ``overrides``, cohorts drawn as
    the engine draws them (no training)."""
    import numpy as np

    from fednlp_bench import config, run, sampling

    cfg = config.resolve("tc", "quick", overrides, **{"algorithm.name": "fedavg", "wandb": "disabled"})
    algorithm = run.validate_up_front(cfg)
    prep = run.prepare(cfg)
    data = run.assemble_data(cfg, prep, algorithm is None)
    if cfg.privacy.canaries:  # as run.build: the canary copies join the most-sampled client
        plan = sampling.CohortSchedule(cfg.fl.sampler, cfg.fl.clients_per_round, cfg.seed).plan(
            cfg.fl.rounds, np.array([len(c) for c in data.client_train]))
        run.CanaryAudit(finished=None).insert(cfg, prep, data.client_train, plan)
    privacy = run.build_privacy(cfg, prep, data, algorithm)
    clients = run.client_data(cfg.fl, data.client_train, cfg.seed)
    schedule = sampling.CohortSchedule(cfg.fl.sampler, cfg.fl.clients_per_round, cfg.seed, cfg.fl.dropout)
    cohorts = [schedule.draw(r, clients.sizes(r)) for r in range(1, cfg.fl.rounds + 1)]
    return privacy.summary(cohorts, clients.sizes)


def report(name: str, section: dict, at_delta: float | None) -> str:
    user, sample = section["user_level"], section["sample_level"]
    if user is not None:
        sigma, q, steps = user["noise_multiplier"], user["sampling_rate"], user["accounted_rounds"]
        delta = user["delta"]
        unit = "per client"
    else:
        sigma, q, steps, delta = (sample["noise_multiplier"], sample["worst_client_sampling_rate"],
                                  sample["worst_client_steps"], sample["delta"])
        unit = "per example, worst client"
    g = user or sample
    pld, rdp = (direct_epsilon(sigma, q, steps, delta, a) for a in ("pld", "rdp"))
    extra = f" {direct_epsilon(sigma, q, steps, at_delta, 'pld'):.3f} |" if at_delta else ""
    return (f"| {name} | {sigma:.4g} | {q:.4g} | {steps} | {g['epsilon']:.3f} ({unit}) | {delta:.1e} | "
            f"{pld:.3f} | {rdp:.3f} |" + extra)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override")
    parser.add_argument("--at-delta", type=float, default=None, help="also print epsilon at this delta")
    args = parser.parse_args(argv)
    extra = f" epsilon at delta {args.at_delta:g} |" if args.at_delta else ""
    print("| setting | sigma | sampling rate | steps | record: epsilon | delta | dp-accounting PLD | RDP |" + extra)
    print("|---|---|---|---|---|---|---|---|" + ("---|" if extra else ""))
    for name, overrides in SETTINGS:
        print(report(name, guarantee(overrides + AUDIT + args.overrides), args.at_delta), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
