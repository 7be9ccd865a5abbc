"""Built-in FL algorithms on a tiny model, driven through the real engine (Simulator.run_round)."""
from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np
import pytest
import torch

from fednlp_bench import algorithms, checkpoint
from fednlp_bench.algorithms import Aggregate, ClientContext
from fednlp_bench.algorithms.fedavg import FedAvg
from fednlp_bench.algorithms.fednova import FedNova
from fednlp_bench.algorithms.fedopt import FedAdagrad, FedAdam, FedAvgM, FedYogi
from fednlp_bench.algorithms.fedprox import FedProx
from fednlp_bench.algorithms.harness import TinyClassifier, TinyTask, tiny_data, tiny_simulator
from fednlp_bench.algorithms.scaffold import Scaffold
from fednlp_bench.config import ConfigError
from fednlp_bench.local import flatten_model

BUILTIN = ["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedavgm", "scaffold", "fednova"]


def start(sim) -> torch.Tensor:
    """What ``run_federated`` does before round 1; returns a copy of the initial weights."""
    sim.algorithm.n_clients = len(sim.client_train)
    sim.algorithm.init_server(sim.global_params)
    return sim.global_params.clone()


def fedavg_delta(**kw) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial weights and FedAvg's weighted mean delta of round 1 for a tiny simulator."""
    sim = tiny_simulator(FedAvg(), **kw)
    x0 = start(sim)
    sim.run_round(1)
    return x0, sim.global_params - x0


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# --------------------------------------------------------------------------- FedAvg / FedProx
def test_fedavg_one_client_one_step_is_one_adamw_step():
    sim = tiny_simulator(FedAvg(), client_sizes=[8], clients_per_round=1, local_steps=1, batch_size=8,
                         client_lr=1e-2, weight_decay=0.01)
    ref = TinyClassifier()
    ref.load_state_dict(sim.model.state_dict())
    start(sim)
    sim.run_round(1)

    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.01)
    ref(**TinyTask().collate(sim.train_data, np.arange(8), 0)).loss.backward()
    opt.step()
    torch.testing.assert_close(sim.global_params, flat(ref), rtol=0, atol=1e-7)


def test_fedprox_mu0_equals_fedavg_exactly():
    kw = dict(client_sizes=[10, 20, 30, 40], clients_per_round=3, local_steps=4)
    avg, prox = tiny_simulator(FedAvg(), **kw), tiny_simulator(FedProx(FedProx.HParams(mu=0.0)), **kw)
    for sim in (avg, prox):
        start(sim)
        sim.run_round(1)
        sim.run_round(2)
    assert torch.equal(avg.global_params, prox.global_params)


def test_fedprox_term_value_and_gradient_on_flat_buffers():
    mu = 0.7
    sim = tiny_simulator(FedProx(FedProx.HParams(mu=mu)))
    sim.params.add_(0.1 * torch.randn(sim.params.shape, generator=torch.Generator().manual_seed(0)))
    ctx = ClientContext(model=sim.model, params=sim.params, grads=sim.grads, global_params=sim.global_params,
                        client_id=0, round=1, n_examples=16, batches=lambda: iter(()),
                        make_optimizer=lambda: None, autocast=contextlib.nullcontext)
    batch = TinyTask().collate(sim.train_data, np.arange(16), 0)
    # reference: the proximal objective written per tensor, differentiated by autograd
    params = list(sim.model.parameters())
    offsets = np.cumsum([0] + [p.numel() for p in params])
    prox = sum(((p - sim.global_params[a:b].view_as(p)) ** 2).sum() for p, a, b in zip(params, offsets, offsets[1:]))
    expected_loss = sim.model(**batch).loss + mu / 2 * prox
    expected_grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(expected_loss, params)])

    loss = sim.algorithm.client_loss(ctx, sim.model(**batch).loss)
    sim.grads.zero_()
    loss.backward()
    torch.testing.assert_close(loss, expected_loss.detach())
    torch.testing.assert_close(sim.grads, expected_grad)


# --------------------------------------------------------------------------- FedOpt family
def test_fedadam_matches_hand_computed_update():
    lr, b1, b2, tau = 0.05, 0.8, 0.95, 0.01
    kw = dict(client_sizes=[12, 20, 28], clients_per_round=2, local_steps=2)
    x0, d1 = fedavg_delta(**kw)
    sim = tiny_simulator(FedAdam(FedAdam.HParams(server_lr=lr, beta1=b1, beta2=b2, tau=tau)), **kw)
    assert torch.equal(start(sim), x0)
    sim.run_round(1)  # same cohort and local training as FedAvg's round 1

    x, d = x0.double().numpy(), d1.double().numpy()
    m = (1 - b1) * d
    v = b2 * tau**2 + (1 - b2) * d**2
    x = x + lr * m / (np.sqrt(v) + tau)
    np.testing.assert_allclose(sim.global_params.numpy(), x, rtol=1e-5, atol=1e-7)

    d2 = np.random.default_rng(1).normal(scale=1e-2, size=x.shape)  # a second round, synthetic aggregate
    sim.algorithm.server_update(sim.global_params, Aggregate(torch.tensor(d2, dtype=torch.float32), {}, 2, 1.0, 2))
    m = b1 * m + (1 - b1) * d2
    v = b2 * v + (1 - b2) * d2**2
    x = x + lr * m / (np.sqrt(v) + tau)
    np.testing.assert_allclose(sim.global_params.numpy(), x, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cls", [FedYogi, FedAdagrad, FedAvgM])
def test_server_optimisers_follow_their_formulas(cls):
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=50)
    deltas = [rng.normal(scale=s, size=50) for s in (1e-2, 3e-2, 1e-2)]
    alg = cls()
    hp = alg.hparams
    params = torch.tensor(x0, dtype=torch.float32)
    alg.init_server(params)
    x = x0.copy()
    m, v = np.zeros(50), np.full(50, getattr(hp, "tau", 0.0) ** 2)
    for r, d in enumerate(deltas, 1):
        alg.server_update(params, Aggregate(torch.tensor(d, dtype=torch.float32), {}, 3, 3.0, r))
        if cls is FedAvgM:
            m = hp.momentum * m + d
            x = x + hp.server_lr * m
        else:
            m = hp.beta1 * m + (1 - hp.beta1) * d
            v = v + d**2 if cls is FedAdagrad else v - (1 - hp.beta2) * d**2 * np.sign(v - d**2)
            x = x + hp.server_lr * m / (np.sqrt(v) + hp.tau)
        np.testing.assert_allclose(params.numpy(), x, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- SCAFFOLD
def test_scaffold_client_step_is_the_papers_with_sgd():
    """With local SGD: y <- y - lr (g(y) - c_i + c); then c_i+ = c_i - c + (x - y) / (K lr) (option II)."""
    lr, K = 0.1, 3
    data = tiny_data(24, np.random.default_rng(0))
    batches = [TinyTask().collate(data, np.arange(8 * k, 8 * k + 8), 0) for k in range(K)]
    torch.manual_seed(0)
    model = TinyClassifier()
    ref = TinyClassifier()
    ref.load_state_dict(model.state_dict())
    params, grads = flatten_model(model)
    x = params.clone()
    gen = torch.Generator().manual_seed(1)
    c, c_i = 0.1 * torch.randn(x.shape, generator=gen), 0.1 * torch.randn(x.shape, generator=gen)

    alg = Scaffold()
    alg.init_server(x)
    alg.c.copy_(c)
    alg.client_c[5] = c_i.clone()
    ctx = ClientContext(model=model, params=params, grads=grads, global_params=x, client_id=5, round=1,
                        n_examples=24, batches=lambda: iter(batches),
                        make_optimizer=lambda: torch.optim.SGD(model.parameters(), lr=lr),
                        autocast=contextlib.nullcontext)
    result = alg.client_update(ctx)

    names = [n for n, _ in ref.named_parameters()]
    y = flat(ref).clone()
    for batch in batches:
        y.requires_grad_(True)
        loss = torch.func.functional_call(ref, dict(zip(names, _unflat(y, ref))), kwargs=batch).loss
        (g,) = torch.autograd.grad(loss, [y])
        y = (y - lr * (g - c_i + c)).detach()
    torch.testing.assert_close(params, y, rtol=1e-5, atol=1e-6)
    expected_dc = -c + (x - y) / (K * lr)
    assert result.n_steps == K
    torch.testing.assert_close(result.extras["delta_c"], expected_dc, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alg.client_c[5], c_i + expected_dc, rtol=1e-4, atol=1e-5)


def _unflat(vec: torch.Tensor, model: torch.nn.Module) -> list[torch.Tensor]:
    out, offset = [], 0
    for p in model.parameters():
        out.append(vec[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
    return out


class _RecordingScaffold(Scaffold):
    """SCAFFOLD that remembers each client's final local weights (via the process_update hook)."""

    def __init__(self, hparams=None):
        super().__init__(hparams)
        self.local: dict[int, torch.Tensor] = {}

    def process_update(self, delta, ctx, result):
        self.local[ctx.client_id] = ctx.params.clone()


def test_scaffold_server_updates_c_and_x_as_in_the_paper():
    lr, K = 1e-2, 3
    sim = tiny_simulator(_RecordingScaffold(), client_sizes=[10, 20, 30, 40], clients_per_round=2,
                         local_steps=K, client_lr=lr)
    alg = sim.algorithm
    x0 = start(sim)
    sim.run_round(1)  # c = 0 and c_i = 0 before the round
    c1 = alg.c.clone()
    assert set(alg.client_c) == set(alg.local) and len(alg.local) == 2
    dcs = {i: alg.client_c[i].clone() for i in alg.local}
    for i, y in alg.local.items():
        torch.testing.assert_close(dcs[i], (x0 - y) / (K * lr), rtol=1e-4, atol=1e-6)  # c_i+ = c_i - c + (x-y)/(K lr)
    torch.testing.assert_close(c1, 2 / 4 * sum(dcs.values()) / 2)  # c += |S|/N * mean delta c_i
    n = {i: len(sim.client_train[i]) for i in alg.local}
    mean_delta = sum(n[i] * (y - x0) for i, y in alg.local.items()) / sum(n.values())
    torch.testing.assert_close(sim.global_params, x0 + mean_delta, rtol=1e-5, atol=1e-7)

    x1, alg.local = sim.global_params.clone(), {}
    old_c = {i: v.clone() for i, v in alg.client_c.items()}
    sim.run_round(2)
    for i, y in alg.local.items():
        c_i = old_c.get(i, torch.zeros_like(c1))
        torch.testing.assert_close(alg.client_c[i], c_i - c1 + (x1 - y) / (K * lr), rtol=1e-4, atol=1e-5)
    mean_dc = sum(alg.client_c[i] - old_c.get(i, torch.zeros_like(c1)) for i in alg.local) / len(alg.local)
    torch.testing.assert_close(alg.c, c1 + len(alg.local) / 4 * mean_dc, rtol=1e-4, atol=1e-6)
    assert sim.state.costs.bytes_down == 2 * 2 * 2 * x0.numel() * 4  # weights + c, 2 clients, 2 rounds


# --------------------------------------------------------------------------- FedNova
def test_fednova_with_equal_steps_equals_fedavg():
    kw = dict(client_sizes=[10, 20, 30, 40], clients_per_round=3, local_steps=4)
    avg, nova = tiny_simulator(FedAvg(), **kw), tiny_simulator(FedNova(), **kw)
    for sim in (avg, nova):
        start(sim)
        sim.run_round(1)
    torch.testing.assert_close(nova.global_params, avg.global_params, rtol=1e-6, atol=1e-7)


class _RecordingNova(FedNova):
    def __init__(self, hparams=None):
        super().__init__(hparams)
        self.seen: dict[int, tuple[torch.Tensor, int, float]] = {}

    def process_update(self, delta, ctx, result):
        self.seen[ctx.client_id] = (delta.clone(), result.n_steps, result.weight)
        super().process_update(delta, ctx, result)


def test_fednova_normalises_by_local_steps():
    sim = tiny_simulator(_RecordingNova(FedNova.HParams(server_lr=0.5)), client_sizes=[8, 24, 40],
                         clients_per_round=3, local_epochs=1, batch_size=8)
    x0 = start(sim)
    sim.run_round(1)
    seen = sim.algorithm.seen
    assert sorted(t for _, t, _ in seen.values()) == [1, 3, 5]  # heterogeneous local steps
    total = sum(w for _, _, w in seen.values())
    tau_eff = sum(w * t for _, t, w in seen.values()) / total
    expected = x0 + 0.5 * tau_eff * sum(w * d / t for d, t, w in seen.values()) / total
    torch.testing.assert_close(sim.global_params, expected, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- all built-ins
@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_declares_paper_and_frozen_hparams(name):
    cls = algorithms.get(name)
    assert cls.name == name and cls.paper and cls.__module__.startswith("fednlp_bench.algorithms.")
    assert dataclasses.is_dataclass(cls.HParams) and cls.HParams.__dataclass_params__.frozen
    alg = cls.from_params({})
    for f in dataclasses.fields(alg.hparams):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(alg.hparams, f.name, 0.5)


@pytest.mark.parametrize("name", BUILTIN)
def test_state_dict_round_trip_resumes_identically(name, tmp_path):
    kw = dict(client_sizes=[10, 20, 30, 40], clients_per_round=2, local_steps=2)
    sim = tiny_simulator(algorithms.get(name)(), **kw)
    start(sim)
    sim.run_round(1)
    buf = io.BytesIO()
    torch.save(sim.algorithm.state_dict(), buf)
    buf.seek(0)
    torch.load(buf, weights_only=True)  # tensors and plain values only
    checkpoint.save(tmp_path / "ckpt", {"algorithm": sim.algorithm.state_dict()})  # the engine's format
    state = checkpoint.load(tmp_path / "ckpt")["algorithm"]

    # a fresh process: new algorithm, init_server, then load the checkpoint (the engine's resume order)
    resumed = tiny_simulator(algorithms.get(name)(sim.algorithm.hparams), **kw)
    resumed.global_params.copy_(sim.global_params)
    resumed.algorithm.n_clients = 4
    resumed.algorithm.init_server(resumed.global_params)
    resumed.algorithm.load_state_dict(state)
    _assert_same(resumed.algorithm.state_dict(), sim.algorithm.state_dict())
    sim.run_round(2)
    resumed.run_round(2)
    assert torch.equal(resumed.global_params, sim.global_params)


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("name, params, match", [
    ("fedprox", {"mu": -0.1}, r"algorithm\.mu must be a finite number >= 0"),
    ("fedprox", {"mu": float("nan")}, r"algorithm\.mu"),
    ("fedprox", {"mu": "big"}, r"algorithm\.mu must be float"),
    ("fedprox", {"nu": 0.1}, r"'fedprox' has no hyper-parameter 'nu' \(allowed: mu\)"),
    ("fedadam", {"beta1": 1.0}, r"algorithm\.beta1 must be in \[0, 1\)"),
    ("fedyogi", {"beta2": -0.5}, r"algorithm\.beta2 must be in \[0, 1\)"),
    ("fedadam", {"tau": 0.0}, r"algorithm\.tau must be a finite number > 0"),
    ("fedadagrad", {"server_lr": -1.0}, r"algorithm\.server_lr"),
    ("fedadagrad", {"beta2": 0.9}, r"has no hyper-parameter 'beta2'"),
    ("fedavgm", {"momentum": 1.5}, r"algorithm\.momentum must be in \[0, 1\)"),
    ("scaffold", {"client_state_dtype": "int8"}, r"algorithm\.client_state_dtype must be one of"),
    ("fednova", {"server_lr": 0}, r"algorithm\.server_lr must be a finite number > 0"),
])
def test_bad_hyper_parameters_are_config_errors(name, params, match):
    with pytest.raises(ConfigError, match=match):
        algorithms.get(name).from_params(params)


def test_hyper_parameters_set_from_the_command_line_syntax():
    from fednlp_bench import config

    cfg = config.resolve("tc", "smoke", ["algorithm.mu=0.05"], **{"algorithm.name": "fedprox"})
    alg = algorithms.get(cfg.algorithm.name).from_params(cfg.algorithm.params)
    assert alg.hparams.mu == 0.05 and alg.hparams_dict() == {"mu": 0.05}
    cfg = config.resolve("tc", "smoke", ["algorithm.server_lr=1e-2", "algorithm.beta1=0"],
                         **{"algorithm.name": "fedadam"})
    assert algorithms.get("fedadam").from_params(cfg.algorithm.params).hparams.beta1 == 0.0
