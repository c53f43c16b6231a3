"""The one error root of commentflow, the whole tree in one place (re-exported).

Every error the pipeline raises on purpose derives from :class:`CommentflowError` and says, by
class, what the worker does with it::

    CommentflowError
    ├── RetriableError            transient trouble: back off and try again,
    │   └── ModelUnavailable      never acknowledge the input meanwhile (workers.model_guard)
    ├── DeadLetterError           the input itself is bad: publish a dead letter with ``code``,
    │   ├── InvalidEncoding       acknowledge, keep running
    │   ├── InvalidJson
    │   ├── TooLarge
    │   ├── UnsupportedSchema
    │   ├── SchemaViolation
    │   ├── ProcessingFailed      one valid event failed alone (isolated by bisection)
    │   └── Poison                the worker died repeatedly with this event in flight
    ├── ModelError                a model directory that cannot be loaded: fatal at start-up
    │   ├── ModelFormatError
    │   └── UnsafeWeightsError    pickled weights, refused
    ├── StackError                the embedded dev/test stack (commentflow.stack) did not start
    └── MediaError                a media item that cannot be used (workers.address_policy):
                                  the comment is classified without it, listed in media_errors

Each class lives in the lowest layer that raises it (:mod:`schemas.errors`: the root, retriable
and dead-letter errors; :mod:`model.errors`; :mod:`workers.address_policy`: media;
:mod:`commentflow.processes`: the embedded stack); this module re-exports them for the application.
The dead-letter codes are part of the public contract (README, ``schemas/json``):
:data:`DEAD_LETTER_CODES` lists every one with its meaning.
"""

from __future__ import annotations

from model.errors import ModelError, ModelFormatError, UnsafeWeightsError
from schemas.errors import (
    DEAD_LETTER_CODES,
    CommentflowError,
    DeadLetterError,
    InvalidEncoding,
    InvalidJson,
    Poison,
    ProcessingFailed,
    RetriableError,
    SchemaViolation,
    TooLarge,
    UnsupportedSchema,
)

__all__ = [
    "DEAD_LETTER_CODES",
    "CommentflowError",
    "DeadLetterError",
    "InvalidEncoding",
    "InvalidJson",
    "ModelError",
    "ModelFormatError",
    "Poison",
    "ProcessingFailed",
    "RetriableError",
    "SchemaViolation",
    "TooLarge",
    "UnsafeWeightsError",
    "UnsupportedSchema",
]
