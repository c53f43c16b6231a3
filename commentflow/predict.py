"""Offline scoring: a data file in, one prediction per row out, as the predictions topic has it.

``commentflow predict --data FILE`` is for people who want the production model's answer on a
file (a sample, an audit, a labelling queue) without a broker. Each row goes through the
worker's own steps: the event contract (:func:`workers.validation.parse_event`, so a row the
worker would dead-letter is skipped here, with the reason on stderr), the classifier loaded by
:func:`model.load_classifier` (whose preprocessing is the served one), and
:func:`workers.prediction.prediction_document` (the topic's fields, checked against
:class:`schemas.events.Prediction` in the tests).

Rows (:func:`model.data.records.read_records`: CSV, JSON lines, Parquet with pyarrow):

- ``text``; ``comment_id`` (default ``row-<n>``), ``user_id`` (default ``offline``),
  ``created_at`` (default: now), and the other event fields when present (``metadata`` ...).
- ``image`` / ``audio``: the path of a LOCAL file, decoded like fetched media. Media is never
  fetched from the network here (no address policy, no size limits on the wire): a URL in these
  columns, or in an event's ``media`` list, is reported in ``media_errors`` with the worker's
  ``media_disabled`` reason and the comment is scored without it. A row needs a ``text`` (the
  contract allows an empty text only with ``media`` URLs, which are not fetched here).

Labels are not needed (``commentflow evaluate`` is the verb that compares with labels).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from model.base import Classifier, ClassOutput, CommentInput
from model.entities import EntityRecognizer, EntityResult, EntitySource
from schemas.errors import DeadLetterError
from schemas.events import CommentEvent
from workers.address_policy import MediaError
from workers.dead_letter import utc_now_iso
from workers.media_decode import DecodeConfig, decode_input
from workers.media_fetch import redact_url
from workers.prediction import model_ref, prediction_document
from workers.validation import parse_event

__all__ = [
    "MEDIA_COLUMNS",
    "Scored",
    "ScoringRow",
    "Skipped",
    "row_to_comment",
    "score_rows",
    "write_predictions",
]

#: Row fields holding the local path of one media item, by media type.
MEDIA_COLUMNS = ("image", "audio")
DEFAULT_USER = "offline"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A row that is not a valid event (the worker would dead-letter it)."""

    row: int  # 1-based, data rows only (a CSV header is not a row)
    code: str
    message: str


@dataclass(slots=True)
class Scored:
    """The outcome of :func:`score_rows`: how many predictions, and the rows skipped."""

    predictions: int = 0
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ScoringRow:
    """One valid row: the event as the worker would parse it, the model's input, and the media
    left out (``media_errors`` entries)."""

    row: int
    event: CommentEvent
    comment: CommentInput
    media_errors: list[dict[str, str]]


def row_to_comment(
    rec: dict[str, Any],
    row: int,
    *,
    now: str,
    max_event_bytes: int = 1 << 20,
    decode_config: DecodeConfig | None = None,
) -> ScoringRow:
    """Row ``row`` as the worker would see it; raises :class:`DeadLetterError` if invalid."""
    doc = {k: v for k, v in rec.items() if k not in MEDIA_COLUMNS and v is not None and v != ""}
    doc.setdefault("comment_id", f"row-{row}")
    doc.setdefault("user_id", DEFAULT_USER)
    doc.setdefault("created_at", now)
    event = parse_event(orjson.dumps(doc), max_bytes=max_event_bytes)
    errors = [
        {"url": redact_url(m.url), "type": m.type, "reason": "media_disabled"} for m in event.media
    ]
    images: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    for kind, out in (("image", images), ("audio", audio)):
        value = rec.get(kind)
        if not value:
            continue
        path = str(value)
        array, reason = _local_media(path, kind, decode_config or DecodeConfig())
        if array is not None:
            out.append(array)
        else:
            url = redact_url(path) if "://" in path else Path(path).name
            errors.append({"url": url, "type": kind, "reason": reason})
    return ScoringRow(row, event, CommentInput(event.text, tuple(images), tuple(audio)), errors)


def _local_media(path: str, kind: str, config: DecodeConfig) -> tuple[np.ndarray | None, str]:
    """The decoded local file at ``path``, or None and the ``media_errors`` reason."""
    if "://" in path:
        return None, "media_disabled"  # never fetched offline
    p = Path(path)
    if not p.is_file():
        return None, "not_found"
    try:
        return decode_input(p.read_bytes(), kind, config), ""
    except MediaError as exc:
        return None, exc.reason


def score_rows(
    classifier: Classifier,
    records: Iterable[dict[str, Any]],
    out: IO[bytes],
    *,
    batch_size: int = 64,
    progress: Callable[[int], object] | None = None,
    max_event_bytes: int = 1 << 20,
    decode_config: DecodeConfig | None = None,
    entities: EntityRecognizer | None = None,
) -> Scored:
    """Score ``records`` in batches of ``batch_size``; write one prediction per valid row to
    ``out`` (JSON lines, input order). ``progress(n)`` is called with the rows done per batch.
    ``entities``: the entity stage too (the predictions' ``entities``, as the worker's)."""
    result = Scored()
    model = model_ref(classifier)
    for batch, skipped, n_rows in _batches(records, batch_size, max_event_bytes, decode_config):
        result.skipped += skipped
        if batch:
            outputs = _predict_isolated(classifier, batch, result.skipped)
            found = _recognise(entities, batch, outputs)
            processed_at = utc_now_iso()
            for r, o, ents in zip(batch, outputs, found, strict=True):
                if o is None:
                    continue
                doc = prediction_document(
                    r.event,
                    o,
                    model=model,
                    processed_at=processed_at,
                    media_errors=r.media_errors,
                    entities=ents,
                )
                out.write(orjson.dumps(doc) + b"\n")
                result.predictions += 1
        if progress is not None:
            progress(n_rows)
    return result


def _recognise(
    entities: EntityRecognizer | None,
    batch: list[ScoringRow],
    outputs: Sequence[ClassOutput | None],
) -> list[EntityResult | None]:
    if entities is None:
        return [None] * len(batch)
    kept = [(r, o) for r, o in zip(batch, outputs, strict=True) if o is not None]
    results = iter(
        entities.recognise(
            [EntitySource(r.event.text, o.ocr_text, o.transcript, o.language) for r, o in kept]
        )
    )
    return [None if o is None else next(results) for o in outputs]


def _predict_isolated(
    classifier: Classifier, batch: list[ScoringRow], skipped: list[Skipped]
) -> Sequence[ClassOutput | None]:
    """The batch's outputs; when the model raises on the batch, row by row, and a row it raises
    on alone is skipped (``processing_failed``, as the worker dead-letters it)."""
    try:
        return classifier.predict([r.comment for r in batch])
    except Exception:  # noqa: BLE001 - find the row(s) it was
        outputs: list[ClassOutput | None] = []
        for r in batch:
            try:
                outputs.append(classifier.predict([r.comment])[0])
            except Exception as exc:  # noqa: BLE001 - this row only
                skipped.append(Skipped(r.row, "processing_failed", type(exc).__name__))
                outputs.append(None)
        return outputs


def _batches(
    records: Iterable[dict[str, Any]],
    size: int,
    max_event_bytes: int,
    decode_config: DecodeConfig | None,
) -> Iterator[tuple[list[ScoringRow], list[Skipped], int]]:
    now = utc_now_iso()
    batch: list[ScoringRow] = []
    skipped: list[Skipped] = []
    n_rows = 0
    for n, rec in enumerate(records, start=1):
        n_rows += 1
        try:
            batch.append(
                row_to_comment(
                    rec, n, now=now, max_event_bytes=max_event_bytes, decode_config=decode_config
                )
            )
        except DeadLetterError as exc:
            skipped.append(Skipped(n, exc.code, exc.message))
        if len(batch) >= size:
            yield batch, skipped, n_rows
            batch, skipped, n_rows = [], [], 0
    if batch or skipped or n_rows:
        yield batch, skipped, n_rows


def write_predictions(
    classifier: Classifier,
    data: str | Path,
    out: IO[bytes],
    *,
    batch_size: int = 64,
    show_progress: bool = True,
    max_event_bytes: int = 1 << 20,
    decode_config: DecodeConfig | None = None,
    entities: EntityRecognizer | None = None,
) -> Scored:
    """Score the file ``data`` into ``out`` with a progress bar on stderr; skipped rows are
    reported on stderr, one line each (row number, code, message: never the row's text)."""
    from tqdm.auto import tqdm

    from model.data.records import read_records

    records = list(read_records(data))  # the total for the bar; files for one machine
    with tqdm(
        total=len(records), unit="row", desc="predict", file=sys.stderr, disable=not show_progress
    ) as bar:
        result = score_rows(
            classifier,
            records,
            out,
            batch_size=batch_size,
            progress=bar.update,
            max_event_bytes=max_event_bytes,
            decode_config=decode_config,
            entities=entities,
        )
    for s in sorted(result.skipped, key=lambda s: s.row):
        print(f"commentflow predict: row {s.row} skipped ({s.code}): {s.message}", file=sys.stderr)
    return result
