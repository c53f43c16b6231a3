"""The prediction document: a model output as the predictions topic carries it.

A pure function, with no Kafka, Redis or clock in it, so that the worker
(:mod:`workers.processor`) and offline scoring (``commentflow predict``) write the very same
fields: a file scored offline reads like the topic. The contract is
:class:`schemas.events.Prediction` (``schemas/json/prediction-1.schema.json``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

from model.base import Classifier, ClassOutput
from model.entities import EntityResult
from schemas.events import PREDICTION_SCHEMA, CommentEvent

__all__ = [
    "confidence_fields",
    "entity_fields",
    "model_ref",
    "prediction_document",
    "rounded_scores",
    "utc_iso",
]


def model_ref(classifier: Classifier) -> dict[str, str]:
    """The prediction's ``model`` field: which model made it."""
    return {"name": classifier.name, "version": classifier.version}


def prediction_document(
    event: CommentEvent,
    out: ClassOutput,
    *,
    model: Mapping[str, str],
    processed_at: str,
    media_errors: Sequence[Mapping[str, str]] = (),
    entities: EntityResult | None = None,
) -> dict[str, Any]:
    """The prediction of ``event`` (a JSON-ready dict; ``metadata`` copied when the event has it).

    ``processed_at``: RFC 3339 UTC time; ``media_errors``: the media items left out, redacted;
    ``entities``: the entity stage's result (None: the stage is off, the fields are absent).
    """
    doc: dict[str, Any] = {
        "schema": PREDICTION_SCHEMA,
        "comment_id": event.comment_id,
        "user_id": event.user_id,
        "label": out.label,
        "scores": rounded_scores(out),
        "modalities": list(out.modalities),
        "media_errors": [dict(e) for e in media_errors],
        "model": dict(model),
        "created_at": utc_iso(event),
        "processed_at": processed_at,
        **confidence_fields(out),
        **entity_fields(entities),
    }
    if event.metadata is not None:
        doc["metadata"] = event.metadata
    return doc


def rounded_scores(out: ClassOutput) -> dict[str, float]:
    """label -> probability, six decimals (what the topic carries)."""
    return {label: round(float(p), 6) for label, p in out.scores.items()}


def utc_iso(event: CommentEvent) -> str:
    """The event's ``created_at`` in UTC, ``Z`` suffix."""
    return event.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def confidence_fields(out: ClassOutput) -> dict[str, Any]:
    """The prediction's ``language``, ``confidence`` and ``low_confidence_reasons`` fields.

    A comment in a language the model does not support gets ``confidence: "low"``: its label is
    a guess, and consumers must not act on it as on a normal prediction.
    """
    reasons = [] if out.language_supported else ["unsupported_language"]
    fields: dict[str, Any] = {
        "confidence": "low" if reasons else "normal",
        "low_confidence_reasons": reasons,
    }
    if out.language is not None:
        fields["language"] = {
            "code": out.language,
            "score": round(float(out.language_score), 4),
            "supported": out.language_supported,
        }
    return fields


def entity_fields(result: EntityResult | None) -> dict[str, Any]:
    """The prediction's ``entities`` and ``entities_status`` (none when the stage is off)."""
    if result is None:
        return {}
    return {
        "entities": [e.as_dict() for e in result.entities],
        "entities_status": result.status,
    }
