"""``commentflow tail``: print the predictions (or dead letters), each once, as JSON lines."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.settings import Settings

HELP = "print the predictions (or dead-letter) topic as JSON lines, duplicates dropped"
EXAMPLE = "commentflow tail --topic predictions --from-beginning --max 10 | jq .label"
USES_SETTINGS = True  # the topics' names and the Kafka security settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a(
        "--topic",
        default="predictions",
        metavar="NAME",
        help="predictions | dead-letters (the settings' topics) or a topic name [predictions]",
    )
    a("--from-beginning", action="store_true", help="start at the oldest retained message")
    a("--max", type=int, default=None, metavar="N", help="stop after N distinct messages")
    a(
        "--group",
        default=None,
        metavar="ID",
        help="join this consumer group and commit (default: no group, nothing committed)",
    )
    a(
        "--remember",
        type=int,
        default=100_000,
        metavar="N",
        help="recent keys kept to drop redeliveries [100000]",
    )


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    import asyncio
    import contextlib

    import orjson

    from commentflow.tail import key_for_topic, tail
    from workers.kafka_security import KafkaSecurityError

    assert settings is not None
    topic = {"predictions": settings.predictions_topic, "dead-letters": settings.dlq_topic}.get(
        args.topic, args.topic
    )
    if (args.max is not None and args.max < 1) or args.remember < 1:
        print("commentflow tail: --max and --remember must be at least 1", file=sys.stderr)
        return 2

    def emit(doc: dict) -> None:
        sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
        sys.stdout.buffer.flush()

    try:
        security = settings.kafka_security
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                tail(
                    settings.kafka_bootstrap,
                    topic,
                    emit,
                    key=key_for_topic(topic, dlq_topic=settings.dlq_topic),
                    from_beginning=args.from_beginning,
                    max_messages=args.max,
                    group=args.group,
                    security=security,
                    remember=args.remember,
                )
            )
    except (KafkaSecurityError, LookupError) as exc:
        print(f"commentflow tail: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `| head`: the reader has gone, which is fine
        return 0
    return 0
