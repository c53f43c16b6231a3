"""The JSON Schema files are generated from the models and must stay in sync with them."""

from __future__ import annotations

import json

import jsonschema
import orjson

from schemas.export import CONTRACTS, JSON_DIR, main, render


def test_json_schema_files_are_up_to_date():
    for name, (model, mode) in CONTRACTS.items():
        path = JSON_DIR / name
        assert path.exists(), f"{name} missing: run python -m schemas.export"
        assert path.read_text() == render(model, mode), (
            f"{name} stale: run python -m schemas.export"
        )
    assert main(["--check"]) == 0


def test_published_comment_schema_accepts_and_rejects_like_the_worker():
    schema = json.loads((JSON_DIR / "comment-1.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = {"comment_id": "c", "user_id": "u", "text": "hi", "created_at": "2026-01-01T00:00:00Z"}
    assert not list(validator.iter_errors(good))
    assert list(validator.iter_errors({**good, "comment_id": 5}))
    assert list(validator.iter_errors({k: v for k, v in good.items() if k != "user_id"}))


def test_prediction_schema_validates_a_worker_prediction():
    schema = json.loads((JSON_DIR / "prediction-1.schema.json").read_text())
    doc = {
        "schema": "commentflow.prediction/1",
        "comment_id": "c",
        "user_id": "u",
        "label": "neutral",
        "scores": {"negative": 0.2, "neutral": 0.5, "positive": 0.3},
        "modalities": ["text"],
        "media_errors": [],
        "model": {"name": "m", "version": "1"},
        "created_at": "2026-01-01T00:00:00Z",
        "processed_at": "2026-01-01T00:00:01Z",
    }
    jsonschema.validate(orjson.loads(orjson.dumps(doc)), schema)
