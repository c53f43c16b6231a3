"""The entity stage's development set, apart from the held-out gold set, and the one choice made
on it: how upper-case and lower-case texts are read.

    python tools/entities_dev.py

Builds 80 OCR-style (upper-case) and 70 transcript-style (lower-case) items with the generator of
``tools/entities_gold.py`` but other templates and other names (no name of the gold set), and
prints the key and strict scores of the packaged model when each text is read as it is,
lower-cased, title-cased, or title-cased but for stop words. Its outcome (upper case: title-case
it; lower case: leave it) is :func:`model.entities._readable`, behind
``EntityConfig.titlecase_caps``, which is off: on the held-out gold set it made upper-case OCR
texts worse (``docs/eval/entities/entities-titlecase-caps.json``). Nothing is written: the set is
rebuilt from the seeds below.
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import entities_gold as gold  # noqa: E402 - the generator, from this folder

POOLS = {
    "ORG": [
        "Target", "Costco", "eBay", "Etsy", "Sony", "Nintendo", "Dell", "Lidl", "Aldi", "Zara",
        "Expedia", "Hulu", "Peloton", "Chipotle", "Delta", "Shopify",
    ],
    "PRODUCT": [
        "Echo Dot", "Surface Pro", "Roomba", "Fitbit", "GoPro", "Kindle Paperwhite",
        "Steam Deck", "Quest 3",
    ],
    "PERSON": [
        "Bill Gates", "Oprah Winfrey", "Rihanna", "Cristiano Ronaldo", "Jamie Oliver",
        "Emma Watson", "Kevin Hart",
    ],
    "GPE": ["Rome", "Miami", "Boston", "Mexico", "India", "Seattle", "Lisbon", "Toronto"],
    "EVENT": ["Wimbledon", "Olympics", "Comic Con", "Glastonbury"],
    "WORK_OF_ART": ["Barbie", "Friends", "Wicked", "Severance"],
}  # fmt: skip
OCR = [
    "BREAKING {ORG} IS DOWN AGAIN",
    "MY FACE WHEN {ORG} RAISES PRICES",
    "{PERSON} SAID WHAT",
    "GREETINGS FROM {GPE}",
    "{PRODUCT} ON SALE TODAY ONLY",
    "DELIVERY FAILED {ORG} WILL TRY AGAIN TOMORROW",
    "LIVE FROM {EVENT}",
    "RATE {WORK_OF_ART} 1 TO 10",
    "TOLD MY BOSS ABOUT {ORG}",
    "{ORG} SUPPORT CHAT CLOSED",
    "HOW IT STARTED {PRODUCT} HOW IT IS GOING",
    "{PERSON} AT {EVENT} IN {GPE}",
]
ASR = [
    "so i called {ORG} three times today and nobody picked up",
    "my brother bought a {PRODUCT} and it broke after a week",
    "we flew to {GPE} last summer and it was lovely",
    "did you see what {PERSON} posted this morning",
    "tickets for {EVENT} sold out in minutes",
    "yeah {ORG} is honestly the worst i am done with them",
    "we are watching {WORK_OF_ART} tonight with the kids",
    "the {PRODUCT} was a gift from my mum",
    "i think {PERSON} is coming to {GPE} next month",
    "just a quick message to say the order came and it is all fine",
]


def build(templates: list[str], modality: str, n: int, seed: int) -> list[dict]:
    gold.POOLS = POOLS  # the generator's slots, filled from the development names
    rng = random.Random(seed)
    items: list[dict] = []
    seen: set[str] = set()
    while len(items) < n:
        item = gold.fill(rng.choice(templates), rng, modality)
        if item["text"] not in seen:
            seen.add(item["text"])
            items.append(item)
    return items


def main() -> int:
    from spacy.lang.en.stop_words import STOP_WORDS

    from model.entities import EntityConfig, load_packaged_recognizer
    from model.evaluation.entities import score_entities

    def but_stop_words(t: str) -> str:
        def word(m: re.Match[str]) -> str:
            w = m.group(0)
            return w.lower() if w.lower() in STOP_WORDS else w.title()

        return re.sub(r"[^\W\d_]+", word, t)

    ways: dict[str, Callable[[str], str]] = {
        "as is": lambda t: t,
        "lower": str.lower,
        "title": str.title,
        "title but stop words": but_stop_words,
    }
    r = load_packaged_recognizer(EntityConfig(titlecase_caps=False))  # the raw model
    for name, items in (
        ("upper-case OCR", build(OCR, "image", 80, 99)),
        ("lower-case transcripts", build(ASR, "audio", 70, 7)),
    ):
        print(name)
        for way, fn in ways.items():
            variant = []
            for it in items:
                t = fn(it["text"])
                ents = [{**e, "text": t[e["start"] : e["end"]]} for e in it["entities"]]
                variant.append({**it, "text": t, "entities": ents})
            rep = score_entities(r, variant, n_resamples=0)
            k, s = rep["overall"]["key"], rep["overall"]["strict"]
            print(
                f"  {way:22} key P {k['precision']:.3f} R {k['recall']:.3f} F1 {k['f1']:.3f}"
                f"   strict F1 {s['f1']:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
