"""Write the contracts as JSON Schema files: ``python -m schemas.export [--check]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.events import CommentEvent, DeadLetter, Prediction

JSON_DIR = Path(__file__).resolve().parent / "json"

#: file name -> (model, mode): events are validated as input, the others are serialised output.
CONTRACTS: dict[str, tuple[type[BaseModel], str]] = {
    "comment-1.schema.json": (CommentEvent, "validation"),
    "prediction-1.schema.json": (Prediction, "serialization"),
    "dead_letter-1.schema.json": (DeadLetter, "serialization"),
}


def render(model: type[BaseModel], mode: str) -> str:
    schema = model.model_json_schema(by_alias=True, mode=mode)  # type: ignore[arg-type]
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    JSON_DIR.mkdir(exist_ok=True)
    for name, (model, mode) in CONTRACTS.items():
        path = JSON_DIR / name
        text = render(model, mode)
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date: " + ", ".join(stale) + " (run python -m schemas.export)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
