import numpy as np
import pytest
import torch

from fednlp_bench.batching import Ragged, TokenizedData, eval_batches, length_grouped_batches, poisson_batches
from fednlp_bench.local import flatten_model


def test_ragged_pad_and_mask():
    r = Ragged.from_lists([[1, 2, 3], [4], [5, 6]])
    out = r.pad(np.array([2, 0, 1]), pad_value=0)
    assert out.tolist() == [[5, 6, 0], [1, 2, 3], [4, 0, 0]]
    ids, mask = r.pad_with_mask(np.array([1, 2]), pad_value=9)
    assert ids.tolist() == [[4, 9], [5, 6]]
    assert mask.tolist() == [[1, 0], [1, 1]]


def test_tokenized_data_roundtrip(tmp_path):
    data = TokenizedData({"input_ids": Ragged.from_lists([[1, 2], [3]])}, {"labels": np.array([0, 1])})
    data.save(tmp_path / "x.npz")
    back = TokenizedData.load(tmp_path / "x.npz")
    assert back.ragged["input_ids"].get(0).tolist() == [1, 2]
    assert back.columns["labels"].tolist() == [0, 1]
    assert list(tmp_path.iterdir()) == [tmp_path / "x.npz"]  # no temp files left behind


def test_length_grouped_batches_cover_rows_once_and_reduce_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=1000)
    rows = np.arange(1000)
    batches = length_grouped_batches(rows, lengths, 16, np.random.default_rng(1))
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == rows.tolist()
    grouped = sum(lengths[b].max() * len(b) for b in batches)
    plain = sum(lengths[b].max() * len(b) for b in np.array_split(rng.permutation(rows), len(batches)))
    assert grouped < 0.8 * plain
    again = length_grouped_batches(rows, lengths, 16, np.random.default_rng(1))
    assert all((a == b).all() for a, b in zip(batches, again))


def test_eval_batches_sorted():
    lengths = np.array([5, 1, 3, 2])
    assert [b.tolist() for b in eval_batches(np.arange(4), lengths, 2)] == [[1, 3], [2, 0]]


def test_flatten_model_makes_views_and_grads_accumulate_in_place():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    params, grads = flatten_model(model)
    assert torch.equal(params, before)
    params.zero_()
    assert all((p == 0).all() for p in model.parameters())
    params.copy_(before)
    model(torch.ones(5, 3)).sum().backward()
    flat = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert torch.equal(flat, grads) and grads.abs().sum() > 0
    assert all(p.grad.data_ptr() >= grads.data_ptr() for p in model.parameters())


def test_poisson_batch_sizes_are_binomial():
    """Every row joins a batch independently with probability q: sizes are Binomial(n, q)
    (checked against the pmf over 20,000 batches) and two rows are together with probability q^2."""
    from math import comb

    n, q = 37, 0.15
    rows = np.arange(1000, 1000 + n) * 7  # arbitrary row ids
    batches = list(poisson_batches(rows, q, 20_000, np.random.default_rng(0)))
    sizes = np.array([len(b) for b in batches])
    pmf = np.array([comb(n, k) * q**k * (1 - q) ** (n - k) for k in range(n + 1)])
    observed = np.bincount(sizes, minlength=n + 1) / len(sizes)
    assert 0.5 * np.abs(observed - pmf).sum() < 0.02  # total variation; sampling noise ~0.01
    assert sizes.mean() == pytest.approx(n * q, rel=0.02)
    assert sizes.var() == pytest.approx(n * q * (1 - q), rel=0.05)
    assert (sizes == 0).mean() == pytest.approx((1 - q) ** n, abs=0.004)
    both = np.mean([rows[3] in b and rows[17] in b for b in batches])
    assert both == pytest.approx(q * q, abs=0.005)
    assert all(np.isin(b, rows).all() and len(np.unique(b)) == len(b) for b in batches[:100])


def test_poisson_batches_do_not_move_other_rows():
    """Removing one example leaves every other example's batch membership unchanged
    (the batches of length_grouped_batches change, which breaks the accountant's assumption)."""
    rows = np.arange(200)
    lengths = np.random.default_rng(0).integers(5, 100, 200)
    with_x = list(poisson_batches(rows, 0.1, 50, np.random.default_rng(5)))
    without = list(poisson_batches(np.delete(rows, 42), 0.1, 50, np.random.default_rng(5)))
    assert all(np.array_equal(a[a != 42], b) for a, b in zip(with_x, without))
    assert any(42 in a for a in with_x)
    grouped = length_grouped_batches(rows, lengths, 16, np.random.default_rng(5))
    grouped_without = length_grouped_batches(np.delete(rows, 42), lengths, 16, np.random.default_rng(5))
    moved = sum(not np.array_equal(np.sort(a[a != 42]), np.sort(b)) for a, b in zip(grouped, grouped_without))
    assert moved > 0


def test_local_training_uses_poisson_batches_under_sample_level_dp():
    """With DP-SGD the local schedule is Poisson sampling at rate batch_size / client size with
    ceil(n / batch_size) steps per epoch; without DP it stays length-grouped fixed-size batches."""
    from test_sparse_rows import BagOfWords, BagTask, bag_data  # a small model (tests/ is on sys.path)

    from fednlp_bench.config import FLConfig, PrivacyConfig, RunConfig
    from fednlp_bench.privacy.runtime import PrivacyRuntime
    from fednlp_bench.run import local_training

    cfg = RunConfig(seed=3, fl=FLConfig(batch_size=4), device="cpu", wandb="disabled", progress=False)
    data, rows = bag_data(100, 1), np.arange(20, 40)  # one client of 20 rows, batch size 4
    privacy = PrivacyRuntime(PrivacyConfig(sample_level=True), seed=0, client_sizes=[20] * 5, clients_per_round=3,
                             rounds=2, batch_size=4, local_epochs=1, local_steps=None, sampler="uniform", n_train=100)

    def local(privacy):
        return local_training(cfg, BagTask(), BagOfWords(), data, pad_id=0, device=torch.device("cpu"),
                              privacy=privacy)

    plain = list(local(None).schedule(rows, np.random.default_rng(0), 1, None))
    assert [len(b) for b in plain] == [4] * 5
    dp = local(privacy)
    sizes = []
    for seed in range(400):
        batches = list(dp.schedule(rows, np.random.default_rng(seed), 1, None))
        assert len(batches) == 5
        sizes += [len(b) for b in batches]
    assert np.mean(sizes) == pytest.approx(4.0, rel=0.05)  # q n = (4 / 20) * 20
    assert np.var(sizes) == pytest.approx(20 * 0.2 * 0.8, rel=0.15)  # Binomial(20, 0.2), not a fixed size
    assert len(list(dp.schedule(rows, np.random.default_rng(0), 2, 7))) == 7  # fl.local_steps
