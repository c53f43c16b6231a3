"""The topics the worker reads and writes. Values and keys stay raw bytes: validation is ours."""

from __future__ import annotations

import faust

from streamer.settings import Settings

__all__ = ["input_topic"]


def input_topic(app: faust.App, settings: Settings) -> faust.TopicT:
    """The comments topic; ``allow_empty`` so that tombstones reach the dead-letter topic."""
    return app.topic(
        settings.input_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )
