"""FedAvg: McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017.

Clients run local AdamW/SGD epochs from the broadcast; the server adds the
example-weighted mean of the client deltas (server learning rate 1). Everything
is the :class:`~fednlp_bench.algorithms.base.Algorithm` default, which is the point.

Example::

    fednlp-bench run --task tc --preset smoke --algorithm fedavg
"""
from __future__ import annotations

from fednlp_bench.algorithms.base import Algorithm


class FedAvg(Algorithm):
    name = "fedavg"
    paper = "McMahan et al. 2017, Communication-Efficient Learning of Deep Networks from Decentralized Data"
