"""FedDyn plugin: registration, the paper's updates on a tiny model, checkpoint round trip.

Run after installing the package: ``pip install ./examples/feddyn_plugin && pytest examples/feddyn_plugin``.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from fednlp_bench import algorithms
from fednlp_bench.algorithms import Aggregate, ClientContext
from fednlp_bench.algorithms.harness import TinyTask, tiny_simulator
from fednlp_bench.config import ConfigError
from fednlp_feddyn import FedDyn


def test_registered_through_the_entry_point():
    entry = algorithms.discover().get("feddyn")
    assert entry is not None, "fednlp-feddyn is not installed (pip install ./examples/feddyn_plugin)"
    assert entry.source == "entry-point fednlp-feddyn" and entry.error is None
    assert algorithms.get("feddyn") is FedDyn


def test_regulariser_value_and_gradient():
    alpha = 0.3
    alg = FedDyn(FedDyn.HParams(alpha=alpha))
    sim = tiny_simulator(alg)
    gen = torch.Generator().manual_seed(0)
    sim.params.add_(0.1 * torch.randn(sim.params.shape, generator=gen))
    linear = 0.05 * torch.randn(sim.params.shape, generator=gen)
    ctx = ClientContext(model=sim.model, params=sim.params, grads=sim.grads, global_params=sim.global_params,
                        client_id=0, round=1, n_examples=16, batches=lambda: iter(()),
                        make_optimizer=lambda: None, autocast=contextlib.nullcontext)
    batch = TinyTask().collate(sim.train_data, np.arange(16), 0)
    params = list(sim.model.parameters())
    sim.grads.zero_()
    data_grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(sim.model(**batch).loss, params)])
    diff = sim.params - sim.global_params

    alg._linear = linear
    loss = alg.client_loss(ctx, sim.model(**batch).loss)
    loss.backward()
    torch.testing.assert_close(sim.grads, data_grad + alpha * diff - linear)
    expected = sim.model(**batch).loss.detach() - linear @ diff + alpha / 2 * diff @ diff
    torch.testing.assert_close(loss.detach(), expected)


def test_client_state_and_server_update_follow_the_paper():
    alpha = 0.1
    alg = FedDyn(FedDyn.HParams(alpha=alpha))
    sim = tiny_simulator(alg, client_sizes=[10, 20, 30, 40], clients_per_round=2, local_steps=3)
    alg.n_clients = 4
    alg.init_server(sim.global_params)
    x0 = sim.global_params.clone()
    sim.run_round(1)
    assert len(alg.client_grad) == 2
    locals_ = {i: x0 - g / alpha for i, g in alg.client_grad.items()}  # g_i = -alpha (y_i - x0) after round 1
    mean_delta = sum(y - x0 for y in locals_.values()) / 2  # unweighted
    h = -alpha * 2 / 4 * mean_delta
    torch.testing.assert_close(alg.h, h, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(sim.global_params, x0 + mean_delta - h / alpha, rtol=1e-4, atol=1e-6)

    d = torch.full_like(x0, 1e-3)  # a synthetic second round
    before = sim.global_params.clone()
    alg.server_update(sim.global_params, Aggregate(d, {}, 1, 1.0, 2))
    h2 = h - alpha * 1 / 4 * d
    torch.testing.assert_close(sim.global_params, before + d - h2 / alpha, rtol=1e-4, atol=1e-6)


def test_learns_on_the_tiny_task_and_resumes_from_its_state():
    sim = tiny_simulator(FedDyn(), client_sizes=[10, 20, 30, 40], rounds=6, local_steps=3)
    sim.run_federated()
    accuracy = [row["accuracy"] for row in sim.state.per_round]
    assert accuracy[-1] > accuracy[0] + 0.2
    buf = io.BytesIO()
    torch.save(sim.algorithm.state_dict(), buf)
    buf.seek(0)
    restored = FedDyn()
    restored.init_server(sim.global_params)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(restored.h, sim.algorithm.h)
    assert restored.client_grad.keys() == sim.algorithm.client_grad.keys()


def test_bad_alpha_is_a_config_error():
    with pytest.raises(ConfigError, match=r"algorithm\.alpha must be a finite number > 0 for 'feddyn'"):
        FedDyn.from_params({"alpha": 0.0})
