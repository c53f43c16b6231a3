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

The entity stage (:mod:`workers.entities`, on its own thread) runs at the start of the output
half, :meth:`BatchProcessor.emit`, so that it overlaps the model on the next batch; its entities
go into the predictions and, grouped by key, into the Redis update.

Every output carries the worker's headers, the input's trace context continued (one span per
message: :mod:`workers.tracing`) and the allow-listed input headers (:mod:`workers.headers`);
predictions carry the event's ``metadata``, dead letters too when it could be read.

A comment already aggregated (a redelivery after the Redis write, or the same comment sent
again) is not published again: replays change nothing. The one window left is a crash after the
publish and before the Redis write: that batch's predictions appear twice on the output topic
(never in the aggregates). ``(user_id, comment_id)`` is the idempotency key for consumers.

Isolation: whatever goes wrong with ONE message (it does not validate, its media handling
raises, the model fails on it alone, its prediction cannot be built or is refused by the broker
for good) dead-letters that message with the stage and the exception type, and the rest of the
batch goes on. What goes wrong with the infrastructure (Redis, the broker, a model that fails on
everything: :mod:`workers.model_guard`) is retried with backoff and never dead-letters anything;
the stage is reported as stalled meanwhile (``/readyz``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from model.base import ClassOutput, CommentInput
from model.entities import EntityResult, EntitySource
from schemas.errors import DeadLetterError, Poison, ProcessingFailed
from schemas.events import DEAD_LETTER_SCHEMA, PREDICTION_SCHEMA, CommentEvent
from workers.aggregates import AggregateStore, DeadLetterRecord, PredictionRecord
from workers.config import ProcessorConfig
from workers.dead_letter import build_dead_letter, utc_now_iso
from workers.entities import EntityRunner
from workers.entity_aggregates import group_entities
from workers.headers import Header, HeaderPolicy
from workers.health import PipelineHealth
from workers.inference import InferenceRunner
from workers.media import MediaService
from workers.media_fetch import redact_url
from workers.messages import Inbound, Outbound
from workers.metrics import PipelineMetrics
from workers.model_guard import ModelGuard
from workers.prediction import model_ref, prediction_document
from workers.publish import Publisher, publish_all
from workers.redact import redact_text
from workers.retry import REDIS_RETRIABLE, Backoff, retry_forever
from workers.tracing import MessageSpan, MessageTracer
from workers.validation import metadata_of, parse_event

__all__ = [
    "REDIS_RETRIABLE",
    "BatchProcessor",
    "BatchResult",
    "Classified",
    "Prepared",
    "Publisher",
]

log = logging.getLogger("commentflow.processor")


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

    messages: tuple[Inbound, ...]  # every message of the batch: acknowledged after finish()
    received: int
    todo: list[_Valid]
    inputs: list[CommentInput]
    media_errors: list[list[dict[str, str]]]
    bad: list[tuple[Inbound, DeadLetterError]]
    skipped_duplicates: int
    started: float
    prepared_at: float = 0.0  # perf_counter() at the end of stage 1 (queue wait starts)
    skipped_dead_letters: int = 0  # bad inputs already dead-lettered (a redelivery)
    started_ns: int | None = None  # time.time_ns() at the start of stage 1 (trace spans)
    held: tuple[_Valid, ...] = ()  # comments with media, left to the media lane (prepare_held)


@dataclass(frozen=True, slots=True)
class Classified:
    """A batch after the model: what :meth:`BatchProcessor.emit` publishes and aggregates."""

    prepared: Prepared
    outputs: list[tuple[_Valid, ClassOutput]]
    failed: list[tuple[Inbound, DeadLetterError]]  # comments the model failed on alone
    inference_s: float
    at: float  # perf_counter() when the model was done (emit wait starts)


class BatchProcessor:
    """Plain, Faust-free batch processing; inject the runner, publisher and store."""

    def __init__(
        self,
        config: ProcessorConfig,
        runner: InferenceRunner,
        publisher: Publisher,
        store: AggregateStore,
        media: MediaService | None = None,
        metrics: PipelineMetrics | None = None,
        health: PipelineHealth | None = None,
        tracer: MessageTracer | None = None,
        entities: EntityRunner | None = None,
    ) -> None:
        self._s = config
        self._entities = entities
        self._header_policy = HeaderPolicy.parse(
            config.headers_allow,
            max_count=config.headers_max_count,
            max_bytes=config.headers_max_bytes,
        )
        self._tracer = tracer if tracer is not None else MessageTracer()
        self._runner = runner
        self._publisher = publisher
        self._store = store
        self._media = media
        self._backoff = Backoff(config.retry_initial_s, config.retry_max_s)
        self.metrics = metrics if metrics is not None else PipelineMetrics()
        self.health = health if health is not None else PipelineHealth()
        # (user_id, comment_id) of comments prepared and not yet finished: a copy that arrives in
        # the next batch (prepared while this one finishes, before Redis knows it) is skipped.
        self._in_flight: set[tuple[str, str]] = set()
        self.model = ModelGuard(
            runner,
            failure_ratio=config.model_failure_ratio,
            exit_after_s=config.model_failure_exit_s,
            backoff=Backoff(max(config.retry_initial_s, 0.01), max(config.retry_max_s, 0.05)),
            health=self.health,
            metrics=self.metrics,
        )

    async def process(self, batch: Sequence[Inbound]) -> BatchResult:
        """Handle ``batch`` completely (both stages); ack its input after this returns."""
        return await self.finish(await self.prepare(batch))

    async def prepare(
        self,
        batch: Sequence[Inbound],
        *,
        poison: Sequence[tuple[Inbound, int]] = (),
        hold_media: bool = False,
    ) -> Prepared:
        """Stage 1, no side effects: validate, skip what is done, fetch and decode media.

        ``poison``: messages the crash guard set aside (with how often the worker died on
        them): they are dead-lettered as ``poison`` without being looked at.
        ``hold_media``: comments with media are not resolved here but returned in ``held``
        (without their messages in ``messages``), for :meth:`prepare_held` in the media lane
        (:mod:`workers.media_lane`).
        The agent runs it for the next batch while :meth:`finish` runs for the current one.
        """
        started = time.perf_counter()
        started_ns = time.time_ns()
        valid, bad = self._parse(batch)
        bad += [
            (
                m,
                Poison(
                    f"the worker died {crashes} times while this message was in flight",
                    details=[{"stage": "crash_guard", "crashes": crashes}],
                ),
            )
            for m, crashes in poison
        ]
        self.metrics.poison.inc(len(poison))
        done_comments, done_bad = await self.redis_call(
            lambda: self._store.already_done(
                [(v.event.user_id, v.event.comment_id) for v in valid],
                [_source_id(m) for m, _ in bad],
            ),
            "redis lookup",
        )
        todo = _first_unseen(valid, done_comments, self._in_flight)
        n_bad = len(bad)
        bad = [b for b, done in zip(bad, done_bad, strict=True) if not done]
        held: tuple[_Valid, ...] = ()
        if hold_media:
            held = tuple(v for v in todo if v.event.media)
            todo = [v for v in todo if not v.event.media]
            self._in_flight.update(_key(v) for v in held)
        todo, inputs, media_errors, media_bad = await self._resolve_media(todo)
        bad += media_bad
        self._in_flight.update(_key(v) for v in todo)
        self.metrics.stage.labels("prepare").observe(time.perf_counter() - started)
        held_ids = {id(v.message) for v in held}
        messages = [m for m in (*batch, *(m for m, _ in poison)) if id(m) not in held_ids]
        return Prepared(
            # acknowledged in this order: offsets ascending within each partition
            messages=tuple(sorted(messages, key=_position)),
            received=len(messages),
            todo=todo,
            inputs=inputs,
            media_errors=media_errors,
            bad=bad,
            skipped_duplicates=len(valid) - len(todo),
            started=started,
            prepared_at=time.perf_counter(),
            skipped_dead_letters=n_bad - len(bad),
            started_ns=started_ns,
            held=held,
        )

    async def prepare_held(self, held: Sequence[_Valid]) -> Prepared:
        """Stage 1 of comments :meth:`prepare` held back for their media: fetch and decode."""
        started, started_ns = time.perf_counter(), time.time_ns()
        todo, inputs, media_errors, bad = await self._resolve_media(list(held))
        kept = {id(v) for v in todo}  # the others failed and were dead-lettered: not in flight
        self._in_flight.difference_update(_key(v) for v in held if id(v) not in kept)
        self.metrics.stage.labels("media").observe(time.perf_counter() - started)
        return Prepared(
            messages=tuple(sorted((v.message for v in held), key=_position)),
            received=len(held),
            todo=todo,
            inputs=inputs,
            media_errors=media_errors,
            bad=bad,
            skipped_duplicates=0,
            started=started,
            prepared_at=time.perf_counter(),
            started_ns=started_ns,
        )

    async def finish(self, prepared: Prepared) -> BatchResult:
        """Stage 2: classify, publish (broker acks awaited), write Redis. Then ack the input.

        Raises only for the infrastructure: :class:`~workers.model_guard.ModelFailed` (the
        worker must exit) or cancellation; nothing of the batch may be acknowledged then.
        """
        return await self.emit(await self.classify(prepared))

    async def classify(self, prepared: Prepared) -> Classified:
        """The model half of :meth:`finish` (the pipeline runs :meth:`emit` of the previous
        batch meanwhile, so the model is not idle while the broker and Redis answer)."""
        try:
            t0 = time.perf_counter()
            m = self.metrics
            if prepared.prepared_at:
                m.queue_wait.observe(max(0.0, t0 - prepared.prepared_at))
                m.stage.labels("queue").observe(max(0.0, t0 - prepared.prepared_at))
            outputs, failed = await self._classify(prepared.todo, prepared.inputs)
            inference_s = time.perf_counter() - t0
            if prepared.todo:
                m.inference.observe(inference_s)
                m.stage.labels("model").observe(inference_s)
                m.batch_tokens.observe(sum(_estimated_tokens(i.text) for i in prepared.inputs))
                m.batch_pixels.observe(
                    sum(img.shape[0] * img.shape[1] for i in prepared.inputs for img in i.images)
                )
        except BaseException:
            self._in_flight.difference_update(_key(v) for v in prepared.todo)
            raise
        return Classified(prepared, outputs, failed, inference_s, time.perf_counter())

    async def _recognise(
        self, outputs: list[tuple[_Valid, ClassOutput]]
    ) -> list[EntityResult] | None:
        """The entity stage on its own thread (:mod:`workers.entities`); None when it is off
        (the predictions then go out without the entity fields); status ``failed`` for every
        comment when it raised. It runs in :meth:`emit`, so in the pipeline it overlaps the
        model on the next batch."""
        if self._entities is None or not outputs:
            return None
        t0 = time.perf_counter()
        results = await self._entities.recognise(
            [
                EntitySource(item.event.text, out.ocr_text, out.transcript, out.language)
                for item, out in outputs
            ]
        )
        self.metrics.stage.labels("entities").observe(time.perf_counter() - t0)
        if results is None:
            self.metrics.entity_failures.inc()
            return [EntityResult("failed")] * len(outputs)
        return results

    async def emit(self, classified: Classified) -> BatchResult:
        """The output half of :meth:`finish`: publish (broker acks awaited), write Redis."""
        prepared = classified.prepared
        spans: list[MessageSpan] = []
        try:
            return await self._emit_traced(classified, spans)
        finally:
            self._in_flight.difference_update(_key(v) for v in prepared.todo)
            for span in spans:  # a batch given up (cancelled, Redis retried until shutdown)
                span.end("abandoned")

    async def _emit_traced(self, classified: Classified, spans: list[MessageSpan]) -> BatchResult:
        prepared, outputs = classified.prepared, classified.outputs
        result = BatchResult(
            received=prepared.received, skipped_duplicates=prepared.skipped_duplicates
        )
        result.inference_s = classified.inference_s
        m = self.metrics
        m.stage.labels("emit_wait").observe(max(0.0, time.perf_counter() - classified.at))
        bad = list(prepared.bad) + classified.failed
        found = await self._recognise(outputs)
        processed_at = utc_now_iso()

        # Each message's output is built on its own: one that cannot be built is dead-lettered.
        predicted: list[tuple[_Valid, ClassOutput, Outbound, PredictionRecord]] = []
        model = model_ref(self._runner.classifier)
        errors_of = dict(zip((id(v) for v in prepared.todo), prepared.media_errors, strict=True))
        for j, (item, out) in enumerate(outputs):
            ents = found[j] if found is not None else None
            try:
                value, feed_item = self._prediction(
                    item.event, out, errors_of[id(item)], model, processed_at, ents
                )
            except Exception as exc:  # noqa: BLE001 - this message fails, not the batch
                bad.append((item.message, _failed_at("build", exc)))
                continue
            record = PredictionRecord(
                item.event.comment_id,
                item.event.user_id,
                out.label,
                out.modalities,
                feed_item,
                group_entities(ents.entities) if ents is not None else (),
            )
            span = self._tracer.start(item.message, start_ns=prepared.started_ns)
            spans.append(span)
            headers = self._output_headers(item.message, span, PREDICTION_SCHEMA)
            outbound = Outbound(self._s.predictions_topic, item.message.key, value, headers)
            predicted.append((item, out, outbound, record))
        prediction_spans = spans[:]

        # Publish; a prediction the broker refuses for good becomes its input's dead letter.
        t_publish = time.perf_counter()
        refused = await self._publish([o for _, _, o, _ in predicted])
        if refused:
            for i in sorted(refused):
                bad.append((predicted[i][0].message, _failed_at("publish", refused[i])))
                prediction_spans[i].end("refused")
            predicted = [p for i, p in enumerate(predicted) if i not in refused]
        dead = await self._publish_dead_letters(bad, prepared.started_ns, spans)
        for code in (d.code for d in dead):
            result.dead_lettered[code] = result.dead_lettered.get(code, 0) + 1
        t_redis = time.perf_counter()
        m.stage.labels("publish").observe(t_redis - t_publish)

        now_ms = int(time.time() * 1000)
        for item, *_ in predicted:
            m.end_to_end.labels("created_at").observe(
                max(0.0, now_ms / 1000 - item.event.created_at.timestamp())
            )
            if item.message.timestamp_ms:
                m.end_to_end.labels("broker").observe(
                    max(0.0, (now_ms - item.message.timestamp_ms) / 1000)
                )
        records = [r for *_, r in predicted]
        await self.redis_call(
            lambda: self._store.apply(records, dead, now_ms=now_ms), "redis update"
        )
        m.stage.labels("redis").observe(time.perf_counter() - t_redis)
        result.predicted = len(records)
        for item, out, _, rec in predicted:
            result.labels[out.label] = result.labels.get(out.label, 0) + 1
            for ent in rec.entities:
                for modality in ent.modalities:
                    m.entities.labels(modality).inc()
            result.end_to_end_ms.append(now_ms - item.event.created_at.timestamp() * 1000)
        result.total_s = time.perf_counter() - prepared.started
        self._count(prepared, result, [out for _, out, _, _ in predicted])
        for span in prediction_spans:
            span.end("predicted")  # a no-op for the refused ones, ended above
        return result

    async def _publish_dead_letters(
        self,
        bad: list[tuple[Inbound, DeadLetterError]],
        started_ns: int | None = None,
        spans: list[MessageSpan] | None = None,
    ) -> list[DeadLetterRecord]:
        """Publish one dead letter per bad message; one refused for good is sent again without
        its payload and metadata, and if even that is refused, logged and counted (never
        silently lost). Each gets a span, appended to ``spans`` and ended once published."""
        started = [self._tracer.start(message, start_ns=started_ns) for message, _ in bad]
        if spans is not None:
            spans.extend(started)
        headers = [
            self._output_headers(message, span, DEAD_LETTER_SCHEMA, error.code)
            for (message, error), span in zip(bad, started, strict=True)
        ]
        letters = [
            self._dead_letter(message, error, headers=h)
            for (message, error), h in zip(bad, headers, strict=True)
        ]
        refused = await self._publish(letters)
        if refused:
            bare = {
                i: self._dead_letter(bad[i][0], bad[i][1], payload_bytes=0, headers=headers[i])
                for i in refused
            }
            still = await self._publish([bare[i] for i in sorted(bare)])
            for j, exc in still.items():
                message = bad[sorted(bare)[j]][0]
                self.metrics.producer_errors.inc()
                log.error(
                    "dead letter for %s refused by the broker (%s): not published",
                    _source_id(message),
                    type(exc).__name__,
                )
        for span, (_, error) in zip(started, bad, strict=True):
            span.end("dead_lettered", error.code)
        return [DeadLetterRecord(_source_id(message), error.code) for message, error in bad]

    def _dead_letter(
        self,
        message: Inbound,
        error: DeadLetterError,
        *,
        payload_bytes: int | None = None,
        headers: tuple[Header, ...] = (),
    ) -> Outbound:
        # Metadata: never read from a poison message (it is not looked at: parsing it may be
        # what kills the worker), nor kept in the resend of one refused for good (as small as
        # it gets, payload_bytes=0).
        metadata = (
            None
            if payload_bytes == 0 or error.code == Poison.code
            else metadata_of(message.value, max_bytes=self._s.max_event_bytes)
        )
        return build_dead_letter(
            message,
            error,
            dlq_topic=self._s.dlq_topic,
            max_payload_bytes=(
                self._s.max_dead_letter_payload_bytes if payload_bytes is None else payload_bytes
            ),
            headers=headers,
            metadata=metadata,
        )

    def _output_headers(
        self, message: Inbound, span: MessageSpan, schema: str, error_code: str | None = None
    ) -> tuple[Header, ...]:
        """The worker's own headers, the trace context, then the copied input headers."""
        own: tuple[Header, ...] = (
            ("content-type", b"application/json"),
            ("commentflow-schema", schema.encode()),
        )
        if error_code is not None:
            own += (("commentflow-error", error_code.encode()),)
        return own + span.headers + self._header_policy.copy(message.headers)

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
            except Exception as exc:  # noqa: BLE001 - a validator bug fails this message only
                log.exception("validation raised unexpectedly for %s", _source_id(message))
                bad.append((message, _failed_at("validate", exc)))
        return valid, bad

    async def _resolve_media(
        self, items: list[_Valid]
    ) -> tuple[
        list[_Valid],
        list[CommentInput],
        list[list[dict[str, str]]],
        list[tuple[Inbound, DeadLetterError]],
    ]:
        """Fetch and decode every item's media concurrently; failures become ``media_errors``.

        A media failure never fails its comment (it is classified without that item). Only an
        unexpected exception (a bug) for one comment dead-letters that comment.
        """
        with_media = [i for i, v in enumerate(items) if v.event.media]
        inputs = [CommentInput(text=v.event.text) for v in items]
        errors: list[list[dict[str, str]]] = [[] for _ in items]
        if not with_media:
            return items, inputs, errors, []
        if self._media is None:
            self.metrics.media_errors.labels("media_disabled").inc(
                sum(len(items[i].event.media) for i in with_media)
            )
            for i in with_media:
                errors[i] = [
                    {"url": redact_url(m.url), "type": m.type, "reason": "media_disabled"}
                    for m in items[i].event.media
                ]
            return items, inputs, errors, []
        refs = [[{"type": m.type, "url": m.url} for m in items[i].event.media] for i in with_media]
        resolved: list[Any]
        try:
            resolved = list(
                await self._media.resolve_batch(refs, timeout_s=self._s.media_timeout_s)
            )
        except Exception:  # noqa: BLE001 - find the comment(s) it was, one by one
            log.exception("media resolution failed for a batch; resolving comment by comment")
            resolved = []
            for r in refs:
                try:
                    resolved.append(await self._media.resolve(r))
                except Exception as exc:  # noqa: BLE001 - this comment only
                    resolved.append(exc)
        failed: set[int] = set()
        bad: list[tuple[Inbound, DeadLetterError]] = []
        for i, r in zip(with_media, resolved, strict=True):
            if isinstance(r, BaseException):
                failed.add(i)
                bad.append((items[i].message, _failed_at("media", r)))
                continue
            inputs[i] = CommentInput(items[i].event.text, tuple(r.images), tuple(r.audio))
            errors[i] = list(r.media_errors)
        if failed:
            keep = [i for i in range(len(items)) if i not in failed]
            return (
                [items[i] for i in keep],
                [inputs[i] for i in keep],
                [errors[i] for i in keep],
                bad,
            )
        return items, inputs, errors, bad

    async def _classify(
        self, items: list[_Valid], inputs: list[CommentInput]
    ) -> tuple[list[tuple[_Valid, ClassOutput]], list[tuple[Inbound, DeadLetterError]]]:
        """Classify ``items``; comments that fail on their own are isolated (bisection)."""
        if not items:
            return [], []
        outputs, failed = await self.model.classify(inputs)
        ok = [(item, out) for item, out in zip(items, outputs, strict=True) if out is not None]
        bad = [(items[i].message, _failed_at("model", exc)) for i, exc in sorted(failed.items())]
        return ok, bad

    def _prediction(
        self,
        event: CommentEvent,
        out: ClassOutput,
        media_errors: list[dict[str, str]],
        model: dict[str, str],
        processed_at: str,
        entities: EntityResult | None = None,
    ) -> tuple[bytes, bytes]:
        doc = prediction_document(
            event,
            out,
            model=model,
            processed_at=processed_at,
            media_errors=media_errors,
            entities=entities,
        )
        created_at, scores = doc["created_at"], doc["scores"]
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

    async def _publish(self, messages: list[Outbound]) -> dict[int, BaseException]:
        return await publish_all(
            self._publisher,
            messages,
            backoff=self._backoff,
            metrics=self.metrics,
            health=self.health,
        )

    async def redis_call(self, op, what: str):  # type: ignore[no-untyped-def]
        """Await ``op()``, retrying Redis trouble with backoff (the stage shows as stalled)."""
        errors = self.metrics.redis_errors.labels(what.removeprefix("redis "))

        def failed(exc: BaseException) -> None:
            errors.inc()
            self.health.stall("redis", type(exc).__name__)

        return await retry_forever(
            op,
            what=what,
            retriable=REDIS_RETRIABLE,
            backoff=self._backoff,
            on_retry=failed,
            on_success=lambda: self.health.recover("redis"),
        )


def _estimated_tokens(text: str) -> int:
    # about 4 characters per token for English BPE/WordPiece; the exact count is the model's
    return (len(text) + 3) // 4


def _failed_at(stage: str, exc: BaseException) -> ProcessingFailed:
    """The dead-letter error for one message that failed at ``stage`` (no exception text: it
    may quote the comment, and the dead letter already carries the payload)."""
    return ProcessingFailed(
        f"{stage} failed for this message: {type(exc).__name__}",
        details=[{"stage": stage, "exception": type(exc).__name__}],
    )


def _position(message: Inbound) -> tuple[str, int, int]:
    return message.topic, message.partition, message.offset


def _source_id(message: Inbound) -> str:
    return f"{message.topic}:{message.partition}:{message.offset}"


def _key(item: _Valid) -> tuple[str, str]:
    return item.event.user_id, item.event.comment_id


def _first_unseen(
    valid: list[_Valid], done: list[bool], in_flight: set[tuple[str, str]]
) -> list[_Valid]:
    """Drop comments already aggregated or in flight, and repeats of one (user, comment) inside
    the batch."""
    seen: set[tuple[str, str]] = set()
    todo = []
    for item, is_done in zip(valid, done, strict=True):
        key = _key(item)
        if is_done or key in seen or key in in_flight:
            continue
        seen.add(key)
        todo.append(item)
    return todo
