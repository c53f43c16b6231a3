"""Emoji-only comments: a labelled check set, and training rows from a disjoint emoji list.

Comments such as ``😍😍😍``, ``👎`` or ``💩`` carry a clear polarity and no word; the v2 normaliser
spells them out (``smiling face with heart-eyes``), so a model can read them only if it learned
what those names mean next to a label.

**The check set** (:func:`emoji_only_set`, dataset spec ``emoji-only``): built from
:data:`TEST_EMOJI` alone, deterministic (no randomness, fixed order), 249 rows (123 positive,
114 negative, 12 neutral):

- every emoji alone, twice and three times in a row (``😡``, ``😡😡``, ``😡😡😡``);
- every pair of two different emoji of the same polarity, in list order (``😍👍``, ...), for the
  first 12 emoji of each polarity (66 pairs each);
- thumbs and hands with skin-tone modifiers (``👍🏽``, ``👎🏿``, ...).

Labels: ``positive`` / ``negative`` by the emoji's literal meaning (a face of love, joy, approval
or applause; of anger, disgust, sadness, contempt or rejection), ``neutral`` for a few faces without
polarity (``😐``, ``🤔``, ``😶``, ``🤷``). Score it by polarity accuracy (the neutral rows are
there to show what the model does with them, not for the target). ``😭`` (loudly crying) and
``🔥`` are read literally (sad; approving); people also use ``😭`` for being overwhelmed by
something good, so a reader of the figures should know it is in the negative list.

**Training rows** (:func:`emoji_training_rows`, ``commentflow train --emoji-augment N``): made only
from :data:`TRAIN_EMOJI`, which shares no emoji with :data:`TEST_EMOJI` (checked at import), so
the check set stays unseen: N emoji-only rows per polarity (1-3 emoji of one polarity) plus, for
N of the training split's polar rows, the row's text with 1-3 emoji of its own label appended.
Deterministic for a seed. The neutral list is not used for appending (objects appended to a text
must not change its label: that is the obfuscation check's ``emoji`` kind).

**Object rows** (:func:`object_emoji_rows`, ``commentflow train --object-emoji-augment N``): N
training rows of every label with 1-3 emoji of things (📷, 🚲, ☕ ...) and the label kept, so that
the model learns that a spelled-out object says nothing about the comment's stance. Two pools
(``--object-emoji-pool``): ``list``, the 30 of :data:`OBJECT_EMOJI`, appended (text model
1.2.0); ``things``, the 637 of :data:`THING_EMOJI` (every single-code-point emoji of the Unicode
groups of objects, places, food, animals and activities, from ``thing_emoji.tsv``, less those
that carry a stance in comments, :data:`STANCE_THINGS`), appended, put first or put between two
words. A model taught 30 names learns those 30 (validation: 0.6 points lost on them, 2.7 on 20
unseen things); the wide pool is there to teach "things", not names. Both pools share no emoji
with the obfuscation check's list (``model.evaluation.obfuscation``), the check set above or
:data:`VALIDATION_OBJECT_EMOJI` (checked by a test).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from typing import Any

from model.data.text import Example

__all__ = [
    "EMOJI_SPEC",
    "OBJECT_EMOJI",
    "OBJECT_EMOJI_POOLS",
    "STANCE_THINGS",
    "TEST_EMOJI",
    "THING_EMOJI",
    "TRAIN_EMOJI",
    "VALIDATION_OBJECT_EMOJI",
    "emoji_only_set",
    "emoji_training_rows",
    "is_emoji_spec",
    "load_emoji_spec",
    "object_emoji_rows",
]

#: The dataset spec of the check set.
EMOJI_SPEC = "emoji-only"

# fmt: off
#: The check set's emoji, by label (never used for training).
TEST_EMOJI: dict[str, tuple[str, ...]] = {
    "positive": ("😍", "👍", "🔥", "❤️", "🥰", "😊", "👏", "🎉",
                 "💯", "🙌", "😁", "🤩", "💖", "😃", "👌"),
    "negative": ("😡", "👎", "💩", "🤮", "😭", "🙄", "😠", "🤬",
                 "😢", "💔", "😤", "😒", "🤢", "😞", "😩"),
    "neutral": ("😐", "🤔", "😶", "🤷"),
}

#: Training emoji, disjoint from :data:`TEST_EMOJI`.
TRAIN_EMOJI: dict[str, tuple[str, ...]] = {
    "positive": ("😀", "😄", "😆", "🙂", "😘", "😻", "💕", "💗", "💓", "🤗",
                 "🥳", "💪", "🌟", "😎", "💘", "🥇", "✅", "💝", "😇", "🤙"),
    "negative": ("😣", "😖", "😫", "👿", "😾", "😰", "😥", "😓", "😔", "😟",
                 "☹️", "🙁", "😿", "💢", "🤦", "😵", "🥴", "❌", "😨", "🖕"),
    "neutral": ("😑", "🫤", "🤨", "🧐", "😯"),
}
#: Things, not feelings, for :func:`object_emoji_rows` (none is in the obfuscation check's list).
OBJECT_EMOJI: tuple[str, ...] = (
    "📷", "💻", "⌚", "🚲", "🍔", "☕", "📚", "🎮", "🔑", "📺", "🚌", "🍎", "🧦", "✏️", "📎",
    "🛒", "🏠", "🌳", "🐟", "🧳", "🚆", "🍞", "🖨️", "🪑", "🧴", "🎒", "📅", "🔧", "⚽", "🚪",
)
#: Things for validation only (``tools/object_emoji_val.py``): in neither :data:`OBJECT_EMOJI`
#: nor the obfuscation check's list, so a validation drop measures whether "things say nothing"
#: carries over to things the model never saw, not whether it learnt the training list.
VALIDATION_OBJECT_EMOJI: tuple[str, ...] = (
    "🔦", "🧹", "🪴", "🛏️", "🧲", "📌", "🖊️", "🧯", "🚜", "🛶",
    "🥕", "🧀", "🍋", "🏀", "🎻", "🧸", "🪣", "🔌", "🗑️", "🧻",
)
# fmt: on

#: Things whose emoji do carry a stance in comments (slang, reviews: the GOAT, trash, slow as a
#: snail, pests, weapons, drinks and cakes of celebration, stonks...): never in :data:`THING_EMOJI`.
STANCE_THINGS = (
    "🐐🗑🚮🪦⚰💣🐍🐀🐁🧂🍆🍑🐢🐌🦥⏳⌛🪳🦟🪰🐛🕷🕸🦠💉🩸🔪🗡⚔🔫🚑🚨🏚🎯🚀💎👑🍋🐷🦄🤖💊🧨🪓🔨🛠⛓🔗🧻🩹"
    "🩺🌡🚬🍺🍻🥂🍾🍷🍸🍹🧃🥃🍰🎂🧁🍫🍭🍬🍩🍪🍦🍨🥳♥📈📉💍🎓🛑🧿🪬🔮🎰"
)


def _thing_emoji() -> tuple[str, ...]:
    text = resources.files("model.data").joinpath("thing_emoji.tsv").read_text("utf-8")
    return tuple(line.split("\t")[0] for line in text.splitlines() if not line.startswith("#"))


#: Emoji of things (``thing_emoji.tsv``: Unicode groups, less :data:`STANCE_THINGS` and every
#: check list), for ``--object-emoji-pool things``.
THING_EMOJI: tuple[str, ...] = _thing_emoji()
#: ``--object-emoji-pool`` -> (emoji, where they go: appended only, or anywhere).
OBJECT_EMOJI_POOLS: dict[str, tuple[tuple[str, ...], bool]] = {
    "list": (OBJECT_EMOJI, False),
    "things": (THING_EMOJI, True),
}

_SKIN_TONES = ("🏻", "🏽", "🏿")
_TONED = {"positive": ("👍", "👏", "🙌", "👌"), "negative": ("👎",)}


def _base(e: str) -> str:
    return e.replace("\ufe0f", "")


if {_base(e) for v in TEST_EMOJI.values() for e in v} & {
    _base(e) for v in TRAIN_EMOJI.values() for e in v
}:  # pragma: no cover - a guard on the constants above
    raise AssertionError("TRAIN_EMOJI and TEST_EMOJI must not share an emoji")


def is_emoji_spec(spec: str) -> bool:
    """True for the ``emoji-only`` dataset spec."""
    return spec == EMOJI_SPEC


def emoji_only_set() -> list[Example]:
    """The labelled emoji-only check set (see the module docstring), in a fixed order."""
    rows: list[Example] = []

    def add(text: str, label: str) -> None:
        rows.append(Example(text=text, label=label, raw=text, source=EMOJI_SPEC))

    for label, emoji in TEST_EMOJI.items():
        for e in emoji:
            for n in (1, 2, 3):
                add(e * n, label)
        if label != "neutral":
            for a, b in itertools.combinations(emoji[:12], 2):
                add(a + b, label)
    for label, hands in _TONED.items():
        for h in hands:
            for tone in _SKIN_TONES:
                add(h + tone, label)
    return rows


def load_emoji_spec(spec: str) -> tuple[list[Example], dict[str, Any]]:
    """The rows of ``emoji-only`` and a report."""
    if not is_emoji_spec(spec):
        raise ValueError(f"not the emoji spec: {spec!r}")
    rows = emoji_only_set()
    labels: dict[str, int] = {}
    for r in rows:
        labels[r.label] = labels.get(r.label, 0) + 1
    return rows, {"source": EMOJI_SPEC, "spec": spec, "split_rows": len(rows), "labels": labels}


def emoji_training_rows(
    train: Sequence[Example], per_label: int, seed: int = 13
) -> tuple[list[Example], dict[str, int]]:
    """Training rows made from :data:`TRAIN_EMOJI`: ``per_label`` emoji-only rows for each
    polarity and ``per_label`` of ``train``'s rows of each polarity with 1-3 emoji of that
    polarity appended (``text`` and ``raw``: the normaliser then spells them out).

    Returns the new rows (to add to the training split) and counts.
    """
    rng = random.Random(f"emoji-augment:{seed}")
    out: list[Example] = []
    counts = {"emoji_only": 0, "appended": 0}
    for label in ("negative", "positive"):
        pool = TRAIN_EMOJI[label]
        for _ in range(per_label):
            k = rng.randint(1, 3)
            if rng.random() < 0.5:  # a run of one emoji, as people write them
                text = rng.choice(pool) * k
            else:
                text = "".join(rng.choice(pool) for _ in range(k))
            out.append(Example(text=text, label=label, raw=text, source=""))
            counts["emoji_only"] += 1
        candidates = [r for r in train if r.label == label]
        for r in rng.sample(candidates, min(per_label, len(candidates))):
            tail = "".join(rng.choice(pool) for _ in range(rng.randint(1, 3)))
            out.append(replace(r, text=f"{r.text} {tail}", raw=f"{r.raw or r.text} {tail}"))
            counts["appended"] += 1
    return out, counts


def object_emoji_rows(
    train: Sequence[Example], n: int, seed: int = 13, pool: str = "list"
) -> tuple[list[Example], dict[str, int]]:
    """``n`` rows drawn from ``train`` (every label, as they come) with 1-3 emoji of ``pool``
    (:data:`OBJECT_EMOJI_POOLS`) in ``text`` and ``raw`` and the label kept: things must not move
    the prediction. A run of one emoji or a mix, as with the polar rows; appended, or with the
    ``things`` pool also put first (20%) or between two words (20%). Deterministic for a seed
    (``list`` draws exactly as it did for text model 1.2.0); returns the new rows and their count
    by label."""
    if pool not in OBJECT_EMOJI_POOLS:
        raise ValueError(
            f"unknown object emoji pool {pool!r} (one of {sorted(OBJECT_EMOJI_POOLS)})"
        )
    emoji, anywhere = OBJECT_EMOJI_POOLS[pool]
    rng = random.Random(f"object-emoji:{seed}" + ("" if pool == "list" else f":{pool}"))
    out: list[Example] = []
    counts: dict[str, int] = {}
    for r in rng.sample(list(train), min(n, len(train))):
        k = rng.randint(1, 3)
        if rng.random() < 0.5:
            tail = rng.choice(emoji) * k
        else:
            tail = "".join(rng.choice(emoji) for _ in range(k))
        place = rng.random() if anywhere else 1.0
        out.append(
            replace(r, text=_put(r.text, tail, place), raw=_put(r.raw or r.text, tail, place))
        )
        counts[r.label] = counts.get(r.label, 0) + 1
    return out, counts


def _put(text: str, emoji: str, place: float) -> str:
    """``emoji`` appended (``place`` >= 0.4), first (< 0.2) or after word ``len * place``."""
    if place >= 0.4:
        return f"{text} {emoji}"
    if place < 0.2:
        return f"{emoji} {text}"
    words = text.split(" ")
    i = 1 + int((place - 0.2) / 0.2 * max(len(words) - 1, 0))
    return " ".join([*words[:i], emoji, *words[i:]])
