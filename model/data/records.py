"""Rows of a data file as dicts: CSV, JSON lines, or Parquet (when pyarrow is installed).

One reader for every verb that takes ``--data FILE``: labelled loading
(:func:`model.data.text.load_labelled`) and offline scoring (``commentflow predict``) read the
same formats the same way. The format is the file's suffix: ``.jsonl``/``.ndjson``/``.json``
(one JSON object per line), ``.parquet``/``.pq``, anything else CSV (UTF-8, BOM tolerated).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["JSONL_SUFFIXES", "PARQUET_SUFFIXES", "read_records"]

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The file's rows, lazily, in file order.

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` (with the line number) for a
    JSON line that is not an object, ``ImportError`` with a hint for Parquet without pyarrow.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such data file: {p}")
    suffix = p.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _jsonl(p)
    if suffix in PARQUET_SUFFIXES:
        return _parquet(p)
    return _csv(p)


def _jsonl(p: Path) -> Iterator[dict[str, Any]]:
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p}:{n}: not JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{p}:{n}: a JSON object per line expected")
            yield rec


def _csv(p: Path) -> Iterator[dict[str, Any]]:
    with open(p, encoding="utf-8-sig", newline="") as f:
        yield from csv.DictReader(f)


def _parquet(p: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"{p}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    for batch in pq.ParquetFile(p).iter_batches():
        yield from batch.to_pylist()
