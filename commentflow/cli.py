"""The ``commentflow`` command: stack, worker, produce, build-data, train, evaluate, bench,
dashboard, demo, forget-user, redis-memory, soak.

Every :class:`~commentflow.settings.Settings` field is a flag (``--kafka-bootstrap``,
``--redis-url``, ``--model-dir``, ...) that overrides its ``COMMENTFLOW_*`` variable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from commentflow import __version__
from commentflow.settings import ENV_PREFIX, Settings

__all__ = ["main"]


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "settings", f"each overrides its environment variable {ENV_PREFIX}<NAME>"
    )
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        env = ENV_PREFIX + f.name.upper()
        if kind == "bool":
            group.add_argument(
                flag,
                dest=f.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=f"(env {env}, default {f.default})",
            )
        else:
            conv: Callable[[str], Any] = {"int": int, "float": float}.get(kind, str)
            group.add_argument(
                flag,
                dest=f.name,
                type=conv,
                default=None,
                metavar=f.name.upper(),
                help=f"(env {env}, default {f.default})",
            )


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {f.name: getattr(args, f.name, None) for f in fields(Settings)}
    return Settings.from_env(**overrides)


def _cmd_worker(args: argparse.Namespace) -> int:
    from streamer.app import run_worker

    return run_worker(settings_from_args(args))


def _cmd_produce(args: argparse.Namespace) -> int:
    from commentflow import produce

    return produce.run(args, settings_from_args(args))


def _lazy(module: str, attr: str = "run", with_settings: bool = False) -> Callable[..., int]:
    def call(args: argparse.Namespace) -> int:
        import importlib

        fn = getattr(importlib.import_module(module), attr)
        return fn(args, settings_from_args(args)) if with_settings else fn(args)

    return call


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="commentflow", description="Classify streaming comments from text, images and audio."
    )
    parser.add_argument("--version", action="version", version=f"commentflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str, *, settings: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if settings:
            add_settings_arguments(p)
        return p

    from commentflow import produce, stack

    p = command("stack", "start the embedded broker (tansu) and Redis on loopback, until Ctrl-C")
    stack.add_arguments(p)
    p.set_defaults(func=_lazy("commentflow.stack"))

    p = command("worker", "run the stream processor against the configured broker and Redis")
    p.set_defaults(func=_cmd_worker)

    p = command("produce", "send comment events (JSON lines from FILE or -, or --synthetic N)")
    produce.add_arguments(p)
    p.set_defaults(func=_cmd_produce)

    from model import evaluate, train

    p = command("train", "train the classifier (defaults rebuild models/text)", settings=False)
    train.add_arguments(p)
    p.set_defaults(func=_lazy("model.train"))

    from model import build_data

    p = command(
        "build-data",
        "build the multimodal training/test set (tweets as text, images and voice notes)",
        settings=False,
    )
    build_data.add_arguments(p)
    p.set_defaults(func=_lazy("model.build_data"))

    from model import features

    p = command(
        "features", "extract multimodal features of a data file into an .npz", settings=False
    )
    features.add_arguments(p)
    p.set_defaults(func=_lazy("model.features"))

    from model import evaluate_multimodal, train_fusion

    p = command(
        "train-fusion", "train the multimodal fusion model on extracted features", settings=False
    )
    train_fusion.add_arguments(p)
    p.set_defaults(func=_lazy("model.train_fusion"))

    p = command(
        "evaluate-multimodal",
        "evaluate a fusion model by kind, with the text-only ablation",
        settings=False,
    )
    evaluate_multimodal.add_arguments(p)
    p.set_defaults(func=_lazy("model.evaluate_multimodal"))

    from model import throughput

    p = command(
        "bench-model",
        "the classifier alone: comments/s by batch size, text vs new vs cached media",
        settings=False,
    )
    throughput.add_arguments(p)
    p.set_defaults(func=_lazy("model.throughput"))

    p = command("evaluate", "evaluate a model directory on labelled data", settings=False)
    evaluate.add_arguments(p)
    p.set_defaults(func=_lazy("model.evaluate"))

    from commentflow import bench, demo

    p = command("bench", "model-only, end-to-end and naive-baseline throughput in one run")
    bench.add_arguments(p)
    p.set_defaults(func=_lazy("commentflow.bench", with_settings=True))

    from commentflow import dashboard

    p = command("dashboard", "serve the live dashboard (reads only Redis), until Ctrl-C")
    dashboard.add_arguments(p)
    p.set_defaults(func=_lazy("commentflow.dashboard", with_settings=True))

    p = command("demo", "stack + worker + synthetic producer, with a live summary, until Ctrl-C")
    demo.add_arguments(p)
    p.set_defaults(func=_lazy("commentflow.demo", with_settings=True))

    # -- the state Redis: right to erasure, memory measurement
    from commentflow import forget, redis_memory

    p = command("forget-user", "erase every key and feed item about USER_ID from the state Redis")
    forget.add_arguments(p)
    p.set_defaults(func=_lazy("commentflow.forget", with_settings=True))

    p = command(
        "redis-memory",
        "measure the state Redis' memory per user and per dedup entry (own redis-server)",
    )
    redis_memory.add_arguments(p)
    p.set_defaults(func=_lazy("commentflow.redis_memory", with_settings=True))

    # -- robustness: a long run under mixed and hostile traffic
    from commentflow import soak

    p = command(
        "soak",
        "one worker under mixed and hostile traffic for --minutes: RSS and Redis memory over time",
    )
    soak.add_arguments(p)
    p.set_defaults(func=_lazy("commentflow.soak", with_settings=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from commentflow import logs

    try:
        log_format = settings_from_args(args).log_format
    except ValueError:
        log_format = "text"  # a bad setting is reported by the command itself
    logs.configure("debug" if args.verbose else "info", log_format)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
