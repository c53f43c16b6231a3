"""The error root of commentflow, and the dead-letter errors (their codes are a contract).

The lowest layer holds the root so that every layer can derive from it (layers point down:
commentflow -> streamer -> workers -> model -> schemas). The whole tree, with the errors of the
other layers, is drawn in :mod:`commentflow.errors`, which re-exports it.

The dead-letter codes are part of the public contract (README, ``schemas/json``):
:data:`DEAD_LETTER_CODES` lists every one with its meaning.
"""

from __future__ import annotations

__all__ = [
    "DEAD_LETTER_CODES",
    "CommentflowError",
    "DeadLetterError",
    "InvalidEncoding",
    "InvalidJson",
    "Poison",
    "ProcessingFailed",
    "RetriableError",
    "SchemaViolation",
    "TooLarge",
    "UnsupportedSchema",
]

#: Every ``error.code`` a dead letter can carry, with its meaning (documented in the README).
DEAD_LETTER_CODES: dict[str, str] = {
    "invalid_encoding": "the message value is not valid UTF-8",
    "invalid_json": "the message value is not a JSON document",
    "too_large": "the message, or one of its fields, is over its size limit",
    "unsupported_schema": "the event names a schema version this worker does not read",
    "schema_violation": "valid JSON that breaks the comment contract (missing field, wrong type)",
    "processing_failed": "a valid event that failed on its own while it was processed "
    "(details: the stage and the exception type)",
    "poison": "the worker died (crashed, killed, hung) repeatedly while this message was in "
    "flight; it is set aside instead of being processed again",
}


class CommentflowError(Exception):
    """Root of every error commentflow raises on purpose."""

    retriable: bool = False


class RetriableError(CommentflowError):
    """Transient trouble outside the event (broker, Redis): retry with backoff, never drop."""

    retriable = True


class DeadLetterError(CommentflowError):
    """The input is bad for good: it goes to the dead-letter topic with :attr:`code`."""

    code: str = "schema_violation"

    def __init__(self, message: str, *, details: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidEncoding(DeadLetterError):
    code = "invalid_encoding"


class InvalidJson(DeadLetterError):
    code = "invalid_json"


class TooLarge(DeadLetterError):
    code = "too_large"


class UnsupportedSchema(DeadLetterError):
    code = "unsupported_schema"


class SchemaViolation(DeadLetterError):
    code = "schema_violation"


class ProcessingFailed(DeadLetterError):
    code = "processing_failed"


class Poison(DeadLetterError):
    code = "poison"
