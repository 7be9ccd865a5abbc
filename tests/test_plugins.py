"""Algorithm plugins: ``path/to/file.py:Class``, entry points, and clear errors for broken ones."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fednlp_bench import algorithms
from fednlp_bench.algorithms import PluginError
from fednlp_bench.algorithms.harness import tiny_simulator
from fednlp_bench.cli import main

GOOD = '''
    """Damped FedAvg: the server moves a fraction of the way (a toy plugin)."""
    from dataclasses import dataclass

    from fednlp_bench.algorithms import Algorithm


    @dataclass(frozen=True)
    class DampedHParams:
        server_lr: float = 0.5


    class Damped(Algorithm):
        name = "damped"
        paper = "none (test plugin)"
        HParams = DampedHParams

        def server_update(self, global_params, agg):
            global_params.add_(agg.mean_delta, alpha=self.hparams.server_lr)
'''


def write(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


# --------------------------------------------------------------------------- file plugins
def test_file_plugin_loads_and_runs_rounds(tmp_path):
    path = write(tmp_path / "damped.py", GOOD)
    cls = algorithms.get(f"{path}:Damped")
    alg = cls.from_params({"server_lr": 0.25})
    sim = tiny_simulator(alg, client_sizes=[10, 20, 30, 40], rounds=4, local_steps=3)
    x0 = sim.global_params.clone()
    sim.run_federated()
    assert not sim.state.failures and len(sim.state.per_round) == 4
    assert not torch.equal(sim.global_params, x0)
    with pytest.raises(Exception, match="'damped' has no hyper-parameter 'mu'"):
        cls.from_params({"mu": 0.1})


@pytest.mark.slow
def test_file_plugin_smoke_run_writes_a_record(tmp_path, tiny_overrides):
    from fednlp_bench import config
    from fednlp_bench.run import run

    path = write(tmp_path / "damped.py", GOOD)
    cfg = config.resolve("tc", "smoke", tiny_overrides("fl.rounds=1", "fl.local_steps=1", "algorithm.server_lr=0.5",
                                                       f"algorithm.name={path}:Damped"))
    record, out = run(cfg)
    assert out.is_file()
    assert record["algorithm"] == {"name": "damped", "hparams": {"server_lr": 0.5}, "source": f"{path}:Damped"}
    assert record["metrics"]["failed_clients"] == []


@pytest.mark.parametrize("source, cls_name, message", [
    ("def broken(:\n", "X", r"error while importing \(SyntaxError"),
    ("import not_a_real_module_xyz\n", "X", r"error while importing \(ModuleNotFoundError: No module named "
                                            r"'not_a_real_module_xyz'\)"),
    ("raise RuntimeError('boom at import')\n", "X", r"error while importing \(RuntimeError: boom at import\)"),
    ("class Other: pass\n", "Missing", r"file has no class 'Missing'"),
    ("class NotAlg:\n    def client_update(self, ctx): pass\n", "NotAlg",
     r"is not a subclass of fednlp_bench\.algorithms\.Algorithm"),
    ("from fednlp_bench.algorithms import Algorithm\nclass NoUpdate(Algorithm):\n    client_update = None\n",
     "NoUpdate", r"missing method client_update\(\)"),
])
def test_broken_file_plugins_name_the_file_and_the_problem(tmp_path, source, cls_name, message):
    path = write(tmp_path / "plugin_under_test.py", source)
    with pytest.raises(PluginError, match=message) as info:
        algorithms.get(f"{path}:{cls_name}")
    assert str(path) in str(info.value)


def test_missing_plugin_file_and_bad_spec(tmp_path):
    with pytest.raises(PluginError, match="does not exist"):
        algorithms.get(f"{tmp_path / 'nope.py'}:X")
    with pytest.raises(PluginError, match="expected path/to/file.py:ClassName"):
        algorithms.get(f"{tmp_path / 'nope.py'}")


@pytest.mark.parametrize("body, message", [
    ("return None", r"client_update\(\) must return fednlp_bench\.algorithms\.ClientResult, got NoneType"),
    ("return {'weight': 1.0}", r"must return fednlp_bench\.algorithms\.ClientResult, got dict"),
    ("return (1, 2)", r"must return fednlp_bench\.algorithms\.ClientResult, got tuple"),
    ("return ClientResult(float('nan'), 1, 1, 0.0)", r"ClientResult\.weight must be a finite number >= 0"),
    ("return ClientResult(1.0, 1, 1, 0.0, extras={'c': [1.0]})", r"extras must be a dict of str -> torch\.Tensor"),
])
def test_wrong_client_update_return_stops_the_run_naming_the_plugin(tmp_path, body, message):
    path = write(tmp_path / "badreturn.py", f'''
        from fednlp_bench.algorithms import Algorithm, ClientResult

        class BadReturn(Algorithm):
            name = "badreturn"

            def client_update(self, ctx):
                {body}
    ''')
    alg = algorithms.get(f"{path}:BadReturn")()
    sim = tiny_simulator(alg)
    sim.algorithm.init_server(sim.global_params)
    with pytest.raises(PluginError, match=message) as info:
        sim.run_round(1)
    assert "'badreturn' (fednlp_bench_plugin_badreturn.BadReturn)" in str(info.value)
    assert sim.state.failures == []  # a broken plugin is an error, not a silently dropped client


# --------------------------------------------------------------------------- entry-point plugins
@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Fake installed distributions: a ``*.dist-info`` with ``entry_points.txt`` on ``sys.path``.

    ``importlib.metadata`` (which :func:`fednlp_bench.algorithms.discover` uses) finds them
    exactly as it finds a pip-installed package.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def install(dist: str, entries: dict[str, str], module_sources: dict[str, str]) -> None:
        info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
        (info / "entry_points.txt").write_text(f"[{algorithms.ENTRY_POINT_GROUP}]\n{lines}\n")
        for module, source in module_sources.items():
            write(site / f"{module}.py", source)
            modules.append(module)

    yield install
    for module in modules:
        sys.modules.pop(module, None)


def test_entry_point_plugins_are_listed_and_broken_ones_do_not_break_list(installed, capsys):
    installed("ep-good", {"damped": "ep_good_mod:Damped"}, {"ep_good_mod": GOOD})
    installed("ep-broken", {"needs_missing": "ep_broken_mod:Alg", "plain_class": "ep_plain_mod:Plain",
                            "no_attr": "ep_plain_mod:Nothing", "fedavg": "ep_plain_mod:Plain"},
              {"ep_broken_mod": "import not_a_real_module_xyz\n", "ep_plain_mod": "class Plain: pass\n"})

    found = algorithms.discover()
    assert found["damped"].source == "entry-point ep-good" and found["damped"].error is None
    assert "cannot import 'ep_broken_mod' (ModuleNotFoundError" in found["needs_missing"].error
    assert "is not a subclass" in found["plain_class"].error
    assert "has no attribute 'Nothing'" in found["no_attr"].error
    assert found["fedavg"].source == "builtin"  # a plugin cannot shadow a built-in
    assert "name clashes with builtin 'fedavg'" in found["fedavg@ep-broken"].error

    cls = algorithms.get("damped")
    assert cls.__name__ == "Damped" and cls.from_params({}).hparams.server_lr == 0.5
    with pytest.raises(PluginError, match=r"algorithm plugin 'needs_missing' \(ep-broken\): cannot import"):
        algorithms.get("needs_missing")

    code = main(["list"])
    out = capsys.readouterr().out
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert "entry-point ep-good" in lines["damped"] and "BROKEN" not in lines["damped"]
    assert "BROKEN: algorithm plugin 'needs_missing' (ep-broken): cannot import" in lines["needs_missing"]
    assert "BROKEN" in lines["plain_class"] and "fedprox" in lines and "scaffold" in lines


def test_unknown_algorithm_suggests_a_name():
    with pytest.raises(PluginError, match="did you mean 'fedprox'"):
        algorithms.get("fedprx")
