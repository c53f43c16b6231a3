"""The soak's traffic: a deterministic mix of valid, media, hostile, malformed and repeated events,
and the ledger that checks every one of them came out as it should.

Mix (shares of the offered messages, before ``exclude``)::

    text           83%  a valid text comment                       -> one prediction
    good_media      5%  valid, with a good image and/or voice note  -> one prediction
    hostile_media   5%  valid, with 1-8 hostile media URLs          -> one prediction (media_errors)
    malformed       5%  one of MALFORMED (bad JSON, tombstone, ...) -> one dead letter
    duplicate       2%  the exact bytes of a valid event sent >= 10 s earlier -> nothing new

Valid comments are matched by ``comment_id``; malformed ones by their input (partition, offset),
which is what a dead letter's ``source`` names.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from commentflow.media_server import HOSTILE_PATHS
from commentflow.produce import synthetic_events

__all__ = ["CATEGORIES", "MALFORMED", "Ledger", "Planned", "Traffic"]

CATEGORIES: dict[str, float] = {
    "text": 0.83,
    "good_media": 0.05,
    "hostile_media": 0.05,
    "malformed": 0.05,
    "duplicate": 0.02,
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _doc(cid: str, **changes: Any) -> bytes:
    doc = {"comment_id": cid, "user_id": "user-bad", "text": "hello", "created_at": _now()}
    doc.update(changes)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


#: Malformed message builders, by name: comment id -> value (``None``: a tombstone).
MALFORMED: dict[str, Callable[[str], bytes | None]] = {
    "bad_json": lambda cid: b'{"comment_id": "' + cid.encode() + b'", "text": "unterminated',
    "invalid_utf8": lambda cid: _doc(cid, text="ok").replace(b'"ok"', b'"\xff\xfe\xc3("'),
    "wrong_types": lambda cid: orjson.dumps(
        {"comment_id": cid, "user_id": ["u"], "text": 5, "created_at": 1700000000}
    ),
    "not_an_object": lambda cid: orjson.dumps([cid, "text"]),
    "missing_fields": lambda cid: orjson.dumps({"comment_id": cid}),
    "naive_date": lambda cid: _doc(cid, created_at="2026-01-01T00:00:00"),
    "absurd_date": lambda cid: _doc(cid, created_at="9999-12-31T23:59:59-01:00"),
    "oversized_text": lambda cid: _doc(cid, text="x" * 25_000),
    "oversized_value": lambda cid: _doc(cid, text="y", metadata={"pad": "z" * 300_000}),
    "bad_media": lambda cid: _doc(cid, media=[{"type": "video", "url": "ftp://x/y"}]),
    "unsupported_schema": lambda cid: _doc(cid, schema="commentflow.comment/9"),
    "tombstone": lambda cid: None,
}


@dataclass(frozen=True, slots=True)
class Planned:
    """One message to send and what must come of it."""

    category: str  # a CATEGORIES key
    kind: str  # finer: the malformed or hostile kind, "text", "image", ...
    value: bytes | None
    key: bytes | None
    comment_id: str | None  # the id to look for on the predictions topic (valid events)
    expect: str  # "prediction" | "dead_letter" | "nothing"


class Traffic:
    """An endless, seeded stream of :class:`Planned` messages.

    ``media_url(host, path)`` builds a media URL; good media use ``hosts`` in turn, hostile media
    also a new ``x{n}.<wildcard_domain>`` host a third of the time. ``exclude`` drops categories,
    malformed kinds or hostile kinds by name (``absurd_date``, ``slow``, ``hostile_media`` ...).
    ``duplicate_after`` is how many messages back a repeat reaches at least.
    """

    def __init__(
        self,
        tag: str,
        media_url: Callable[[str, str], str],
        *,
        hosts: tuple[str, ...],
        wildcard_domain: str,
        users: int = 2000,
        seed: int = 0,
        exclude: frozenset[str] = frozenset(),
        duplicate_after: int = 200,
    ) -> None:
        unknown = exclude - set(CATEGORIES) - set(MALFORMED) - set(HOSTILE_PATHS)
        if unknown:
            raise ValueError(f"unknown traffic kinds to exclude: {', '.join(sorted(unknown))}")
        self._rng = random.Random(seed)
        self._events = synthetic_events(10**12, users=users, seed=seed, prefix=f"soak-{tag}")
        self._tag = tag
        self._url = media_url
        self._hosts = hosts
        self._wild = wildcard_domain
        self._cats = [c for c in CATEGORIES if c not in exclude]
        self._bad = [k for k in MALFORMED if k not in exclude]
        self._hostile = [k for k in HOSTILE_PATHS if k not in exclude]
        if not self._bad and "malformed" in self._cats:
            self._cats.remove("malformed")
        if not self._hostile and "hostile_media" in self._cats:
            self._cats.remove("hostile_media")
        self._weights = [CATEGORIES[c] for c in self._cats]
        self._sent: deque[tuple[int, bytes, bytes | None, str]] = deque(maxlen=5000)
        self._after = duplicate_after
        self._n = 0

    def __iter__(self) -> Iterator[Planned]:
        return self

    def warm_up(self) -> Planned:
        """One valid text comment (the worker is ready once it is predicted)."""
        event = next(self._events)
        event["comment_id"] = f"soak-{self._tag}-warm"
        value = orjson.dumps(event)
        return Planned("warm", "text", value, _key(event), event["comment_id"], "prediction")

    def __next__(self) -> Planned:
        self._n += 1
        n = self._n
        category = self._rng.choices(self._cats, self._weights)[0]
        if category == "duplicate":
            old = [s for s in self._sent if s[0] <= n - self._after]
            if old:
                _, value, key, cid = self._rng.choice(old)
                return Planned("duplicate", "repeat", value, key, cid, "nothing")
            category = "text"
        if category == "malformed":
            kind = self._rng.choice(self._bad)
            cid = f"soak-{self._tag}-bad-{n}"
            key = f"user-{self._rng.randrange(50)}".encode()
            return Planned("malformed", kind, MALFORMED[kind](cid), key, cid, "dead_letter")
        event = next(self._events)
        event["created_at"] = _now()
        kind = "text"
        if category == "good_media":
            kind = self._rng.choice(("image", "audio", "image+audio"))
            host = self._hosts[n % len(self._hosts)]
            event["media"] = [
                {"type": t, "url": self._url(host, f"/good/{t}/{n}.{ext}")}
                for t, ext in (("image", "png"), ("audio", "wav"))
                if t in kind
            ]
        elif category == "hostile_media":
            count = self._rng.choice((1, 1, 1, 2, 3, 8))
            kinds = [self._rng.choice(self._hostile) for _ in range(count)]
            kind = "+".join(sorted(set(kinds)))
            event["media"] = []
            for i, k in enumerate(kinds):
                media_type, path = HOSTILE_PATHS[k]
                host = (
                    f"x{n}-{i}.{self._wild}"
                    if self._rng.random() < 1 / 3
                    else self._hosts[(n + i) % len(self._hosts)]
                )
                event["media"].append(
                    {"type": media_type, "url": self._url(host, path.format(n=n))}
                )
        value = orjson.dumps(event)
        self._sent.append((n, value, _key(event), event["comment_id"]))
        return Planned(category, kind, value, _key(event), event["comment_id"], "prediction")


def _key(event: dict[str, Any]) -> bytes:
    return str(event["user_id"]).encode()


@dataclass
class Ledger:
    """What was sent (acknowledged by the broker) and what came out; :meth:`check` compares."""

    input_topic: str
    sent: dict[tuple[int, int], Planned] = field(default_factory=dict)  # (partition, offset)
    sent_by_category: Counter[str] = field(default_factory=Counter)
    predicted: Counter[str] = field(default_factory=Counter)  # comment_id -> predictions
    dead: Counter[tuple[int, int]] = field(default_factory=Counter)  # source -> dead letters
    dead_codes: Counter[str] = field(default_factory=Counter)
    media_errors: Counter[str] = field(default_factory=Counter)  # "host kind: reason"
    modalities: Counter[str] = field(default_factory=Counter)
    expected_outputs: int = 0
    send_errors: int = 0

    def on_sent(self, planned: Planned, partition: int, offset: int) -> None:
        self.sent[(partition, offset)] = planned
        self.sent_by_category[planned.category] += 1
        self.expected_outputs += planned.expect != "nothing"

    def on_prediction(self, doc: dict[str, Any]) -> None:
        cid = str(doc.get("comment_id"))
        self.predicted[cid] += 1
        if self.predicted[cid] == 1:
            for m in doc.get("modalities", ()):
                self.modalities[m] += 1
            for e in doc.get("media_errors", ()):
                host = str(e.get("url", "")).split("/")[2:3] or ["?"]
                where = "wildcard" if host[0].startswith("x") else host[0].split(":")[0]
                self.media_errors[f"{where}: {e.get('reason')}"] += 1

    def on_dead_letter(self, doc: dict[str, Any]) -> None:
        source = doc.get("source") or {}
        if source.get("topic") != self.input_topic:
            return
        where = (int(source.get("partition", -1)), int(source.get("offset", -1)))
        self.dead[where] += 1
        if self.dead[where] == 1:
            self.dead_codes[str((doc.get("error") or {}).get("code"))] += 1

    @property
    def outputs(self) -> int:
        """Distinct outcomes seen: comments predicted plus input messages dead-lettered."""
        return len(self.predicted) + len(self.dead)

    @property
    def backlog(self) -> int:
        """Acknowledged messages that should have an outcome and have none yet (roughly: lag)."""
        return max(0, self.expected_outputs - self.outputs)

    def check(self) -> dict[str, Any]:
        """Every valid comment predicted once, every malformed message dead-lettered once."""
        by_kind: dict[str, Counter[str]] = {}
        missing: list[dict[str, Any]] = []
        unexpected: list[dict[str, Any]] = []
        for (partition, offset), p in self.sent.items():
            row = by_kind.setdefault(f"{p.category}:{p.kind}", Counter())
            row["sent"] += 1
            dead = self.dead.get((partition, offset), 0)
            predicted = self.predicted.get(p.comment_id or "", 0)
            row["predicted"] += predicted > 0
            row["dead_lettered"] += dead > 0
            where = {"partition": partition, "offset": offset, "comment_id": p.comment_id}
            if p.expect == "prediction" and not predicted:
                (unexpected if dead else missing).append({**where, "kind": p.kind})
            elif p.expect == "dead_letter" and not dead:
                (unexpected if predicted else missing).append({**where, "kind": p.kind})
            elif p.expect == "nothing" and dead:
                unexpected.append({**where, "kind": "duplicate dead-lettered"})
        valid_ids = {p.comment_id for p in self.sent.values() if p.expect == "prediction"}
        dup_predictions = {c: n - 1 for c, n in self.predicted.items() if n > 1}
        return {
            "ok": not missing and not unexpected and self.send_errors == 0,
            "sent": len(self.sent),
            "send_errors": self.send_errors,
            "valid_comments": len(valid_ids),
            "predicted_once_or_more": sum(1 for c in valid_ids if self.predicted.get(c)),
            "malformed": sum(1 for p in self.sent.values() if p.expect == "dead_letter"),
            "dead_lettered": len(self.dead),
            "missing": len(missing),
            "missing_examples": missing[:20],
            "unexpected": len(unexpected),
            "unexpected_examples": unexpected[:20],
            "duplicate_predictions": sum(dup_predictions.values()),
            "duplicate_prediction_examples": sorted(dup_predictions)[:20],
            "duplicate_dead_letters": sum(n - 1 for n in self.dead.values() if n > 1),
            "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
            "dead_letter_codes": dict(self.dead_codes),
            "media_errors": dict(self.media_errors.most_common()),
            "modalities": dict(self.modalities),
        }
