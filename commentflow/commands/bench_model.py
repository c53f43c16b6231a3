"""``commentflow bench-model``: the classifier alone, comments/s by batch size and workload."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commentflow.settings import Settings

HELP = "the classifier alone: comments/s by batch size, text vs new vs cached media"
EXAMPLE = "commentflow bench-model --model models/multimodal --batch-sizes 1,8,32,128"
USES_SETTINGS = False


def _batch_sizes(spec: str) -> list[int]:
    try:
        sizes = sorted({int(s) for s in spec.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {spec!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1: {spec!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--model", default="models/multimodal", help="model directory")
    a(
        "--batch-sizes",
        type=_batch_sizes,
        default="1,8,32,128",
        help="comma-separated batch sizes",
    )
    a("--items", type=int, default=512, help="timed comments per batch size (text, cached)")
    a("--media-items", type=int, default=64, help="timed comments per batch size (new media)")
    a("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    a("--threads", type=int, default=2, help="torch / OCR / ASR CPU threads")
    a("--seed", type=int, default=7)
    a("--out", default=None, help="output folder (default: runs/bench-model-<timestamp>)")
    a(
        "--no-entities",
        dest="entities",
        action="store_false",
        help="leave out the text+entities workload (the entity stage after the model)",
    )
    a(
        "--no-media",
        dest="media",
        action="store_false",
        help="text workloads only, also for a multimodal model (no OCR or speech: fast)",
    )
    a(
        "--text-encoders",
        action="store_true",
        help="instead of a model: the text encoders alone (MiniLM, USE-m3 in torch, USE-m3's "
        "numpy package), texts/s side by side",
    )


def synthetic_texts(n: int, seed: int) -> list[str]:
    """The synthetic producer's comment texts (what ``commentflow produce --synthetic`` sends)."""
    from commentflow.produce import synthetic_events

    return [e["text"] for e in synthetic_events(n, seed=seed)]


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    if args.text_encoders:
        from model.evaluation.encoder_throughput import bench_text_encoders

        bench_text_encoders(
            synthetic_texts,
            batch_sizes=args.batch_sizes,
            items=max(args.items, 1024),
            device=args.device,
            threads=args.threads,
            seed=args.seed,
        )
        return 0

    from model.evaluation.throughput import bench_model
    from workers import memory

    memory.tune()  # the worker's malloc settings: the model as a worker runs it (workers.memory)
    return bench_model(
        args.model,
        synthetic_texts,
        batch_sizes=args.batch_sizes,
        items=args.items,
        media_items=args.media_items,
        device=args.device,
        threads=args.threads,
        seed=args.seed,
        out=args.out,
        entities=args.entities,
        media=args.media,
    )
