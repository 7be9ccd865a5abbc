"""Next-word prediction: causal mask, target shift, metrics against hand computation, shortlist, loaders, smoke run."""
import json

import numpy as np
import pytest
import torch

from fednlp_bench import config, record, tasks
from fednlp_bench.models import load_tokenizer
from fednlp_bench.tasks import causal_lm
from fednlp_bench.tasks.language_modeling import shortlist
from fednlp_bench.tasks.lm_corpora import sentences

LM = tasks.get("lm")
VOCAB = 40


def tiny_lm(seed: int = 0, vocab_ids=(5, 6, 7, 8, 9, 3)) -> causal_lm.CausalLM:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32, is_decoder=True)
    return causal_lm.CausalLM(BertModel(cfg, add_pooling_layer=False), list(vocab_ids), VOCAB).eval()


def test_causal_mask_hides_later_tokens():
    model = tiny_lm()
    a = torch.tensor([[2, 5, 6, 7, 8, 3]])
    b = a.clone()
    b[0, 4] = 9
    la, lb = model(input_ids=a).logits, model(input_ids=b).logits
    assert torch.equal(la[0, :4], lb[0, :4])  # positions before the change see nothing of it
    assert not torch.allclose(la[0, 4:], lb[0, 4:])


def test_next_token_targets_shift_and_oov():
    model = tiny_lm()  # classes: 5->0, 6->1, 7->2, 8->3, 9->4, 3->5, OOV->6
    labels = torch.tensor([[2, 5, 11, 9, 3, -100]])
    assert model.next_classes(labels).tolist() == [[0, 6, 4, 5, -100, -100]]
    assert model.oov_class == 6 and model.n_classes == 7


def test_metrics_match_a_hand_computation():
    model = tiny_lm(seed=1)
    rows = [[2, 5, 6, 3], [2, 7, 12, 8, 9, 3], [2, 9, 3]]  # token 12 is out of the shortlist
    from fednlp_bench.batching import Ragged, TokenizedData

    data = TokenizedData(ragged={"input_ids": Ragged.from_lists(rows)})
    preds = LM.predict(model, data, np.arange(3), batch_size=2, pad_id=0, device=torch.device("cpu"))
    got = LM.score(preds, data, np.arange(3))
    nll, hits, n, hits_iv, n_iv = 0.0, 0, 0, 0, 0
    cls = {5: 0, 6: 1, 7: 2, 8: 3, 9: 4, 3: 5}
    for row in rows:  # each row alone, no padding: log-softmax by hand in float64
        z = model(input_ids=torch.tensor([row])).logits[0].double().detach().numpy()
        logp = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
        for t in range(len(row) - 1):
            target = cls.get(row[t + 1], 6)
            nll -= logp[t, target]
            hit = int(z[t].argmax() == target)
            hits, n = hits + hit, n + 1
            if target != 6 and t != len(row) - 2:  # not OOV, not the end-of-sentence [SEP]
                hits_iv, n_iv = hits_iv + hit, n_iv + 1
    assert n == 10 and n_iv == 6
    assert got["loss"] == pytest.approx(nll / n, rel=1e-5)
    assert got["perplexity"] == pytest.approx(np.exp(nll / n), rel=1e-5)
    assert got["accuracy"] == pytest.approx(hits / n)
    assert got["accuracy_no_oov_no_eos"] == pytest.approx(hits_iv / n_iv)
    # per-example loss (DP-SGD, membership inference) is each row's mean token NLL, padding ignored
    batch = LM.collate(data, np.arange(3), pad_id=0)
    per_row = LM.per_example_loss(model, batch).detach().numpy()
    alone = [float(model(input_ids=torch.tensor([r]), labels=torch.tensor([r])).loss.detach()) for r in rows]
    assert per_row == pytest.approx(alone, rel=1e-5)


def test_shortlist_counts_targets_and_keeps_digits():
    tok = load_tokenizer("minilm-l6")
    info = shortlist(["the cat", "the dog the end"], tok, size=2)
    the, cat, sep = tok.convert_tokens_to_ids(["the", "cat", "[SEP]"])
    assert info["vocab_ids"][:2] == [the, sep]  # 3 and 2 occurrences as targets ([CLS] is never a target)
    assert set(tok.convert_tokens_to_ids(list("0123456789"))) <= set(info["vocab_ids"])
    assert len(info["counts"]) == len(info["vocab_ids"]) + 1
    assert info["counts"][:2] == [3, 2] and sum(info["counts"]) == 8 and cat not in info["vocab_ids"]
    assert info["counts"][-1] == 3  # cat, dog, end are out of the shortlist


def test_sentence_split():
    # sentences of fewer than 3 words are dropped
    assert sentences("I agree. He said \"no\" twice!  Ok. Who is it?") == ['He said "no" twice!', "Who is it?"]


def test_text_file_loaders(tmp_path):
    (tmp_path / "docs.txt").write_text("first document here\n\nsecond one\nthird line of text\n")
    dsd = LM.load(str(tmp_path / "docs.txt"), split_seed=0, test_fraction=0.34)
    assert len(dsd["train"]) + len(dsd["test"]) == 3 and "group" not in dsd["train"].column_names
    (tmp_path / "c.tsv").write_text("alice\thello there friend\nbob\tgood morning all\nalice\tsee you\n")
    dsd = LM.load(str(tmp_path / "c.tsv"), split_seed=0, test_fraction=0.34)
    assert sorted(LM.groups_for_partition(dsd["train"]).tolist() + LM.groups_for_partition(dsd["test"]).tolist()) \
        == ["alice", "alice", "bob"]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"text": f"doc {i}", "client": f"u{i % 2}"})
                                                for i in range(5)))
    assert set(LM.load(str(tmp_path / "c.jsonl"))["train"].column_names) == {"text", "group"}
    (tmp_path / "bad.tsv").write_text("alice\thello\nno tab here\n")
    with pytest.raises(tasks.DatasetError, match=r"bad.tsv:2: expected 'client<TAB>text'"):
        LM.load(str(tmp_path / "bad.tsv"))
    (tmp_path / "mixed.jsonl").write_text(json.dumps({"text": "a", "client": "x"}) + "\n" + json.dumps({"text": "b"}))
    with pytest.raises(tasks.DatasetError, match="'client' must be set in every row or in none"):
        LM.load(str(tmp_path / "mixed.jsonl"))
    (tmp_path / "x.md").write_text("a document\n")
    with pytest.raises(tasks.DatasetError, match=r"must end in .txt, .tsv, .csv or .jsonl"):
        LM.load(str(tmp_path / "x.md"))


def test_packaged_commons_has_many_natural_clients_of_very_different_sizes():
    dsd = LM.load("commons")
    groups = np.concatenate([LM.groups_for_partition(dsd[s]) for s in ("train", "test")])
    sizes = np.unique(groups, return_counts=True)[1]
    assert len(sizes) >= 500 and sizes.max() >= 200 and np.median(sizes) <= 10


def test_validation_split_is_a_uniform_document_sample_like_the_test_split():
    train = LM.load("commons")["train"]
    groups = np.asarray(LM.groups_for_partition(train))
    names, codes, counts = np.unique(groups, return_inverse=True, return_counts=True)
    small = counts[codes] <= 5  # documents of speakers with at most 5 sentences: ~10% of the corpus
    for limit in (400, None):
        rows = LM.validation_rows(train, 0.1, seed=0, limit=limit)
        assert len(rows) == (limit or round(0.1 * len(train))) and len(np.unique(rows)) == len(rows)
        # a uniform sample keeps their share to within 3 binomial standard deviations (speaker-stratified
        # largest-remainder rounding gives them no row at all)
        sd = np.sqrt(small.mean() * (1 - small.mean()) / len(rows))
        assert abs(small[rows].mean() - small.mean()) < 3 * sd
    assert np.array_equal(LM.validation_rows(train, 0.1, seed=0), LM.validation_rows(train, 0.1, seed=0))
    assert not np.array_equal(LM.validation_rows(train, 0.1, seed=0), LM.validation_rows(train, 0.1, seed=1))
    assert len(LM.validation_rows(train, 0.0, seed=0)) == 0


@pytest.mark.slow
def test_smoke_run_writes_a_valid_record(tiny_overrides):
    from fednlp_bench.run import run

    overrides = [o for o in tiny_overrides("threads=1") if not o.startswith("data.max_len")]
    rec, path = run(config.resolve("lm", "smoke", overrides))
    saved = record.validate(json.loads(path.read_text()))
    final, initial = saved["metrics"]["final"], saved["metrics"]["initial"]
    assert saved["task"] == "lm" and saved["metrics"]["primary"] == "accuracy"
    assert 0 <= final["accuracy"] <= 1 and final["perplexity"] == pytest.approx(np.exp(final["loss"]))
    per_round = saved["metrics"]["per_round"]
    assert saved["fl"]["n_val"] == 48 and all(row["split"] == "val" for row in per_round)
    assert per_round[-1]["loss"] < initial["loss"]  # two rounds of next-word training lower the validation loss
    assert saved["metrics"]["counterfactual"]["probe"].endswith("log-likelihood gap")


def test_user_text_files_are_read_like_every_other_user_file(tmp_path):
    """Not UTF-8 is an error naming the line (never a silent latin-1 guess); a BOM is skipped; CSV
    rows are checked by the shared reader; a JSONL row that is not an object names its line."""
    from fednlp_bench.tasks.lm_corpora import read_documents

    (tmp_path / "latin.txt").write_bytes("caf\u00e9 one\nna\u00efve two\n".encode("latin-1"))
    with pytest.raises(tasks.DatasetError, match=r"latin.txt:1: byte 0xe9 is not UTF-8"):
        read_documents(tmp_path / "latin.txt")
    (tmp_path / "bom.txt").write_bytes("\ufefffirst doc\nsecond doc\n".encode("utf-8"))
    assert read_documents(tmp_path / "bom.txt") == (["first doc", "second doc"], None)
    (tmp_path / "d.csv").write_text('text,client\n"a, b",u1\nc,u2\n', encoding="utf-8")
    assert read_documents(tmp_path / "d.csv") == (["a, b", "c"], ["u1", "u2"])
    (tmp_path / "wide.csv").write_text("text\na,b\n", encoding="utf-8")
    with pytest.raises(tasks.DatasetError, match=r"wide.csv:2: 2 cells but the header has 1"):
        read_documents(tmp_path / "wide.csv")
    (tmp_path / "notext.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n', encoding="utf-8")
    with pytest.raises(tasks.DatasetError, match=r"notext.jsonl:2: missing 'text'"):
        read_documents(tmp_path / "notext.jsonl")
    (tmp_path / "list.jsonl").write_text('{"text": "a"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(tasks.DatasetError, match=r"list.jsonl:2: expected a JSON object"):
        read_documents(tmp_path / "list.jsonl")
