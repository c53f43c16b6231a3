"""A seeded generator of hostile messages: what a real upstream sends sooner or later."""

from __future__ import annotations

import json
import random
from typing import Any

EDGE_DATES = [
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+14:00",
    "1969-12-31T23:59:59Z",
    "2101-01-01T00:00:00Z",
    "2026-02-30T10:00:00Z",
    "2026-11-28T10:00:00",  # no offset
    "2026-11-28T10:00:00+25:00",
    "not a date",
    "",
    "2026-11-28T10:00:00.123456789Z",
]
WEIRD_TEXT = [
    "\x00\x01\x02 control",
    "\u202eright-to-left override",
    "\ufeffBOM",
    "😍" * 50,
    "👍🏽👨‍👩‍👧‍👦",
    "z\u0351\u0352\u0357\u0358" * 200,  # combining marks
    "\ud7ff\ue000\U0010ffff",
    "a" * 20_000,
    " " * 100,
]
BAD_MEDIA: list[Any] = [
    [{"type": "image", "url": "http://10.0.0.1/x.png"}],  # private: blocked before connect
    [{"type": "image", "url": "http://127.0.0.1:1/x.png"}],  # loopback: blocked
    [{"type": "audio", "url": "http://169.254.169.254/latest/meta-data"}],
    [{"type": "image", "url": "http://[::1]/x"}],
    [{"type": "image", "url": "http://0x7f000001/x"}],
    [{"type": "video", "url": "https://example.test/x"}],
    [{"type": "image", "url": "file:///etc/passwd"}],
    [{"type": "image"}],
    [{"type": "image", "url": "https://" + "a" * 3000}],
    [{"type": "image", "url": "http://10.0.0.1/a.png"}] * 9,
    "not a list",
    [None, 1, "x"],
]


def hostile_values(n: int, seed: int, prefix: str = "h") -> list[tuple[bytes | None, bytes | None]]:
    """``n`` (value, key) pairs: invalid bytes, broken JSON, wrong types, edge dates, odd text,
    hostile media lists, deep nesting, huge numbers, repeated ids across users, tombstones and
    also some perfectly valid events mixed in."""
    rnd = random.Random(seed)
    out: list[tuple[bytes | None, bytes | None]] = []
    for i in range(n):
        base: dict[str, Any] = {
            "comment_id": f"{prefix}-{i}",
            "user_id": rnd.choice(["hu1", "hu2", "hu:3", "*", "ü-user"]),
            "text": "hostile but fine",
            "created_at": "2026-11-28T10:00:00Z",
        }
        kind = rnd.randrange(14)
        key: bytes | None = base["user_id"].encode()
        if kind == 0:
            value: bytes | None = rnd.randbytes(rnd.randrange(0, 400))
        elif kind == 1:
            value = None
        elif kind == 2:
            value = json.dumps(base).encode()[: rnd.randrange(1, 60)]  # cut JSON
        elif kind == 3:
            value = json.dumps({**base, "created_at": rnd.choice(EDGE_DATES)}).encode()
        elif kind == 4:
            value = json.dumps({**base, "text": rnd.choice(WEIRD_TEXT)}).encode()
        elif kind == 5:
            value = json.dumps({**base, "media": rnd.choice(BAD_MEDIA)}).encode()
        elif kind == 6:
            depth = rnd.choice([10, 200, 2000])
            nest = '{"x":[' * depth + '"deep"' + "]}" * depth
            value = json.dumps({**base, "metadata": None}).encode().replace(b"null", nest.encode())
        elif kind == 7:
            value = json.dumps({**base, "metadata": {"n": 10**400, "f": 1e308}}).encode()
        elif kind == 8:
            field = rnd.choice(["comment_id", "user_id", "text", "created_at", "media"])
            value = json.dumps({**base, field: rnd.choice([None, 7, [], {}, True, 1.5])}).encode()
        elif kind == 9:
            value = json.dumps({**base, "comment_id": "shared-id"}).encode()  # many users, one id
        elif kind == 10:
            value = json.dumps({**base, "comment_id": "\x00" * rnd.randrange(1, 129)}).encode()
            key = rnd.randbytes(rnd.randrange(0, 2000))
        elif kind == 11:
            value = b"[" * 100_000
        elif kind == 12:
            value = json.dumps({**base, "schema": "commentflow.comment/2"}).encode()
        else:
            value = json.dumps(base).encode()  # valid
        out.append((value, key))
    return out
