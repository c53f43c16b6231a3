"""Logging setup: human-readable text, or JSON lines for log collectors (``log_format``).

A JSON line is ``{"ts", "level", "logger", "message", "process"}`` plus ``"exc"`` (the
traceback) when there is one, and any ``extra={...}`` field whose name is in
:data:`EXTRA_FIELDS`. Nothing else from a record is copied: the code never logs comment text, user
ids or full URLs (only
:func:`workers.media_fetch.redact_url`), and the formatter does not add any.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["EXTRA_FIELDS", "JsonFormatter", "configure", "logging_config"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: ``extra=`` fields copied into a JSON line (low-cardinality, never personal data).
EXTRA_FIELDS = frozenset(
    {"topic", "partition", "batch_size", "duration_s", "code", "reason", "count", "rate"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for name in EXTRA_FIELDS:
            if name in record.__dict__:
                doc[name] = record.__dict__[name]
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        return orjson.dumps(doc, default=str).decode()


def logging_config(level: str, fmt: str) -> dict[str, Any] | None:
    """A :func:`logging.config.dictConfig` for ``fmt`` (``None`` for text: the default setup)."""
    if fmt != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
    }


def configure(level: str = "info", fmt: str = "text") -> None:
    """Set up the root logger of a command (the worker hands :func:`logging_config` to Faust)."""
    config = logging_config(level, fmt)
    if config is None:
        logging.basicConfig(level=level.upper(), format=TEXT_FORMAT, stream=sys.stderr, force=True)
    else:
        logging.config.dictConfig(config)
