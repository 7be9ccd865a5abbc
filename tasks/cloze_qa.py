"""Cloze questions from news headlines, in the manner of the CNN/Daily Mail reading set.

Hermann et al. 2015 ("Teaching machines to read and comprehend") turned
summary points into questions by replacing an entity with ``@placeholder``.
Here the summary is the headline: its first named entity (spaCy, see
:mod:`tasks.ner_silver`) that also occurs in the article body becomes
``@placeholder``; the answer is the entity's first whole-word occurrence in the
body, and the span is checked (``context[start:end] == entity``). The context
is the body cut to at most ``max_context_chars`` at a sentence end (answers
beyond the cut are skipped), which keeps CPU training affordable while long
contexts still need several sliding windows at short ``max_len``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

PLACEHOLDER = "@placeholder"
# Named entities only: numbers, dates and amounts make poor cloze answers.
ANSWER_TYPES = frozenset({"PERSON", "ORG", "GPE", "NORP", "LOC", "FAC", "EVENT", "PRODUCT", "WORK_OF_ART", "LAW",
                          "LANGUAGE"})
MAX_CONTEXT_CHARS = 1200
_SENT_END = re.compile(r"[.!?][\"')\]]?\s")


@dataclass(frozen=True)
class ClozeExample:
    question: str
    context: str
    answer_start: int
    answer_text: str
    answer_type: str


def cut_context(body: str, max_chars: int = MAX_CONTEXT_CHARS) -> str:
    """``body`` up to the last sentence end within ``max_chars`` (hard cut if there is none)."""
    if len(body) <= max_chars:
        return body
    ends = [m.end() for m in _SENT_END.finditer(body, 0, max_chars + 1)]
    return body[: ends[-1]].rstrip() if ends else body[:max_chars]


def find_whole_word(text: str, phrase: str) -> int:
    """Start of the first occurrence of ``phrase`` in ``text`` not inside a longer word, or -1."""
    m = re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text)
    return m.start() if m else -1


def make_cloze(
    title: str, body: str, title_entities: list[tuple[int, int, str]], max_context_chars: int = MAX_CONTEXT_CHARS
) -> ClozeExample | None:
    """The cloze example of one article, or ``None`` if no headline entity is found in the context."""
    context = cut_context(body, max_context_chars)
    for start, end, etype in title_entities:
        if etype not in ANSWER_TYPES:
            continue
        entity = title[start:end]
        pos = find_whole_word(context, entity)
        if pos < 0:
            continue
        if context[pos : pos + len(entity)] != entity:  # span check (cannot fail; kept as a guard)
            continue
        question = title[:start] + PLACEHOLDER + title[end:]
        return ClozeExample(question, context, pos, entity, etype)
    return None
