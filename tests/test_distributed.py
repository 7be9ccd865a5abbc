"""torchrun scale-out: 1 rank and 2 ranks (gloo on CPU) give the same final metrics."""
import glob
import json
import os
import subprocess
import sys

import pytest


def _torchrun(n: int, results: str, overrides: list[str]) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "fednlp_bench", "run", "--task", "tc", "--preset", "smoke"]
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = glob.glob(os.path.join(results, "*.json"))
    return json.load(open(path))


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["model.peft=lora"]], ids=["full", "lora"])
def test_one_and_two_ranks_agree(tmp_path, extra):
    base = ["data.max_train=64", "data.max_test=32", "data.max_len=32", "partition.n_clients=8",
            "fl.clients_per_round=4", "fl.rounds=2", "fl.batch_size=8", "threads=1",
            "model.name=minilm-l3", "wandb=disabled", "progress=false", *extra]
    one = _torchrun(1, str(tmp_path / "one"), base + [f"results_dir={tmp_path / 'one'}"])
    two = _torchrun(2, str(tmp_path / "two"), base + [f"results_dir={tmp_path / 'two'}"])
    assert two["cost"]["world_size"] == 2 and one["cost"]["world_size"] == 1
    for a, b in zip(one["metrics"]["per_round"], two["metrics"]["per_round"]):
        assert a == pytest.approx(b, abs=1e-5)
    assert one["metrics"]["final"] == pytest.approx(two["metrics"]["final"], abs=1e-5)
    assert one["cost"]["bytes_up"] == two["cost"]["bytes_up"]
    assert one["cost"]["train_examples"] == two["cost"]["train_examples"]
    assert one["cost"]["n_params"] == two["cost"]["n_params"]  # the all-reduce carries the trainable vector
