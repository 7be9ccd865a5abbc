"""``fl.client_optimizer=sgd``: SCAFFOLD as the paper writes it, checked on a quadratic by hand."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fednlp_bench import config
from fednlp_bench.algorithms.scaffold import Scaffold
from fednlp_bench.batching import Ragged, TokenizedData
from fednlp_bench.config import AlgorithmConfig, FLConfig, PartitionConfig, RunConfig
from fednlp_bench.run import fl_trainer

D, ROWS = 5, 6  # odd sizes on purpose


class Quadratic(torch.nn.Module):
    """Loss 0.5 ||w - b||^2 averaged over the batch's targets b: gradient w - mean(b)."""

    def __init__(self, w0: np.ndarray) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float32))

    def forward(self, target: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(loss=0.5 * ((self.w - target) ** 2).sum(1).mean())


class QuadraticTask:
    name, primary_metric = "quadratic", "loss"

    def collate(self, data, rows, pad_id):
        return {"target": torch.from_numpy(data.columns["target"][rows])}


def engine(targets: np.ndarray, w0: np.ndarray, rounds: int, optimizer: str, lr: float, steps: int) -> np.ndarray:
    n = len(targets)
    fl = FLConfig(rounds=rounds, clients_per_round=n, local_steps=steps, batch_size=ROWS, client_lr=lr,
                  client_optimizer=optimizer)
    cfg = RunConfig(seed=0, partition=PartitionConfig(n_clients=n), fl=fl, device="cpu",
                    algorithm=AlgorithmConfig(name="scaffold"), wandb="disabled", progress=False)
    data = TokenizedData(ragged={"input_ids": Ragged.from_lists([[1]] * (n * ROWS))},
                         columns={"target": np.repeat(targets, ROWS, axis=0).astype(np.float32)})
    clients = [np.arange(i * ROWS, (i + 1) * ROWS) for i in range(n)]
    sim = fl_trainer(cfg, QuadraticTask(), Quadratic(w0), data, None, clients, [], Scaffold())
    sim.start_server()
    for r in range(1, rounds + 1):
        sim.run_round(r)
    return sim.global_params.numpy().astype(np.float64)


def scaffold_by_hand(targets: np.ndarray, w0: np.ndarray, rounds: int, lr: float, steps: int) -> np.ndarray:
    """Karimireddy et al. 2020, Algorithm 1 with option II, every client in every round, SGD locally."""
    n = len(targets)
    x, c, c_i = w0.astype(np.float64), np.zeros(D), np.zeros((n, D))
    for _ in range(rounds):
        dy, dc = np.zeros((n, D)), np.zeros((n, D))
        for i in range(n):
            y = x.copy()
            for _ in range(steps):
                y = y - lr * ((y - targets[i]) - c_i[i] + c)
            new_c = c_i[i] - c + (x - y) / (steps * lr)
            dy[i], dc[i] = y - x, new_c - c_i[i]
            c_i[i] = new_c
        x = x + dy.mean(0)  # equal client sizes: the example-weighted mean is the plain mean
        c = c + dc.mean(0)  # |S| = N
    return x


def test_scaffold_with_sgd_is_the_papers_update_on_a_quadratic():
    rng = np.random.default_rng(0)
    targets, w0 = rng.normal(size=(3, D)) * 3, rng.normal(size=D)
    want = scaffold_by_hand(targets, w0, rounds=3, lr=0.1, steps=4)
    np.testing.assert_allclose(engine(targets, w0, 3, "sgd", 0.1, 4), want, rtol=1e-5, atol=1e-5)
    # the control variates matter: plain local SGD without them ends elsewhere
    assert np.abs(want - scaffold_by_hand(targets, w0, rounds=1, lr=0.1, steps=4)).max() > 1e-3
    # AdamW clients (the suite's default, a stated deviation) do not follow the paper's update
    assert np.abs(engine(targets, w0, 3, "adamw", 0.1, 4) - want).max() > 1e-2


def test_client_optimizer_is_validated_and_the_deviation_recorded(tiny_overrides):
    from fednlp_bench.run import run, validate_up_front

    with pytest.raises(config.ConfigError, match="fl.client_optimizer must be adamw or sgd"):
        config.resolve("tc", "smoke", tiny_overrides("fl.client_optimizer=adam"))
    with pytest.raises(config.ConfigError, match="fl.client_momentum applies to fl.client_optimizer=sgd"):
        validate_up_front(config.resolve("tc", "smoke", tiny_overrides("fl.client_momentum=0.9")))
    record, _ = run(config.resolve("tc", "smoke", tiny_overrides("algorithm.name=scaffold", "fl.rounds=1")))
    assert record["fl"]["client_optimizer"] == "adamw"
    assert "the paper's analysis assumes sgd" in record["algorithm"]["deviations"][0]
    record, _ = run(config.resolve("tc", "smoke", tiny_overrides("algorithm.name=scaffold", "fl.rounds=1",
                                                                 "fl.client_optimizer=sgd", "fl.client_lr=0.05")))
    assert "deviations" not in record["algorithm"] and record["fl"]["row_sparse_embeddings"] is False


@pytest.mark.parametrize("algorithm, uploads", [("fednova", "weighted_tau"), ("scaffold", "delta_c")])
def test_user_level_dp_refuses_algorithms_with_extras_before_running(algorithm, uploads, tiny_overrides, capsys):
    from fednlp_bench.cli import main

    overrides = tiny_overrides(f"algorithm.name={algorithm}", "privacy.user_level=true")
    code = main(["run", "--task", "tc", "--preset", "smoke", *sum((["--set", o] for o in overrides), [])])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"algorithm '{algorithm}' exchanges {uploads}" in err and "does not privatise" in err
