"""Obfuscated variants of a labelled text set, and clean-vs-obfuscated accuracy.

People write past filters and models: ``t3rr1ble``, ``tеrrible`` with a Cyrillic е, ``t e r r i b l
e``, zero-width spaces inside words, emoji tacked on. :func:`obfuscate` makes one such variant of a
text, :func:`obfuscated_sets` a variant of every row for each :data:`KINDS`, and
:func:`obfuscation_report` scores a classifier on the clean rows and on each variant set (the
labels do not change: none of these edits changes what the comment says).

Deterministic: each variant depends only on ``(seed, kind, text)`` (a string-seeded
:class:`random.Random`), never on the order or the other rows, so a report is reproducible and
a row's variant is the same in every subset.

The first four kinds stay within what :func:`model.serving.normalise.normalise_v2` is meant to
undo (digits only inside words, look-alikes only in words that keep a Latin letter, spaced words
away from one-letter words), so ``normalise_v2(obfuscate(x, kind)) == normalise_v2(x)`` for them;
the "fancy text" kinds after them (:data:`FANCY_KINDS`: small capitals, negative circled/squared
letters, strike-through, letters spaced by symbols) are undone by ``normalise_v3`` only, which
also undoes the first four: the gap a v3 model still shows is the model's, not the normaliser's.
``emoji`` is the model's alone (nothing undoes it). These kinds were added after an obfuscation
probe written apart from the normaliser found them (``tools/wild_obfuscation_val.py``, on
validation rows); what that probe found and v3 does not undo (typos, censored letters, appended
``!!!``) is reported there, not here.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from model.data.text import Example
from model.evaluation.bootstrap import interval, resample_indices

__all__ = [
    "FANCY_KINDS",
    "KINDS",
    "format_obfuscation",
    "obfuscate",
    "obfuscated_sets",
    "obfuscation_report",
]

#: The obfuscations, in report order.
KINDS: tuple[str, ...] = (
    "leet",
    "lookalike",
    "spaced",
    "zero_width",
    "small_caps",
    "enclosed",
    "strikethrough",
    "symbol_spaced",
    "emoji",
)
#: The kinds only ``normalise_v3`` undoes (v2 models are scored on them too: that is the gap).
FANCY_KINDS: tuple[str, ...] = ("small_caps", "enclosed", "strikethrough", "symbol_spaced")

_LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}
_LOOKALIKE = {"a": "а", "c": "с", "e": "е", "i": "і", "o": "о", "p": "р", "x": "х", "y": "у"}
_ZERO_WIDTH = ("\u200b", "\u200c", "\u2060", "\ufeff")
_SMALL_CAPS = dict(zip("abcdefghijklmnopqrstuvwxyz", "ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘꞯʀꜱᴛᴜᴠᴡxʏᴢ", strict=True))
_NEGATIVE = (0x1F150, 0x1F170)  # negative circled / squared capital A
_SYMBOL_SEPARATORS = ("·", "•", "|", "/", "~")
# Objects, not feelings: appending them must not change the label.
_EMOJI = ("📦", "📱", "✈️", "🍕", "🎧", "👀", "🧾", "🚗")
# A whole ASCII word: not part of a mention, hashtag, number, address (a.b) or other letters.
_WORD = re.compile(r"(?<![\w@#$!])(?<!\w\.)[A-Za-z]+(?!\w|[.!$@]\w)")
_LONE_LETTER_START = re.compile(r"[A-Za-z](?![A-Za-z])")
_LONE_LETTER_END = re.compile(r"(?<![A-Za-z])[A-Za-z]$")


def _leet(word: str, rng: random.Random) -> str:
    """Up to two inner lower-case letters as digits (``terrible`` -> ``t3rr1ble``)."""
    inner = [i for i in range(1, len(word) - 1) if word[i] in _LEET]
    chars = list(word)
    for i in rng.sample(inner, min(2, len(inner))):
        chars[i] = _LEET[word[i]]
    return "".join(chars)


def _lookalike(word: str, rng: random.Random) -> str:
    """About half the letters that have a Cyrillic twin swapped for it; one Latin letter kept."""
    swappable = [i for i, c in enumerate(word) if c in _LOOKALIKE]
    if len(swappable) == len(word):
        swappable = swappable[1:]
    chars = list(word)
    for i in swappable:
        if rng.random() < 0.5:
            chars[i] = _LOOKALIKE[word[i]]
    return "".join(chars)


def _zero_width(word: str, rng: random.Random) -> str:
    """One invisible character between two letters."""
    i = rng.randrange(1, len(word))
    return word[:i] + rng.choice(_ZERO_WIDTH) + word[i:]


def _small_caps(word: str, rng: random.Random) -> str:
    """The whole word in small capitals (``ᴛᴇʀʀɪʙʟᴇ``), as "fancy text" generators write it."""
    return "".join(_SMALL_CAPS.get(c, c) for c in word.lower())


def _enclosed(word: str, rng: random.Random) -> str:
    """The whole word in negative circled or squared capitals (``🅣🅔🅡🅡🅘🅑🅛🅔``)."""
    base = rng.choice(_NEGATIVE)
    return "".join(chr(base + ord(c) - ord("a")) for c in word.lower())


def _strikethrough(word: str, rng: random.Random) -> str:
    """A combining long stroke after every letter (``t̶e̶r̶r̶i̶b̶l̶e̶``)."""
    return "".join(c + "\u0336" for c in word)


_WORD_EDITS: dict[str, tuple[int, Callable[[str, random.Random], str]]] = {
    # kind -> (shortest word edited, the edit)
    "leet": (4, _leet),
    "lookalike": (3, _lookalike),
    "zero_width": (3, _zero_width),
    "small_caps": (3, _small_caps),
    "enclosed": (3, _enclosed),
    "strikethrough": (3, _strikethrough),
}


def _spaced(text: str, rng: random.Random, separators: tuple[str, ...] = (" ",)) -> str:
    """One word of 3+ letters written with a separator between its letters, never next to a
    lone letter (``a t e r r i b l e`` would read as one word)."""
    words = text.split(" ")
    eligible = [
        i
        for i, w in enumerate(words)
        if len(w) >= 3
        and w.isascii()
        and w.isalpha()
        and not (i > 0 and _LONE_LETTER_END.search(words[i - 1]))
        and not (i + 1 < len(words) and _LONE_LETTER_START.match(words[i + 1]))
    ]
    if eligible:
        i = rng.choice(eligible)
        words[i] = rng.choice(separators).join(words[i])
    return " ".join(words)


def obfuscate(text: str, kind: str, seed: int = 13) -> str:
    """One obfuscated variant of ``text`` (see :data:`KINDS`); the same for the same inputs."""
    rng = random.Random(f"{seed}:{kind}:{text}")
    if kind == "spaced":
        return _spaced(text, rng)
    if kind == "symbol_spaced":
        return _spaced(text, rng, _SYMBOL_SEPARATORS)
    if kind == "emoji":
        return f"{text} {rng.choice(_EMOJI) * rng.randint(1, 3)}"
    if kind not in _WORD_EDITS:
        raise ValueError(f"unknown obfuscation {kind!r} (one of {KINDS})")
    shortest, edit = _WORD_EDITS[kind]
    return _WORD.sub(
        lambda m: edit(m.group(), rng) if len(m.group()) >= shortest else m.group(), text
    )


def obfuscated_sets(
    rows: Sequence[Example], kinds: Sequence[str] = KINDS, seed: int = 13
) -> dict[str, list[Example]]:
    """``kind -> rows`` with each row's text replaced by its variant; labels unchanged."""
    return {
        kind: [replace(r, text=obfuscate(r.text, kind, seed), raw=r.text) for r in rows]
        for kind in kinds
    }


def obfuscation_report(
    predict: Callable[[list[str]], np.ndarray],
    rows: Sequence[Example],
    labels: Sequence[str],
    *,
    kinds: Sequence[str] = KINDS,
    seed: int = 13,
    clean_predictions: np.ndarray | None = None,
    n_resamples: int = 0,
) -> dict[str, Any]:
    """Accuracy on the clean rows and on each obfuscated set, and the drop in points.

    ``predict`` maps texts to predicted label indices (in ``labels`` order), e.g.
    ``lambda t: clf.predict_proba(t).argmax(-1).numpy()``; ``clean_predictions``, when the
    caller has them, saves the pass over the clean texts. ``n_resamples`` > 0 adds a paired
    bootstrap 95% interval of each drop (``drop_interval``, points; the same rows resampled for
    the clean and the obfuscated set).
    """
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.array([index[r.label] for r in rows])
    if clean_predictions is None:
        clean_predictions = predict([r.text for r in rows])
    right = np.asarray(clean_predictions) == y  # (N,)
    clean = float(right.mean())
    report: dict[str, Any] = {"n": len(rows), "seed": seed, "clean_accuracy": round(clean, 4)}
    for kind, variant in obfuscated_sets(rows, kinds, seed).items():
        diff = right.astype(np.float64) - (predict([r.text for r in variant]) == y)  # (N,)
        acc = clean - float(diff.mean())
        report[kind] = {"accuracy": round(acc, 4), "drop_points": round(100 * (clean - acc), 2)}
        if n_resamples > 0 and len(rows):
            drops = np.concatenate(
                [diff[idx].mean(1) for idx in resample_indices(len(rows), n_resamples)]
            )
            lo, hi = interval(100 * drops)
            report[kind]["drop_interval"] = [round(lo, 2), round(hi, 2)]
    return report


def format_obfuscation(report: dict[str, Any]) -> str:
    """The report of :func:`obfuscation_report` as a few lines of text."""
    lines = [f"obfuscated variants (n = {report['n']}): accuracy, change in points"]
    lines.append(f"  {'clean':<12} {report['clean_accuracy']:.4f}")
    for kind in KINDS:
        if kind in report:
            r = report[kind]
            ci = r.get("drop_interval")
            band = f"  (drop 95% [{ci[0]:.2f}, {ci[1]:.2f}])" if ci else ""
            lines.append(f"  {kind:<12} {r['accuracy']:.4f}  {-r['drop_points']:+.2f}{band}")
    return "\n".join(lines)
