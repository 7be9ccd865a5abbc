"""One registry type: the same did-you-mean errors, plugin loading and BROKEN listing everywhere."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from fednlp_bench import algorithms, partitioners, sampling, tasks
from fednlp_bench.cli import main
from fednlp_bench.errors import DatasetError, PartitionError, PluginError, SamplerError
from fednlp_bench.partitioners.registry import PARTITIONERS


@pytest.fixture
def dist(tmp_path, monkeypatch):
    """Install a fake distribution with entry points in any group (found like a pip-installed one)."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules = []

    def install(name: str, groups: dict[str, dict[str, str]], sources: dict[str, str]) -> None:
        info = site / f"{name.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) for group, entries in groups.items()))
        for module, source in sources.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            modules.append(module)

    yield install
    for module in modules:
        sys.modules.pop(module, None)


@pytest.mark.parametrize("get, bad, error, hint", [
    (algorithms.get, "fedprx", PluginError, "fedprox"),
    (tasks.get, "tcc", DatasetError, "tc"),
    (partitioners.get, "dirichlet_lable", PartitionError, "dirichlet_label"),
    (sampling.get, "activty", SamplerError, "activity"),
])
def test_unknown_names_list_what_is_available_and_suggest(get, bad, error, hint):
    with pytest.raises(error) as info:
        get(bad)
    msg = str(info.value)
    assert f"'{bad}'" in msg and "(available: " in msg and f"did you mean '{hint}'?" in msg and "\n" not in msg


PARTITIONER_SOURCE = """
    import numpy as np
    from fednlp_bench.partitioners.allocation import parts_from_owner
    from fednlp_bench.partitioners.base import NoParams, Partitioner

    class EveryOther(Partitioner):
        name = "every_other"
        Params = NoParams

        def _split(self, inputs, rng):
            owner = np.arange(inputs.n_rows) % self.n_clients
            return parts_from_owner(owner, self.n_clients), None
"""


def test_entry_point_partitioner_task_and_sampler_plugins(dist, capsys):
    dist("my-plugins", {
        "fednlp_bench.partitioners": {"every_other": "my_parts:EveryOther", "broken_p": "my_missing:X"},
        "fednlp_bench.samplers": {"first_k": "my_samplers:first_k", "not_callable": "my_samplers:VALUE"},
        "fednlp_bench.tasks": {"broken_t": "my_samplers:VALUE"},
    }, {"my_parts": PARTITIONER_SOURCE,
        "my_samplers": "import numpy as np\nVALUE = 3\ndef first_k(round, sizes, k, rng):\n    return np.arange(k)\n"})
    parts = partitioners.make("every_other", 3, 0).split(n_rows=7)
    assert [p.tolist() for p in parts] == [[0, 3, 6], [1, 4], [2, 5]]
    assert sampling.sample("first_k", 1, np.ones(5), 2, np.random.default_rng(0)).tolist() == [0, 1]
    with pytest.raises(SamplerError, match="not callable"):
        sampling.get("not_callable")
    with pytest.raises(DatasetError, match="is not a subclass of fednlp_bench.tasks.TaskAdapter"):
        tasks.get("broken_t")
    assert "cannot import 'my_missing'" in PARTITIONERS.discover()["broken_p"].error
    assert main(["list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert "BROKEN" in lines["broken_p"] and "BROKEN" in lines["not_callable"] and "BROKEN" in lines["broken_t"]
    assert "entry-point my-plugins" in lines["every_other"] and "BROKEN" not in lines["every_other"]


def test_plugins_cannot_take_a_builtin_name(tmp_path, dist):
    source = "from fednlp_bench.algorithms.fedavg import FedAvg\nclass Mine(FedAvg):\n    name = 'fedavg'\n"
    path = tmp_path / "impostor.py"
    path.write_text(source)
    with pytest.raises(PluginError, match="declares the name 'fedavg' of a built-in algorithm"):
        algorithms.get(f"{path}:Mine")
    dist("impostor", {"fednlp_bench.algorithms": {"myavg": "impostor_mod:Mine"}}, {"impostor_mod": source})
    with pytest.raises(PluginError, match="declares the name 'fedavg'"):
        algorithms.get("myavg")
