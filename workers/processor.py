"""The per-batch logic of the stream: validate, skip what is done, classify, publish, aggregate.

:meth:`BatchProcessor.process` returns only when every message of the batch is handled: its
prediction or dead letter acknowledged by the broker and its Redis update written. The agent
acknowledges the batch's input offsets after that, and not before, so a crash at any point
redelivers the batch (at-least-once) and the idempotent Redis scripts keep the aggregates exact.

Order of one batch::

    raw messages ──parse──► valid events ──skip done (Redis MGET)──► model (inference thread)
         └──► dead letters                                              │
    publish predictions + dead letters, wait for broker acks ◄──────────┘
    apply Redis scripts (SET NX on comment_id / source offset, one pipeline)
    return ─► the agent acks the offsets

A comment already aggregated (a redelivery after the Redis write, or the same comment sent
again) is not published again: replays change nothing. The one window left is a crash after the
publish and before the Redis write: that batch's predictions appear twice on the output topic
(never in the aggregates). ``comment_id`` is the idempotency key for consumers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Protocol

import orjson
import redis.exceptions

from commentflow.errors import DeadLetterError, ProcessingFailed
from commentflow.settings import Settings
from model.base import ClassOutput, CommentInput
from schemas.events import PREDICTION_SCHEMA, CommentEvent
from workers.aggregates import AggregateStore, DeadLetterRecord, PredictionRecord
from workers.dead_letter import build_dead_letter, utc_now_iso
from workers.inference import InferenceRunner
from workers.media import MediaService
from workers.media_fetch import redact_url
from workers.messages import Inbound, Outbound
from workers.metrics import PipelineMetrics
from workers.redact import redact_text
from workers.retry import Backoff, retry_forever
from workers.validation import parse_event

__all__ = ["BatchProcessor", "BatchResult", "Prepared", "Publisher"]

log = logging.getLogger("commentflow.processor")

REDIS_RETRIABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    OSError,
)


class Publisher(Protocol):
    """Where predictions and dead letters go (the Faust producer in production)."""

    async def send(self, message: Outbound) -> Awaitable[object]:
        """Queue ``message``; the returned awaitable resolves once the broker acknowledged it."""
        ...


@dataclass(slots=True)
class BatchResult:
    """What one batch did; the agent folds these into its counters."""

    received: int = 0
    predicted: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    skipped_duplicates: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    inference_s: float = 0.0
    total_s: float = 0.0
    end_to_end_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Valid:
    message: Inbound
    event: CommentEvent


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch after stage 1: what to classify (with its decoded media) and what to dead-letter."""

    received: int
    todo: list[_Valid]
    inputs: list[CommentInput]
    media_errors: list[list[dict[str, str]]]
    bad: list[tuple[Inbound, DeadLetterError]]
    skipped_duplicates: int
    started: float
    prepared_at: float = 0.0  # perf_counter() at the end of stage 1 (queue wait starts)
    skipped_dead_letters: int = 0  # bad inputs already dead-lettered (a redelivery)


class BatchProcessor:
    """Plain, Faust-free batch processing; inject the runner, publisher and store."""

    def __init__(
        self,
        settings: Settings,
        runner: InferenceRunner,
        publisher: Publisher,
        store: AggregateStore,
        media: MediaService | None = None,
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self._s = settings
        self._runner = runner
        self._publisher = publisher
        self._store = store
        self._media = media
        self._backoff = Backoff(settings.retry_initial_s, settings.retry_max_s)
        self.metrics = metrics if metrics is not None else PipelineMetrics()

    async def process(self, batch: Sequence[Inbound]) -> BatchResult:
        """Handle ``batch`` completely (both stages); ack its input after this returns."""
        return await self.finish(await self.prepare(batch))

    async def prepare(self, batch: Sequence[Inbound]) -> Prepared:
        """Stage 1, no side effects: validate, skip what is done, fetch and decode media.

        The agent runs it for the next batch while :meth:`finish` runs for the current one.
        """
        started = time.perf_counter()
        valid, bad = self._parse(batch)
        done_comments, done_bad = await self._redis(
            lambda: self._store.already_done(
                [v.event.comment_id for v in valid], [_source_id(m) for m, _ in bad]
            ),
            "redis lookup",
        )
        todo = _first_unseen(valid, done_comments)
        n_bad = len(bad)
        bad = [b for b, done in zip(bad, done_bad, strict=True) if not done]
        inputs, media_errors = await self._resolve_media(todo)
        return Prepared(
            received=len(batch),
            todo=todo,
            inputs=inputs,
            media_errors=media_errors,
            bad=bad,
            skipped_duplicates=len(valid) - len(todo),
            started=started,
            prepared_at=time.perf_counter(),
            skipped_dead_letters=n_bad - len(bad),
        )

    async def finish(self, prepared: Prepared) -> BatchResult:
        """Stage 2: classify, publish (broker acks awaited), write Redis. Then ack the input."""
        result = BatchResult(
            received=prepared.received, skipped_duplicates=prepared.skipped_duplicates
        )
        bad = list(prepared.bad)
        t0 = time.perf_counter()
        m = self.metrics
        if prepared.prepared_at:
            m.queue_wait.observe(max(0.0, t0 - prepared.prepared_at))
        outputs, failed = await self._classify(prepared.todo, prepared.inputs)
        result.inference_s = time.perf_counter() - t0
        if prepared.todo:
            m.inference.observe(result.inference_s)
            m.batch_tokens.observe(sum(_estimated_tokens(i.text) for i in prepared.inputs))
            m.batch_pixels.observe(
                sum(img.shape[0] * img.shape[1] for i in prepared.inputs for img in i.images)
            )
        for item, error in failed:
            bad.append((item.message, error))
        processed_at = utc_now_iso()

        outbound: list[Outbound] = []
        records: list[PredictionRecord] = []
        model = {"name": self._runner.classifier.name, "version": self._runner.classifier.version}
        errors_of = dict(zip((id(v) for v in prepared.todo), prepared.media_errors, strict=True))
        for item, out in outputs:
            value, feed_item = self._prediction(
                item.event, out, errors_of[id(item)], model, processed_at
            )
            outbound.append(Outbound(self._s.predictions_topic, item.message.key, value))
            records.append(
                PredictionRecord(
                    item.event.comment_id, item.event.user_id, out.label, out.modalities, feed_item
                )
            )
            result.labels[out.label] = result.labels.get(out.label, 0) + 1
        dead: list[DeadLetterRecord] = []
        for message, error in bad:
            outbound.append(
                build_dead_letter(
                    message,
                    error,
                    dlq_topic=self._s.dlq_topic,
                    max_payload_bytes=self._s.max_dead_letter_payload_bytes,
                )
            )
            dead.append(DeadLetterRecord(_source_id(message), error.code))
            result.dead_lettered[error.code] = result.dead_lettered.get(error.code, 0) + 1

        await self._publish(outbound)
        now_ms = int(time.time() * 1000)
        for item, _ in outputs:
            m.end_to_end.labels("created_at").observe(
                max(0.0, now_ms / 1000 - item.event.created_at.timestamp())
            )
            if item.message.timestamp_ms:
                m.end_to_end.labels("broker").observe(
                    max(0.0, (now_ms - item.message.timestamp_ms) / 1000)
                )
        await self._redis(lambda: self._store.apply(records, dead, now_ms=now_ms), "redis update")
        result.predicted = len(records)
        for item, _ in outputs:
            result.end_to_end_ms.append(now_ms - item.event.created_at.timestamp() * 1000)
        result.total_s = time.perf_counter() - prepared.started
        self._count(prepared, result, [out for _, out in outputs])
        return result

    def _count(self, prepared: Prepared, result: BatchResult, outputs: list[ClassOutput]) -> None:
        """The batch's outcomes, counted once it is complete (published and aggregated)."""
        m = self.metrics
        m.batches.inc()
        m.batch_size.observe(prepared.received)
        m.batch_duration.observe(result.total_s)
        m.events.labels("predicted").inc(result.predicted)
        m.events.labels("dead_lettered").inc(sum(result.dead_lettered.values()))
        m.events.labels("duplicate").inc(
            prepared.skipped_duplicates + prepared.skipped_dead_letters
        )
        for code, n in result.dead_lettered.items():
            m.dead_letters.labels(code).inc(n)
        for label, n in result.labels.items():
            m.predictions.labels(label).inc(n)
        for out in outputs:
            for modality in out.modalities:
                m.modalities.labels(modality).inc()

    # -- steps ------------------------------------------------------------------------------

    def _parse(
        self, batch: Sequence[Inbound]
    ) -> tuple[list[_Valid], list[tuple[Inbound, DeadLetterError]]]:
        valid: list[_Valid] = []
        bad: list[tuple[Inbound, DeadLetterError]] = []
        for message in batch:
            try:
                valid.append(
                    _Valid(message, parse_event(message.value, max_bytes=self._s.max_event_bytes))
                )
            except DeadLetterError as exc:
                bad.append((message, exc))
        return valid, bad

    async def _resolve_media(
        self, items: list[_Valid]
    ) -> tuple[list[CommentInput], list[list[dict[str, str]]]]:
        """Fetch and decode every item's media concurrently; failures become ``media_errors``."""
        with_media = [i for i, v in enumerate(items) if v.event.media]
        inputs = [CommentInput(text=v.event.text) for v in items]
        errors: list[list[dict[str, str]]] = [[] for _ in items]
        if not with_media:
            return inputs, errors
        if self._media is None:
            self.metrics.media_errors.labels("media_disabled").inc(
                sum(len(items[i].event.media) for i in with_media)
            )
            for i in with_media:
                errors[i] = [
                    {"url": redact_url(m.url), "type": m.type, "reason": "media_disabled"}
                    for m in items[i].event.media
                ]
            return inputs, errors
        refs = [[{"type": m.type, "url": m.url} for m in items[i].event.media] for i in with_media]
        resolved = await self._media.resolve_batch(refs, timeout_s=self._s.media_timeout_s)
        for i, r in zip(with_media, resolved, strict=True):
            inputs[i] = CommentInput(items[i].event.text, tuple(r.images), tuple(r.audio))
            errors[i] = list(r.media_errors)
        return inputs, errors

    async def _classify(
        self, items: list[_Valid], inputs: list[CommentInput]
    ) -> tuple[list[tuple[_Valid, ClassOutput]], list[tuple[_Valid, DeadLetterError]]]:
        """Classify ``items``; if the batch fails, isolate the items that fail on their own."""
        if not items:
            return [], []
        try:
            outputs = await self._runner.predict(inputs)
            return list(zip(items, outputs, strict=True)), []
        except Exception:
            log.exception("inference failed for a batch of %d; retrying one by one", len(items))
        ok: list[tuple[_Valid, ClassOutput]] = []
        failed: list[tuple[_Valid, DeadLetterError]] = []
        for item, single in zip(items, inputs, strict=True):
            try:
                ok.append((item, (await self._runner.predict([single]))[0]))
            except Exception as exc:  # noqa: BLE001 - a poison comment must not stop the stream
                failed.append(
                    (
                        item,
                        ProcessingFailed(f"the model failed on this comment: {type(exc).__name__}"),
                    )
                )
        return ok, failed

    def _prediction(
        self,
        event: CommentEvent,
        out: ClassOutput,
        media_errors: list[dict[str, str]],
        model: dict[str, str],
        processed_at: str,
    ) -> tuple[bytes, bytes]:
        created_at = event.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        scores = {label: round(float(p), 6) for label, p in out.scores.items()}
        doc = {
            "schema": PREDICTION_SCHEMA,
            "comment_id": event.comment_id,
            "user_id": event.user_id,
            "label": out.label,
            "scores": scores,
            "modalities": list(out.modalities),
            "media_errors": media_errors,
            "model": model,
            "created_at": created_at,
            "processed_at": processed_at,
        }
        feed = {
            "comment_id": event.comment_id,
            "user_id": event.user_id,
            "label": out.label,
            "scores": scores,
            "modalities": list(out.modalities),
            "text": redact_text(event.text[: self._s.feed_text_chars]),
            "created_at": created_at,
            "processed_at": processed_at,
        }
        return orjson.dumps(doc), orjson.dumps(feed)

    async def _publish(self, messages: list[Outbound]) -> None:
        """Publish all ``messages`` and wait for the broker; resend only the ones that failed."""
        pending = messages
        attempt = 0
        while pending:
            futures: list[Awaitable[object]] = []
            for m in pending:  # sequential sends keep the per-partition order
                try:
                    futures.append(await self._publisher.send(m))
                except Exception as exc:  # noqa: BLE001 - resent below, with backoff
                    futures.append(_failed(exc))
            results = await asyncio.gather(*futures, return_exceptions=True)
            # a cancelled delivery (BaseException) is a failure too, never a success
            failed = [
                m for m, r in zip(pending, results, strict=True) if isinstance(r, BaseException)
            ]
            if not failed:
                return
            attempt += 1
            self.metrics.producer_errors.inc(len(failed))
            first = next(r for r in results if isinstance(r, BaseException))
            delay = self._backoff.delay(attempt)
            log.warning(
                "publish failed for %d of %d messages (%s), retry %d in %.2fs",
                len(failed),
                len(pending),
                type(first).__name__,
                attempt,
                delay,
            )
            pending = failed
            await asyncio.sleep(delay)

    async def _redis(self, op, what: str):  # type: ignore[no-untyped-def]
        errors = self.metrics.redis_errors.labels(what.removeprefix("redis "))
        return await retry_forever(
            op,
            what=what,
            retriable=REDIS_RETRIABLE,
            backoff=self._backoff,
            on_retry=lambda _exc: errors.inc(),
        )


def _failed(exc: Exception) -> asyncio.Future[object]:
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


def _estimated_tokens(text: str) -> int:
    # about 4 characters per token for English BPE/WordPiece; the exact count is the model's
    return (len(text) + 3) // 4


def _source_id(message: Inbound) -> str:
    return f"{message.topic}:{message.partition}:{message.offset}"


def _first_unseen(valid: list[_Valid], done: list[bool]) -> list[_Valid]:
    """Drop comments already aggregated, and repeats of one comment_id inside the batch."""
    seen: set[str] = set()
    todo = []
    for item, is_done in zip(valid, done, strict=True):
        cid = item.event.comment_id
        if is_done or cid in seen:
            continue
        seen.add(cid)
        todo.append(item)
    return todo
