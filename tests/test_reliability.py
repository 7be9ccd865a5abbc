"""Reliability: kill -9 and resume, failing clients dropped, nothing half-written."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fednlp_bench import checkpoint, config
from fednlp_bench.engine import RunError
from fednlp_bench.run import checkpoint_dir, run

FLAKY = '''
import torch
from fednlp_bench.algorithms.fedavg import FedAvg


class Flaky(FedAvg):
    """FedAvg whose client 0 raises and client 1 produces a NaN loss."""
    name = "flaky"

    def client_update(self, ctx):
        if ctx.client_id == 0:
            raise RuntimeError("injected failure")
        return super().client_update(ctx)

    def client_loss(self, ctx, loss):
        return loss * float("nan") if ctx.client_id == 1 else loss


class AllFail(FedAvg):
    name = "allfail"

    def client_update(self, ctx):
        raise MemoryError("injected OOM")
'''


def test_checkpoint_roundtrip_has_no_pickle(tmp_path):
    import torch

    state = {"w": torch.arange(4.0), "alg": {"c": {"3": torch.ones(2)}, "step": 7}, "rows": [1, 2]}
    checkpoint.save(tmp_path / "ck", state)
    back = checkpoint.load(tmp_path / "ck")
    assert torch.equal(back["w"], state["w"]) and torch.equal(back["alg"]["c"]["3"], torch.ones(2))
    assert back["alg"]["step"] == 7 and back["rows"] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["state.json", "tensors.safetensors"]
    assert checkpoint.load(tmp_path / "missing") is None


def _wait_for_checkpoint(path: Path, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (path / "state.json").exists():
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before a checkpoint: {proc.stderr.read()}")
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
@pytest.mark.parametrize("algorithm,extra", [("fedavg", ()), ("centralized", ()),
                                             ("fedavg", ("model.peft=lora", "model.lora_dropout=0.1"))],
                         ids=["fedavg", "centralized", "fedavg-lora"])
def test_sigkill_then_resume_matches_uninterrupted(tiny_overrides, tmp_path, algorithm, extra):
    overrides = tiny_overrides("fl.rounds=3", "fl.checkpoint_every=1", f"algorithm.name={algorithm}", "threads=1",
                               "model.name=minilm-l3", *extra)
    cfg = config.resolve("tc", "smoke", overrides)
    ckpt = checkpoint_dir(cfg)
    args = [sys.executable, "-m", "fednlp_bench", "run", "--task", "tc", "--preset", "smoke"]
    for o in overrides:
        args += ["--set", o]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(ckpt, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(Path(cfg.results_dir).glob("*.json")), "a killed run must not leave a record"
    done_rounds = checkpoint.load(ckpt)["trainer"]["train"]["round"]
    assert 1 <= done_rounds < 3
    resumed = subprocess.run(args + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "no checkpoint" not in resumed.stderr, resumed.stderr
    (rec_path,) = Path(cfg.results_dir).glob("*.json")
    rec = json.loads(rec_path.read_text())
    assert rec["metrics"]["resumed"] is True
    assert not ckpt.exists()
    # the same configuration, uninterrupted, in another results dir
    fresh_cfg = config.resolve("tc", "smoke", overrides + [f"results_dir={tmp_path / 'fresh'}"])
    fresh, _ = run(fresh_cfg)
    assert [r["round"] for r in rec["metrics"]["per_round"]] == [1, 2, 3]
    for a, b in zip(rec["metrics"]["per_round"], fresh["metrics"]["per_round"]):
        assert a == pytest.approx(b, abs=1e-6)
    assert rec["metrics"]["final"] == pytest.approx(fresh["metrics"]["final"], abs=1e-6)
    assert rec["cost"]["bytes_up"] == fresh["cost"]["bytes_up"]
    assert rec["cost"]["n_params"] == fresh["cost"]["n_params"] and rec.get("peft") == fresh.get("peft")


@pytest.mark.slow
def test_failing_clients_are_dropped_and_counted(tiny_overrides, tmp_path):
    plugin = tmp_path / "flaky.py"
    plugin.write_text(FLAKY)
    cfg = config.resolve("tc", "smoke", tiny_overrides("fl.rounds=2", "fl.clients_per_round=4",
                                                       f"algorithm.name={plugin}:Flaky"))
    rec, _ = run(cfg)
    failed = rec["metrics"]["failed_clients"]
    assert {(f["round"], f["client"]) for f in failed} == {(1, 0), (1, 1), (2, 0), (2, 1)}
    assert any("injected failure" in f["reason"] for f in failed)
    assert any("non-finite loss" in f["reason"] for f in failed)
    assert rec["cost"]["bytes_up"] == 2 * 2 * rec["cost"]["n_params"] * 4  # only survivors upload


@pytest.mark.slow
def test_round_without_survivors_stops_cleanly(tiny_overrides, tmp_path):
    plugin = tmp_path / "flaky.py"
    plugin.write_text(FLAKY)
    cfg = config.resolve("tc", "smoke", tiny_overrides(f"algorithm.name={plugin}:AllFail"))
    with pytest.raises(RunError, match="all 2 sampled clients failed.*injected OOM"):
        run(cfg)
    assert not list(Path(cfg.results_dir).glob("*.json"))
    args = [sys.executable, "-m", "fednlp_bench", "run", "--task", "tc", "--preset", "smoke"]
    for o in tiny_overrides(f"algorithm.name={plugin}:AllFail"):
        args += ["--set", o]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "all 2 sampled clients failed" in out.stderr


@pytest.mark.slow
def test_concurrent_runs_share_a_results_dir(tiny_overrides, tmp_path):
    args = [sys.executable, "-m", "fednlp_bench", "run", "--task", "tc", "--preset", "smoke"]
    for o in tiny_overrides("fl.rounds=1", "threads=1"):
        args += ["--set", o]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    records = sorted((tmp_path / "results").glob("*.json"))
    assert len(records) == 2
    runs = [json.loads(p.read_text()) for p in records]
    assert runs[0]["run_id"] != runs[1]["run_id"]
    assert runs[0]["metrics"]["final"] == runs[1]["metrics"]["final"]  # same config, same seed
    assert not [p for p in (tmp_path / "results").iterdir() if p.name.startswith(".")]
