"""The public contracts: comment events in, predictions and dead letters out.

These pydantic models are the single source of the contracts. ``python -m schemas.export`` writes
them as JSON Schema files under ``schemas/json/`` for producers and consumers in any language; a
test keeps the files in sync. The worker validates input against :class:`CommentEvent` once, at
the boundary; outputs are built as plain dicts on the hot path and checked against these models in
the tests.

Versioning: each document names its schema (``commentflow.comment/1`` ...). Adding optional fields
keeps the version; removing or retyping a field bumps it, and workers keep reading the old one
for a deprecation period.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "COMMENT_SCHEMA",
    "DEAD_LETTER_SCHEMA",
    "MAX_ENTITIES",
    "MAX_MEDIA_ITEMS",
    "MAX_METADATA_BYTES",
    "MAX_TEXT_CHARS",
    "MAX_YEAR",
    "MIN_YEAR",
    "PREDICTION_SCHEMA",
    "CommentEvent",
    "DeadLetter",
    "DeadLetterError",
    "DeadLetterSource",
    "EntityMention",
    "MediaError",
    "MediaRef",
    "ModelRef",
    "Prediction",
    "PredictionLanguage",
    "check_metadata",
]

COMMENT_SCHEMA = "commentflow.comment/1"
PREDICTION_SCHEMA = "commentflow.prediction/1"
DEAD_LETTER_SCHEMA = "commentflow.dead_letter/1"

MAX_TEXT_CHARS = 20_000
MAX_MEDIA_ITEMS = 8
MAX_URL_CHARS = 2_048
#: At most this many entities per prediction (the worker's entity stage keeps the first ones).
MAX_ENTITIES = 32
#: ``metadata`` may be at most this many bytes as compact JSON: it is copied into every output.
MAX_METADATA_BYTES = 16 * 1024
#: ``created_at`` must fall in these years (inclusive, UTC); anything else is a schema violation.
MIN_YEAR, MAX_YEAR = 1970, 2100

Identifier = Annotated[str, Field(min_length=1, max_length=128)]
Label = Literal["negative", "neutral", "positive"]
Modality = Literal["text", "image", "audio"]

_METADATA_DOC = (
    "the event's metadata object, passed through untouched: copied as it came into the "
    f"prediction and the dead letter; at most {MAX_METADATA_BYTES} bytes as compact JSON"
)


def check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` if it can be passed through: at most :data:`MAX_METADATA_BYTES` as compact
    JSON (over: error type ``too_long``, the ``too_large`` dead letter), and re-encodable (an
    integer beyond 64 bits is not: ``schema_violation``)."""
    try:
        size = len(orjson.dumps(value))
    except orjson.JSONEncodeError:
        raise PydanticCustomError(
            "metadata_not_encodable",
            "metadata holds a value that cannot be passed through (an integer beyond 64 bits)",
        ) from None
    if size > MAX_METADATA_BYTES:
        raise PydanticCustomError(
            "too_long",
            "metadata is {size} bytes as JSON, more than the {limit} allowed",
            {"size": size, "limit": MAX_METADATA_BYTES},
        )
    return value


class MediaRef(BaseModel):
    """One attached media item, fetched by the worker."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    type: Literal["image", "audio"]
    url: Annotated[
        str, Field(min_length=1, max_length=MAX_URL_CHARS, pattern=r"^[hH][tT][tT][pP][sS]?://")
    ]


class CommentEvent(BaseModel):
    """A comment as upstream services publish it to the input topic (key: the user id)."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        strict=True,
        title="commentflow.comment/1",
        json_schema_extra={"$id": "https://commentflow.dev/schemas/comment-1.json"},
    )

    schema_: Literal["commentflow.comment/1"] | None = Field(default=None, alias="schema")
    comment_id: Identifier
    user_id: Identifier
    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] = ""
    media: Annotated[list[MediaRef], Field(max_length=MAX_MEDIA_ITEMS)] = Field(
        default_factory=list
    )
    created_at: AwareDatetime = Field(
        description=f"RFC 3339 timestamp with a UTC offset, between the years {MIN_YEAR} and "
        f"{MAX_YEAR} once normalised to UTC (the worker keeps it in UTC)"
    )
    lang: Annotated[str, Field(max_length=35)] | None = None
    source: Annotated[str, Field(max_length=128)] | None = None
    metadata: dict[str, Any] | None = Field(default=None, description=_METADATA_DOC)

    @field_validator("metadata")
    @classmethod
    def _metadata_bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_metadata(value)

    @field_validator("created_at")
    @classmethod
    def _utc_in_range(cls, value: datetime) -> datetime:
        # Normalised here, once: an offset at the edge of the datetime range (9999-12-31T23:59
        # -01:00) cannot be represented in UTC, and must fail validation, not a later stage.
        try:
            utc = value.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValueError("created_at cannot be represented in UTC") from None
        if not MIN_YEAR <= utc.year <= MAX_YEAR:
            raise ValueError(f"created_at must be between the years {MIN_YEAR} and {MAX_YEAR}")
        return utc

    @model_validator(mode="after")
    def _text_or_media(self) -> CommentEvent:
        if not self.text.strip() and not self.media:
            raise ValueError("text may be empty only when media is present")
        return self


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str


class MediaError(BaseModel):
    """A media item that could not be used; the prediction was made without it."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="redacted: no query string, user info or fragment")
    type: Literal["image", "audio"]
    reason: str = Field(description="timeout, too_large, blocked_address, http_404, ...")


class PredictionLanguage(BaseModel):
    """The comment text's detected language, and whether the model was trained on it."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(
        description="ISO 639-1 code (en, zh, es ...), or und when it cannot be told (empty, "
        "emoji-only, too short, or the detector is unsure)"
    )
    score: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        description="the detector's confidence in code"
    )
    supported: bool = Field(
        description="false when code is confidently a language the model does not declare "
        "(und is always supported)"
    )


LowConfidenceReason = Literal["unsupported_language"]


class EntityMention(BaseModel):
    """One named entity the comment mentions: ``text`` is ``source[start:end]`` of the text of
    ``modality`` (the comment text; the OCR text of its pictures; its voice-note transcript)."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="the surface form as written (user text: escape it)")
    label: str = Field(
        description="the NER model's label: PERSON, NORP, FAC, ORG, GPE, LOC, PRODUCT, EVENT, "
        "WORK_OF_ART or LAW, or a label of the deployment's own entity patterns"
    )
    modality: Modality = Field(
        description="where it was read: text (the comment text), image (the OCR text of a "
        "picture), audio (the transcript of a voice note)"
    )
    start: Annotated[int, Field(ge=0)] = Field(
        description="character offset into that modality's text (the event's text for text)"
    )
    end: Annotated[int, Field(ge=0)]
    key: str = Field(
        description="the grouping form (case-folded, whitespace collapsed, possessive and "
        "plural s removed): iPhone, iphone's and IPHONE share the key iphone; the Redis entity "
        "aggregates count by it"
    )


class Prediction(BaseModel):
    """One prediction per comment, on the predictions topic (key: the user id)."""

    model_config = ConfigDict(
        extra="forbid",
        title="commentflow.prediction/1",
        json_schema_extra={"$id": "https://commentflow.dev/schemas/prediction-1.json"},
    )

    schema_: Literal["commentflow.prediction/1"] = Field(alias="schema")
    comment_id: Identifier
    user_id: Identifier
    label: Label
    scores: dict[Label, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        description="label -> probability; the values sum to 1"
    )
    modalities: list[Modality] = Field(description="the modalities the model actually used")
    media_errors: list[MediaError] = Field(default_factory=list)
    model: ModelRef
    created_at: str = Field(description="the event's created_at, normalised to UTC")
    processed_at: str = Field(description="RFC 3339 UTC time the prediction was made")
    language: PredictionLanguage | None = Field(
        default=None, description="absent when the model does not detect languages"
    )
    confidence: Literal["normal", "low"] = Field(
        default="normal",
        description="low: the label is a guess (see low_confidence_reasons); treat it as such",
    )
    low_confidence_reasons: list[LowConfidenceReason] = Field(
        default_factory=list,
        description="why confidence is low; unsupported_language: the comment is in a language "
        "the model was not trained and validated on",
    )
    entities: Annotated[list[EntityMention], Field(max_length=MAX_ENTITIES)] | None = Field(
        default=None,
        description="the named entities the comment mentions, in its text, pictures and voice "
        "notes (at most one per key, label and modality); absent when the worker runs without "
        "the entity stage, empty when it found none or could not read the language "
        "(entities_status)",
    )
    entities_status: Literal["ok", "unsupported_language", "failed"] | None = Field(
        default=None,
        description="ok: the entity stage read the comment; unsupported_language: the "
        "comment's language has no NER model, so entities is empty; failed: the stage failed "
        "on the comment's batch, so entities is empty (the prediction was not held back); "
        "absent with entities",
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description=_METADATA_DOC + "; absent when the event had none"
    )


class DeadLetterError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Literal[
        "invalid_encoding",
        "invalid_json",
        "too_large",
        "unsupported_schema",
        "schema_violation",
        "processing_failed",
        "poison",
    ]
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)


class DeadLetterSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    key: str | None = Field(description="the message key, UTF-8 text or base64 (see key_encoding)")
    key_encoding: Literal["utf-8", "base64"] | None = None


class DeadLetter(BaseModel):
    """An input that could not be processed, with why (dead-letter topic, key: the source key)."""

    model_config = ConfigDict(
        extra="forbid",
        title="commentflow.dead_letter/1",
        json_schema_extra={"$id": "https://commentflow.dev/schemas/dead_letter-1.json"},
    )

    schema_: Literal["commentflow.dead_letter/1"] = Field(alias="schema")
    error: DeadLetterError
    source: DeadLetterSource
    payload: str = Field(description="the original value: UTF-8 text, or base64 (payload_encoding)")
    payload_encoding: Literal["utf-8", "base64"]
    payload_bytes: int = Field(description="size of the original value in bytes")
    payload_truncated: bool = Field(
        description="true when only the first max_dead_letter_payload_bytes were kept"
    )
    failed_at: str
    metadata: dict[str, Any] | None = Field(
        default=None,
        description=_METADATA_DOC + "; present when the value was a JSON object whose metadata "
        "is an object within the bound, even if the rest of the event broke the contract",
    )
