"""Non-IID partitioners for federated NLP: the FedNLP family (Lin et al. 2022) behind one registry.

>>> import numpy as np
>>> from fednlp_bench import partitioners
>>> p = partitioners.make("dirichlet_label", n_clients=10, seed=0, alpha=0.5)
>>> parts = p.split(labels=np.arange(1000) % 4)
>>> sum(len(x) for x in parts)
1000
"""

from __future__ import annotations

from fednlp_bench.partitioners.base import Partitioner
from fednlp_bench.partitioners.errors import PartitionError
from fednlp_bench.partitioners.partition import Partition
from fednlp_bench.partitioners.registry import available, get, make


def split_train_test(partitioner: Partitioner, train_labels=None, test_labels=None, **kwargs) -> Partition:
    """Train and test partition with matching per-client distributions; see :meth:`Partitioner.split_train_test`."""
    return partitioner.split_train_test(train_labels, test_labels, **kwargs)


__all__ = ["Partition", "PartitionError", "Partitioner", "available", "get", "make", "split_train_test"]
