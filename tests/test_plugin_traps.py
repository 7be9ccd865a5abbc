"""The plugin API's traps are closed: re-iterable batches, clear errors naming the plugin, no silent
no-op rounds, read-only run configuration, debuggable failures and identifiable plugin code."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from fednlp_bench import algorithms, config
from fednlp_bench.algorithms import Algorithm, ClientResult, PluginError
from fednlp_bench.algorithms.harness import tiny_simulator


class QFairLoss(Algorithm):
    """q-FFL's first step: the client's loss at the broadcast over its batches, then normal training."""

    name = "qffl_like"

    def client_update(self, ctx):
        with torch.no_grad():
            losses = [float(ctx.loss(batch)) for batch in ctx.batches()]
        self.before = sum(losses) / len(losses)
        steps, loss = ctx.train()
        self.lr = self.config["fl"]["client_lr"]
        return ClientResult(weight=1.0, n_examples=ctx.n_examples, n_steps=steps, loss=loss)


def test_batches_can_be_read_before_training_and_config_is_readable():
    alg = QFairLoss()
    sim = tiny_simulator(alg, local_steps=3, client_lr=0.02)
    before = sim.global_params.clone()
    sim.start_server()
    sim.run_round(1)
    assert sim.state.costs.local_steps == 2 * 3  # two clients, three steps each, after the loss pass
    assert not torch.equal(before, sim.global_params)
    assert alg.lr == 0.02 and alg.before > 0
    with pytest.raises(TypeError):
        alg.config["fl"]["client_lr"] = 1.0  # read-only


class ZeroSteps(Algorithm):
    name = "zero_steps"

    def client_update(self, ctx):
        for _ in ctx.batches():  # forgets to train
            pass
        return ClientResult(weight=1.0, n_examples=ctx.n_examples, n_steps=0, loss=0.0)


def test_a_round_in_which_no_client_trained_is_an_error():
    sim = tiny_simulator(ZeroSteps())
    sim.start_server()
    with pytest.raises(PluginError, match=r"'zero_steps' .*no client took a local step in round 1"):
        sim.run_round(1)


class NaNServer(Algorithm):
    name = "nan_server"

    def server_update(self, global_params, agg):
        global_params.mul_(float("nan"))


class BadShapeServer(Algorithm):
    name = "bad_shape"

    def server_update(self, global_params, agg):
        global_params.add_(agg.mean_delta[:-1])


class RaggedExtras(Algorithm):
    name = "ragged_extras"

    def client_update(self, ctx):
        result = super().client_update(ctx)
        result.extras["control"] = torch.zeros(3 + ctx.client_id)
        return result


@pytest.mark.parametrize("alg, message", [
    (NaNServer(), r"'nan_server' \(.*NaNServer\): server_update\(\) left non-finite global weights in round 1"),
    (BadShapeServer(), r"'bad_shape' \(.*BadShapeServer\): server_update\(\) failed in round 1 \(RuntimeError"),
    (RaggedExtras(), r"'ragged_extras' .*extra 'control' has shape \(\d+,\) for this client but \(\d+,\)"),
])
def test_server_side_errors_name_the_plugin(alg, message):
    sim = tiny_simulator(alg)
    sim.start_server()
    with pytest.raises(PluginError, match=message):
        sim.run_round(1)


class ReturnsDelta(Algorithm):
    name = "returns_delta"

    def process_update(self, delta, ctx, result):
        return torch.zeros_like(delta)  # a new tensor, not an in-place edit


class ReturnsList(Algorithm):
    name = "returns_list"

    def process_update(self, delta, ctx, result):
        return [0.0]


def test_process_update_return_value_is_honoured_or_rejected():
    sim = tiny_simulator(ReturnsDelta())
    before = sim.global_params.clone()
    sim.start_server()
    sim.run_round(1)
    assert torch.equal(before, sim.global_params)  # the returned zeros replaced every delta
    sim = tiny_simulator(ReturnsList())
    sim.start_server()
    with pytest.raises(PluginError, match=r"'returns_list' .*process_update\(\) must edit delta in place"):
        sim.run_round(1)


PLUGIN = '''
from fednlp_bench.algorithms import Algorithm

class Flaky(Algorithm):
    name = "flaky"

    def client_update(self, ctx):
        if ctx.client_id == 1:
            raise ValueError("client one is broken")
        return super().client_update(ctx)
'''


def test_failures_say_where_debug_shows_tracebacks_and_the_record_identifies_the_file(tmp_path, tiny_overrides):
    path = tmp_path / "flaky.py"
    path.write_text(textwrap.dedent(PLUGIN))
    args = ["run", "--task", "tc", "--preset", "smoke", "--algorithm", f"{path}:Flaky",
            *sum((["--set", o] for o in tiny_overrides("fl.rounds=2", "partition.n_clients=2",
                                                       "fairness.counterfactual=false")), [])]
    proc = subprocess.run([sys.executable, "-m", "fednlp_bench", "--debug", *args], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" in proc.stderr and 'raise ValueError("client one is broken")' in proc.stderr
    record = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    reason = record["metrics"]["failed_clients"][0]["reason"]
    assert reason.startswith("ValueError: client one is broken (at ") and f"{path}:9 in client_update" in reason
    assert record["provenance"]["plugin"] == {"source": "file", "path": str(path),
                                              "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert record["algorithm"]["name"] == "flaky"


def test_builtin_records_say_builtin(tiny_overrides):
    cfg = config.resolve("tc", "smoke", tiny_overrides())
    from fednlp_bench.run import algorithm_identity

    assert algorithm_identity(cfg) == {"source": "builtin"}
    assert algorithms.ALGORITHMS.identity("no-such") == {"source": "unknown"}
