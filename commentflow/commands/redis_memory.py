"""``commentflow redis-memory``: the state Redis' memory per user and per dedup entry."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.settings import Settings

HELP = "measure the state Redis' memory per user and per dedup entry (own redis-server)"
EXAMPLE = "commentflow redis-memory --users 100000 --comments-per-user 3 --json"
USES_SETTINGS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--users", type=int, default=1_000_000, help="users to load (phase A)")
    a("--comments-per-user", type=int, default=3, help="comments per user (A)")
    a(
        "--extra-comments",
        type=int,
        default=None,
        help="further comments, one per existing user, for the dedup entry (B; default --users)",
    )
    a("--dead-letters", type=int, default=100_000, help="dead letters for the dlq marker (D)")
    a("--text-chars", type=int, default=120, help="comment text length in items")
    a("--pipeline", type=int, default=2000, help="records per pipeline")
    a("--json", action="store_true", help="print one JSON object only")


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    import asyncio

    import orjson

    from commentflow.redis_memory import measure, print_report
    from commentflow.stack import StackError

    assert settings is not None
    extra = args.users if args.extra_comments is None else args.extra_comments
    if args.users < 1 or args.comments_per_user < 1 or not 0 <= extra <= args.users:
        print(
            "redis-memory: need --users >= 1, --comments-per-user >= 1, "
            "0 <= --extra-comments <= --users",
            file=sys.stderr,
        )
        return 2
    try:
        result = asyncio.run(
            measure(
                users=args.users,
                comments_per_user=args.comments_per_user,
                extra_comments=extra,
                dead_letters=args.dead_letters,
                text_chars=args.text_chars,
                pipeline=args.pipeline,
                settings=settings,
                progress=not args.json,
            )
        )
    except StackError as exc:
        print(f"redis-memory: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print_report(result)
    return 0
