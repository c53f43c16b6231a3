"""The worker's Prometheus metrics, one :class:`PipelineMetrics` object per processor.

Every metric lives in the object's own :class:`~prometheus_client.CollectorRegistry` (never the
process-wide default), so two processors in one test process each count their own events. The
worker serves :meth:`PipelineMetrics.exposition` on ``/metrics`` of its web port.

Naming follows Prometheus conventions: base units (seconds, bytes, pixels), ``_total`` counters,
and only low-cardinality labels (outcome, dead-letter code, label, media type and error reason,
topic and partition): never a user id, comment id or URL. The README's "Metrics" section lists
them all.

Where each is counted: the batch processor counts events by outcome and predictions by label when
it has decided them, the media service counts fetches, cache hits and errors, the agent sets the
consumer lag from the fetch high-water mark (:class:`LagTracker`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "STAGES", "LagTracker", "PipelineMetrics"]

#: The stages of ``commentflow_stage_seconds``, in the order a comment passes them.
STAGES = (
    "fetch",
    "prepare",
    "media",
    "media_features",
    "queue",
    "model",
    "emit_wait",
    "publish",
    "redis",
    "ack_wait",
)

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKENS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144)
_PIXELS = (1e4, 1e5, 1e6, 4e6, 1.6e7, 6.4e7, 2.56e8)


class PipelineMetrics:
    """The metric families of one worker, registered in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        ns = "commentflow"
        self.events = Counter(
            "events",
            "Input messages handled, by outcome: predicted, dead_lettered or duplicate "
            "(already aggregated, skipped)",
            ["outcome"],
            namespace=ns,
            registry=r,
        )
        self.dead_letters = Counter(
            "dead_letters",
            "Messages dead-lettered, by error code",
            ["code"],
            namespace=ns,
            registry=r,
        )
        self.predictions = Counter(
            "predictions", "Predictions published, by label", ["label"], namespace=ns, registry=r
        )
        self.modalities = Counter(
            "prediction_modalities",
            "Predictions published, by modality the model used (one prediction counts once per "
            "modality)",
            ["modality"],
            namespace=ns,
            registry=r,
        )
        self.batches = Counter("batches", "Micro-batches finished", namespace=ns, registry=r)
        self.batch_size = Histogram(
            "batch_size_events",
            "Input messages per micro-batch",
            namespace=ns,
            registry=r,
            buckets=_BATCH,
        )
        self.batch_tokens = Histogram(
            "batch_tokens",
            "Estimated text tokens per classified batch (characters / 4)",
            namespace=ns,
            registry=r,
            buckets=_TOKENS,
        )
        self.batch_pixels = Histogram(
            "batch_pixels",
            "Decoded image pixels per classified batch",
            namespace=ns,
            registry=r,
            buckets=_PIXELS,
        )
        self.queue_wait = Histogram(
            "queue_wait_seconds",
            "Time a prepared batch waited for the model (between stage 1 and stage 2)",
            namespace=ns,
            registry=r,
            buckets=_SECONDS,
        )
        self.inference = Histogram(
            "inference_seconds",
            "Model time per batch (on the inference thread)",
            namespace=ns,
            registry=r,
            buckets=_SECONDS,
        )
        self.batch_duration = Histogram(
            "batch_duration_seconds",
            "Whole batch, from taking it off the stream to its Redis write",
            namespace=ns,
            registry=r,
            buckets=_SECONDS,
        )
        self.end_to_end = Histogram(
            "end_to_end_latency_seconds",
            "From the event's created_at (since=created_at) or the broker timestamp "
            "(since=broker) to its prediction acknowledged by the broker",
            ["since"],
            namespace=ns,
            registry=r,
            buckets=_LATENCY,
        )
        self.stage = Histogram(
            "stage_seconds",
            "Where a comment's time goes, per stage: fetch (broker timestamp to taken off the "
            "stream: producer, broker, fetch long-poll, batch assembly), prepare (validate, "
            "dedup lookup, media of the text lane), queue (waiting for the finisher), model, "
            "publish (until the broker's acks), redis, ack_wait (done, waiting behind an "
            "unfinished offset before its acknowledgement), media (the media lane: fetch and "
            "decode), media_features (OCR, speech recognition, image encoder, off the inference "
            "thread); observed once per batch, except fetch and ack_wait (per message)",
            ["stage"],
            namespace=ns,
            registry=r,
            buckets=_SECONDS,
        )
        self.entities = Counter(
            "entities",
            "Named entities in published predictions, by the modality they were read from",
            ["modality"],
            namespace=ns,
            registry=r,
        )
        self.entity_failures = Counter(
            "entity_failures",
            "Batches whose entity stage failed (their predictions went out without entities)",
            namespace=ns,
            registry=r,
        )
        self.media_items = Counter(
            "media_items", "Media items resolved, by type", ["type"], namespace=ns, registry=r
        )
        self.media_fetch = Histogram(
            "media_fetch_seconds",
            "Time to resolve one media item (cache, fetch with retries, decode), by type",
            ["type"],
            namespace=ns,
            registry=r,
            buckets=_SECONDS,
        )
        self.media_errors = Counter(
            "media_errors",
            "Media items that could not be used, by reason (timeout, http_404, ...)",
            ["reason"],
            namespace=ns,
            registry=r,
        )
        self.media_cache_hits = Counter(
            "media_cache_hits",
            "Media served without a download (by=url) or downloaded but decoded before "
            "(by=content)",
            ["by"],
            namespace=ns,
            registry=r,
        )
        self.redis_errors = Counter(
            "redis_errors",
            "Failed Redis calls (retried), by operation",
            ["operation"],
            namespace=ns,
            registry=r,
        )
        self.producer_errors = Counter(
            "producer_errors",
            "Messages the broker did not acknowledge (resent)",
            namespace=ns,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "consumer_lag_messages",
            "Messages in a partition not yet processed: fetch high-water mark minus the "
            "position after the last acknowledged event",
            ["topic", "partition"],
            namespace=ns,
            registry=r,
        )
        self.model_loaded = Gauge(
            "model_loaded", "1 once the model is loaded", namespace=ns, registry=r
        )
        self.model_failures = Counter(
            "model_failures",
            "Model calls that failed: kind=call (a predict() raised or returned invalid output), "
            "isolated (one comment failed alone: dead-lettered), unavailable (the model, not "
            "the input, is broken: the batch is retried, not dead-lettered)",
            ["kind"],
            namespace=ns,
            registry=r,
        )
        self.poison = Counter(
            "poison_messages",
            "Messages set aside because the worker died repeatedly with them in flight",
            namespace=ns,
            registry=r,
        )
        self.stalled = Gauge(
            "stalled",
            "1 while a stage retries: model (breaker open), redis, publish",
            ["stage"],
            namespace=ns,
            registry=r,
        )
        # Outcomes and known codes/labels exist from the start at 0: rate() works from the
        # first scrape and a dashboard sees every series.
        for outcome in ("predicted", "dead_lettered", "duplicate"):
            self.events.labels(outcome)
        for kind in ("call", "isolated", "unavailable"):
            self.model_failures.labels(kind)
        for stage in ("model", "redis", "publish"):
            self.stalled.labels(stage)
        for stage in STAGES:
            self.stage.labels(stage)

    def prime(self, labels: Iterable[str], codes: Iterable[str]) -> None:
        """Create the series of every label and dead-letter code at 0."""
        for label in labels:
            self.predictions.labels(label)
        for code in codes:
            self.dead_letters.labels(code)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (serve as :data:`CONTENT_TYPE_LATEST`)."""
        return generate_latest(self.registry)


class LagTracker:
    """Consumer lag per partition: high-water mark minus the next offset to process.

    :meth:`processed` is called for every acknowledged event; :meth:`update` is called
    periodically with the current assignment, each partition's fetch high-water mark (aiokafka's
    ``consumer.highwater(tp)``: ``None`` before the first fetch) and its fetch position (used only
    until this process acknowledged an event of that partition). ``end_offsets`` is not used: the
    embedded broker answers it wrongly when producers batch.
    """

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._next: dict[tuple[str, int], int] = {}
        self._shown: set[tuple[str, int]] = set()

    def processed(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        if offset + 1 > self._next.get(key, -1):
            self._next[key] = offset + 1

    def update(
        self,
        highwaters: Mapping[tuple[str, int], int | None],
        positions: Mapping[tuple[str, int], int | None] | None = None,
    ) -> dict[tuple[str, int], int]:
        """Set the gauge of every assigned partition (the keys of ``highwaters``); drop the
        partitions no longer assigned. Returns the lags set."""
        positions = positions or {}
        lags: dict[tuple[str, int], int] = {}
        for tp, hw in highwaters.items():
            position = self._next.get(tp)
            if position is None:
                position = positions.get(tp)
            if hw is None or position is None:
                continue
            lags[tp] = max(0, hw - position)
            self._gauge.labels(tp[0], str(tp[1])).set(lags[tp])
        for tp in self._shown - lags.keys():
            self._gauge.remove(tp[0], str(tp[1]))
        for tp in self._next.keys() - highwaters.keys():
            del self._next[tp]  # revoked: another worker moves it on now
        self._shown = set(lags)
        return lags
