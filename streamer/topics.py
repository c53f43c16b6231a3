"""The topics the worker reads and writes. Values and keys stay raw bytes: validation is ours.

The app declares no topic (``topic_allow_declare=False`` in :mod:`streamer.app`): the deployment
creates them all, :func:`worker_topics` is the list (the compose topic job is checked against it).
Faust's one internal topic for this app is its leader-election topic,
``<app_id>-__assignor-__leader`` (one partition; ``faust/assignor/leader_assignor.py``): the
worker subscribes to it at start, and never writes to it. With ``store="memory://"`` and no
tables there are no changelog topics, and no repartition topics since no stream is re-keyed.
"""

from __future__ import annotations

import faust

from streamer.settings import Settings

__all__ = ["LEADER_TOPIC_SUFFIX", "input_topic", "leader_topic", "worker_topics"]

#: Faust names its leader-election topic ``<app_id>`` + this.
LEADER_TOPIC_SUFFIX = "-__assignor-__leader"


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


def leader_topic(settings: Settings) -> str:
    """Faust's leader-election topic of this app (one partition)."""
    return settings.app_id + LEADER_TOPIC_SUFFIX


def worker_topics(settings: Settings) -> dict[str, int]:
    """Every topic a worker needs, created beforehand, with its partition count."""
    n = settings.topic_partitions
    return {
        settings.input_topic: n,
        settings.predictions_topic: n,
        settings.dlq_topic: n,
        leader_topic(settings): 1,
    }
