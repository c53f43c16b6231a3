"""``commentflow stack``: the embedded broker (tansu) and Redis on loopback, until Ctrl-C."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.settings import Settings

HELP = "start the embedded broker (tansu) and Redis on loopback, until Ctrl-C"
EXAMPLE = "commentflow stack --partitions 4 --log-dir /tmp/commentflow-stack"
USES_SETTINGS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--kafka-port", type=int, default=None, help="broker port on 127.0.0.1 (default: a free one)")
    a("--redis-port", type=int, default=None, help="state Redis port (default: a free one)")
    a("--redis-cache-port", type=int, default=None, help="cache Redis port (default: a free one)")
    a("--cache-maxmemory", default="256mb", help="maxmemory of the cache Redis (allkeys-lru)")
    a("--log-dir", default=None, help="where the servers' logs go (default: a temporary folder)")


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    from commentflow.stack import serve

    assert settings is not None
    return serve(
        settings,
        kafka_port=args.kafka_port,
        redis_port=args.redis_port,
        redis_cache_port=args.redis_cache_port,
        cache_maxmemory=args.cache_maxmemory,
        log_dir=args.log_dir,
    )
