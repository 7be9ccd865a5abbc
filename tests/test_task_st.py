"""Sequence tagging: label alignment, seqeval entity F1, CoNLL loader, silver NER, one real smoke run."""
import math

import numpy as np
import pytest

from fednlp_bench import tasks
from fednlp_bench import config, record
from fednlp_bench.batching import Ragged
from fednlp_bench.models import load_tokenizer
from fednlp_bench.run import run
from fednlp_bench.tasks.sequence_tagging import align_labels, entity_scores, entity_type_sets, read_conll

ST = tasks.get("st")


def test_align_labels_first_subtoken_only():
    # [CLS] w0 w0 w1 [SEP] | [CLS] w0 w1 [SEP] (w2 cut by truncation)
    word_ids = [[None, 0, 0, 1, None], [None, 0, 1, None]]
    tags = Ragged.from_lists([[3, 0], [1, 2, 1]])
    labels, label_words = align_labels(word_ids, tags)
    assert labels.get(0).tolist() == [-100, 3, -100, 0, -100]
    assert labels.get(1).tolist() == [-100, 1, 2, -100]
    assert label_words.get(0).tolist() == [0, 1] and label_words.get(1).tolist() == [0, 1]


def test_align_labels_with_real_wordpiece_tokenizer():
    tok = load_tokenizer("minilm-l6")
    words = ["Zuckerberg", "visited", "Kuala", "Lumpur"]
    enc = tok([words], is_split_into_words=True)
    labels, _ = align_labels([enc.word_ids(0)], Ragged.from_lists([[1, 0, 2, 3]]))
    pieces = tok.convert_ids_to_tokens(enc["input_ids"][0])
    got = {p: l for p, l in zip(pieces, labels.get(0).tolist()) if l != -100}
    assert list(got.values()) == [1, 0, 2, 3]
    assert all(not p.startswith("##") for p in got)  # only first sub-tokens carry labels
    assert (labels.get(0) == -100).sum() == len(pieces) - 4


def test_seqeval_entity_f1_on_known_example():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    s = entity_scores(gold, pred)  # 2 of 3 predicted entities right, 2 of 3 gold found
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    # a partially matched span counts as wrong at entity level
    s = entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    assert s["f1"] == 0.0
    assert math.isnan(entity_scores([], [])["f1"])


def test_partition_label_is_sorted_entity_type_set():
    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    rows = Ragged.from_lists([[3, 4, 0, 1], [0, 0], [1, 2, 1], [3]])
    assert entity_type_sets(rows, names).tolist() == ["LOC|PER", "O", "LOC", "PER"]


CONLL = """-DOCSTART- -X- O O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- O O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O
"""


def test_conll_reader_and_loader(tmp_path):
    path = tmp_path / "tiny.conll"
    path.write_text(CONLL)
    words, tags, docs = read_conll(path)
    assert words[0] == ["EU", "rejects", "German", "call", "."]
    assert tags[1] == ["B-PER", "I-PER"] and docs == ["doc1", "doc1", "doc2"]
    dsd = ST.load(str(path), split_seed=0, test_fraction=0.34)
    assert len(dsd["train"]) + len(dsd["test"]) == 3
    names = ST.info(dsd["train"])["label_names"]
    assert names[0] == "O" and set(names) == {"O", "B-ORG", "B-MISC", "B-PER", "I-PER", "B-LOC"}
    labels = {tuple(w): lab for split in ("train", "test")
              for w, lab in zip(dsd[split]["words"], ST.label_for_partition(dsd[split]))}
    assert labels[("EU", "rejects", "German", "call", ".")] == "MISC|ORG"
    assert labels[("BRUSSELS", "1996-08-22")] == "LOC"


def test_conll_directory_and_errors(tmp_path):
    (tmp_path / "train.txt").write_text(CONLL)
    (tmp_path / "dev.txt").write_text("Paris NNP B-NP B-LOC\nis VBZ B-VP O\n")
    dsd = ST.load(str(tmp_path))
    assert (len(dsd["train"]), len(dsd["test"])) == (3, 1)
    bad = tmp_path / "bad.conll"
    bad.write_text("Paris B-LOC\nis X-Y\n")
    with pytest.raises(tasks.DatasetError, match="bad.conll:2: tag 'X-Y'"):
        ST.load(str(bad))
    with pytest.raises(tasks.DatasetError, match="news"):
        ST.load("no_such_corpus")


def test_featurize_and_score_count_truncated_words_as_misses():
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    ds = Dataset.from_dict(
        {"words": [["Ada", "Lovelace", "met", "Charles", "Babbage", "in", "London"]], "tags": [[1, 2, 0, 1, 2, 0, 3]]},
        features=Features({"words": Sequence(Value("string")), "tags": Sequence(ClassLabel(names=names))}),
    )
    tok = load_tokenizer("minilm-l6")
    full = ST._featurize(ds, tok, 64)
    gold_first = {0: full.ragged["word_tags"].get(0)[full.ragged["label_words"].get(0)]}
    assert ST.score(gold_first, full, np.array([0]))["f1"] == 1.0
    cut = ST._featurize(ds, tok, 6)  # [CLS] + 4 pieces + [SEP]: "London" is cut
    pred = {0: cut.ragged["word_tags"].get(0)[cut.ragged["label_words"].get(0)]}
    s = ST.score(pred, cut, np.array([0]))
    assert s["precision"] == 1.0 and s["recall"] < 1.0
    batch = ST.collate(cut, np.array([0]), tok.pad_token_id)
    assert batch["labels"].shape == batch["input_ids"].shape == (1, 6)


def test_silver_tagger_bio_over_ontonotes_types():
    from fednlp_bench.tasks import ner_silver

    names = ner_silver.bio_tag_names()
    assert len(names) == 37 and names[:3] == ["O", "B-CARDINAL", "I-CARDINAL"]
    (sents,) = ner_silver.annotate_sentences(["Tony Blair flew to Paris on Monday. He met officials there."])
    words, tags = sents[0]
    assert words[:2] == ["Tony", "Blair"] and tags[:2] == ["B-PERSON", "I-PERSON"]
    assert tags[words.index("Paris")] == "B-GPE"
    assert len(sents) == 2 and set(sents[1][1]) <= set(names)


@pytest.mark.slow
def test_packaged_news_dataset_and_smoke_run(tmp_path):
    dsd = ST.load("news")
    assert len(dsd["train"]) > 5000 and len(dsd["test"]) > 1000
    assert len(ST.info(dsd["train"])["label_names"]) == 37
    train_docs = set(dsd["train"].data.column("doc").to_pylist())
    assert train_docs.isdisjoint(dsd["test"].data.column("doc").to_pylist())  # split by article
    assert len(set(ST.groups_for_partition(dsd["train"]))) == 14
    cfg = config.resolve("st", "smoke", ["wandb=disabled", "progress=false", f"results_dir={tmp_path}"])
    rec, path = run(cfg)
    assert path.exists() and record.problems(rec) == []
    for m in (rec["metrics"]["initial"], rec["metrics"]["final"]):
        assert set(m) == {"f1", "precision", "recall"} and all(0.0 <= v <= 1.0 for v in m.values())
    assert rec["metrics"]["primary"] == "f1" and rec["metrics"]["per_client"]
