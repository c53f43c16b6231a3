"""The event contracts of commentflow (see ``schemas/json`` for the JSON Schema files)."""

from schemas.events import (
    COMMENT_SCHEMA,
    DEAD_LETTER_SCHEMA,
    PREDICTION_SCHEMA,
    CommentEvent,
    DeadLetter,
    MediaRef,
    Prediction,
)

__all__ = [
    "COMMENT_SCHEMA",
    "DEAD_LETTER_SCHEMA",
    "PREDICTION_SCHEMA",
    "CommentEvent",
    "DeadLetter",
    "MediaRef",
    "Prediction",
]
