"""Algorithm registry: built-ins, entry-point plugins and ``path/to/file.py:ClassName``.

Plugins register under the entry-point group ``fednlp_bench.algorithms``
(``name = package.module:ClassName``). A broken plugin never takes down the
others: :func:`discover` records its error and :func:`get` raises a clear
:class:`PluginError` naming it. Plugins cannot take a built-in's name.
"""
from __future__ import annotations

from fednlp_bench.algorithms.base import Aggregate, Algorithm, ClientContext, ClientResult, NoHParams
from fednlp_bench.errors import PluginError
from fednlp_bench.registry import Entry, Registry, subclass_of

ENTRY_POINT_GROUP = "fednlp_bench.algorithms"
#: the reference baseline: one client holding all the data, trained by fednlp_bench.centralized
CENTRALIZED = "centralized"


ALGORITHMS: Registry[type[Algorithm]] = Registry(
    "algorithm", PluginError, ENTRY_POINT_GROUP,
    subclass_of(Algorithm, "fednlp_bench.algorithms.Algorithm", PluginError, ("client_update", "server_update")),
    files=True)
ALGORITHMS.add("fedavg", "fednlp_bench.algorithms.fedavg:FedAvg")
ALGORITHMS.add("fedprox", "fednlp_bench.algorithms.fedprox:FedProx")
ALGORITHMS.add("fedadam", "fednlp_bench.algorithms.fedopt:FedAdam")
ALGORITHMS.add("fedyogi", "fednlp_bench.algorithms.fedopt:FedYogi")
ALGORITHMS.add("fedadagrad", "fednlp_bench.algorithms.fedopt:FedAdagrad")
ALGORITHMS.add("fedavgm", "fednlp_bench.algorithms.fedopt:FedAvgM")
ALGORITHMS.add("scaffold", "fednlp_bench.algorithms.scaffold:Scaffold")
ALGORITHMS.add("fednova", "fednlp_bench.algorithms.fednova:FedNova")


def discover() -> dict[str, Entry]:
    """All known algorithms with their source (the centralized baseline included); plugin
    load errors are recorded, not raised."""
    found = ALGORITHMS.discover()
    found[CENTRALIZED] = Entry(CENTRALIZED, "builtin", "fednlp_bench.centralized (reference baseline)")
    return dict(sorted(found.items()))


def get(name: str) -> type[Algorithm]:
    """Resolve an algorithm name or ``file.py:Class`` to its class."""
    if name == CENTRALIZED:
        raise PluginError("'centralized' is the reference baseline, not an FL algorithm (fednlp_bench.centralized)")
    return ALGORITHMS.get(name)


__all__ = [
    "Aggregate", "Algorithm", "ClientContext", "ClientResult", "NoHParams", "ALGORITHMS",
    "PluginError", "discover", "get", "ENTRY_POINT_GROUP", "CENTRALIZED",
]
