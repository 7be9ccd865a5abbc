import numpy as np
import torch

from fednlp_bench.batching import Ragged, TokenizedData, eval_batches, length_grouped_batches
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
