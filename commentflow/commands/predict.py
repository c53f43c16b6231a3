"""``commentflow predict``: score a data file with the production model, no labels, no broker."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamer.settings import Settings

HELP = "score a CSV / JSON-lines / Parquet file with the model; predictions as on the topic"
EXAMPLE = "commentflow predict --data comments.csv --out predictions.jsonl --model models/text"
USES_SETTINGS = True  # --model and --device are the worker's settings: the production model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a(
        "--data",
        required=True,
        metavar="FILE",
        help="rows to score: .csv (a text column; optional comment_id, user_id, created_at, and "
        "image / audio columns with LOCAL file paths: nothing is fetched), .jsonl (comment "
        "events), .parquet (with pyarrow)",
    )
    a("--out", default="-", metavar="FILE", help="JSON lines, one prediction per row [stdout]")
    a("--batch-size", type=int, default=64, metavar="N", help="rows per model call [64]")
    a("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    from commentflow.predict import write_predictions
    from model import load_classifier
    from model.errors import ModelError
    from workers.media_decode import decode_config

    assert settings is not None
    if args.batch_size < 1:
        print("commentflow predict: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        classifier = load_classifier(settings.model_dir, settings.device)
    except (ModelError, OSError) as exc:
        print(
            f"commentflow predict: cannot load the model in {settings.model_dir}: {exc}",
            file=sys.stderr,
        )
        return 2
    entities = None
    if settings.entities_enabled:  # --entities-enabled: the worker's entity stage too
        from streamer.agents import load_entity_recognizer

        try:
            entities = load_entity_recognizer(settings)
        except ModelError as exc:
            print(f"commentflow predict: {exc}", file=sys.stderr)
            return 2
    out = sys.stdout.buffer if args.out == "-" else open(args.out, "wb")  # noqa: SIM115
    try:
        result = write_predictions(
            classifier,
            args.data,
            out,
            batch_size=args.batch_size,
            show_progress=not args.no_progress,
            max_event_bytes=settings.max_event_bytes,
            # Image size and audio rate from the model (config.json preprocess), limits from
            # the settings: rows are decoded as the worker decodes fetched media.
            decode_config=decode_config(
                getattr(classifier, "decode_config", None),
                image_max_pixels=settings.media_max_pixels,
            ),
            entities=entities,
        )
    except (OSError, ValueError, ImportError) as exc:
        print(f"commentflow predict: {exc}", file=sys.stderr)
        return 2
    finally:
        if out is not sys.stdout.buffer:
            out.close()
        else:
            out.flush()
    print(
        f"commentflow predict: {result.predictions} predictions, {len(result.skipped)} rows "
        "skipped",
        file=sys.stderr,
    )
    return 1 if result.skipped else 0
