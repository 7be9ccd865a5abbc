"""Real MiniLM sentence embeddings (packaged model, offline) feeding feature_cluster."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fednlp_bench import partitioners
from fednlp_bench.partitioners.embeddings import default_model_dir, embeddings_key, sentence_embeddings

TOPICS = {
    "sport": ["The striker scored twice in the final.", "The team won the league title.", "A late goal decided the match.",
              "The tennis champion lost in straight sets.", "Fans cheered as the runner broke the record."],
    "finance": ["Stocks fell sharply after the earnings report.", "The central bank raised interest rates.",
                "Bond yields climbed to a ten-year high.", "The company's shares doubled in value.",
                "Investors fear a recession next year."],
}


def test_embedding_key_depends_on_texts_and_model(tmp_path) -> None:
    assert embeddings_key(["a", "b"], "m") != embeddings_key(["ab"], "m")
    assert embeddings_key(["a"], "m") != embeddings_key(["a"], "n")
    assert os.path.isdir(default_model_dir())


@pytest.mark.slow
def test_minilm_embeddings_cluster_by_topic(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts, topic = [], []
    for i, (name, sents) in enumerate(TOPICS.items()):
        for s in sents:
            for suffix in ("", " Really.", " Reports say so.", " It happened yesterday.", " Everyone agreed."):
                texts.append(s + suffix)
                topic.append(i)
    emb = sentence_embeddings(texts, cache_dir=tmp_path)
    assert emb.shape == (50, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert len(list(tmp_path.glob("emb-*.npy"))) == 1
    assert np.array_equal(sentence_embeddings(texts, cache_dir=tmp_path), emb)  # cache hit
    p = partitioners.make("feature_cluster", 2, 0, n_clusters=2, alpha=0.01)
    parts = p.split(features=emb)
    assert sorted(np.concatenate(parts).tolist()) == list(range(50))
    from fednlp_bench.partitioners.feature_cluster import cluster_ids

    ids, _ = cluster_ids(emb, 2, 0)
    agree = np.mean(ids == np.asarray(topic))
    assert max(agree, 1 - agree) > 0.9  # clusters recover the two topics
