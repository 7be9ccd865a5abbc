"""Seq2seq: ROUGE on hand-checked examples, decoder labels, JSONL loader, BERT2BERT build, a smoke run."""
import json

import numpy as np
import pytest

from fednlp_bench import tasks
from fednlp_bench import config, record
from fednlp_bench.batching import Ragged, TokenizedData
from fednlp_bench.models import load_tokenizer, resolve_model
from fednlp_bench.run import run
from fednlp_bench.tasks.seq2seq import MAX_TARGET_TOKENS, rouge_scores, target_ids
from fednlp_bench.tasks.text_arrays import strings_to_ragged

S2S = tasks.get("s2s")


def test_rouge_on_hand_checked_example():
    s = rouge_scores(["the cat sat"], ["the cat sat on the mat"])
    # unigrams: P = 3/3, R = 3/6 -> F = 2/3; bigrams: P = 2/2, R = 2/5 -> F = 4/7; LCS = 3 words as ROUGE-1
    assert s["rouge1"] == pytest.approx(2 / 3)
    assert s["rouge2"] == pytest.approx(4 / 7)
    assert s["rougeL"] == pytest.approx(2 / 3)
    assert rouge_scores(["cats running"], ["cat runs"])["rouge1"] == 1.0  # Porter stemmer
    assert rouge_scores([""], ["a headline"])["rougeL"] == 0.0
    # LCS respects order: "b a" vs "a b" shares one in-order word
    assert rouge_scores(["beta alpha"], ["alpha beta"])["rougeL"] == pytest.approx(0.5)


def test_decoder_labels_end_with_sep_and_skip_cls():
    tok = load_tokenizer("minilm-l6")
    (ids,) = target_ids(tok, ["India calls for fair trade rules"])
    assert ids[0] != tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.decode(ids[:-1]) == "india calls for fair trade rules"
    (long_ids,) = target_ids(tok, ["word " * 100])
    assert len(long_ids) == MAX_TARGET_TOKENS and long_ids[-1] == tok.sep_token_id


def test_jsonl_loader_and_errors(tmp_path):
    rows = [{"source": f"article {i} text", "target": f"title {i}", "group": f"g{i % 2}"} for i in range(10)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    dsd = S2S.load(str(tmp_path / "pairs.jsonl"), split_seed=0, test_fraction=0.2)
    assert (len(dsd["train"]), len(dsd["test"])) == (8, 2)
    assert set(S2S.groups_for_partition(dsd["train"])) <= {"g0", "g1"}
    (tmp_path / "d").mkdir()
    for split in ("train", "test"):
        (tmp_path / "d" / f"{split}.jsonl").write_text(json.dumps({"source": "s", "target": "t"}) + "\n")
    dd = S2S.load(str(tmp_path / "d"))
    # no groups: null, so `natural` refuses; label skew sees one class
    assert dd["train"][0] == {"source": "s", "target": "t", "group": None}
    assert S2S.groups_for_partition(dd["train"]) is None
    assert S2S.label_for_partition(dd["train"]).tolist() == ["all"]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(tasks.DatasetError, match="bad.jsonl:1: missing 'source'; every row needs 'source'"):
        S2S.load(str(tmp_path / "bad.jsonl"))


def test_score_against_stored_reference_text():
    data = TokenizedData(ragged={"input_ids": Ragged.from_lists([[1], [2]]),
                                 "reference": strings_to_ragged(["Blair wins vote", "Oil price rises"])})
    preds = {0: "blair wins vote", 1: "stocks fall"}
    assert S2S.score(preds, data, np.array([0]))["rougeL"] == 1.0
    assert S2S.score(preds, data, np.array([0, 1]))["rouge1"] == pytest.approx(0.5)


@pytest.mark.slow
def test_bert2bert_is_warm_started_and_generates():
    import torch

    tok = load_tokenizer("minilm-l6")
    model = S2S.build_model(resolve_model("minilm-l6"), {})
    assert model.config.decoder_start_token_id == tok.cls_token_id
    assert model.generation_config.eos_token_id == tok.sep_token_id and model.config.pad_token_id == tok.pad_token_id
    assert model.config.decoder.is_decoder and model.config.decoder.add_cross_attention
    batch = tok(["The BBC reported that the bank raised rates."], return_tensors="pt")
    labels = torch.tensor([target_ids(tok, ["Bank raises rates"])[0]])
    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    assert torch.isfinite(loss)
    out = S2S.predict_batch(model.eval(), {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    assert 1 <= len(out[0]) <= 1 + 24


@pytest.mark.slow
def test_packaged_headlines_and_smoke_run(tmp_path):
    dsd = S2S.load("news")
    assert len(dsd["train"]) + len(dsd["test"]) > 5800
    assert len(set(S2S.groups_for_partition(dsd["train"]))) == 14
    cfg = config.resolve("s2s", "smoke", ["wandb=disabled", "progress=false", f"results_dir={tmp_path}"])
    rec, path = run(cfg)
    assert path.exists() and record.problems(rec) == []
    assert rec["metrics"]["primary"] == "rougeL"
    for m in (rec["metrics"]["initial"], rec["metrics"]["final"]):
        assert set(m) == {"rouge1", "rouge2", "rougeL"} and all(0.0 <= v <= 1.0 for v in m.values())
