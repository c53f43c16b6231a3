"""``commentflow forget-user USER_ID``: erase one user from the state Redis (right to erasure)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.settings import Settings

HELP = "erase every key and feed item about USER_ID from the state Redis"
EXAMPLE = "commentflow forget-user --redis-url redis://localhost:6379/0 -- user-42"
USES_SETTINGS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user_id", metavar="USER_ID", help="the user id exactly as in the events")


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    import asyncio

    import orjson
    import redis.asyncio as aioredis

    from commentflow.forget import forget_user

    assert settings is not None
    if not 1 <= len(args.user_id) <= 128:
        print("forget-user: USER_ID must have 1 to 128 characters", file=sys.stderr)
        return 2
    try:
        removed = asyncio.run(forget_user(settings, args.user_id))
    except (aioredis.RedisError, OSError) as exc:
        print(f"forget-user: {settings.redis_url}: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps({"user_id": args.user_id, "removed": removed}).decode())
    return 0
