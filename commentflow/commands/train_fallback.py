"""``commentflow train-fallback``: a text model's head for languages it was not trained on."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commentflow.settings import Settings

HELP = "fit a text model's USE-m3 fallback head for languages it was not trained on"
EXAMPLE = "commentflow train-fallback --model models/text-multilingual --data mix:-hutto_amazon"
USES_SETTINGS = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--model", required=True, help="the text model directory to add the fallback head to")
    a(
        "--data",
        required=True,
        help="the data spec the model was trained on (its :train rows in --train-languages fit "
        "the head, its :val rows in --proxy-language choose it), e.g. mix:-hutto_amazon",
    )
    a(
        "--train-languages",
        default="en",
        help="comma-separated languages whose training rows fit the head (default: en)",
    )
    a(
        "--proxy-language",
        default="zh",
        help="a language of the validation split the head never trains on: it chooses the L2 "
        "strength and fits the temperature, standing for the languages it will serve",
    )
    a("--cache-dir", default=".cache/features", help="the text feature cache (as `train`)")
    a("--split-seed", type=int, default=13, help="seed of the data spec's split")
    a("--threads", type=int, default=2, help="torch CPU threads")


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    import torch

    from model.training.fallback import train_fallback

    torch.set_num_threads(max(1, args.threads))
    train_fallback(
        args.model,
        args.data,
        train_languages=tuple(x.strip() for x in args.train_languages.split(",") if x.strip()),
        proxy_language=args.proxy_language,
        cache_dir=args.cache_dir,
        split_seed=args.split_seed,
    )
    return 0
