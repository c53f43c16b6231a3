"""Write the entity stage's held-out gold set.

    python tools/entities_gold.py > model/data/entities_gold.jsonl

How it is built (read this before trusting its numbers): hand-written comment templates with
slots, filled from hand-written lists of brands, products, people, places, events and works, by
a seeded random generator. The gold spans are the slot fills, so they are exact by
construction; the labels follow the OntoNotes scheme of the packaged model (ORG, PRODUCT,
PERSON, GPE, EVENT, WORK_OF_ART), a leading "the" stays outside the span. Three styles:

* ``text``: comments as people type them (mixed case, punctuation, possessives, plurals);
* ``image``: what OCR returns from a meme or a screenshot: upper case, no punctuation;
* ``audio``: what speech recognition returns from a voice note: lower case, no punctuation.

Some comments name nothing (the stage must stay quiet on them). The templates and lists were
written before the packaged model was run on any of them, and nothing was tuned on the set: it
is only reported (``commentflow evaluate --data entities``). Its limits: synthetic sentences,
one writer, entity names that are mostly famous; a real labelled sample of production comments
would be the better test.
"""

from __future__ import annotations

import json
import random
import re
import sys

SEED = 2026
N_TEXT, N_IMAGE, N_AUDIO = 150, 60, 50

POOLS = {
    "ORG": [
        "Amazon",
        "Apple",
        "Samsung",
        "DHL",
        "FedEx",
        "Netflix",
        "Spotify",
        "Microsoft",
        "Google",
        "Tesla",
        "Nike",
        "Adidas",
        "Starbucks",
        "Uber",
        "Ryanair",
        "Vodafone",
        "IKEA",
        "Walmart",
        "PayPal",
        "Deliveroo",
        "Verizon",
        "Comcast",
        "Airbnb",
        "Lufthansa",
    ],
    "PRODUCT": [
        "iPhone 15",
        "Galaxy S24",
        "PlayStation 5",
        "Xbox Series X",
        "AirPods Pro",
        "Kindle",
        "Pixel 8",
        "MacBook Air",
        "Apple Watch",
        "Model 3",
        "Switch OLED",
        "ChatGPT",
    ],
    "PERSON": [
        "Tim Cook",
        "Elon Musk",
        "Taylor Swift",
        "Jeff Bezos",
        "Gordon Ramsay",
        "Mark Zuckerberg",
        "Lionel Messi",
        "Sundar Pichai",
        "Satya Nadella",
        "Ed Sheeran",
        "Sarah Miller",
        "John Carter",
    ],
    "GPE": [
        "London",
        "Paris",
        "Berlin",
        "Texas",
        "Chicago",
        "Germany",
        "Canada",
        "Tokyo",
        "Madrid",
        "Australia",
        "New York",
        "Dublin",
    ],
    "EVENT": ["Black Friday", "Super Bowl", "Prime Day", "Coachella", "World Cup", "Cyber Monday"],
    "WORK_OF_ART": ["Stranger Things", "The Last of Us", "Oppenheimer", "Succession", "Dune"],
}

# {ORG} ... are slots; {ORG's} a possessive; {PRODUCT+s} a plural.
TEXT_TEMPLATES = [
    "My {PRODUCT} stopped charging after two days, {ORG} support is useless",
    "Ordered from {ORG} on Monday and it still hasn't arrived in {GPE}",
    "{ORG} lost my parcel again. Third time this month!",
    "Honestly the {PRODUCT} is the best thing I bought this year",
    "Why does {ORG}'s app log me out every single time?",
    "{PERSON} should be ashamed of how {ORG} treats its drivers",
    "Just got back from {GPE}, the {ORG} store there was amazing",
    "Can't believe {PERSON} said that about {GPE}",
    "The {EVENT} deals on {ORG} were a total scam",
    "Watched {WORK_OF_ART} last night, absolutely loved it",
    "{ORG} cancelled my flight to {GPE} with no refund",
    "Anyone else's {PRODUCT} overheating after the update?",
    "I switched from {ORG} to {ORG} and never looked back",
    "{PERSON} is the reason I still watch football",
    "the {PRODUCT} camera is garbage compared to my old phone",
    "Big thanks to {ORG} for sorting out my order so quickly",
    "{ORG} raised prices AGAIN. Cancelling my subscription.",
    "Two {PRODUCT+s} in one year and both broke",
    "Was at the {EVENT} with my brother, what a night",
    "Does {ORG} deliver to {GPE} yet?",
    "So {PERSON} tweets one thing and {ORG} stock drops lol",
    "My sister works for {ORG} in {GPE} and says it's chaos",
    "Great customer service from {ORG} today, thank you so much",
    "The checkout page keeps crashing, I give up",
    "This is the worst update ever, nothing works anymore",
    "Love this community, you all made my day",
    "Does anyone know when the next update comes out?",
    "My order arrived broken and nobody answers the phone",
    "{WORK_OF_ART} season finale was a letdown honestly",
    "Bought the {PRODUCT} during {EVENT} and it was half price",
    "{PERSON}'s new album is on repeat",
    "Never flying {ORG} again after what happened in {GPE}",
    "Is the {PRODUCT} worth it or should I wait?",
    "{ORG} and {ORG} are both terrible at customer support",
    "Met {PERSON} at the {ORG} event in {GPE}!",
    "refund still pending from {ORG}, 6 weeks now",
    "the driver left my package in the rain again",
    "wow the new {PRODUCT} is actually really fast",
]
OCR_TEMPLATES = [
    "{ORG} LOST MY PARCEL AGAIN",
    "WHEN {ORG} SAYS NEXT DAY DELIVERY",
    "ME WAITING FOR MY {PRODUCT} TO ARRIVE",
    "{PERSON} BE LIKE",
    "NOBODY: {ORG} CUSTOMER SERVICE:",
    "{EVENT} SALE 50 PERCENT OFF AT {ORG}",
    "ORDER CONFIRMED {ORG} ORDER 4471 SHIPPING TO {GPE}",
    "ERROR 500 PLEASE TRY AGAIN LATER",
    "{PRODUCT} BATTERY 3 PERCENT",
    "WELCOME TO {GPE}",
    "WHEN YOU FINALLY FINISH {WORK_OF_ART}",
    "POV YOU ORDERED FROM {ORG}",
    "THIS IS FINE",
    "{ORG} VS {ORG}",
]
ASR_TEMPLATES = [
    "hi yeah so i ordered from {ORG} last week and it still has not come",
    "honestly the {PRODUCT} is great i love it",
    "{ORG} charged me twice and nobody is answering",
    "i was in {GPE} for the {EVENT} and it was amazing",
    "can someone tell {PERSON} to fix this",
    "the delivery guy just threw the box over the fence",
    "we watched {WORK_OF_ART} yesterday it was so good",
    "my {PRODUCT} keeps crashing since the update",
    "um so basically {ORG} cancelled my order without telling me",
    "thank you so much for the quick help really appreciate it",
    "i am calling from {GPE} and the app does not work here",
]


def _style(text: str, modality: str) -> str:
    if modality == "image":
        return text.upper()
    if modality == "audio":
        return text.lower()
    return text


def fill(template: str, rng: random.Random, modality: str) -> dict:
    """One item: the template with its slots filled, gold spans at the fills."""
    out, entities, pos = [], [], 0
    for m in re.finditer(r"\{([A-Z_]+)(\+s|'s)?\}", template):
        literal = _style(template[pos : m.start()], modality)
        out.append(literal)
        label, suffix = m.group(1), m.group(2) or ""
        name = _style(rng.choice(POOLS[label]), modality)
        start = sum(len(x) for x in out)
        surface = name + (_style(suffix[1:], modality) if suffix == "+s" else "")
        out.append(surface)
        if suffix == "'s":
            out.append(_style("'s", modality))
        entities.append({"start": start, "end": start + len(surface), "label": label})
        pos = m.end()
    out.append(_style(template[pos:], modality))
    text = "".join(out)
    for e in entities:
        e["text"] = text[e["start"] : e["end"]]
    return {"text": text, "modality": modality, "entities": entities}


def build() -> list[dict]:
    rng = random.Random(SEED)
    items = []
    for modality, templates, n in (
        ("text", TEXT_TEMPLATES, N_TEXT),
        ("image", OCR_TEMPLATES, N_IMAGE),
        ("audio", ASR_TEMPLATES, N_AUDIO),
    ):
        seen: set[str] = set()
        while len([i for i in items if i["modality"] == modality]) < n:
            item = fill(rng.choice(templates), rng, modality)
            if item["text"] in seen:
                continue
            seen.add(item["text"])
            items.append({"id": f"{modality}-{len(seen):03d}", **item})
    return items


def main() -> int:
    for item in build():
        sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
