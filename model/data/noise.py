"""Noisy copies of training rows: what hasty typing does to a comment, with its label kept.

An obfuscation probe written apart from the model (``tools/wild_obfuscation_val.py``, validation
rows) found that text model 1.3.0 loses 3-5 accuracy points when a comment carries ``!!!``, a
typo or a censored letter: things people do all the time and that change nothing of what they
say. No normaliser can undo them (``terible`` may be a typo or a name; ``f**k`` has many
readings), so the model has to learn them: :func:`noisy_rows` (``commentflow train
--noise-augment N``) adds N training rows, each with one edit of its raw text:

- ``punctuation``: a run of ``!``/``?``/``.`` (2-8 marks) at the end or after a word;
- ``typo``: in one word of 4+ letters, two neighbouring letters swapped, a letter dropped, a
  letter doubled or a letter replaced by a neighbour on a QWERTY keyboard;
- ``censor``: one or two inner letters of a word of 4+ letters as ``*``;
- ``elongate``: a word's vowel or last letter repeated 2-5 more times;
- ``case``: the whole text in capitals, or one word in alternating case.

Deterministic for a seed (a string-seeded :class:`random.Random`). The probe scores the same
families with its own edits and on validation rows only, so it measures whether the model
learnt the families, not the rows; it was written before this module and not changed after.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from model.data.text import Example

__all__ = ["NOISE_KINDS", "add_noise", "noisy_rows"]

_WORD = re.compile(r"(?<![\w@#$])[A-Za-z]{4,}(?![\w@])")
_KEYS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS = {
    c: "".join(row[j] for j in (i - 1, i + 1) if 0 <= j < len(row))
    for row in _KEYS
    for i, c in enumerate(row)
}
_MARKS = ("!", "?", ".", "!?", "?!")


def _in_a_word(edit: Callable[[str, random.Random], str]) -> Callable[[str, random.Random], str]:
    """Apply ``edit`` to one random word of 4+ letters (the text unchanged when there is none)."""

    def apply(text: str, rng: random.Random) -> str:
        spans = [m.span() for m in _WORD.finditer(text)]
        if not spans:
            return text
        a, b = rng.choice(spans)
        return text[:a] + edit(text[a:b], rng) + text[b:]

    return apply


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    how = rng.randrange(4)
    if how == 0:  # neighbours swapped
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if how == 1:  # a letter dropped
        return word[:i] + word[i + 1 :]
    if how == 2:  # a letter doubled
        return word[: i + 1] + word[i:]
    near = _NEIGHBOURS.get(word[i].lower(), "")
    return word[:i] + (rng.choice(near) if near else word[i]) + word[i + 1 :]


def _censor(word: str, rng: random.Random) -> str:
    inner = list(range(1, len(word) - 1))
    picked = set(rng.sample(inner, min(rng.randint(1, 2), len(inner))))
    return "".join("*" if i in picked else c for i, c in enumerate(word))


def _elongate(word: str, rng: random.Random) -> str:
    vowels = [i for i, c in enumerate(word) if c.lower() in "aeiouy"]
    i = rng.choice(vowels) if vowels and rng.random() < 0.7 else len(word) - 1
    return word[: i + 1] + word[i] * rng.randint(2, 5) + word[i + 1 :]


def _punctuation(text: str, rng: random.Random) -> str:
    run = rng.choice(_MARKS) * rng.randint(1, 4)
    run = run[: max(2, min(len(run), 8))]
    words = text.split(" ")
    if len(words) > 3 and rng.random() < 0.3:  # after a word inside the text
        i = rng.randrange(1, len(words))
        words[i - 1] += run
        return " ".join(words)
    return text.rstrip() + ("" if rng.random() < 0.5 else " ") + run


def _case(text: str, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return text.upper()
    return _in_a_word(lambda w, r: "".join(c.upper() if i % 2 else c.lower()
                                           for i, c in enumerate(w)))(text, rng)  # fmt: skip


#: kind -> edit of a whole text.
NOISE_KINDS: dict[str, Callable[[str, random.Random], str]] = {
    "punctuation": _punctuation,
    "typo": _in_a_word(_typo),
    "censor": _in_a_word(_censor),
    "elongate": _in_a_word(_elongate),
    "case": _case,
}


def add_noise(text: str, kind: str, rng: random.Random) -> str:
    """``text`` with one edit of ``kind`` (:data:`NOISE_KINDS`)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise {kind!r} (one of {sorted(NOISE_KINDS)})")
    return NOISE_KINDS[kind](text, rng)


def noisy_rows(
    train: Sequence[Example], n: int, seed: int = 13
) -> tuple[list[Example], dict[str, int]]:
    """``n`` rows drawn from ``train`` (every label, as they come), each with one edit of a kind
    drawn uniformly from :data:`NOISE_KINDS` applied to its raw text (``text`` and ``raw``), the
    label kept. Deterministic for a seed; returns the rows and their count by kind."""
    rng = random.Random(f"noise:{seed}")
    kinds = sorted(NOISE_KINDS)
    out: list[Example] = []
    counts: dict[str, int] = {}
    for r in rng.sample(list(train), min(n, len(train))):
        kind = rng.choice(kinds)
        noisy = add_noise(r.raw or r.text, kind, rng)
        out.append(replace(r, text=noisy, raw=noisy))
        counts[kind] = counts.get(kind, 0) + 1
    return out, counts
