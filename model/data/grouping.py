"""Which texts are "the same item": a normalised key and near-duplicate groups.

A retweet, the same tweet with another link or @mention, or a review re-posted with different
punctuation must never sit on both sides of a train/test split. Two texts are grouped when

- their **normalised key** is equal (:func:`normalise_key`: cleaned, case-folded, ``RT`` tokens,
  @mentions and URLs removed, punctuation and whitespace runs collapsed), or
- they are **near-duplicates**: MinHash over character 5-grams of the key (20 hashes in 4 bands of
  5): two texts become candidates when they share a band bucket (probability
  ``1 - (1 - J^5)^4`` for a shingle Jaccard ``J``: 0.98 at J = 0.9, 0.80 at 0.8, 0.12 at 0.5),
  and a candidate pair is confirmed when at least 12 of the 20 minima agree (estimated J >= 0.6),
  so short texts that share only a hashtag do not chain into one big group. Groups are closed
  transitively (union-find).

Everything is deterministic: hashes are CRC-32 and a seeded numpy generator, never Python's
salted ``hash()``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

from model.serving.preprocess import clean_text

__all__ = ["group_ids", "normalise_key", "overlap_report", "variant_mask"]

_URL = re.compile(r"(?:https?://|www\.)\S+|(?<![\w])https?(?![\w])|url_removed")
_MENTION = re.compile(r"@\w+")
_RT = re.compile(r"(?<![\w])rt(?![\w])")
_NON_WORD = re.compile(r"[\W_]+")

SHINGLE = 5
N_HASHES = 20
BANDS = 4
MIN_EQUAL = 12  # of N_HASHES equal minima: estimated shingle Jaccard >= 0.6 confirms a pair
_PRIME = (1 << 31) - 1  # a * x < 2^63 for x < 2^32, a < 2^31: no uint64 overflow


def normalise_key(text: str) -> str:
    """The key that variants of one text share.

    Cleaned (NFKC, HTML entities, control characters), case-folded; ``RT`` tokens, @mentions and
    URLs (also the ``http`` placeholder of :func:`clean_text` and ``url_removed``) removed; every
    run of punctuation, underscores and whitespace becomes one space. CJK text keeps its
    characters (they are word characters).
    """
    s = clean_text(text).casefold()
    s = _URL.sub(" ", s)
    s = _MENTION.sub(" ", s)
    s = _RT.sub(" ", s)
    return _NON_WORD.sub(" ", s).strip()


def _shingle_hashes(key: str) -> np.ndarray:
    s = key.replace(" ", "")
    grams = {s[i : i + SHINGLE] for i in range(max(1, len(s) - SHINGLE + 1))}
    return np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), np.uint64, len(grams))


def _minhash(keys: Sequence[str], seed: int) -> np.ndarray:
    """``(N, N_HASHES)`` uint64 MinHash signatures of the keys' character shingles."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, N_HASHES, dtype=np.uint64)[:, None]
    b = rng.integers(0, _PRIME, N_HASHES, dtype=np.uint64)[:, None]
    out = np.empty((len(keys), N_HASHES), np.uint64)
    chunk = 4096
    for start in range(0, len(keys), chunk):
        parts = [_shingle_hashes(k) for k in keys[start : start + chunk]]
        lengths = np.fromiter((len(p) for p in parts), np.int64, len(parts))
        flat = np.concatenate(parts)  # (S,)
        perm = (a * flat[None, :] + b) % _PRIME  # (H, S)
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        out[start : start + len(parts)] = np.minimum.reduceat(perm, offsets, axis=1).T
    return out


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        p = self.parent
        while p[i] != i:
            p[i] = p[p[i]]
            i = p[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def group_ids(texts: Sequence[str], *, near: bool = True, seed: int = 0) -> np.ndarray:
    """``(N,)`` int64 group ids: equal ids for equal normalised keys and (``near``) MinHash
    near-duplicates. An id is the smallest index in its group, so ids follow input order."""
    keys = [normalise_key(t) for t in texts]
    uf = _UnionFind(len(keys))
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        uf.union(first.setdefault(k, i), i)
    if near and keys:
        sig = _minhash(keys, seed)
        rows = N_HASHES // BANDS
        for band in range(BANDS):
            bucket: dict[bytes, int] = {}
            block = np.ascontiguousarray(sig[:, band * rows : (band + 1) * rows])
            for i in range(len(keys)):
                j = bucket.setdefault(block[i].tobytes(), i)
                # a shared band is a candidate; confirm on the whole signature (estimated J)
                if j != i and (sig[i] == sig[j]).sum() >= MIN_EQUAL:
                    uf.union(j, i)
    return np.fromiter((uf.find(i) for i in range(len(keys))), np.int64, len(keys))


def variant_mask(train: Sequence[str], test: Sequence[str], *, seed: int = 0) -> np.ndarray:
    """``(len(test),)`` bool: True where a ``test`` text shares its group (same normalised key or
    a near-duplicate) with a ``train`` text."""
    groups = group_ids(list(train) + list(test), seed=seed)
    train_groups = np.unique(groups[: len(train)])
    return np.isin(groups[len(train) :], train_groups)


def overlap_report(
    train: Sequence[str], test: Sequence[str], *, seed: int = 0
) -> dict[str, float | int]:
    """How many ``test`` texts have a variant in ``train``: the same normalised key, or (a
    superset) the same near-duplicate group."""
    keys_train = {normalise_key(t) for t in train}
    same_key = sum(normalise_key(t) in keys_train for t in test)
    near = int(variant_mask(train, test, seed=seed).sum())
    n = max(len(test), 1)
    return {
        "test": len(test),
        "same_key": int(same_key),
        "same_key_share": round(same_key / n, 4),
        "near_duplicate": near,
        "near_duplicate_share": round(near / n, 4),
    }
