"""Differential privacy for federated runs (docs/privacy.md).

* :mod:`~fednlp_bench.privacy.per_sample` - exact batched per-example clipping (ghost clipping, vmap);
* :mod:`~fednlp_bench.privacy.dp_sgd` - sample-level DP-SGD inside clients (Abadi et al. 2016);
* :mod:`~fednlp_bench.privacy.user_level` - DP-FedAvg with fixed or adaptive clipping
  (McMahan et al. 2018; Andrew et al. 2021);
* :mod:`~fednlp_bench.privacy.accounting` - epsilon with Google's ``dp-accounting`` (RDP, PLD);
* :mod:`~fednlp_bench.privacy.runtime` - the post-processor the engine calls, built from ``cfg.privacy``.
"""
