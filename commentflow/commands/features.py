"""``commentflow features``: extract the multimodal features of a data file into an ``.npz``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commentflow.settings import Settings

HELP = "extract multimodal features of a data file into an .npz"
EXAMPLE = "commentflow features --data data/multimodal/test.jsonl --out .cache/mm/test.npz"
USES_SETTINGS = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a(
        "--data",
        required=True,
        help="data/multimodal/{train,val,test}.jsonl, or a .jsonl/.csv: text,label,image,audio",
    )
    a("--out", required=True, help="the .npz to write (e.g. .cache/mm/train.npz)")
    a("--batch-size", type=int, default=32, help="comments per extraction batch")
    a(
        "--cache-dir",
        default=".cache/mm/media",
        help="per-media cache (OCR text, transcript, image embedding by file sha256)",
    )
    a("--device", default="auto", help="auto, cpu or cuda[:i]")
    a("--threads", type=int, default=2, help="CPU threads for torch, OCR and ASR")
    a("--limit", type=int, default=None, help="only the first N items (smoke runs)")
    a(
        "--text-model",
        default=None,
        help="encode texts with this text model's encoder (e.g. models/text-multilingual: "
        "MiniLM + USE-m3); default MiniLM. train-fusion checks it matches its --text-model",
    )
    a("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    from model.data.featurise import extract_features

    summary = extract_features(
        args.data,
        args.out,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        device=args.device,
        threads=args.threads,
        limit=args.limit,
        progress=not args.no_progress,
        text_model=args.text_model,
    )
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0
