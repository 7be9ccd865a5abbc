"""The engine's row-sparse client path (fednlp_bench/sparse_rows.py) is exact: it must give the
same bits as the dense path, take over only where that holds, and leave clean buffers behind."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fednlp_bench import config
from fednlp_bench.algorithms import get as get_algorithm
from fednlp_bench.batching import Ragged, TokenizedData
from fednlp_bench.config import AlgorithmConfig, FLConfig, PartitionConfig, RunConfig
from fednlp_bench.engine import Simulator
from fednlp_bench.run import fl_trainer
from fednlp_bench.sparse_rows import MIN_ROWS, eligible_tables

VOCAB = MIN_ROWS + 904  # a vocabulary-sized table (5,000 rows)
N_CLASSES = 3


class BagOfWords(torch.nn.Module):
    """Mean of word vectors (padding row 0 excluded from updates), dropout, linear head.

    ``reuse_weight`` also reads the embedding matrix directly in the head (as tied output
    layers do without sharing a module), which must switch the table to its dense fallback.
    """

    def __init__(self, reuse_weight: bool = False, vocab: int = VOCAB, dim: int = 8, hidden: int | None = None) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim, padding_idx=0)
        self.pos = torch.nn.Embedding(16, dim)  # small: stays on the dense path
        self.drop = torch.nn.Dropout(0.1)
        self.hidden = torch.nn.Linear(dim, hidden) if hidden else torch.nn.Identity()
        self.head = torch.nn.Linear(hidden or dim, N_CLASSES)
        self.reuse_weight = reuse_weight

    def forward(self, input_ids, attention_mask, labels=None):
        h = self.emb(input_ids) + self.pos(torch.arange(input_ids.shape[1]))
        m = attention_mask.unsqueeze(-1).float()
        pooled = self.drop((h * m).sum(1) / m.sum(1))
        logits = self.head(torch.tanh(self.hidden(pooled)) if isinstance(self.hidden, torch.nn.Linear) else pooled)
        if self.reuse_weight:
            logits = logits + pooled @ self.emb.weight[1 : N_CLASSES + 1].t()
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SimpleNamespace(loss=loss, logits=logits)


class BagTask:
    name = "bag"
    primary_metric = "accuracy"

    def collate(self, data, rows, pad_id):
        ids, mask = data.ragged["input_ids"].pad_with_mask(rows, pad_id)
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.from_numpy(data.columns["labels"][rows])}

    def predict(self, model, data, rows, batch_size, pad_id, device):
        model.eval()
        with torch.inference_mode():
            logits = model(**{k: v for k, v in self.collate(data, rows, pad_id).items() if k != "labels"}).logits
        return dict(zip(rows.tolist(), logits.argmax(-1).tolist()))

    def score(self, predictions, data, rows):
        y = np.array([predictions[int(r)] for r in rows])
        return {"accuracy": float((y == data.columns["labels"][rows]).mean())}


def bag_data(n: int, seed: int, vocab: int = VOCAB) -> TokenizedData:
    """Token rows of 3-12 ids whose range depends on the class (learnable), some sharing ids."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, size=n)
    seqs = []
    for y in labels:  # the last class reaches the table's last rows (its tail, see sparse_rows.UNIT)
        lo = 1 + int(y) * (vocab - 301) // (N_CLASSES - 1)
        seqs.append(rng.integers(lo, lo + 300, size=rng.integers(3, 13)).tolist())
    return TokenizedData(ragged={"input_ids": Ragged.from_lists(seqs)}, columns={"labels": labels.astype(np.int64)})


def simulator(algorithm="fedavg", sparse=True, reuse_weight=False, weight_decay=0.0, rounds=2, local_steps=3,
              vocab=VOCAB, dim=8, hidden=None, **params) -> Simulator:
    fl = FLConfig(rounds=rounds, clients_per_round=3, local_steps=local_steps, batch_size=4, client_lr=5e-2,
                  weight_decay=weight_decay, sparse_embeddings=sparse, eval_batch_size=64)
    cfg = RunConfig(seed=3, partition=PartitionConfig(n_clients=5), fl=fl, device="cpu",
                    algorithm=AlgorithmConfig(name=algorithm, params=params), wandb="disabled", progress=False)
    train, test = bag_data(100, 1, vocab), bag_data(30, 2, vocab)
    client_train = list(np.array_split(np.arange(100), 5))
    client_test = list(np.array_split(np.arange(30), 5))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BagOfWords(reuse_weight, vocab, dim, hidden)
    alg = get_algorithm(algorithm).from_params(params)
    return fl_trainer(cfg, BagTask(), model, train, test, client_train, client_test, alg)


def trained(sim: Simulator) -> Simulator:
    sim.run_federated()
    return sim


@pytest.mark.parametrize("algorithm, params", [("fedavg", {}), ("fedadam", {}), ("fedprox", {"mu": 0.5})])
def test_row_sparse_path_gives_the_dense_bits(algorithm, params):
    fast, dense = trained(simulator(algorithm, **params)), trained(simulator(algorithm, sparse=False, **params))
    assert fast.row_sparse is not None and dense.row_sparse is None
    assert fast.row_sparse.touched_rows()[0] not in (None, 0)  # the last client really went the sparse way
    changed = (fast.global_params != simulator(algorithm, **params).global_params).sum()
    assert changed > 0  # training moved the weights
    assert torch.equal(fast.global_params, dense.global_params)
    assert fast.state.per_round == dense.state.per_round


def test_fedprox_term_really_acts_on_the_sparse_path():
    """The proximal gradient reaches the rows the sparse path trains: FedProx at mu 0.5 ends
    elsewhere than FedAvg, on both paths alike (the test above), so the term is not skipped."""
    prox, avg = trained(simulator("fedprox", mu=0.5)), trained(simulator("fedavg"))
    assert prox.row_sparse is not None
    vocab_rows = slice(0, VOCAB * 8)  # the word table comes first in the flat vector
    assert not torch.equal(prox.global_params[vocab_rows], avg.global_params[vocab_rows])


@pytest.mark.parametrize("dim, hidden", [(5, 7), (8, 5), (16, 10), (12, 3)])
def test_row_sparse_path_gives_the_dense_bits_on_unaligned_sizes(dim, hidden):
    """Sizes that are not multiples of the SIMD width: the fused AdamW kernel's scalar tail of a
    tensor must cover the same elements on both paths, or exp_avg / exp_avg_sq differ by an ulp.
    Every weight (embedding rows, position table, both Linear layers) must be equal to the bit."""
    fast = trained(simulator(dim=dim, hidden=hidden))
    dense = trained(simulator(dim=dim, hidden=hidden, sparse=False))
    assert fast.row_sparse is not None and dense.row_sparse is None
    assert fast.row_sparse.touched_rows()[0] not in (None, 0)
    assert (fast.global_params != simulator(dim=dim, hidden=hidden).global_params).sum() > 0
    for (name, a), b in zip(fast.model.named_parameters(), dense.model.parameters()):
        assert torch.equal(a, b), f"{name}: {int((a != b).sum())} of {a.numel()} weights differ"
    assert torch.equal(fast.global_params, dense.global_params)


def test_rows_seen_in_an_earlier_step_keep_moving_and_padding_row_stays():
    """Adam keeps updating a row whose gradient is zero again (momentum): the union of looked-up rows must."""
    fast, dense = trained(simulator(local_steps=6, rounds=1)), trained(simulator(local_steps=6, rounds=1, sparse=False))
    assert torch.equal(fast.global_params, dense.global_params)
    emb0 = simulator().model.emb.weight[0]  # the first parameter: row 0 = padding row
    assert torch.equal(fast.global_params[:8], emb0)  # never updated


def test_weight_read_outside_the_lookup_falls_back_to_dense_rows_exactly():
    fast = trained(simulator(reuse_weight=True))
    dense = trained(simulator(reuse_weight=True, sparse=False))
    assert fast.row_sparse is not None
    assert fast.row_sparse.touched_rows()[0] is None  # the hook saw the dense gradient
    assert torch.equal(fast.global_params, dense.global_params)


@pytest.mark.parametrize("kwargs", [
    {"algorithm": "scaffold"},  # after_client_step hook: the correction moves every row
    {"weight_decay": 0.01},  # decoupled decay moves every row
    {"sparse": False},
    {"vocab": MIN_ROWS - 1},  # no vocabulary-sized table
])
def test_row_sparse_path_only_where_exact(kwargs):
    assert simulator(**kwargs).row_sparse is None


def test_a_declared_hook_is_exact_only_on_the_class_that_declares_it():
    from fednlp_bench.algorithms.fedprox import FedProx

    class Plain(FedProx):  # inherits FedProx's declared client_loss
        name = "plain_prox"

    class NewLoss(FedProx):  # overrides client_loss again without declaring it
        name = "new_loss"

        def client_loss(self, ctx, loss):
            return loss * 2

    class Stepper(FedProx):  # another hook, undeclared
        name = "stepper"

        def after_client_step(self, ctx):
            pass

    assert get_algorithm("fedavg").row_sparse_exact() and get_algorithm("fedadam").row_sparse_exact()
    assert FedProx.row_sparse_exact() and Plain.row_sparse_exact()
    assert not NewLoss.row_sparse_exact() and not Stepper.row_sparse_exact()
    assert not get_algorithm("scaffold").row_sparse_exact() and not get_algorithm("fednova").row_sparse_exact()


def test_shared_tables_are_not_eligible():
    model = BagOfWords()
    other = torch.nn.Embedding(VOCAB, 8)
    assert eligible_tables(model) == [model.emb]
    other.weight = model.emb.weight  # tied (as an output layer sharing the word embedding)
    model.tied = other
    assert eligible_tables(model) == []


def test_start_client_restores_every_buffer_after_a_client():
    sim = simulator()
    fast = sim.row_sparse
    sim.algorithm.init_server(sim.global_params)
    fast.start_round()
    fast.start_client()
    ctx = sim.local.context(0, 1, 20, sim.local.schedule(sim.client_train[0], np.random.default_rng(0), 1, 3),
                            lambda: fast, sim.global_params, zero_grad=fast.zero_grad)
    with fast.active():
        sim.algorithm.client_update(ctx)
    assert not torch.equal(sim.params, sim.global_params)
    assert fast.exp_avg.abs().sum() > 0 and sim.grads.abs().sum() > 0
    assert "forward" not in sim.model.emb.__dict__  # the lookup patch is gone after the client
    fast.start_client()  # what the next client sees: a fresh client, without a full reset
    assert torch.equal(sim.params, sim.global_params)
    assert not sim.grads.any() and not fast.exp_avg.any() and not fast.exp_avg_sq.any()
    assert fast.touched_rows() == [0]


def test_option_is_validated_and_recorded(tiny_overrides):
    with pytest.raises(config.ConfigError, match="fl.sparse_embeddings"):
        config.resolve("tc", "smoke", tiny_overrides("fl.sparse_embeddings=3"))
    cfg = config.resolve("tc", "smoke", tiny_overrides("fl.sparse_embeddings=false"))
    assert cfg.fl.sparse_embeddings is False
