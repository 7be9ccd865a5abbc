"""Extractive QA: SQuAD metric, cloze construction, sliding windows and span mapping, loaders, a smoke run."""
import json

import numpy as np
import pytest
import torch

from fednlp_bench import tasks
from fednlp_bench import config, record
from fednlp_bench.models import load_tokenizer
from fednlp_bench.run import run
from fednlp_bench.tasks import qa_windows
from fednlp_bench.tasks.cloze_qa import PLACEHOLDER, cut_context, find_whole_word, make_cloze
from fednlp_bench.tasks.squad_metric import exact_match, normalize_answer, squad_scores, token_f1

QA = tasks.get("qa")


# --------------------------------------------------------------------------- metric
def test_squad_normalisation():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Theatre") == "theatre"  # 'the' only as a whole word


def test_squad_exact_match_and_f1_on_known_examples():
    assert exact_match("the Eiffel tower", "Eiffel Tower.") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    # pred tokens {barack, obama, president}, gold {president, obama}: P = 2/3, R = 1
    assert token_f1("Barack Obama, president", "President Obama") == pytest.approx(0.8)
    assert token_f1("Paris", "London") == 0.0
    # best over gold answers, averaged over examples
    s = squad_scores(["Denver Broncos", "Santa Clara"], [["Broncos", "Denver Broncos"], ["Levi's Stadium"]])
    assert s == {"f1": pytest.approx(0.5), "exact_match": pytest.approx(0.5)}


# --------------------------------------------------------------------------- cloze data
def test_cloze_question_answer_is_first_whole_word_occurrence():
    title = "Blair backs Brown on tax"
    body = "Blairites cheered. Tony Blair said Gordon Brown was right. Blair added more."
    ents = [(0, 5, "PERSON"), (12, 17, "PERSON")]
    ex = make_cloze(title, body, ents)
    assert ex.question == f"{PLACEHOLDER} backs Brown on tax"
    assert ex.answer_start == body.index("Tony Blair") + 5 and ex.answer_text == "Blair"
    assert body[ex.answer_start : ex.answer_start + len(ex.answer_text)] == "Blair"
    # numbers are not cloze answers; entities absent from the body are skipped
    assert make_cloze("3 held in Leeds", "Police in York arrested 3.", [(0, 1, "CARDINAL"), (10, 15, "GPE")]) is None
    assert find_whole_word("Blairite Blair", "Blair") == 9


def test_cut_context_at_sentence_end():
    body = "One two. Three four. " * 100
    cut = cut_context(body, 50)
    assert len(cut) <= 50 and cut.endswith(".")
    assert cut_context("short", 50) == "short"


# --------------------------------------------------------------------------- windows
LONG_CONTEXT = " ".join(f"Filler sentence number {i} says nothing." for i in range(30)) + \
    " The treasure is hidden in Zanzibar harbour. " + " ".join(f"More words {i}." for i in range(10))


def _featurize_one(tok, max_len=48, stride=12):
    start = LONG_CONTEXT.index("Zanzibar harbour")
    end = start + len("Zanzibar harbour")
    data = qa_windows.featurize(tok, ["Where is the treasure?"], [LONG_CONTEXT], [[start]], [[end]], max_len, stride)
    return data, start, end


def test_sliding_windows_overlap_and_label_the_answer_window():
    tok = load_tokenizer("minilm-l6")
    data, start, end = _featurize_one(tok)
    windows, owner = qa_windows.windows_of(data, np.array([0]))
    assert len(windows) > 5 and (owner == 0).all()
    assert data.ragged["window_lens"].values.max() <= 48
    ids = qa_windows.window_column(data, "input_ids", windows, tok.pad_token_id)
    cs = qa_windows.window_column(data, "ctx_start", windows, -1)
    # consecutive windows overlap by `stride` context tokens
    ctx0, ctx1 = cs[0][cs[0] >= 0], cs[1][cs[1] >= 0]
    assert np.intersect1d(ctx0, ctx1).size == 12
    s_pos, e_pos = data.ragged["start_positions"].values, data.ragged["end_positions"].values
    hits = np.flatnonzero(s_pos > 0)
    assert len(hits) >= 1 and (e_pos[s_pos == 0] == 0).all()
    for w in hits:
        assert tok.decode(ids[w][s_pos[w] : e_pos[w] + 1]) == "zanzibar harbour"
    ce = qa_windows.window_column(data, "ctx_end", windows, -1)
    w = hits[0]
    assert LONG_CONTEXT[cs[w][s_pos[w]] : ce[w][e_pos[w]]] == "Zanzibar harbour"


def test_answer_token_span_outside_window_points_at_cls():
    cs = np.array([-1, -1, 0, 4, 9, -1])
    ce = np.array([-1, -1, 3, 8, 12, -1])
    assert qa_windows.answer_token_span(cs, ce, 4, 12) == (3, 4)
    assert qa_windows.answer_token_span(cs, ce, 9, 20) == (0, 0)  # runs past the window


def test_best_span_respects_context_order_and_length():
    start = torch.tensor([[0.0, 9.0, 1.0, 0.0, 5.0]])
    end = torch.tensor([[0.0, 0.0, 2.0, 8.0, 0.0]])
    ctx = torch.tensor([[False, True, True, True, True]])
    s, e, score = qa_windows.best_spans(start, end, ctx)
    assert (s[0], e[0], score[0]) == (1, 3, 17.0)
    s, e, _ = qa_windows.best_spans(start, end, ctx, max_answer_tokens=2)  # span of 3 tokens not allowed
    assert (s[0], e[0]) == (1, 2)
    s, e, _ = qa_windows.best_spans(start, end, torch.tensor([[False, False, False, True, True]]))
    assert s[0] >= 3 and e[0] >= s[0]


class _PointAtTokens(torch.nn.Module):
    """A stand-in QA model whose logits peak on two given token ids."""

    def __init__(self, first_id: int, last_id: int):
        super().__init__()
        self.first_id, self.last_id = first_id, last_id

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        from types import SimpleNamespace

        return SimpleNamespace(start_logits=(input_ids == self.first_id).float() * 10,
                               end_logits=(input_ids == self.last_id).float() * 10)


def test_predict_maps_best_window_span_back_to_characters():
    tok = load_tokenizer("minilm-l6")
    data, start, end = _featurize_one(tok)
    ids = tok("Zanzibar harbour", add_special_tokens=False)["input_ids"]
    preds = QA.predict(_PointAtTokens(ids[0], ids[-1]), data, np.array([0]), batch_size=4, pad_id=0, device="cpu")
    assert preds[0].tolist() == [start, end]
    assert QA.score(preds, data, np.array([0])) == {"f1": 1.0, "exact_match": 1.0}


# --------------------------------------------------------------------------- loaders
def _squad(articles):
    return {"version": "1.1", "data": articles}


def test_squad_json_loader(tmp_path):
    ctx = "Super Bowl 50 was played at Levi's Stadium in Santa Clara."
    data = _squad([
        {"title": "Super_Bowl", "paragraphs": [{"context": ctx, "qas": [
            {"id": "q1", "question": "Where was Super Bowl 50 played?",
             "answers": [{"text": "Levi's Stadium", "answer_start": 28}, {"text": "Santa Clara", "answer_start": 46}]},
            {"id": "q2", "question": "Which game was it?", "answers": [{"text": "Super Bowl 50", "answer_start": 0}]},
            {"id": "q3", "question": "Who won?", "answers": [], "is_impossible": True},
            {"id": "q4", "question": "Bad span?", "answers": [{"text": "Stadium", "answer_start": 0}]},
        ]}]},
        {"title": "Paris", "paragraphs": [{"context": "Paris is the capital of France.", "qas": [
            {"id": f"p{i}", "question": "What is Paris the capital of?", "answers": [{"text": "France", "answer_start": 24}]}
            for i in range(4)]}]},
    ])
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(data))
    dsd = QA.load(str(path), split_seed=0, test_fraction=0.4)
    rows = list(dsd["train"]) + list(dsd["test"])
    assert len(rows) == 6  # q3 unanswerable and q4 mis-spanned are dropped
    q1 = next(r for r in rows if r["id"] == "q1")
    assert q1["answer_texts"] == ["Levi's Stadium", "Santa Clara"] and q1["label"] == "where" and q1["group"] == "Super_Bowl"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.json").write_text(json.dumps(data))
    (tmp_path / "d" / "dev.json").write_text(json.dumps(data))
    dd = QA.load(str(tmp_path / "d"))
    assert (len(dd["train"]), len(dd["test"])) == (6, 6)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(tasks.DatasetError, match="not valid JSON"):
        QA.load(str(tmp_path / "bad.json"))


def test_scores_are_per_example_on_any_row_subset():
    tok = load_tokenizer("minilm-l6")
    ctxs = ["Alice met Bob in Rome.", "Carol flew to Oslo. " * 30]
    starts = [[ctxs[0].index("Rome")], [ctxs[1].index("Oslo")]]
    data = qa_windows.featurize(tok, ["Where?", "Where to?"], ctxs, starts, [[s[0] + 4] for s in starts], 32, 8)
    assert data.ragged["window_lens"].lengths.tolist()[0] == 1 and data.ragged["window_lens"].lengths[1] > 1
    preds = {0: np.array(starts[0] + [starts[0][0] + 4]), 1: np.array([0, 5])}  # right, wrong
    assert QA.score(preds, data, np.array([0, 1]))["exact_match"] == 0.5
    assert QA.score(preds, data, np.array([1]))["f1"] == 0.0
    batch = QA.collate(data, np.array([1]), tok.pad_token_id)
    assert batch["input_ids"].shape[0] == data.ragged["window_lens"].lengths[1]  # one row = all its windows


@pytest.mark.slow
def test_packaged_cloze_dataset_and_smoke_run(tmp_path):
    dsd = QA.load("news")
    assert len(dsd["train"]) > 2500
    ex = dsd["train"][0]
    assert PLACEHOLDER in ex["question"]
    s, t = ex["answer_starts"][0], ex["answer_texts"][0]
    assert ex["context"][s : s + len(t)] == t
    cfg = config.resolve("qa", "smoke", ["wandb=disabled", "progress=false", f"results_dir={tmp_path}"])
    rec, path = run(cfg)
    assert path.exists() and record.problems(rec) == []
    assert rec["fl"]["n_train"] == 64  # rows are questions, not windows
    for m in (rec["metrics"]["initial"], rec["metrics"]["final"]):
        assert set(m) == {"f1", "exact_match"} and all(0.0 <= v <= 1.0 for v in m.values())
