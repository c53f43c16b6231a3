"""Featurisation of a data set: the live extractor run over a ``data/multimodal/*.jsonl`` file.

:func:`extract_dataset` runs the extractor over a ``data/multimodal/*.jsonl`` file and writes one
``.npz`` (see :func:`load_features` for its layout). OCR texts, transcripts and image embeddings
are cached per media file in ``cache_dir/media.sqlite`` under the sha256 of the file's bytes,
the identity of the model that made them and the preprocessing fingerprint, so repeated media and
re-runs cost nothing but hashing (and audio decoding, for the log-mel, which is cheap).

Media files are decoded exactly as the worker decodes fetched media:
:func:`model.media.decode.decode_input` with the extractor's
:attr:`~model.serving.features.FeatureExtractor.decode_config` (images shrunk to
``image_max_side``, audio resampled by the shared polyphase resampler and put on the 16-bit grid),
recorded in the ``.npz`` meta (``preprocess``) and, by training, in the model's ``config.json``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from model.base import LABELS
from model.media.decode import DecodeConfig, decode_input
from model.media.errors import MediaDecodeError
from model.serving.features import PRESENCE, FeatureExtractor
from model.serving.preprocess import FeatureError

__all__ = [
    "FORMAT_VERSION",
    "FeatureError",
    "FeatureSet",
    "MediaCache",
    "extract_dataset",
    "extract_features",
    "features_for",
    "is_multimodal_data",
    "load_features",
]

log = logging.getLogger(__name__)

#: Version of the ``.npz`` layout :func:`extract_dataset` writes.
FORMAT_VERSION = 1

# --------------------------------------------------------------------------- media cache


class MediaCache:
    """Per-media results keyed by ``(kind, model identity, sha256 of the file bytes)``.

    One SQLite file (``cache_dir/media.sqlite``): atomic writes, safe to interrupt, shared by
    every split and every re-run. ``kind`` is ``image`` (an embedding, float32 bytes), ``ocr`` or
    ``asr`` (text).
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "media.sqlite"
        self.db = sqlite3.connect(self.path)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS media (ns TEXT NOT NULL, key TEXT NOT NULL,"
            " value BLOB NOT NULL, PRIMARY KEY (ns, key))"
        )
        self.db.commit()

    @staticmethod
    def namespace(kind: str, identity: str) -> str:
        return f"{kind}:{hashlib.sha256(identity.encode()).hexdigest()[:16]}"

    def get_many(self, ns: str, keys: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        uniq = list(dict.fromkeys(keys))
        for s in range(0, len(uniq), 500):  # SQLite's bound-parameter limit
            part = uniq[s : s + 500]
            marks = ",".join("?" * len(part))
            # Only '?' placeholders are formatted into the query, never a value.
            query = f"SELECT key, value FROM media WHERE ns = ? AND key IN ({marks})"  # noqa: S608
            rows = self.db.execute(query, (ns, *part))
            out.update({k: bytes(v) for k, v in rows})
        return out

    def put_many(self, ns: str, items: dict[str, bytes]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO media (ns, key, value) VALUES (?, ?, ?)",
                [(ns, k, sqlite3.Binary(v)) for k, v in items.items()],
            )

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> MediaCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- data set


@dataclass(frozen=True, slots=True)
class _Row:
    id: str
    label: str
    kind: str
    text: str
    image: Path | None
    audio: Path | None


def _kind(text: str, image: object, audio: object) -> str:
    """Which modalities an item carries, when its file does not say."""
    media = "image" if image else "audio" if audio else ""
    if not media:
        return "text"
    return f"text_{media}" if text.strip() else f"{media}_only"


def _items(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line or row number, item dict)`` of a .jsonl or .csv file."""
    with path.open(encoding="utf-8", newline="") as f:
        if path.suffix.lower() == ".csv":
            for n, d in enumerate(csv.DictReader(f), 2):
                yield n, {k: v for k, v in d.items() if k is not None}
            return
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FeatureError(f"{path}:{n}: bad item: {exc}") from exc
            if not isinstance(d, dict):
                raise FeatureError(f"{path}:{n}: bad item: not a JSON object")
            yield n, d


def _read_rows(path: Path) -> list[_Row]:
    """Items of a .jsonl (``commentflow build-data``'s) or .csv file: ``text``, ``label``,
    optional ``image`` / ``audio`` paths relative to the file's folder, optional ``id`` (default:
    file name + line) and ``kind`` (default: from which fields are filled)."""
    rows = []
    base = path.parent
    for n, d in _items(path):
        try:
            text = str(d.get("text") or "")
            rows.append(
                _Row(
                    id=str(d.get("id") or f"{path.stem}-{n}"),
                    label=str(d.get("label") or ""),
                    kind=str(d.get("kind") or _kind(text, d.get("image"), d.get("audio"))),
                    text=text,
                    image=base / d["image"] if d.get("image") else None,
                    audio=base / d["audio"] if d.get("audio") else None,
                )
            )
        except (KeyError, TypeError) as exc:
            raise FeatureError(f"{path}:{n}: bad item: {exc}") from exc
    return rows


def is_multimodal_data(spec: str | os.PathLike[str]) -> bool:
    """A features ``.npz``, or a .jsonl / .csv whose first item has an ``image`` or ``audio``
    field (filled or not): data for :func:`extract_dataset`, not for the text-only loader."""
    path = Path(spec)
    if path.suffix == ".npz":
        return True
    if path.suffix.lower() not in (".jsonl", ".csv") or not path.is_file():
        return False
    try:
        first = next(_items(path), (0, {}))[1]
    except (FeatureError, UnicodeDecodeError):
        return False
    return "image" in first or "audio" in first


def features_for(
    data: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] = ".cache/mm",
    *,
    limit: int | None = None,
    progress: bool = True,
    extractor: FeatureExtractor | None = None,
) -> Path:
    """The features ``.npz`` of ``data``: itself if it is one, else extracted once into
    ``cache_dir`` (keyed by the file's path, size, mtime, ``limit`` and the preprocessing
    fingerprint; media cached by content in ``cache_dir/media``)."""
    src = Path(data)
    if src.suffix == ".npz":
        return src
    st = src.stat()
    decode = extractor.decode_config if extractor is not None else DecodeConfig()
    key = hashlib.sha256(
        f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}|{limit}|{decode.fingerprint()}".encode()
    ).hexdigest()[:16]
    npz = Path(cache_dir) / f"{src.stem}-{key}.npz"
    if not npz.is_file():
        extract_dataset(
            src,
            npz,
            cache_dir=Path(cache_dir) / "media",
            progress=progress,
            limit=limit,
            extractor=extractor,
        )
    return npz


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FeatureError(f"cannot read media file {path}: {exc}") from exc


def _decode(data: bytes, kind: str, path: Path, config: DecodeConfig) -> np.ndarray:
    """``data`` as the worker decodes it (:func:`~model.media.decode.decode_input`)."""
    try:
        return decode_input(data, kind, config)
    except MediaDecodeError as exc:
        raise FeatureError(f"cannot decode {kind} {path}: {exc}") from exc


def _batches(rows: Sequence[_Row], size: int) -> Iterator[Sequence[_Row]]:
    for s in range(0, len(rows), size):
        yield rows[s : s + size]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _CachedMedia:
    """Runs the image encoder, OCR and ASR only on media the cache does not hold yet.

    Namespaces carry the decoding fingerprint too: results on media decoded another way (full-size
    images before the decoder was shared, another ``image_max_side``) are never reused.
    """

    def __init__(self, extractor: FeatureExtractor, cache: MediaCache) -> None:
        self.x = extractor
        self.cache = cache
        self.decode = extractor.decode_config
        pre = self.decode.fingerprint()
        self.ns_image = cache.namespace("image", f"{extractor.image_encoder.identity}|{pre}")
        self.ns_ocr = cache.namespace("ocr", f"{extractor.ocr.identity}|{pre}")
        self.ns_asr = cache.namespace("asr", f"{extractor.asr.identity}|{pre}")
        self.hits = 0
        self.misses = 0

    def images(self, paths: dict[str, Path], blobs: dict[str, bytes]) -> dict[str, tuple]:
        """``sha -> (embedding (Di,) float32, OCR text)``; embedding and OCR are cached apart,
        so changing one model (an OCR setting, say) recomputes only its half."""
        keys = list(paths)
        vecs = self.cache.get_many(self.ns_image, keys)
        texts = self.cache.get_many(self.ns_ocr, keys)
        need_v = [k for k in keys if k not in vecs]
        need_t = [k for k in keys if k not in texts]
        todo = list(dict.fromkeys(need_v + need_t))
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        arrays = {k: _decode(blobs[k], "image", paths[k], self.decode) for k in todo}
        if need_v:
            new_v = np.asarray(self.x.image_encoder.encode([arrays[k] for k in need_v]))
            put_v = {k: new_v[i].astype(np.float32).tobytes() for i, k in enumerate(need_v)}
            self.cache.put_many(self.ns_image, put_v)
            vecs.update(put_v)
        if need_t:
            new_t = self.x.ocr.read([arrays[k] for k in need_t])
            put_t = {k: t.encode() for k, t in zip(need_t, new_t, strict=True)}
            self.cache.put_many(self.ns_ocr, put_t)
            texts.update(put_t)
        return {k: (np.frombuffer(vecs[k], np.float32), texts[k].decode()) for k in keys}

    def transcripts(self, waves: dict[str, np.ndarray]) -> dict[str, str]:
        keys = list(waves)
        got = self.cache.get_many(self.ns_asr, keys)
        todo = [k for k in keys if k not in got]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            new = self.x.asr.transcribe([waves[k] for k in todo])
            put = {k: t.encode() for k, t in zip(todo, new, strict=True)}
            self.cache.put_many(self.ns_asr, put)
            got.update(put)
        return {k: got[k].decode() for k in keys}


def extract_dataset(
    jsonl_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    batch_size: int = 32,
    cache_dir: str | os.PathLike[str] = ".cache/mm/media",
    *,
    extractor: FeatureExtractor | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> dict[str, object]:
    """Extract :class:`Features` for every item of ``jsonl_path`` into one ``.npz`` at ``out_path``.

    Media paths are relative to the jsonl's folder. Returns a summary (counts, timings, cache
    hits). The file is written atomically (temporary name, then rename). Blocking.
    """
    src = Path(jsonl_path)
    out = Path(out_path)
    rows = _read_rows(src)[:limit]
    if not rows:
        raise FeatureError(f"{src} has no items")
    x = extractor or FeatureExtractor.default()
    decode = x.decode_config
    t0 = time.perf_counter()
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("text", "image", "ocr", "speech")}
    present, mels, ocr_texts, transcripts = [], [], [], []
    with MediaCache(cache_dir) as cache:
        media = _CachedMedia(x, cache)
        bar = tqdm(total=len(rows), desc=f"features {src.name}", unit="item", disable=not progress)
        for batch in _batches(rows, batch_size):
            img_paths: dict[str, Path] = {}
            img_blobs: dict[str, bytes] = {}
            img_keys, aud_keys = [], []
            waves: dict[str, np.ndarray] = {}
            for r in batch:
                key = None
                if r.image is not None:
                    data = _read_bytes(r.image)
                    key = _sha(data)
                    img_paths.setdefault(key, r.image)
                    img_blobs.setdefault(key, data)
                img_keys.append(key)
                key = None
                if r.audio is not None:
                    data = _read_bytes(r.audio)
                    key = _sha(data)
                    if key not in waves:
                        waves[key] = _decode(data, "audio", r.audio, decode)
                aud_keys.append(key)
            img_res = media.images(img_paths, img_blobs) if img_paths else {}
            asr_res = media.transcripts(waves) if waves else {}
            feats = x.assemble(
                [r.text for r in batch],
                [
                    img_res[k][0][None, :] if k else np.zeros((0, x.image_dim), np.float32)
                    for k in img_keys
                ],
                [[img_res[k][1]] if k else [] for k in img_keys],
                [[asr_res[k]] if k else [] for k in aud_keys],
                [(waves[k],) if k else () for k in aud_keys],
            )
            for name in cols:
                cols[name].append(getattr(feats, name).astype(np.float16))
            present.append(feats.present)
            mels.extend(
                feats.mel[i, : feats.mel_lengths[i]].astype(np.float16) for i in range(len(batch))
            )
            ocr_texts.extend(feats.ocr_texts)
            transcripts.extend(feats.transcripts)
            bar.update(len(batch))
            bar.set_postfix(cache_hits=media.hits, computed=media.misses, refresh=False)
        bar.close()

    lengths = np.array([len(m) for m in mels], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n_mels = x.mel_config.n_mels
    label_ids = np.array([LABELS.index(r.label) if r.label in LABELS else -1 for r in rows])
    elapsed = time.perf_counter() - t0
    meta = {
        "format_version": FORMAT_VERSION,
        "source": str(src),
        "items": len(rows),
        "presence": list(PRESENCE),
        "labels": list(LABELS),
        "mel": x.mel_config.to_json(),
        "preprocess": decode.preprocess(),
        "models": x.identities(),
        "seconds": round(elapsed, 1),
    }
    arrays = {
        "ids": np.array([r.id for r in rows]),
        "labels": np.array([r.label for r in rows]),
        "label_ids": label_ids.astype(np.int64),
        "kinds": np.array([r.kind for r in rows]),
        **{k: np.concatenate(v) for k, v in cols.items()},
        "present": np.concatenate(present),
        "mel": np.concatenate(mels) if mels else np.zeros((0, n_mels), np.float16),
        "mel_offsets": offsets,
        "ocr_texts": np.array(ocr_texts, dtype=str),
        "transcripts": np.array(transcripts, dtype=str),
        "meta": np.array(json.dumps(meta, sort_keys=True)),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, out)
    summary = {
        **meta,
        "out": str(out),
        "cache_hits": media.hits,
        "computed": media.misses,
        "present": dict(
            zip(PRESENCE, arrays["present"].sum(axis=0).astype(int).tolist(), strict=True)
        ),
    }
    log.info("wrote %s: %s", out, summary)
    return summary


# --------------------------------------------------------------------------- reading back


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """A data set's features as :func:`extract_dataset` wrote them (embeddings as float16)."""

    ids: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) str
    label_ids: np.ndarray  # (N,) int64, index in LABELS (-1: unknown)
    kinds: np.ndarray  # (N,) str
    text: np.ndarray  # (N, Dt)
    image: np.ndarray  # (N, Di)
    ocr: np.ndarray  # (N, Dt)
    speech: np.ndarray  # (N, Dt)
    present: np.ndarray  # (N, 5) bool
    mel: np.ndarray  # (sum of frames, n_mels) float16, item i at mel_offsets[i]:mel_offsets[i+1]
    mel_offsets: np.ndarray  # (N + 1,) int64
    ocr_texts: np.ndarray  # (N,) str
    transcripts: np.ndarray  # (N,) str
    meta: dict[str, object]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def mel_lengths(self) -> np.ndarray:
        return np.diff(self.mel_offsets)  # (N,)

    def mel_batch(self, index: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log-mel of items ``index`` padded to their longest: ``(B, T, M)`` float32, ``(B,)``."""
        idx = np.asarray(index, dtype=np.int64)
        lengths = self.mel_lengths[idx]
        t_max = max(1, int(lengths.max()) if len(idx) else 1)
        out = np.full((len(idx), t_max, self.mel.shape[1]), np.log(1e-6), np.float32)
        for b, i in enumerate(idx):
            s, e = self.mel_offsets[i], self.mel_offsets[i + 1]
            out[b, : e - s] = self.mel[s:e]
        return out, lengths


def load_features(path: str | os.PathLike[str]) -> FeatureSet:
    """Read a features ``.npz`` written by :func:`extract_dataset`."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("format_version") != FORMAT_VERSION:
            raise FeatureError(
                f"{path}: features format {meta.get('format_version')}, expected {FORMAT_VERSION}"
            )
        fields = {k: z[k] for k in z.files if k != "meta"}
    return FeatureSet(meta=meta, **fields)


def extract_features(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    batch_size: int = 32,
    cache_dir: str | os.PathLike[str] = ".cache/mm/media",
    device: str = "auto",
    threads: int = 2,
    limit: int | None = None,
    progress: bool = True,
    text_model: str | os.PathLike[str] | None = None,
) -> dict[str, object]:
    """``commentflow features``: extract one split's features with the real encoders; the text
    encoder is ``text_model``'s (its config.json ``text_encoder``) when given, else MiniLM."""
    torch.set_num_threads(max(1, threads))
    text = None
    if text_model is not None:
        from model.format.directory import read_config

        text = read_config(Path(text_model))["text_encoder"]
    extractor = FeatureExtractor.default(device=device, threads=threads, text=text)
    return extract_dataset(
        data,
        out,
        batch_size=batch_size,
        cache_dir=cache_dir,
        extractor=extractor,
        progress=progress,
        limit=limit,
    )
